"""The pattern table: one syslog message -> a POP3/IMAP login, logout or failure.

What it does: holds the regexes of ``patterns.toml`` (and the admin's own
``[[pattern]]`` entries) with the sample lines attached to each, checks them
when a table is built, and matches a parsed ``SyslogMessage`` against them:
first by program name (one dict lookup), then by the regexes of that
program, each matched against the MSG part from its first character.  The
address a regex captures is validated and normalised with ``ipaddress``.

What it must not do: report an address that did not come from the field in
which the daemon writes the client address of that very event; report a
login for a failed or unfinished authentication; depend on the facility,
the timestamp or the sender.  It does no I/O except reading the packaged
table when asked for it, and imports nothing from ``twisted.internet``.

How it fails: building a table (``PatternTable.from_entries``,
``load_table``) raises ``PatternError`` naming the entry and the reason: a
bad key, a regex that does not compile or lacks the ``ip`` group, a sample
that does not give its expected result, or a line claimed by two entries.
Matching never raises for any message: a line that matches nothing, or whose
captured address is not an address, gives ``None``.
"""

from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from pbsyslog.addresses import unmapped
from pbsyslog.syslog import FAST_HEADER, FAST_PRI_HEADER, SyslogMessage

__all__ = [
    "ENTRY_KINDS",
    "KINDS",
    "SESSION_KEYS",
    "AuthEvent",
    "Pattern",
    "PatternError",
    "PatternTable",
    "Sample",
    "builtin_entries",
    "load_table",
    "normalise_ip",
]

# What ``match`` reports (and ``pbsyslog check`` counts): events on one line
# that carry the client address.
KINDS: tuple[str, ...] = ("login", "logout", "fail")
# What an entry may be.  "connect" (the address of a connection whose login
# comes on a later line) and "end" (a connection ended without a login) only
# feed the two-line correlator; ``classify`` reports them, ``match`` never.
ENTRY_KINDS: tuple[str, ...] = (*KINDS, "connect", "end")
# How a login opens, and a logout finds, an open session (entry key
# "session"): by the regex's own `session` group, by the client address, or
# by the syslog pid (one process per connection).
SESSION_KEYS: tuple[str, ...] = ("group", "ip", "pid")
NO_EVENT = "none"

_ENTRY_KEYS = ("name", "group", "kind", "programs", "regex", "session", "ip_from", "description", "samples")
_SAMPLE_KEYS = ("message", "program", "event", "ip", "user", "session", "note")
_GROUP_NAMES = frozenset({"ip", "user", "session"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# What an address may look like before ipaddress sees it: ASCII only (int()
# would take other scripts' digits), no zone id ("%eth0"), no spaces.
_ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")
# An IPv4 address as ipaddress writes it (four decimal octets of 0-255, no
# leading zeros): ipaddress accepts exactly these unchanged, so they skip it
# (it cost more than the regex that found them: a log's addresses are
# mostly distinct, so the event cache rarely helps).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}\Z")


class PatternError(ValueError):
    """A pattern table entry (or the choice of entries) that cannot be used."""

    def __init__(self, entry: str | None, reason: str) -> None:
        self.entry = entry
        self.reason = reason
        where = f"pattern {entry!r}" if entry is not None else "patterns"
        super().__init__(f"{where}: {reason}")


@attrs.frozen
class AuthEvent:
    """What one syslog line says about one client address (or, for ``classify``, one connection).

    ``ip`` is None only for lines that carry no address (a two-line login's
    second line, Dovecot's logout); ``match`` never reports those.
    ``session`` is the text of the regex's `session` group, if it has one.
    """

    kind: str
    ip: str | None
    pattern: str
    user: str | None = None
    session: str | None = None


@attrs.frozen
class Sample:
    """A line an entry must report (``event`` is its kind) or must not (``event`` None)."""

    program: str
    message: str
    event: str | None
    ip: str | None = None
    user: str | None = None
    note: str = ""
    session: str | None = None


@attrs.frozen
class Pattern:
    """One table entry: one regex for one kind of event of some programs."""

    name: str
    group: str
    programs: tuple[str, ...]
    kind: str
    regex: re.Pattern[str]
    samples: tuple[Sample, ...] = ()
    description: str = ""
    session: str | None = None  # one of SESSION_KEYS: this entry opens (login) or closes (logout) sessions
    ip_from: str | None = None  # "connect": the address comes from the connection's connect line

    def handles(self, program: str | None) -> bool:
        """Say whether this entry, on its own, applies to lines of ``program``."""
        if program is None:
            return False
        return program in self.programs or _basename(program) in self.programs

    def apply(self, message: str) -> AuthEvent | None:
        """Match this entry's regex against one MSG part (the program is not checked)."""
        found = self.regex.match(message)
        if found is None:
            return None
        groups = self.regex.groupindex
        return _event(
            self.kind, self.name, groups.get("ip", 0) - 1, groups.get("user", 0) - 1,
            groups.get("session", 0) - 1, found.groups(),
        )


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
_header = FAST_HEADER.match
_pri_header = FAST_PRI_HEADER.match
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
    # TAG bytes (as syslog.peek gives them) -> what ``ignores`` needs to
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
        dispatch = {program: (_gate(rules), tuple(rules)) for program, rules in by_program.items()}
        object.__setattr__(self, "_dispatch", dispatch)

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> PatternTable:
        """Validate raw entries (the data file's shape) into a table; raise PatternError naming the entry."""
        return _table([_parse_entry(entry, index) for index, entry in enumerate(entries)])

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
                event = _event if len(text) <= _CACHED_LINE else _new_event
                return event(kind, name, ip_group, user_group, session_group, found.groups())
        return None

    def ignores(self, frame: bytes) -> bool:
        """Say whether ``frame`` certainly gives no event, without decoding or parsing it.

        True when its header (read as ``syslog.peek`` reads it, inlined
        here: this runs once per line of ``pbsyslog check``) names a program
        that no entry handles, or whose MSG starts with none of the literal
        starts of that program's entries: ``classify(parse(frame))`` would
        give None.  False means nothing: parse it and classify it.  Never
        raises.

        The gate on bytes: decoded MSG starts with a text without U+FFFD
        exactly when MSG's bytes start with that text's UTF-8 (a replaced
        byte never decodes to one of its characters, and a complete UTF-8
        sequence decodes alike whatever follows); a gate with U+FFFD is not
        used.  The CR LF NUL ``parse`` strips from the end only ever make
        the raw bytes start with more, never less.
        """
        # A PRI and the header in one match (a PRI that is not canonical,
        # or a header parse reads otherwise: parse it); no PRI (a log
        # file's line): the header alone.
        m = _pri_header(frame) if frame.startswith(b"<") else _header(frame)
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
        gate: tuple[bytes, ...] | bool | None
        if route is None:
            gate = False
        elif route[0] is None or any("\ufffd" in start for start in route[0]):
            gate = None
        else:
            gate = tuple(start.encode("utf-8", "surrogatepass") for start in route[0])
        if len(self._tag_gates) < _MAX_ROUTES:
            self._tag_gates[tag] = gate
        return gate

    def _route(self, program: str | None) -> _Route | None:
        """Find (and remember, up to _MAX_ROUTES programs) the route for a program."""
        route = self._dispatch.get(program)  # type: ignore[arg-type]
        if route is None:
            route = self._by_basename(program)
        if len(self._routes) < _MAX_ROUTES:
            self._routes[program] = route
        return route

    def _rules_for(self, program: str | None) -> tuple[_Rule, ...]:
        """The rules that lines of ``program`` go through (the same routing as ``match``)."""
        route = self._route(program)
        return route[1] if route is not None else ()

    def _by_basename(self, program: str | None) -> _Route | None:
        """The route for a tag written as a path (/usr/sbin/ipop3d), if its last part has one."""
        if not program or "/" not in program:
            return None
        return self._dispatch.get(_basename(program))


def normalise_ip(text: str) -> str | None:
    """Validate an address as a daemon writes it; return it as Postfix looks it up, or None.

    Strips one pair of brackets; an IPv4-mapped IPv6 address becomes the
    IPv4 address; IPv6 becomes lowercase and compressed.  Zone ids
    (``fe80::1%eth0``), leading zeros in IPv4, spaces and anything else
    ``ipaddress`` refuses give None.
    """
    if not isinstance(text, str):
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if _CANONICAL_IPV4.match(text) is not None:
        return text
    if _ADDRESS_TEXT.match(text) is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(unmapped(address))


def builtin_entries() -> list[dict[str, Any]]:
    """Return the packaged table as raw mappings (a fresh copy on every call)."""
    try:
        data = tomllib.loads(_builtin_text())
    except tomllib.TOMLDecodeError as e:
        raise PatternError(None, f"the packaged patterns.toml is not valid TOML: {e}") from None
    entries = data.get("pattern")
    if not isinstance(entries, list):
        raise PatternError(None, "the packaged patterns.toml has no [[pattern]] entries")
    return entries


def load_table(
    enabled: Sequence[str] | str = "all",
    extra: Iterable[Mapping[str, Any]] = (),
) -> PatternTable:
    """Build the table: the built-in entries that ``enabled`` names, plus all of ``extra``.

    ``enabled`` is "all" or names of groups ("dovecot") or entries
    ("dovecot-login").  An ``extra`` entry whose name is a built-in entry's
    name replaces that entry; one whose name is a built-in group's name
    replaces the whole group.  Extra entries are always enabled.
    """
    builtin = [_parse_entry(entry, index) for index, entry in enumerate(builtin_entries())]
    extras = [_parse_entry(entry, index, "extra pattern") for index, entry in enumerate(extra)]
    _check_unique(extras)
    merged = _merge(builtin, extras)
    extra_names = {p.name for p in extras}

    if isinstance(enabled, str):
        wanted = None if enabled == "all" else {enabled}
    else:
        wanted = set(enabled)
    if wanted is not None:
        known = {p.name for p in merged} | {p.group for p in merged}
        unknown = sorted(wanted - known)
        if unknown:
            raise PatternError(
                unknown[0],
                "no such pattern or group; known: " + ", ".join(sorted(known)),
            )
        merged = [
            p for p in merged if p.name in extra_names or p.name in wanted or p.group in wanted
        ]
    if not merged:
        raise PatternError(None, "no pattern is enabled; nothing would ever authorise")
    return _table(merged)


@functools.cache
def _builtin_text() -> str:
    """Read the packaged data file once."""
    return importlib.resources.files("pbsyslog").joinpath("patterns.toml").read_text(encoding="utf-8")


def _basename(program: str) -> str:
    """The last path component of a tag."""
    return program.rpartition("/")[2]


def _rule(pattern: Pattern) -> _Rule:
    """The hot loop's view of an entry."""
    groups = pattern.regex.groupindex
    return _Rule(
        _literal_starts(pattern.regex),
        pattern.regex.match,
        pattern.kind,
        pattern.name,
        groups.get("ip", 0) - 1,
        groups.get("user", 0) - 1,
        groups.get("session", 0) - 1,
    )


def _gate(rules: Sequence[_Rule]) -> tuple[str, ...] | None:
    """The literal starts of any of ``rules``, or None when one rule has none."""
    starts: list[str] = []
    for rule in rules:
        if rule.starts is None:
            return None
        starts.extend(rule.starts)
    return tuple(dict.fromkeys(starts))


_MAX_STARTS = 64


def _literal_starts(regex: re.Pattern[str]) -> tuple[str, ...] | None:
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


def _new_event(
    kind: str, name: str, ip_group: int, user_group: int, session_group: int, groups: tuple[str | None, ...]
) -> AuthEvent | None:
    """The event for a matched line (its ``groups()``), or None when the captured address is not one.

    An entry without an `ip` group (checked at load: a two-line entry or a
    logout keyed by session or pid) gives an event with ip None; an `ip`
    group that captured text which is not an address drops the line.
    """
    ip = None
    if ip_group >= 0:
        ip_text = groups[ip_group]
        ip = normalise_ip(ip_text) if ip_text is not None else None
        if ip is None:
            return None
    user = groups[user_group] if user_group >= 0 else None
    session = groups[session_group] if session_group >= 0 else None
    return AuthEvent(kind, ip, name, user or None, session or None)


# The same few addresses (and users) log in again and again: parsing an
# address with ipaddress and building a frozen attrs record each cost more
# than the regex that found them.  Events are immutable, so equal ones can be
# shared.  The key holds user names that anyone can choose (failed logins),
# so only short lines are cached, in a bounded cache: at most 1024 entries of
# at most _CACHED_LINE characters.
_CACHED_LINE = 300
_event = functools.lru_cache(maxsize=1024)(_new_event)


def _merge(builtin: list[Pattern], extras: list[Pattern]) -> list[Pattern]:
    """Put the admin's entries in: replacing a built-in entry or group in place, or appended."""
    merged = list(builtin)
    builtin_ids = {id(p) for p in builtin}
    builtin_names = {p.name for p in builtin}
    builtin_groups = {p.group for p in builtin}
    for pattern in extras:
        if pattern.name in builtin_names:
            merged = [pattern if p.name == pattern.name else p for p in merged]
        elif pattern.name in builtin_groups:
            replaced = [id(p) in builtin_ids and p.group == pattern.name for p in merged]
            if any(replaced):
                first = replaced.index(True)
                kept = [p for p, r in zip(merged, replaced, strict=True) if not r]
                merged = kept[:first] + [pattern] + kept[first:]
            else:  # every entry of that group was already replaced by name
                merged.append(pattern)
        else:
            merged.append(pattern)
    return merged


def _check_unique(patterns: Sequence[Pattern]) -> None:
    """Refuse two entries of one name."""
    seen: set[str] = set()
    for pattern in patterns:
        if pattern.name in seen:
            raise PatternError(pattern.name, "two entries have this name")
        seen.add(pattern.name)


def _table(patterns: Sequence[Pattern]) -> PatternTable:
    """Build a table and check that each sample is reported by its own entry and no other."""
    _check_unique(patterns)
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
                    f"sample {number} ({_short(sample.message)}): the table does not give what "
                    "the entry alone gives (a bug in the literal prefilter?)",
                )
            for other in routed:
                if other is not owner and other.apply(sample.message) is not None:
                    raise PatternError(
                        owner.name,
                        f"sample {number} ({_short(sample.message)}) is also reported by "
                        f"pattern {other.name!r}; a line must belong to one entry at most",
                    )
    return table


def _message(sample: Sample) -> SyslogMessage:
    """A SyslogMessage carrying just a sample's program and MSG part."""
    return SyslogMessage(None, None, None, None, sample.program, None, sample.message)


def _short(message: str) -> str:
    """A sample line shortened for an error message."""
    return repr(message if len(message) <= 60 else message[:57] + "...")


def _parse_entry(raw: Any, index: int, what: str = "pattern") -> Pattern:
    """Check one raw entry and compile it; raise PatternError naming it."""
    if not isinstance(raw, Mapping):
        raise PatternError(None, f"{what} #{index + 1}: expected a table, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PatternError(
            None,
            f"{what} #{index + 1}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}",
        )
    unknown = sorted(set(raw) - set(_ENTRY_KEYS))
    if unknown:
        raise PatternError(name, f"unknown key {unknown[0]!r} (known: {', '.join(_ENTRY_KEYS)})")

    group = raw.get("group", name)
    if not isinstance(group, str) or not _NAME.match(group):
        raise PatternError(name, f"'group' must be letters, digits, '.', '_' or '-', got {group!r}")
    kind = raw.get("kind")
    if kind not in ENTRY_KINDS:
        raise PatternError(name, f"'kind' must be one of {', '.join(ENTRY_KINDS)}, got {kind!r}")
    programs = raw.get("programs")
    if (
        isinstance(programs, str)
        or not isinstance(programs, Sequence)
        or not programs
        or not all(isinstance(p, str) and p and not any(c.isspace() for c in p) for p in programs)
    ):
        raise PatternError(name, f"'programs' must be a non-empty list of syslog tags, got {programs!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PatternError(name, "'description' must be a string")

    session = raw.get("session")
    ip_from = raw.get("ip_from")
    regex = _compile(name, raw.get("regex"))
    _check_keys(name, kind, regex, session, ip_from)
    pattern = Pattern(
        name=name,
        group=group,
        programs=tuple(dict.fromkeys(programs)),
        kind=kind,
        regex=regex,
        description=description,
        session=session,
        ip_from=ip_from,
    )
    samples = tuple(_parse_sample(pattern, s, n) for n, s in enumerate(_sample_list(name, raw), 1))
    if not any(s.event is not None for s in samples):
        raise PatternError(name, f"needs at least one sample with event = {kind!r}")
    if not any(s.event is None for s in samples):
        raise PatternError(name, 'needs at least one sample with event = "none" (a line it must not report)')
    pattern = attrs.evolve(pattern, samples=samples)
    for number, sample in enumerate(samples, 1):
        _check_sample(pattern, sample, number)
    return pattern


def _compile(name: str, regex: Any) -> re.Pattern[str]:
    """Compile an entry's regex and check its groups."""
    if not isinstance(regex, str) or not regex:
        raise PatternError(name, f"'regex' must be a non-empty string, got {regex!r}")
    try:
        compiled = re.compile(regex)
    except re.error as e:
        raise PatternError(name, f"regex does not compile: {e}") from None
    others = sorted(set(compiled.groupindex) - _GROUP_NAMES)
    if others:
        raise PatternError(name, f"regex has named group {others[0]!r}; only 'ip', 'user' and 'session' are read")
    return compiled


def _check_keys(name: str, kind: str, regex: re.Pattern[str], session: Any, ip_from: Any) -> None:
    """Check that kind, the `ip` and `session` groups, 'session' and 'ip_from' fit together."""
    groups = regex.groupindex
    if session is not None and session not in SESSION_KEYS:
        raise PatternError(name, f"'session' must be one of {', '.join(SESSION_KEYS)}, got {session!r}")
    if session is not None and kind not in ("login", "logout"):
        raise PatternError(name, "'session' is only for login and logout entries")
    if ip_from is not None and ip_from != "connect":
        raise PatternError(name, f"'ip_from' can only be \"connect\", got {ip_from!r}")
    if ip_from is not None and kind not in ("login", "fail", "end"):
        raise PatternError(name, "'ip_from' is only for login, fail and end entries "
                                 "(the second line of a two-line login)")
    if kind == "end" and ip_from is None:
        raise PatternError(name, "an 'end' entry only cancels a connect line: it needs ip_from = \"connect\"")
    if ("session" in groups) != (session == "group"):
        raise PatternError(
            name, "a named group 'session' and session = \"group\" go together (the group is the session's key)"
        )
    if session == "ip" and "ip" not in groups:
        raise PatternError(name, "session = \"ip\" needs a named group 'ip'")
    if ip_from is not None:
        if "ip" in groups:
            raise PatternError(name, "with ip_from = \"connect\" the address is never taken from this line: "
                                     "no group 'ip'")
    elif "ip" not in groups and not (kind == "logout" and session in ("group", "pid")):
        raise PatternError(
            name,
            "regex has no named group 'ip' (write (?P<ip>...)); only a two-line entry (ip_from) or a "
            "logout keyed by session = \"group\" or \"pid\" may leave it out",
        )


def _sample_list(name: str, raw: Mapping[str, Any]) -> list[Any]:
    """The raw samples of an entry."""
    samples = raw.get("samples")
    if not isinstance(samples, list) or not samples:
        raise PatternError(name, "needs 'samples': [[pattern.samples]] lines it must and must not report")
    return samples


def _parse_sample(pattern: Pattern, raw: Any, number: int) -> Sample:
    """Check one raw sample of an entry."""
    name = pattern.name
    if not isinstance(raw, Mapping):
        raise PatternError(name, f"sample {number}: expected a table")
    unknown = sorted(set(raw) - set(_SAMPLE_KEYS))
    if unknown:
        raise PatternError(name, f"sample {number}: unknown key {unknown[0]!r} (known: {', '.join(_SAMPLE_KEYS)})")
    message = raw.get("message")
    if not isinstance(message, str):
        raise PatternError(name, f"sample {number}: 'message' must be a string")
    program = raw.get("program", pattern.programs[0])
    if not isinstance(program, str) or not program:
        raise PatternError(name, f"sample {number}: 'program' must be a non-empty string")
    event = raw.get("event")
    if event not in (pattern.kind, NO_EVENT):
        raise PatternError(name, f"sample {number}: 'event' must be {pattern.kind!r} or {NO_EVENT!r}, got {event!r}")
    for key in ("ip", "user", "session", "note"):
        if key in raw and not isinstance(raw[key], str):
            raise PatternError(name, f"sample {number}: {key!r} must be a string")
    ip = raw.get("ip")
    if event == NO_EVENT:
        if ip is not None or "user" in raw or "session" in raw:
            raise PatternError(name, f"sample {number}: a sample with event = \"none\" has no ip, user or session")
        return Sample(program, message, None, note=raw.get("note", ""))
    if "ip" not in pattern.regex.groupindex:
        if ip is not None:
            raise PatternError(name, f"sample {number}: the regex has no 'ip' group, so the sample has no 'ip'")
        return Sample(program, message, event, None, raw.get("user"), raw.get("note", ""), raw.get("session"))
    if ip is None:
        raise PatternError(name, f"sample {number}: needs the 'ip' the line must give")
    if normalise_ip(ip) != ip:
        raise PatternError(
            name,
            f"sample {number}: write 'ip' as pbsyslog reports it ({normalise_ip(ip)!r}), got {ip!r}",
        )
    return Sample(program, message, event, ip, raw.get("user"), raw.get("note", ""), raw.get("session"))


def _check_sample(pattern: Pattern, sample: Sample, number: int) -> None:
    """Raise PatternError unless the entry, on its own, gives the sample's expected result."""
    got = pattern.apply(sample.message) if pattern.handles(sample.program) else None
    if sample.event is None:
        if got is not None:
            raise PatternError(
                pattern.name,
                f"sample {number} ({_short(sample.message)}) must not match, "
                f"but gives {got.kind} {got.ip}",
            )
        return
    if not pattern.handles(sample.program):
        raise PatternError(
            pattern.name, f"sample {number}: program {sample.program!r} is not in 'programs'"
        )
    said = "nothing" if got is None else f"{got.kind} {got.ip or '(no address)'}"
    if got is None or (got.kind, got.ip) != (sample.event, sample.ip):
        raise PatternError(
            pattern.name,
            f"sample {number} ({_short(sample.message)}) must give {sample.event} "
            f"{sample.ip or '(no address)'}, gives {said}",
        )
    if sample.session is not None and got.session != sample.session:
        raise PatternError(
            pattern.name,
            f"sample {number} ({_short(sample.message)}) must give session {sample.session!r}, gives {got.session!r}",
        )
    if sample.user is not None and got.user != sample.user:
        raise PatternError(
            pattern.name,
            f"sample {number} ({_short(sample.message)}) must give user {sample.user!r}, gives {got.user!r}",
        )
