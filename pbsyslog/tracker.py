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

    def login(self, ip: str, now: float) -> bool:
        """Authorise ``ip`` until now + grace; return True if it was not authorised before."""
        deadline = now + self.grace
        previous = self._deadline.get(ip)
        if previous is not None and previous >= deadline:
            # A clock that stepped back must not shorten a live authorisation
            # here; only expire() takes IPs away.
            return False
        self._deadline[ip] = deadline
        heapq.heappush(self._heap, (deadline, ip))
        if len(self._heap) > 2 * len(self._deadline) + 1024:
            self._compact()
        return previous is None

    def expire(self, now: float) -> list[str]:
        """Remove and return every IP whose deadline is at or before ``now``."""
        removed = []
        heap = self._heap
        deadlines = self._deadline
        while heap and heap[0][0] <= now:
            deadline, ip = heapq.heappop(heap)
            if deadlines.get(ip) == deadline:
                del deadlines[ip]
                removed.append(ip)
        return removed

    def _compact(self) -> None:
        self._heap = [(d, ip) for ip, d in self._deadline.items()]
        heapq.heapify(self._heap)
