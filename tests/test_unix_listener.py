"""The UNIX datagram listener: the kernel names each sender's uid, and only the listed uids are heard."""

from __future__ import annotations

import os
import socket

import pytest
from twisted.internet.task import Clock

from pbsyslog.config import Config, ConfigError
from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.unix import SO_PASSCRED, UnixSyslogProtocol, sender_uid


def test_kernel_credentials_name_the_sender() -> None:
    """A datagram read with SO_PASSCRED carries the sending process's own uid."""
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        sender.send(b"<22>x")
        data, ancillary, _, _ = receiver.recvmsg(100, socket.CMSG_SPACE(12))
    assert data == b"<22>x" and sender_uid(ancillary) == os.geteuid()
    assert sender_uid([]) is None


class Recorder:
    """A listener context that records what it hands over and whom it refuses."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, str]] = []
        self.refused: list[str] = []
        self.counters = TransportCounters()
        self.ctx = Listening(lambda frame, peer: self.frames.append((frame, peer)), lambda host: True,
                             self.refused.append, self.counters, Limits(max_frame=600), Clock())


def test_only_listed_uids_are_heard() -> None:
    """Datagrams from other uids, or without credentials, are refused and counted; the rest handed over in order."""
    r = Recorder()
    UnixSyslogProtocol(r.ctx, [0, 104]).datagramsReceived(
        [(b"<22>one\n", 0), (b"<22>forged", 65534), (b"<22>two", 104), (b"<22>none", None), (b"x" * 601, 0), (b"\n", 0)])
    assert r.frames == [(b"<22>one", "uid 0"), (b"<22>two", "uid 104")]
    assert r.refused == ["uid 65534", "a sender without credentials"]
    assert (r.counters.untrusted, r.counters.oversize, r.counters.frames) == (2, 1, 2)


def test_config_reads_and_writes_a_unix_listener() -> None:
    """protocol = "unix" takes path, uids (root by default) and hostnames, nothing of a network listener's."""
    config = Config.from_mapping({"listen": [{"protocol": "unix", "path": "/run/pbsyslog/syslog.sock"}]})
    (listener,) = config.listen
    assert (listener.path, listener.uids, str(listener)) == ("/run/pbsyslog/syslog.sock", (0,), "unix /run/pbsyslog/syslog.sock")
    assert Config.from_mapping(config.to_toml_mapping()) == config
    for bad, message in (({"port": 5514}, "unknown setting 'port'"), ({"allow": ["127.0.0.1"]}, "unknown setting 'allow'"),
                         ({"uids": []}, "uids"), ({"uids": ["root"]}, "uids"), ({"path": ""}, "path")):
        item = {"protocol": "unix", "path": "/run/x.sock", **bad}
        with pytest.raises(ConfigError, match=message):
            Config.from_mapping({"listen": [item]})
