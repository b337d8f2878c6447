"""State journal: what is written comes back, torn lines are skipped, compaction keeps only live entries."""

import os
import re
import stat
from pathlib import Path

import pytest

from pbsyslog.journal import UNCONFIGURED_GRACE, Sessions, StateJournal, UntrustedFile
from pbsyslog.patterns import normalise_ip
from pbsyslog.tracker import Tracker


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
    """The journal read one line at a time, as load() did before it read the file in one go (with today's checks)."""
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
            if len(fields) == 4 and fields[0] == "+" and normalise_ip(fields[1]) == fields[1]:
                try:
                    deadline = float(fields[2])
                except ValueError:
                    bad += 1
                    continue
                deadlines[fields[1]] = deadline
                patterns[fields[1]] = fields[3]
            elif len(fields) == 2 and fields[0] == "-" and normalise_ip(fields[1]) == fields[1]:
                deadlines.pop(fields[1], None)
                patterns.pop(fields[1], None)
            else:
                bad += 1
    live = {ip: min(d, now + UNCONFIGURED_GRACE) for ip, d in deadlines.items() if d > now}
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


# ------------------------------------------------------- what load trusts --

FAR = 9_000_000_000.0  # a deadline in the year 2255


def test_load_takes_only_single_addresses_in_canonical_form(tmp_path: Path) -> None:
    """Networks ('192.168', '10', CIDR), brackets, mapped, upper-case or uncompressed IPv6 are bad lines, whatever the field count."""
    path = tmp_path / "s"
    path.write_bytes(
        b"+ 192.0.2.1 150.0 p\n"
        b"+ 192.168 150.0 p\n"
        b"+ 10 150.0 p\n"
        b"+ 10.0.0.0/8 150.0 p\n"
        b"+ [192.0.2.2] 150.0 p\n"
        b"+ ::ffff:192.0.2.3 150.0 p\n"
        b"+ 192.0.2.04 150.0 p\n"
        b"+ 2001:DB8::1 150.0 p\n"
        b"+ 2001:db8:0:0:0:0:0:2 150.0 p\n"
        b"+ 2001:db8::3 150.0 p\n"
        b"+ 172.16 150.0 p 130.0 [[[\"s\",1],[100.0]]]\n"
        b"- 192.168\n"
        b"- 192.0.2.1.\n"
    )
    loaded = StateJournal(str(path)).load(now=0)
    assert loaded.deadlines == {"192.0.2.1": 150.0, "2001:db8::3": 150.0}
    assert loaded.sessions == {}
    assert loaded.bad_lines == 11


def test_a_bad_line_does_not_undo_the_last_good_one(tmp_path: Path) -> None:
    """The last line for an IP still wins; a refused line after it (another spelling of the IP) changes nothing."""
    path = tmp_path / "s"
    path.write_bytes(b"+ 192.0.2.1 150.0 p\n+ 192.0.2.1 170.0 q\n- [192.0.2.1]\n+ 192.0.2.01 900.0 r\n")
    loaded = StateJournal(str(path)).load(now=0)
    assert (loaded.deadlines, loaded.patterns, loaded.bad_lines) == ({"192.0.2.1": 170.0}, {"192.0.2.1": "q"}, 2)


def test_deadlines_are_capped_at_now_plus_grace(tmp_path: Path) -> None:
    """Without open sessions, nothing is restored further ahead than now + grace (a far deadline, infinity)."""
    path = tmp_path / "s"
    path.write_bytes(f"+ 192.0.2.1 {FAR!r} p\n+ 192.0.2.2 inf p\n+ 192.0.2.3 1030.0 p\n".encode())
    loaded = StateJournal(str(path)).load(now=1000, grace=60, max_session=3600)
    assert loaded.deadlines == {"192.0.2.1": 1060, "192.0.2.2": 1060, "192.0.2.3": 1030.0}
    assert loaded.capped == 2


def test_sessions_are_capped_at_now_plus_grace_plus_max_session(tmp_path: Path) -> None:
    """With open sessions: the deadline at now + grace + max_session, the floor at now + grace, starts at now."""
    path = tmp_path / "s"
    path.write_bytes(
        f'+ 192.0.2.1 {FAR!r} p {FAR!r} [[["s",1],[{FAR!r}, 900.0]]]\n'.encode()
        + b'+ 192.0.2.2 1500.0 p 1010.0 [[["s",2],[950.0]]]\n'
    )
    loaded = StateJournal(str(path)).load(now=1000, grace=60, max_session=3600)
    assert loaded.deadlines == {"192.0.2.1": 1000 + 60 + 3600, "192.0.2.2": 1500.0}
    assert loaded.sessions == {
        "192.0.2.1": (1060, [(("s", 1), [1000, 900.0])]),
        "192.0.2.2": (1010.0, [(("s", 2), [950.0])]),
    }
    assert loaded.capped == 1
    # What the tracker computes from them stays within the cap too.
    tracker = Tracker(grace=60, max_session=3600)
    floor, keyed = loaded.sessions["192.0.2.1"]
    tracker.restore("192.0.2.1", loaded.deadlines["192.0.2.1"], "p", floor, keyed)
    assert tracker.deadline("192.0.2.1") == 1000 + 3600 + 60


def test_non_finite_floors_and_starts_are_bad_lines(tmp_path: Path) -> None:
    """A floor or a session start that is NaN or infinite cannot be capped meaningfully: the line is skipped."""
    path = tmp_path / "s"
    path.write_bytes(
        b'+ 192.0.2.1 1500.0 p inf [[["s",1],[900.0]]]\n'
        b'+ 192.0.2.2 1500.0 p 1010.0 [[["s",2],[NaN]]]\n'
        b'+ 192.0.2.3 1500.0 p 1010.0 [[["s",3],[Infinity]]]\n'
    )
    loaded = StateJournal(str(path)).load(now=1000, grace=60, max_session=3600)
    assert loaded.deadlines == {} and loaded.bad_lines == 3


def test_without_the_settings_load_caps_at_a_week(tmp_path: Path) -> None:
    """A caller that passes no grace still gets nothing more than UNCONFIGURED_GRACE ahead (+ max_session with sessions)."""
    path = tmp_path / "s"
    path.write_bytes(
        f"+ 192.0.2.1 {FAR!r} p\n".encode()
        + f'+ 192.0.2.2 {FAR!r} p {FAR!r} [[["s",1],[{FAR!r}]]]\n'.encode()
    )
    loaded = StateJournal(str(path)).load(now=0)
    assert loaded.deadlines == {"192.0.2.1": UNCONFIGURED_GRACE, "192.0.2.2": UNCONFIGURED_GRACE + 86400}
    assert loaded.sessions["192.0.2.2"] == (UNCONFIGURED_GRACE, [(("s", 1), [UNCONFIGURED_GRACE])])


# ------------------------------------------------- files it will not use --

OTHER_UID = 65534  # nobody


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_load_refuses_a_journal_owned_by_another_user(tmp_path: Path) -> None:
    """A journal another uid owns (it could write any line) is refused with the path and the owner, not read."""
    path = tmp_path / "s"
    path.write_bytes(b"+ 192.0.2.1 150.0 p\n")
    os.chown(path, OTHER_UID, -1)
    with pytest.raises(UntrustedFile, match=f"refusing {re.escape(str(path))}: it is owned by uid {OTHER_UID}"):
        StateJournal(str(path)).load(now=0)


def test_load_refuses_a_journal_writable_by_others(tmp_path: Path) -> None:
    """A journal of ours that group or others may write is refused too; 0644 (what earlier versions made) is fine."""
    path = tmp_path / "s"
    path.write_bytes(b"+ 192.0.2.1 150.0 p\n")
    path.chmod(0o644)
    assert StateJournal(str(path)).load(now=0).deadlines == {"192.0.2.1": 150.0}
    for mode in (0o666, 0o620):
        path.chmod(mode)
        with pytest.raises(UntrustedFile, match="writable by group or others"):
            StateJournal(str(path)).load(now=0)


def test_load_refuses_a_symlinked_journal(tmp_path: Path) -> None:
    """A journal that is a symbolic link (even to a file of ours) is refused: O_NOFOLLOW."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"+ 192.0.2.1 150.0 p\n")
    (tmp_path / "s").symlink_to(target)
    with pytest.raises(UntrustedFile, match="symbolic link"):
        StateJournal(str(tmp_path / "s")).load(now=0)


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_append_refuses_a_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    """A symlink planted at the journal's name is not appended through, nor is a journal owned by someone else."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file\n")
    (tmp_path / "s").symlink_to(victim)
    with pytest.raises(UntrustedFile, match="symbolic link"):
        StateJournal(str(tmp_path / "s")).append({"192.0.2.1": (150.0, "p")})
    assert victim.read_bytes() == b"root's file\n"
    other = tmp_path / "t"
    other.write_bytes(b"")
    os.chown(other, OTHER_UID, -1)
    with pytest.raises(UntrustedFile, match="owned by uid"):
        StateJournal(str(other)).append({"192.0.2.1": (150.0, "p")})
    assert other.read_bytes() == b""


def test_untrusted_file_is_an_oserror_naming_the_file() -> None:
    """UntrustedFile is an OSError (the service's OSError handling covers it) with the path and the reason."""
    error = UntrustedFile("/x/map.state", "it is a symbolic link")
    assert isinstance(error, OSError)
    assert (error.filename, error.why, str(error)) == (
        "/x/map.state", "it is a symbolic link", "refusing /x/map.state: it is a symbolic link")


# ------------------------------------------ files it makes are its own --


def test_compact_does_not_follow_a_symlink_planted_at_the_temporary_name(tmp_path: Path) -> None:
    """A symlink at <journal>.tmp pointing at a root-owned file is removed, not written through."""
    victim = tmp_path / "passwd"
    victim.write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "s.tmp").symlink_to(victim)
    j = StateJournal(str(tmp_path / "s"))
    j.compact({"192.0.2.1": (150.0, "p")})
    assert victim.read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    assert not (tmp_path / "s").is_symlink()
    assert (tmp_path / "s").read_bytes() == b"+ 192.0.2.1 150.0 p\n"
    assert not (tmp_path / "s.tmp").exists() and not (tmp_path / "s.tmp").is_symlink()


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_compact_does_not_reuse_a_leftover_temporary_file(tmp_path: Path) -> None:
    """A file left (or planted) at <journal>.tmp, another user's and world-writable, is replaced by a new one of ours."""
    tmp = tmp_path / "s.tmp"
    tmp.write_bytes(b"+ 10 9e9 p\n")
    tmp.chmod(0o666)
    os.chown(tmp, OTHER_UID, -1)
    j = StateJournal(str(tmp_path / "s"))
    j.compact({"192.0.2.1": (150.0, "p")})
    st = os.stat(tmp_path / "s")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
    assert StateJournal(str(tmp_path / "s")).load(now=0).deadlines == {"192.0.2.1": 150.0}


def test_a_directory_at_the_temporary_name_fails_compaction(tmp_path: Path) -> None:
    """A directory at <journal>.tmp is not removed: compaction raises OSError and the journal is as it was."""
    (tmp_path / "s.tmp").mkdir()
    j = StateJournal(str(tmp_path / "s"))
    j.append({"192.0.2.1": (150.0, "p")})
    with pytest.raises(OSError):
        j.compact({})
    assert (tmp_path / "s.tmp").is_dir()
    assert StateJournal(str(tmp_path / "s")).load(now=0).deadlines == {"192.0.2.1": 150.0}


def test_journal_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Created by append or by compaction, the journal is mode 0600 even under umask 0."""
    old = os.umask(0)
    try:
        StateJournal(str(tmp_path / "a")).append({"192.0.2.1": (150.0, "p")})
        StateJournal(str(tmp_path / "c")).compact({"192.0.2.1": (150.0, "p")})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "c").st_mode) == 0o600


# ------------------------------------------------ compaction by size too --


def _many_sessions(n: int) -> Sessions:
    return 1060.0, [(("group", "mx", "dovecot", f"K{i:06d}"), [1000.0]) for i in range(n)]


def test_bytes_are_tracked_as_the_file_grows(tmp_path: Path) -> None:
    """bytes follows the file through load, append and compact; compacted_bytes is what the compaction wrote."""
    path = tmp_path / "s"
    path.write_bytes(b"+ 192.0.2.1 150.0 p\n")
    j = StateJournal(str(path))
    j.load(now=0)
    assert j.bytes == path.stat().st_size
    j.append({"192.0.2.2": (160.0, "p")}, removed=["192.0.2.1"])
    assert j.bytes == path.stat().st_size
    j.compact({"192.0.2.2": (160.0, "p")})
    assert j.bytes == j.compacted_bytes == path.stat().st_size
    fresh = StateJournal(str(path))
    fresh.append({"192.0.2.3": (170.0, "p")})  # no load first: the size comes from the file
    assert fresh.bytes == path.stat().st_size


def test_many_open_sessions_make_compaction_due_by_size_long_before_15_mb(tmp_path: Path) -> None:
    """20,000 open sessions on one IP, rewritten on each change: by lines compaction is never due, by bytes it is within a few MB."""
    path = tmp_path / "s"
    j = StateJournal(str(path))
    ip = "192.0.2.77"
    j.compact({ip: (87_460.0, "dovecot-login")}, {ip: _many_sessions(20_000)})
    assert not j.needs_compaction(1)
    compacted = path.stat().st_size  # about 1.1 MB: one line
    assert j.compacted_bytes == compacted
    grown = 0
    for change in range(1, 200):  # each login or logout rewrites the IP's whole session list
        j.append({ip: (87_460.0, "dovecot-login")}, sessions={ip: _many_sessions(20_000 + change)})
        if j.needs_compaction(1):
            grown = path.stat().st_size
            break
    assert grown, "compaction never came due"
    assert j.bytes == grown
    # Due once the file passes 4 x compacted + 1 MiB: at most one line later.
    assert 4 * compacted + 2**20 < grown < 5 * compacted + 2**20 + 2**17
    assert grown < 7_000_000
    assert j.lines <= 2 * 1 + 10_000  # the old, lines-only rule would not have compacted
    j.compact({ip: (87_460.0, "dovecot-login")}, {ip: _many_sessions(20_000)})
    assert not j.needs_compaction(1)


def test_many_stale_lines_make_compaction_due(tmp_path: Path) -> None:
    """The old rule holds: more lines than twice the live entries + 10,000 make compaction due, however small."""
    j = StateJournal(str(tmp_path / "s"))
    j.compact({})
    for i in range(10_001):
        j.append(removed=["192.0.2.1"]) if i % 2 else j.append({"192.0.2.1": (1.0, "p")})
    assert j.bytes < 2**20
    assert j.needs_compaction(0)
    assert not j.needs_compaction(1)
