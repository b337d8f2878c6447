"""Open sessions survive a restart: the tracker hands them over, the journal keeps them, the service restores them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_service import map_keys, restart, start

from pbsyslog.cli import admin
from pbsyslog.config import Config
from pbsyslog.journal import StateJournal
from pbsyslog.tracker import Tracker

IP, OTHER = "192.0.2.7", "192.0.2.8"

# ------------------------------------------------------------------ tracker --


def test_sessions_round_trip_through_restore() -> None:
    """What sessions()/all_sessions() give back, restore() opens again: counts, deadline, and a logout that shortens."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, "dovecot-login", session=("group", "vm", "dovecot", "K1"))
    t.login(OTHER, 110, "courier-login", session=("ip", "vm", "imapd", OTHER), counted=True)
    t.login(OTHER, 120, "courier-login", session=("ip", "vm", "imapd", OTHER), counted=True)
    saved = t.all_sessions()
    assert saved[OTHER] == (150, [(("ip", "vm", "imapd", OTHER), [110, 120])])
    u = Tracker(grace=30, max_session=3600)
    for ip, (floor, sessions) in saved.items():
        assert u.restore(ip, t.deadline(ip), t.pattern(ip), floor, sessions) == "added"
    assert u.open_count == 3 and u.open_sessions(OTHER) == 2
    assert u.deadline(IP) == t.deadline(IP) == 100 + 3600 + 30
    assert u.logout(("group", "vm", "dovecot", "K1"), 500) == (IP, "shortened")
    assert u.deadline(IP) == 530
    assert u.logout(("ip", "vm", "imapd", OTHER), 600) == (OTHER, None)  # one of two closed: still held
    assert u.logout(("ip", "vm", "imapd", OTHER), 700) == (OTHER, "shortened")
    assert u.deadline(OTHER) == 730 and u.open_count == 0


def test_restored_floor_is_kept_after_the_sessions_close() -> None:
    """A floor above the sessions (a later sessionless login) still holds once the restored sessions close."""
    u = Tracker(grace=30, max_session=3600)
    u.restore(IP, 3730, "p", 2000, [(("s", 1), [100])])
    assert u.logout(("s", 1), 500) == (IP, "shortened")
    assert u.deadline(IP) == 2000


def test_restore_respects_max_sessions() -> None:
    """Restoring more sessions than max_sessions closes the oldest as if its logout were lost."""
    u = Tracker(grace=30, max_session=3600, max_sessions=2)
    u.restore(IP, 3730, "p", 130, [(("s", 1), [100]), (("s", 2), [110]), (("s", 3), [120])])
    assert u.open_count == 2
    assert u.logout(("s", 1), 500) is None


def test_touched_names_session_changes_that_move_no_deadline() -> None:
    """take_touched() reports a logout that closed one of two sessions, though the deadline stayed."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=("s", 1))
    t.login(IP, 110, session=("s", 2))
    t.login(OTHER, 110)
    assert t.take_touched() == {IP}
    assert t.take_touched() == set()
    assert t.logout(("s", 1), 200) == (IP, None)
    assert t.take_touched() == {IP}


# ------------------------------------------------------------------ journal --


def test_journal_keeps_sessions_and_keys_as_tuples(tmp_path: Path) -> None:
    """Floor and sessions come back exactly, keys as tuples (None and spaces included); IPs without sessions have none."""
    j = StateJournal(str(tmp_path / "s"))
    key = ("pid", "a host", None, "4242")
    j.append({IP: (3730.5, "dovecot-login"), OTHER: (130.0, "courier-login")},
             sessions={IP: (130.25, [(key, [100.125, 101.0])])})
    j.close()
    loaded = StateJournal(str(tmp_path / "s")).load(now=0)
    assert loaded.bad_lines == 0
    assert loaded.deadlines == {IP: 3730.5, OTHER: 130.0}
    assert loaded.patterns[IP] == "dovecot-login"
    assert loaded.sessions == {IP: (130.25, [(key, [100.125, 101.0])])}


def test_a_later_line_without_sessions_closes_them(tmp_path: Path) -> None:
    """The last line wins for sessions too: a plain line after one with sessions means none are open."""
    j = StateJournal(str(tmp_path / "s"))
    j.append({IP: (3730.0, "p")}, sessions={IP: (130.0, [(("s", 1), [100.0])])})
    j.append({IP: (530.0, "p")})
    assert StateJournal(str(tmp_path / "s")).load(now=0).sessions == {}
    j.append({IP: (3730.0, "p")}, sessions={IP: (130.0, [(("s", 1), [100.0])])})
    j.append(removed=[IP])
    assert StateJournal(str(tmp_path / "s")).load(now=0).sessions == {}


def test_compact_keeps_sessions(tmp_path: Path) -> None:
    """Compaction writes the sessions of the IPs that have them."""
    j = StateJournal(str(tmp_path / "s"))
    j.compact({IP: (3730.0, "p"), OTHER: (130.0, "q")}, {IP: (130.0, [(("s", 1), [100.0])])})
    loaded = StateJournal(str(tmp_path / "s")).load(now=0)
    assert loaded.sessions == {IP: (130.0, [(("s", 1), [100.0])])} and set(loaded.deadlines) == {IP, OTHER}


def test_malformed_session_fields_are_bad_lines(tmp_path: Path) -> None:
    """Broken JSON, a session without starts, or a bad floor: the line is counted and skipped, the rest loads."""
    path = tmp_path / "s"
    path.write_bytes(
        b"+ 192.0.2.1 500.0 p 130.0 [[[\"s\",1],[100.0]]]\n"
        b"+ 192.0.2.2 500.0 p 130.0 [[[\"s\",2],[100.0]\n"
        b"+ 192.0.2.3 500.0 p 130.0 [[[\"s\",3],[]]]\n"
        b"+ 192.0.2.4 500.0 p x [[[\"s\",4],[100.0]]]\n"
        b"+ 192.0.2.5 500.0 p 130.0 {\"a\": 1}\n"
    )
    loaded = StateJournal(str(path)).load(now=0)
    assert set(loaded.deadlines) == {"192.0.2.1"} and loaded.bad_lines == 4
    assert loaded.sessions == {"192.0.2.1": (130.0, [(("s", 1), [100.0])])}


# ------------------------------------------------------------------ service --

LOGIN = (b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
         b"rip=%s, lip=192.0.2.1, mpid=13339, session=<%s>")
LOGOUT = b"<22>Nov 29 14:30:00 vm dovecot: pop3(alice)<13339><%s>: Disconnected: Logged out top=0/0, retr=0/0, del=0/1, size=160"


def test_open_session_survives_restart_and_its_logout_still_shortens(tmp_path: Path) -> None:
    """A Dovecot session open across a restart keeps the IP authorised; its logout after the restart starts the grace."""
    service, reactor = start(tmp_path)  # grace 60, max_session 86400
    service.receive(LOGIN % (b"192.0.2.40", b"Ks1"))
    reactor.advance(0)
    service, reactor = restart(tmp_path, service, at=1000)
    assert service.tracker.open_sessions("192.0.2.40") == 1
    assert map_keys(tmp_path) == {"192.0.2.40"}
    service.receive(LOGOUT % b"Ks1")
    assert service.tracker.deadline("192.0.2.40") == 1060
    assert service.tracker.open_count == 0
    reactor.advance(60)
    assert map_keys(tmp_path) == set()
    service.stopService()


def test_a_logout_that_moves_no_deadline_is_journalled_by_the_tick(tmp_path: Path) -> None:
    """One of two sessions closed: no commit is due, the next tick journals it, and a restart finds one session."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % (b"192.0.2.41", b"Ka"))
    service.receive(LOGIN % (b"192.0.2.41", b"Kb"))
    reactor.advance(0)
    service.receive(LOGOUT % b"Ka")
    reactor.advance(5)  # one expiry tick, no commit
    loaded = StateJournal(str(tmp_path / "map.state")).load(now=5)
    assert [key[-1] for key, _ in loaded.sessions["192.0.2.41"][1]] == ["Kb"]
    service, reactor = restart(tmp_path, service, at=10)
    assert service.tracker.open_sessions("192.0.2.41") == 1
    service.stopService()


def test_sessions_survive_compaction_at_start(tmp_path: Path) -> None:
    """Two restarts in a row (each compacts the journal) still keep the session."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % (b"192.0.2.42", b"Kc"))
    reactor.advance(0)
    service, reactor = restart(tmp_path, service, at=100)
    service, reactor = restart(tmp_path, service, at=200)
    assert service.tracker.open_sessions("192.0.2.42") == 1
    service.receive(LOGOUT % b"Kc")
    assert service.tracker.deadline("192.0.2.42") == 260
    service.stopService()


def test_offline_list_shows_open_sessions_and_add_keeps_them(tmp_path: Path) -> None:
    """With the service stopped, list reads session counts from the journal; add raises the floor and keeps them."""
    service, reactor = restart(tmp_path, _Stopped(), at=time.time())
    service.receive(LOGIN % (b"192.0.2.43", b"Kd"))
    service.receive(LOGIN % (b"192.0.2.44", b"Ke"))
    service.receive(LOGOUT % b"Ke")
    reactor.advance(0)
    service.stopService()
    config = Config.from_mapping({"dbfile": str(tmp_path / "map"), "grace": 60})
    listed = {e["ip"]: e["open_sessions"] for e in admin.request(config, {"cmd": "list"})["entries"]}
    assert listed == {"192.0.2.43": 1, "192.0.2.44": 0}
    # Within what a restart restores (grace + max_session for an IP with open sessions).
    admin.request(config, {"cmd": "add", "ip": "192.0.2.43", "grace": 80_000})
    listed = {e["ip"]: e["open_sessions"] for e in admin.request(config, {"cmd": "list"})["entries"]}
    assert listed["192.0.2.43"] == 1
    service, reactor = restart(tmp_path, _Stopped(), at=time.time())
    assert service.tracker.open_sessions("192.0.2.43") == 1
    assert service.tracker.deadline("192.0.2.43") > time.time() + 79_000
    service.stopService()


def test_restart_caps_what_a_journal_line_claims(tmp_path: Path) -> None:
    """A grant the journal holds beyond grace + max_session (a 200,000 s manual add, say) is cut to that at restart."""
    service, reactor = restart(tmp_path, _Stopped(), at=time.time())
    service.receive(LOGIN % (b"192.0.2.46", b"Kf"))
    reactor.advance(0)
    service.stopService()
    config = Config.from_mapping({"dbfile": str(tmp_path / "map"), "grace": 60})
    admin.request(config, {"cmd": "add", "ip": "192.0.2.46", "grace": 200_000})
    service, reactor = restart(tmp_path, _Stopped(), at=time.time())
    assert time.time() + 80_000 < service.tracker.deadline("192.0.2.46") <= time.time() + 60 + 86_400 + 1
    service.stopService()


def test_tick_compacts_a_journal_grown_by_one_ip_with_many_sessions(tmp_path: Path) -> None:
    """An IP with 2,000 open sessions rewritten on each change: the tick compacts by size (no line count would), the file stays small."""
    import os
    service, reactor = start(tmp_path)
    for i in range(2_000):
        service.receive(LOGIN % (b"192.0.2.45", b"K%06d" % i))
    reactor.advance(0)
    reactor.advance(5)
    line = os.path.getsize(tmp_path / "map.state")  # about one line with every session
    biggest = 0
    for i in range(60):
        service.receive(LOGIN % (b"192.0.2.45", b"L%06d" % i))
        reactor.advance(1)
        biggest = max(biggest, os.path.getsize(tmp_path / "map.state"))
    # Sixty rewrites of that line without compaction would be some 60 times its size.
    assert biggest < 4 * line + 2 * 1024 * 1024 < 60 * line, (biggest, line)
    service.stopService()


class _Stopped:
    """A service already stopped (restart() stops the one it is given)."""

    def stopService(self) -> None:
        pass


def test_touched_holds_only_what_is_still_tracked() -> None:
    """An IP that expires or is removed leaves the touched set: nothing drains it in replay, and it stays bounded."""
    t = Tracker(grace=30, max_session=60)
    t.login(IP, 100, session=("s", 1))
    t.login(OTHER, 100, session=("s", 2))
    t.logout(("s", 1), 110)
    assert t.expire(140) == [IP]
    t.remove(OTHER)
    assert t.take_touched() == set()


def test_open_sessions_at_a_time_leaves_out_those_past_max_session() -> None:
    """open_sessions(ip, now) counts what list shows: sessions begun within max_session of now."""
    t = Tracker(grace=30, max_session=60)
    t.login(IP, 100, session=("s", 1))
    t.login(IP, 150, session=("s", 2))
    assert t.open_sessions(IP) == 2
    assert t.open_sessions(IP, 159) == 2
    assert t.open_sessions(IP, 160) == 1  # the first began 60 s ago: over
    assert t.open_sessions(IP) == 2  # still held until a logout or expiry cleans it up


# ------------------------------------------------- state it will not trust --

FAR = 9_000_000_000.0  # a deadline in the year 2255


def test_restart_restores_no_network_keys_from_the_journal(tmp_path: Path) -> None:
    """Seeded lines '+ 192.168 ...' and '+ 10 ...' (parent networks to Postfix) are skipped; a real address is restored."""
    (tmp_path / "map.state").write_bytes(
        b"+ 192.168 500.0 dovecot-login\n+ 10 500.0 dovecot-login\n"
        b'+ 172.16 500.0 dovecot-login 500.0 [[["s",1],[100.0]]]\n'
        b"+ 192.0.2.50 500.0 dovecot-login\n"
    )
    service, reactor = restart(tmp_path, _Stopped(), at=100)
    assert map_keys(tmp_path) == {"192.0.2.50"}
    assert service.tracker.ips() == {"192.0.2.50"}
    service.stopService()


def test_restart_caps_a_far_deadline(tmp_path: Path) -> None:
    """A journalled deadline centuries ahead comes back capped (at most a week ahead even before the service passes its grace)."""
    from pbsyslog.journal import UNCONFIGURED_GRACE

    (tmp_path / "map.state").write_bytes(f"+ 192.0.2.51 {FAR!r} manual\n".encode())
    service, reactor = restart(tmp_path, _Stopped(), at=100)
    deadline = service.tracker.deadline("192.0.2.51")
    assert deadline is not None and 100 < deadline <= 100 + UNCONFIGURED_GRACE
    service.stopService()


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_service_refuses_to_start_on_a_journal_owned_by_another_user(tmp_path: Path) -> None:
    """A journal another uid owns stops the start-up with UntrustedFile naming it; no map is made from it."""
    import os
    import re

    import pytest

    from pbsyslog.journal import UntrustedFile

    (tmp_path / "map.state").write_bytes(b"+ 10 500.0 dovecot-login\n")
    os.chown(tmp_path / "map.state", 65534, -1)
    with pytest.raises(UntrustedFile, match=re.escape(str(tmp_path / "map.state"))):
        restart(tmp_path, _Stopped(), at=100)
    assert not (tmp_path / "map.db").exists()


@pytest.mark.integration  # needs root: gives a file to another uid (os.chown)
def test_service_refuses_to_start_on_a_map_owned_by_another_user(tmp_path: Path) -> None:
    """A map pre-created by another uid stops the start-up with UntrustedFile naming it."""
    import os
    import re

    import pytest

    from pbsyslog.journal import UntrustedFile

    (tmp_path / "map.db").write_bytes(b"")
    os.chown(tmp_path / "map.db", 65534, -1)
    with pytest.raises(UntrustedFile, match=re.escape(str(tmp_path / "map.db"))):
        restart(tmp_path, _Stopped(), at=100)
