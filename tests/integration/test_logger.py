"""util-linux logger as the sender: every transport, framing and format it speaks."""

from __future__ import annotations

import pytest

from harness import (
    LOOPBACK_V4,
    PbsyslogFactory,
    PbsyslogService,
    postmap_q,
    run_logger,
    wait_for,
)

MAP_DEADLINE = 2.0


def login_message(ip: str) -> str:
    """The MSG part of a Dovecot POP3 login; logger adds the header with -t dovecot."""
    return (
        f"pop3-login: Login: user=<alice>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
        "mpid=4242, session=<a1b2c3d4e5f6>"
    )


@pytest.fixture(scope="module")
def service(pbsyslog_service: PbsyslogFactory) -> PbsyslogService:
    """One pbsyslog listening on UDP and TCP on 127.0.0.1."""
    return pbsyslog_service()


def assert_in_map(service: PbsyslogService, ip: str) -> None:
    """Assert that ``postmap -q ip`` answers OK within MAP_DEADLINE."""
    found = wait_for(lambda: postmap_q(ip, service.dbfile) == (0, "OK\n"), MAP_DEADLINE)
    assert found, (
        f"postmap -q {ip} gave {postmap_q(ip, service.dbfile)!r} {MAP_DEADLINE} s after "
        f"logger sent the login\n{service.describe()}"
    )


# (logger options, client address): UDP and TCP, RFC 3164 and RFC 5424, and
# on TCP both RFC 6587 framings (logger's default there is LF).
CASES = [
    (["--udp", "--rfc3164"], "192.0.2.1"),
    (["--udp", "--rfc5424"], "192.0.2.2"),
    (["--tcp", "--rfc3164"], "192.0.2.3"),
    (["--tcp", "--rfc5424"], "192.0.2.4"),
    (["--tcp", "--rfc3164", "--octet-count"], "192.0.2.5"),
    (["--tcp", "--rfc5424", "--octet-count"], "192.0.2.6"),
]


@pytest.mark.parametrize(("options", "ip"), CASES, ids=[" ".join(o) for o, _ in CASES])
def test_logger_login_reaches_map(service: PbsyslogService, options: list[str], ip: str) -> None:
    """A login line sent by logger with these options puts its client IP in the map within 2 s."""
    port = service.udp_port if "--udp" in options else service.tcp_port
    result = run_logger(
        "--server", LOOPBACK_V4, "--port", str(port), *options, "-t", "dovecot", login_message(ip)
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    assert_in_map(service, ip)


def test_readme_logger_check(service: PbsyslogService) -> None:
    """The README's own check, `logger -n 127.0.0.1 -P PORT -d -t dovecot '...rip=192.0.2.7...'`, authorises 192.0.2.7."""
    result = run_logger(
        "-n", LOOPBACK_V4, "-P", str(service.udp_port), "-d", "-t", "dovecot",
        login_message("192.0.2.7"),
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    assert_in_map(service, "192.0.2.7")
