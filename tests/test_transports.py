"""Listener bounds: frame size, UDP rate, TCP connection caps and idle timeout, all counted."""

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.senders import SenderFilter
from pbsyslog.inputs.stream import SyslogStreamFactory
from pbsyslog.inputs.udp import SyslogDatagramProtocol
from pbsyslog.patterns import load_table
from pbsyslog.pipeline import Pipeline, Refused
from pbsyslog.tracker import Tracker


class Harness:
    """A listener context on a fake clock that records delivered frames."""

    def __init__(self, **limits: float) -> None:
        self.frames: list[bytes] = []
        self.counters = TransportCounters()
        self.clock = Clock()
        self.ctx = Listening(
            lambda frame, peer: self.frames.append(frame),
            SenderFilter(["127.0.0.0/8"]).allows,
            lambda peer: None,
            self.counters,
            Limits(**limits),  # type: ignore[arg-type]
            self.clock,
        )

    def connect(self, factory: SyslogStreamFactory, host: str = "127.0.0.1") -> tuple[object, StringTransport]:
        """Open one fake TCP connection from ``host``; return (protocol or None, transport)."""
        proto = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        if proto is not None:
            proto.makeConnection(transport)
        return proto, transport


def test_udp_rate_limit_per_peer() -> None:
    """Past its per-second budget a peer's datagrams are dropped and counted; the budget refills."""
    h = Harness(udp_rate=10)
    proto = SyslogDatagramProtocol(h.ctx)
    for _ in range(15):
        proto.datagramReceived(b"<22>x", ("127.0.0.1", 1))
    proto.datagramReceived(b"<22>y", ("127.0.0.2", 1))
    assert len(h.frames) == 11 and h.counters.rate_limited == 5
    h.clock.advance(1)
    for _ in range(10):
        proto.datagramReceived(b"<22>x", ("127.0.0.1", 1))
    assert len(h.frames) == 21 and h.counters.rate_limited == 5


def test_udp_oversize_datagram_counted() -> None:
    """A datagram longer than max_frame is dropped and counted."""
    h = Harness(max_frame=480)
    proto = SyslogDatagramProtocol(h.ctx)
    proto.datagramReceived(b"<22>" + b"a" * 500, ("127.0.0.1", 1))
    proto.datagramReceived(b"<22>short", ("127.0.0.1", 1))
    assert h.frames == [b"<22>short"] and h.counters.oversize == 1


def test_tcp_oversize_and_bad_frames_counted_connection_stays() -> None:
    """An over-long octet-counted frame is counted and skipped; the next frame on the connection is delivered."""
    h = Harness(max_frame=480)
    proto, transport = h.connect(SyslogStreamFactory(h.ctx))
    proto.dataReceived(b"1000 " + b"x" * 600)  # type: ignore[attr-defined]
    proto.dataReceived(b"x" * 400 + b"9 <22>hello")  # type: ignore[attr-defined]
    assert h.counters.oversize == 1
    proto.dataReceived(b"<22>next\n")  # type: ignore[attr-defined]
    assert h.frames == [b"<22>hello", b"<22>next"]
    assert not transport.disconnecting


def test_connection_caps_per_peer_and_total() -> None:
    """Connections beyond the per-peer or per-listener cap are refused and counted (when every one has spoken); closing frees a slot."""
    h = Harness(max_connections=3, max_connections_per_peer=2)
    factory = SyslogStreamFactory(h.ctx)

    def speaking(host: str) -> Any:
        proto, _ = h.connect(factory, host)
        if proto is not None:
            proto.dataReceived(b"<22>a\n")
        return proto

    a1 = speaking("127.0.0.1")
    a2 = speaking("127.0.0.1")
    a3 = speaking("127.0.0.1")
    b1 = speaking("127.0.0.2")
    b2 = speaking("127.0.0.2")
    assert a1 and a2 and a3 is None and b1 and b2 is None
    assert h.counters.connections_over_limit == 2
    a1.connectionLost(None)  # type: ignore[attr-defined]
    assert h.connect(factory, "127.0.0.2")[0] is not None
    assert factory.open_connections == 3


def test_silent_connections_cannot_hold_the_slots_a_sender_needs() -> None:
    """At the cap, a new connection closes the oldest one that never delivered a frame; speaking ones stay."""
    h = Harness(max_connections=10, max_connections_per_peer=2)
    factory = SyslogStreamFactory(h.ctx)
    talker, _ = h.connect(factory, "127.0.0.1")
    talker.dataReceived(b"<22>a\n")  # type: ignore[union-attr]
    idle, idle_transport = h.connect(factory, "127.0.0.1")
    fresh, _ = h.connect(factory, "127.0.0.1")  # rsyslog's reconnect, say
    assert fresh is not None and idle_transport.disconnecting and h.counters.silent_evicted == 1
    idle.connectionLost(None)  # type: ignore[union-attr]  # what Twisted then calls: no count moves twice
    assert factory.open_connections == 2
    fresh.dataReceived(b"<22>b\n")  # type: ignore[union-attr]
    assert h.connect(factory, "127.0.0.1")[0] is None and h.counters.connections_over_limit == 1


def test_first_frame_timeout_then_idle_timeout() -> None:
    """A connection has first_frame_timeout for its first frame (handshake included), then idle_timeout."""
    h = Harness(idle_timeout=600, first_frame_timeout=10)
    silent, silent_transport = h.connect(SyslogStreamFactory(h.ctx))
    talker, talker_transport = h.connect(SyslogStreamFactory(h.ctx))
    h.clock.advance(5)
    talker.dataReceived(b"<22>a\n")  # type: ignore[union-attr]
    h.clock.advance(6)
    assert silent_transport.disconnecting and not talker_transport.disconnecting
    h.clock.advance(590)
    assert not talker_transport.disconnecting
    h.clock.advance(10)
    assert talker_transport.disconnecting


def test_idle_connection_closed_and_data_keeps_it_open() -> None:
    """A connection silent for idle_timeout is aborted and counted; traffic resets the timer."""
    h = Harness(idle_timeout=60)
    proto, transport = h.connect(SyslogStreamFactory(h.ctx))
    h.clock.advance(50)
    proto.dataReceived(b"<22>a\n")  # type: ignore[attr-defined]
    h.clock.advance(50)
    assert not transport.disconnecting
    h.clock.advance(11)
    assert transport.disconnecting and h.counters.idle_closed == 1


def test_full_tracker_refuses_new_keeps_old() -> None:
    """At max_tracked, new IPs are refused and counted while tracked ones still refresh."""
    p = Pipeline(load_table("all"), Tracker(60), max_tracked=2)
    line = (
        b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
        b"rip=%s, lip=192.0.2.1, mpid=1"
    )
    assert p.feed(line % b"192.0.2.1", 0) is not None
    assert p.feed(line % b"192.0.2.2", 0) is not None
    assert p.feed(line % b"192.0.2.3", 0) == Refused("192.0.2.3", "full")
    assert p.counters.full == 1
    assert p.feed(line % b"192.0.2.1", 10) == ("192.0.2.1", "dovecot-login", "extended")
    assert p.tracker.ips() == {"192.0.2.1", "192.0.2.2"}


def test_udp_receive_buffer_enlarged_when_listening() -> None:
    """startProtocol asks for udp_receive_buffer on the listening socket and records what the kernel gave."""
    import socket

    UDP_RCVBUF = 8 << 20

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

        class Port:
            """Just what startProtocol reads of Twisted's udp.Port."""

            def __init__(self) -> None:
                self.socket = sock

        proto = SyslogDatagramProtocol(attrs.evolve(
            Harness().ctx, limits=attrs.evolve(Harness().ctx.limits, udp_receive_buffer=UDP_RCVBUF)))
        proto.makeConnection(Port())
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert proto.rcvbuf == got >= before
        limit = int(open("/proc/sys/net/core/rmem_max").read())
        if limit >= UDP_RCVBUF:  # else only a privileged process gets it all
            assert got >= UDP_RCVBUF


def test_udp_receive_buffer_without_a_socket_is_left_alone() -> None:
    """A transport without a socket (a test double) gets no buffer sizing and no error."""
    proto = SyslogDatagramProtocol(Harness().ctx)
    proto.makeConnection(object())
    assert proto.rcvbuf is None
