"""recvmmsg through ctypes, and the batching UDP port: what recvfrom would give, in order, in batches."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator

import pytest
from twisted.internet import reactor

from pbsyslog.inputs import recvmmsg
from pbsyslog.inputs.udp import BatchingUDPPort


def test_this_machine_has_recvmmsg() -> None:
    """Linux has it: the fast path is not silently off where the tests run."""
    assert recvmmsg.available()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.5", 0))
    yield receiver, sender
    receiver.close()
    sender.close()


def test_datagrams_arrive_in_order_with_their_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    """150 datagrams: three calls of at most 64, in order, each with recvfrom's host string; a short call ends it."""
    receiver, sender = pair
    sent = [b"line %d" % i for i in range(150)]
    for data in sent:
        sender.sendto(data, receiver.getsockname())
    r = recvmmsg.Receiver(receiver, vlen=64)
    out: list[tuple[bytes, str]] = []
    counts = [r.receive(out), r.receive(out), r.receive(out)]
    assert counts == [64, 64, 22]
    assert out == [(data, "127.0.0.5") for data in sent]
    with pytest.raises(OSError) as caught:
        r.receive(out)
    assert caught.value.errno == errno.EAGAIN
    r.close()


def test_largest_datagram_arrives_whole_and_empty_ones_too(pair: tuple[socket.socket, socket.socket]) -> None:
    """A 65,507-byte datagram (IPv4's largest) is not truncated; an empty datagram is an empty payload."""
    receiver, sender = pair
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    big = bytes(range(256)) * 255 + b"x" * 227
    assert len(big) == 65507
    sender.sendto(big, receiver.getsockname())
    sender.sendto(b"", receiver.getsockname())
    sender.sendto(b"after", receiver.getsockname())
    out: list[tuple[bytes, str]] = []
    recvmmsg.Receiver(receiver).receive(out)
    assert [data for data, _ in out] == [big, b"", b"after"]


def test_ipv6_and_mapped_peers_as_recvfrom_writes_them() -> None:
    """On an IPv6 socket: ::1 and an IPv4 sender (::ffff:127.0.0.1), exactly the host strings recvfrom gives."""
    receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    receiver.bind(("::", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as six, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as four:
        for _ in range(2):
            six.sendto(b"six", ("::1", port))
            four.sendto(b"four", ("127.0.0.1", port))
        expected = []
        for _ in range(2):
            data, addr = receiver.recvfrom(100)
            expected.append((data, addr[0]))
        out: list[tuple[bytes, str]] = []
        recvmmsg.Receiver(receiver).receive(out)
    receiver.close()
    assert sorted(out) == sorted(expected) == [(b"four", "::ffff:127.0.0.1"), (b"six", "::1")]


class Collect:
    """A protocol that keeps the batches the port hands over."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, str]]] = []
        self.transport = None

    def makeConnection(self, transport: object) -> None:
        self.transport = transport

    def doStop(self) -> None:
        pass

    def datagramsReceived(self, batch: list[tuple[bytes, str]]) -> None:
        self.batches.append(batch)


@pytest.mark.parametrize("fast", [True, False])
def test_port_reads_everything_queued_as_one_batch(fast: bool) -> None:
    """doRead (recvmmsg, or the recvfrom fallback) hands every queued datagram over in one batch, in order."""
    proto = Collect()
    port = BatchingUDPPort(0, proto, "127.0.0.1", 65535, reactor)
    port.startListening()
    try:
        assert (port._receiver is not None) == recvmmsg.available()
        if not fast:
            port._receiver.close()
            port._receiver = None
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # the default holds ~250
        address = ("127.0.0.1", port.getHost().port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(300):
                sender.sendto(b"%d" % i, address)
        port.doRead()
        assert len(proto.batches) == 1
        assert proto.batches[0] == [(b"%d" % i, "127.0.0.1") for i in range(300)]
        port.doRead()  # nothing queued: EAGAIN is no error, and no empty batch is handed over
        assert len(proto.batches) == 1
    finally:
        port.stopListening()


def test_port_batch_is_bounded() -> None:
    """With more queued than max_batch, one doRead takes max_batch (rounded up to whole calls) and leaves the rest."""
    proto = Collect()
    port = BatchingUDPPort(0, proto, "127.0.0.1", 65535, reactor)
    port.max_batch = 100
    port.startListening()
    try:
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        address = ("127.0.0.1", port.getHost().port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(500):
                sender.sendto(b"%d" % i, address)
        port.doRead()
        assert len(proto.batches[0]) == 128
        port.doRead()
        assert [d for d, _ in proto.batches[1]][:1] == [b"128"]
    finally:
        port.stopListening()


def test_an_address_of_another_family_is_no_peer() -> None:
    """A sockaddr that is neither IPv4 nor IPv6 gives "", which no allow list admits, rather than an error."""
    from pbsyslog.inputs.senders import SenderFilter

    name = socket.AF_UNIX.to_bytes(2, sys.byteorder) + b"/tmp/x"
    assert recvmmsg._peer(name) == ""
    assert not SenderFilter(["127.0.0.0/8", "::/0", "0.0.0.0/0"]).allows("")
