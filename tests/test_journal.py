"""State journal: what is written comes back, torn lines are skipped, compaction keeps only live entries."""

from pathlib import Path

from pbsyslog.journal import StateJournal


def test_round_trip_last_line_wins(tmp_path: Path) -> None:
    """Appended deadlines are read back; a later line for an IP replaces the earlier one, '-' removes."""
    j = StateJournal(str(tmp_path / "s"))
    j.append({"192.0.2.1": (100.5, "dovecot-login"), "192.0.2.2": (50.0, "courier-login")})
    j.append({"192.0.2.1": (130.25, "dovecot-login"), "2001:db8::1": (120.0, "uw-imap-login")})
    j.append(removed=["192.0.2.2"])
    j.close()
    loaded = StateJournal(str(tmp_path / "s")).load(now=0)
    assert loaded.deadlines == {"192.0.2.1": 130.25, "2001:db8::1": 120.0}
    assert loaded.patterns == {"192.0.2.1": "dovecot-login", "2001:db8::1": "uw-imap-login"}
    assert loaded.bad_lines == 0


def test_a_later_earlier_deadline_wins(tmp_path: Path) -> None:
    """A later line with an earlier deadline (a logout shortened it) is what load returns, not the maximum."""
    j = StateJournal(str(tmp_path / "s"))
    j.append({"192.0.2.1": (86_500.0, "dovecot-login")})
    j.append({"192.0.2.1": (160.0, "dovecot-login")})
    j.close()
    assert StateJournal(str(tmp_path / "s")).load(now=100).deadlines == {"192.0.2.1": 160.0}


def test_a_shortened_deadline_that_passed_is_not_restored(tmp_path: Path) -> None:
    """An IP whose last line's deadline has passed stays gone, even if an earlier line lies in the future."""
    j = StateJournal(str(tmp_path / "s"))
    j.append({"192.0.2.1": (86_500.0, "dovecot-login")})
    j.append({"192.0.2.1": (160.0, "dovecot-login")})
    j.close()
    assert StateJournal(str(tmp_path / "s")).load(now=200).deadlines == {}


def test_load_drops_expired(tmp_path: Path) -> None:
    """Entries whose deadline is at or before now are not returned."""
    j = StateJournal(str(tmp_path / "s"))
    j.append({"192.0.2.1": (100.0, "p"), "192.0.2.2": (200.0, "p")})
    assert StateJournal(str(tmp_path / "s")).load(now=100).deadlines == {"192.0.2.2": 200.0}


def test_torn_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    """A last line cut by a crash and lines of garbage are counted and skipped; the rest loads."""
    path = tmp_path / "s"
    path.write_bytes(b"+ 192.0.2.1 150.0 p\nrubbish\n+ 192.0.2.3 x p\n+ 192.0.2.2 16")
    loaded = StateJournal(str(path)).load(now=0)
    assert loaded.deadlines == {"192.0.2.1": 150.0}
    assert loaded.bad_lines == 3


def test_missing_file_is_empty(tmp_path: Path) -> None:
    """No journal yet means no state."""
    assert StateJournal(str(tmp_path / "none")).load(now=0).deadlines == {}


def test_compact_rewrites_exactly_the_entries(tmp_path: Path) -> None:
    """Compaction leaves one line per live entry and later appends go after them."""
    path = tmp_path / "s"
    j = StateJournal(str(path))
    for i in range(50):
        j.append({"192.0.2.1": (float(i), "p")})
    j.compact({"192.0.2.1": (49.0, "p"), "192.0.2.9": (70.0, "q")})
    assert j.lines == 2
    j.append({"192.0.2.10": (80.0, "r")})
    j.close()
    assert path.read_text().count("\n") == 3
    assert StateJournal(str(path)).load(now=0).deadlines == {"192.0.2.1": 49.0, "192.0.2.9": 70.0, "192.0.2.10": 80.0}
    assert not (tmp_path / "s.tmp").exists()


def _line_by_line(path: Path, now: float) -> tuple[dict, dict, int, int]:
    """The journal read one line at a time, as load() did before it read the file in one go."""
    deadlines: dict[str, float] = {}
    patterns: dict[str, str] = {}
    bad = lines = 0
    with open(path, "rb") as f:
        for raw in f:
            lines += 1
            if not raw.endswith(b"\n"):
                bad += 1
                continue
            fields = raw.decode("ascii", errors="replace").split()
            if len(fields) == 4 and fields[0] == "+":
                try:
                    deadline = float(fields[2])
                except ValueError:
                    bad += 1
                    continue
                deadlines[fields[1]] = deadline
                patterns[fields[1]] = fields[3]
            elif len(fields) == 2 and fields[0] == "-":
                deadlines.pop(fields[1], None)
                patterns.pop(fields[1], None)
            else:
                bad += 1
    live = {ip: d for ip, d in deadlines.items() if d > now}
    return live, {ip: patterns[ip] for ip in live}, bad, lines


def test_load_reads_every_line_as_one_at_a_time_would(tmp_path: Path) -> None:
    """Odd lines (CR, NUL, \\x1c, non-ASCII, blank, bad numbers, torn last line) load as a line-by-line reader loads them."""
    import random

    rng = random.Random(6)
    pieces = [b"+", b"-", b" ", b"\t", b"\r", b"\x00", b"\x1c", b"\x0b", b"\xff", b"\xc3\xa9", b"192.0.2.1",
              b"192.0.2.2", b"1e3", b"nan", b"inf", b"12.5", b"x", b"dovecot-login", b"\n", b"\n", b"\n"]
    for case in range(200):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(60)))
        if case % 2:
            data += b"+ 192.0.2.3 50.0 p\n- 192.0.2.3\n+ 192.0.2.4 99.5 q\n"
        path = tmp_path / f"j{case}"
        path.write_bytes(data)
        journal = StateJournal(str(path))
        loaded = journal.load(10.0)
        assert (loaded.deadlines, loaded.patterns, loaded.bad_lines, journal.lines) == _line_by_line(path, 10.0), data
