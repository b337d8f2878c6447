"""Loading the pattern table: the packaged entries, the admin's own, and which of them are enabled.

What it does: reads the packaged ``pbsyslog/patterns.toml``
(``builtin_entries``), checks its entries and the admin's ``[[pattern]]``
entries, puts the admin's in (replacing a built-in entry or group of the
same name, or appended), keeps the groups and entries ``enabled`` names,
and builds the checked table (``load_table``).

What it must not do: read any file but the packaged table, or build a
table with no entry enabled (nothing would ever authorise).  It imports
nothing from ``twisted.internet``.

How it fails: ``load_table`` raises ``PatternError`` naming the entry and
the reason: an entry or sample that does not check, two entries of one
name, an enabled name that is no entry or group, or nothing enabled;
``builtin_entries`` raises it for a packaged file that is not valid TOML or
has no entries.
"""

from __future__ import annotations

import functools
import importlib.resources
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pbsyslog.patterns.entries import check_unique, nested_repeat, parse_entry
from pbsyslog.patterns.model import OriginRule, Pattern, PatternError
from pbsyslog.patterns.table import PatternTable, checked_table

__all__ = ["builtin_entries", "load_origins", "load_table"]


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
    builtin = [parse_entry(entry, index) for index, entry in enumerate(builtin_entries())]
    extras = [parse_entry(entry, index, "extra pattern") for index, entry in enumerate(extra)]
    for pattern in extras:
        # The built-in entries are checked by a test that times each on
        # hostile lines (tests/test_regex_bounds.py); an admin's own entry
        # gets the stricter, structural rule.
        if nested_repeat(pattern.regex):
            raise PatternError(pattern.name, "regex repeats a part that itself repeats, e.g. (a+)+ or (?:x*y)*: "
                               "on a hostile line its matching time explodes; write the inner part so it "
                               "cannot backtrack (possessive *+ ++ or an atomic group (?>...)) or without "
                               "the outer repetition")
    check_unique(extras)
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
    return checked_table(merged)


@functools.cache
def _builtin_text() -> str:
    """Read the packaged data file once."""
    return importlib.resources.files("pbsyslog").joinpath("patterns.toml").read_text(encoding="utf-8")


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



def load_origins(extra: Iterable[Mapping[str, Any]] = ()) -> dict[str, OriginRule]:
    """The origin rule of each group: the packaged ``[[origin]]`` tables, each replaced by the admin's for its group."""
    try:
        packaged = tomllib.loads(_builtin_text()).get("origin", [])
    except tomllib.TOMLDecodeError as e:
        raise PatternError(None, f"the packaged patterns.toml is not valid TOML: {e}") from None
    rules = {rule.group: rule for rule in (_origin_rule(raw, "packaged origin") for raw in packaged)}
    rules.update((rule.group, rule) for rule in (_origin_rule(raw, "origin") for raw in extra))
    return rules


def _origin_rule(raw: Any, what: str) -> OriginRule:
    """Check one ``[[origin]]`` table: group, and uids (numbers) and/or exe (absolute paths)."""
    if not isinstance(raw, Mapping):
        raise PatternError(None, f"{what}: expected a table with group, uids and/or exe")
    group = raw.get("group")
    if not isinstance(group, str) or not group:
        raise PatternError(None, f"{what}: 'group' must name a pattern group")
    unknown = sorted(set(raw) - {"group", "uids", "exe"})
    if unknown:
        raise PatternError(group, f"{what}: unknown key {unknown[0]!r} (known: exe, group, uids)")
    uids = raw.get("uids", [])
    exes = raw.get("exe", [])
    if not isinstance(uids, list) or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in uids):
        raise PatternError(group, f"{what}: 'uids' must be a list of user ids (numbers)")
    if not isinstance(exes, list) or not all(isinstance(e, str) and e.startswith("/") for e in exes):
        raise PatternError(group, f"{what}: 'exe' must be a list of absolute paths")
    if not uids and not exes:
        raise PatternError(group, f"{what}: give uids, exe or both (an empty rule would let anyone through)")
    return OriginRule(group, frozenset(str(u) for u in uids), frozenset(exes))
