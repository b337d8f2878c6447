"""Idle sockets cannot lock a sender out: at the per-peer cap a new connection closes a silent one, and silent ones time out.

The real service, with a small per-peer cap; idle TCP sockets from the
sender's own address (127.0.0.1, as a local attacker would open them) take
every slot; then the sender (here a plain socket sending a login, as
rsyslog's reconnect would) must still get its login in.
"""

from __future__ import annotations

import socket
import time

from harness import LOOPBACK_V4, PbsyslogFactory, dovecot_login, postmap_q, wait_for


def test_idle_sockets_cannot_hold_the_senders_slots(pbsyslog_service: PbsyslogFactory) -> None:
    """Four idle sockets fill a per-peer cap of four; a fifth connection with a login still authorises."""
    service = pbsyslog_service({"max_connections_per_peer": 4, "first_frame_timeout": 30})
    idle = [socket.create_connection((LOOPBACK_V4, service.tcp_port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the service accept them all
        with socket.create_connection((LOOPBACK_V4, service.tcp_port), timeout=5) as sender:
            sender.sendall(dovecot_login("192.0.2.97").encode() + b"\n")
            assert wait_for(lambda: postmap_q("192.0.2.97", service.dbfile) == (0, "OK\n"), 3), service.describe()
    finally:
        for sock in idle:
            sock.close()


def test_silent_socket_is_closed_after_first_frame_timeout(pbsyslog_service: PbsyslogFactory) -> None:
    """A connection that sends nothing is closed by the service after first_frame_timeout."""
    service = pbsyslog_service({"first_frame_timeout": 1})
    with socket.create_connection((LOOPBACK_V4, service.tcp_port), timeout=5) as silent:
        silent.settimeout(5)
        started = time.monotonic()
        try:
            closed = silent.recv(10) == b""
        except ConnectionResetError:  # the service aborts the connection (RST)
            closed = True
        assert closed
        assert 0.8 <= time.monotonic() - started < 4
