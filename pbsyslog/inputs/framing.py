"""Syslog stream framing: bytes from a TCP/TLS stream -> whole frames.

Contract: ``StreamFramer.feed(data)`` takes whatever the transport read and
returns the frames completed by it, in order, as rsyslog's imtcp/imptcp
receivers split them (RFC 6587):

* a frame that starts with a digit is octet-counted, ``MSG-LEN SP MSG``,
  when MSG-LEN is 1 to 10 digits, non-zero, and followed by a space;
* anything else (including a bad count) runs to the next LF.  Like OpenBSD
  syslogd, a NUL also ends such a frame, so NUL-terminated senders work;
* both framings may be mixed on one connection, and a frame may arrive
  split over any number of reads.

Returned frames have trailing LF / CR / NUL bytes stripped (rsyslog counts
the trailing LF of an octet-counted frame).  ``datagram_frame`` does the same
for one UDP datagram.

Must not: do I/O, import from ``twisted.internet``, raise on any input, or
hold more than about ``max_frame`` bytes.  A frame longer than
``max_frame`` is never buffered whole: what arrived of it is dropped and the
rest is discarded as it arrives.

Failure: bad input is dropped and counted, never raised.  ``oversize``
counts frames longer than ``max_frame``; ``malformed`` counts octet-counted
frames with nothing in them.  Blank lines between LF-terminated frames are
skipped without counting (``\\r\\n`` and ``\\0\\n`` endings produce them).
"""

from __future__ import annotations

import enum
import re

# Longest MSG-LEN we believe.  rsyslog gives up on counts of more than 9-10
# digits; anything longer is a line that happens to start with digits.
_MAX_COUNT_DIGITS = 10

# A run of up to one digit more than we accept, so "too many digits" can be
# told apart from "digits continue in the next read".
_DIGITS = re.compile(rb"[0-9]{1,%d}" % (_MAX_COUNT_DIGITS + 1))

# Bytes stripped from the end of every frame.
_TRAILER = b"\r\n\x00"
TRAILER = _TRAILER  # what a frame loses at its end (the UDP listener strips it inline)


def _find_end(data: bytes, start: int) -> int:
    """Index of the LF or NUL that ends the frame starting at ``start``, or -1."""
    lf = data.find(b"\n", start)
    # NUL is rare: look for it only before the LF (or to the end if no LF).
    nul = data.find(b"\x00", start, lf if lf >= 0 else len(data))
    return nul if nul >= 0 else lf


class _State(enum.Enum):
    IDLE = enum.auto()  # at a frame boundary
    HEAD = enum.auto()  # holding a few leading digits: which framing?
    OCTETS = enum.auto()  # collecting an octet-counted frame
    LINE = enum.auto()  # collecting an LF-terminated frame
    SKIP_OCTETS = enum.auto()  # discarding the rest of an over-long counted frame
    SKIP_LINE = enum.auto()  # discarding up to the next LF/NUL


class StreamFramer:
    """Split one connection's byte stream into syslog frames (RFC 6587)."""

    def __init__(self, max_frame: int = 65536) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be positive, not {max_frame!r}")
        self.max_frame = max_frame
        self.oversize = 0
        self.malformed = 0
        self._state = _State.IDLE
        # The started frame.  A bytearray, not a list of pieces: a frame fed
        # one byte at a time must not cost an object per byte.
        self._buf = bytearray()
        # OCTETS / SKIP_OCTETS: bytes still to come for the current frame.
        self._need = 0

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held (for tests and stats)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they complete."""
        frames: list[bytes] = []
        if not data:
            return frames
        pos = 0
        state = self._state
        if state is _State.HEAD:
            # At most a few digits are held: prepend them and start afresh.
            data = bytes(self._buf) + data
            self._reset()
        elif state is not _State.IDLE:
            pos = self._resume(data, frames)
            if pos >= len(data):
                return frames
        self._scan(data, pos, frames)
        return frames

    def _reset(self) -> None:
        self._state = _State.IDLE
        self._buf = bytearray()
        self._need = 0

    def _hold(self, state: _State, part: bytes, need: int = 0) -> None:
        self._state = state
        self._buf = bytearray(part)
        self._need = need

    def _emit(self, frame: bytes, frames: list[bytes], counted: bool) -> None:
        frame = frame.rstrip(_TRAILER)
        if frame:
            frames.append(frame)
        elif counted:
            self.malformed += 1

    def _resume(self, data: bytes, frames: list[bytes]) -> int:
        """Continue the frame left open by the previous read; return where it ends in ``data``."""
        n = len(data)
        state = self._state
        if state is _State.SKIP_OCTETS:
            if n < self._need:
                self._need -= n
                return n
            taken = self._need
            self._reset()
            return taken
        if state is _State.OCTETS:
            if n < self._need:
                self._buf += data
                self._need -= n
                return n
            taken = self._need
            self._buf += memoryview(data)[:taken]
            frame = bytes(self._buf)
            self._reset()
            self._emit(frame, frames, counted=True)
            return taken
        # LINE or SKIP_LINE: only the new bytes need searching for the end.
        end = _find_end(data, 0)
        if state is _State.SKIP_LINE:
            if end < 0:
                return n
            self._reset()
            return end + 1
        if end < 0:
            # + 1: room for a CR that may turn out to end the frame.
            if len(self._buf) + n > self.max_frame + 1:
                self.oversize += 1
                self._reset()
                self._state = _State.SKIP_LINE
            else:
                self._buf += data
            return n
        last = data[end - 1] if end else (self._buf[-1] if self._buf else 0)
        if len(self._buf) + end - (last == 0x0D) > self.max_frame:
            self.oversize += 1
            self._reset()
            return end + 1
        self._buf += memoryview(data)[:end]
        frame = bytes(self._buf)
        self._reset()
        self._emit(frame, frames, counted=False)
        return end + 1

    def _scan(self, data: bytes, pos: int, frames: list[bytes]) -> None:
        """Split ``data[pos:]`` from a frame boundary; keep any incomplete tail."""
        # The hot loop: a read may hold thousands of small frames.  Work with
        # offsets into `data` (one slice per frame), and look for NUL once
        # ahead rather than once per frame: it is rare.
        n = len(data)
        max_frame = self.max_frame
        digits = _DIGITS.match
        append = frames.append
        nul = data.find(b"\x00", pos)
        find = data.find
        while pos < n:
            if 0x30 <= data[pos] <= 0x39:
                # The common case first: 1 to 10 digits and a space.  Then
                # the digits match is exactly these, so this is what the
                # general code below would do (without a regex or a call).
                space = find(b" ", pos + 1, pos + _MAX_COUNT_DIGITS + 1)
                if space > 0 and data[pos:space].isdigit():
                    count = int(data[pos:space])
                    start = space + 1
                    end = start + count
                    if 0 < count <= max_frame and end <= n:
                        frame = data[start:end].rstrip(_TRAILER)
                        if frame:
                            append(frame)
                        else:
                            self.malformed += 1
                        pos = end
                        continue
                m = digits(data, pos)
                assert m is not None  # data[pos] is a digit
                stop = m.end()
                width = stop - pos
                if stop == n and width <= _MAX_COUNT_DIGITS:
                    # Cannot tell the framing until the next byte arrives.
                    self._hold(_State.HEAD, data[pos:])
                    return
                if width <= _MAX_COUNT_DIGITS and data[stop] == 0x20:
                    count = int(data[pos:stop])
                    if count > 0:
                        start = stop + 1
                        end = start + count
                        if count > max_frame:
                            self.oversize += 1
                            if end > n:
                                self._state = _State.SKIP_OCTETS
                                self._need = end - n
                                return
                        elif end > n:
                            self._hold(_State.OCTETS, data[start:], end - n)
                            return
                        else:
                            self._emit(data[start:end], frames, counted=True)
                        pos = end
                        continue
                # Bad count: fall through and treat the frame as a line.
            if 0 <= nul < pos:
                nul = data.find(b"\x00", pos)
            end = data.find(b"\n", pos)
            if nul >= 0 and (end < 0 or nul < end):
                end = nul
            if end < 0:
                if n - pos > max_frame + 1:  # + 1: room for a CR before the LF
                    self.oversize += 1
                    self._state = _State.SKIP_LINE
                else:
                    self._hold(_State.LINE, data[pos:])
                return
            # The frame's length does not count a CR of a CR LF ending.
            if end - pos - (end > pos and data[end - 1] == 0x0D) > max_frame:
                self.oversize += 1
            else:
                frame = data[pos:end].rstrip(_TRAILER)
                if frame:  # blank lines are skipped silently
                    append(frame)
            pos = end + 1


def datagram_frame(data: bytes) -> bytes | None:
    """Return one UDP datagram as a frame (trailing LF/CR/NUL stripped), or None if empty."""
    frame = data.rstrip(_TRAILER)
    return frame or None
