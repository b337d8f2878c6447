"""Restart-safe state: an append-only journal of deadlines next to the map.

What it does: the tracker's deadlines and open sessions survive a restart
or a crash.  Each map commit first appends one line per IP whose deadline
or sessions changed (``+ IP DEADLINE PATTERN``; ``- IP`` removes one), so
after a restart every authorisation keeps its original deadline and nothing
that expired comes back.  An IP with open sessions gets two more fields,
``FLOOR SESSIONS``: the deadline it has earned whatever its sessions do,
and its sessions as compact JSON, ``[[KEY, [START, ...]], ...]`` (a key is
the tracker's tuple, written as a list).  So a logout that arrives after a
restart still closes its session and shortens the deadline, and ``list``
shows the open sessions with the service stopped.  The JSON is the last
field (``split(" ", 5)``), so a space inside a key cannot shift the others.
The file is compacted (live entries written to a new temporary file, fsync,
``rename()``) at start-up and when stale lines or stale bytes pile up
(``needs_compaction``: more lines than twice the live entries + 10,000, or
more bytes than four times what the last compaction wrote + 1 MiB; an IP
with thousands of open sessions rewrites all of them on every change).

Deadlines are wall-clock seconds (what ``reactor.seconds()`` returns).  The
last line for an IP wins: the file is appended in order, and a deadline may
move either way (a logout shortens it to logout + grace), so the last line
is exactly the tracker's current deadline.

What it must not do: restore anything the service could not have written.
``load`` takes a line's IP only when it is one address spelled exactly as
``patterns.normalise_ip`` spells it (``192.168`` or ``10`` would be parent
networks to Postfix's access maps, so they are bad lines), and it caps what
it restores: a deadline at ``now + grace`` (``now + grace + max_session``
for an IP with open sessions), a floor at ``now + grace``, a session start
at ``now``.  Nor may it use a file someone else could have written or
pointed elsewhere: the journal must be a regular file owned by this
process's effective uid and not writable by group or others, never a
symbolic link (``O_NOFOLLOW``); a new journal and the compaction's
temporary file are created mode 0600 whatever the umask, the temporary one
exclusively (``O_EXCL``) after removing whatever was left at its name.
``check_owned`` is that rule, for the map files too.

How it fails: ``load`` skips lines it cannot read or will not trust (a line
torn by a crash, garbage, a bad address) and reports how many; it never
raises for the file's content.  A journal that fails the ownership rule
raises ``UntrustedFile`` (an OSError naming the file and the reason) from
``load`` and ``append``: at start-up the service then refuses to start.
``append`` and ``compact`` raise OSError, which the service logs before
retrying on the next commit.  Appends are written to the kernel at once
(they survive the process being killed) but fsync'd only at compaction: a
power cut may lose the last few seconds of logins, never corrupt the rest.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, BinaryIO

import attrs

from pbsyslog.patterns.model import _CANONICAL_IPV4, normalise_ip

# What ``load`` caps deadlines with when the caller does not pass the
# config's grace (and max_session): nothing restored outlives a week.
UNCONFIGURED_GRACE = 7 * 86400.0
DEFAULT_MAX_SESSION = 86400.0  # Config's default max_session

# Compaction is due when the file holds more than LINES_FACTOR lines per live
# entry + SLACK_LINES, or more than BYTES_FACTOR times what the last
# compaction wrote + SLACK_BYTES.
LINES_FACTOR = 2
SLACK_LINES = 10_000
BYTES_FACTOR = 4
SLACK_BYTES = 1 << 20

JOURNAL_MODE = 0o600


class UntrustedFile(OSError):
    """A state file or map that someone other than this process could have written or redirected."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, why)
        self.filename = path
        self.why = why

    def __str__(self) -> str:
        return f"refusing {self.filename}: {self.why}"


def check_owned(path: str, st: os.stat_result) -> None:
    """Raise UntrustedFile unless ``st`` (lstat or fstat of ``path``) is a regular file only this process may write."""
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedFile(path, "it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedFile(path, "it is not a regular file")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise UntrustedFile(path, f"it is owned by uid {st.st_uid}, not by this process (uid {euid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedFile(path, f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")


def _open_owned(path: str, flags: int) -> int:
    """``os.open`` without following a symbolic link; the descriptor of a file that passes ``check_owned``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UntrustedFile(path, "it is a symbolic link") from None
        raise
    try:
        check_owned(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


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
    sessions (keys as tuples again).  ``capped`` counts the live entries
    whose deadline, floor or a session start was cut down to what ``now``
    allows.
    """

    deadlines: dict[str, float]
    patterns: dict[str, str]
    bad_lines: int
    sessions: dict[str, Sessions] = attrs.field(factory=dict)
    capped: int = 0


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


def _finite(text: Any) -> float:
    """``float(text)``; ValueError for NaN and the infinities too."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _parse_sessions(floor_text: str, text: str) -> Sessions:
    """Read ``FLOOR SESSIONS``; ValueError (json's included) for anything malformed."""
    floor = _finite(floor_text)
    keyed = []
    for item in json.loads(text):
        key, starts = item
        if not isinstance(starts, list) or not starts:
            raise ValueError("a session entry without start times")
        keyed.append((_key(key), [_finite(t) for t in starts]))
    return floor, keyed


def _cap_sessions(sessions: Sessions, start_cap: float, floor_cap: float) -> tuple[Sessions, bool]:
    """``sessions`` with the floor cut to ``floor_cap`` and each start to ``start_cap``; and whether any was cut."""
    floor, keyed = sessions
    cut = floor > floor_cap
    if cut:
        floor = floor_cap
    for _, starts in keyed:
        for i, start in enumerate(starts):
            if start > start_cap:
                starts[i] = start_cap
                cut = True
    return (floor, keyed), cut


class StateJournal:
    """The journal file ``PATH`` (by convention ``<dbfile>.state``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines = 0
        self._bytes = 0
        self._compacted_bytes = 0
        self._file: BinaryIO | None = None

    def load(
        self, now: float, *, grace: float | None = None, max_session: float = DEFAULT_MAX_SESSION
    ) -> Loaded:
        """Read the journal; return the entries whose deadline is after ``now``, capped as the module says.

        ``grace`` and ``max_session`` are the service's settings (None: a
        deadline is capped at ``now`` + ``UNCONFIGURED_GRACE``).  Raises
        UntrustedFile for a journal this process does not own.
        """
        # Without the settings, only a coarse bound: a week ahead, session
        # starts included (callers that know them pass them).
        start_cap = now if grace is not None else now + UNCONFIGURED_GRACE
        if grace is None:
            grace = UNCONFIGURED_GRACE
        try:
            fd = _open_owned(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return Loaded({}, {}, 0)
        with open(fd, "rb") as f:
            data = f.read()
        self._bytes = len(data)
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
        # Exactly the text the service writes for one address: not a
        # network ("10", "192.168"), not another spelling of one.  The
        # IPv4 regex first: normalise_ip's call costs twice as much, and
        # it would return such an address unchanged anyway.
        ipv4 = _CANONICAL_IPV4.match
        canonical = normalise_ip
        for line in lines:
            fields = line.split()
            if len(fields) == 4 and fields[0] == "+":
                ip = fields[1]
                try:
                    deadline = float(fields[2])
                except ValueError:
                    bad += 1
                    continue
                if ipv4(ip) is None and canonical(ip) != ip:
                    bad += 1
                    continue
                name = fields[3]
                deadlines[ip] = deadline  # the last line wins, earlier or later
                patterns[ip] = names.setdefault(name, name)
                if sessions:
                    sessions.pop(ip, None)
            elif len(fields) == 2 and fields[0] == "-":
                ip = fields[1]
                if ipv4(ip) is None and canonical(ip) != ip:
                    bad += 1
                    continue
                deadlines.pop(ip, None)
                patterns.pop(ip, None)
                sessions.pop(ip, None)
            elif len(fields) >= 6 and fields[0] == "+":
                fields = line.split(" ", 5)
                ip = fields[1]
                try:
                    deadline = float(fields[2])
                    open_ = _parse_sessions(fields[4], fields[5])
                except (ValueError, TypeError, IndexError):
                    bad += 1
                    continue
                if ipv4(ip) is None and canonical(ip) != ip:
                    bad += 1
                    continue
                name = fields[3]
                deadlines[ip] = deadline
                patterns[ip] = names.setdefault(name, name)
                sessions[ip] = open_
            else:
                bad += 1
        # Drop what has expired in place (usually little): copying 1M
        # entries into new dicts cost more than reading them.  (NaN is not
        # after now either.)
        for ip in [ip for ip, d in deadlines.items() if not d > now]:
            del deadlines[ip], patterns[ip]
            sessions.pop(ip, None)
        # Nothing the service wrote lies further ahead than a login now
        # would give (a session open now: its start + max_session + grace).
        plain_cap = now + grace
        session_cap = plain_cap + max_session
        capped: set[str] = set()
        for ip in [ip for ip, d in deadlines.items() if d > plain_cap]:
            cap = session_cap if ip in sessions else plain_cap
            if deadlines[ip] > cap:
                deadlines[ip] = cap
                capped.add(ip)
        for ip, open_ in sessions.items():
            sessions[ip], cut = _cap_sessions(open_, start_cap, plain_cap)
            if cut:
                capped.add(ip)
        return Loaded(deadlines, patterns, bad, sessions, len(capped))

    @property
    def lines(self) -> int:
        """Lines in the file (as far as this process knows)."""
        return self._lines

    @property
    def bytes(self) -> int:
        """Bytes in the file (as far as this process knows)."""
        return self._bytes

    @property
    def compacted_bytes(self) -> int:
        """Bytes the last compaction wrote (0 before the first)."""
        return self._compacted_bytes

    def needs_compaction(self, live_entries: int) -> bool:
        """Whether the file has grown enough past ``live_entries`` entries to be rewritten: too many lines or bytes."""
        return (
            self._lines > LINES_FACTOR * live_entries + SLACK_LINES
            or self._bytes > BYTES_FACTOR * self._compacted_bytes + SLACK_BYTES
        )

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
            self._file = self._open_for_append()
        # An unbuffered write may write only part (a full disk does that
        # without an error): write the rest, and let the error that follows
        # reach the caller, which then rewrites the whole journal.
        data = memoryview("".join(parts).encode("ascii"))
        self._lines += len(parts)
        while data:
            written = self._file.write(data)
            if not written:
                raise OSError(errno.ENOSPC, f"{self.path}: short write")
            self._bytes += written
            data = data[written:]

    def _open_for_append(self) -> BinaryIO:
        """The append handle: a new file made 0600, or one that passes ``check_owned``; never through a symlink."""
        flags = os.O_WRONLY | os.O_APPEND
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, JOURNAL_MODE)
        except FileExistsError:
            fd = _open_owned(self.path, flags)
        else:
            try:
                os.fchmod(fd, JOURNAL_MODE)  # whatever the umask
            except BaseException:
                os.close(fd)
                raise
        self._bytes = os.fstat(fd).st_size
        return open(fd, "ab", buffering=0)

    def compact(self, entries: Mapping[str, tuple[float, str]], sessions: Mapping[str, Sessions] = {}) -> None:
        """Replace the journal by exactly ``entries`` ({ip: (deadline, pattern)}) and their ``sessions``, atomically."""
        tmp = self.path + ".tmp"
        data = "".join(
            f"+ {ip} {deadline!r} {pattern or '-'}\n" if ip not in sessions
            else _line(ip, deadline, pattern, sessions[ip])
            for ip, (deadline, pattern) in entries.items()
        ).encode("ascii")
        # Whatever is at the temporary name (a file left by a failed
        # compaction, or a symlink planted there) goes; a directory stays,
        # and O_EXCL then fails.  The new file is this process's own.
        try:
            if not stat.S_ISDIR(os.lstat(tmp).st_mode):
                os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, JOURNAL_MODE)
        try:
            with open(fd, "wb") as f:
                os.fchmod(fd, JOURNAL_MODE)  # whatever the umask
                f.write(data)
                f.flush()
                os.fsync(fd)
            os.rename(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.close()
        self._lines = len(entries)
        self._bytes = self._compacted_bytes = len(data)
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
