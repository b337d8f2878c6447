"""UDP: one syslog message per datagram -> the listener's sink, a read's datagrams at once.

Contract: a thin Twisted wrapper; knows nothing about syslog syntax,
patterns or maps.  Trust and bounds are checked before a datagram is
framed: one from a peer the listener's ``allowed(host)`` refuses is dropped
and ``refused(host)`` is told (to count and warn); datagrams over the
per-peer rate or over ``max_frame`` are dropped and counted.  Nothing here
raises into the reactor.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pbsyslog.inputs import recvmmsg
from pbsyslog.inputs.framing import TRAILER
from pbsyslog.inputs.listening import Listening, hand_over
from pbsyslog.memo import remember

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
        remember(self._buckets, peer, (tokens - 1, now), self.MAX_PEERS)
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
            hand_over(ctx, frames, peers)


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
