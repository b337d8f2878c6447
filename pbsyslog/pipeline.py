"""Pipeline: one frame -> syslog message -> pattern -> policy -> tracker.

Contract: pure; takes ``now`` as an argument and does no I/O.  Bad input is
counted and dropped, never raised: a frame that is not syslog, a line that
matches no pattern, a login for an address that may never relay.  The
caller (``service.py``) turns the returned additions into map writes.

Sessions (logout tracking, unless ``logout_tracking`` is off: then every
login is grace only and logout lines are just counted).  A login entry with ``session`` set opens a
session in the tracker, but only if the table has an enabled logout entry
of the same group with the same ``session`` kind (else nothing could ever
close it).  The key says how a logout finds its login:
  * "group": (host, group, the regex's `session` text): Dovecot's session id,
    which its logout line carries without any address;
  * "ip":    (host, program, address), counted: Courier, Perdition,
    solid-pop3d, whose logout lines carry the address;
  * "pid":   (host, program, pid): daemons with one process per connection.

Resent lines.  rsyslog resends, after a reconnect, what it had sent into
the broken connection: the same frame, byte for byte, possibly after
pbsyslog has handled it.  A login that opens a session names its line to
the tracker by the frame's ``hash()`` (SipHash with a per-process key: a
sender cannot make two different lines collide on purpose; and one int per
open session keeps memory bounded by max_sessions).  The tracker takes a
login whose line is that of an open session under the same key as that
login delivered again, and changes nothing (tracker.py's header has the
exact rule); ``counters.logins`` still counts it, ``tracker.repeated``
too.  So a resent login opens no second session, for every kind above,
and for "ip" no stray counted session is left open after the one logout
(it held the address for max_session).  Two logins with different lines
are two sessions, even in the same second from the same address (two
clients behind one NAT address: Courier's and Perdition's lines differ by
the client's port, solid-pop3d's and popa3d's by the pid, Dovecot's by the
session id); only byte-identical lines (a daemon that logs neither port
nor pid, through a sender that adds no timestamp) are taken as one, which
can only start a grace early.  Only logins that open a session are hashed:
other lines cost nothing more.  After a restart the journal gives back
each session's start but not its line: a resent line is then known by its
time alone, which works when ``when`` is the sender's own zoned timestamp
(rsyslog's RFC 5424 and RFC 3339 templates, to the microsecond), not for
an RFC 3164 line nor one stamped in the future (each delivery counts from
when it arrives).  A login that opens no session is not remembered: a
resent one counts again, from its own zoned timestamp (so it changes
nothing) or from its delivery.

Two-line logins.  A "connect" line remembers its address under
(host, program, pid) in ``Connections`` (bounded in number and age); the
next matched line of the same key takes it: a login with ip_from =
"connect" gets its address from it, any other line (failure, end, a
one-line login) just discards it.  A connect line without a pid is
ignored.  Matching never looks at the facility.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import NamedTuple

import attrs

from pbsyslog.config import Config
from pbsyslog.patterns import OriginRule, Pattern, PatternTable, load_origins
from pbsyslog.policy import NeverList
from pbsyslog.syslog import MalformedMessage, parse
from pbsyslog.tracker import Change, Tracker


@attrs.define
class Counters:
    """What the pipeline has seen since start-up."""

    frames: int = 0
    malformed: int = 0
    logins: int = 0
    failures: int = 0
    refused: int = 0
    stale: int = 0
    full: int = 0
    wrong_host: int = 0
    logouts: int = 0  # logouts that closed an open session
    unmatched_logouts: int = 0  # logouts (of tracked kinds) with no open session: nothing changed
    connects: int = 0  # two-line connect lines remembered
    unpaired: int = 0  # two-line logins with no (fresh) connect line: nothing authorised
    # reason ("special", "never", "mynetworks") -> logins ignored for it
    ignored: dict[str, int] = attrs.Factory(dict)
    # (pattern, event kind) -> lines matched
    matches: dict[tuple[str, str], int] = attrs.Factory(dict)


# The longest MSG a login line may have.  No daemon writes a login line
# near this long (the corpus' longest is about 200 characters; a 255-byte
# user name adds little more), while a line cut by a relay (at 1024, 2048 or
# 8096 bytes) is always longer: a cut line can end right after text a user
# name smuggled in (status="ok", "log on successful from ADDR") and read as
# a login.  Such a line is refused, never authorised.
MAX_LOGIN_MESSAGE = 640


class Moved(NamedTuple):
    """A line moved ``ip``'s deadline: the map and the journal must follow."""

    ip: str
    pattern: str
    change: Change


class Refused(NamedTuple):
    """A login that authorised nothing, and why: a never-rule ("special", "never", "mynetworks") or "full"."""

    ip: str
    reason: str


# What one frame did: None for nothing the service must act on (most lines).
Outcome = Moved | Refused | None


class Connections:
    """Two-line logins: the address of each connection's connect line, until its next line.

    Keyed by (host, program, pid).  Bounded: at most ``max_pending``
    entries (a flood of connect lines evicts the oldest) and none older
    than ``max_age`` seconds is ever used, so a pid reused later never
    inherits an old address; a new connect line for a key replaces the old.
    """

    def __init__(self, max_pending: int = 10_000, max_age: float = 300.0) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self.max_pending = max_pending
        self.max_age = max_age
        self.evicted = 0
        # Insertion order is age order (a replaced key is moved to the end).
        self._pending: dict[Hashable, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def connect(self, key: Hashable, ip: str, now: float) -> None:
        """Remember that connection ``key`` came from ``ip``."""
        pending = self._pending
        pending.pop(key, None)
        pending[key] = (ip, now)
        self._prune(now)
        while len(pending) > self.max_pending:
            del pending[next(iter(pending))]
            self.evicted += 1

    def take(self, key: Hashable, now: float) -> str | None:
        """Forget connection ``key``; return its address if its connect line is fresh enough."""
        item = self._pending.pop(key, None)
        if item is None:
            return None
        ip, since = item
        if not 0 <= now - since <= self.max_age:
            return None
        return ip

    def _prune(self, now: float) -> None:
        pending = self._pending
        cutoff = now - self.max_age
        while pending:
            key = next(iter(pending))
            if pending[key][1] >= cutoff:
                break
            del pending[key]


class Pipeline:
    """Feeds frames through parsing and matching into the tracker."""

    @classmethod
    def from_config(cls, config: Config, table: PatternTable, never: NeverList) -> Pipeline:
        """The pipeline ``config`` describes, with a fresh tracker, for ``table`` and the ``never`` rules."""
        return cls(
            table, Tracker(config.grace, config.max_session), config.authorise_loopback, config.max_tracked,
            config.max_pending, config.pending_age, config.logout_tracking, never=never,
            origins=load_origins(config.extra_origins) if config.require_origin else None,
        )

    def __init__(
        self,
        table: PatternTable,
        tracker: Tracker,
        authorise_loopback: bool = False,
        max_tracked: int = 1_000_000,
        max_pending: int = 10_000,
        pending_age: float = 300.0,
        logout_tracking: bool = True,
        never: NeverList | None = None,
        origins: Mapping[str, OriginRule] | None = None,
    ) -> None:
        self.table = table
        self.tracker = tracker
        # Who may never be authorised; without a NeverList, the special
        # ranges only (loopback as authorise_loopback says).
        self.never = never if never is not None else NeverList(authorise_loopback=authorise_loopback)
        # require_origin: each group's rule for who may write its lines; None: not required.
        self.origins = origins
        self.max_tracked = max_tracked
        self.connections = Connections(max_pending, pending_age)
        self.logout_tracking = logout_tracking
        self.counters = Counters()

    def feed(self, frame: bytes, now: float, hostnames: frozenset[str] | None = None) -> Outcome:
        """Handle one frame: ``Moved`` when it moved an IP's deadline, ``Refused`` for a login not authorised.

        ``hostnames``, when given, are the syslog HOSTNAMEs the listener
        accepts: a message from any other host is counted and dropped.
        """
        counters = self.counters
        counters.frames += 1
        # Most lines come from programs no entry handles (or do not start as
        # any entry's line does): drop them on their undecoded header, before
        # building a message.  Only without pinned hostnames: a line from the
        # wrong host must still be counted as such.
        if hostnames is None and self.table.ignores(frame):
            return None
        try:
            message = parse(frame)
        except MalformedMessage:
            counters.malformed += 1
            return None
        host = (message.hostname or "").lower()
        if hostnames is not None and host not in hostnames:
            counters.wrong_host += 1
            return None
        table = self.table
        event = table.classify(message)
        if event is None:
            return None
        kind = event.kind
        key = (event.pattern, kind)
        counters.matches[key] = counters.matches.get(key, 0) + 1
        entry = table.by_name[event.pattern]
        ip = event.ip

        connection = (host, message.program, message.pid) if message.pid is not None else None
        if kind == "connect":
            if connection is not None and ip is not None:
                counters.connects += 1
                self.connections.connect(connection, ip, now)
            return None
        # Any other line of a connection settles its connect line.
        earlier = self.connections.take(connection, now) if connection is not None else None
        if entry.ip_from is not None:
            ip = earlier
        if kind == "fail":
            counters.failures += 1
            return None
        if kind == "end":
            return None

        # A sender's own timestamp may shorten an authorisation, never extend
        # it: a login delivered late (say from an rsyslog disk queue after an
        # outage) counts from when it happened, and one older than the grace
        # authorises nothing (even one that opens a session: its logout may
        # be in the same backlog); a timestamp in the future counts as now.
        # Only timestamps that carry a zone are used: an RFC 3164 stamp has
        # none, and guessing the sender's zone wrong would refuse every login.
        when = now
        stamp = message.timestamp
        if stamp is not None and stamp.tzinfo is not None:
            sent = stamp.timestamp()
            if sent < now:
                when = sent
        tracker = self.tracker

        if kind == "logout":
            if not self.logout_tracking:
                return None
            session = _session_key(entry, event.session, ip, host, message.program, message.pid)
            if session is None:
                return None
            closed = tracker.logout(session, when)
            if closed is None:
                counters.unmatched_logouts += 1
                return None
            counters.logouts += 1
            closed_ip, change = closed
            return None if change is None else Moved(closed_ip, event.pattern, change)

        # kind == "login"
        if ip is None:
            counters.unpaired += 1
            return None
        counters.logins += 1
        if len(message.message) > MAX_LOGIN_MESSAGE:
            counters.refused += 1
            counters.ignored["too long"] = counters.ignored.get("too long", 0) + 1
            return Refused(ip, "too long")
        origins = self.origins
        if origins is not None:
            rule = origins.get(entry.group)
            if rule is None or not rule.allows(message.origin):
                counters.refused += 1
                counters.ignored["origin"] = counters.ignored.get("origin", 0) + 1
                return Refused(ip, "origin")
        reason = self.never.reason(ip)
        if reason is not None:
            counters.refused += 1
            counters.ignored[reason] = counters.ignored.get(reason, 0) + 1
            return Refused(ip, reason)
        if when + tracker.grace <= now:
            counters.stale += 1
            return None
        if len(tracker) >= self.max_tracked and ip not in tracker:
            # Full: never evict a live authorisation to make room; the new
            # client is not authorised (counted; the service logs it loudly).
            counters.full += 1
            return Refused(ip, "full")
        session = None
        if self.logout_tracking and entry.session is not None and (entry.group, entry.session) in table.closable:
            session = _session_key(entry, event.session, ip, host, message.program, message.pid)
        if session is None:
            change = tracker.login(ip, when, event.pattern)
        else:
            # The frame's hash names the line: a resent line is the same login (module header).
            change = tracker.login(ip, when, event.pattern, session, entry.session == "ip", hash(frame))
        if change is None:
            return None
        return Moved(ip, event.pattern, change)


def _session_key(
    entry: Pattern, text: str | None, ip: str | None, host: str, program: str | None, pid: str | None
) -> Hashable | None:
    """The key under which a login of ``entry`` opens, or a logout closes, a session; None: none."""
    how = entry.session
    if how == "group":
        return None if text is None else ("group", host, entry.group, text)
    if how == "ip":
        return None if ip is None else ("ip", host, program, ip)
    if how == "pid":
        return None if pid is None else ("pid", host, program, pid)
    return None
