"""Bounded work per line: no built-in regex backtracks its way to seconds on one hostile frame.

Every entry's regex runs on lines built from its own samples, with a chunk
that regexes tend to backtrack over (a closing parenthesis, a space, a
comma...) repeated into the middle of the line until it is as long as a
large frame, and with a control byte at the end, so the match must fail
after trying what it can.  A regex whose work grows with the square of
the line took seconds on such a frame (one did: cyrus-fail); a linear one
takes well under a millisecond per kilobyte.  The bound below is two
orders of magnitude above linear work and three below the quadratic case.
"""

from __future__ import annotations

import time

import pytest

from pbsyslog.patterns import load_table

TABLE = load_table()
SIZE = 32 * 1024  # half of the default max_frame: a quadratic regex takes seconds here already
LIMIT = 0.05  # seconds for one match attempt on a SIZE-byte line
CHUNKS = [") ", "(", " (", ")", " ", ", ", "=", "<", ">", "[", "]", "] [", ":", ": ", '"', "' ", "a", "1.", "=a, ",
          "user=<", "> ", "/", "\\", "  "]


def hostile(message: str, chunk: str, at: int) -> str:
    """``message`` with ``chunk`` repeated at ``at`` up to SIZE characters, and a control byte at the end."""
    repeats = max(1, (SIZE - len(message)) // len(chunk))
    return message[:at] + chunk * repeats + message[at:] + "\x01"


@pytest.mark.parametrize("pattern", TABLE.patterns, ids=[p.name for p in TABLE.patterns])
def test_no_regex_backtracks_on_a_long_hostile_line(pattern) -> None:  # type: ignore[no-untyped-def]
    """Every sample, pumped with every chunk at a third and two thirds of its length, fails to match quickly."""
    slowest = (0.0, "")
    for sample in pattern.samples:
        message = sample.message
        for chunk in CHUNKS:
            for at in {len(message) // 3, 2 * len(message) // 3, len(message) - 1}:
                line = hostile(message, chunk, max(at, 0))
                started = time.perf_counter()
                pattern.regex.match(line)
                took = time.perf_counter() - started
                if took > slowest[0]:
                    slowest = (took, f"{chunk!r} at {at} of {message!r}")
    assert slowest[0] < LIMIT, f"{pattern.name}: {slowest[0]:.3f} s on a {SIZE}-byte line ({slowest[1]})"


def admin_entry(regex: str) -> dict[str, object]:
    """An admin's own [[pattern]] entry with ``regex`` (a failure line, one sample it must match)."""
    return {"name": "my-pop3d-fail", "group": "my-pop3d", "kind": "fail", "programs": ["my-pop3d"],
            "regex": regex, "samples": [{"message": "fail from [192.0.2.7]", "event": "fail", "ip": "192.0.2.7"},
                                        {"message": "hello from [192.0.2.7]", "event": "none"}]}


@pytest.mark.parametrize("regex", [r"^fail from \[(?P<ip>[0-9.]+)\](?:a+)*$", r"^(?:x*y)*fail from \[(?P<ip>[0-9.]+)\]",
                                   r"^fail from \[(?P<ip>[0-9.]+)\](?:(?:a|b)+c)*$"])
def test_admin_regex_with_nested_repeats_is_refused(regex: str) -> None:
    """An admin pattern that repeats a repeating part is refused at load time, naming the entry."""
    from pbsyslog.patterns import PatternError

    with pytest.raises(PatternError, match="my-pop3d-fail.*repeats a part that itself repeats"):
        load_table("all", extra=[admin_entry(regex)])


@pytest.mark.parametrize("regex", [r"^fail from \[(?P<ip>[0-9.]+)\](?:a++)*$", r"^fail from \[(?P<ip>[0-9.]+)\](?:, [a-z]+)?$",
                                   r"^fail from \[(?P<ip>[0-9.]+)\](?>(?:a+)+)?$"])
def test_admin_regex_without_nested_backtracking_loads(regex: str) -> None:
    """Possessive inner parts, atomic groups and single optional groups are fine."""
    table = load_table("all", extra=[admin_entry(regex)])
    assert "my-pop3d-fail" in table.by_name
