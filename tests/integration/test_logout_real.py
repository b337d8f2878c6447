"""Logout tracking with real daemons: Dovecot -> rsyslog -> pbsyslog -> postmap.

A POP3 session held open past a short grace stays in the Postfix map; after
QUIT, Dovecot's logout line (which carries no client address, only the
session id of the Login: line) starts the grace, and the address leaves the
map one grace after the logout, not one grace after the login.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from harness import (
    PASSWORD,
    USER,
    DovecotFactory,
    PbsyslogFactory,
    PbsyslogService,
    RsyslogFactory,
    SourceIMAP4,
    SourcePOP3,
    Stack,
    pop3_login,
    postmap_q,
    server_for,
    wait_for,
)

GRACE = 3.0
EXPIRE_INTERVAL = 0.2
# How long after a logout (or login) the map may take to change.
MAP_DEADLINE = 2.0
LOG_DEADLINE = 5.0



@pytest.fixture(scope="module")
def stack(pbsyslog_service: PbsyslogFactory, rsyslog: RsyslogFactory, dovecot: DovecotFactory) -> Iterator[Stack]:
    """Start pbsyslog (grace 3 s, logout tracking on), rsyslog forwarding over TCP with RFC 5424, and Dovecot."""
    service = pbsyslog_service({
        "grace": GRACE, "expire_interval": EXPIRE_INTERVAL, "logout_tracking": True, "patterns": ["dovecot"],
    })
    syslog = rsyslog(service.tcp_port, "tcp-octet", "RSYSLOG_SyslogProtocol23Format")
    yield Stack(service, syslog, dovecot(syslog))


def in_map(stack: Stack, ip: str) -> bool:
    """Whether ``postmap -q ip`` finds the address in the map."""
    return postmap_q(ip, stack.service.dbfile) == (0, "OK\n")


def wait_for_syslog_line(stack: Stack, pattern: str) -> str:
    """Wait until rsyslog has written a line matching ``pattern``; return it."""
    regex = re.compile(pattern)
    line = wait_for(
        lambda: next((x for x in stack.syslog.log_text().splitlines() if regex.search(x)), ""), LOG_DEADLINE
    )
    assert line, f"rsyslog wrote no line matching {pattern!r}\n{stack.describe()}"
    return line


def test_open_pop3_session_stays_authorised_and_expires_one_grace_after_quit(stack: Stack) -> None:
    """A POP3 session open for twice the grace stays in the map; after QUIT it leaves about one grace later."""
    source = "127.0.0.61"
    client = SourcePOP3(server_for(source), stack.dovecot.pop3_port, source)
    try:
        client.user(USER)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        login = wait_for_syslog_line(stack, rf"pop3-login: Login: .* rip={re.escape(source)},")
        session = re.search(r"session=<([^>]+)>", login)
        assert session, login
        assert wait_for(lambda: in_map(stack, source), MAP_DEADLINE), stack.describe()
        logged_in = time.monotonic()
        # Keep the session open (and busy) well past the grace.
        while time.monotonic() - logged_in < 2 * GRACE:
            client.noop()
            time.sleep(0.5)
            assert in_map(stack, source), f"gone {time.monotonic() - logged_in:.1f} s after login with the session open\n{stack.describe()}"
        client.quit()
    finally:
        client.close()
    quit_at = time.monotonic()
    wait_for_syslog_line(stack, rf"pop3\({USER}\)<[0-9]+><{re.escape(session.group(1))}>: Disconnected: Logged out")
    # Still there shortly after the logout: the grace starts now.
    assert in_map(stack, source), stack.describe()
    assert wait_for(lambda: not in_map(stack, source), GRACE + MAP_DEADLINE), stack.describe()
    gone = time.monotonic() - quit_at
    assert GRACE - 0.5 <= gone <= GRACE + MAP_DEADLINE, f"left the map {gone:.2f} s after QUIT\n{stack.describe()}"


def test_open_imap_session_stays_authorised_until_logout(stack: Stack) -> None:
    """An IMAP session held open past the grace stays authorised; LOGOUT starts the grace."""
    source = "127.0.0.62"
    client = SourceIMAP4(server_for(source), stack.dovecot.imap_port, source)
    try:
        status, _ = client.login(USER, PASSWORD)
        assert status == "OK"
        assert wait_for(lambda: in_map(stack, source), MAP_DEADLINE), stack.describe()
        time.sleep(GRACE + 1.0)
        client.noop()
        assert in_map(stack, source), stack.describe()
    finally:
        client.logout()
    quit_at = time.monotonic()
    assert wait_for(lambda: not in_map(stack, source), GRACE + MAP_DEADLINE), stack.describe()
    assert time.monotonic() - quit_at >= GRACE - 0.5


def test_quick_login_and_quit_expires_one_grace_later(stack: Stack) -> None:
    """A POP3 login with an immediate QUIT leaves the map about one grace later (nothing stays open)."""
    source = "127.0.0.63"
    pop3_login(stack.dovecot.pop3_port, source)
    done = time.monotonic()
    assert wait_for(lambda: in_map(stack, source), MAP_DEADLINE), stack.describe()
    assert wait_for(lambda: not in_map(stack, source), GRACE + MAP_DEADLINE), stack.describe()
    assert time.monotonic() - done >= GRACE - 0.5


def test_session_open_across_a_restart_is_still_closed_by_its_logout(
    pbsyslog_service: PbsyslogFactory, rsyslog: RsyslogFactory, dovecot: DovecotFactory
) -> None:
    """pbsyslog restarted while a POP3 session is open: the session is restored, and its QUIT still starts the grace.

    Without open sessions in the state journal the restarted service would
    only know the session's long deadline (login + max_session + grace), and
    the logout would no longer shorten it.
    """
    source = "127.0.0.64"
    first = pbsyslog_service({
        "grace": GRACE, "expire_interval": EXPIRE_INTERVAL, "logout_tracking": True, "patterns": ["dovecot"],
    })
    overrides = {
        "grace": GRACE, "expire_interval": EXPIRE_INTERVAL, "logout_tracking": True, "patterns": ["dovecot"],
        "listen": [{"protocol": "udp", "host": "127.0.0.1", "port": first.udp_port}],
    }
    # UDP, so that rsyslog has no connection to lose across the restart.
    syslog = rsyslog(first.udp_port, "udp")
    daemon = dovecot(syslog)
    client = SourcePOP3(server_for(source), daemon.pop3_port, source)
    second: PbsyslogService | None = None
    try:
        client.user(USER)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        assert wait_for(lambda: postmap_q(source, first.dbfile) == (0, "OK\n"), MAP_DEADLINE), first.describe()
        first.stop()
        assert first.proc.returncode == 0, first.describe()
        second = PbsyslogService(first.workdir, overrides)
        assert "(1 open sessions)" in second.output(), second.describe()
        restarted = time.monotonic()
        while time.monotonic() - restarted < GRACE + 1.0:  # past the grace, session still open
            client.noop()
            time.sleep(0.5)
        assert postmap_q(source, second.dbfile) == (0, "OK\n"), second.describe()
        client.quit()
        quit_at = time.monotonic()
        assert wait_for(lambda: postmap_q(source, second.dbfile) != (0, "OK\n"), GRACE + MAP_DEADLINE), (
            f"still in the map {GRACE + MAP_DEADLINE} s after QUIT\n{second.describe()}\n{syslog.describe()}")
        assert time.monotonic() - quit_at >= GRACE - 0.5
    finally:
        client.close()
        if second is not None:
            second.stop()
            assert not second.tracebacks(), second.describe()
