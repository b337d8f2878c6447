"""Property-based fuzzing of everything that reads untrusted bytes: framing, syslog parsing, matching, TCP protocol.

Pure and in-process: hypothesis generates the input, Twisted fakes
(``task.Clock``, ``StringTransport``) stand in for the network.  The
properties are the README's robustness claims: arbitrary bytes split at
arbitrary points never raise, never hold more than the bounds allow, and
valid frames between garbage are still recovered.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pbsyslog.inputs.framing import StreamFramer, datagram_frame
from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.senders import SenderFilter
from pbsyslog.inputs.stream import SyslogStreamFactory
from pbsyslog.inputs.udp import SyslogDatagramProtocol
from pbsyslog.patterns import load_table, normalise_ip
from pbsyslog.pipeline import Pipeline
from pbsyslog.syslog import MalformedMessage, SyslogMessage, parse
from pbsyslog.tracker import Tracker

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The most a framer may hold beyond max_frame: the digits of a pending octet count.
HEAD_SLACK = 11

TABLE = load_table("all")
PROGRAMS = sorted({program for pattern in TABLE.patterns for program in pattern.programs})
POSITIVE_SAMPLES = [
    (sample.program, sample.message, sample.ip)
    for pattern in TABLE.patterns
    for sample in pattern.samples
    if sample.event is not None and sample.ip
]
ALL_SAMPLES = [(s.program, s.message) for p in TABLE.patterns for s in p.samples]

# Bytes that skew towards what framing and header parsing care about.
interesting_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([
            b"\n", b"\r\n", b"\x00", b" ", b"<", b">", b"<22>", b"<999>", b"1 ", b"12 ", b"0 ",
            b"9999999999 ", b"99999999999 ", b"1000000000 ", b"65 ", b"Nov 29 14:22:55 ",
            b"2024-01-02T03:04:05Z ", b"dovecot: ", b"- - ", b"[x=\"y\"] ", b"\xff\xfe", b"\xc3",
        ]),
    ),
    max_size=40,
).map(b"".join)


def split_points(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """All ways of cutting ``data`` into consecutive chunks (possibly empty ones)."""
    return st.lists(st.integers(0, len(data)), max_size=12).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)]
    )


@st.composite
def bytes_and_chunks(draw: st.DrawFn, data: st.SearchStrategy[bytes] = interesting_bytes) -> tuple[bytes, list[bytes]]:
    """Some bytes, and the same bytes cut at arbitrary points."""
    raw = draw(data)
    return raw, draw(split_points(raw))


def frame_all(chunks: list[bytes], max_frame: int) -> tuple[list[bytes], StreamFramer, int]:
    """Feed ``chunks`` to a fresh framer; return the frames, the framer and the most it ever held."""
    framer = StreamFramer(max_frame)
    frames: list[bytes] = []
    most = 0
    for chunk in chunks:
        frames += framer.feed(chunk)
        most = max(most, framer.buffered)
    return frames, framer, most


# --------------------------------------------------------------------------
# Framing

@FUZZ
@given(bytes_and_chunks(), st.integers(1, 64))
def test_framer_never_raises_and_stays_bounded(case: tuple[bytes, list[bytes]], max_frame: int) -> None:
    """Arbitrary bytes cut anywhere never raise, never buffer beyond max_frame plus a count's digits, and no frame exceeds max_frame."""
    _, chunks = case
    frames, _, most = frame_all(chunks, max_frame)
    assert most <= max_frame + HEAD_SLACK
    assert all(0 < len(frame) <= max_frame for frame in frames)
    assert all(not frame.endswith((b"\n", b"\r", b"\x00")) for frame in frames)


@FUZZ
@given(bytes_and_chunks(), st.integers(1, 64))
def test_framer_result_does_not_depend_on_read_boundaries(case: tuple[bytes, list[bytes]], max_frame: int) -> None:
    """The same bytes give the same frames and counters whether they arrive at once or cut at arbitrary points."""
    raw, chunks = case
    whole, whole_framer, _ = frame_all([raw], max_frame)
    split, split_framer, _ = frame_all(chunks, max_frame)
    assert split == whole
    assert (split_framer.oversize, split_framer.malformed) == (whole_framer.oversize, whole_framer.malformed)


# Garbage that cannot swallow what follows it: no LF or NUL (either ends a
# line) and not starting with a digit (which could open an octet count
# running past the LF).  It may be longer than max_frame.
garbage = st.binary(max_size=300).map(lambda g: g.replace(b"\n", b"?").replace(b"\x00", b"?")).map(
    lambda g: b"#" + g if g[:1].isdigit() else g
)
# A valid LF frame: starts with a PRI, no LF/NUL inside, nothing to strip at its end.
lf_body = st.binary(max_size=60).map(lambda b: b"<22>" + b.replace(b"\n", b"_").replace(b"\x00", b"_") + b".")
# A valid octet-counted frame body: any bytes at all (LF and NUL included), non-blank after stripping.
octet_body = st.binary(min_size=1, max_size=60).map(lambda b: b + b"!")


@st.composite
def garbage_then_frames(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Segments ``garbage LF valid-frame``; return (the valid frames in order, the stream cut at arbitrary points)."""
    expected: list[bytes] = []
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        parts.append(draw(garbage) + b"\n")
        if draw(st.booleans()):
            body = draw(octet_body)
            parts.append(b"%d %s" % (len(body), body))
        else:
            body = draw(lf_body)
            parts.append(body + draw(st.sampled_from([b"\n", b"\r\n", b"\x00"])))
        expected.append(body)
    raw = b"".join(parts)
    return expected, draw(split_points(raw))


def is_subsequence(needles: list[bytes], haystack: list[bytes]) -> bool:
    """Say whether ``needles`` occur in ``haystack`` in order."""
    it = iter(haystack)
    return all(any(needle == hay for hay in it) for needle in needles)


@FUZZ
@given(garbage_then_frames(), st.sampled_from([16, 64, 65536]))
def test_valid_frames_after_garbage_are_recovered(case: tuple[list[bytes], list[bytes]], max_frame: int) -> None:
    """Every valid frame that follows garbage and an LF comes out intact and in order, however the stream is cut."""
    expected, chunks = case
    frames, _, _ = frame_all(chunks, max_frame)
    wanted = [body for body in expected if len(body) <= max_frame]
    assert is_subsequence(wanted, frames), (wanted, frames)
    # Nothing but garbage lines may come between them: at most one extra frame per segment.
    assert len(frames) <= 2 * len(expected)


@FUZZ
@given(interesting_bytes)
def test_datagram_frame_never_raises(data: bytes) -> None:
    """A UDP datagram of arbitrary bytes becomes None or a non-empty frame without trailing LF/CR/NUL."""
    frame = datagram_frame(data)
    assert frame is None or (frame and not frame.endswith((b"\n", b"\r", b"\x00")))


# --------------------------------------------------------------------------
# Syslog header parsing

header_bytes = st.one_of(
    interesting_bytes,
    st.tuples(
        st.sampled_from([b"<22>", b"<13>", b"<191>", b"<0>", b"<013>", b""]),
        st.sampled_from([b"", b"1 ", b"Nov 29 14:22:55 ", b"Feb 30 25:61:61 ", b"2024-13-45T99:99:99+25:00 ",
                         b"2024-01-02T03:04:05.123456Z ", b"- "]),
        st.sampled_from([b"", b"vm ", b"- ", b"host.example.net "]),
        st.sampled_from([b"", b"dovecot: ", b"pop3d[12]: ", b"imapd[: ", b"x[1] ", b"- - - "]),
        st.binary(max_size=80),
    ).map(b"".join),
)


@FUZZ
@given(header_bytes, st.booleans())
def test_parse_returns_message_or_malformed(data: bytes, with_now: bool) -> None:
    """parse() on arbitrary bytes returns a SyslogMessage with str fields or raises MalformedMessage, nothing else."""
    import datetime

    now = datetime.datetime(2024, 1, 1, 0, 0, 30) if with_now else None
    try:
        message = parse(data, now)
    except MalformedMessage:
        return
    assert isinstance(message, SyslogMessage)
    assert isinstance(message.message, str)
    for field in (message.hostname, message.program, message.pid):
        assert field is None or isinstance(field, str)


@FUZZ
@given(st.binary(min_size=1, max_size=80).filter(lambda b: not _is_utf8(b)))
def test_invalid_utf8_is_replaced_not_raised(tail: bytes) -> None:
    """A login-shaped line with invalid UTF-8 in its MSG parses, with the bad bytes replaced."""
    message = parse(b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: " + tail)
    assert message.program == "dovecot"
    assert "\ufffd" in message.message


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------
# Pattern matching

weird_addresses = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "1.2.3.4%eth0", "fe80::1%eth0", "::ffff:999.1.1.1", "[::1]", "[[::1]]", "01.2.3.4", "1.2.3.4.5",
        "256.0.0.1", "::ffff:192.0.2.1", "2001:DB8::1", "[2001:db8::1]", "1.2.3", "::", "0.0.0.0",
        " 192.0.2.1", "192.0.2.1 ", "192.0.2.1\x00", "١٢٣.1.1.1", "2001:db8::1/64", "unknown", "",
    ]),
    st.ip_addresses().map(str),
)


@st.composite
def mutated_samples(draw: st.DrawFn) -> SyslogMessage:
    """A positive sample line from the table with its address replaced by something arbitrary, and maybe more mangling."""
    program, message, ip = draw(st.sampled_from(POSITIVE_SAMPLES))
    message = message.replace(ip, draw(weird_addresses))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(message)))
        message = message[:cut] + draw(st.text(max_size=20)) + message[cut:]
    return SyslogMessage(None, None, None, draw(st.one_of(st.none(), st.text(max_size=10))), program, None, message)


arbitrary_messages = st.builds(
    SyslogMessage,
    facility=st.one_of(st.none(), st.integers(0, 23)),
    severity=st.one_of(st.none(), st.integers(0, 7)),
    timestamp=st.none(),
    hostname=st.one_of(st.none(), st.text(max_size=10)),
    program=st.one_of(st.none(), st.sampled_from(PROGRAMS), st.text(max_size=12),
                      st.sampled_from(PROGRAMS).map(lambda p: "/usr/sbin/" + p)),
    pid=st.one_of(st.none(), st.text(max_size=6)),
    message=st.one_of(st.text(max_size=200), st.sampled_from(ALL_SAMPLES).map(lambda s: s[1])),
)


def assert_event_sane(event: object) -> None:
    """An event, if any, is a known kind with an address that is valid and already in Postfix's lookup form."""
    if event is None:
        return
    assert event.kind in {"login", "logout", "fail"}  # type: ignore[attr-defined]
    ip = event.ip  # type: ignore[attr-defined]
    ipaddress.ip_address(ip)  # raises (fails the test) for anything that is not an address
    assert normalise_ip(ip) == ip


@FUZZ
@given(arbitrary_messages)
def test_match_arbitrary_messages_never_raises(message: SyslogMessage) -> None:
    """PatternTable.match on arbitrary messages never raises and only reports valid, normalised addresses."""
    assert_event_sane(TABLE.match(message))


@FUZZ
@given(mutated_samples())
def test_match_mutated_samples_only_yields_valid_addresses(message: SyslogMessage) -> None:
    """A real login line whose address is replaced by arbitrary text never yields an invalid address."""
    assert_event_sane(TABLE.match(message))


# --------------------------------------------------------------------------
# Transports, with the real pipeline behind them

class Chain:
    """A listener context on a fake clock whose sink runs the real pipeline and records any exception."""

    def __init__(self, max_frame: int = 65536) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.counters = TransportCounters()
        self.pipeline = Pipeline(TABLE, Tracker(1800.0), True, 1000)
        self.frames: list[bytes] = []
        self.errors: list[BaseException] = []
        self.ctx = Listening(
            self.sink,
            SenderFilter(["127.0.0.0/8"]).allows,
            lambda peer: None,
            self.counters,
            Limits(max_frame=max_frame, idle_timeout=60.0),
            self.clock,
        )

    def sink(self, frame: bytes, peer: str) -> None:
        """Record the frame and feed it to the pipeline; remember anything it raises."""
        self.frames.append(frame)
        try:
            self.pipeline.feed(frame, self.clock.seconds())
        except BaseException as e:  # the protocol would swallow it into the log
            self.errors.append(e)
            raise


stream_bytes = st.one_of(
    interesting_bytes,
    st.lists(st.sampled_from(ALL_SAMPLES), max_size=6).map(
        lambda samples: b"".join(
            (b"%d <22>%s: %s" % (len(f"<22>{p}: {m}".encode()), p.encode(), m.encode())) if i % 2 else
            f"<22>Nov 29 14:22:55 vm {p}: {m}\n".encode()
            for i, (p, m) in enumerate(samples)
        )
    ),
)


@FUZZ
@given(bytes_and_chunks(stream_bytes), st.sampled_from([32, 512, 65536]))
def test_tcp_protocol_survives_arbitrary_chunks(case: tuple[bytes, list[bytes]], max_frame: int) -> None:
    """The TCP protocol fed arbitrary chunks never raises, never hangs up, and delivers exactly the framer's frames."""
    raw, chunks = case
    chain = Chain(max_frame)
    factory = SyslogStreamFactory(chain.ctx)
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    proto = factory.buildProtocol(address)
    assert proto is not None
    transport = StringTransport(peerAddress=address)
    proto.makeConnection(transport)
    for chunk in chunks:
        proto.dataReceived(chunk)
        chain.clock.advance(1)  # well inside the idle timeout
    assert chain.errors == []
    assert not transport.disconnecting
    expected, framer, _ = frame_all([raw], max_frame)
    assert chain.frames == expected
    assert chain.counters.oversize == framer.oversize
    assert proto._framer.buffered <= max_frame + HEAD_SLACK
    proto.connectionLost(None)
    assert factory.open_connections == 0


@FUZZ
@given(st.lists(interesting_bytes, max_size=20))
def test_udp_protocol_survives_arbitrary_datagrams(datagrams: list[bytes]) -> None:
    """The UDP protocol fed arbitrary datagrams never raises through the real pipeline."""
    chain = Chain()
    proto = SyslogDatagramProtocol(chain.ctx)
    for datagram in datagrams:
        proto.datagramReceived(datagram, ("127.0.0.1", 514))
    assert chain.errors == []
    assert chain.frames == [f for f in map(datagram_frame, datagrams) if f is not None]
