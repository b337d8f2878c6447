"""Sender allow-lists on the real service: strangers are cut off, trusted senders still authorise."""

from __future__ import annotations

import socket

import pytest

from harness import LOOPBACK_V4, PbsyslogFactory, PbsyslogService, dovecot_login, postmap_q, wait_for

TRUSTED = "127.0.0.1"
STRANGER = "127.0.0.77"



@pytest.fixture(scope="module")
def service(pbsyslog_service: PbsyslogFactory) -> PbsyslogService:
    """A service whose listeners accept 127.0.0.1 only."""
    return pbsyslog_service(extra_args=["--allow", f"{TRUSTED}/32"])


def test_untrusted_tcp_peer_is_closed_at_once(service: PbsyslogService) -> None:
    """A TCP connection from 127.0.0.77 is closed before anything it sends is read."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((STRANGER, 0))
        sock.settimeout(5)
        sock.connect((LOOPBACK_V4, service.tcp_port))
        assert sock.recv(1) == b""  # EOF: the service hung up
    assert service.wait_for_output(f"refused syslog from untrusted sender {STRANGER}", 2), service.describe()


def test_untrusted_udp_login_is_ignored(service: PbsyslogService) -> None:
    """A login datagram from 127.0.0.77 never reaches the map, while the same from 127.0.0.1 does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        sock.sendto(dovecot_login("192.0.2.77").encode(), (LOOPBACK_V4, service.udp_port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((TRUSTED, 0))
        sock.sendto(dovecot_login("192.0.2.78").encode(), (LOOPBACK_V4, service.udp_port))
    # Datagrams on loopback are handled in order: once .78 is in, .77 was judged.
    assert wait_for(lambda: postmap_q("192.0.2.78", service.dbfile) == (0, "OK\n"), 2), service.describe()
    assert postmap_q("192.0.2.77", service.dbfile) == (1, "")


def test_remote_allow_without_insecure_remote_refuses_to_start(pbsyslog_service: PbsyslogFactory) -> None:
    """--allow with a non-loopback network on plain UDP/TCP stops start-up with an error that points to TLS."""
    with pytest.raises(pytest.fail.Exception) as info:
        pbsyslog_service(extra_args=["--allow", "192.0.2.0/24"])
    assert "TLS" in str(info.value) and "insecure_remote" in str(info.value)
