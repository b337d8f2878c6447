"""State journal: what is written comes back, torn lines are skipped, compaction keeps only live entries."""

from pathlib import Path

from pbsyslog.state import StateJournal


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
