"""Tracker: which client IPs may relay, and until when.

Contract: pure bookkeeping, the single source of truth for every map.  Every
method that depends on time takes ``now`` (seconds, the service's receive
clock); nothing here reads a clock, logs, or touches a file.  The times are
the caller's: the pipeline passes a line's own zoned timestamp where it is
earlier than the line's receipt, else the receipt (pipeline.py).

Deadlines.  An IP's deadline is the latest of:
  * every login's time + grace (and any deadline restored after a restart);
  * every logout's time + grace, for a logout that closed an open session;
  * for each session still open: its login time + max_session + grace.
So an IP with an open session stays authorised while the session is open
(at most max_session: a session whose logout line was lost still ends), and
the grace starts at the last logout.  A login never shortens a deadline; a
logout may (that is its point); only ``expire`` takes an IP away.

Sessions.  A login may open a session under a key (the caller's: say
(host, daemon, session id)); a logout closes the session of its key and so
finds the IP even when its own line has none.  A logout whose key has no
open session changes nothing.  With ``counted`` a key holds several
sessions at once (keyed by address: each logout closes one); without, a key
is one session (a login of another address under it replaces it; another
login of the same address keeps the one session, started at the later of
the two times).  Open sessions are bounded (``max_sessions``): the oldest
is then forgotten as if its logout had been lost, i.e. its IP keeps that
session's full max_session deadline, never less.

Repeated logins (a line delivered twice: rsyslog resends what it sent into
a broken connection).  A login may name its ``line``: any hashable identity
of the line it came from (the pipeline passes a hash of the frame).  A
login of ``ip`` under a key that already holds an open session of ``ip`` is
that same login, delivered again, when
  * both lines are known and equal, or
  * either line is unknown (a session restored from the journal, which
    keeps no lines; a caller that gives none) and the two times are equal;
and then it changes nothing at all: no second session (the finding this
prevents: a counted key's extra session, which no logout closed, held the
IP for max_session), no later start, no floor raised by a late delivery, no
pattern (``repeated`` counts it).  This holds for every kind of key.  Two different
lines at the same time are two logins (two clients behind one NAT address
in the same second).  A line equal to none of the key's open sessions is a
new login, as always: so a resent login whose session a logout already
closed opens it again (rsyslog resends in order, so that logout's resent
line follows and closes it again).  The rule can only err towards fewer
sessions (two different lines with the same identity, or two unknown lines
at the same time: one session, whose first logout starts the grace while
the other client is still connected), which shortens a grant, never
extends it.  Lines are kept only for open sessions (one per session, so
bounded by ``max_sessions`` too); a login that opens no session is not
remembered and counts each time it is delivered, as before.

Persistence.  ``take_touched()`` returns (and forgets) the IPs whose
sessions or floor changed while they had sessions, even where the deadline
did not move (a logout closing one of two sessions): the service journals
them with ``sessions(ip)``, and ``restore`` takes the floor and sessions
back after a restart, so open-session counts survive it.

Expiry cost is proportional to what expires, not to what is tracked.  A
deadline is filed under its whole second (a bucket: a list of addresses;
the bucket keys are in a small heap of ints).  ``expire(now)`` opens every
bucket whose second has begun: entries already due are collected, the
others go into a small "near" heap of (deadline, ip); the heap's due head
entries join them, and the lot is sorted once, so IPs leave in deadline
order (a sort of 1,000 tuples costs half of pushing and popping them).
Why not one heap of (deadline, ip) for everything: with 1M tracked IPs
every pop walked twenty levels of tuples scattered over the
memory, a cache miss each, which made a large expiry tick slow; a bucket entry is
also one pointer instead of a 64-byte tuple.  Deletion is lazy: a moved
deadline leaves its old entry behind (a refresh within the same second
reuses it), entries whose IP no longer has that deadline are skipped, and
everything is refiled when stale entries outnumber live ones.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import math
from collections.abc import Hashable

_NEVER = float("-inf")
# The bucket of a deadline that has no whole second: -inf's is opened by the
# first expire; inf's and nan's in practice never.
_FAR = 1 << 62


class Change(enum.StrEnum):
    """How a call moved an IP's deadline (None where it did not move)."""

    ADDED = "added"  # newly authorised: the map must get it
    EXTENDED = "extended"  # later than before
    SHORTENED = "shortened"  # earlier than before (a logout started the grace)


def _second(deadline: float) -> int:
    """The bucket (whole second) a deadline is filed under."""
    try:
        return math.floor(deadline)
    except (OverflowError, ValueError):  # inf, -inf, nan
        return -_FAR if deadline < 0 else _FAR


class _Open:
    """The open sessions under one key: their IP, login times (oldest first) and login lines (None: unknown)."""

    __slots__ = ("ip", "starts", "lines")

    def __init__(self, ip: str, start: float, line: Hashable | None) -> None:
        self.ip = ip
        self.starts = [start]
        # lines[i] is the identity of the line that opened starts[i].
        self.lines = [line]

    def repeats(self, when: float, line: Hashable | None) -> bool:
        """Whether a login at ``when`` from ``line`` is one of these sessions' logins again (see the module header)."""
        if line is None:
            return when in self.starts
        lines = self.lines
        if line in lines:
            return True
        # A session whose line is unknown (restored): the same time.
        return None in lines and any(
            known is None and start == when for start, known in zip(self.starts, lines, strict=True)
        )


class Tracker:
    """Map of client IP -> deadline, with a grace period per login and open-session tracking."""

    def __init__(self, grace: float, max_session: float = 86400.0, max_sessions: int = 100_000) -> None:
        if grace <= 0:
            raise ValueError("grace must be positive")
        if max_session <= 0:
            raise ValueError("max_session must be positive")
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.grace = grace
        self.max_session = max_session
        self.max_sessions = max_sessions
        self._deadline: dict[str, float] = {}
        self._pattern: dict[str, str] = {}
        # Expiry index (see the module header): second -> IPs, the seconds
        # in a heap, the near heap of opened seconds' entries, the last
        # second opened, and how many entries all of them hold (stale ones
        # included).
        self._buckets: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        self._near: list[tuple[float, str]] = []
        self._opened = -_FAR - 1
        self._entries = 0
        # The deadline an IP has earned whatever its open sessions do.
        self._floor: dict[str, float] = {}
        # key -> open sessions; insertion order is opening order (eviction).
        self._sessions: dict[Hashable, _Open] = {}
        self._keys: dict[str, set[Hashable]] = {}
        self._open = 0
        # Logins that repeated an open session's login (and changed nothing).
        self.repeated = 0
        # IPs whose sessions (or floor, while they have sessions) changed
        # since the last take_touched().
        self._touched: set[str] = set()

    def __len__(self) -> int:
        return len(self._deadline)

    def __contains__(self, ip: object) -> bool:
        return ip in self._deadline

    def deadline(self, ip: str) -> float | None:
        """Return when ``ip`` stops being authorised, or None if it is not."""
        return self._deadline.get(ip)

    def ips(self) -> frozenset[str]:
        """Return the currently authorised IPs."""
        return frozenset(self._deadline)

    def pattern(self, ip: str) -> str | None:
        """Return the name of the pattern whose login last set ``ip``'s deadline."""
        return self._pattern.get(ip)

    def entries(self) -> dict[str, tuple[float, str]]:
        """Return {ip: (deadline, pattern)} for every authorised IP."""
        return {ip: (d, self._pattern.get(ip, "")) for ip, d in self._deadline.items()}

    @property
    def open_count(self) -> int:
        """How many sessions are open, over all IPs."""
        return self._open

    def open_sessions(self, ip: str, now: float | None = None) -> int:
        """How many sessions of ``ip`` are open.

        Without ``now``, those past max_session count until they are cleaned
        up; with it, only those begun after now - max_session (what ``list``
        shows, running or not).
        """
        keys = self._keys.get(ip, ())
        if now is None:
            return sum(len(self._sessions[key].starts) for key in keys)
        cutoff = now - self.max_session
        return sum(1 for key in keys for start in self._sessions[key].starts if start > cutoff)

    def login(
        self,
        ip: str,
        now: float,
        pattern: str = "",
        session: Hashable | None = None,
        counted: bool = False,
        line: Hashable | None = None,
    ) -> Change | None:
        """Authorise ``ip`` until now + grace, and open a session under ``session`` if given.

        ``line`` identifies the login's line: a login that repeats one of
        the open sessions under ``session`` (see the module header) changes
        nothing and is counted in ``repeated``.  Returns ADDED for an IP
        that was not authorised, EXTENDED when its deadline moved, None
        when nothing changed.
        """
        if session is not None:
            entry = self._sessions.get(session)
            if entry is not None and entry.ip == ip and entry.repeats(now, line):
                self.repeated += 1
                return None
            self._raise_floor(ip, now + self.grace)
            self._open_session(ip, now, session, counted, entry, line)
        else:
            self._raise_floor(ip, now + self.grace)
            if ip in self._keys:
                self._touched.add(ip)
        change = self._update(ip, self._compute(ip))
        if change is not None or ip not in self._pattern:
            self._pattern[ip] = pattern
        return change

    def logout(self, session: Hashable, now: float) -> tuple[str, Change | None] | None:
        """Close one session open under ``session``; the grace of its IP starts now.

        Returns None when no session is open under that key (nothing
        changes), else (ip, change) with change SHORTENED (the deadline
        moved earlier), EXTENDED (later) or None.  Sessions already past
        max_session are closed as they were when their time ran out.
        """
        entry = self._sessions.get(session)
        if entry is None:
            return None
        ip = entry.ip
        cutoff = now - self.max_session
        while entry.starts and entry.starts[0] <= cutoff:
            self._close_oldest(session, entry, entry.starts[0] + self.max_session)
        if not entry.starts:
            return None
        self._close_oldest(session, entry, now)
        return ip, self._update(ip, self._compute(ip))

    def sessions(self, ip: str) -> tuple[float, list[tuple[Hashable, list[float]]]] | None:
        """``ip``'s floor and open sessions [(key, [start, ...])], or None when it has none."""
        keys = self._keys.get(ip)
        if not keys:
            return None
        return (self._floor.get(ip, _NEVER),
                [(key, list(self._sessions[key].starts)) for key in keys])

    def all_sessions(self) -> dict[str, tuple[float, list[tuple[Hashable, list[float]]]]]:
        """``sessions(ip)`` for every IP that has open sessions."""
        return {ip: self.sessions(ip) for ip in self._keys}  # type: ignore[misc]

    def take_touched(self) -> set[str]:
        """The IPs whose sessions or floor changed since the last call (see the module header)."""
        touched, self._touched = self._touched, set()
        return touched

    def restore(
        self,
        ip: str,
        deadline: float,
        pattern: str = "",
        floor: float | None = None,
        sessions: list[tuple[Hashable, list[float]]] = (),  # type: ignore[assignment]
    ) -> Change | None:
        """Authorise ``ip`` until ``deadline`` (state read back after a restart); as ``login``.

        With ``sessions`` (and their ``floor``), as ``sessions(ip)`` gave them
        before the restart, the IP's sessions are open again and its deadline
        is computed from them: a logout then closes them as before.
        """
        if sessions:
            return self._restore_sessions(ip, pattern, deadline if floor is None else floor, sessions)
        # _raise_floor + _compute inlined: a restart restores every entry
        # through here (1M of them), and an IP without open sessions (most
        # of them) has its floor as its deadline.
        floor = self._floor.get(ip, _NEVER)
        if deadline > floor:
            self._floor[ip] = floor = deadline
        change = self._update(ip, self._compute(ip) if ip in self._keys else floor)
        if change is not None or ip not in self._pattern:
            self._pattern[ip] = pattern
        return change

    def _restore_sessions(
        self, ip: str, pattern: str, floor: float, sessions: list[tuple[Hashable, list[float]]]
    ) -> Change | None:
        self._raise_floor(ip, floor)
        for key, starts in sessions:
            if not starts:
                continue
            entry = self._sessions.get(key)
            if entry is not None:
                # The same key under another IP (a journal edited by hand):
                # the old one ends as if its logout were lost.
                self._forget(key, entry)
            entry = self._sessions[key] = _Open(ip, 0.0, None)
            entry.starts = sorted(starts)
            entry.lines = [None] * len(starts)  # the journal keeps no lines
            self._keys.setdefault(ip, set()).add(key)
            self._open += len(starts)
        self._touched.add(ip)
        self._evict_over_limit()
        change = self._update(ip, self._compute(ip))
        if change is not None or ip not in self._pattern:
            self._pattern[ip] = pattern
        return change

    def remove(self, ip: str) -> bool:
        """Take ``ip``'s authorisation away now (an administrator's ``del``); False if it had none.

        Its open sessions are forgotten too: a later logout under their keys
        changes nothing, and a later login starts afresh.
        """
        if self._deadline.pop(ip, None) is None:
            return False
        self._pattern.pop(ip, None)  # its expiry entry is now stale and skipped by expire()
        self._drop(ip)
        self._touched.discard(ip)
        return True

    def expire(self, now: float) -> list[str]:
        """Remove and return every IP whose deadline is at or before ``now`` (and forget its sessions)."""
        deadlines = self._deadline
        seconds = self._seconds
        near = self._near
        push = heapq.heappush
        pop = heapq.heappop
        # What is due now, as (deadline, ip): sorted once at the end, which
        # is the order a heap would give them, for less than pushing and
        # popping each (an opened bucket is usually due as a whole).
        due: list[tuple[float, str]] = []
        while seconds and seconds[0] <= now:
            second = pop(seconds)
            self._opened = second
            stale = 0
            end = second + 1
            for ip in self._buckets.pop(second):
                deadline = deadlines.get(ip)
                # Still filed here: its deadline is in this second (the
                # range test is _second(deadline) == second for finite ones).
                if deadline is not None and (second <= deadline < end or _second(deadline) == second):
                    if deadline <= now:
                        due.append((deadline, ip))
                    else:
                        push(near, (deadline, ip))
                else:
                    stale += 1
            self._entries -= stale
        while near and near[0][0] <= now:
            due.append(pop(near))
        if not due:
            return []
        due.sort()
        self._entries -= len(due)
        removed: list[str] = []
        pattern = self._pattern
        floor = self._floor
        sessions = self._keys
        touched = self._touched
        for deadline, ip in due:
            # An IP filed twice (moved away and back) is removed once.
            if deadlines.get(ip) == deadline:
                del deadlines[ip]
                del pattern[ip]
                # Every session of this IP is past max_session (the deadline
                # was at least its start + max_session + grace).  _drop(),
                # inlined for the usual IP without sessions.
                floor.pop(ip, None)
                if ip in sessions:
                    self._drop(ip)
                if touched:
                    touched.discard(ip)  # nothing left to journal: bounded by what is tracked
                removed.append(ip)
        return removed

    # ----------------------------------------------------------- internals --

    def _drop(self, ip: str) -> None:
        """Forget the floor and every open session of an IP that is no longer authorised."""
        self._floor.pop(ip, None)
        for key in self._keys.pop(ip, ()):
            self._open -= len(self._sessions.pop(key).starts)

    def _raise_floor(self, ip: str, deadline: float) -> None:
        if deadline > self._floor.get(ip, _NEVER):
            self._floor[ip] = deadline

    def _compute(self, ip: str) -> float:
        """The deadline ``ip`` has earned: its floor, or the end of its latest open session."""
        deadline = self._floor.get(ip, _NEVER)
        keys = self._keys.get(ip)
        if keys:
            latest = max(self._sessions[key].starts[-1] for key in keys)
            deadline = max(deadline, latest + self.max_session + self.grace)
        return deadline

    def _open_session(
        self, ip: str, now: float, key: Hashable, counted: bool, entry: _Open | None, line: Hashable | None
    ) -> None:
        """Open a session of ``ip`` under ``key`` (whose sessions are ``entry``), not a repeat of one of them."""
        self._touched.add(ip)
        if entry is not None and entry.ip == ip and not counted:
            # Another login of the one session: still one, from the later time.
            if now >= entry.starts[0]:
                entry.starts[0] = now
                entry.lines[0] = line
            return
        if entry is not None and entry.ip != ip:
            # A key reused for another address: the old session keeps what
            # it earned, as if its logout had been lost.
            self._forget(key, entry)
            entry = None
        if entry is None:
            self._sessions[key] = _Open(ip, now, line)
            self._keys.setdefault(ip, set()).add(key)
        else:
            # Kept in order, so that the oldest is closed first.
            starts = entry.starts
            if starts[-1] <= now:
                starts.append(now)
                entry.lines.append(line)
            else:
                at = bisect.bisect_right(starts, now)
                starts.insert(at, now)
                entry.lines.insert(at, line)
        self._open += 1
        self._evict_over_limit()

    def _evict_over_limit(self) -> None:
        """Close the oldest open sessions, as if their logouts were lost, while more than max_sessions are open."""
        while self._open > self.max_sessions:
            oldest_key = next(iter(self._sessions))
            oldest = self._sessions[oldest_key]
            self._close_oldest(oldest_key, oldest, oldest.starts[0] + self.max_session)

    def _forget(self, key: Hashable, entry: _Open) -> None:
        """Drop every session under ``key`` as if their logouts were lost."""
        while entry.starts:
            self._close_oldest(key, entry, entry.starts[0] + self.max_session)

    def _close_oldest(self, key: Hashable, entry: _Open, ended: float) -> None:
        """Close the oldest session under ``key`` as having ended at ``ended``."""
        start = entry.starts.pop(0)
        del entry.lines[0]
        self._open -= 1
        self._touched.add(entry.ip)
        self._raise_floor(entry.ip, min(ended, start + self.max_session) + self.grace)
        if not entry.starts:
            del self._sessions[key]
            keys = self._keys[entry.ip]
            keys.discard(key)
            if not keys:
                del self._keys[entry.ip]

    def _update(self, ip: str, deadline: float) -> Change | None:
        previous = self._deadline.get(ip)
        if previous == deadline:
            return None
        self._deadline[ip] = deadline
        try:
            second = math.floor(deadline)  # _second(), inlined for its common case
        except (OverflowError, ValueError):
            second = _second(deadline)
        if second <= self._opened:
            heapq.heappush(self._near, (deadline, ip))
            self._entries += 1
        elif previous is None or _second(previous) != second:
            self._file(ip, second)
        # else: the entry filed for ``previous`` is in the same unopened
        # bucket, and opening a bucket reads the IP's deadline as it is then.
        if self._entries > 2 * len(self._deadline) + 1024:
            self._compact()
        if previous is None:
            return Change.ADDED
        return Change.EXTENDED if deadline > previous else Change.SHORTENED

    def _file(self, ip: str, second: int) -> None:
        """File ``ip`` under a bucket that has not been opened yet."""
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [ip]
            heapq.heappush(self._seconds, second)
        else:
            bucket.append(ip)
        self._entries += 1

    def _compact(self) -> None:
        """Refile every live deadline once, dropping the stale entries."""
        self._buckets = {}
        self._seconds = []
        self._near = []
        self._entries = 0
        opened = self._opened
        for ip, deadline in self._deadline.items():
            second = _second(deadline)
            if second <= opened:
                self._near.append((deadline, ip))
                self._entries += 1
            else:
                self._file(ip, second)
        heapq.heapify(self._near)
