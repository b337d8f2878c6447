"""Map writer: the file is what postmap writes, locked, and its mtime always moves."""

import fcntl
import os
import re
import stat
import threading
from itertools import pairwise
from pathlib import Path

import pytest
from bsddb3 import db

from pbsyslog.journal import UntrustedFile
from pbsyslog.outputs.berkeley import open_output


def read_raw(path: Path) -> dict[bytes, bytes]:
    """Open the file the way Postfix does (shared flock, DB_HASH, read-only) and dump it."""
    d = db.DB()
    d.open(str(path), dbtype=db.DB_HASH, flags=db.DB_RDONLY)
    try:
        fcntl.flock(d.fd(), fcntl.LOCK_SH)
        return dict(d.items())
    finally:
        d.close()


def test_created_empty_at_open(tmp_path: Path) -> None:
    """Opening creates an empty DB_HASH file named PATH.db."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.close()
    assert read_raw(tmp_path / "map.db") == {}


def test_keys_and_values_carry_one_nul(tmp_path: Path) -> None:
    """Keys and values are stored with exactly one trailing NUL, as postmap does."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.apply(add=["192.0.2.7", "2001:db8::7"])
    assert read_raw(tmp_path / "map.db") == {b"192.0.2.7\0": b"OK\0", b"2001:db8::7\0": b"OK\0"}
    m.apply(remove=["192.0.2.7", "198.51.100.1"])
    assert read_raw(tmp_path / "map.db") == {b"2001:db8::7\0": b"OK\0"}
    assert m.keys() == {"2001:db8::7"}
    m.close()


def test_replace_all_reports_differences(tmp_path: Path) -> None:
    """replace_all makes the map equal to the given keys and says what changed."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.apply(add=["192.0.2.1", "192.0.2.2"])
    added, removed = m.replace_all(["192.0.2.2", "192.0.2.3"])
    assert (added, removed) == ({"192.0.2.3"}, {"192.0.2.1"})
    assert m.keys() == {"192.0.2.2", "192.0.2.3"}
    m.close()


def test_mtime_moves_on_every_commit(tmp_path: Path) -> None:
    """Commits within one second still give the file a new whole-second mtime each time."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    seen = []
    for i in range(5):
        m.apply(add=[f"192.0.2.{i}"])
        seen.append(int(os.stat(tmp_path / "map.db").st_mtime))
    m.close()
    assert all(b > a for a, b in pairwise(seen)), seen


def test_commit_waits_for_readers_shared_lock(tmp_path: Path) -> None:
    """While a reader holds Postfix's shared flock, a commit does not happen; it completes once released."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    fd = os.open(tmp_path / "map.db", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    worker = threading.Thread(target=m.apply, kwargs={"add": ["192.0.2.9"]})
    worker.start()
    worker.join(0.3)
    try:
        assert worker.is_alive(), "commit went ahead despite a reader's shared lock"
    finally:
        os.close(fd)  # drops the shared lock
    worker.join(5)
    assert not worker.is_alive()
    assert read_raw(tmp_path / "map.db") == {b"192.0.2.9\0": b"OK\0"}
    m.close()


# ------------------------------------------- whose file the map may be --

OTHER_UID = 65534  # nobody


def _made_under_umask(mask: int, kind: str, path: Path) -> int:
    old = os.umask(mask)
    try:
        w = open_output(kind, str(path))
    finally:
        os.umask(old)
    w.close()
    return stat.S_IMODE(os.stat(w.filename).st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_new_map_is_0640_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    """A new Postfix map is mode 0640 under any umask (it names every authorised client); Exim's stays 0644."""
    assert _made_under_umask(mask, "postfix-hash", tmp_path / "map") == 0o640
    assert _made_under_umask(mask, "exim-dbm", tmp_path / "exim") == 0o644


def test_an_existing_map_of_ours_keeps_its_mode(tmp_path: Path) -> None:
    """A map this uid owns and only it may write is opened as it is: 0644 from an earlier version stays 0644."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.apply(add=["192.0.2.7"])
    m.close()
    os.chmod(tmp_path / "map.db", 0o644)
    m = open_output("postfix-hash", str(tmp_path / "map"))
    assert m.keys() == {"192.0.2.7"}
    m.close()
    assert stat.S_IMODE(os.stat(tmp_path / "map.db").st_mode) == 0o644


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_a_map_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A map pre-created by another uid (who could keep writing keys into it) is refused, naming the file and owner."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.close()
    os.chown(tmp_path / "map.db", OTHER_UID, -1)
    with pytest.raises(UntrustedFile, match=f"refusing {re.escape(str(tmp_path / 'map.db'))}: it is owned by uid {OTHER_UID}"):
        open_output("postfix-hash", str(tmp_path / "map"))


def test_a_map_writable_by_others_is_refused(tmp_path: Path) -> None:
    """A map of ours that group or others may write is refused, before Berkeley DB opens it."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.close()
    os.chmod(tmp_path / "map.db", 0o666)
    with pytest.raises(UntrustedFile, match="writable by group or others"):
        open_output("postfix-hash", str(tmp_path / "map"))


def test_a_symlinked_map_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    """A symlink at the map's name is refused, whether it points at a valid map or at nothing (nothing is created there)."""
    m = open_output("postfix-hash", str(tmp_path / "real"))
    m.close()
    (tmp_path / "map.db").symlink_to(tmp_path / "real.db")
    with pytest.raises(UntrustedFile, match="symbolic link"):
        open_output("postfix-hash", str(tmp_path / "map"))
    (tmp_path / "dangling.db").symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(UntrustedFile, match="symbolic link"):
        open_output("postfix-hash", str(tmp_path / "dangling"))
    assert not (tmp_path / "created-through-the-link").exists()


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_an_untrusted_map_is_not_moved_aside_as_corrupt(tmp_path: Path) -> None:
    """UntrustedFile is not a DBError: Outputs does not rename the file and make its own, it raises."""
    from pbsyslog.config import OutputSpec
    from pbsyslog.outputs import open_checked
    from pbsyslog.outputs.berkeley import DBError

    assert not issubclass(UntrustedFile, DBError)
    (tmp_path / "map.db").write_bytes(b"not a db")
    os.chown(tmp_path / "map.db", OTHER_UID, -1)
    with pytest.raises(UntrustedFile):
        open_checked(OutputSpec("postfix-hash", str(tmp_path / "map")), 0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.db"]
