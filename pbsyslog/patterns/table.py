"""The pattern table: one syslog message -> the login, logout or failure an entry reports.

What it does: ``PatternTable`` holds the checked entries (``Pattern``) in
matching order, indexed by program name, and matches a parsed
``SyslogMessage`` against them: first by program name (one dict lookup,
remembered per program, path-style tags by their last part), then by the
regexes of that program, each matched against the MSG part from its first
character, behind the literal starts the prefilter reads from them.
``ignores`` says, from a raw frame's header alone, that a line certainly
gives no event.  ``checked_table`` (and ``PatternTable.from_entries``)
build a table and check every entry's samples through the whole table.

What it must not do: give a line to more than one entry, give through the
table anything but what the line's own entry gives alone, or depend on the
facility, the timestamp or the sender.  Its memos (the route of each
program, the gate of each TAG) are bounded.  It does no I/O and imports
nothing from ``twisted.internet``.

How it fails: building a table raises ``PatternError`` naming the entry
and the reason (see ``entries`` for an entry on its own; here: a sample
the table routes elsewhere, or a line claimed by two entries).  Matching
never raises for any message: a line that matches nothing, or whose
captured address is not an address, gives None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from pbsyslog.memo import remember
from pbsyslog.patterns.entries import check_unique, parse_entry, shorten
from pbsyslog.patterns.model import (
    CACHED_LINE,
    AuthEvent,
    Pattern,
    PatternError,
    Sample,
    basename,
    cached_event,
    new_event,
)
from pbsyslog.patterns.prefilter import byte_gate, header, literal_starts, pri_header, program_gate
from pbsyslog.syslog import SyslogMessage

__all__ = ["PatternTable", "checked_table"]


class _Rule(NamedTuple):
    """One entry as the hot loop wants it (unpacked there as a plain tuple)."""

    starts: tuple[str, ...] | None  # literal texts every match starts with one of; None: unknown
    match: Callable[[str], re.Match[str] | None]
    kind: str
    name: str
    ip_group: int  # index into match.groups(); -1: the regex has no ip group
    user_group: int  # index into match.groups(); -1: the regex has no user group
    session_group: int  # index into match.groups(); -1: the regex has no session group


# A program's rules, behind a gate: the union of their literal starts (None
# when one of them has none), so that most lines of a known program cost one
# str.startswith and no regex at all.
_Route = tuple["tuple[str, ...] | None", tuple[_Rule, ...]]
_UNSEEN: Any = object()
_MAX_ROUTES = 4096


@attrs.frozen(eq=False)
class PatternTable:
    """The enabled entries, indexed by program name.

    Build it with ``from_entries`` or ``load_table``, which check the
    samples; the constructor itself takes already checked ``Pattern``s.
    """

    patterns: tuple[Pattern, ...]
    _dispatch: Mapping[str, _Route] = attrs.field(init=False, repr=False)
    # program -> route (or None) for every program seen so far, so that any
    # line, path-style tags (postfix/smtpd) included, costs one dict lookup.
    # A cache, not state: bounded, and rebuilt the same from _dispatch.
    _routes: dict[str | None, _Route | None] = attrs.field(init=False, repr=False, factory=dict)
    # name -> entry, and the (group, session key) pairs some enabled logout
    # entry closes: a login opens a session only when a logout can close it.
    by_name: Mapping[str, Pattern] = attrs.field(init=False, repr=False)
    closable: frozenset[tuple[str, str]] = attrs.field(init=False, repr=False)
    # TAG bytes (as syslog.FAST_HEADER reads them) -> what ``ignores`` needs to
    # know of that program's route: False (no entry handles it), None (some
    # do, and MSG may start with anything) or the gate as UTF-8 bytes.
    _tag_gates: dict[bytes, tuple[bytes, ...] | bool | None] = attrs.field(init=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.patterns})
        object.__setattr__(self, "closable", frozenset(
            (p.group, p.session) for p in self.patterns if p.kind == "logout" and p.session is not None
        ))
        by_program: dict[str, list[_Rule]] = {}
        for pattern in self.patterns:
            rule = _rule(pattern)
            for program in pattern.programs:
                by_program.setdefault(program, []).append(rule)
        dispatch = {
            program: (program_gate(rule.starts for rule in rules), tuple(rules))
            for program, rules in by_program.items()
        }
        object.__setattr__(self, "_dispatch", dispatch)

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> PatternTable:
        """Validate raw entries (the data file's shape) into a table; raise PatternError naming the entry."""
        return checked_table([parse_entry(entry, index) for index, entry in enumerate(entries)])

    @property
    def names(self) -> tuple[str, ...]:
        """The entry names, in matching order."""
        return tuple(p.name for p in self.patterns)

    @property
    def groups(self) -> tuple[str, ...]:
        """The group names, each once, in matching order."""
        return tuple(dict.fromkeys(p.group for p in self.patterns))

    def match(self, msg: SyslogMessage) -> AuthEvent | None:
        """Return the login, logout or failure this message reports for the address on the line, or None.

        Lines without an address and connect/end lines give None here; the
        pipeline uses ``classify`` to see those too.
        """
        event = self.classify(msg)
        if event is None or event.ip is None or event.kind == "connect" or event.kind == "end":
            return None
        return event

    def classify(self, msg: SyslogMessage) -> AuthEvent | None:
        """Return the event of whichever entry claims this message (any kind, address or not), or None."""
        route = self._routes.get(msg.program, _UNSEEN)
        if route is _UNSEEN:
            route = self._route(msg.program)
        if route is None:
            return None
        gate, rules = route
        text = msg.message
        if gate is not None and not text.startswith(gate):
            return None
        for prefixes, regex_match, kind, name, ip_group, user_group, session_group in rules:
            if prefixes is not None and not text.startswith(prefixes):
                continue
            found = regex_match(text)
            if found is not None:
                # The line is this entry's; a bad address drops it rather
                # than letting a later entry have a go at it.
                event = cached_event if len(text) <= CACHED_LINE else new_event
                return event(kind, name, ip_group, user_group, session_group, found.groups())
        return None

    def ignores(self, frame: bytes) -> bool:
        """Say whether ``frame`` certainly gives no event, without decoding or parsing it.

        True when its header (read with ``syslog.FAST_PRI_HEADER`` or
        ``FAST_HEADER``: this runs once per line of ``pbsyslog check``) names a program
        that no entry handles, or whose MSG starts with none of the literal
        starts of that program's entries: ``classify(parse(frame))`` would
        give None.  False means nothing: parse it and classify it.  Never
        raises.  (Why the gate may be tested on bytes: ``prefilter.byte_gate``.)
        """
        # A PRI and the header in one match (a PRI that is not canonical,
        # or a header parse reads otherwise: parse it); no PRI (a log
        # file's line): the header alone.
        m = pri_header(frame) if frame.startswith(b"<") else header(frame)
        if m is None:
            return False
        tag = m.group(2)
        gate = self._tag_gates.get(tag, _UNSEEN)
        if gate is _UNSEEN:
            gate = self._tag_gate(tag)
        if gate is None:
            return False
        if gate is False:
            return True
        return not frame.startswith(gate, m.end())

    def _tag_gate(self, tag: bytes) -> tuple[bytes, ...] | bool | None:
        """What ``ignores`` keeps for a TAG (see ``_tag_gates``), remembered for up to _MAX_ROUTES TAGs."""
        route = self._route(tag.decode("ascii", "replace"))
        tag_gate = False if route is None else byte_gate(route[0])
        return remember(self._tag_gates, tag, tag_gate, _MAX_ROUTES)

    def _route(self, program: str | None) -> _Route | None:
        """Find (and remember, up to _MAX_ROUTES programs) the route for a program."""
        route = self._dispatch.get(program)  # type: ignore[arg-type]
        if route is None:
            route = self._by_basename(program)
        return remember(self._routes, program, route, _MAX_ROUTES)

    def _rules_for(self, program: str | None) -> tuple[_Rule, ...]:
        """The rules that lines of ``program`` go through (the same routing as ``match``)."""
        route = self._route(program)
        return route[1] if route is not None else ()

    def _by_basename(self, program: str | None) -> _Route | None:
        """The route for a tag written as a path (/usr/sbin/ipop3d), if its last part has one."""
        if not program or "/" not in program:
            return None
        return self._dispatch.get(basename(program))


def _rule(pattern: Pattern) -> _Rule:
    """The hot loop's view of an entry."""
    groups = pattern.regex.groupindex
    return _Rule(
        literal_starts(pattern.regex),
        pattern.regex.match,
        pattern.kind,
        pattern.name,
        groups.get("ip", 0) - 1,
        groups.get("user", 0) - 1,
        groups.get("session", 0) - 1,
    )


def checked_table(patterns: Sequence[Pattern]) -> PatternTable:
    """Build a table and check that each sample is reported by its own entry and no other."""
    check_unique(patterns)
    table = PatternTable(tuple(patterns))
    by_name = {p.name: p for p in patterns}
    for owner in patterns:
        for number, sample in enumerate(owner.samples, 1):
            routed = [by_name[rule.name] for rule in table._rules_for(sample.program)]
            if sample.event is not None and owner not in routed:
                raise PatternError(
                    owner.name,
                    f"sample {number}: the table sends program {sample.program!r} to "
                    f"{', '.join(p.name for p in routed) or 'no entry'}, not to this one",
                )
            expected = owner.apply(sample.message) if sample.event is not None else None
            if table.classify(_message(sample)) != expected:
                raise PatternError(
                    owner.name,
                    f"sample {number} ({shorten(sample.message)}): the table does not give what "
                    "the entry alone gives (a bug in the literal prefilter?)",
                )
            for other in routed:
                if other is not owner and other.apply(sample.message) is not None:
                    raise PatternError(
                        owner.name,
                        f"sample {number} ({shorten(sample.message)}) is also reported by "
                        f"pattern {other.name!r}; a line must belong to one entry at most",
                    )
    return table


def _message(sample: Sample) -> SyslogMessage:
    """A SyslogMessage carrying just a sample's program and MSG part."""
    return SyslogMessage(None, None, None, None, sample.program, None, sample.message)
