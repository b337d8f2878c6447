"""Socketmap: answer Postfix ``socketmap:`` (and Sendmail socket map) lookups from live state.

Contract: the sans-I/O ``NetstringReader`` turns bytes into requests
(``NAME SP KEY`` inside a netstring, ``LEN:DATA,``); ``answer`` turns one
request into a reply netstring (``OK value``, ``NOTFOUND ``, ``PERM reason``)
from a lookup function; ``SocketmapProtocol`` is the thin Twisted shell.  No
file and no smtpd restart is involved: a login is visible the moment the
tracker has it.

How it fails: a malformed or over-long netstring stops the reader (its
``error`` says why); the protocol answers what came before and then closes
that one connection (the service
and other connections stay up).  A lookup of a map name the listener does
not serve is answered ``PERM``.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

log = Logger(namespace="pbsyslog")

# Postfix's socketmap client refuses replies longer than 100000 bytes and
# sends requests far shorter than this; anything longer is an error.
MAX_REQUEST = 10_000


class NetstringError(ValueError):
    """Bytes that are not a netstring (or one longer than allowed)."""


class NetstringReader:
    """Incremental netstring decoder, bounded by ``limit`` bytes of payload.

    After malformed input, ``error`` says why and the reader takes nothing
    more; payloads decoded before the bad bytes are still returned.
    """

    def __init__(self, limit: int = MAX_REQUEST) -> None:
        self._limit = limit
        self._digits = len(str(limit))
        self._buffer = b""
        self.error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Return every complete netstring payload in the stream so far."""
        if self.error is not None:
            return []
        self._buffer += data
        out = []
        try:
            while self._buffer:
                payload = self._next()
                if payload is None:
                    break
                out.append(payload)
        except NetstringError as e:
            self.error = str(e)
            self._buffer = b""
        return out

    def _next(self) -> bytes | None:
        buffer = self._buffer
        colon = buffer.find(b":", 0, self._digits + 1)
        if colon < 0:
            if len(buffer) > self._digits or not buffer.isdigit():
                raise NetstringError("bad netstring length")
            return None
        digits = buffer[:colon]
        if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
            raise NetstringError("bad netstring length")
        length = int(digits)
        if length > self._limit:
            raise NetstringError(f"netstring of {length} bytes is over the {self._limit} limit")
        end = colon + 1 + length
        if len(buffer) < end + 1:
            return None
        if buffer[end:end + 1] != b",":
            raise NetstringError("netstring not terminated by ','")
        self._buffer = buffer[end + 1:]
        return buffer[colon + 1:end]


def netstring(payload: bytes) -> bytes:
    """Encode one netstring."""
    return b"%d:%s," % (len(payload), payload)


def answer(request: bytes, lookup: Callable[[str], str | None], names: frozenset[str] | None) -> bytes:
    """The reply netstring for one ``NAME KEY`` request."""
    name, sep, key = request.partition(b" ")
    if not sep:
        return netstring(b"PERM request is not 'name key'")
    if names is not None and name.decode(errors="replace") not in names:
        return netstring(b"PERM no such map")
    value = lookup(key.decode(errors="replace"))
    if value is None:
        return netstring(b"NOTFOUND ")
    return netstring(b"OK " + value.encode())


class SocketmapProtocol(Protocol):
    """One Postfix/Sendmail socketmap client connection."""

    def __init__(self, lookup: Callable[[str], str | None], names: frozenset[str] | None,
                 factory: SocketmapFactory | None = None) -> None:
        self._lookup = lookup
        self._names = names
        self._reader = NetstringReader()
        self._factory = factory

    def connectionLost(self, reason: object = None) -> None:
        if self._factory is not None:
            self._factory.open_connections -= 1

    def dataReceived(self, data: bytes) -> None:
        for request in self._reader.feed(data):
            self.transport.write(answer(request, self._lookup, self._names))
        if self._reader.error is not None:
            log.warn("socketmap: closing connection from {peer}: {error}",
                     peer=getattr(self.transport.getPeer(), "host", "?"), error=self._reader.error)
            self.transport.loseConnection()


class SocketmapFactory(Factory):
    """Builds SocketmapProtocols for one socketmap listener: trusted peers only, at most ``max_connections``."""

    noisy = False

    def __init__(
        self,
        lookup: Callable[[str], str | None],
        names: frozenset[str] | None,
        allowed: Callable[[str], bool],
        max_connections: int = 0,
    ) -> None:
        self._lookup = lookup
        self._names = names
        self._allowed = allowed
        self.max_connections = max_connections  # 0: no limit
        self.open_connections = 0
        self.over_limit = 0

    def buildProtocol(self, addr: object) -> SocketmapProtocol | None:
        host = getattr(addr, "host", None)
        # UNIX-socket peers have no host: the socket's file mode is their gate.
        if host is not None and not self._allowed(host):
            log.warn("socketmap: refused connection from untrusted {peer}", peer=host)
            return None
        if self.max_connections and self.open_connections >= self.max_connections:
            # Each smtpd keeps one connection; a flood of idle ones must not
            # take every descriptor the service has (Twisted closes this one).
            self.over_limit += 1
            return None
        self.open_connections += 1
        return SocketmapProtocol(self._lookup, self._names, self)
