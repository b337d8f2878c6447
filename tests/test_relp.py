"""RELP server: sans-I/O frame parser and session, the Twisted protocol, and the service's relp listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from pbsyslog.config import Config, ConfigError
from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.relp import (
    MAX_HEADER,
    SERVERCLOSE,
    Deliver,
    Frame,
    FrameParser,
    Hangup,
    RelpFactory,
    Reply,
    ServerSession,
    encode,
    next_txnr,
    rsp,
)
from pbsyslog.outputs.berkeley import open_output
from pbsyslog.wiring import build

OPEN_DATA = b"relp_version=0\nrelp_software=librelp,1.11.0,https://www.rsyslog.com\ncommands=syslog"
LOGIN = (
    b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
    b"rip=%s, lip=192.0.2.1, mpid=1"
)


def open_frame(txnr: int = 1) -> bytes:
    return encode(txnr, "open", OPEN_DATA)


# -- encoder and parser ----------------------------------------------------

def test_encode_with_and_without_data() -> None:
    """A frame with data has SP DATA before the LF; one without has DATALEN 0 and no SP."""
    assert encode(7, "syslog", b"hello") == b"7 syslog 5 hello\n"
    assert encode(3, "rsp", b"") == b"3 rsp 0\n"
    assert rsp(12) == b"12 rsp 6 200 OK\n"


def test_txnr_wraps_after_nine_digits() -> None:
    """The TXNR after 999999999 is 1, never 0 (0 is the server's unsolicited number)."""
    assert next_txnr(999_999_999) == 1
    assert next_txnr(41) == 42


def test_parser_reads_frames_with_and_without_data() -> None:
    """Data containing LFs and spaces is taken by its length; a DATALEN 0 frame ends at the LF."""
    parser = FrameParser(100)
    frames = parser.feed(b"1 open 5 a\nb c\n2 syslog 3 x y\n3 close 0\n")
    assert frames == [Frame(1, "open", b"a\nb c"), Frame(2, "syslog", b"x y"), Frame(3, "close")]
    assert parser.error is None and parser.buffered == 0


frame_strategy = st.tuples(
    st.integers(1, 999_999_999),
    st.sampled_from(["open", "syslog", "close", "rsp", "x" * 32]),
    st.binary(max_size=60),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_strategy, min_size=1, max_size=8), st.data())
def test_parser_any_split_gives_the_same_frames(frames: list[tuple[int, str, bytes]], data: Any) -> None:
    """However the stream is cut into reads, the same frames come out, in order."""
    stream = b"".join(encode(*f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    parser = FrameParser(64)
    got: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += parser.feed(stream[start:end])
        assert parser.buffered <= 64 + MAX_HEADER + 1 + len(stream[start:end])
    assert parser.error is None
    assert got == [Frame(t, c, d) for t, c, d in frames]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_parser_never_raises_and_stays_bounded(junk: bytes, step: int) -> None:
    """Arbitrary bytes fed in pieces never raise and never make the parser hold more than a frame."""
    parser = FrameParser(32)
    for i in range(0, len(junk), step):
        parser.feed(junk[i:i + step])
        assert parser.buffered <= 32 + MAX_HEADER + 1 + step


@pytest.mark.parametrize("stream", [
    b"x open 0\n",                       # TXNR not a number
    b"1234567890 syslog 1 x\n",          # TXNR of 10 digits
    b"1 " + b"a" * 33 + b" 0\n",         # command of 33 letters
    b"1 sys-log 1 x\n",                  # command with a non-letter
    b"1 syslog 5 hello!",                # no LF after the data
    b"1 syslog 3\n",                     # DATALEN but no data
    b"1 close 0 x\n",                    # DATALEN 0 followed by data
    b"1 syslog 1234567890 x\n",          # DATALEN of 10 digits
    b"1  open 0\n",                      # two spaces
    b"\n",                               # an empty line
])
def test_parser_malformed_frames_break_the_stream(stream: bytes) -> None:
    """A frame that breaks the grammar sets ``error``; nothing more is parsed from that stream."""
    parser = FrameParser(100)
    assert parser.feed(stream) == []
    assert parser.error is not None
    assert parser.feed(b"2 close 0\n") == []


def test_parser_oversize_data_is_skipped_not_buffered() -> None:
    """Data longer than max_data is discarded as it arrives and reported as an oversize frame."""
    parser = FrameParser(10)
    assert parser.feed(b"1 syslog 1000 ") == []
    for _ in range(10):
        assert parser.feed(b"z" * 100) == []
        assert parser.buffered == 0
    frames = parser.feed(b"\n2 syslog 2 ok\n")
    assert frames == [Frame(1, "syslog", b"", oversize=True), Frame(2, "syslog", b"ok")]


def test_parser_oversize_without_trailer_is_malformed() -> None:
    """The byte after skipped data must still be the LF trailer."""
    parser = FrameParser(10)
    parser.feed(b"1 syslog 20 " + b"z" * 20)
    assert parser.error is None
    parser.feed(b"X")
    assert parser.error is not None


# -- the session -----------------------------------------------------------

def test_session_open_is_answered_with_the_offers() -> None:
    """The reply to open carries 200 OK, relp_version=0 and commands=syslog, with the client's TXNR."""
    session = ServerSession(100)
    assert session.feed(open_frame()) == [Reply(encode(1, "rsp", b"200 OK\nrelp_version=0\ncommands=syslog"))]
    assert session.opened


def test_session_syslog_is_delivered_then_acked_with_its_txnr() -> None:
    """Each syslog frame becomes one Deliver whose ack echoes its TXNR; trailing LF is stripped."""
    session = ServerSession(100)
    actions = session.feed(open_frame() + encode(2, "syslog", b"one\n") + encode(3, "syslog", b"two"))
    assert actions[1:] == [Deliver(b"one", b"2 rsp 6 200 OK\n"), Deliver(b"two", b"3 rsp 6 200 OK\n")]
    assert session.messages == 2


def test_session_close_answers_empty_rsp_and_hangs_up() -> None:
    """close is answered with an empty rsp, then the server hangs up without error."""
    session = ServerSession(100)
    actions = session.feed(open_frame() + encode(2, "close"))
    assert actions[1:] == [Reply(b"2 rsp 0\n"), Hangup("client closed the session", error=False)]
    assert session.feed(encode(3, "syslog", b"late")) == []


def test_session_txnr_out_of_sequence_hangs_up() -> None:
    """A TXNR other than the expected next one is a protocol violation: hang up, nothing delivered."""
    session = ServerSession(100)
    actions = session.feed(open_frame() + encode(3, "syslog", b"skipped 2"))
    assert [type(a) for a in actions] == [Reply, Hangup]
    assert actions[1].error and "out of sequence" in actions[1].reason
    assert session.bad_frames == 1


def test_session_txnr_wraps_to_one() -> None:
    """After TXNR 999999999 the session expects 1 again."""
    session = ServerSession(100)
    session.feed(open_frame())
    session.expected_txnr = 999_999_999
    actions = session.feed(encode(999_999_999, "syslog", b"a") + encode(1, "syslog", b"b"))
    assert [a.message for a in actions if isinstance(a, Deliver)] == [b"a", b"b"]


def test_session_syslog_before_open_hangs_up() -> None:
    """A syslog frame before open is a violation: nothing is delivered or acknowledged."""
    session = ServerSession(100)
    actions = session.feed(encode(1, "syslog", b"early"))
    assert actions == [Hangup("'syslog' before open", error=True)]


def test_session_open_without_syslog_command_is_refused() -> None:
    """A client that does not offer commands=syslog gets 500 and is hung up on."""
    session = ServerSession(100)
    actions = session.feed(encode(1, "open", b"relp_version=0\ncommands=other"))
    assert actions[0] == Reply(rsp(1, b"500 required command not supported by client"))
    assert isinstance(actions[1], Hangup) and not session.opened


def test_session_unknown_command_gets_500_and_session_goes_on() -> None:
    """An unknown but well-formed command is answered 500 and counted; later frames still work."""
    session = ServerSession(100)
    actions = session.feed(open_frame() + encode(2, "starttls") + encode(3, "syslog", b"m"))
    assert actions[1:] == [Reply(rsp(2, b"500 command not supported")), Deliver(b"m", rsp(3))]
    assert session.bad_frames == 1


def test_session_oversize_syslog_is_acked_not_delivered() -> None:
    """An over-long message is dropped, counted and acknowledged, so rsyslog does not resend it forever."""
    session = ServerSession(20)
    actions = session.feed(encode(1, "open", b"commands=syslog")
                           + encode(2, "syslog", b"x" * 21) + encode(3, "syslog", b"fits"))
    assert actions[1:] == [Reply(rsp(2)), Deliver(b"fits", rsp(3))]
    assert session.oversize == 1


def test_session_after_serverclose_nothing_is_acked() -> None:
    """Once serverclose is sent, frames that still arrive are neither delivered nor acknowledged."""
    session = ServerSession(100)
    session.feed(open_frame())
    assert session.server_close() == b"0 serverclose 0\n"
    assert session.feed(encode(2, "syslog", b"late")) == []


# -- the Twisted protocol ---------------------------------------------------

class Listener:
    """A RelpFactory with recording sink and refusal hooks."""

    def __init__(self, allowed: bool = True, max_frame: int = 1000, max_per_peer: int = 32) -> None:
        self.frames: list[tuple[bytes, str]] = []
        self.refused: list[str] = []
        self.counters = TransportCounters()
        self.clock = Clock()
        self.on_sink: Any = None
        self.factory = RelpFactory(Listening(
            sink=self.sink, allowed=lambda host: allowed, refused=self.refused.append,
            counters=self.counters, limits=Limits(max_frame=max_frame, max_connections_per_peer=max_per_peer),
            clock=self.clock,
        ))

    def sink(self, frame: bytes, peer: str) -> None:
        if self.on_sink is not None:
            self.on_sink(frame)
        self.frames.append((frame, peer))

    def connect(self, host: str = "127.0.0.1") -> tuple[Any, StringTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        if proto is not None:
            proto.makeConnection(transport)
        return proto, transport


def test_protocol_ack_is_written_only_after_the_sink_returned() -> None:
    """When the sink runs, the message's ack is not on the wire yet; after it returns, it is."""
    listener = Listener()
    proto, transport = listener.connect()
    proto.dataReceived(open_frame())
    seen: list[bytes] = []
    listener.on_sink = lambda frame: seen.append(transport.value())
    proto.dataReceived(encode(2, "syslog", b"msg"))
    assert rsp(2) not in seen[0]
    assert transport.value().endswith(rsp(2))
    assert listener.frames == [(b"msg", "127.0.0.1")]
    assert listener.counters.frames == 1


def test_protocol_sink_error_is_logged_and_connection_stays() -> None:
    """A sink that raises does not reach the reactor; the message is still acknowledged."""
    listener = Listener()
    proto, transport = listener.connect()

    def boom(frame: bytes) -> None:
        raise RuntimeError("sink broke")

    listener.on_sink = boom
    proto.dataReceived(open_frame() + encode(2, "syslog", b"msg"))
    assert transport.value().endswith(rsp(2)) and not transport.disconnecting


def test_protocol_malformed_frame_closes_that_connection_only() -> None:
    """A broken frame closes its connection and is counted; another connection keeps working."""
    listener = Listener()
    bad, bad_transport = listener.connect()
    good, good_transport = listener.connect()
    bad.dataReceived(open_frame() + b"2 syslog 3 abcX")
    good.dataReceived(open_frame() + encode(2, "syslog", b"fine"))
    assert bad_transport.disconnecting and listener.counters.bad_frames == 1
    assert not good_transport.disconnecting and listener.frames == [(b"fine", "127.0.0.1")]


def test_protocol_oversize_counted() -> None:
    """An over-long message is counted in the listener's oversize counter and acknowledged."""
    listener = Listener(max_frame=480)
    proto, transport = listener.connect()
    proto.dataReceived(open_frame() + encode(2, "syslog", b"x" * 481))
    assert listener.counters.oversize == 1 and transport.value().endswith(rsp(2))
    assert listener.frames == []


def test_untrusted_peer_gets_no_protocol() -> None:
    """A peer outside the allow-list is refused before a byte is read, and reported."""
    listener = Listener(allowed=False)
    proto, _ = listener.connect("192.0.2.9")
    assert proto is None and listener.refused == ["192.0.2.9"] and listener.counters.untrusted == 1


def test_connection_limit_per_peer_applies() -> None:
    """The stream listener's per-peer connection cap applies to RELP too, and frees on close."""
    listener = Listener(max_per_peer=1)
    proto, transport = listener.connect()
    proto.dataReceived(open_frame())  # a session that has opened holds its slot
    assert listener.connect()[0] is None and listener.counters.connections_over_limit == 1
    proto.connectionLost(None)
    assert listener.connect()[0] is not None


def test_shutdown_sends_serverclose_and_stops_acking() -> None:
    """shutdown() writes serverclose to open sessions, hangs up, and acks nothing more."""
    listener = Listener()
    proto, transport = listener.connect()
    proto.dataReceived(open_frame())
    done = listener.factory.shutdown()
    assert transport.value().endswith(SERVERCLOSE) and transport.disconnecting
    proto.dataReceived(encode(2, "syslog", b"late"))
    assert listener.frames == [] and not transport.value().endswith(rsp(2))
    fired: list[object] = []
    done.addCallback(fired.append)
    assert not fired
    proto.connectionLost(None)
    assert fired
    assert listener.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None


def test_shutdown_aborts_sessions_that_linger() -> None:
    """A session that does not go away within the grace is aborted."""
    listener = Listener()
    proto, transport = listener.connect()
    listener.factory.shutdown(grace=2.0)
    listener.clock.advance(2.0)
    assert transport.disconnected  # StringTransport's abortConnection sets this


# -- config and service -----------------------------------------------------

def test_config_relp_listener_plain_and_tls() -> None:
    """protocol = "relp" is accepted; with tls_* files it is RELP over TLS and may allow remote senders."""
    plain = Config.from_mapping({"listen": [{"protocol": "relp", "port": 2514}]})
    assert plain.listen[0].protocol == "relp" and plain.listen[0].tls_cert is None
    tls = Config.from_mapping({"listen": [{
        "protocol": "relp", "port": 2514, "allow": ["192.0.2.0/24"],
        "tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca": "ca.pem", "tls_peers": ["pop1.test"],
    }]})
    assert tls.listen[0].tls_peers == ("pop1.test",)


def test_config_relp_tls_needs_all_files_and_plain_relp_stays_local() -> None:
    """RELP over TLS takes all three PEM files; plain RELP refuses remote senders like plain TCP."""
    with pytest.raises(ConfigError, match="tls_key"):
        Config.from_mapping({"listen": [{"protocol": "relp", "port": 1, "tls_cert": "c", "tls_ca": "a"}]})
    with pytest.raises(ConfigError, match="plain RELP"):
        Config.from_mapping({"listen": [{"protocol": "relp", "port": 1, "allow": ["192.0.2.0/24"]}]})


def test_service_acks_after_tracker_and_sends_serverclose_before_last_flush(tmp_path: Path) -> None:
    """Through the real service: the ack follows the tracker update; stop sends serverclose and writes the map."""
    reactor = MemoryReactorClock()
    config = Config.from_mapping({
        "dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none",
        "listen": [{"protocol": "relp", "host": "127.0.0.1", "port": 2514}],
    })
    service = build(config, reactor)
    service.startService()
    (port, factory, _, host), = reactor.tcpServers
    assert (port, host) == (2514, "127.0.0.1") and isinstance(factory, RelpFactory)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(open_frame() + encode(2, "syslog", LOGIN % b"192.0.2.77"))
    assert transport.value().endswith(rsp(2))
    assert service.tracker.deadline("192.0.2.77") is not None
    service.stopService()  # before the coalesced commit ran
    assert transport.value().endswith(SERVERCLOSE)
    m = open_output("postfix-hash", str(tmp_path / "map"))
    try:
        assert "192.0.2.77" in m.keys()
    finally:
        m.close()
