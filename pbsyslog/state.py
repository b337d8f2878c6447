"""Restart-safe state: an append-only journal of deadlines next to the map.

Contract: the tracker's deadlines survive a restart or a crash.  Each map
commit first appends one line per IP whose deadline was set or extended
(``+ IP DEADLINE PATTERN``; ``- IP`` removes one), so after a restart every
authorisation keeps its original deadline and nothing that expired comes
back.  The file is compacted (live entries written to a temporary file,
fsync, ``rename()``) at start-up and when stale lines pile up.

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
import os
from collections.abc import Iterable, Mapping

import attrs


@attrs.frozen
class Loaded:
    """What a journal held: live deadlines (and the pattern that set each) and how many lines were unreadable."""

    deadlines: dict[str, float]
    patterns: dict[str, str]
    bad_lines: int


class StateJournal:
    """The journal file ``PATH`` (by convention ``<dbfile>.state``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines = 0
        self._file = None

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
            elif len(fields) == 2 and fields[0] == "-":
                deadlines.pop(fields[1], None)
                patterns.pop(fields[1], None)
            else:
                bad += 1
        # Drop what has expired in place (usually little): copying 1M
        # entries into new dicts cost more than reading them.
        for ip in [ip for ip, d in deadlines.items() if not d > now]:
            del deadlines[ip], patterns[ip]
        return Loaded(deadlines, patterns, bad)

    @property
    def lines(self) -> int:
        """Lines in the file (as far as this process knows): the compaction trigger."""
        return self._lines

    def append(self, set_: Mapping[str, tuple[float, str]] = {}, removed: Iterable[str] = ()) -> None:
        """Record new deadlines ``{ip: (deadline, pattern)}`` and removals, in one write."""
        parts = [f"+ {ip} {deadline!r} {pattern or '-'}\n" for ip, (deadline, pattern) in set_.items()]
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

    def compact(self, entries: Mapping[str, tuple[float, str]]) -> None:
        """Replace the journal by exactly ``entries`` ({ip: (deadline, pattern)}), atomically."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write("".join(
                f"+ {ip} {deadline!r} {pattern or '-'}\n" for ip, (deadline, pattern) in entries.items()
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
