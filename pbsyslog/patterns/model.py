"""The records of the pattern table: an entry, the events it reports, the address it captures.

What it does: defines ``Pattern`` (one entry: one regex for one kind of
event of some programs, with its samples), ``Sample``, ``AuthEvent`` (what
one line says about one client address), ``PatternError`` and the kinds an
entry may have; turns a regex match into an ``AuthEvent`` (equal events of
short lines shared through a bounded cache); and ``normalise_ip``, which
validates a captured address and writes it as Postfix looks it up.

What it must not do: report an address that is not one (a bad capture drops
the line), or keep more than a bounded number of events.  It does no I/O and
imports nothing from ``twisted.internet``.

How it fails: it never raises for any message or address text: a match
whose `ip` group captured something that is not an address gives no event,
and ``normalise_ip`` gives None.  ``PatternError`` is what the rest of the
package raises for an entry that cannot be used.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import attrs

from pbsyslog.addresses import unmapped
from pbsyslog.syslog import Origin

__all__ = [
    "CACHED_LINE",
    "ENTRY_KINDS",
    "KINDS",
    "SESSION_KEYS",
    "AuthEvent",
    "Pattern",
    "PatternError",
    "Sample",
    "basename",
    "cached_event",
    "new_event",
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
        return program in self.programs or basename(program) in self.programs

    def apply(self, message: str) -> AuthEvent | None:
        """Match this entry's regex against one MSG part (the program is not checked)."""
        found = self.regex.match(message)
        if found is None:
            return None
        groups = self.regex.groupindex
        return cached_event(
            self.kind, self.name, groups.get("ip", 0) - 1, groups.get("user", 0) - 1,
            groups.get("session", 0) - 1, found.groups(),
        )


def basename(program: str) -> str:
    """The last path component of a tag."""
    return program.rpartition("/")[2]


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


def new_event(
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
# at most CACHED_LINE characters.
CACHED_LINE = 300
cached_event = functools.lru_cache(maxsize=1024)(new_event)


@attrs.frozen
class OriginRule:
    """Who may write a group's lines on its host: the sender's uids and programs (``exe``), as the forwarder saw them.

    Compared with the ``Origin`` that pbsyslog's rsyslog snippets put into
    each message's STRUCTURED-DATA (from imuxsock's trusted properties).  An
    empty set places no condition; a rule always has at least one non-empty.
    """

    group: str
    uids: frozenset[str]
    exes: frozenset[str]

    def allows(self, origin: Origin | None) -> bool:
        """Say whether a line with ``origin`` may be this group's (None: the line has no origin: never)."""
        if origin is None:
            return False
        return (not self.uids or origin.uid in self.uids) and (not self.exes or origin.exe in self.exes)
