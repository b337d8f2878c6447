"""Live socketmap: real postmap queries pbsyslog over socketmap:inet: and socketmap:unix:."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness import LOOPBACK_V4, PbsyslogFactory, PbsyslogService, dovecot_login, free_port, run_postmap, wait_for


@pytest.fixture(scope="module")
def served(pbsyslog_service: PbsyslogFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[PbsyslogService, int, Path]:
    """A service answering socketmap on a TCP port (from --socketmap) and on a UNIX socket (from the file)."""
    port = free_port(socket.SOCK_STREAM)
    unix = tmp_path_factory.mktemp("sm") / "socketmap.sock"
    svc = pbsyslog_service(
        {"grace": 2, "expire_interval": 0.2, "socketmap": [{"path": str(unix), "names": ["pbs"]}]},
        extra_args=["--socketmap", f"{LOOPBACK_V4}:{port}"],
    )
    return svc, port, unix


def query(table: str, key: str) -> tuple[int, str, str]:
    """``postmap -q KEY TABLE`` as Postfix would look it up."""
    result = run_postmap("-q", key, table)
    return result.returncode, result.stdout, result.stderr


def test_login_answered_at_once_then_expires(served: tuple[PbsyslogService, int, Path]) -> None:
    """After a login, socketmap answers OK (no file involved); after the grace, not found."""
    svc, port, _ = served
    table = f"socketmap:inet:{LOOPBACK_V4}:{port}:pbs"
    assert query(table, "192.0.2.7")[:2] == (1, "")
    svc.send_udp(dovecot_login("192.0.2.7"))
    assert wait_for(lambda: query(table, "192.0.2.7")[:2] == (0, "OK\n"), 1), svc.describe()
    assert wait_for(lambda: query(table, "192.0.2.7")[:2] == (1, ""), 5), svc.describe()


def test_unix_socket_and_map_names(served: tuple[PbsyslogService, int, Path]) -> None:
    """The UNIX socket serves the configured map name and refuses others with a permanent error."""
    svc, _, unix = served
    svc.send_udp(dovecot_login("2001:db8::7"))
    assert wait_for(lambda: query(f"socketmap:unix:{unix}:pbs", "2001:db8::7")[:2] == (0, "OK\n"), 1), svc.describe()
    code, out, err = query(f"socketmap:unix:{unix}:other", "2001:db8::7")
    assert code != 0 and out == "" and "PERM" in err or "no such map" in err, (code, out, err)


def test_garbage_closes_one_connection_only(served: tuple[PbsyslogService, int, Path]) -> None:
    """A client sending a malformed netstring is disconnected; lookups on other connections go on."""
    svc, port, _ = served
    with socket.create_connection((LOOPBACK_V4, port), timeout=5) as sock:
        sock.sendall(b"not a netstring\n")
        assert sock.recv(100) == b""
    svc.send_udp(dovecot_login("192.0.2.8"))
    assert wait_for(lambda: query(f"socketmap:inet:{LOOPBACK_V4}:{port}:pbs", "192.0.2.8")[:2] == (0, "OK\n"), 1)
