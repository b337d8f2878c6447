"""recvmmsg(2) through ctypes: many UDP datagrams per system call.

Contract: ``Receiver(sock)`` reads, per ``receive(out)`` call, up to
``vlen`` datagrams queued on a non-blocking datagram socket and appends
``(payload, peer host)`` to ``out`` for each, in arrival order, with the
peer host written as ``socket.recvfrom`` writes it (``"192.0.2.7"``,
``"::ffff:192.0.2.7"``, ``"2001:db8::7"``).  It returns how many it read:
fewer than ``vlen`` means the queue was empty when the kernel looked.

Why: on the UDP listener the system calls cost as much as everything
pbsyslog does with a line.  ``recvfrom`` is one call, one 64 KiB buffer
and one address tuple per datagram; ``recvmmsg`` fills ``vlen``
preallocated buffers in one call.  Only Linux (glibc or musl) has it;
``available()`` says whether this one does, and the listener falls back
to ``recvfrom`` otherwise.

Buffers: ``vlen`` x 64 KiB in one anonymous mmap, so a datagram of any
size (UDP's largest payload is 65,527 bytes) arrives whole; pages the
kernel never writes to are never backed by memory.  The peers' raw
socket addresses are turned into host strings through a small cache (a
listener hears from a handful of senders).

How it fails: ``receive`` raises ``OSError`` with the call's errno
(``EAGAIN`` when nothing was queued, as ``recvfrom`` would); nothing is
lost on an error: what a call returned is always appended first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import socket
import struct
import sys
from typing import Any

from pbsyslog.memo import remember

DATAGRAM_BUFFER = 65536
_MSG_DONTWAIT = 0x40
_SOCKADDR_SIZE = 128  # sockaddr_storage
_MAX_PEERS = 4096


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _load() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_recvmmsg = _load()


def available() -> bool:
    """Whether this C library has recvmmsg (Linux)."""
    return _recvmmsg is not None


def _peer(name: bytes) -> str:
    """A raw sockaddr as recvfrom's host string ("" for anything but IPv4 and IPv6)."""
    family = int.from_bytes(name[:2], sys.byteorder)  # sa_family_t, host order
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, name[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, name[8:24])
    return ""  # no address (cannot happen on an IP socket): no allow list matches it


class Receiver:
    """``recvmmsg`` on one socket, with its buffers (see the module header)."""

    def __init__(self, sock: socket.socket, vlen: int = 64) -> None:
        if _recvmmsg is None:
            raise OSError("recvmmsg is not available here")
        self._fd = sock.fileno()
        self.vlen = vlen
        self._data = mmap.mmap(-1, vlen * DATAGRAM_BUFFER)
        data_base = ctypes.addressof(ctypes.c_char.from_buffer(self._data))
        self._names = ctypes.create_string_buffer(vlen * _SOCKADDR_SIZE)
        names_base = ctypes.addressof(self._names)
        self._iovecs = (_IOVec * vlen)()
        self._headers = (_MMsgHdr * vlen)()
        for i in range(vlen):
            self._iovecs[i].iov_base = data_base + i * DATAGRAM_BUFFER
            self._iovecs[i].iov_len = DATAGRAM_BUFFER
            header = self._headers[i].msg_hdr
            header.msg_name = names_base + i * _SOCKADDR_SIZE
            header.msg_namelen = _SOCKADDR_SIZE
            header.msg_iov = ctypes.addressof(self._iovecs[i])
            header.msg_iovlen = 1
        self._headers_address = ctypes.addressof(self._headers)
        self._view = memoryview(self._headers).cast("B")
        size = ctypes.sizeof(_MMsgHdr)
        # The kernel writes msg_namelen and msg_len (and msg_flags) of each
        # header it fills; one copy of the headers as built puts them back.
        self._pristine = bytes(self._view)
        self._size = size
        name_len = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset
        msg_len = _MMsgHdr.msg_len.offset
        self._fields = struct.Struct(f"={name_len}xI{msg_len - name_len - 4}xI{size - msg_len - 4}x")
        self._names_view = memoryview(self._names).cast("B")
        self._peers: dict[bytes, str] = {}

    def receive(self, out: list[tuple[bytes, str]]) -> int:
        """Append up to ``vlen`` queued datagrams to ``out`` as (payload, peer host); return how many."""
        got = _recvmmsg(self._fd, self._headers_address, self.vlen, _MSG_DONTWAIT, None)
        if got < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        if got == 0:
            return 0
        used = got * self._size
        data = self._data
        names = self._names_view
        peers = self._peers
        append = out.append
        offset = 0
        name_at = 0
        for name_len, length in self._fields.iter_unpack(self._view[:used]):
            name = names[name_at:name_at + name_len].tobytes()
            peer = peers.get(name)
            if peer is None:
                peer = remember(peers, name, _peer(name), _MAX_PEERS)
            append((data[offset:offset + length], peer))
            offset += DATAGRAM_BUFFER
            name_at += _SOCKADDR_SIZE
        self._view[:used] = self._pristine[:used]
        return int(got)

    def close(self) -> None:
        """Release the buffers."""
        self._view.release()
        self._names_view.release()
        self._data.close()
