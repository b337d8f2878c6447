"""Tests for bench/ (the suite must not rot) and for the speed-ups it measures.

The parser's fast path lives in pbsyslog/syslog.py, but its tests are here
because they exist for the benchmark's sake: the fast path must give exactly
what the general header regex gives (``parse_reference``), and must actually
be taken for the lines the benchmark and real senders produce.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsyslog.syslog import _FAST_3164, FAST_HEADER, FAST_PRI_HEADER, parse, parse_reference

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOW = datetime.datetime(2026, 1, 15, 12, 0, 0)


def peek(frame: bytes) -> tuple[bytes, bytes, int] | None:
    """(HOST, TAG, where MSG starts) as ``PatternTable.ignores`` reads a header: FAST_PRI_HEADER, or FAST_HEADER without a PRI.

    The reference the tests below hold against ``parse``: an answer here
    must be what ``parse`` gives, and no answer for a frame ``parse`` refuses.
    """
    m = FAST_PRI_HEADER.match(frame) if frame.startswith(b"<") else FAST_HEADER.match(frame)
    if m is None:
        return None
    host, tag = m.groups()
    return host, tag, m.end()


@pytest.mark.integration  # starts the service and a compiled sender (gcc) in processes of their own
def test_quick_bench_prints_well_formed_figures(tmp_path: pathlib.Path) -> None:
    """`bench/run.py --quick` (what `make bench BENCH_QUICK=1` runs) prints one well-formed JSON figure per line."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "PBSYSLOG_BENCH_CACHE": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = [json.loads(line) for line in done.stdout.splitlines()]
    names = {figure["name"] for figure in figures}
    # One figure of each kind the suite promises.
    for wanted in (
        "check_all_lines_per_s", "check_dovecot_lines_per_s", "udp_ingest_msgs_per_s",
        "tcp_octet_1conn_msgs_per_s", "tcp_lf_16conn_msgs_per_s", "latency_socketmap_1000_per_s_p99",
        "latency_dbhash_10_per_s_p99", "expire_tick_ms", "tracker_bytes_per_ip", "storm_map_commits",
        "idle_service_rss_kib",
    ):
        assert wanted in names, (wanted, sorted(names))
    for figure in figures:
        assert set(figure) >= {"name", "value", "unit", "reference", "ratio"}, figure
        reference = figure["reference"]
        assert set(reference) == {"name", "value", "unit"}, figure
        assert isinstance(figure["value"], (int, float)) and figure["value"] > 0, figure
        assert isinstance(reference["value"], (int, float)) and reference["value"] > 0, figure
        assert figure["unit"] and reference["unit"] and reference["name"], figure


COMMON = [
    b"Jan 15 00:00:00 mx1 postfix/smtpd[19742]: connect from unknown[216.241.106.223]",
    b"<22>Jan  5 00:00:09 mx1 dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2",
    b"<22>2026-01-15T00:00:09.123456+01:00 mx1 dovecot: imap-login: Login: user=<a>",
    b"2026-01-15T00:00:09Z pop1.example.net ipop3d[77]: Login user=bob host=x [192.0.2.3] nmsgs=0/0",
]


def test_fast_path_taken_for_common_headers() -> None:
    """The header shapes rsyslog forwards go through the fast regex, not the general one."""
    for frame in COMMON:
        text = frame.decode()
        pos = text.find(">") + 1 if text.startswith("<") else 0
        assert _FAST_3164.match(text, pos) is not None, frame


def test_fast_path_results_on_common_headers() -> None:
    """On the common shapes, parse() gives the general rule's fields, zoned stamps as aware datetimes."""
    for frame in COMMON:
        assert parse(frame, now=NOW) == parse_reference(frame, now=NOW), frame
    zoned = parse(COMMON[2])
    assert zoned.timestamp is not None and zoned.timestamp.utcoffset() == datetime.timedelta(hours=1)
    assert parse(COMMON[1], now=NOW).timestamp == datetime.datetime(2026, 1, 5, 0, 0, 9)


_STAMPS = st.sampled_from([
    "Jan 15 00:00:00", "Feb  5 13:14:15", "feb 05 01:02:03", "Xyz 99 99:99:99", "Jan 15 00:00:0",
    "2026-01-15T00:00:09.123456+00:00", "2026-01-15T00:00:09Z", "2026-13-45Tgarbage", "2026-01-15T",
    "\u0661\u0662\u0663\u0664-01-15T00:00:00", "Jan 1\u0665 00:00:00", "",
])
_TOKENS = st.text(alphabet=st.sampled_from(list("ab:[]-/.1 \t\u00e9\u2003\u200b")), max_size=8)
_HOSTS = st.one_of(st.sampled_from(["mx1", "host:", "a[1]", "::1", "pop1.example.net", "h\u00e9", ""]), _TOKENS)
_TAGS = st.one_of(
    st.sampled_from(["dovecot:", "postfix/smtpd[19742]:", "ipop3d[77]", "a[]:", "a[1]x:", "a:b:", ":", "x[1]:",
                     "prog[1 2]:", "p[[1]:", "imapd[1]::", "dovecot"]),
    _TOKENS,
)
_SEPS = st.sampled_from([" ", " ", " ", "  ", "\t", ""])


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["", "<22>", "<013>", "<191>"]), _STAMPS, _SEPS, _HOSTS, _SEPS, _TAGS, _SEPS,
    st.text(max_size=12), st.booleans(),
)
def test_fast_path_agrees_with_general_header_rule(
    pri: str, stamp: str, sep1: str, host: str, sep2: str, tag: str, sep3: str, message: str, with_now: bool
) -> None:
    """For any header built from likely and unlikely pieces, parse() equals the regex-only parse_reference()."""
    frame = (pri + stamp + sep1 + host + sep2 + tag + sep3 + message).encode()
    now = NOW if with_now else None
    try:
        expected = parse_reference(frame, now=now)
    except ValueError as e:
        try:
            parse(frame, now=now)
        except ValueError as f:
            assert type(f) is type(e)
            return
        raise AssertionError(f"parse() accepted what parse_reference() refused: {frame!r}") from None
    got = parse(frame, now=now)
    assert got == expected, frame
    assert repr(got) == repr(expected), frame


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["", "<22>", "<013>", "<191>", "<192>", "<", "<>", "<1"]), _STAMPS, _SEPS, _HOSTS, _SEPS, _TAGS,
    _SEPS, st.text(max_size=12), st.sampled_from([b"", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3"]),
)
def test_peek_agrees_with_parse(
    pri: str, stamp: str, sep1: str, host: str, sep2: str, tag: str, sep3: str, message: str, tail: bytes
) -> None:
    """peek() gives parse()'s HOST and TAG as bytes, or None; never an answer for a frame parse() refuses."""
    frame = (pri + stamp + sep1 + host + sep2 + tag + sep3 + message).encode() + tail
    head = peek(frame)
    try:
        parsed = parse(frame)
    except ValueError:
        assert head is None, frame
        return
    if head is not None:
        assert parsed.hostname is not None and parsed.program is not None, frame
        host, tag, offset = head
        assert (host, tag) == (parsed.hostname.encode(), parsed.program.encode()), frame
        assert frame[offset:].rstrip(b"\r\n\x00").decode("utf-8", "replace") == parsed.message, frame


def test_peek_answers_for_common_headers() -> None:
    """The header shapes rsyslog forwards get an answer from peek(), so the check loop can skip them."""
    for frame in COMMON:
        parsed = parse(frame)
        head = peek(frame)
        assert head is not None and head[:2] == (parsed.hostname.encode(), parsed.program.encode()), frame
    assert peek(b"Jan 15 00:00:00 mx1 postfix/smtpd[1]: \xff\xfe x") == (b"mx1", b"postfix/smtpd", 38)
    assert peek(b"Jan 15 00:00:00 m\xc3\xa9 postfix/smtpd[1]: x") is None
