"""The service's clock: wall-clock seconds that move with the monotonic clock.

Contract: ``SteadyClock().seconds()`` is the wall-clock time at start-up
plus the monotonic time elapsed since.  Deadlines are wall-clock seconds
(the journal keeps them across restarts), but while pbsyslog runs a step
of the system clock (an administrator's ``date -s``, an NTP step, a VM
resumed) must neither extend a grant (clock set back) nor end every grant
at once (clock set forward): the reactor runs on this clock, so expiry
follows the time that really passed.  Pure; never raises.

At the next start the clock is anchored to the wall clock again; a
journal written before a step is then off by the step, and the journal's
loader caps every restored deadline at now + grace (+ max_session).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SteadyClock:
    """Seconds on the wall-clock scale, advancing with ``monotonic``."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def seconds(self) -> float:
        """Now, as the wall clock read at start-up plus the monotonic time since."""
        return self._offset + self._monotonic()
