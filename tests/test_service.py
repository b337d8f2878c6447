"""Service wiring: frames in, batched map commits, expiry on the reactor clock."""

from itertools import pairwise
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from pbsyslog.config import Config, ConfigError, Listener
from pbsyslog.inputs.udp import MAX_DATAGRAM
from pbsyslog.outputs.berkeley import open_output
from pbsyslog.tap import Options
from pbsyslog.wiring import build

LOGIN = (
    b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
    b"rip=%s, lip=192.0.2.1, mpid=1"
)
FAILED = (
    b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): "
    b"user=<alice>, method=PLAIN, rip=%s, lip=192.0.2.1, session=<y>"
)


@attrs.define
class FakeUDPPort:
    """What listenUDP returns, enough for the service."""

    port: int
    interface: str
    stopped: bool = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface, self.port)

    def stopListening(self) -> None:
        self.stopped = True


class Reactor(MemoryReactorClock):
    """MemoryReactorClock plus listenUDP, which Twisted's fake lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, int]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakeUDPPort:
        self.udp.append((port, protocol, interface, maxPacketSize))
        return FakeUDPPort(port, interface)


def start(tmp_path: Path, **settings: Any) -> tuple[Any, Reactor]:
    """Build and start a service on a fake reactor with a real map file in tmp_path."""
    raw = {"dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none", **settings}
    reactor = Reactor()
    service = build(Config.from_mapping(raw), reactor)
    service.startService()
    return service, reactor


def map_keys(tmp_path: Path) -> set[str]:
    """Read the map's keys from a separate handle, as another process would."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    try:
        return m.keys()
    finally:
        m.close()


def test_start_binds_configured_listeners(tmp_path: Path) -> None:
    """Every configured listener is bound, UDP with a 64 KiB datagram size."""
    service, reactor = start(tmp_path)
    assert [(p, i, size) for p, _, i, size in reactor.udp] == [(5514, "127.0.0.1", MAX_DATAGRAM)]
    assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(5514, "127.0.0.1")]
    assert (tmp_path / "map.db").exists()
    service.stopService()


def test_login_reaches_map_in_next_turn_and_expires(tmp_path: Path) -> None:
    """A login is committed on the next reactor turn and removed at the first tick after the grace."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"192.0.2.10")
    assert map_keys(tmp_path) == set()
    reactor.advance(0)
    assert map_keys(tmp_path) == {"192.0.2.10"}
    reactor.advance(55)
    assert map_keys(tmp_path) == {"192.0.2.10"}
    reactor.advance(5)
    assert map_keys(tmp_path) == set()
    service.stopService()


def test_changes_of_one_turn_are_one_commit(tmp_path: Path) -> None:
    """Logins received in one reactor turn are written with a single map commit."""
    service, reactor = start(tmp_path)
    commits = []
    original = service.outputs.apply
    service.outputs.apply = lambda **kw: (commits.append(kw), original(**kw))[1]
    for i in range(20):
        service.receive(LOGIN % b"192.0.2.%d" % i)
    reactor.advance(0)
    assert len(commits) == 1
    assert map_keys(tmp_path) == {f"192.0.2.{i}" for i in range(20)}
    service.stopService()


def test_failed_login_and_garbage_add_nothing(tmp_path: Path) -> None:
    """A failed login, a non-syslog frame and an unknown program never reach the map."""
    service, reactor = start(tmp_path)
    service.receive(FAILED % b"192.0.2.11")
    service.receive(b"<999>garbage")
    service.receive(b"<22>Nov 29 14:22:55 vm sshd[1]: Accepted password for a from 192.0.2.12 port 1")
    reactor.advance(0)
    assert map_keys(tmp_path) == set()
    assert service.pipeline.counters.malformed == 1
    service.stopService()


def test_loopback_clients_need_the_setting(tmp_path: Path) -> None:
    """A login from 127.0.0.5 is refused by default and accepted with authorise_loopback."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"127.0.0.5")
    reactor.advance(0)
    assert map_keys(tmp_path) == set()
    assert service.pipeline.counters.refused == 1
    service.stopService()
    service, reactor = start(tmp_path, authorise_loopback=True)
    service.receive(LOGIN % b"127.0.0.5")
    reactor.advance(0)
    assert map_keys(tmp_path) == {"127.0.0.5"}
    service.stopService()


def test_stale_entries_removed_at_start(tmp_path: Path) -> None:
    """Entries left from an earlier run, which nobody tracks, are removed at start-up."""
    m = open_output("postfix-hash", str(tmp_path / "map"))
    m.apply(add=["192.0.2.99"])
    m.close()
    service, _ = start(tmp_path)
    assert map_keys(tmp_path) == set()
    service.stopService()


def test_failed_write_is_healed_on_next_tick(tmp_path: Path) -> None:
    """When a commit raises, the next expiry tick rebuilds the map from the tracker."""
    service, reactor = start(tmp_path)
    original = service.outputs.apply
    calls = []

    def broken(**kw: Any) -> None:
        calls.append(kw)
        if len(calls) == 1:
            raise OSError("disk full")
        original(**kw)

    service.outputs.apply = broken
    service.receive(LOGIN % b"192.0.2.20")
    reactor.advance(0)
    assert map_keys(tmp_path) == set()
    reactor.advance(5)
    assert map_keys(tmp_path) == {"192.0.2.20"}
    service.stopService()


def test_tick_survives_errors(tmp_path: Path) -> None:
    """An exception inside the expiry tick does not stop the LoopingCall."""
    service, reactor = start(tmp_path)
    service.tracker.expire = lambda now: 1 / 0
    reactor.advance(5)
    reactor.advance(5)
    assert service._expiry.running
    service.stopService()


def test_options_override_file(tmp_path: Path) -> None:
    """--udp/--tcp replace the file's listeners; --dbfile and --grace override."""
    o = Options()
    o.parseOptions(["--udp", "[::1]:1514", "--tcp", "127.0.0.2:1515", "--dbfile", str(tmp_path / "m"), "--grace", "120"])
    assert o.config.listen == (Listener("udp", "::1", 1514), Listener("tcp", "127.0.0.2", 1515))
    assert (o.config.dbfile, o.config.grace) == (str(tmp_path / "m"), 120.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--grace", "x"],
        ["--udp", "nowhere"],
        ["--config", "/nonexistent.toml"],
        ["--grace", "5"],
        ["--dbfile", "/nonexistent-dir/map"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    """Bad options or config raise UsageError (twistd prints it and exits non-zero)."""
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


def test_unknown_pattern_name_is_usage_error(tmp_path: Path) -> None:
    """A config enabling a pattern that does not exist fails before start-up."""
    conf = tmp_path / "c.toml"
    conf.write_text('patterns = ["no-such-daemon"]\n')
    with pytest.raises(usage.UsageError, match="no-such-daemon"):
        Options().parseOptions(["--config", str(conf)])


def test_burst_is_coalesced_by_commit_interval(tmp_path: Path) -> None:
    """Logins spread over one second cost one commit per commit_interval, each within it of arrival."""
    service, reactor = start(tmp_path, commit_interval=0.25)
    commits: list[float] = []
    original = service.outputs.apply
    service.outputs.apply = lambda **kw: (commits.append(reactor.seconds()), original(**kw))[1]
    for i in range(100):
        service.receive(LOGIN % b"192.0.2.%d" % i)
        reactor.advance(0.01)
    reactor.advance(0.5)
    assert map_keys(tmp_path) == {f"192.0.2.{i}" for i in range(100)}
    assert 4 <= len(commits) <= 6, commits
    assert all(b - a >= 0.25 - 1e-9 for a, b in pairwise(commits)), commits
    service.stopService()


def test_isolated_login_is_committed_at_once(tmp_path: Path) -> None:
    """After a quiet spell, a login is committed on the next reactor turn, not after commit_interval."""
    service, reactor = start(tmp_path, commit_interval=0.25)
    service.receive(LOGIN % b"192.0.2.1")
    reactor.advance(0)
    reactor.advance(3)
    service.receive(LOGIN % b"192.0.2.2")
    reactor.advance(0)
    assert map_keys(tmp_path) == {"192.0.2.1", "192.0.2.2"}
    service.stopService()


def restart(tmp_path: Path, service: Any, at: float, **settings: Any) -> tuple[Any, Reactor]:
    """Stop ``service`` and start a new one on a fresh reactor whose clock reads ``at``."""
    service.stopService()
    raw = {"dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none", **settings}
    reactor = Reactor()
    reactor.advance(at)
    new = build(Config.from_mapping(raw), reactor)
    new.startService()
    return new, reactor


def test_restart_keeps_original_deadlines(tmp_path: Path) -> None:
    """After a restart an authorisation keeps its first deadline: not lost, not renewed."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"192.0.2.30")
    reactor.advance(0)
    service, reactor = restart(tmp_path, service, at=40)
    assert map_keys(tmp_path) == {"192.0.2.30"}
    assert service.tracker.deadline("192.0.2.30") == 60
    assert service.tracker.pattern("192.0.2.30") == "dovecot-login"
    reactor.advance(20)
    assert map_keys(tmp_path) == set()
    service.stopService()


def test_expired_entries_do_not_come_back(tmp_path: Path) -> None:
    """An authorisation whose grace ran out while the service was down is not restored."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"192.0.2.31")
    reactor.advance(0)
    service, reactor = restart(tmp_path, service, at=61)
    assert map_keys(tmp_path) == set()
    assert len(service.tracker) == 0
    service.stopService()


def test_refreshed_deadline_survives_restart(tmp_path: Path) -> None:
    """A second login's later deadline is what a restart restores."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"192.0.2.32")
    reactor.advance(30)
    service.receive(LOGIN % b"192.0.2.32")
    reactor.advance(0)
    service, reactor = restart(tmp_path, service, at=70)
    assert service.tracker.deadline("192.0.2.32") == 90
    assert map_keys(tmp_path) == {"192.0.2.32"}
    service.stopService()


def test_clean_stop_writes_last_batch(tmp_path: Path) -> None:
    """A login still waiting for its coalesced commit is written when the service stops."""
    service, reactor = start(tmp_path, commit_interval=0.5)
    service.receive(LOGIN % b"192.0.2.33")
    reactor.advance(0)
    service.receive(LOGIN % b"192.0.2.34")
    assert map_keys(tmp_path) == {"192.0.2.33"}
    service.stopService()
    assert map_keys(tmp_path) == {"192.0.2.33", "192.0.2.34"}
    service, _ = restart(tmp_path, service, at=1)
    assert service.tracker.ips() == {"192.0.2.33", "192.0.2.34"}
    service.stopService()


def test_corrupt_map_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    """A map file Berkeley DB cannot open is renamed and replaced by one built from state."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"192.0.2.35")
    reactor.advance(0)
    service.stopService()
    (tmp_path / "map.db").write_bytes(b"this is not a Berkeley DB file" * 100)
    service, _ = restart(tmp_path, service, at=10)
    assert map_keys(tmp_path) == {"192.0.2.35"}
    aside = list(tmp_path.glob("map.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    service.stopService()


def test_reload_swaps_patterns_and_trust_keeps_state(tmp_path: Path) -> None:
    """A reload applies new patterns and allow lists at once, and keeps every authorisation."""
    base = {"dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none"}
    new = {**base, "patterns": ["courier"], "listen": [
        {"protocol": "udp", "host": "127.0.0.1", "port": 5514, "allow": ["127.0.0.2/32"]}]}
    reactor = Reactor()
    first = {**base, "listen": [{"protocol": "udp", "host": "127.0.0.1", "port": 5514}]}
    service = build(Config.from_mapping(first), reactor, reload_config=lambda: Config.from_mapping(new))
    service.startService()
    udp = reactor.udp[0][1]
    udp.datagramReceived(LOGIN % b"192.0.2.40", ("127.0.0.1", 1))
    reactor.advance(0)
    service.reload()
    udp.datagramReceived(LOGIN % b"192.0.2.41", ("127.0.0.2", 1))  # allowed sender, dovecot now disabled
    udp.datagramReceived(b"<22>Nov 29 14:44:39 vm pop3d: LOGIN, user=a, ip=[192.0.2.42], port=[4]", ("127.0.0.1", 1))
    udp.datagramReceived(b"<22>Nov 29 14:44:39 vm pop3d: LOGIN, user=a, ip=[192.0.2.43], port=[4]", ("127.0.0.2", 1))
    reactor.advance(0.5)  # past the commit interval since the first commit
    assert map_keys(tmp_path) == {"192.0.2.40", "192.0.2.43"}
    assert service.untrusted == 1
    service.stopService()


def test_broken_reload_keeps_running_config(tmp_path: Path) -> None:
    """A reload whose config does not load changes nothing."""
    def broken() -> Config:
        raise ConfigError("grace: must be a positive number of seconds, got -1")

    reactor = Reactor()
    service = build(Config.from_mapping({"dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none"}),
                    reactor, reload_config=broken)
    service.startService()
    before = service.pipeline.table
    service.reload()
    assert service.pipeline.table is before and service.tracker.grace == 60
    service.receive(LOGIN % b"192.0.2.44")
    reactor.advance(0)
    assert map_keys(tmp_path) == {"192.0.2.44"}
    service.stopService()


def test_ignored_login_logged_at_debug(tmp_path: Path) -> None:
    """A login from a never-authorised address is logged at debug level with its reason."""
    from twisted.logger import LogLevel, globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        service, reactor = start(tmp_path, never=["198.51.100.0/24"])
        service.receive(LOGIN % b"198.51.100.9")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    debug = [e for e in seen if e.get("log_level") == LogLevel.debug and e.get("ip") == "198.51.100.9"]
    assert debug and debug[0]["reason"] == "never"
    service.stopService()
