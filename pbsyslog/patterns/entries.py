"""Checking the pattern table's entries: a raw entry (the data file's shape) -> a ``Pattern``.

What it does: checks one ``[[pattern]]`` entry as ``patterns.toml`` and the
admin's config write it (its keys, its name and group, its kind and
programs, its session and ip_from keys), compiles its regex and checks its
named groups, reads its ``[[pattern.samples]]`` and checks that the entry on
its own gives each sample's expected result; and refuses two entries of one
name.

What it must not do: accept an unknown key, a regex that does not compile
or has named groups other than `ip`, `user` and `session`, an entry that
lacks the `ip` group its kind needs, an entry without both a line it must
report and one it must not, or a sample the entry does not give as
written.  It does no I/O and imports nothing from ``twisted.internet``.

How it fails: ``parse_entry`` and ``check_unique`` raise ``PatternError``
naming the entry (or, for an entry without a usable name, its position)
and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pbsyslog.patterns.model import ENTRY_KINDS, SESSION_KEYS, Pattern, PatternError, Sample, normalise_ip

__all__ = ["NO_EVENT", "check_unique", "parse_entry", "shorten"]

NO_EVENT = "none"

_ENTRY_KEYS = ("name", "group", "kind", "programs", "regex", "session", "ip_from", "description", "samples")
_SAMPLE_KEYS = ("message", "program", "event", "ip", "user", "session", "note")
_GROUP_NAMES = frozenset({"ip", "user", "session"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def check_unique(patterns: Sequence[Pattern]) -> None:
    """Refuse two entries of one name."""
    seen: set[str] = set()
    for pattern in patterns:
        if pattern.name in seen:
            raise PatternError(pattern.name, "two entries have this name")
        seen.add(pattern.name)


def shorten(message: str) -> str:
    """A sample line shortened for an error message."""
    return repr(message if len(message) <= 60 else message[:57] + "...")


def parse_entry(raw: Any, index: int, what: str = "pattern") -> Pattern:
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
                f"sample {number} ({shorten(sample.message)}) must not match, "
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
            f"sample {number} ({shorten(sample.message)}) must give {sample.event} "
            f"{sample.ip or '(no address)'}, gives {said}",
        )
    if sample.session is not None and got.session != sample.session:
        raise PatternError(
            pattern.name,
            f"sample {number} ({shorten(sample.message)}) must give session {sample.session!r}, gives {got.session!r}",
        )
    if sample.user is not None and got.user != sample.user:
        raise PatternError(
            pattern.name,
            f"sample {number} ({shorten(sample.message)}) must give user {sample.user!r}, gives {got.user!r}",
        )


def nested_repeat(regex: re.Pattern[str]) -> bool:
    """Say whether ``regex`` repeats (more than once) something that itself repeats: ``(a+)+``, ``(?:x*y)*``.

    Such a regex can take time exponential (or polynomial of high degree) in
    the line's length to fail.  Possessive quantifiers (``*+``) and atomic
    groups (``(?>...)``) never backtrack into what they matched, so what is
    inside them counts as not repeated.
    """
    from re import _constants as sre  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    def walk(items: Any, inside: bool) -> bool:
        for op, av in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                _, high, sub = av
                many = high > 1
                if inside and many:
                    return True
                if walk(sub, inside or many):
                    return True
            elif op == sre.SUBPATTERN:
                if walk(av[-1], inside):
                    return True
            elif op == sre.BRANCH:
                if any(walk(branch, inside) for branch in av[1]):
                    return True
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                if walk(av[1], inside):
                    return True
        return False

    return walk(_parser.parse(regex.pattern, regex.flags), False)
