"""Real logins through real daemons: Dovecot -> /dev/log -> rsyslog -> pbsyslog -> postmap.

Each stack (one pbsyslog, one rsyslog forwarding to it, one Dovecot logging
into that rsyslog) is shared by the tests of one transport; every test uses
its own client addresses, so the tests do not depend on each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from harness import (
    DovecotFactory,
    PbsyslogFactory,
    RsyslogFactory,
    Stack,
    imap_login,
    pop3_login,
    pop3_login_fails,
    postmap_q,
    wait_for,
)

# How long after the client's login returns the map must answer for it.
MAP_DEADLINE = 2.0
# How long rsyslog may take to write a line to its own file.
LOG_DEADLINE = 5.0



# (rsyslog transport, rsyslog template): omfwd's default format over UDP,
# octet-counted TCP with the same format and with RFC 5424, and omfwd's
# default LF framing on TCP with the RFC 3339 forward format.
STACKS = [
    ("udp", "RSYSLOG_TraditionalForwardFormat"),
    ("tcp-octet", "RSYSLOG_TraditionalForwardFormat"),
    ("tcp-octet", "RSYSLOG_SyslogProtocol23Format"),
    ("tcp-lf", "RSYSLOG_ForwardFormat"),
]


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(p) for p in STACKS])
def stack(
    request: pytest.FixtureRequest,
    pbsyslog_service: PbsyslogFactory,
    rsyslog: RsyslogFactory,
    dovecot: DovecotFactory,
) -> Iterator[Stack]:
    """Start pbsyslog (grace 1800 s, loopback clients authorised), rsyslog forwarding to it, and Dovecot."""
    transport, template = request.param
    # ::1 (the IPv6 client here) is a key Postfix would also match for other
    # clients: written to the hash map only with allow-parent-match.  These
    # tests follow logins through every transport into the map; exactness
    # is test_ipv6_exact.py's.
    service = pbsyslog_service({"grace": 1800, "authorise_loopback": True, "ipv6_file_maps": "allow-parent-match"})
    port = service.udp_port if transport == "udp" else service.tcp_port
    syslog = rsyslog(port, transport, template)
    imap_pop = dovecot(syslog)
    yield Stack(service, syslog, imap_pop)
    # Stop this stack before the next transport's starts (the factories
    # would only stop it at the end of the module); stop() is idempotent.
    imap_pop.stop()
    syslog.stop()
    service.stop()


def assert_authorised(stack: Stack, ip: str) -> None:
    """Assert that ``postmap -q ip`` answers OK within MAP_DEADLINE."""
    dbfile = stack.service.dbfile
    found = wait_for(lambda: postmap_q(ip, dbfile) == (0, "OK\n"), MAP_DEADLINE)
    assert found, (
        f"postmap -q {ip} hash:{dbfile} gave {postmap_q(ip, dbfile)!r} "
        f"{MAP_DEADLINE} s after the login, not (0, 'OK\\n')\n{stack.describe()}"
    )


def assert_not_authorised(stack: Stack, ip: str) -> None:
    """Assert that ``postmap -q ip`` finds nothing: exit status 1, no output."""
    dbfile = stack.service.dbfile
    result = postmap_q(ip, dbfile)
    assert result == (1, ""), (
        f"postmap -q {ip} hash:{dbfile} gave {result!r}, expected (1, '')\n{stack.describe()}"
    )


def wait_for_syslog_line(stack: Stack, pattern: str) -> str:
    """Wait until rsyslog has written a line matching ``pattern``; return that line."""
    regex = re.compile(pattern)

    def find() -> str:
        lines = stack.syslog.log_text().splitlines()
        return next((line for line in lines if regex.search(line)), "")

    line = wait_for(find, LOG_DEADLINE)
    assert line, f"rsyslog wrote no line matching {pattern!r}\n{stack.describe()}"
    return line


def test_pop3_login_authorises_client(stack: Stack) -> None:
    """A POP3 login from 127.0.0.21 is in the Postfix map within 2 s of the login returning."""
    reply = pop3_login(stack.dovecot.pop3_port, "127.0.0.21")
    assert reply.startswith(b"+OK"), reply
    assert_authorised(stack, "127.0.0.21")


def test_failed_pop3_login_is_not_authorised(stack: Stack) -> None:
    """A wrong password from 127.0.0.22 never reaches the map, even after the failure line went through."""
    pop3_login_fails(stack.dovecot.pop3_port, "127.0.0.22")
    wait_for_syslog_line(stack, r"pop3-login: .*auth failed.* rip=127\.0\.0\.22,")
    # Barrier: rsyslog forwards in order, so once a later login from a third
    # address is in the map, the failure line has been handled too.
    pop3_login(stack.dovecot.pop3_port, "127.0.0.23")
    assert_authorised(stack, "127.0.0.23")
    assert_not_authorised(stack, "127.0.0.22")


def test_pop3_login_over_ipv6_authorises_client(stack: Stack) -> None:
    """A POP3 login from ::1 is in the map under the key ::1."""
    reply = pop3_login(stack.dovecot.pop3_port, "::1")
    assert reply.startswith(b"+OK"), reply
    assert_authorised(stack, "::1")


def test_imap_login_authorises_client(stack: Stack) -> None:
    """An IMAP login from 127.0.0.24 is in the map within 2 s."""
    status = imap_login(stack.dovecot.imap_port, "127.0.0.24")
    assert status == "OK", status
    assert_authorised(stack, "127.0.0.24")


def test_logout_keeps_client_authorised(stack: Stack) -> None:
    """Dovecot's logout line (no IP, tied by mpid) does not remove the client before its grace ends."""
    pop3_login(stack.dovecot.pop3_port, "127.0.0.25")
    login = wait_for_syslog_line(stack, r"pop3-login: Login: .* rip=127\.0\.0\.25,")
    mpid = re.search(r"mpid=(\d+)", login)
    assert mpid, f"no mpid= in Dovecot's login line {login!r}"
    wait_for_syslog_line(stack, rf"pop3\(alice\)<{mpid.group(1)}>.*Disconnected: Logged out")
    # Barrier, as above: the logout line has been handled once this is in.
    pop3_login(stack.dovecot.pop3_port, "127.0.0.26")
    assert_authorised(stack, "127.0.0.26")
    assert_authorised(stack, "127.0.0.25")
