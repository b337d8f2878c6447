"""Map writer: the file is what postmap writes, locked, and its mtime always moves."""

import fcntl
import os
import threading
from itertools import pairwise
from pathlib import Path

from bsddb3 import db

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
