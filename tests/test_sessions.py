"""Logout tracking and two-line logins: the tracker's sessions, the connect-line correlator, and real lines through the pipeline."""

from __future__ import annotations

import datetime
import json
import pathlib
import re

import pytest

from pbsyslog.journal import StateJournal
from pbsyslog.patterns import load_table
from pbsyslog.pipeline import Connections, Pipeline
from pbsyslog.syslog import parse
from pbsyslog.tracker import Tracker

IP = "192.0.2.7"
DOVECOT = ("dovecot", "group-key")
from corpus_paths import REAL  # noqa: E402

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


# ------------------------------------------------------------ tracker --


def test_open_session_outlives_the_grace_and_logout_starts_it() -> None:
    """An IP with an open session is still authorised after the grace; its logout moves the deadline to logout + grace."""
    t = Tracker(grace=30, max_session=3600)
    assert t.login(IP, 100, "dovecot-login", session=DOVECOT) == "added"
    assert t.expire(500) == [] and IP in t
    assert t.logout(DOVECOT, 1000) == (IP, "shortened")
    assert t.deadline(IP) == 1030 and t.pattern(IP) == "dovecot-login"
    assert t.expire(1029.9) == [] and t.expire(1030) == [IP]
    assert t.open_count == 0


def test_grace_starts_at_the_last_logout() -> None:
    """With two sessions open, the first logout leaves the IP held open; the grace counts from the second."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=("s", 1))
    t.login(IP, 110, session=("s", 2))
    assert t.logout(("s", 1), 200) == (IP, None)
    assert t.deadline(IP) == 110 + 3600 + 30
    assert t.logout(("s", 2), 300) == (IP, "shortened")
    assert t.deadline(IP) == 330


def test_logout_without_login_changes_nothing() -> None:
    """A logout whose key has no open session returns None and leaves deadlines and counts alone."""
    t = Tracker(grace=30)
    t.login(IP, 100)
    assert t.logout(("s", "unknown"), 110) is None
    assert t.deadline(IP) == 130 and t.open_count == 0


def test_second_logout_of_one_session_changes_nothing() -> None:
    """A session is closed once; a repeated logout line finds nothing and the count never goes negative."""
    t = Tracker(grace=30)
    t.login(IP, 100, session=("s", 1))
    t.logout(("s", 1), 200)
    assert t.logout(("s", 1), 250) is None
    assert t.open_count == 0 and t.open_sessions(IP) == 0 and t.deadline(IP) == 230


def test_lost_logout_still_expires_after_max_session() -> None:
    """A session whose logout never comes ends at login + max_session; the IP expires a grace later and its session is forgotten."""
    t = Tracker(grace=30, max_session=600)
    t.login(IP, 100, session=("s", 1))
    assert t.deadline(IP) == 100 + 600 + 30
    assert t.expire(729) == [] and t.expire(730) == [IP]
    assert t.open_count == 0 and t.logout(("s", 1), 800) is None


def test_logout_after_max_session_does_not_extend() -> None:
    """A logout arriving after the session's cap changes nothing: the session already ended at its cap."""
    t = Tracker(grace=30, max_session=600)
    t.login(IP, 100, session=("s", 1))
    t.login("192.0.2.8", 500, session=("s", 2))
    assert t.logout(("s", 1), 705) is None
    assert t.deadline(IP) == 730


def test_counted_key_holds_several_sessions() -> None:
    """Under a counted key (the address), each logout closes one session; the last one starts the grace."""
    t = Tracker(grace=30, max_session=3600)
    key = ("ip", "host", "pop3d", IP)
    t.login(IP, 100, session=key, counted=True)
    t.login(IP, 120, session=key, counted=True)
    assert t.open_sessions(IP) == 2
    assert t.logout(key, 200) == (IP, None)
    assert t.open_sessions(IP) == 1
    assert t.logout(key, 300) == (IP, "shortened") and t.deadline(IP) == 330
    assert t.logout(key, 310) is None


def test_unique_key_login_again_replaces() -> None:
    """A second login under the same unique key (a repeated line) does not leave a second session that no logout closes."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=("s", 1))
    t.login(IP, 100, session=("s", 1))
    assert t.open_count == 1
    assert t.logout(("s", 1), 200) == (IP, "shortened")
    assert t.deadline(IP) == 230 and t.open_count == 0


def test_unique_key_reused_for_another_address() -> None:
    """A unique key reused by another address replaces the session; the first address keeps its cap, as after a lost logout."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=("s", 1))
    t.login("192.0.2.8", 150, session=("s", 1))
    assert t.open_count == 1
    assert t.logout(("s", 1), 200) == ("192.0.2.8", "shortened")
    assert t.deadline(IP) == 100 + 3600 + 30 and t.deadline("192.0.2.8") == 230


def test_open_sessions_are_bounded_and_evicted_ones_keep_their_cap() -> None:
    """Past max_sessions the oldest session is forgotten as if its logout was lost: the count stays bounded, the IP keeps its cap."""
    t = Tracker(grace=30, max_session=600, max_sessions=100)
    for i in range(1000):
        t.login(f"10.0.{i // 250}.{i % 250}", i, session=("s", i))
    assert t.open_count == 100 and len(t._sessions) == 100
    assert t.deadline("10.0.0.0") == 0 + 600 + 30
    assert t.logout(("s", 0), 50) is None and t.deadline("10.0.0.0") == 630


def test_login_never_shortens_an_open_session() -> None:
    """A plain login for an IP with an open session leaves the session's deadline in place."""
    t = Tracker(grace=30, max_session=600)
    t.login(IP, 100, session=("s", 1))
    assert t.login(IP, 200) is None
    assert t.deadline(IP) == 730


def test_remove_forgets_sessions() -> None:
    """An administrator's remove() drops the IP's open sessions too: a later logout finds nothing."""
    t = Tracker(grace=30)
    t.login(IP, 100, session=("s", 1))
    assert t.remove(IP) is True
    assert t.open_count == 0 and t.logout(("s", 1), 200) is None and IP not in t


def test_restored_deadline_is_not_shortened_by_a_logout() -> None:
    """A deadline restored after a restart stands even if a session of the same IP then logs out."""
    t = Tracker(grace=30)
    t.restore(IP, 5000)
    t.login(IP, 100, session=("s", 1))
    t.logout(("s", 1), 200)
    assert t.deadline(IP) == 5000


# --------------------------------------------------------- connections --


def test_flood_of_connect_lines_stays_bounded() -> None:
    """A million connect lines with distinct pids keep at most max_pending entries, the oldest evicted."""
    c = Connections(max_pending=1000, max_age=300)
    for pid in range(100_000):
        c.connect(("h", "popa3d", str(pid)), "192.0.2.1", 1.0)
    assert len(c) == 1000 and c.evicted == 99_000
    assert c.take(("h", "popa3d", "0"), 1.0) is None
    assert c.take(("h", "popa3d", "99999"), 1.0) == "192.0.2.1"


def test_old_connect_lines_are_dropped_and_never_used() -> None:
    """A connect line older than max_age gives no address, and is pruned when new ones come."""
    c = Connections(max_pending=10, max_age=300)
    c.connect(("h", "p", "1"), "192.0.2.1", 0.0)
    assert c.take(("h", "p", "1"), 301.0) is None
    c.connect(("h", "p", "2"), "192.0.2.2", 0.0)
    c.connect(("h", "p", "3"), "192.0.2.3", 400.0)
    assert len(c) == 1


def test_new_connect_line_replaces_the_old_one() -> None:
    """A pid reused with a new connect line gives the new address."""
    c = Connections()
    c.connect(("h", "p", "1"), "192.0.2.1", 0.0)
    c.connect(("h", "p", "1"), "192.0.2.2", 10.0)
    assert c.take(("h", "p", "1"), 11.0) == "192.0.2.2" and len(c) == 0


# ------------------------------------------------------------ pipeline --

NOW = 1_800_000_000.0


def line(program: str, pid: str | None, text: str, host: str = "vm", facility: int = 2) -> bytes:
    """A traditional syslog frame (no zone: receive time rules) of ``program[pid]``."""
    tag = f"{program}[{pid}]" if pid is not None else program
    return f"<{facility * 8 + 6}>Nov 29 14:22:55 {host} {tag}: {text}".encode()


def pipeline(patterns: object = "all", grace: float = 60, **kw: float) -> Pipeline:
    """A pipeline over the built-in table that authorises the corpus' loopback clients."""
    return Pipeline(load_table(patterns), Tracker(grace, max_session=3600), True, **kw)  # type: ignore[arg-type]


DOVECOT_LOGIN = "pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=13339, session=<KxeGB2thD8R/ChQe>"
DOVECOT_LOGOUT = "pop3(alice)<13339><KxeGB2thD8R/ChQe>: Disconnected: Logged out top=0/0, retr=0/0, del=0/1, size=160"


def test_dovecot_logout_line_shortens_to_logout_plus_grace() -> None:
    """A Dovecot login holds its IP open; the logout line, which has no address, finds it by session id and starts the grace."""
    p = pipeline()
    assert p.feed(line("dovecot", None, DOVECOT_LOGIN), NOW) == (IP, "dovecot-login", "added")
    assert p.tracker.deadline(IP) == NOW + 3600 + 60
    assert p.feed(line("dovecot", None, DOVECOT_LOGOUT), NOW + 500) == (IP, "dovecot-logout", "shortened")
    assert p.tracker.deadline(IP) == NOW + 560 and p.counters.logouts == 1


def test_logout_tracking_off_gives_grace_only() -> None:
    """With logout_tracking off a Dovecot login gets the plain grace and its logout line changes nothing."""
    p = Pipeline(load_table("all"), Tracker(60, max_session=3600), True, logout_tracking=False)
    p.feed(line("dovecot", None, DOVECOT_LOGIN), NOW)
    assert p.tracker.deadline(IP) == NOW + 60 and p.tracker.open_count == 0
    assert p.feed(line("dovecot", None, DOVECOT_LOGOUT), NOW + 5) is None
    assert p.tracker.deadline(IP) == NOW + 60


def test_dovecot_logout_from_another_host_does_not_close() -> None:
    """A session is keyed by host too: the same session id logged by another host closes nothing."""
    p = pipeline()
    p.feed(line("dovecot", None, DOVECOT_LOGIN, host="mx1"), NOW)
    assert p.feed(line("dovecot", None, DOVECOT_LOGOUT, host="mx2"), NOW + 5) is None
    assert p.counters.unmatched_logouts == 1 and p.tracker.deadline(IP) == NOW + 3600 + 60


def test_login_opens_no_session_when_no_logout_entry_is_enabled() -> None:
    """With only dovecot-login enabled nothing could close a session, so a login gets the plain grace."""
    p = pipeline(["dovecot-login"])
    p.feed(line("dovecot", None, DOVECOT_LOGIN), NOW)
    assert p.tracker.deadline(IP) == NOW + 60 and p.tracker.open_count == 0


def test_courier_logout_closes_by_address() -> None:
    """Courier's LOGOUT line carries the address: it closes one open session of that address."""
    p = pipeline()
    p.feed(line("pop3d", "4242", "LOGIN, user=alice, ip=[::ffff:192.0.2.7], port=[41751]"), NOW)
    assert p.tracker.open_sessions(IP) == 1
    out = "LOGOUT, user=alice, ip=[::ffff:192.0.2.7], port=[41751], top=0, retr=0, rcvd=12, sent=41, time=0"
    assert p.feed(line("pop3d", "4242", out), NOW + 100) == (IP, "courier-logout", "shortened")
    assert p.tracker.deadline(IP) == NOW + 160


def test_popa3d_two_line_login_and_logout() -> None:
    """popa3d standalone: 'Session from' gives the address to the same pid's 'Authentication passed'; its end line starts the grace."""
    p = pipeline()
    assert p.feed(line("popa3d", "1192", "Session from 192.0.2.7"), NOW) is None
    assert len(p.tracker) == 0
    assert p.feed(line("popa3d", "1192", "Authentication passed for alice"), NOW + 1) == (IP, "popa3d-two-line", "added")
    assert p.tracker.open_sessions(IP) == 1
    assert p.feed(line("popa3d", "1192", "0 (0) deleted, 1 (52) left"), NOW + 2) == (IP, "popa3d-logout", "shortened")
    assert p.tracker.deadline(IP) == NOW + 62 and len(p.connections) == 0


def test_two_line_login_on_another_pid_gets_no_address() -> None:
    """The success line of another pid, or of another host, does not take a connect line's address."""
    p = pipeline()
    p.feed(line("popa3d", "1192", "Session from 192.0.2.7"), NOW)
    assert p.feed(line("popa3d", "1193", "Authentication passed for alice"), NOW + 1) is None
    assert p.feed(line("popa3d", "1192", "Authentication passed for alice", host="other"), NOW + 1) is None
    assert len(p.tracker) == 0 and p.counters.unpaired == 2


def test_pid_reused_after_a_failure_does_not_inherit() -> None:
    """After a failure line settles a connection, a later success of the same pid without its own connect line authorises nothing."""
    p = pipeline()
    p.feed(line("popa3d", "1344", "Session from 192.0.2.7"), NOW)
    p.feed(line("popa3d", "1344", "Authentication failed for alice"), NOW + 2)
    assert p.feed(line("popa3d", "1344", "Authentication passed for alice"), NOW + 50) is None
    assert len(p.tracker) == 0 and p.counters.failures == 1


def test_pid_reused_after_an_end_line_does_not_inherit() -> None:
    """A connection that ended without authenticating leaves nothing for a later success of the same pid."""
    p = pipeline()
    p.feed(line("popa3d", "1724", "Session from 192.0.2.7"), NOW)
    p.feed(line("popa3d", "1724", "Didn't attempt authentication"), NOW + 1)
    assert p.feed(line("popa3d", "1724", "Authentication passed for alice"), NOW + 2) is None


def test_pid_reused_after_pending_age_does_not_inherit() -> None:
    """A connect line older than pending_age gives its address to nobody."""
    p = pipeline(pending_age=300)
    p.feed(line("solid-pop3d", "2459", "connect from 192.0.2.7"), NOW)
    assert p.feed(line("solid-pop3d", "2459", "user alice authenticated"), NOW + 301) is None
    assert len(p.tracker) == 0


def test_pipeline_connect_flood_is_bounded() -> None:
    """Connect lines with ever new pids never hold more than max_pending addresses."""
    p = pipeline(max_pending=50)
    for pid in range(5000):
        p.feed(line("popa3d", str(pid), f"Session from 10.1.{pid // 250}.{pid % 250}"), NOW)
    assert len(p.connections) == 50 and p.counters.connects == 5000


def test_connect_line_without_pid_is_ignored() -> None:
    """Without a pid a connect line cannot be tied to its login, so it is not remembered."""
    p = pipeline()
    p.feed(line("popa3d", None, "Session from 192.0.2.7"), NOW)
    assert len(p.connections) == 0


def test_solid_pop3d_without_logextend() -> None:
    """solid-pop3d without logextend: connect line, 'user x authenticated', 'session ended for user x', all of one pid."""
    p = pipeline()
    p.feed(line("solid-pop3d", "2459", "connect from 192.0.2.7"), NOW)
    assert p.feed(line("solid-pop3d", "2459", "user alice authenticated"), NOW + 1) == (IP, "solid-pop3d-two-line", "added")
    assert p.feed(line("solid-pop3d", "2459", "session ended for user alice"), NOW + 9) == (
        IP, "solid-pop3d-two-line-logout", "shortened",
    )
    assert p.tracker.deadline(IP) == NOW + 69


def test_solid_pop3d_logextend_real_lines_use_up_the_connect_line() -> None:
    """With logextend the one-line login also settles the connect line logged before it (real lines)."""
    p = pipeline()
    p.feed(line("solid-pop3d", "2459", "connect from 127.53.1.11"), NOW)
    assert p.feed(line("solid-pop3d", "2459", "user alice authenticated - 127.53.1.11"), NOW) == (
        "127.53.1.11", "solid-pop3d-login", "added",
    )
    assert len(p.connections) == 0
    assert p.feed(line("solid-pop3d", "2459", "session ended for user alice - 127.53.1.11"), NOW + 1) == (
        "127.53.1.11", "solid-pop3d-logout", "shortened",
    )


def test_vm_pop3d_old_two_line_form() -> None:
    """vm-pop3d's old 'Connect from' + 'User x logged in' of one pid authorise the connect line's address."""
    p = pipeline()
    p.feed(line("vm-pop3d", "77", "Connect from 192.0.2.7"), NOW)
    assert p.feed(line("vm-pop3d", "77", "User alice logged in"), NOW + 1) == (IP, "vm-pop3d-two-line", "added")
    assert p.tracker.deadline(IP) == NOW + 61


@pytest.mark.parametrize("facility", [1, 2, 3, 16])
def test_two_line_login_does_not_depend_on_facility(facility: int) -> None:
    """popa3d logs to daemon, others to mail: the same two lines authorise whatever the facility, even mixed."""
    p = pipeline()
    p.feed(line("popa3d", "9", "Session from 192.0.2.7", facility=facility), NOW)
    assert p.feed(line("popa3d", "9", "Authentication passed for alice", facility=2), NOW + 1) is not None


# --------------------------------------------------- real corpus replay --


def stamp(text: str) -> float:
    """The receive time for a corpus line: its own RFC 3339 timestamp."""
    return datetime.datetime.fromisoformat(text.split(" ", 1)[0]).timestamp()


def dovecot_rows() -> list[dict[str, object]]:
    """The labelled lines of the corpus' real Dovecot mail.log, in file order."""
    rows = [json.loads(x) for x in (REAL / "labels.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["file"] == "real/dovecot/mail.log"]
    order = {text: n for n, text in enumerate((REAL / "dovecot" / "mail.log").read_text().splitlines())}
    return sorted(rows, key=lambda r: order[r["line"]])


GRACE = 0.0005  # shorter than every real session (1 to 8 ms), so only logout tracking keeps them


def test_real_dovecot_sessions_stay_authorised_until_logout_plus_grace() -> None:
    """Replaying the real Dovecot log with its own times: every open session's IP stays authorised, and each logout sets logout + grace exactly."""
    rows = dovecot_rows()
    assert sum(r["event"] == "logout" for r in rows) == sum(r["event"] == "login" for r in rows) == 52
    tracker = Tracker(GRACE)
    p = Pipeline(load_table("dovecot"), tracker, authorise_loopback=True)
    session_of = re.compile(r"session=<([^>]+)>|\)<[0-9]+><([^>]+)>:")
    open_: dict[str, tuple[str, float]] = {}  # session id -> (ip, login time)
    held = 0
    for row in rows:
        text = str(row["line"])
        now = stamp(text)
        tracker.expire(now)
        for ip, since in open_.values():
            assert ip in tracker and tracker.deadline(ip) > now, (ip, text)  # type: ignore[operator]
            held += since + GRACE < now
        change = p.feed(text.encode(), now)
        found = session_of.search(text)
        if row["event"] == "login":
            assert change is not None and change[0] == row["ip"] and change[2] in ("added", "extended")
            open_[found[1]] = (str(row["ip"]), now)  # type: ignore[index]
        elif row["event"] == "logout":
            ip, since = open_.pop(found[2])  # type: ignore[index]
            assert ip == row["ip"] and now - since > GRACE, text
            if all(other != ip for other, _ in open_.values()):
                assert change == (ip, "dovecot-logout", "shortened")
                assert tracker.deadline(ip) == now + GRACE
        else:
            assert change is None, text
    assert held > 0  # at least one session outlived the grace while open (else nothing was proven)
    assert tracker.open_count == 0 and p.counters.unmatched_logouts == 0
    tracker.expire(stamp(str(rows[-1]["line"])) + GRACE)
    assert len(tracker) == 0


def test_real_dovecot_replay_without_logout_lines_keeps_sessions_open() -> None:
    """The same replay minus the logout lines leaves every session open, held until login + max_session + grace (the cap)."""
    tracker = Tracker(GRACE, max_session=600)
    p = Pipeline(load_table("dovecot"), tracker, authorise_loopback=True)
    last = 0.0
    for row in dovecot_rows():
        if row["event"] != "logout":
            last = stamp(str(row["line"]))
            p.feed(str(row["line"]).encode(), last)
    assert tracker.open_count == 52
    tracker.expire(last + 1)
    assert {str(r["ip"]) for r in dovecot_rows() if r["event"] == "login"} == tracker.ips()
    assert tracker.expire(last + 600 + 1) and len(tracker) == 0 and tracker.open_count == 0


def test_real_popa3d_lines_through_the_two_line_correlator() -> None:
    """The real popa3d 1.0.3 lines (inetd: no 'Session from') authorise nothing; with a Session line before them the login authorises and QUIT ends it."""
    rows = [json.loads(x) for x in (CORPUS / "popa3d" / "labels.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["file"] == "popa3d/mail.log"]
    p = pipeline()
    for row in rows:
        p.feed(str(row["line"]).encode(), stamp(str(row["line"])))
    assert len(p.tracker) == 0 and p.counters.unpaired > 0
    first = [str(r["line"]) for r in rows if "[1192]" in str(r["line"])]
    head = first[0].split("popa3d[1192]: ")[0]
    p.feed(f"{head}popa3d[1192]: Session from 127.52.1.11".encode(), stamp(first[0]))
    changes = [p.feed(text.encode(), stamp(text)) for text in first]
    assert changes[0] == ("127.52.1.11", "popa3d-two-line", "added")
    assert changes[-1] == ("127.52.1.11", "popa3d-logout", "shortened")
    assert p.tracker.deadline("127.52.1.11") == stamp(first[-1]) + 60


@pytest.mark.parametrize("daemon", ["courier", "solid-pop3d", "perdition"])
def test_real_logout_lines_keyed_by_address(daemon: str) -> None:
    """Real Courier, solid-pop3d and Perdition lines: each labelled login opens a session and each logout after it starts the grace at the logout."""
    if daemon == "courier":
        rows = [json.loads(x) for x in (REAL / "labels.jsonl").read_text().splitlines() if x]
        rows = [r for r in rows if r["file"] == "real/courier/mail.log"]
    else:
        rows = [json.loads(x) for x in (CORPUS / daemon / "labels.jsonl").read_text().splitlines() if x]
        rows = [r for r in rows if r["file"] == f"{daemon}/mail.log"]
    tracker = Tracker(GRACE)
    p = Pipeline(load_table(daemon), tracker, authorise_loopback=True)
    open_: dict[str, int] = {}
    closed = 0
    for row in rows:
        text = str(row["line"])
        now = stamp(text)
        change = p.feed(text.encode(), now)
        ip = str(row["ip"])
        if row["event"] == "login":
            assert change is not None and change[0] == ip, text
            open_[ip] = open_.get(ip, 0) + 1
        elif row["event"] == "logout":
            if open_.get(ip, 0) == 0:
                assert change is None, text  # no login to close: nothing changes
                continue
            open_[ip] -= 1
            closed += 1
            if open_[ip] == 0:
                assert change is not None and change[0] == ip and change[2] == "shortened", text
                assert tracker.deadline(ip) == now + GRACE, text
            else:
                assert change is None, text
        else:
            assert change is None, text
    assert closed > 0 and tracker.open_count == sum(open_.values())


# ---------------------------------------------------------- resent lines --
# rsyslog resends, after a reconnect, the lines it had sent into the broken
# connection: the same bytes again.  The security review's finding: for the
# daemons keyed by address, a login line delivered twice and then its one
# logout left the address authorised until login + max_session + grace
# (88,199 s later) instead of logout + grace.

RESENT_GRACE = 1800.0
RESENT_MAX_SESSION = 86400.0


def corpus_session(daemon: str, traditional: bool) -> tuple[list[str], str, str]:
    """A real session of ``daemon`` by an address that logs in only once in its file: (login lines, logout line, address).

    The login lines are what a resend repeats: the login line, and for
    popa3d its 'Session from' line before it (built, as the corpus' popa3d
    ran from inetd, which logs none).
    """
    name = "mail.traditional.log" if traditional else "mail.log"
    if daemon == "popa3d":
        lines = (CORPUS / "popa3d" / name).read_text().splitlines()
        login = next(x for x in lines if "popa3d[1192]: Authentication passed" in x)
        logout = next(x for x in lines if "popa3d[1192]: 0 (0) deleted" in x)
        head = login.split("popa3d[1192]: ")[0]
        return [f"{head}popa3d[1192]: Session from 127.52.1.11", login], logout, "127.52.1.11"
    folder = f"real/{daemon}" if daemon in ("courier", "dovecot") else daemon
    labels = REAL / "labels.jsonl" if daemon in ("courier", "dovecot") else CORPUS / daemon / "labels.jsonl"
    rows = [json.loads(x) for x in labels.read_text().splitlines() if x]
    rows = [r for r in rows if r["file"] == f"{folder}/{name}"]
    logins = [r for r in rows if r["event"] == "login"]
    login = next(r for r in logins if sum(other["ip"] == r["ip"] for other in logins) == 1)
    (logout,) = [r for r in rows if r["event"] == "logout" and r["ip"] == login["ip"]]
    return [str(login["line"])], str(logout["line"]), str(login["ip"])


# daemon -> the kind of key its sessions have
SESSION_KINDS = {"courier": "ip", "solid-pop3d": "ip", "perdition": "ip", "dovecot": "group", "popa3d": "pid"}


@pytest.mark.parametrize("traditional", [False, True], ids=["rfc3339", "rfc3164"])
@pytest.mark.parametrize("daemon", sorted(SESSION_KINDS))
def test_login_line_delivered_twice_then_one_logout(daemon: str, traditional: bool) -> None:
    """Real lines, every kind of key: the login line(s) again a minute later (a resend) open no second session and
    move nothing; the one logout then leaves logout + grace.

    With RFC 3339 stamps a line counts from its own time (the resend repeats it exactly); the RFC 3164 lines have
    no usable timestamp and count from their delivery, so there the resend arrives with a later time.
    """
    logins, logout, ip = corpus_session(daemon, traditional)
    p = Pipeline(load_table(daemon), Tracker(RESENT_GRACE, RESENT_MAX_SESSION), authorise_loopback=True)
    assert (p.table.by_name[p.table.classify(parse(logins[-1].encode())).pattern].session  # type: ignore[union-attr]
            == SESSION_KINDS[daemon])
    first = NOW if traditional else stamp(logins[-1]) + 0.25  # when the first delivery arrives
    sent = first if traditional else stamp(logins[-1])  # what the login counts from
    for text in logins:
        p.feed(text.encode(), first)
    assert p.tracker.deadline(ip) == sent + RESENT_MAX_SESSION + RESENT_GRACE
    for text in logins:
        assert p.feed(text.encode(), first + 60) is None  # the resend
    assert p.tracker.open_sessions(ip) == 1 and p.tracker.repeated == 1
    assert p.tracker.deadline(ip) == sent + RESENT_MAX_SESSION + RESENT_GRACE
    change = p.feed(logout.encode(), first + 61)
    assert change is not None and change.ip == ip and change.change == "shortened"
    closed = first + 61 if traditional else stamp(logout)
    assert p.tracker.deadline(ip) == closed + RESENT_GRACE and p.tracker.open_count == 0


def test_resent_login_after_a_restart_is_known_by_its_timestamp(tmp_path: pathlib.Path) -> None:
    """The journal keeps session starts, not lines: after a restart the resent Courier line (microsecond RFC 3339 stamp)
    has its session's start exactly, so it opens no second one, and the logout leaves logout + grace."""
    (login,), logout, ip = corpus_session("courier", traditional=False)
    first = stamp(login) + 0.25
    p = Pipeline(load_table("courier"), Tracker(RESENT_GRACE, RESENT_MAX_SESSION), authorise_loopback=True)
    p.feed(login.encode(), first)
    journal = StateJournal(str(tmp_path / "state"))
    journal.compact(p.tracker.entries(), p.tracker.all_sessions())
    journal.close()
    loaded = StateJournal(str(tmp_path / "state")).load(first + 5, grace=RESENT_GRACE, max_session=RESENT_MAX_SESSION)
    q = Pipeline(load_table("courier"), Tracker(RESENT_GRACE, RESENT_MAX_SESSION), authorise_loopback=True)
    floor, keyed = loaded.sessions[ip]
    q.tracker.restore(ip, loaded.deadlines[ip], loaded.patterns[ip], floor, keyed)
    assert q.feed(login.encode(), first + 10) is None
    assert q.tracker.open_sessions(ip) == 1 and q.tracker.repeated == 1
    assert q.feed(logout.encode(), first + 11) == (ip, "courier-logout", "shortened")
    assert q.tracker.deadline(ip) == stamp(logout) + RESENT_GRACE


def test_two_real_courier_logins_of_one_address_are_two_sessions() -> None:
    """Two different LOGIN lines of one address (other time, other port) are two sessions: the first logout keeps the
    address held, the second starts the grace."""
    rows = [json.loads(x) for x in (REAL / "labels.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["file"] == "real/courier/mail.log" and r["ip"] == "::1"]
    logins = [str(r["line"]) for r in rows if r["event"] == "login"][:2]
    logouts = [str(r["line"]) for r in rows if r["event"] == "logout"][:2]
    assert len(logins) == len(logouts) == 2 and stamp(logins[0]) != stamp(logins[1])
    p = Pipeline(load_table("courier"), Tracker(RESENT_GRACE, RESENT_MAX_SESSION), authorise_loopback=True)
    for text in logins:
        p.feed(text.encode(), stamp(logins[1]) + 1)
    assert p.tracker.open_sessions("::1") == 2 and p.tracker.repeated == 0
    assert p.feed(logouts[0].encode(), stamp(logouts[1]) + 1) is None  # one of two closed: still held
    assert p.tracker.deadline("::1") == stamp(logins[1]) + RESENT_MAX_SESSION + RESENT_GRACE
    assert p.feed(logouts[1].encode(), stamp(logouts[1]) + 1) == ("::1", "courier-logout", "shortened")
    assert p.tracker.deadline("::1") == stamp(logouts[1]) + RESENT_GRACE


def test_two_clients_behind_one_address_in_the_same_second() -> None:
    """RFC 3164 stamps have whole seconds: two Courier logins of one address in the same second, in the same read,
    differ by their port and stay two sessions."""
    login = next(x for x in (REAL / "courier" / "mail.traditional.log").read_text().splitlines() if "LOGIN," in x)
    other = re.sub(r"port=\[\d+\]", "port=[50000]", login)
    assert other != login
    p = Pipeline(load_table("courier"), Tracker(RESENT_GRACE, RESENT_MAX_SESSION), authorise_loopback=True)
    ip = p.feed(login.encode(), NOW).ip  # type: ignore[union-attr]
    p.feed(other.encode(), NOW)
    assert p.tracker.open_sessions(ip) == 2 and p.tracker.repeated == 0


@pytest.mark.parametrize("traditional", [False, True], ids=["rfc3339", "rfc3164"])
@pytest.mark.parametrize("daemon", ["courier", "dovecot", "solid-pop3d", "perdition"])
def test_real_log_with_every_login_line_delivered_twice(daemon: str, traditional: bool) -> None:
    """A whole real log, each login line delivered a second time just after the first: after every line, the same
    deadlines, patterns and open sessions as delivering each line once."""
    name = "mail.traditional.log" if traditional else "mail.log"
    folder = REAL / daemon if daemon in ("courier", "dovecot") else CORPUS / daemon
    lines = (folder / name).read_text().splitlines()
    once = Pipeline(load_table(daemon), Tracker(RESENT_GRACE, 600), authorise_loopback=True)
    twice = Pipeline(load_table(daemon), Tracker(RESENT_GRACE, 600), authorise_loopback=True)
    for n, text in enumerate(lines):
        now = NOW + n if traditional else stamp(text)
        logins = once.counters.logins
        once.feed(text.encode(), now)
        twice.feed(text.encode(), now)
        if once.counters.logins > logins:  # a login line: delivered again
            twice.feed(text.encode(), now + 0.5)
        assert twice.tracker.entries() == once.tracker.entries(), text
        assert twice.tracker.all_sessions() == once.tracker.all_sessions(), text
    assert twice.tracker.repeated == once.counters.logins > 0
