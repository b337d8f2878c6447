"""The pattern table's prefilter: cheap tests that a line cannot match, so its regexes need not run.

What it does: reads the literal texts every match of a regex starts with
(``literal_starts``), joins those of one program's entries into a gate
(``program_gate``: most lines of a known program then cost one
``str.startswith`` and no regex at all), turns a gate into bytes for frames
not yet decoded (``byte_gate``), and names the header regexes that
``PatternTable.ignores`` inlines (``header``, ``pri_header``).

What it must not do: ever be the reason a line that an entry matches is
skipped.  A start it cannot read is "unknown" (None), which filters
nothing; the table checks every sample through the prefilter against the
entry alone when it is built.  It does no I/O and imports nothing from
``twisted.internet``.

How it fails: it never raises.  If the re module's private parser changes
or refuses a regex, ``literal_starts`` gives None and matching just runs
every regex of that program.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pbsyslog.syslog import FAST_HEADER, FAST_PRI_HEADER

__all__ = ["byte_gate", "header", "literal_starts", "pri_header", "program_gate"]

# The header of a frame without a PRI (a log file's line), and a canonical
# PRI followed by that header in one match (see pbsyslog.syslog).
header = FAST_HEADER.match
pri_header = FAST_PRI_HEADER.match

_MAX_STARTS = 64


def literal_starts(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literal texts one of which every match of ``regex`` (at position 0) starts with, or None.

    Only a speed-up, and only ever a reason to skip a regex that could not
    have matched: it reads the leading literals, alternations and optional
    groups of the parsed regex and stops at the first thing it does not
    know.  It uses the re module's own parser (private, hence the broad
    except: if that changes, matching just runs every regex).
    """
    if regex.flags & re.IGNORECASE:
        return None
    try:
        from re import _constants as sre  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]

        starts, _ = _extend_starts(list(_parser.parse(regex.pattern, regex.flags)), [""], sre)
    except Exception:
        return None
    if not starts or "" in starts:
        return None
    return tuple(dict.fromkeys(starts))


def _extend_starts(items: list[Any], starts: list[str], sre: Any) -> tuple[list[str], bool]:
    """Extend ``starts`` by the literal beginning of ``items``; say whether all of ``items`` was literal."""
    for op, av in items:
        if op is sre.AT and av is sre.AT_BEGINNING:
            continue  # zero-width; true at position 0, where match() starts
        if op is sre.LITERAL:
            starts = [s + chr(av) for s in starts]
        elif op is sre.SUBPATTERN:
            _, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                return starts, False
            starts, complete = _extend_starts(list(sub), starts, sre)
            if not complete:
                return starts, False
        elif op is sre.BRANCH:
            extended: list[str] = []
            complete = True
            for alternative in av[1]:
                more, whole = _extend_starts(list(alternative), starts, sre)
                extended.extend(more)
                complete = complete and whole
            if len(extended) > _MAX_STARTS:
                return starts, False
            starts = extended
            if not complete:
                return starts, False
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] == 0 and av[1] == 1:
            more, whole = _extend_starts(list(av[2]), starts, sre)
            if not whole or len(starts) + len(more) > _MAX_STARTS:
                return starts, False
            starts = starts + more
        else:
            return starts, False
    return starts, True


def program_gate(starts_of_rules: Iterable[tuple[str, ...] | None]) -> tuple[str, ...] | None:
    """The literal starts of any of a program's rules (each rule's ``literal_starts``), or None if one has none."""
    starts: list[str] = []
    for rule_starts in starts_of_rules:
        if rule_starts is None:
            return None
        starts.extend(rule_starts)
    return tuple(dict.fromkeys(starts))


def byte_gate(starts: tuple[str, ...] | None) -> tuple[bytes, ...] | None:
    """A program's gate as UTF-8 bytes, to test a frame's MSG before decoding it; None when unusable.

    Decoded MSG starts with a text without U+FFFD exactly when MSG's bytes
    start with that text's UTF-8 (a replaced byte never decodes to one of
    its characters, and a complete UTF-8 sequence decodes alike whatever
    follows); a gate with U+FFFD is not used.  The CR LF NUL ``parse``
    strips from the end only ever make the raw bytes start with more, never
    less.
    """
    if starts is None or any("\ufffd" in start for start in starts):
        return None
    return tuple(start.encode("utf-8", "surrogatepass") for start in starts)
