"""UNIX datagram socket: syslog from local processes whose user id the kernel vouches for.

Contract: one message per datagram, as rsyslog's ``omuxsock`` and
``logger -u`` send them.  The socket has ``SO_PASSCRED`` on, so every
datagram arrives with its sender's credentials (``SCM_CREDENTIALS``: pid,
uid, gid) written by the kernel, not by the sender: a process can show only
its own uid (root may show any, and root is trusted anyway).  Unlike a
loopback UDP or TCP listener, which any local user can reach, this one
takes a datagram only from the user ids of its ``uids`` (root, or the user
rsyslog runs as).  The rest is as for UDP: over-long and empty datagrams
are dropped and counted, the others handed over in order.

What it must not do: take a datagram whose credentials it cannot read.

How it fails: a datagram from another uid, or without credentials, is
dropped, counted as untrusted, and ``refused("uid N")`` is told; nothing
raises into the reactor.  A path that exists and is not a socket stops the
start-up (it is never removed).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from collections.abc import Iterable
from errno import EAGAIN, EINTR, EWOULDBLOCK
from typing import Any

from twisted.internet import unix
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pbsyslog.inputs.framing import TRAILER
from pbsyslog.inputs.listening import Listening, hand_over

log = Logger()

# struct ucred: pid_t pid, uid_t uid, gid_t gid (Linux).
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size)
SO_PASSCRED = getattr(socket, "SO_PASSCRED", 16)
SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", 2)


def sender_uid(ancillary: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The uid in a datagram's SCM_CREDENTIALS, or None when it carries none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_CREDENTIALS and len(data) >= _UCRED.size:
            return int(_UCRED.unpack_from(data)[1])
    return None


class UnixSyslogProtocol(DatagramProtocol):
    """Checks each datagram's sender uid, then frames it like a UDP datagram."""

    noisy = False

    def __init__(self, ctx: Listening, uids: Iterable[int]) -> None:
        self._ctx = ctx
        self._uids = frozenset(uids)

    def datagramsReceived(self, batch: list[tuple[bytes, int | None]]) -> None:
        """Every datagram of one read [(data, sender uid)], in order."""
        ctx = self._ctx
        counters = ctx.counters
        max_frame = ctx.limits.max_frame
        frames: list[bytes] = []
        peers: list[str] = []
        for data, uid in batch:
            if uid is None or uid not in self._uids:
                counters.untrusted += 1
                ctx.refused(f"uid {uid}" if uid is not None else "a sender without credentials")
                continue
            if len(data) > max_frame:
                counters.oversize += 1
                continue
            frame = data.rstrip(TRAILER)
            if frame:
                frames.append(frame)
                peers.append(f"uid {uid}")
        if frames:
            hand_over(ctx, frames, peers)


class CredentialsPort(unix.DatagramPort):
    """Twisted's UNIX datagram port, reading each datagram with its sender's credentials (recvmsg)."""

    protocol: Any

    def startListening(self) -> None:
        super().startListening()
        self.socket.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)

    def doRead(self) -> None:
        batch: list[tuple[bytes, int | None]] = []
        read = 0
        recvmsg = self.socket.recvmsg
        try:
            while read < self.maxThroughput:
                data, ancillary, _flags, _addr = recvmsg(self.maxPacketSize, _ANCILLARY)
                batch.append((data, sender_uid(ancillary)))
                read += len(data)
        except OSError as e:
            if e.errno not in (EAGAIN, EWOULDBLOCK, EINTR):
                log.failure("UNIX syslog socket {path}: read failed", path=self.port)
        if batch:
            try:
                self.protocol.datagramsReceived(batch)
            except Exception:
                log.failure("UNIX syslog datagrams could not be handled")


def listen_unix(reactor: Any, path: str, protocol: UnixSyslogProtocol, max_packet: int, mode: int = 0o666) -> Any:
    """Bind ``path`` (a stale socket left by a crash is replaced; anything else there is an error)."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket; not replacing it")
        os.unlink(path)
    if not isinstance(reactor, PosixReactorBase):  # a test's fake reactor
        return reactor.listenUNIXDatagram(path, protocol, maxPacketSize=max_packet, mode=mode)
    port = CredentialsPort(path, protocol, max_packet, mode, reactor)
    port.startListening()
    return port
