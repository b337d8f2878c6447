"""Postfix policy delegation: answer ``check_policy_service`` from live state, for exactly one address.

Contract: Postfix's SMTP Access Policy Delegation protocol (SMTPD_POLICY_README):
smtpd sends ``name=value`` lines ending with an empty line, and reads one
``action=...`` line followed by an empty line, on a connection it keeps
for many requests.  ``PolicyReader`` (sans I/O) turns bytes into requests;
``decide`` answers one request from a lookup of ``client_address``:
``action=OK`` while that exact address is authorised, ``action=DUNNO``
otherwise, so the next restriction decides.  Unlike a ``hash:`` or SQL
access map, Postfix looks nothing else up here: no parent networks, no
``2001:db8::5`` standing for ``2001:db8::5:1``.  No file, no smtpd restart.

What it must not do: grant anything for a request it cannot read.  A
request that is not ``request=smtpd_access_policy``, or has no valid
``client_address``, is answered DUNNO.

How it fails: a line over ``MAX_LINE`` bytes, a request of more than
``MAX_ATTRIBUTES`` lines, or bytes that are not ``name=value`` stop the
reader; the protocol answers what came before and closes that connection
only.  With ``smtpd_policy_service_default_action = DUNNO`` (or
``default_action=DUNNO`` on the service) Postfix treats a pbsyslog that is
down as "no opinion": relaying is refused, mail to your own domains flows.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from pbsyslog.patterns import normalise_ip

log = Logger(namespace="pbsyslog")

# Postfix's attributes are short (a client name is at most 255 bytes, a
# SASL user name or a certificate subject a little more); a request carries
# about 30 of them.
MAX_LINE = 4096
MAX_ATTRIBUTES = 100


class PolicyReader:
    """Incremental decoder of policy requests; bounded per line and per request.

    After malformed input, ``error`` says why and the reader takes nothing
    more; requests completed before the bad bytes are still returned.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._attributes: dict[str, str] = {}
        self.error: str | None = None

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Return every request completed by ``data`` (each a dict of its attributes)."""
        if self.error is not None:
            return []
        self._buffer += data
        requests: list[dict[str, str]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self.error = f"a line longer than {MAX_LINE} bytes"
                return requests
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1:]
            if len(line) > MAX_LINE:
                self.error = f"a line longer than {MAX_LINE} bytes"
                return requests
            if not line:
                requests.append(self._attributes)
                self._attributes = {}
                continue
            name, sep, value = line.partition(b"=")
            if not sep or not name:
                self.error = "a line that is not name=value"
                return requests
            if len(self._attributes) >= MAX_ATTRIBUTES:
                self.error = f"a request of more than {MAX_ATTRIBUTES} attributes"
                return requests
            self._attributes[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")


def decide(request: dict[str, str], authorised: Callable[[str], bool]) -> bytes:
    """The reply to one request: OK while its exact client address is authorised, else DUNNO."""
    if request.get("request") != "smtpd_access_policy":
        return b"action=DUNNO\n\n"
    ip = normalise_ip(request.get("client_address", ""))
    if ip is None or not authorised(ip):
        return b"action=DUNNO\n\n"
    return b"action=OK\n\n"


class PolicyProtocol(Protocol):
    """One smtpd connection; it stays open for many requests."""

    def __init__(self, factory: PolicyFactory, peer: str) -> None:
        self._factory = factory
        self._peer = peer
        self._reader = PolicyReader()

    def dataReceived(self, data: bytes) -> None:
        replies = [decide(request, self._factory.authorised) for request in self._reader.feed(data)]
        if replies:
            self.transport.write(b"".join(replies))
        if self._reader.error is not None:
            log.warn("policy service: {reason} from {peer}; closing that connection",
                     reason=self._reader.error, peer=self._peer)
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self._factory.open_connections -= 1


class PolicyFactory(Factory):
    """Builds PolicyProtocols for trusted peers, at most ``max_connections`` at a time."""

    noisy = False

    def __init__(self, authorised: Callable[[str], bool], allowed: Callable[[str], bool],
                 max_connections: int) -> None:
        self.authorised = authorised
        self._allowed = allowed
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused = 0

    def buildProtocol(self, addr: object) -> PolicyProtocol | None:
        host = getattr(addr, "host", "")
        # A UNIX socket peer has no host; the socket's file mode decides who may connect.
        if host and not self._allowed(host):
            self.refused += 1
            log.warn("policy service: refused connection from untrusted {peer}", peer=host)
            return None
        if self.max_connections and self.open_connections >= self.max_connections:
            self.refused += 1
            return None
        self.open_connections += 1
        return PolicyProtocol(self, host or "unix")
