"""Transports: UDP datagrams and TCP streams -> frames -> the service's sink.

Contract: thin Twisted wrappers around the sans-I/O framing in
``framing.py``.  They know nothing about syslog syntax, patterns or maps;
each complete frame goes to ``sink(frame, peer_host)``.  A sink must not
raise; if it does anyway, the error is logged here and the connection and
the listener stay up.

Trust is checked first, before any byte is framed: a datagram from a peer
that ``allowed(host)`` refuses is dropped, and a TCP connection from one is
never given a protocol (Twisted closes it at once); ``refused(host)`` is
told either way, to count and warn.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from pbsyslog.framing import StreamFramer, datagram_frame

Sink = Callable[[bytes, str], None]
Check = Callable[[str], bool]
Notify = Callable[[str], None]

# The largest UDP payload there is; Twisted's default (8192) would truncate.
MAX_DATAGRAM = 65535

log = Logger()


def _deliver(sink: Sink, frame: bytes, peer: str) -> None:
    try:
        sink(frame, peer)
    except Exception:
        log.failure("frame from {peer} could not be handled", peer=peer)


class SyslogDatagramProtocol(DatagramProtocol):
    """One syslog message per datagram."""

    noisy = False

    def __init__(self, sink: Sink, allowed: Check, refused: Notify) -> None:
        self._sink = sink
        self._allowed = allowed
        self._refused = refused

    def datagramReceived(self, data: bytes, addr: tuple) -> None:  # noqa: N802 (Twisted's name)
        if not self._allowed(addr[0]):
            self._refused(addr[0])
            return
        frame = datagram_frame(data)
        if frame is not None:
            _deliver(self._sink, frame, addr[0])


class SyslogStreamProtocol(Protocol):
    """RFC 6587 framing (octet-counted or LF, decided per frame) on one connection."""

    def __init__(self, sink: Sink, max_frame: int) -> None:
        self._sink = sink
        self._framer = StreamFramer(max_frame)
        self._peer = "?"

    def connectionMade(self) -> None:  # noqa: N802
        self._peer = getattr(self.transport.getPeer(), "host", "?")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for frame in self._framer.feed(data):
            _deliver(self._sink, frame, self._peer)


class SyslogStreamFactory(Factory):
    """Builds one SyslogStreamProtocol per accepted connection."""

    noisy = False

    def __init__(self, sink: Sink, max_frame: int, allowed: Check, refused: Notify) -> None:
        self._sink = sink
        self._max_frame = max_frame
        self._allowed = allowed
        self._refused = refused

    def buildProtocol(self, addr: object) -> SyslogStreamProtocol | None:  # noqa: N802
        host = getattr(addr, "host", "")
        if not self._allowed(host):
            self._refused(host)
            return None  # Twisted closes the connection before reading a byte
        return SyslogStreamProtocol(self._sink, self._max_frame)
