"""Map writer: the Berkeley DB hash file that Postfix reads as ``hash:PATH``.

Contract: the only module that imports the Berkeley DB binding.  It writes
exactly what ``postmap`` writes (file ``PATH.db``, ``DB_HASH``, key and value
each with one trailing NUL byte) and nothing else, so Postfix's
``check_client_access hash:PATH`` and ``postmap -q KEY hash:PATH`` read it.

How Postfix reads it (``util/dict_db.c``): each lookup takes a shared
``flock`` on the DB's own file descriptor; smtpd reopens a table it sees
changed (mtime in whole seconds, or link count 0) before its next session.
So every batch of changes here runs under an exclusive ``flock`` on the same
descriptor and ends with ``sync()``, and the file's mtime is moved forward
by at least one whole second per commit: otherwise two commits in the same
second could leave an smtpd that opened the map between them with a stale
view.  The price: during a burst of more than one commit per second (the
service coalesces to at most 1/commit_interval, 4 by default) the mtime runs
ahead of the wall clock by up to 3 s per second of burst, and the clock
catches up once the burst is over.  Postfix only compares mtimes for
inequality, so a future mtime is harmless; an atomic rebuild + rename()
would avoid it but costs a full rewrite per commit (seconds at 1M entries).

The file is created when the writer opens and is never deleted: an smtpd
that starts while the file is missing answers 451 until it exits.

How it fails: OSError / the binding's DBError propagate to the caller, which
logs them and heals the map from the tracker's state on the next tick.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable

try:  # the maintained successor first; same API.
    from berkeleydb import db  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on what is installed
    from bsddb3 import db  # type: ignore[import-not-found,no-redef]

DBError = db.DBError


def encode(text: str) -> bytes:
    """Return ``text`` as postmap stores it: UTF-8 with one trailing NUL."""
    return text.encode() + b"\0"


def decode(raw: bytes) -> str:
    """Inverse of ``encode`` (a missing NUL is tolerated)."""
    return raw.removesuffix(b"\0").decode(errors="replace")


class MapFile:
    """An open Postfix ``hash:`` map that pbsyslog owns."""

    def __init__(self, path: str, value: str = "OK") -> None:
        self.path = path
        self.filename = path + ".db"
        self._value = encode(value)
        self._db = db.DB()
        self._db.open(self.filename, dbtype=db.DB_HASH, flags=db.DB_CREATE, mode=0o644)
        # The mtime a reader may already have seen; the first commit must move past it.
        self._last_mtime: int | None = int(os.fstat(self._db.fd()).st_mtime)

    def close(self) -> None:
        """Flush and close the map; the file stays in place."""
        self._db.sync()
        self._db.close()

    def keys(self) -> set[str]:
        """Return every key in the map (decoded, without NUL)."""
        return {decode(k) for k in self._db.keys()}

    def apply(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Commit one batch: put ``add`` keys, delete ``remove`` keys, sync, under an exclusive flock."""
        fd = self._db.fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            for key in remove:
                try:
                    self._db.delete(encode(key))
                except db.DBNotFoundError:
                    pass
            for key in add:
                self._db.put(encode(key), self._value)
            self._db.sync()
            self._advance_mtime(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Make the map hold exactly ``keys``; return (added, removed)."""
        wanted = set(keys)
        present = self.keys()
        added, removed = wanted - present, present - wanted
        self.apply(add=added, remove=removed)
        return added, removed

    def _advance_mtime(self, fd: int) -> None:
        st = os.fstat(fd)
        seconds = int(st.st_mtime)
        if self._last_mtime is not None and seconds <= self._last_mtime:
            seconds = self._last_mtime + 1
            os.utime(fd, (st.st_atime, seconds))
        self._last_mtime = seconds
