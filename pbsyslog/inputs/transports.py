"""Transports: UDP datagrams and TCP streams -> frames -> the service's sink.

Contract: thin Twisted wrappers around the sans-I/O framing in
``framing.py`` beside this module.  They know nothing about syslog syntax, patterns or maps;
each complete frame goes to ``sink(frame, peer_host)``.  A sink must not
raise; if it does anyway, the error is logged here and the connection and
the listener stay up.

Trust and bounds are checked before any byte is framed: a datagram from a
peer that the listener's ``allowed(host)`` refuses is dropped, and a TCP
connection from one is never given a protocol (Twisted closes it at once);
``refused(host)`` is told either way, to count and warn.  Every other limit
(frame size, connections per listener and per peer, idle time, datagrams
per second per peer) drops input and counts it in the shared
``TransportCounters``; none of them raises.
"""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet import udp
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from pbsyslog.inputs import recvmmsg
from pbsyslog.inputs.framing import TRAILER, StreamFramer
from pbsyslog.inputs.tls import matches_pins

Sink = Callable[[bytes, str], None]
BatchSink = Callable[[list[bytes]], None]
Check = Callable[[str], bool]
Notify = Callable[[str], None]

# The largest UDP payload there is; Twisted's default (8192) would truncate.
MAX_DATAGRAM = 65535
# The receive buffer asked for on UDP sockets is the config's
# udp_receive_buffer (32 MiB by default): the kernel's default (about 200
# KiB, some 250 syslog lines: Linux charges each queued datagram about
# 832 bytes however short it is) overflows during a burst while the reactor
# is busy (a map commit, a tick), and UDP has no way to slow the sender
# down.  32 MiB holds about 80,000 lines, half a second of a flood; the
# kernel charges it only while lines are queued.  As rsyslog's imudp does:
# SO_RCVBUFFORCE when privileged (it may exceed net.core.rmem_max), else
# SO_RCVBUF (capped by it).
# Python's socket module does not export it; Linux's value (asm-generic/socket.h).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)

log = Logger()


@attrs.define
class TransportCounters:
    """What one listener received, and what it dropped by reason."""

    frames: int = 0
    untrusted: int = 0
    oversize: int = 0
    bad_frames: int = 0
    rate_limited: int = 0
    connections_over_limit: int = 0
    idle_closed: int = 0


@attrs.frozen
class Limits:
    """The bounds one listener enforces (0 disables the ones that allow it)."""

    max_frame: int = 65536
    max_connections: int = 256
    max_connections_per_peer: int = 32
    idle_timeout: float = 0.0
    udp_rate: float = 0.0  # datagrams per second per peer; burst is one second's worth
    udp_receive_buffer: int = 0  # bytes asked for a UDP socket's receive queue; 0: the OS default


@attrs.frozen
class Listening:
    """Everything a listener's protocols share: where frames go and what bounds them."""

    sink: Sink
    allowed: Check
    refused: Notify
    counters: TransportCounters
    limits: Limits
    clock: Any  # IReactorTime
    tls_peers: tuple[str, ...] = ()  # TLS only: client certificate pins; empty: any cert the CA signed
    # Where the frames of one read go at once (in order); None: one by one to sink.
    sink_batch: BatchSink | None = None


def _hand_over(ctx: Listening, frames: list[bytes], peers: Iterable[str]) -> None:
    """Count ``frames`` and give them to the sink: at once to ``sink_batch``, else one by one with their peers."""
    ctx.counters.frames += len(frames)
    if ctx.sink_batch is not None:
        try:
            ctx.sink_batch(frames)
        except Exception:
            log.failure("{n} frames could not be handled", n=len(frames))
        return
    for frame, peer in zip(frames, peers, strict=False):  # peers may be an endless repeat of one peer
        _deliver(ctx.sink, frame, peer)


def _deliver(sink: Sink, frame: bytes, peer: str) -> None:
    try:
        sink(frame, peer)
    except Exception:
        log.failure("frame from {peer} could not be handled", peer=peer)


class TokenBuckets:
    """Per-peer token buckets; memory bounded (a spoofing flood resets them, never grows them)."""

    MAX_PEERS = 4096

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, peer: str, now: float) -> bool:
        """Spend one token of ``peer``'s bucket; False when it is empty."""
        tokens, last = self._buckets.get(peer, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[peer] = (tokens, now)
            return False
        if len(self._buckets) >= self.MAX_PEERS and peer not in self._buckets:
            self._buckets.clear()
        self._buckets[peer] = (tokens - 1, now)
        return True


class SyslogDatagramProtocol(DatagramProtocol):
    """One syslog message per datagram."""

    noisy = False

    def __init__(self, ctx: Listening) -> None:
        self._ctx = ctx
        self._buckets = TokenBuckets(ctx.limits.udp_rate) if ctx.limits.udp_rate > 0 else None
        self.rcvbuf: int | None = None  # what the kernel gave (getsockopt), once listening

    def startProtocol(self) -> None:
        """Enlarge the socket's receive buffer to udp_receive_buffer (see above); log what the kernel gave."""
        sock = getattr(self.transport, "socket", None)
        want = self._ctx.limits.udp_receive_buffer
        if sock is None or not want:  # a fake transport (tests), or the OS default wanted
            return
        self.rcvbuf = set_receive_buffer(sock, want)
        log.info("UDP receive buffer: {got} bytes (asked for {want})", got=self.rcvbuf, want=want)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagramsReceived([(data, addr[0])])

    def datagramsReceived(self, batch: list[tuple[bytes, str]]) -> None:
        """Check and frame every datagram of one read [(data, peer host)]; hand the frames over in order.

        The same checks as one by one (trust, rate, size, empty), each
        peer's trust asked once per run of its datagrams, the clock read
        once: the per-datagram cost here is what limits a UDP listener.
        """
        ctx = self._ctx
        counters = ctx.counters
        allowed = ctx.allowed
        buckets = self._buckets
        max_frame = ctx.limits.max_frame
        now = ctx.clock.seconds() if buckets is not None else 0.0
        frames: list[bytes] = []
        peers: list[str] = []
        append = frames.append
        append_peer = peers.append
        last_peer: str | None = None
        trusted = False
        for data, peer in batch:
            if peer != last_peer:
                last_peer = peer
                trusted = allowed(peer)
            if not trusted:
                counters.untrusted += 1
                ctx.refused(peer)
                continue
            if buckets is not None and not buckets.take(peer, now):
                counters.rate_limited += 1
                continue
            if len(data) > max_frame:
                counters.oversize += 1
                continue
            frame = data.rstrip(TRAILER)
            if frame:
                append(frame)
                append_peer(peer)
        if frames:
            _hand_over(ctx, frames, peers)


class BatchingUDPPort(udp.Port):
    """Twisted's UDP port, handing each read's datagrams over as one batch, read with recvmmsg where there is one.

    ``doRead`` reads what is queued (at most ``max_batch`` datagrams, or
    Twisted's ``maxThroughput`` bytes with plain ``recvfrom``), ignores or
    raises the errors Twisted's own port does, and calls
    ``datagramsReceived(batch)`` once instead of ``datagramReceived`` per
    datagram.  On this path the system calls and the per-datagram Python
    calls cost more than the syslog parsing: ``recvmmsg`` (``pbsyslog.inputs.recvmmsg``)
    reads up to 64 datagrams per call.
    """

    max_batch = 1024
    _receiver: Any = None

    def startListening(self) -> None:
        super().startListening()
        if recvmmsg.available():
            self._receiver = recvmmsg.Receiver(self.socket)

    def doRead(self) -> None:
        batch: list[tuple[bytes, str]] = []
        try:
            receiver = self._receiver
            if receiver is not None:
                vlen = receiver.vlen
                receive = receiver.receive
                while len(batch) < self.max_batch and receive(batch) == vlen:
                    pass
            else:
                recvfrom = self.socket.recvfrom
                size = self.maxPacketSize
                append = batch.append
                read = 0
                while read < self.maxThroughput:
                    data, addr = recvfrom(size)
                    append((data, addr[0]))
                    read += len(data)
        except OSError as se:
            no = se.args[0]
            if no in udp._sockErrReadRefuse:
                if self._connectedAddr:
                    self.protocol.connectionRefused()
            elif no not in udp._sockErrReadIgnore:
                self._deliver(batch)
                raise
        self._deliver(batch)

    def _deliver(self, batch: list[tuple[bytes, str]]) -> None:
        if batch:
            try:
                self.protocol.datagramsReceived(batch)
            except BaseException:
                log.failure("UDP datagrams could not be handled")

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None


def listen_udp(reactor: Any, port: int, protocol: SyslogDatagramProtocol, interface: str, max_packet: int) -> Any:
    """Listen on UDP with a ``BatchingUDPPort`` on a real reactor; through ``listenUDP`` on any other (tests)."""
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=max_packet)
    listening = BatchingUDPPort(port, protocol, interface, max_packet, reactor)
    listening.startListening()
    return listening


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; return what the kernel reports (Linux doubles the request).

    Never raises: a buffer that cannot be enlarged stays as it was.
    """
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:  # SO_RCVBUFFORCE without CAP_NET_ADMIN: EPERM
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


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
            _hand_over(ctx, frames, itertools.repeat(self._peer))
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
        return SyslogStreamProtocol(self, host)

    def closed(self, peer: str) -> None:
        """Forget one connection of ``peer``."""
        self.open_connections -= 1
        left = self._per_peer.get(peer, 1) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)
