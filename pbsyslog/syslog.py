"""Syslog messages: one frame (bytes) -> one SyslogMessage record.

Contract: pure; no I/O, no reactor.  ``parse`` accepts RFC 3164 (as BSD
syslogd and rsyslog's traditional templates write it) and RFC 5424 (as
rsyslog's RSYSLOG_SyslogProtocol23Format writes it).  It raises
``MalformedMessage`` for input it cannot make sense of; callers count
and drop such frames.
"""

from __future__ import annotations

import datetime

import attrs


class MalformedMessage(ValueError):
    """A frame that is not a syslog message we can parse."""


@attrs.frozen
class SyslogMessage:
    """The parsed header and the MSG part of one syslog message."""

    facility: int | None
    severity: int | None
    timestamp: datetime.datetime | None
    hostname: str | None
    program: str | None
    pid: str | None
    message: str


def parse(frame: bytes) -> SyslogMessage:
    """Parse one frame into a SyslogMessage (placeholder, being written)."""
    raise NotImplementedError
