"""TCP and TLS: RFC 6587 framing on each connection -> the listener's sink.

Contract: a thin Twisted wrapper around the sans-I/O framing in
``framing.py``; knows nothing about syslog syntax, patterns or maps.  A
connection from a peer the listener's ``allowed(host)`` refuses is never
given a protocol (Twisted closes it at once) and ``refused(host)`` is told;
connections over the listener's limits (in all, per peer) are refused and
counted; an idle connection is closed; on TLS, a client whose certificate
matches none of the pins is cut off before any of its data is read.
``SyslogStreamFactory.admit`` is that admission, for RELP's factory too.
"""

from __future__ import annotations

import itertools

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from pbsyslog.inputs.framing import StreamFramer
from pbsyslog.inputs.listening import Listening, hand_over
from pbsyslog.inputs.tls import matches_pins


@implementer(IHandshakeListener)
class SyslogStreamProtocol(Protocol, TimeoutMixin):
    """RFC 6587 framing (octet-counted or LF, decided per frame) on one connection (TCP or TLS)."""

    def __init__(self, factory: SyslogStreamFactory, peer: str) -> None:
        self._factory = factory
        self._ctx = factory.ctx
        self._framer = StreamFramer(self._ctx.limits.max_frame)
        self._peer = peer
        self._oversize_seen = 0
        self._malformed_seen = 0
        self._pinned = not self._ctx.tls_peers  # nothing to check without pins
        # TimeoutMixin's documented hook for another clock (a class attribute meant to be replaced).
        self.callLater = self._ctx.clock.callLater  # type: ignore[method-assign]

    def connectionMade(self) -> None:
        if self._ctx.limits.idle_timeout > 0:
            self.setTimeout(self._ctx.limits.idle_timeout)

    def handshakeCompleted(self) -> None:
        """TLS only: drop a client whose certificate matches none of the listener's pins."""
        self._check_pins()

    def _check_pins(self) -> bool:
        if not self._pinned:
            cert = self.transport.getPeerCertificate()
            if matches_pins(cert, self._ctx.tls_peers):
                self._pinned = True
            else:
                self._ctx.counters.untrusted += 1
                self._ctx.refused(f"{self._peer} (client certificate not pinned)")
                self.transport.abortConnection()
        return self._pinned

    def dataReceived(self, data: bytes) -> None:
        if not self._pinned and not self._check_pins():
            return
        self.resetTimeout()
        framer = self._framer
        ctx = self._ctx
        frames = framer.feed(data)
        if frames:
            hand_over(ctx, frames, itertools.repeat(self._peer))
        oversize, malformed = framer.oversize, framer.malformed
        if oversize != self._oversize_seen or malformed != self._malformed_seen:
            counters = self._ctx.counters
            counters.oversize += oversize - self._oversize_seen
            counters.bad_frames += malformed - self._malformed_seen
            self._oversize_seen, self._malformed_seen = oversize, malformed

    def timeoutConnection(self) -> None:
        self._ctx.counters.idle_closed += 1
        self.transport.abortConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.setTimeout(None)
        self._factory.closed(self._peer)


class SyslogStreamFactory(Factory):
    """Builds one SyslogStreamProtocol per accepted connection, within the connection limits."""

    noisy = False

    def __init__(self, ctx: Listening) -> None:
        self.ctx = ctx
        self.open_connections = 0
        self._per_peer: dict[str, int] = {}

    def buildProtocol(self, addr: object) -> SyslogStreamProtocol | None:
        peer = self.admit(addr)
        return None if peer is None else SyslogStreamProtocol(self, peer)

    def admit(self, addr: object) -> str | None:
        """Admit one connection from ``addr``: its peer host, counted until ``closed``; None when refused.

        Refused: a peer outside the allow list (``refused`` is told), or one
        over the listener's connection limits (counted).
        """
        ctx = self.ctx
        host = getattr(addr, "host", "")
        if not ctx.allowed(host):
            ctx.counters.untrusted += 1
            ctx.refused(host)
            return None  # Twisted closes the connection before reading a byte
        limits = ctx.limits
        if (
            (limits.max_connections and self.open_connections >= limits.max_connections)
            or (limits.max_connections_per_peer
                and self._per_peer.get(host, 0) >= limits.max_connections_per_peer)
        ):
            ctx.counters.connections_over_limit += 1
            return None
        self.open_connections += 1
        self._per_peer[host] = self._per_peer.get(host, 0) + 1
        return host

    def closed(self, peer: str) -> None:
        """Forget one connection of ``peer``."""
        self.open_connections -= 1
        left = self._per_peer.get(peer, 1) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)
