"""Restart-safe state: an append-only journal of deadlines next to the map.

Contract: the tracker's deadlines and open sessions survive a restart or a
crash.  Each map commit first appends one line per IP whose deadline or
sessions changed (``+ IP DEADLINE PATTERN``; ``- IP`` removes one), so after
a restart every authorisation keeps its original deadline and nothing that
expired comes back.  An IP with open sessions gets two more fields,
``FLOOR SESSIONS``: the deadline it has earned whatever its sessions do,
and its sessions as compact JSON, ``[[KEY, [START, ...]], ...]`` (a key is
the tracker's tuple, written as a list).  So a logout that arrives after a
restart still closes its session and shortens the deadline, and ``list``
shows the open sessions with the service stopped.  The JSON is the last
field (``split(" ", 5)``), so a space inside a key cannot shift the others.
The file is compacted (live entries written to a temporary file, fsync,
``rename()``) at start-up and when stale lines pile up.

Deadlines are wall-clock seconds (what ``reactor.seconds()`` returns).  The
last line for an IP wins: the file is appended in order, and a deadline may
move either way (a logout shortens it to logout + grace), so the last line
is exactly the tracker's current deadline.

How it fails: ``load`` skips lines it cannot read (a line torn by a crash,
or garbage) and reports how many; it never raises for the file's content.
``append`` and ``compact`` raise OSError, which the service logs before
retrying on the next commit.  Appends are written to the kernel at once
(they survive the process being killed) but fsync'd only at compaction: a
power cut may lose the last few seconds of logins, never corrupt the rest.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, BinaryIO

import attrs


@attrs.frozen
class SideFiles:
    """The files pbsyslog keeps beside its map; ``dbfile`` is the map's path as configured (no suffix)."""

    dbfile: str

    @property
    def journal(self) -> str:
        """This module's journal."""
        return self.dbfile + ".state"

    @property
    def lock(self) -> str:
        """Held (``flock``) by the running service; the offline commands take it too."""
        return self.dbfile + ".lock"

    @property
    def control(self) -> str:
        """The running service's control socket."""
        return self.dbfile + ".ctl"

    @property
    def old_control_lock(self) -> str:
        """The PID lock (a symlink) earlier versions kept beside the control socket; never used now."""
        return self.dbfile + ".ctl.lock"


# An IP's open sessions as the tracker hands them over: (floor, [(key, [start, ...]), ...]).
Sessions = tuple[float, list[tuple[Hashable, list[float]]]]


@attrs.frozen
class Loaded:
    """What a journal held: live deadlines (and the pattern that set each) and how many lines were unreadable.

    ``sessions`` holds, for the IPs that had open sessions, their floor and
    sessions (keys as tuples again).
    """

    deadlines: dict[str, float]
    patterns: dict[str, str]
    bad_lines: int
    sessions: dict[str, Sessions] = attrs.field(factory=dict)


def _key(value: Any) -> Hashable:
    """A session key read back from JSON: lists become tuples again (the tracker's keys are tuples)."""
    if isinstance(value, list):
        return tuple(_key(v) for v in value)
    key: Hashable = value
    return key


def _sessions_field(sessions: Sessions) -> str:
    floor, keyed = sessions
    return f"{floor!r} " + json.dumps([[key, starts] for key, starts in keyed], separators=(",", ":"))


def _line(ip: str, deadline: float, pattern: str, sessions: Sessions | None) -> str:
    if sessions is None:
        return f"+ {ip} {deadline!r} {pattern or '-'}\n"
    return f"+ {ip} {deadline!r} {pattern or '-'} {_sessions_field(sessions)}\n"


def _parse_sessions(floor_text: str, text: str) -> Sessions:
    """Read ``FLOOR SESSIONS``; ValueError (json's included) for anything malformed."""
    floor = float(floor_text)
    keyed = []
    for item in json.loads(text):
        key, starts = item
        if not isinstance(starts, list) or not starts:
            raise ValueError("a session entry without start times")
        keyed.append((_key(key), [float(t) for t in starts]))
    return floor, keyed


class StateJournal:
    """The journal file ``PATH`` (by convention ``<dbfile>.state``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines = 0
        self._file: BinaryIO | None = None

    def load(self, now: float) -> Loaded:
        """Read the journal; return the entries whose deadline is after ``now``."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return Loaded({}, {}, 0)
        with f:
            data = f.read()
        # One decode and one split for the whole file, not one per line (1M
        # lines took 4-5 s that way).  The same lines and the same fields as
        # reading it line by line: ASCII decoding is byte by byte, so it
        # commutes with cutting at b"\n"; each line is split as before.
        lines = data.decode("ascii", errors="replace").split("\n")
        torn = lines.pop()  # after the last "\n": "" unless a crash tore the last line
        bad = 0
        if torn:
            bad += 1
            self._lines += 1
        self._lines += len(lines)
        deadlines: dict[str, float] = {}
        patterns: dict[str, str] = {}
        sessions: dict[str, Sessions] = {}
        # A handful of pattern names, each on most lines: keep one string of
        # each, not one per line (tens of MB for 1M entries, kept for good
        # by the tracker after a restart).
        names: dict[str, str] = {}
        for line in lines:
            fields = line.split()
            if len(fields) == 4 and fields[0] == "+":
                try:
                    deadline = float(fields[2])
                except ValueError:
                    bad += 1
                    continue
                ip = fields[1]
                name = fields[3]
                deadlines[ip] = deadline  # the last line wins, earlier or later
                patterns[ip] = names.setdefault(name, name)
                if sessions:
                    sessions.pop(ip, None)
            elif len(fields) == 2 and fields[0] == "-":
                deadlines.pop(fields[1], None)
                patterns.pop(fields[1], None)
                sessions.pop(fields[1], None)
            elif len(fields) >= 6 and fields[0] == "+":
                fields = line.split(" ", 5)
                try:
                    deadline = float(fields[2])
                    open_ = _parse_sessions(fields[4], fields[5])
                except (ValueError, TypeError, IndexError):
                    bad += 1
                    continue
                ip = fields[1]
                name = fields[3]
                deadlines[ip] = deadline
                patterns[ip] = names.setdefault(name, name)
                sessions[ip] = open_
            else:
                bad += 1
        # Drop what has expired in place (usually little): copying 1M
        # entries into new dicts cost more than reading them.
        for ip in [ip for ip, d in deadlines.items() if not d > now]:
            del deadlines[ip], patterns[ip]
            sessions.pop(ip, None)
        return Loaded(deadlines, patterns, bad, sessions)

    @property
    def lines(self) -> int:
        """Lines in the file (as far as this process knows): the compaction trigger."""
        return self._lines

    def append(
        self,
        set_: Mapping[str, tuple[float, str]] = {},
        removed: Iterable[str] = (),
        sessions: Mapping[str, Sessions] = {},
    ) -> None:
        """Record new deadlines ``{ip: (deadline, pattern)}`` and removals, in one write.

        ``sessions`` gives the open sessions of those IPs of ``set_`` that
        have any; an IP of ``set_`` not in it is written as having none.
        """
        get = sessions.get
        parts = [_line(ip, deadline, pattern, get(ip)) for ip, (deadline, pattern) in set_.items()]
        parts += [f"- {ip}\n" for ip in removed]
        if not parts:
            return
        if self._file is None:
            self._file = open(self.path, "ab", buffering=0)
        # An unbuffered write may write only part (a full disk does that
        # without an error): write the rest, and let the error that follows
        # reach the caller, which then rewrites the whole journal.
        data = memoryview("".join(parts).encode("ascii"))
        self._lines += len(parts)
        while data:
            written = self._file.write(data)
            if not written:
                raise OSError(errno.ENOSPC, f"{self.path}: short write")
            data = data[written:]

    def compact(self, entries: Mapping[str, tuple[float, str]], sessions: Mapping[str, Sessions] = {}) -> None:
        """Replace the journal by exactly ``entries`` ({ip: (deadline, pattern)}) and their ``sessions``, atomically."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write("".join(
                f"+ {ip} {deadline!r} {pattern or '-'}\n" if ip not in sessions
                else _line(ip, deadline, pattern, sessions[ip])
                for ip, (deadline, pattern) in entries.items()
            ).encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
        self.close()
        self._lines = len(entries)
        directory = os.path.dirname(os.path.abspath(self.path))
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Close the append handle (the next append reopens)."""
        if self._file is not None:
            self._file.close()
            self._file = None
