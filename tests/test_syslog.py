"""Tests for pbsyslog.syslog: one frame -> one SyslogMessage."""

from __future__ import annotations

import datetime
import json
import pathlib
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_paths import WIRE
from pbsyslog.syslog import MalformedMessage, SyslogMessage, parse

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)

# "TAG[PID]:" as the mail.log lines of the corpus write it.
_TAG = re.compile(r"(?P<program>[^\[]+?)(?:\[(?P<pid>\d+)\])?:")


def _labels() -> Iterator[dict]:
    """Every labelled message of every wire capture."""
    with (WIRE / "labels.jsonl").open() as lines:
        for line in lines:
            yield json.loads(line)


LABELS = list(_labels())
CAPTURES = sorted({label["capture"] for label in LABELS})
_DATA: dict[str, bytes] = {}


def capture_frame(label: dict) -> bytes:
    """The frame of one labelled message, with its octet-count prefix removed."""
    capture = label["capture"]
    if capture not in _DATA:
        _DATA[capture] = (WIRE.parent / capture).read_bytes()
    raw = _DATA[capture][label["offset"] : label["offset"] + label["length"]]
    if "tcp_octet" in capture:
        raw = raw.partition(b" ")[2]
    return raw


def test_corpus_covers_every_capture() -> None:
    """The labels cover all six captures, so the parametrised test below sees them all."""
    assert len(CAPTURES) == 6
    assert len(LABELS) == 6 * 307


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: pathlib.Path(c).stem)
def test_every_captured_message(capture: str) -> None:
    """Every message rsyslog sent parses to the header and MSG that mail.log shows for it."""
    for label in LABELS:
        if label["capture"] != capture:
            continue
        stamp, host, tag, message = label["file_line"].split(" ", 3)
        tag_match = _TAG.fullmatch(tag)
        assert tag_match is not None, tag
        parsed = parse(capture_frame(label), now=NOW)
        where = (capture, label["index"])
        assert parsed.message == message, where
        assert parsed.hostname == "vm", where
        assert parsed.program == tag_match["program"], where
        assert parsed.pid == tag_match["pid"], where
        assert parsed.facility == 2, where  # mail.log: facility mail
        when = datetime.datetime.fromisoformat(stamp)
        if "Traditional" in capture:
            # Whole seconds, no zone; the year comes from `now`.
            assert parsed.timestamp == when.replace(microsecond=0, tzinfo=None), where
        else:
            assert parsed.timestamp == when, where


def test_traditional_capture_without_now_has_no_timestamp() -> None:
    """Without `now`, an RFC 3164 timestamp has no year, so it is None."""
    label = next(label for label in LABELS if "Traditional" in label["capture"])
    assert parse(capture_frame(label)).timestamp is None


def test_logger_rfc3164() -> None:
    """util-linux `logger --rfc3164` output parses fully."""
    assert parse(b"<13>Nov 29 14:22:55 myhost dovecot: hi", now=NOW) == SyslogMessage(
        1, 5, datetime.datetime(2026, 11, 29, 14, 22, 55), "myhost", "dovecot", None, "hi"
    )


def test_logger_rfc5424() -> None:
    """util-linux `logger --rfc5424` output, structured data and all, parses fully."""
    frame = (
        b"<13>1 2026-11-29T14:22:55.123456+00:00 myhost dovecot - - "
        b'[timeQuality tzKnown="1" isSynced="0"] hi'
    )
    assert parse(frame) == SyslogMessage(
        1,
        5,
        datetime.datetime(2026, 11, 29, 14, 22, 55, 123456, tzinfo=UTC),
        "myhost",
        "dovecot",
        None,
        "hi",
    )


def test_rsyslog_protocol23_two_spaces() -> None:
    """rsyslog's RFC 5424 output keeps MSG's leading space; exactly that one is dropped."""
    parsed = parse(b"<22>1 2026-11-29T14:22:12.907130+00:00 vm dovecot - - -  master: x\n")
    assert (parsed.program, parsed.message) == ("dovecot", "master: x")


def test_rfc5424_procid_and_zone() -> None:
    """PROCID becomes pid, and a numeric zone gives an aware timestamp."""
    parsed = parse(
        b"<165>1 2003-10-11T22:14:15.003-07:00 mymachine.example.com su 1234 ID47 - "
        b"'su root' failed"
    )
    assert parsed.pid == "1234"
    assert parsed.program == "su"
    assert parsed.hostname == "mymachine.example.com"
    assert (parsed.facility, parsed.severity) == (20, 5)
    assert parsed.timestamp == datetime.datetime(2003, 10, 12, 5, 14, 15, 3000, tzinfo=UTC)
    assert parsed.message == "'su root' failed"


def test_rfc5424_all_nil() -> None:
    """RFC 5424 nil values become None and a missing MSG an empty message."""
    assert parse(b"<13>1 - - - - - -") == SyslogMessage(1, 5, None, None, None, None, "")


def test_rfc5424_structured_data_with_escapes() -> None:
    """Escaped ']' and '"' inside SD parameter values do not end the structured data."""
    frame = b'<13>1 - host app - - [ex@1 a="x\\]y" b="say \\"hi\\"]"][second k="]"] real message'
    parsed = parse(frame)
    assert parsed.message == "real message"
    assert parsed.program == "app"


def test_rfc5424_bom_stripped() -> None:
    """A UTF-8 BOM at the start of an RFC 5424 MSG is not part of the message."""
    parsed = parse(b"<13>1 - host app - - - \xef\xbb\xbfhello")
    assert parsed.message == "hello"


def test_rfc5424_zulu_timestamp() -> None:
    """A 'Z' zone is UTC."""
    parsed = parse(b"<13>1 2026-11-29T14:22:55Z host app - - - x")
    assert parsed.timestamp == datetime.datetime(2026, 11, 29, 14, 22, 55, tzinfo=UTC)


def test_rfc5424_lookalike_falls_back_to_rfc3164() -> None:
    """A '1 ' after the PRI that does not lead into an RFC 5424 header is all MSG, as in rsyslog."""
    assert parse(b"<13>1 little message") == SyslogMessage(
        1, 5, None, None, None, None, "1 little message"
    )


def test_forward_format() -> None:
    """RSYSLOG_ForwardFormat's RFC 3339 timestamp is read with its zone."""
    parsed = parse(b"<22>2026-11-29T14:22:55.929031+00:00 vm dovecot: pop3-login: Login: x")
    assert parsed.timestamp == datetime.datetime(2026, 11, 29, 14, 22, 55, 929031, tzinfo=UTC)
    assert (parsed.hostname, parsed.program, parsed.message) == (
        "vm",
        "dovecot",
        "pop3-login: Login: x",
    )


def test_no_timestamp() -> None:
    """`<13>dovecot: hi` has a tag but neither timestamp nor hostname."""
    assert parse(b"<13>dovecot: hi", now=NOW) == SyslogMessage(
        1, 5, None, None, "dovecot", None, "hi"
    )


def test_no_hostname() -> None:
    """`logger` writing to /dev/log leaves out the hostname; the tag is not taken for one."""
    parsed = parse(b"<13>Nov 29 14:22:55 dovecot: hi", now=NOW)
    assert (parsed.hostname, parsed.program, parsed.message) == (None, "dovecot", "hi")


def test_no_hostname_tag_with_pid() -> None:
    """A token with '[' after the timestamp is the tag, not a hostname."""
    parsed = parse(b"<13>Nov 29 14:22:55 popper[123]: hi", now=NOW)
    assert (parsed.hostname, parsed.program, parsed.pid) == (None, "popper", "123")


def test_space_padded_day() -> None:
    """A day below 10 is space-padded in RFC 3164."""
    parsed = parse(b"<13>Nov  9 04:05:06 host app: x", now=NOW)
    assert parsed.timestamp == datetime.datetime(2026, 11, 9, 4, 5, 6)
    assert parsed.hostname == "host"


@pytest.mark.parametrize(
    ("tag", "program", "pid"),
    [
        ("dovecot:", "dovecot", None),
        ("/usr/local/sbin/popper[123]:", "/usr/local/sbin/popper", "123"),
        ("in.qpopper[77]:", "in.qpopper", "77"),
        ("postfix/smtpd[12]:", "postfix/smtpd", "12"),
        ("sm-mta[4242]", "sm-mta", "4242"),  # a tag with pid and no colon
    ],
)
def test_tags(tag: str, program: str, pid: str | None) -> None:
    """The program is the tag without [pid] and ':', the pid the bracketed digits."""
    parsed = parse(f"<22>Nov 29 14:22:55 host {tag} the message".encode(), now=NOW)
    assert (parsed.hostname, parsed.program, parsed.pid, parsed.message) == (
        "host",
        program,
        pid,
        "the message",
    )


def test_ipv6_hostname() -> None:
    """An IPv6 address as hostname is not mistaken for a tag for containing ':'."""
    parsed = parse(b"<22>Nov 29 14:22:55 2001:db8::1 dovecot: x", now=NOW)
    assert (parsed.hostname, parsed.program) == ("2001:db8::1", "dovecot")


def test_message_without_tag() -> None:
    """Text after the hostname that has no tag shape is all MSG."""
    parsed = parse(b"<13>Nov 29 14:22:55 myhost just some text", now=NOW)
    assert (parsed.hostname, parsed.program, parsed.message) == ("myhost", None, "just some text")


def test_no_pri() -> None:
    """A frame without PRI is parsed as an RFC 3164 body with no facility or severity."""
    parsed = parse(b"Nov 29 14:22:55 myhost dovecot: hi", now=NOW)
    assert (parsed.facility, parsed.severity) == (None, None)
    assert (parsed.hostname, parsed.program, parsed.message) == ("myhost", "dovecot", "hi")


def test_plain_text() -> None:
    """Text with no header at all becomes the message."""
    assert parse(b"hello world") == SyslogMessage(None, None, None, None, None, None, "hello world")


@pytest.mark.parametrize(
    ("frame", "pri"), [(b"<0>x", (0, 0)), (b"<191>x", (23, 7)), (b"<013>x", (1, 5))]
)
def test_pri_values(frame: bytes, pri: tuple[int, int]) -> None:
    """PRI gives facility and severity over its whole range, leading zeros allowed."""
    parsed = parse(frame)
    assert (parsed.facility, parsed.severity) == pri
    assert parsed.message == "x"


@pytest.mark.parametrize(
    "frame", [b"<192>x", b"<999>x", b"<1000>x", b"<>x", b"<1a>x", b"<13", b"<\xd9\xa1>x"]
)
def test_bad_pri_rejected(frame: bytes) -> None:
    """A PRI above 191, empty, too long, unterminated or not ASCII digits is malformed."""
    with pytest.raises(MalformedMessage):
        parse(frame)


@pytest.mark.parametrize("frame", [b"", b"\n", b"\r\n", b"\x00"])
def test_empty_frame_rejected(frame: bytes) -> None:
    """A frame with nothing in it is malformed."""
    with pytest.raises(MalformedMessage):
        parse(frame)


def test_non_utf8_replaced() -> None:
    """Bytes that are not UTF-8 become U+FFFD and the rest of the message survives."""
    parsed = parse(b"<13>Nov 29 14:22:55 host app: caf\xe9 \xff ok", now=NOW)
    assert parsed.message == "caf\ufffd \ufffd ok"
    assert parsed.program == "app"


def test_utf8_kept() -> None:
    """UTF-8 text is decoded."""
    assert parse("<13>app: grüße".encode()).message == "grüße"


def test_trailing_line_ending_stripped() -> None:
    """A datagram's trailing LF or CR LF is not part of the message."""
    assert parse(b"<13>app: hi\r\n").message == "hi"


def test_multiline_message_kept() -> None:
    """An octet-counted frame may carry an LF inside MSG; it stays."""
    assert parse(b"<13>app: one\ntwo").message == "one\ntwo"


def test_december_stamp_in_january_is_last_year() -> None:
    """A December RFC 3164 stamp received in January belongs to the year before."""
    parsed = parse(b"<13>Dec 31 23:59:58 host app: x", now=datetime.datetime(2027, 1, 1, 0, 0, 3))
    assert parsed.timestamp == datetime.datetime(2026, 12, 31, 23, 59, 58)


def test_january_stamp_in_december_is_next_year() -> None:
    """A January stamp received on 31 December (sender clock ahead) belongs to the next year."""
    parsed = parse(
        b"<13>Jan  1 00:00:01 host app: x", now=datetime.datetime(2026, 12, 31, 23, 59, 59)
    )
    assert parsed.timestamp == datetime.datetime(2027, 1, 1, 0, 0, 1)


def test_aware_now_gives_naive_rfc3164_stamp() -> None:
    """RFC 3164 stamps carry no zone, so they stay naive even when `now` is aware."""
    parsed = parse(
        b"<13>Nov 29 14:22:55 host app: x", now=datetime.datetime(2026, 11, 29, 15, tzinfo=UTC)
    )
    assert parsed.timestamp == datetime.datetime(2026, 11, 29, 14, 22, 55)


def test_leap_day_stamp() -> None:
    """29 February is read in a leap year."""
    parsed = parse(b"<13>Feb 29 12:00:00 host app: x", now=datetime.datetime(2028, 3, 1))
    assert parsed.timestamp == datetime.datetime(2028, 2, 29, 12, 0, 0)


@pytest.mark.parametrize(
    "frame",
    [
        b"<13>Foo 29 14:22:55 host app: x",  # no such month
        b"<13>Nov 31 14:22:55 host app: x",  # no such day
        b"<13>Nov 29 25:61:61 host app: x",  # no such time
        b"<13>2026-13-45T99:00:00Z host app: x",  # RFC 3339 shape, impossible values
    ],
)
def test_bad_timestamp_is_none_but_header_parsed(frame: bytes) -> None:
    """A timestamp that cannot be read is None; hostname, tag and MSG are still found."""
    parsed = parse(frame, now=NOW)
    assert parsed.timestamp is None
    assert (parsed.hostname, parsed.program, parsed.message) == ("host", "app", "x")


def test_bad_rfc5424_timestamp_is_none() -> None:
    """An unreadable RFC 5424 timestamp is None and the rest is still parsed."""
    parsed = parse(b"<13>1 yesterday host app - - - x")
    assert parsed.timestamp is None
    assert (parsed.hostname, parsed.program, parsed.message) == ("host", "app", "x")


_pieces = st.sampled_from(
    [
        b"<13>",
        b"<191>",
        b"<192>",
        b"<",
        b">",
        b"1 ",
        b"-",
        b" ",
        b"  ",
        b"[",
        b"]",
        b'"',
        b"\\",
        b"=",
        b":",
        b"Nov 29 14:22:55",
        b"Feb 29 00:00:00",
        b"2026-11-29T14:22:55.929031+00:00",
        b"2026-11-29T14:22:55+99:99",
        b"9999-12-31T23:59:59-23:59",
        b"host",
        b"app[12]:",
        b"app:",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\n",
        b"\x00",
    ]
)


@settings(max_examples=1000)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.one_of(_pieces, st.binary(max_size=8)), max_size=20).map(b"".join),
    )
)
def test_property_any_bytes_parse_or_malformed(frame: bytes) -> None:
    """Any bytes either parse to a SyslogMessage or raise MalformedMessage, nothing else."""
    for now in (None, NOW, datetime.datetime(9999, 12, 31), datetime.datetime(1, 1, 1)):
        try:
            parsed = parse(frame, now=now)
        except MalformedMessage:
            continue
        assert isinstance(parsed, SyslogMessage)
        assert isinstance(parsed.message, str)


@pytest.mark.parametrize("pri", [str(n) for n in range(0, 260)] + ["00", "07", "022", "0191", "1910", "", "-1", "+1", "1 "])
def test_fast_pri_header_takes_exactly_the_canonical_pris(pri: str) -> None:
    """FAST_PRI_HEADER matches a frame exactly when its PRI is canonical (parse's dict) and FAST_HEADER matches the rest."""
    from pbsyslog.syslog import _PRIS, FAST_HEADER, FAST_PRI_HEADER

    canonical = {p.encode() for p in _PRIS}  # the PRIs parse reads with one dict lookup
    prefix = f"<{pri}>".encode()
    frame = prefix + b"Jan 15 00:00:00 mx1 dovecot: pop3-login: Login: user=<a>"
    m = FAST_PRI_HEADER.match(frame)
    assert (m is not None) == (prefix in canonical), prefix
    if m is not None:
        plain = FAST_HEADER.match(frame, len(prefix))
        assert m.groups() == plain.groups() and m.end() == plain.end()
