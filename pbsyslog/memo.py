"""A memo bounded in size: what a flood of new keys can never grow.

Contract: ``remember(memo, key, value, limit)`` stores ``value`` under
``key`` in a plain dict; when the dict already holds ``limit`` keys and
``key`` is new, it is emptied first.  A flood of spoofed peers therefore
resets the memo instead of growing it; an honest workload (far fewer keys
than the limit) never sees it emptied.  Pure; never raises.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` (emptying a full memo first); return ``value``."""
    if len(memo) >= limit and key not in memo:
        memo.clear()
    memo[key] = value
    return value
