"""The service's clock follows the time that passed, whatever the wall clock does meanwhile."""

from __future__ import annotations

from pbsyslog.clock import SteadyClock


def test_steps_of_the_wall_clock_do_not_move_it() -> None:
    """Starts at the wall clock's time; a later step back or forward of the wall clock changes nothing."""
    wall, mono = [1_000_000.0], [50.0]
    clock = SteadyClock(lambda: wall[0], lambda: mono[0])
    assert clock.seconds() == 1_000_000.0
    mono[0] += 10
    wall[0] += 10 - 3600  # ten seconds pass, and the clock is set back an hour
    assert clock.seconds() == 1_000_010.0
    mono[0] += 5
    wall[0] += 5 + 7200  # five more, and the clock is set forward two hours
    assert clock.seconds() == 1_000_015.0
