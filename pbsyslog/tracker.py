"""Tracker: which client IPs may relay, and until when.

Contract: pure bookkeeping, the single source of truth for every map.  Every
method that depends on time takes ``now`` (seconds, the service's receive
clock); nothing here reads a clock, logs, or touches a file.  Deadlines are
based on when a login was received, never on a sender's timestamp.

Expiry cost is proportional to what expires, not to what is tracked: a
min-heap of (deadline, ip) with lazy deletion.  A refreshed IP leaves its old
heap entry behind; ``expire`` skips entries whose deadline no longer matches,
and the heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq


class Tracker:
    """Map of client IP -> deadline, with a grace period per login."""

    def __init__(self, grace: float) -> None:
        if grace <= 0:
            raise ValueError("grace must be positive")
        self.grace = grace
        self._deadline: dict[str, float] = {}
        self._pattern: dict[str, str] = {}
        self._heap: list[tuple[float, str]] = []

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

    def login(self, ip: str, now: float, pattern: str = "") -> str | None:
        """Authorise ``ip`` until now + grace.

        Returns "added" for an IP that was not authorised, "extended" when
        its deadline moved, None when nothing changed.
        """
        return self._set(ip, now + self.grace, pattern)

    def restore(self, ip: str, deadline: float, pattern: str = "") -> str | None:
        """Authorise ``ip`` until ``deadline`` (state read back after a restart); as ``login``."""
        return self._set(ip, deadline, pattern)

    def _set(self, ip: str, deadline: float, pattern: str) -> str | None:
        previous = self._deadline.get(ip)
        if previous is not None and previous >= deadline:
            # A clock that stepped back must not shorten a live authorisation
            # here; only expire() takes IPs away.
            return None
        self._deadline[ip] = deadline
        self._pattern[ip] = pattern
        heapq.heappush(self._heap, (deadline, ip))
        if len(self._heap) > 2 * len(self._deadline) + 1024:
            self._compact()
        return "added" if previous is None else "extended"

    def remove(self, ip: str) -> bool:
        """Take ``ip``'s authorisation away now (an administrator's ``del``); False if it had none."""
        if self._deadline.pop(ip, None) is None:
            return False
        self._pattern.pop(ip, None)  # its heap entry is now stale and skipped by expire()
        return True

    def expire(self, now: float) -> list[str]:
        """Remove and return every IP whose deadline is at or before ``now``."""
        removed = []
        heap = self._heap
        deadlines = self._deadline
        while heap and heap[0][0] <= now:
            deadline, ip = heapq.heappop(heap)
            if deadlines.get(ip) == deadline:
                del deadlines[ip]
                del self._pattern[ip]
                removed.append(ip)
        return removed

    def _compact(self) -> None:
        self._heap = [(d, ip) for ip, d in self._deadline.items()]
        heapq.heapify(self._heap)
