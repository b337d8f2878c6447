"""Tests for pbsyslog.inputs.framing: RFC 6587 stream framing and UDP datagrams."""

from __future__ import annotations

import json
import pathlib
import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_paths import WIRE
from pbsyslog.inputs.framing import StreamFramer, datagram_frame

TCP_CAPTURES = sorted(WIRE.glob("tcp_*.bin"))

# Bytes of a pending count header a framer may hold on top of max_frame.
SLACK = 16


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[bytes]:
    """Feed every chunk and collect the frames, checking the buffer bound each time."""
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
        assert framer.buffered <= framer.max_frame + SLACK
    return frames


def split_randomly(data: bytes, rng: random.Random, most: int = 64) -> list[bytes]:
    """Cut data into pieces of random size between 1 and `most` bytes."""
    pieces = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, most)
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


def bytewise(data: bytes) -> list[bytes]:
    """Cut data into one-byte pieces."""
    return [data[i : i + 1] for i in range(len(data))]


def test_octet_counted() -> None:
    """Octet-counted frames are split by their counts, LF inside a frame included."""
    framer = StreamFramer()
    data = b"11 <13>one two12 <13>a\nb c d\n"
    assert framer.feed(data) == [b"<13>one two", b"<13>a\nb c d"]
    assert framer.buffered == 0


def test_octet_count_includes_trailing_lf() -> None:
    """rsyslog's octet-counted frames count their trailing LF, which is stripped."""
    framer = StreamFramer()
    assert framer.feed(b"8 <13>one\n8 <13>two\n") == [b"<13>one", b"<13>two"]


def test_lf_terminated() -> None:
    """LF-terminated frames are split at each LF."""
    framer = StreamFramer()
    assert framer.feed(b"<13>one\n<13>two\n<13>thr") == [b"<13>one", b"<13>two"]
    assert framer.feed(b"ee\n") == [b"<13>three"]


def test_mixed_framing_on_one_connection() -> None:
    """Octet-counted and LF-terminated frames may alternate on one connection."""
    framer = StreamFramer()
    data = b"<13>lf one\n9 <13>octet<13>lf two\n10 <13>octet\n<13>lf three\n"
    assert framer.feed(data) == [
        b"<13>lf one",
        b"<13>octet",
        b"<13>lf two",
        b"<13>octet",
        b"<13>lf three",
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"12x <13>not a count",  # digits not followed by a space
        b"0 <13>zero count",  # a count of zero
        b"12345678901 <13>eleven digits",  # absurdly long count
        b"2026-11-29T14:22:55 host tag: stamp first",  # digits, then '-'
    ],
)
def test_bad_count_treated_as_lf(line: bytes) -> None:
    """A frame starting with digits that are not a usable count runs to the next LF."""
    framer = StreamFramer()
    assert framer.feed(line + b"\n<13>next\n") == [line, b"<13>next"]


def test_bad_count_split_inside_digits() -> None:
    """Leading digits split across reads are still told apart from a count."""
    framer = StreamFramer()
    frames = feed_all(framer, [b"1234", b"5678", b"901", b" x\n5 ", b"<1>a\n"])
    assert frames == [b"12345678901 x", b"<1>a"]


def test_frame_split_byte_by_byte() -> None:
    """Frames fed one byte at a time come out as if fed at once."""
    data = b"9 <13>first<13>second\r\n<13>third\x0011 <13>fourth\n<13>fifth\n"
    expected = StreamFramer().feed(data)
    assert expected == [b"<13>first", b"<13>second", b"<13>third", b"<13>fourth", b"<13>fifth"]
    assert feed_all(StreamFramer(), bytewise(data)) == expected


def test_crlf_terminated() -> None:
    """CR LF line endings lose both bytes."""
    framer = StreamFramer()
    assert framer.feed(b"<13>one\r\n<13>two\r\n") == [b"<13>one", b"<13>two"]


def test_nul_terminated() -> None:
    """NUL ends a non-counted frame as LF does (OpenBSD syslogd), and is stripped."""
    framer = StreamFramer()
    assert framer.feed(b"<13>one\x00<13>two\x00\n<13>three\x00") == [
        b"<13>one",
        b"<13>two",
        b"<13>three",
    ]
    assert framer.malformed == 0


def test_octet_counted_trailing_nul_stripped() -> None:
    """An octet-counted frame ending in NUL or CR LF loses them."""
    framer = StreamFramer()
    assert framer.feed(b"8 <13>one\x009 <13>two\r\n") == [b"<13>one", b"<13>two"]


def test_blank_lines_skipped_silently() -> None:
    """Empty lines between frames produce no frame and count nothing."""
    framer = StreamFramer()
    assert framer.feed(b"\n\r\n<13>one\n\n\n<13>two\n") == [b"<13>one", b"<13>two"]
    assert (framer.oversize, framer.malformed) == (0, 0)


def test_empty_octet_counted_frame_is_malformed() -> None:
    """An octet-counted frame with nothing but a line ending is dropped and counted."""
    framer = StreamFramer()
    assert framer.feed(b"1 \n8 <13>one\n") == [b"<13>one"]
    assert framer.malformed == 1


def test_oversize_octet_counted_skipped_without_buffering() -> None:
    """An octet-counted frame longer than max_frame is discarded as it arrives."""
    framer = StreamFramer(max_frame=100)
    big = b"x" * 5000
    data = b"6 <13>a\n%d %s9 <13>after\n" % (len(big), big)
    frames = feed_all(framer, split_randomly(data, random.Random(1), most=300))
    assert frames == [b"<13>a", b"<13>after"]
    assert framer.oversize == 1
    assert framer.buffered == 0


def test_oversize_octet_counted_in_one_chunk() -> None:
    """An over-long octet-counted frame inside one chunk is skipped by its count."""
    framer = StreamFramer(max_frame=10)
    data = b"20 " + b"y" * 20 + b"<13>next\n"
    assert framer.feed(data) == [b"<13>next"]
    assert framer.oversize == 1


def test_oversize_lf_frame_dropped_until_next_lf() -> None:
    """An LF frame growing past max_frame is dropped up to its LF, then parsing resumes."""
    framer = StreamFramer(max_frame=100)
    data = b"<13>a\n<13>" + b"z" * 5000 + b"\n<13>after\n"
    frames = feed_all(framer, split_randomly(data, random.Random(2), most=40))
    assert frames == [b"<13>a", b"<13>after"]
    assert framer.oversize == 1
    assert framer.buffered == 0


def test_oversize_lf_frame_in_one_chunk() -> None:
    """An over-long LF frame that arrives whole is dropped all the same."""
    framer = StreamFramer(max_frame=10)
    assert framer.feed(b"<13>" + b"z" * 20 + b"\n<13>next\n") == [b"<13>next"]
    assert framer.oversize == 1


def test_frame_of_exactly_max_frame_kept() -> None:
    """A frame exactly max_frame bytes long is kept, in either framing."""
    framer = StreamFramer(max_frame=8)
    assert framer.feed(b"8 <13>abcd<13>wxyz\n") == [b"<13>abcd", b"<13>wxyz"]
    assert framer.oversize == 0


def test_many_small_frames_in_one_chunk() -> None:
    """A large chunk of many small frames yields them all, in order."""
    lines = [b"<13>message %d" % i for i in range(20000)]
    data = b"".join(
        b"%d %s\n" % (len(line) + 1, line) if i % 2 else line + b"\n"
        for i, line in enumerate(lines)
    )
    assert StreamFramer().feed(data) == lines


def test_invalid_max_frame_rejected() -> None:
    """A max_frame below one is a programming error."""
    with pytest.raises(ValueError):
        StreamFramer(max_frame=0)


@pytest.mark.parametrize(
    ("datagram", "frame"),
    [
        (b"<13>hi", b"<13>hi"),
        (b"<13>hi\n", b"<13>hi"),
        (b"<13>hi\r\n", b"<13>hi"),
        (b"<13>hi\x00", b"<13>hi"),
        (b"<13>a\nb\n", b"<13>a\nb"),
        (b"", None),
        (b"\r\n\x00", None),
    ],
)
def test_datagram_frame(datagram: bytes, frame: bytes | None) -> None:
    """A datagram loses its trailing LF/CR/NUL bytes, and an empty one is None."""
    assert datagram_frame(datagram) == frame


def expected_capture_frames(path: pathlib.Path) -> list[bytes]:
    """The frames a capture holds according to its .idx.jsonl, framing bytes removed."""
    data = path.read_bytes()
    frames = []
    with path.with_suffix(".idx.jsonl").open() as index:
        for line in index:
            entry = json.loads(line)
            raw = data[entry["offset"] : entry["offset"] + entry["length"]]
            if path.name.startswith("tcp_octet"):
                count, _, raw = raw.partition(b" ")
                assert int(count) == len(raw)
            assert raw.endswith(b"\n")
            frames.append(raw[:-1])
    return frames


@pytest.mark.parametrize("path", TCP_CAPTURES, ids=lambda p: p.stem)
def test_capture_in_one_chunk(path: pathlib.Path) -> None:
    """A real rsyslog TCP capture fed at once yields exactly its indexed messages."""
    framer = StreamFramer()
    assert framer.feed(path.read_bytes()) == expected_capture_frames(path)
    assert (framer.buffered, framer.oversize, framer.malformed) == (0, 0, 0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("path", TCP_CAPTURES, ids=lambda p: p.stem)
def test_capture_in_random_chunks(path: pathlib.Path, seed: int) -> None:
    """A real rsyslog TCP capture fed in random-sized reads yields its indexed messages."""
    chunks = split_randomly(path.read_bytes(), random.Random(seed), most=1 + 97 * seed)
    framer = StreamFramer()
    assert feed_all(framer, chunks) == expected_capture_frames(path)
    assert framer.buffered == 0


def test_corpus_has_tcp_captures() -> None:
    """The corpus still has the captures the tests above are parametrised over."""
    assert len(TCP_CAPTURES) == 3


# Frame bodies for the property tests.  Frames never end in CR/LF/NUL (the
# framer strips those); LF-framed ones contain no LF or NUL and do not start
# with a digit (which would read as a count, as it does in rsyslog).
_octet_body = st.binary(min_size=1, max_size=60).filter(lambda b: b.rstrip(b"\r\n\x00") == b)
_lf_body = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"\n" not in b and b"\x00" not in b and not b[:1].isdigit() and not b.endswith(b"\r")
)


@st.composite
def _encoded_frames(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[bytes, int]]]:
    """Frames, and each encoded with a random framing as (wire bytes, content length)."""
    frames: list[bytes] = []
    encoded: list[tuple[bytes, int]] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            body = draw(_octet_body)
            content = body + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\x00"]))
            encoded.append((b"%d %s" % (len(content), content), len(content)))
        else:
            body = draw(_lf_body)
            ending = draw(st.sampled_from([b"\n", b"\r\n", b"\x00", b"\x00\n"]))
            # The frame's length is what precedes the first LF or NUL, less
            # the CR of a CR LF ending (which is not part of the message).
            encoded.append((body + ending, len(body)))
        frames.append(body)
    return frames, encoded


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split data at the given positions (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


@settings(max_examples=300)
@given(_encoded_frames(), st.lists(st.integers(0, 10_000), max_size=30))
def test_property_frames_round_trip(
    case: tuple[list[bytes], list[tuple[bytes, int]]], cuts: list[int]
) -> None:
    """Any frames, in any mix of framings, split anywhere, come back unchanged."""
    frames, encoded = case
    data = b"".join(wire for wire, _ in encoded)
    framer = StreamFramer()
    assert feed_all(framer, _cut(data, cuts)) == frames
    assert (framer.oversize, framer.malformed, framer.buffered) == (0, 0, 0)


@settings(max_examples=300)
@given(_encoded_frames(), st.lists(st.integers(0, 10_000), max_size=30), st.integers(1, 40))
def test_property_oversize_dropped_whatever_the_split(
    case: tuple[list[bytes], list[tuple[bytes, int]]], cuts: list[int], max_frame: int
) -> None:
    """Exactly the frames over max_frame are dropped and counted, however the stream is cut."""
    frames, encoded = case
    data = b"".join(wire for wire, _ in encoded)
    kept = [frame for frame, (_, size) in zip(frames, encoded, strict=True) if size <= max_frame]
    framer = StreamFramer(max_frame=max_frame)
    assert feed_all(framer, _cut(data, cuts)) == kept
    assert framer.oversize == len(frames) - len(kept)
    assert framer.buffered == 0
