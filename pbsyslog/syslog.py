"""Syslog messages: one frame (bytes) -> one SyslogMessage record.

Contract: ``parse(frame, now=None)`` reads the header of one syslog message
and returns it with the MSG part, in the forms rsyslog forwards and common
senders write:

* RFC 5424 (rsyslog's RSYSLOG_SyslogProtocol23Format, ``logger --rfc5424``):
  ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD [SP MSG]``, ``-`` for nil.
  Structured data is skipped; a UTF-8 BOM at the start of MSG is dropped.
* RFC 3164 and its relatives: ``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG``,
  the same with an RFC 3339 timestamp (RSYSLOG_ForwardFormat), without the
  hostname (``logger`` to /dev/log), without a timestamp
  (``<13>dovecot: hi``) and without a PRI (facility and severity None).

MSG loses exactly one leading space: the one after ``TAG:`` in RFC 3164 and
the one rsyslog keeps in front of MSG in its RFC 5424 output.  Timestamps
with a zone become aware datetimes.  An RFC 3164 timestamp (no year, no
zone) becomes a naive datetime in the year that puts it closest to ``now``
(so a December stamp received in January is last year's); without ``now``
it is None, because guessing the year from the clock would make parsing
impure.  A timestamp that cannot be read is None; it never fails the parse.

Must not: do I/O, read the clock, import from ``twisted.internet``, or
compile regexes per call (this runs once per received line).

Speed (this runs once per received line, and ``pbsyslog check`` once per
file line): the two header shapes rsyslog actually forwards,
``Mmm dd hh:mm:ss HOST TAG[PID]: MSG`` and the same with an RFC 3339 stamp,
are read with str methods (``find``, slices, ``isprintable``) instead of the
general header regex, which was the largest part of a line's cost.  The fast path accepts only
headers for which it gives exactly what the regex gives; anything else
(several spaces, no hostname, odd characters, no tag) takes the regex
path, so nothing is loosened (``tests/test_bench.py`` checks the two paths
agree on generated headers).  The timestamp is parsed lazily, on first
access, and a stamp's shape is checked once per distinct stamp (lines come
in bursts that share their second).

Why SyslogMessage is not ``@attrs.frozen``: a frozen attrs record is slow
to build (every field set through ``object.__setattr__``), a large share
of the whole per-line cost.  It is a ``__slots__``
class instead, with the same fields, constructor, equality, hash and repr;
it is immutable by convention (nothing assigns to a message after
``parse`` returns it), not enforced, because enforcing it is exactly what
costs.  ``timestamp`` is a read-only property, parsed on first access and
then remembered; zoned stamps still come back as aware datetimes.

Failure: ``MalformedMessage`` (a ValueError) for an empty frame and for a
bad PRI (not 1-3 digits between ``<`` and ``>``, or above 191); callers
count and drop such frames.  Any other bytes parse to something: invalid
UTF-8 is replaced, and text that fits no header form is all MSG.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any, NamedTuple


class MalformedMessage(ValueError):
    """A frame that is not a syslog message we can parse."""


class Origin(NamedTuple):
    """Who wrote a line on its host, as the forwarding rsyslog's imuxsock saw it (SCM_CREDENTIALS, /proc).

    Carried in the RFC 5424 STRUCTURED-DATA element ``ORIGIN_SD_ID`` that
    pbsyslog's rsyslog snippets add (``uid`` and ``exe``), never taken from
    MSG.  Empty text where rsyslog could not tell (an exe of a process that
    had already exited).
    """

    uid: str
    exe: str


# The SD-ID of the element pbsyslog's snippets write (32473 is the private
# enterprise number RFC 5612 sets aside for documentation and examples).
ORIGIN_SD_ID = "pbsyslog@32473"
_ORIGIN_PARAM = re.compile(r'\x20(uid|exe)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _origin(sd: str) -> Origin | None:
    """The ``ORIGIN_SD_ID`` element of a STRUCTURED-DATA text (its first one), or None."""
    start = sd.find("[" + ORIGIN_SD_ID + " ")
    if start < 0:
        return None
    params: dict[str, str] = {}
    pos = start + len(ORIGIN_SD_ID) + 1
    while True:
        m = _ORIGIN_PARAM.match(sd, pos)
        if m is None:
            break
        params.setdefault(m.group(1), _ESCAPE.sub(r"\1", m.group(2)))
        pos = m.end()
    if sd[pos:pos + 1] != "]" or "uid" not in params:
        return None  # not the element as the snippets write it
    return Origin(params["uid"], params.get("exe", ""))


class SyslogMessage:
    """The parsed header and the MSG part of one syslog message.

    Fields: facility, severity, timestamp, hostname, program, pid, message
    (the constructor takes them in that order), and ``origin`` (keyword):
    the ``Origin`` a trusted forwarder wrote into STRUCTURED-DATA, or None.
    Immutable by convention: see the module header for why this is not a
    frozen attrs class.
    """

    # ``_timestamp`` holds a datetime or None, or, until ``timestamp`` is
    # first read, the RFC 3339 text it is parsed from.
    __slots__ = ("facility", "severity", "_timestamp", "hostname", "program", "pid", "message", "origin")

    facility: int | None
    severity: int | None
    _timestamp: datetime.datetime | str | None
    hostname: str | None
    program: str | None
    pid: str | None
    message: str
    origin: Origin | None

    def __init__(
        self,
        facility: int | None,
        severity: int | None,
        timestamp: datetime.datetime | None,
        hostname: str | None,
        program: str | None,
        pid: str | None,
        message: str,
        origin: Origin | None = None,
    ) -> None:
        self.facility = facility
        self.severity = severity
        self._timestamp = timestamp
        self.hostname = hostname
        self.program = program
        self.pid = pid
        self.message = message
        self.origin = origin

    @property
    def timestamp(self) -> datetime.datetime | None:
        """The sender's timestamp (aware when it had a zone), parsed on first access, or None."""
        ts = self._timestamp
        if isinstance(ts, str):
            ts = self._timestamp = _rfc3339(ts)
        return ts

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.facility, self.severity, self.timestamp, self.hostname,
            self.program, self.pid, self.message, self.origin,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __ne__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() != other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        names = ("facility", "severity", "timestamp", "hostname", "program", "pid", "message", "origin")
        inner = ", ".join(f"{name}={value!r}" for name, value in zip(names, self._fields(), strict=True))
        return f"SyslogMessage({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle and copy the parsed fields, never a pending stamp's text.
        return (SyslogMessage, self._fields())


_new_message = object.__new__


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

# "<PRI>" -> (facility, severity) for the canonical spellings, so the common
# case is one dict lookup; odd spellings ("<013>") take the slow path.
_PRIS = {f"<{pri}>": divmod(pri, 8) for pri in range(192)}

# RFC 5424 after the PRI.  The structured-data alternatives are possessive:
# on a frame that is not RFC 5424 after all they fail in linear time instead
# of backtracking through every way of splitting a long string.
_RFC5424 = re.compile(
    r"""
    1\x20
    (?P<ts>\S+)\x20
    (?P<host>\S+)\x20
    (?P<app>\S+)\x20
    (?P<procid>\S+)\x20
    \S+\x20                                 # MSGID: not kept
    (?P<sd>-|(?:\[(?:[^\]"\\]++|\\.|"(?:[^"\\]++|\\.)*+")*+\])++)
    (?:\x20(?P<msg>.*))?
    \Z
    """,
    re.VERBOSE | re.DOTALL,
)

# RFC 3164 and friends after the PRI (or from the start, without PRI).  Every
# part is optional, so this always matches.  The hostname is looked for only
# after a timestamp (as rsyslog does): it is the next token unless that token
# ends in ':' or contains '[' (then it is already the tag).
_RFC3164 = re.compile(
    r"""
    (?P<ts>
        [A-Za-z]{3}\x20[\x20\d]\d\x20\d\d:\d\d:\d\d      # Mmm dd hh:mm:ss, day space-padded
      | \d{4}-\d\d-\d\dT\S+                             # RFC 3339 (RSYSLOG_ForwardFormat)
    )?
    (?(ts)\x20+(?:(?P<host>(?>[^\s\[]+)(?<!:))\x20+)?)
    (?:(?P<prog>[^\s\[:]+)(?:\[(?P<pid>[^\]\s]*)\]:?|:)(?:\x20|\Z))?
    """,
    re.VERBOSE | re.DOTALL,
)

# Bytes no frame should end in; a framer strips them already, but a UDP
# datagram handed over raw may still carry them.
_TRAILER = b"\r\n\x00"


# The fast path: the header shape rsyslog forwards, ``STAMP HOST TAG: MSG``
# (RFC 3164 or RFC 3339 stamp, one space between the parts, printable ASCII
# header tokens).  It is _RFC3164 with fewer choices: whatever it matches,
# _RFC3164 matches with the same groups (host: no '[', not ending in ':';
# program: no ':' or '['; pid: no ']'), so it loosens nothing; whatever it
# does not match goes to _RFC3164.  Plain ASCII ranges instead of \s, \S
# and \d, and no conditional, atomic group or look-behind, make it about
# 40 % cheaper than _RFC3164 (instructions counted under callgrind).
_FAST_3164 = re.compile(
    r"""
    (
        [A-Za-z]{3}\x20[\x20\x30-\x39][0-9]\x20[0-9][0-9]:[0-9][0-9]:[0-9][0-9]
      | [0-9]{4}-[0-9][0-9]-[0-9][0-9]T[!-~]+
    )\x20
    ([!-Z\\-~]*[!-9;-Z\\-~])\x20              # HOST
    ([!-9;-Z\\-~]+)(?:\[([!-\\^-~]*)\]:?|:)\x20  # TAG[PID]: or TAG:
    (.*)                                        # MSG
    """,
    re.VERBOSE | re.DOTALL,
)


# The header of _FAST_3164 on the undecoded bytes, without the MSG group: for
# a hot loop that drops lines on their header (``PatternTable.ignores``).
# Every character class is an explicit ASCII range, and a byte of
# 0x80 or more (or the U+FFFD it decodes to) is in none of them, so on any
# frame this matches exactly when _FAST_3164 matches the decoded text, at the
# same offsets, with the same HOST and TAG, and MSG starts where it ends (the
# trailing ``(.*)`` of _FAST_3164 always matches, so it never changes which
# header is found; the bytes ``parse`` strips first, CR LF NUL, are in no
# class either).  tests/test_bench.py checks this against ``parse``.
FAST_HEADER = re.compile(
    rb"""
    (?:
        [A-Za-z]{3}\x20[\x20\x30-\x39][0-9]\x20[0-9][0-9]:[0-9][0-9]:[0-9][0-9]
      | [0-9]{4}-[0-9][0-9]-[0-9][0-9]T[!-~]+
    )\x20
    ([!-Z\\-~]*[!-9;-Z\\-~])\x20              # HOST
    ([!-9;-Z\\-~]+)(?:\[[!-\\^-~]*\]:?|:)\x20  # TAG[PID]: or TAG:
    """,
    re.VERBOSE,
)
# A canonical PRI (exactly the keys of _PRIS: <0> to <191>, no leading
# zero) followed by FAST_HEADER, in one match: the hot loop's common case.
FAST_PRI_HEADER = re.compile(rb"<(?:[0-9]|[1-9][0-9]|1[0-8][0-9]|19[01])>" + FAST_HEADER.pattern, re.VERBOSE)


def parse(frame: bytes, now: datetime.datetime | None = None) -> SyslogMessage:
    """Parse one frame into a SyslogMessage; ``now`` supplies the year of RFC 3164 stamps."""
    text, pos, facility, severity = _prologue(frame)
    # _FAST_3164 never matches "1 ...", so trying it before RFC 5424 is safe.
    m = _FAST_3164.match(text, pos)
    if m is None:
        if text.startswith("1 ", pos):
            return _after_pri(text, pos, facility, severity, now)
        return _rfc3164_regex(text, pos, facility, severity, now)
    ts, host, prog, pid, msg = m.groups()
    message = _new_message(SyslogMessage)
    message.facility = facility
    message.severity = severity
    if ts[3] != " ":
        message._timestamp = ts  # RFC 3339: parsed when first read
    elif now is None:
        message._timestamp = None
    else:
        message._timestamp = _rfc3164(ts, now.year, now.month, now.day)
    message.hostname = host
    message.program = prog
    message.pid = pid or None
    message.message = msg
    message.origin = None
    return message


def parse_reference(frame: bytes, now: datetime.datetime | None = None) -> SyslogMessage:
    """``parse`` without the fast path: the regexes decide every header (for tests and benchmarks)."""
    text, pos, facility, severity = _prologue(frame)
    if text.startswith("1 ", pos):
        return _after_pri(text, pos, facility, severity, now)
    return _rfc3164_regex(text, pos, facility, severity, now)


def _prologue(frame: bytes) -> tuple[str, int, int | None, int | None]:
    """Strip the trailer, decode, and read the PRI: (text, where the header starts, facility, severity)."""
    frame = frame.rstrip(_TRAILER)
    if not frame:
        raise MalformedMessage("empty frame")
    text = frame.decode("utf-8", "replace")
    if text[0] != "<":
        return text, 0, None, None
    pos = text.find(">", 1, 5) + 1
    known = _PRIS.get(text[:pos]) if pos else None
    facility, severity = _odd_pri(text, pos) if known is None else known
    return text, pos, facility, severity


def _after_pri(
    text: str, pos: int, facility: int | None, severity: int | None, now: datetime.datetime | None
) -> SyslogMessage:
    """``<PRI>1 ...``: RFC 5424, or RFC 3164 when it is not RFC 5424 after all."""
    m = _RFC5424.match(text, pos)
    if m is None:
        # Not RFC 5424 after all: rsyslog falls back to RFC 3164 too.
        return _rfc3164_regex(text, pos, facility, severity, now)
    ts, host, app, procid, sd, msg = m.group("ts", "host", "app", "procid", "sd", "msg")
    if msg is None:
        msg = ""
    else:
        if msg[:1] == "\ufeff":
            msg = msg[1:]
        if msg[:1] == " ":
            msg = msg[1:]
    return SyslogMessage(
        facility,
        severity,
        None if ts == "-" else _rfc3339(ts),
        None if host == "-" else host,
        None if app == "-" else app,
        None if procid == "-" else procid,
        msg,
        None if sd == "-" else _origin(sd),
    )


def _rfc3164_regex(
    text: str, pos: int, facility: int | None, severity: int | None, now: datetime.datetime | None
) -> SyslogMessage:
    """The general RFC 3164 header rule (_RFC3164) from ``pos``."""
    m = _RFC3164.match(text, pos)
    assert m is not None  # every part of the pattern is optional
    ts, host, prog, pid = m.groups()
    timestamp: datetime.datetime | None = None
    if ts is not None:
        if ts[0].isdigit():
            timestamp = _rfc3339(ts)
        elif now is not None:
            timestamp = _rfc3164(ts, now.year, now.month, now.day)
    return SyslogMessage(facility, severity, timestamp, host, prog, pid or None, text[m.end() :])


def _odd_pri(text: str, pos: int) -> tuple[int, int]:
    """Facility and severity of a PRI not in the table (leading zeros), or raise."""
    pri = text[1 : pos - 1] if pos else ""
    # isdecimal() alone would let through other scripts' digits.
    if not (pri.isascii() and pri.isdecimal()):
        raise MalformedMessage(f"bad PRI in {text[:8]!r}")
    value = int(pri)
    if value > 191:
        raise MalformedMessage(f"PRI {value} out of range")
    return divmod(value, 8)


def _rfc3339(stamp: str) -> datetime.datetime | None:
    """An RFC 3339 timestamp as a datetime (aware when it has a zone), or None."""
    # fromisoformat is C code and accepts RFC 3339 (with 'Z' since 3.11); it
    # also accepts some other ISO 8601 shapes, which is harmless here.
    try:
        return datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None


# Lines come in bursts that share their second, and slicing, int() and
# building a datetime cost about as much as the header regex: remember
# recent answers (the key includes the date the year is guessed from).
@functools.lru_cache(maxsize=1024)
def _rfc3164(stamp: str, year: int, month: int, day: int) -> datetime.datetime | None:
    """``Mmm dd hh:mm:ss`` as a naive datetime in the year closest to the given date, or None."""
    number = _MONTHS.get(stamp[:3])
    if number is None:
        return None
    d = int(stamp[4:6])
    # Days from that date to the stamp in the same year, roughly (31-day
    # months): more than half a year ahead means last year's, more than half
    # behind next year's.  Cheaper than comparing datetimes, and only ever
    # off by a day or two at the half-year mark, where no real line lives.
    ahead = (number - month) * 31 + d - day
    if ahead > 183:
        year -= 1
    elif ahead < -183:
        year += 1
    try:
        return datetime.datetime(
            year, number, d, int(stamp[7:9]), int(stamp[10:12]), int(stamp[13:15])
        )
    except ValueError:  # out of range, e.g. 31 Nov, or 29 Feb of a common year
        return None
