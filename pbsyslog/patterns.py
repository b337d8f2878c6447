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
from typing import Any

import attrs

from pbsyslog.syslog import SyslogMessage

__all__ = [
    "KINDS",
    "AuthEvent",
    "Pattern",
    "PatternError",
    "PatternTable",
    "Sample",
    "builtin_entries",
    "load_table",
    "normalise_ip",
]

KINDS: tuple[str, ...] = ("login", "logout", "fail")
NO_EVENT = "none"

_ENTRY_KEYS = ("name", "group", "kind", "programs", "regex", "description", "samples")
_SAMPLE_KEYS = ("message", "program", "event", "ip", "user", "note")
_GROUP_NAMES = frozenset({"ip", "user"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# What an address may look like before ipaddress sees it: ASCII only (int()
# would take other scripts' digits), no zone id ("%eth0"), no spaces.
_ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")


class PatternError(ValueError):
    """A pattern table entry (or the choice of entries) that cannot be used."""

    def __init__(self, entry: str | None, reason: str) -> None:
        self.entry = entry
        self.reason = reason
        where = f"pattern {entry!r}" if entry is not None else "patterns"
        super().__init__(f"{where}: {reason}")


@attrs.frozen
class AuthEvent:
    """What one syslog line says about one client address."""

    kind: str
    ip: str
    pattern: str
    user: str | None = None


@attrs.frozen
class Sample:
    """A line an entry must report (``event`` is its kind) or must not (``event`` None)."""

    program: str
    message: str
    event: str | None
    ip: str | None = None
    user: str | None = None
    note: str = ""


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
        return _event(found, self.kind, self.name, "user" in self.regex.groupindex)


# One compiled rule as the hot loop wants it: bound match method, kind, name,
# whether the regex has a user group.
_Rule = tuple[Callable[[str], "re.Match[str] | None"], str, str, bool]


@attrs.frozen(eq=False)
class PatternTable:
    """The enabled entries, indexed by program name.

    Build it with ``from_entries`` or ``load_table``, which check the
    samples; the constructor itself takes already checked ``Pattern``s.
    """

    patterns: tuple[Pattern, ...]
    _dispatch: Mapping[str, tuple[_Rule, ...]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        dispatch: dict[str, list[_Rule]] = {}
        for pattern in self.patterns:
            rule = (pattern.regex.match, pattern.kind, pattern.name, "user" in pattern.regex.groupindex)
            for program in pattern.programs:
                dispatch.setdefault(program, []).append(rule)
        object.__setattr__(self, "_dispatch", {p: tuple(r) for p, r in dispatch.items()})

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
        """Return the event this message reports, or None."""
        rules = self._dispatch.get(msg.program)  # type: ignore[arg-type]
        if rules is None:
            rules = self._by_basename(msg.program)
            if rules is None:
                return None
        text = msg.message
        for regex_match, kind, name, has_user in rules:
            found = regex_match(text)
            if found is not None:
                # The line is this entry's; a bad address drops it rather
                # than letting a later entry have a go at it.
                return _event(found, kind, name, has_user)
        return None

    def _rules_for(self, program: str | None) -> tuple[_Rule, ...]:
        """The rules that lines of ``program`` go through (the same routing as ``match``)."""
        rules = self._dispatch.get(program)  # type: ignore[arg-type]
        if rules is None:
            rules = self._by_basename(program)
        return rules or ()

    def _by_basename(self, program: str | None) -> tuple[_Rule, ...] | None:
        """The rules for a tag written as a path (/usr/sbin/ipop3d), if its last part has any."""
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
    if _ADDRESS_TEXT.match(text) is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# The same few addresses log in again and again; parsing one with ipaddress
# costs more than the regex that found it.  Bounded, so a flood of distinct
# addresses costs memory for 4096 of them at most.
_normalise_cached = functools.lru_cache(maxsize=4096)(normalise_ip)


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


def _event(found: re.Match[str], kind: str, name: str, has_user: bool) -> AuthEvent | None:
    """Turn a regex match into an event, or None when the captured address is not one."""
    ip = _normalise_cached(found.group("ip"))
    if ip is None:
        return None
    user = found.group("user") if has_user else None
    return AuthEvent(kind, ip, name, user or None)


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
                kept = [p for p, r in zip(merged, replaced) if not r]
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
            routed = [by_name[name] for _, _, name, _ in table._rules_for(sample.program)]
            if sample.event is not None and owner not in routed:
                raise PatternError(
                    owner.name,
                    f"sample {number}: the table sends program {sample.program!r} to "
                    f"{', '.join(p.name for p in routed) or 'no entry'}, not to this one",
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
    if kind not in KINDS:
        raise PatternError(name, f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
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

    regex = _compile(name, raw.get("regex"))
    pattern = Pattern(
        name=name,
        group=group,
        programs=tuple(dict.fromkeys(programs)),
        kind=kind,
        regex=regex,
        description=description,
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
    if "ip" not in compiled.groupindex:
        raise PatternError(name, "regex has no named group 'ip' (write (?P<ip>...))")
    others = sorted(set(compiled.groupindex) - _GROUP_NAMES)
    if others:
        raise PatternError(name, f"regex has named group {others[0]!r}; only 'ip' and 'user' are read")
    return compiled


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
    for key in ("ip", "user", "note"):
        if key in raw and not isinstance(raw[key], str):
            raise PatternError(name, f"sample {number}: {key!r} must be a string")
    ip = raw.get("ip")
    if event == NO_EVENT:
        if ip is not None or "user" in raw:
            raise PatternError(name, f"sample {number}: a sample with event = \"none\" has no ip or user")
        return Sample(program, message, None, note=raw.get("note", ""))
    if ip is None:
        raise PatternError(name, f"sample {number}: needs the 'ip' the line must give")
    if normalise_ip(ip) != ip:
        raise PatternError(
            name,
            f"sample {number}: write 'ip' as pbsyslog reports it ({normalise_ip(ip)!r}), got {ip!r}",
        )
    return Sample(program, message, event, ip, raw.get("user"), raw.get("note", ""))


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
    said = "nothing" if got is None else f"{got.kind} {got.ip}"
    if got is None or (got.kind, got.ip) != (sample.event, sample.ip):
        raise PatternError(
            pattern.name,
            f"sample {number} ({_short(sample.message)}) must give {sample.event} {sample.ip}, gives {said}",
        )
    if sample.user is not None and got.user != sample.user:
        raise PatternError(
            pattern.name,
            f"sample {number} ({_short(sample.message)}) must give user {sample.user!r}, gives {got.user!r}",
        )
