"""Sender trust: allow-lists, IPv4-mapped peers, and what the listeners do with strangers."""

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock

from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.senders import SenderFilter, is_loopback_only, parse_network
from pbsyslog.inputs.stream import SyslogStreamFactory
from pbsyslog.inputs.udp import SyslogDatagramProtocol


def test_default_loopback_list() -> None:
    """The loopback list admits 127.0.0.0/8 and ::1 and nothing else."""
    f = SenderFilter(["127.0.0.0/8", "::1/128"])
    assert f.allows("127.0.0.1") and f.allows("127.9.9.9") and f.allows("::1")
    assert not f.allows("192.0.2.1") and not f.allows("::2") and not f.allows("0.0.0.0")


def test_ipv4_mapped_peer_is_checked_as_ipv4() -> None:
    """A dual-stack socket's ::ffff:a.b.c.d peer is judged as a.b.c.d."""
    f = SenderFilter(["192.0.2.0/28"])
    assert f.allows("::ffff:192.0.2.5")
    assert not f.allows("::ffff:192.0.2.17")
    assert SenderFilter(["127.0.0.0/8"]).allows("::ffff:127.0.0.1")


def test_garbage_peer_is_refused() -> None:
    """A peer that is not an address (e.g. a UNIX socket path) is refused."""
    f = SenderFilter(["0.0.0.0/0", "::/0"])
    assert not f.allows("") and not f.allows("/run/x.sock") and not f.allows("localhost")


def test_network_parsing() -> None:
    """Bare addresses are single hosts; IPv4-mapped networks become IPv4; loopback-only is exact."""
    assert str(parse_network("192.0.2.7")) == "192.0.2.7/32"
    assert str(parse_network("::ffff:192.0.2.0/120")) == "192.0.2.0/24"
    assert is_loopback_only(parse_network("127.0.0.0/8"))
    assert not is_loopback_only(parse_network("126.0.0.0/7"))
    assert not is_loopback_only(parse_network("::/0"))


class Recorder:
    """Collects what a protocol hands on or refuses."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, str]] = []
        self.refused: list[str] = []

    def sink(self, frame: bytes, peer: str) -> None:
        self.frames.append((frame, peer))

    def refuse(self, peer: str) -> None:
        self.refused.append(peer)

    def context(self, allow: list[str], limits: Limits | None = None) -> Listening:
        """A listener context that records into this object."""
        self.counters = TransportCounters()
        self.clock = Clock()
        return Listening(self.sink, SenderFilter(allow).allows, self.refuse, self.counters, limits or Limits(), self.clock)


def test_udp_from_untrusted_peer_is_dropped_and_reported() -> None:
    """A datagram from outside the allow-list is never framed or handed on; the refusal is reported."""
    r = Recorder()
    proto = SyslogDatagramProtocol(r.context(["127.0.0.1/32"]))
    proto.datagramReceived(b"<22>hello\n", ("192.0.2.66", 514))
    proto.datagramReceived(b"<22>hello\n", ("127.0.0.1", 514))
    assert r.frames == [(b"<22>hello", "127.0.0.1")]
    assert r.refused == ["192.0.2.66"]


def test_tcp_from_untrusted_peer_gets_no_protocol() -> None:
    """A TCP connection from outside the allow-list gets no protocol, so Twisted closes it at once."""
    r = Recorder()
    factory: Any = SyslogStreamFactory(r.context(["::1/128"]))
    assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.66", 4000)) is None
    assert factory.buildProtocol(IPv6Address("TCP", "::1", 4000)) is not None
    assert r.refused == ["192.0.2.66"]
