"""RELP server (rsyslog's Reliable Event Logging Protocol, ``omrelp``) -> the service's sink.

Contract: a sans-I/O core (``FrameParser``, ``encode``, ``ServerSession``)
that turns a connection's bytes into actions, and a thin Twisted shell
(``RelpFactory``/``RelpProtocol``, ``listen_relp``) that shares the TCP/TLS
listeners' ``Listening`` context: allow-list, connection limits, idle
timeout, counters and TLS certificate pins.

The protocol, as librelp speaks it::

    FRAME   = TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER
    TXNR    = 1-9 digits; the client numbers its commands 1, 2, ... and wraps
              999999999 -> 1; a server checks the sequence; 0 marks a frame
              the server sends unasked (serverclose)
    COMMAND = 1-32 letters: open, syslog, close (client); rsp, serverclose (server)
    DATALEN = 1-9 digits; 0 means no SP and no DATA
    TRAILER = LF

A session starts with ``open`` (DATA: the client's offers, ``name=value``
lines); the reply ``rsp`` carries ``200 OK`` and our offers
(``relp_version=0``, ``commands=syslog``).  Every ``syslog`` frame's DATA
is one syslog message, answered ``rsp 200 OK`` with the frame's TXNR.
``close`` is answered with an empty ``rsp`` and the server hangs up.  On
shutdown the server sends ``0 serverclose 0`` to every open session.

What "acknowledged" guarantees: the ``rsp 200 OK`` for a message is written
only after ``sink(message, peer)`` returned, i.e. after the pipeline has
handled it and, if it was a login, the tracker holds the IP.  It is then in
memory, not yet on disk: the journal and map commit follows within
``commit_interval`` (coalesced), and a clean stop (SIGTERM) writes it
before exiting (the listener stops acknowledging, and sends
``serverclose``, before the service's last flush).  A crash (SIGKILL,
power loss) inside that window loses the acknowledged logins of the last
``commit_interval`` seconds: rsyslog will not resend them.  Acks do not
wait for the commit on purpose: a commit is deliberately coalesced (each
one restarts idle smtpd processes), so holding acks for it would cap a
RELP session at one window (omrelp's 128 messages) per commit_interval, and
a login that loses its authorisation in a crash costs one re-login, not a
lost mail.  A message the pipeline ignores (not a login, untrusted host,
...) is acknowledged too: it was received and judged; so is one whose
HOSTNAME the connection's client certificate does not speak for (dropped
before the sink, as on the TLS listener: ``stream.py``).

Bounds and failures: DATA longer than the listener's ``max_frame`` is never
buffered: it is skipped as it arrives, counted ``oversize``, and
acknowledged (like the TCP listener dropping an over-long frame; a refusal
would make rsyslog resend the same message forever and block its queue).
A frame that breaks the grammar, a TXNR out of sequence, or a command
before ``open`` is counted ``bad_frames`` and that connection alone is
closed; rsyslog reconnects and resends what was not acknowledged.  An
unknown command in a well-formed frame is answered ``500`` and counted.
Nothing here raises into the reactor.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from pbsyslog.inputs.framing import datagram_frame
from pbsyslog.inputs.listening import Listening, deliver
from pbsyslog.inputs.stream import SyslogStreamFactory, SyslogStreamProtocol

log = Logger()

MAX_TXNR = 999_999_999
# Longest header: 9-digit TXNR, 32-letter command, 9-digit DATALEN, 3 separators.
MAX_HEADER = 9 + 1 + 32 + 1 + 9 + 1

OFFERS = b"relp_version=0\ncommands=syslog"
OK = b"200 OK"
SERVERCLOSE = b"0 serverclose 0\n"

# A complete header, up to and including the byte after DATALEN (SP or LF).
_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
# What an incomplete header may look like so far; anything else is malformed.
_PARTIAL = re.compile(rb"[0-9]{0,9}|[0-9]{1,9} [A-Za-z]{0,32}|[0-9]{1,9} [A-Za-z]{1,32} [0-9]{0,9}")


@attrs.frozen
class Frame:
    """One received RELP frame.  ``oversize``: DATA was longer than allowed and was skipped."""

    txnr: int
    command: str
    data: bytes = b""
    oversize: bool = False


def encode(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One RELP frame on the wire."""
    head = b"%d %s %d" % (txnr, command.encode("ascii"), len(data))
    return head + (b" " + data if data else b"") + b"\n"


def rsp(txnr: int, data: bytes = OK) -> bytes:
    """The server's response to the client's command ``txnr``."""
    return encode(txnr, "rsp", data)


def next_txnr(txnr: int) -> int:
    """The TXNR that follows ``txnr`` (999999999 wraps to 1)."""
    return 1 if txnr >= MAX_TXNR else txnr + 1


class _State(enum.Enum):
    HEADER = enum.auto()
    DATA = enum.auto()  # collecting DATA and the trailer
    SKIP = enum.auto()  # discarding an over-long DATA, then checking the trailer
    BROKEN = enum.auto()


class FrameParser:
    """Split a RELP byte stream into frames; hold at most ``max_data`` + a header + one read."""

    def __init__(self, max_data: int) -> None:
        if max_data < 1:
            raise ValueError(f"max_data must be positive, not {max_data!r}")
        self.max_data = max_data
        self.error: str | None = None  # why the stream is broken; nothing more is parsed
        self._state = _State.HEADER
        self._buf = bytearray()
        self._head: tuple[int, str] = (0, "")
        self._need = 0  # DATA: DATALEN; SKIP: bytes of DATA still to discard

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame (for tests)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next bytes; return the frames they complete.  After an error, always []."""
        frames: list[Frame] = []
        if self._state is _State.BROKEN or not data:
            return frames
        buf = self._buf
        buf += data
        pos = 0
        while pos < len(buf):
            state = self._state
            if state is _State.HEADER:
                m = _HEADER.match(buf, pos)
                if m is None:
                    tail = bytes(buf[pos:pos + MAX_HEADER + 1])
                    if len(buf) - pos <= MAX_HEADER and _PARTIAL.fullmatch(tail):
                        break  # a header still arriving
                    return self._broken(f"bad frame header {tail[:40]!r}")
                txnr, command, datalen = int(m[1]), m[2].decode("ascii"), int(m[3])
                pos = m.end()
                if m[4] == b"\n":
                    if datalen:
                        return self._broken(f"DATALEN {datalen} but no data")
                    frames.append(Frame(txnr, command))
                    continue
                if not datalen:
                    return self._broken("DATALEN 0 followed by data")
                self._head = (txnr, command)
                if datalen > self.max_data:
                    self._state, self._need = _State.SKIP, datalen
                else:
                    self._state, self._need = _State.DATA, datalen
            elif state is _State.DATA:
                end = pos + self._need
                if end >= len(buf):
                    break  # data or trailer still arriving
                if buf[end] != 0x0A:
                    return self._broken("no LF after DATA")
                frames.append(Frame(*self._head, bytes(buf[pos:end])))
                pos = end + 1
                self._state = _State.HEADER
            else:  # SKIP
                take = min(self._need, len(buf) - pos)
                pos += take
                self._need -= take
                if self._need:
                    break
                if pos >= len(buf):
                    break  # the trailer still to come: checked on the next read
                if buf[pos] != 0x0A:
                    return self._broken("no LF after DATA")
                frames.append(Frame(*self._head, oversize=True))
                pos += 1
                self._state = _State.HEADER
        del buf[:pos]
        return frames

    def _broken(self, reason: str) -> list[Frame]:
        # Frames completed earlier in the same read are dropped with the
        # stream: the connection closes and the client resends them anyway.
        self.error = reason
        self._state = _State.BROKEN
        self._buf = bytearray()
        return []


# -- the session: what a server does with frames ---------------------------

@attrs.frozen
class Reply:
    """Write ``data`` to the client."""

    data: bytes


@attrs.frozen
class Deliver:
    """Hand ``message`` to the sink, THEN write ``ack``."""

    message: bytes
    ack: bytes


@attrs.frozen
class Hangup:
    """Close the connection (after writing what came before).  ``error``: a protocol violation."""

    reason: str
    error: bool


Action = Reply | Deliver | Hangup


class ServerSession:
    """One RELP server session, sans I/O: ``feed(bytes) -> actions``, in order."""

    def __init__(self, max_data: int) -> None:
        self.parser = FrameParser(max_data)
        self.opened = False
        self.closed = False  # after close, a broken frame or serverclose: nothing more is answered
        self.expected_txnr = 1
        self.messages = 0  # syslog frames received, oversize ones included
        self.oversize = 0
        self.bad_frames = 0  # protocol violations and unknown commands

    def feed(self, data: bytes) -> list[Action]:
        """Take the next bytes of the connection; return what to do, in order."""
        if self.closed:
            return []
        actions: list[Action] = []
        for frame in self.parser.feed(data):
            self._handle(frame, actions)
            if self.closed:
                return actions
        if self.parser.error is not None:
            return self._violation(actions, self.parser.error)
        return actions

    def server_close(self) -> bytes:
        """Stop answering; return the ``serverclose`` frame to send before hanging up."""
        self.closed = True
        return SERVERCLOSE

    def _violation(self, actions: list[Action], reason: str) -> list[Action]:
        self.bad_frames += 1
        self.closed = True
        actions.append(Hangup(reason, error=True))
        return actions

    def _handle(self, frame: Frame, actions: list[Action]) -> None:
        if frame.txnr != self.expected_txnr:
            self._violation(actions, f"txnr {frame.txnr} out of sequence (expected {self.expected_txnr})")
            return
        self.expected_txnr = next_txnr(frame.txnr)
        command = frame.command
        if command == "syslog" and self.opened:
            self.messages += 1
            if frame.oversize:
                self.oversize += 1
                actions.append(Reply(rsp(frame.txnr)))
                return
            message = datagram_frame(frame.data)
            if message is None:  # nothing but line ends: nothing to hand on
                actions.append(Reply(rsp(frame.txnr)))
            else:
                actions.append(Deliver(message, rsp(frame.txnr)))
        elif command == "open":
            if self.opened:  # librelp answers a repeated open the same way
                actions.append(Reply(rsp(frame.txnr, b"200 connection already open - ignored")))
                return
            if frame.oversize or b"syslog" not in _offer(frame.data, b"commands"):
                actions.append(Reply(rsp(frame.txnr, b"500 required command not supported by client")))
                self.closed = True
                self.bad_frames += 1
                actions.append(Hangup("client does not offer commands=syslog", error=True))
                return
            self.opened = True
            actions.append(Reply(rsp(frame.txnr, OK + b"\n" + OFFERS)))
        elif command == "close":
            self.closed = True
            actions.append(Reply(rsp(frame.txnr, b"")))
            actions.append(Hangup("client closed the session", error=False))
        elif not self.opened:
            self._violation(actions, f"{command!r} before open")
        else:
            self.bad_frames += 1
            actions.append(Reply(rsp(frame.txnr, b"500 command not supported")))


def _offer(data: bytes, name: bytes) -> list[bytes]:
    """The values of offer ``name`` in an ``open`` frame's DATA (``name=v1,v2`` lines)."""
    for line in data.split(b"\n"):
        key, sep, value = line.partition(b"=")
        if sep and key.strip() == name:
            return [v.strip() for v in value.split(b",")]
    return []


# -- the Twisted shell ------------------------------------------------------

class RelpProtocol(SyslogStreamProtocol):
    """One RELP connection (TCP or TLS); idle timeout and TLS pins as the stream listener's."""

    _factory: RelpFactory

    def __init__(self, factory: RelpFactory, peer: str) -> None:
        super().__init__(factory, peer)
        self.session = ServerSession(self._ctx.limits.max_frame)
        self._oversize_seen = 0
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self._pinned and not self._check_pins():
            return
        self.resetTimeout()
        session, ctx = self.session, self._ctx
        before = session.messages
        write = self.transport.write
        actions = session.feed(data)
        if session.opened:
            self.spoke()  # a RELP session that has opened is no silent socket
        for action in actions:
            if isinstance(action, Deliver):
                # The ack goes out only once the sink has returned: the
                # message is then in the tracker.  A sink that raised is
                # logged by deliver and the message still acknowledged
                # (resending it would raise again); so is a message from a
                # HOSTNAME the certificate does not speak for (counted and
                # logged by _speaks; resending it would be refused again).
                if self._speaks(action.message):
                    deliver(ctx.sink, action.message, self._peer)
                write(action.ack)
            elif isinstance(action, Reply):
                write(action.data)
            else:
                if action.error:
                    log.warn("RELP from {peer}: {reason}; closing the connection",
                             peer=self._peer, reason=action.reason)
                self.transport.loseConnection()
        counters = ctx.counters
        counters.frames += session.messages - before
        counters.oversize += session.oversize - self._oversize_seen
        counters.bad_frames += session.bad_frames - self._malformed_seen
        self._oversize_seen, self._malformed_seen = session.oversize, session.bad_frames

    def server_close(self) -> None:
        """Shutdown: stop acknowledging, send ``serverclose`` and hang up."""
        if self.session.closed:
            self.transport.loseConnection()
            return
        self.transport.write(self.session.server_close())
        self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        super().connectionLost(reason)
        self.session.closed = True
        self._factory.sessions.discard(self)
        self.lost.callback(None)


class RelpFactory(SyslogStreamFactory):
    """Builds one RelpProtocol per accepted connection, within the stream listener's limits."""

    def __init__(self, ctx: Listening) -> None:
        super().__init__(ctx)
        self.sessions: set[RelpProtocol] = set()
        self.stopping = False
        self._closed: defer.Deferred[None] | None = None

    def buildProtocol(self, addr: object) -> RelpProtocol | None:
        if self.stopping:
            return None
        peer = self.admit(addr)  # the stream listener's allow list and connection limits
        if peer is None:
            return None
        proto = RelpProtocol(self, peer)
        self.sessions.add(proto)
        return proto

    def shutdown(self, grace: float = 2.0) -> defer.Deferred[None]:
        """Send ``serverclose`` to every session; fire when they are all gone (at most ``grace`` s)."""
        if self._closed is not None:
            return self._closed
        self.stopping = True
        sessions = list(self.sessions)
        for proto in sessions:
            proto.server_close()
        waiting = defer.DeferredList([p.lost for p in sessions], consumeErrors=True)

        def abort() -> None:
            for proto in list(self.sessions):
                proto.transport.abortConnection()

        timer = self.ctx.clock.callLater(grace, abort) if sessions else None

        def done(_: object) -> None:
            if timer is not None and timer.active():
                timer.cancel()

        waiting.addBoth(done)
        self._closed = waiting  # type: ignore[assignment]
        return self._closed  # type: ignore[return-value]


class RelpPort:
    """A listening port whose ``stopListening`` first ends the RELP sessions.

    The service stops its ports before its last flush: sessions stop
    acknowledging before then, so nothing is acknowledged that the last
    flush does not write.
    """

    def __init__(self, port: Any, factory: RelpFactory) -> None:
        self.port = port
        self.factory = factory

    def getHost(self) -> Any:
        return self.port.getHost()

    def stopListening(self) -> defer.Deferred[Any]:
        closed = self.factory.shutdown()
        stopped = defer.maybeDeferred(self.port.stopListening)
        return defer.gatherResults([closed, stopped], consumeErrors=True)


def listen_relp(reactor: Any, port: int, interface: str, ctx: Listening,
                tls_options: Any = None) -> RelpPort:
    """Listen for RELP (over TLS when ``tls_options`` is given) on ``interface:port``."""
    factory = RelpFactory(ctx)
    if tls_options is not None:
        listening = reactor.listenSSL(port, factory, tls_options, interface=interface)
    else:
        listening = reactor.listenTCP(port, factory, interface=interface)
    # At reactor shutdown, wait (briefly) until the serverclose frames are
    # written: the reactor drops unwritten data when it disconnects everything.
    reactor.addSystemEventTrigger("before", "shutdown", factory.shutdown)
    return RelpPort(listening, factory)

