"""TCP and TLS: RFC 6587 framing on each connection -> the listener's sink.

Contract: a thin Twisted wrapper around the sans-I/O framing in
``framing.py``; knows nothing about patterns or maps, nor about syslog
syntax beyond the HOSTNAME of a frame on a name-pinned TLS connection.  A
connection from a peer the listener's ``allowed(host)`` refuses is never
given a protocol (Twisted closes it at once) and ``refused(host)`` is told;
connections over the listener's limits (in all, per peer) are refused and
counted; an idle connection is closed; on TLS, a client whose certificate
matches none of the pins is cut off before any of its data is read, and
logged as such.  ``SyslogStreamFactory.admit`` is that admission, for
RELP's factory too.

A certificate speaks only for the names it was pinned by: when it matched a
*name* pin (``tls.PinMatch.hostnames``), a frame of that connection whose
syslog HOSTNAME is not that name (or its first label) is dropped here,
counted ``untrusted`` and logged, before the sink sees it; the listener's
own ``hostnames``, if any, are checked after that by the pipeline, so both
must pass.  The HOSTNAME is read with ``syslog.parse``, the very function
the pipeline uses, so both read the same HOSTNAME; a frame it cannot parse
is handed on (the pipeline counts it malformed and drops it).  Connections
without such a tie (plain TCP, no pins, a fingerprint pin) hand every frame
on unread.  Refusals are logged at most once a minute per peer and reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from pbsyslog.inputs.framing import StreamFramer
from pbsyslog.inputs.listening import Listening, hand_over
from pbsyslog.inputs.tls import PinMatch, match_pins
from pbsyslog.memo import remember
from pbsyslog.syslog import MalformedMessage, parse

log = Logger(namespace="pbsyslog")

# A refusal (of a certificate, of a HOSTNAME) is logged at most this often per peer and reason.
WARN_INTERVAL = 60.0


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
        self._cut_off = False  # the certificate matched no pin: nothing more is read
        # A certificate matched by name: the names, and the HOSTNAMEs its frames may carry.
        self._tie: PinMatch | None = None
        self._speaks_for: frozenset[str] | None = None
        # TimeoutMixin's documented hook for another clock (a class attribute meant to be replaced).
        self.callLater = self._ctx.clock.callLater  # type: ignore[method-assign]

    def connectionMade(self) -> None:
        # Until its first frame a connection has first_frame_timeout (and may
        # be closed to make room for a new one: see the factory's admit);
        # then idle_timeout.
        limits = self._ctx.limits
        timeout = limits.first_frame_timeout or limits.idle_timeout
        if timeout > 0:
            self.setTimeout(timeout)
        self._factory.silent(self)

    def spoke(self) -> None:
        """The connection delivered its first frame: from now on only idle_timeout closes it."""
        if self._factory.heard(self):
            idle = self._ctx.limits.idle_timeout
            self.setTimeout(idle if idle > 0 else None)

    def evict(self) -> None:
        """Close this connection, which has delivered nothing yet, to make room for a new one."""
        self._ctx.counters.silent_evicted += 1
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        """TLS only: drop a client whose certificate matches none of the listener's pins."""
        self._check_pins()

    def _check_pins(self) -> bool:
        """Whether the client's certificate matches a pin (checked once); cut a client off that matches none."""
        if self._pinned:
            return True
        if self._cut_off:
            return False
        match = match_pins(self.transport.getPeerCertificate(), self._ctx.tls_peers)
        if match is None:
            self._cut_off = True
            self._ctx.counters.untrusted += 1
            self._factory.warn(
                (self._peer, "pin"),
                "refused syslog over TLS: client certificate of {peer} matches no tls_peers pin",
                peer=self._peer)
            self.transport.abortConnection()
            return False
        self._pinned = True
        self._tie = match
        self._speaks_for = match.hostnames
        return True

    def _speaks(self, frame: bytes) -> bool:
        """Whether ``frame`` may go on: its HOSTNAME is one this connection's certificate speaks for.

        True without a tie, and for a frame that does not parse (the
        pipeline counts and drops it).  A refused frame is counted
        ``untrusted`` and logged (once a minute per peer).
        """
        allowed = self._speaks_for
        if allowed is None:
            return True
        try:
            hostname = parse(frame).hostname
        except MalformedMessage:
            return True
        host = (hostname or "").lower()
        if host in allowed:
            return True
        self._ctx.counters.untrusted += 1
        names = sorted(self._tie.names) if self._tie is not None else []
        self._factory.warn(
            (self._peer, "hostname"),
            "refused syslog over TLS from {peer}: HOSTNAME {host} is not the name of its client "
            "certificate ({names}, pinned in tls_peers)",
            peer=self._peer, host=repr(hostname) if hostname else "(none)", names=", ".join(names))
        return False

    def dataReceived(self, data: bytes) -> None:
        if not self._pinned and not self._check_pins():
            return
        self.resetTimeout()
        framer = self._framer
        ctx = self._ctx
        frames = framer.feed(data)
        if frames and self._speaks_for is not None:
            frames = [frame for frame in frames if self._speaks(frame)]
        if frames:
            self.spoke()
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
        self._factory.closed(self)


class SyslogStreamFactory(Factory):
    """Builds one SyslogStreamProtocol per accepted connection, within the connection limits."""

    noisy = False

    def __init__(self, ctx: Listening) -> None:
        self.ctx = ctx
        self.open_connections = 0
        self._per_peer: dict[str, int] = {}
        self._warned: dict[tuple[str, str], float] = {}
        # Open connections that have delivered no frame yet, oldest first.
        self._silent: dict[SyslogStreamProtocol, None] = {}
        # Connections already forgotten (closed to make room): their connectionLost changes no count.
        self._forgotten: set[SyslogStreamProtocol] = set()

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
        if limits.max_connections_per_peer and self._per_peer.get(host, 0) >= limits.max_connections_per_peer:
            # Full for this peer: a silent connection of its own makes room
            # (idle sockets cannot hold the slots a sender's reconnect needs).
            if not self._make_room(lambda proto: proto._peer == host):
                ctx.counters.connections_over_limit += 1
                return None
        if limits.max_connections and self.open_connections >= limits.max_connections:
            if not self._make_room(lambda proto: True):
                ctx.counters.connections_over_limit += 1
                return None
        self.open_connections += 1
        self._per_peer[host] = self._per_peer.get(host, 0) + 1
        return host

    def warn(self, key: tuple[str, str], text: str, **fields: Any) -> None:
        """Log warning ``text`` unless one with the same ``key`` (peer, reason) was logged in the last minute."""
        now = self.ctx.clock.seconds()
        last = self._warned.get(key)
        if last is not None and now - last < WARN_INTERVAL:
            return
        remember(self._warned, key, now, 1024)  # bounded: a flood of peers cannot grow it
        log.warn(text, **fields)

    def silent(self, proto: SyslogStreamProtocol) -> None:
        """A new connection: silent until its first frame."""
        self._silent[proto] = None

    def heard(self, proto: SyslogStreamProtocol) -> bool:
        """``proto`` delivered a frame; True the first time."""
        return self._silent.pop(proto, False) is None

    def _make_room(self, which: Callable[[SyslogStreamProtocol], bool]) -> bool:
        """Close the oldest silent connection ``which`` accepts; False when there is none."""
        victim = next((proto for proto in self._silent if which(proto)), None)
        if victim is None:
            return False
        self.closed(victim)
        self._forgotten.add(victim)
        victim.evict()
        return True

    def closed(self, proto: SyslogStreamProtocol) -> None:
        """Forget one connection (once, whether it was closed to make room or went away)."""
        if proto in self._forgotten:
            self._forgotten.discard(proto)
            return
        self._silent.pop(proto, None)
        peer = proto._peer
        self.open_connections -= 1
        left = self._per_peer.get(peer, 1) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)
