"""Bounded connections everywhere: socketmap, control socket, metrics, and the descriptors the limits need."""

from __future__ import annotations

import resource

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from pbsyslog.config import Config
from pbsyslog.outputs.socketmap import SocketmapFactory
from pbsyslog.wiring import (
    CONTROL_CONNECTIONS,
    METRICS_CONNECTIONS,
    ConnectionLimit,
    descriptors_needed,
    ensure_descriptors,
)

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def test_socketmap_refuses_connections_over_its_limit() -> None:
    """At max_connections open, a new socketmap connection gets no protocol; a closed one frees its slot."""
    factory = SocketmapFactory(lambda key: None, None, lambda host: True, max_connections=2)
    first, second = factory.buildProtocol(PEER), factory.buildProtocol(PEER)
    assert first is not None and second is not None and factory.buildProtocol(PEER) is None
    first.makeConnection(StringTransport())
    first.connectionLost(None)
    assert factory.buildProtocol(PEER) is not None and factory.over_limit == 1


def test_connection_limit_wraps_any_factory() -> None:
    """ConnectionLimit lets ``limit`` connections of the wrapped factory be open at once, and counts the refused."""
    limited = ConnectionLimit(Factory.forProtocol(Protocol), 2)
    opened = []
    for _ in range(2):
        proto = limited.buildProtocol(UNIXAddress("/x"))
        assert proto is not None
        proto.makeConnection(StringTransport())  # Twisted connects each protocol as it builds it
        opened.append(proto)
    assert limited.buildProtocol(UNIXAddress("/x")) is None and limited.refused == 1
    opened[0].connectionLost(None)
    assert limited.buildProtocol(UNIXAddress("/x")) is not None


def test_descriptors_needed_follow_the_limits() -> None:
    """Each stream listener, socketmap and policy service adds max_connections; UDP and unix listeners one each."""
    base = Config.from_mapping({"listen": [{"protocol": "udp", "port": 5514}], "max_connections": 100})
    more = Config.from_mapping({"listen": [{"protocol": "udp", "port": 5514}, {"protocol": "tcp", "port": 5514}],
                                "socketmap": [{"port": 9514}], "policy": [{"port": 9515}], "max_connections": 100})
    assert descriptors_needed(more) - descriptors_needed(base) == 3 * 100 + 3
    assert descriptors_needed(Config()) >= 256 + METRICS_CONNECTIONS + CONTROL_CONNECTIONS


def test_soft_descriptor_limit_is_raised_to_what_is_needed() -> None:
    """A soft RLIMIT_NOFILE below the need is raised (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        ensure_descriptors(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(1000, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
