"""Tracker: grace, refresh and expiry, driven by explicit times."""

from pbsyslog.tracker import Tracker


def test_login_authorises_until_grace_runs_out() -> None:
    """A login makes the IP present until now + grace, and expire removes it then."""
    t = Tracker(grace=30)
    assert t.login("192.0.2.1", now=100, pattern="dovecot-login") == "added"
    assert t.pattern("192.0.2.1") == "dovecot-login"
    assert "192.0.2.1" in t
    assert t.expire(129.9) == []
    assert t.expire(130) == ["192.0.2.1"]
    assert "192.0.2.1" not in t and len(t) == 0


def test_new_login_refreshes_deadline() -> None:
    """A second login moves the deadline and is not reported as new."""
    t = Tracker(grace=30)
    t.login("192.0.2.1", now=100)
    assert t.login("192.0.2.1", now=120) == "extended"
    assert t.deadline("192.0.2.1") == 150
    assert t.expire(140) == []
    assert t.expire(150) == ["192.0.2.1"]


def test_clock_stepping_back_does_not_shorten() -> None:
    """A login with an earlier receive time keeps the later deadline."""
    t = Tracker(grace=30)
    t.login("192.0.2.1", now=100)
    assert t.login("192.0.2.1", now=50) is None
    assert t.deadline("192.0.2.1") == 130


def test_expire_only_what_is_due() -> None:
    """Expiry removes exactly the IPs whose deadlines passed, in deadline order."""
    t = Tracker(grace=10)
    for i in range(100):
        t.login(f"192.0.2.{i}", now=i)
    assert t.expire(14.5) == [f"192.0.2.{i}" for i in range(5)]
    assert len(t) == 95


def test_many_refreshes_keep_heap_bounded() -> None:
    """Refreshing one IP many times does not grow internal state without bound."""
    t = Tracker(grace=10)
    for i in range(10_000):
        t.login("192.0.2.1", now=i)
    assert t._entries <= 2 * len(t) + 1025
    assert sum(map(len, t._buckets.values())) + len(t._near) == t._entries
    assert t.expire(10_008) == []
    assert t.expire(10_009) == ["192.0.2.1"]


def test_restore_keeps_given_deadline() -> None:
    """Restored state keeps its own deadline and pattern, and expires on it."""
    t = Tracker(grace=30)
    assert t.restore("192.0.2.1", 105.5, "courier-login") == "added"
    assert t.entries() == {"192.0.2.1": (105.5, "courier-login")}
    assert t.expire(105.5) == ["192.0.2.1"]
    assert t.pattern("192.0.2.1") is None


def test_remove_takes_ip_away_and_expiry_skips_it() -> None:
    """remove() drops an IP at once; its old heap entry is skipped by expire; re-adding works."""
    t = Tracker(grace=30)
    t.login("192.0.2.1", now=0)
    assert t.remove("192.0.2.1") is True and t.remove("192.0.2.1") is False
    assert "192.0.2.1" not in t
    assert t.login("192.0.2.1", now=10) == "added"
    assert t.expire(30) == []
    assert t.expire(40) == ["192.0.2.1"]


def test_expire_matches_a_brute_force_model() -> None:
    """Random logins, restores, removes and expiry ticks give exactly what a sorted scan of all deadlines gives."""
    import random

    rng = random.Random(6)
    t = Tracker(grace=5)
    model: dict[str, float] = {}
    now = 0.0
    for step in range(20_000):
        ip = f"198.51.100.{rng.randrange(200)}"
        action = rng.random()
        if action < 0.5:
            now += rng.choice((0.0, 0.01, 0.3, 1.0))
            t.login(ip, now)
            model[ip] = max(model.get(ip, float("-inf")), now + 5)
        elif action < 0.6:
            deadline = now + rng.uniform(-2, 8)
            t.restore(ip, deadline)
            model[ip] = max(model.get(ip, float("-inf")), deadline)
        elif action < 0.65:
            assert t.remove(ip) == (model.pop(ip, None) is not None)
        else:
            at = now + rng.uniform(-1, 1)
            due = sorted((d, i) for i, d in model.items() if d <= at)
            assert t.expire(at) == [i for _, i in due], step
            for _, i in due:
                del model[i]
        assert t.entries().keys() == model.keys()
    assert t._entries <= 2 * len(t) + 1025


def test_refresh_within_one_second_reuses_its_entry() -> None:
    """Many logins of one IP within one second file one expiry entry, and it still expires on the last deadline."""
    t = Tracker(grace=10)
    for i in range(100):
        t.login("192.0.2.1", now=100 + i / 1000)
    assert t._entries == 1
    assert t.expire(110.098) == []
    assert t.expire(110.099) == ["192.0.2.1"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_IPS = [f"192.0.2.{i}" for i in range(12)]
_TIMES = st.floats(min_value=0, max_value=50, allow_nan=False).map(lambda t: round(t, 2))
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("login"), st.sampled_from(_IPS), _TIMES, st.sampled_from([None, 1, 2, 3])),
    st.tuples(st.just("logout"), st.sampled_from([1, 2, 3]), _TIMES),
    st.tuples(st.just("remove"), st.sampled_from(_IPS)),
    st.tuples(st.just("restore"), st.sampled_from(_IPS), _TIMES),
    st.tuples(st.just("expire"), _TIMES),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps=_STEPS, grace=st.sampled_from([0.5, 1.0, 3.0, 7.25]))
def test_expire_takes_exactly_what_is_due_in_deadline_order(steps: list, grace: float) -> None:
    """Whatever happened before (moves, refiles, removals, sessions), expire(now) returns every IP whose
    deadline() is at or before now, ordered by (deadline, ip), and leaves every other deadline as it was."""
    t = Tracker(grace, max_session=20.0)
    clock = 0.0
    for step in steps:
        kind = step[0]
        if kind == "login":
            clock = max(clock, step[2])
            t.login(step[1], clock, "p", None if step[3] is None else ("s", step[3]))
        elif kind == "logout":
            clock = max(clock, step[2])
            t.logout(("s", step[1]), clock)
        elif kind == "remove":
            t.remove(step[1])
        elif kind == "restore":
            t.restore(step[1], clock + step[2], "manual")
        else:
            clock = max(clock, step[1])
            before = {ip: t.deadline(ip) for ip in t.ips()}
            due = sorted((d, ip) for ip, d in before.items() if d <= clock)
            assert t.expire(clock) == [ip for _, ip in due]
            assert {ip: t.deadline(ip) for ip in t.ips()} == {ip: d for ip, d in before.items() if d > clock}


# ------------------------------------------------------- repeated logins --
# A line delivered twice (rsyslog resends what it sent into a broken
# connection) is the same login: see the tracker's module header.

IP = "192.0.2.7"
BY_ADDRESS = ("ip", "vm", "pop3d", IP)


def test_repeated_counted_login_opens_no_second_session() -> None:
    """The security review's case: a login line twice under an address key, then its one logout: logout + grace, not the cap."""
    t = Tracker(grace=1800, max_session=86400)
    assert t.login(IP, 100.25, "courier-login", BY_ADDRESS, counted=True, line=11) == "added"
    assert t.login(IP, 100.25, "courier-login", BY_ADDRESS, counted=True, line=11) is None
    assert t.open_sessions(IP) == 1 and t.repeated == 1
    assert t.logout(BY_ADDRESS, 101) == (IP, "shortened")
    assert t.deadline(IP) == 101 + 1800 and t.open_count == 0


def test_repeat_delivered_later_changes_nothing() -> None:
    """A repeat that arrives later (a line without a usable timestamp counts from its delivery) moves no start, floor or pattern."""
    for key, counted in ((BY_ADDRESS, True), (("group", "vm", "dovecot", "K1"), False), (("pid", "vm", "popa3d", "9"), False)):
        t = Tracker(grace=30, max_session=600)
        t.login(IP, 100, "first", key, counted, line="L")
        assert t.take_touched() == {IP}
        assert t.login(IP, 160, "second", key, counted, line="L") is None
        assert t.deadline(IP) == 100 + 600 + 30 and t.pattern(IP) == "first"
        assert t.sessions(IP) == (130, [(key, [100])]) and t.take_touched() == set()
        assert t.logout(key, 200) == (IP, "shortened") and t.deadline(IP) == 230


def test_different_lines_at_the_same_time_are_two_sessions() -> None:
    """Two clients behind one address in the same second (lines that differ, say by port) are two sessions under a counted key."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=BY_ADDRESS, counted=True, line="port 1")
    t.login(IP, 100, session=BY_ADDRESS, counted=True, line="port 2")
    assert t.open_sessions(IP) == 2 and t.repeated == 0
    assert t.logout(BY_ADDRESS, 200) == (IP, None)
    assert t.logout(BY_ADDRESS, 300) == (IP, "shortened") and t.deadline(IP) == 330


def test_different_times_are_two_sessions_with_or_without_lines() -> None:
    """Logins at different times are different logins, whether their lines are known or not."""
    for lines in ((None, None), ("a", "b"), ("a", None)):
        t = Tracker(grace=30, max_session=3600)
        t.login(IP, 100, session=BY_ADDRESS, counted=True, line=lines[0])
        t.login(IP, 100.000001, session=BY_ADDRESS, counted=True, line=lines[1])
        assert t.open_sessions(IP) == 2, lines


def test_unknown_lines_are_compared_by_time() -> None:
    """Without a line on either side (a caller that gives none, a restored session) the same time is the same login."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=BY_ADDRESS, counted=True)
    t.login(IP, 100, session=BY_ADDRESS, counted=True, line="x")
    t.login(IP, 100, session=BY_ADDRESS, counted=True)
    assert t.open_sessions(IP) == 1 and t.repeated == 2


def test_restored_session_is_known_again_by_its_start() -> None:
    """The journal keeps no lines: after a restart a resent login with the same (sender's) time opens no second session."""
    t = Tracker(grace=30, max_session=3600)
    t.restore(IP, 100.125 + 3600 + 30, "courier-login", 130.125, [(BY_ADDRESS, [100.125])])
    assert t.login(IP, 100.125, "courier-login", BY_ADDRESS, counted=True, line=5) is None
    assert t.open_sessions(IP) == 1
    assert t.login(IP, 100.5, "courier-login", BY_ADDRESS, counted=True, line=6) == "extended"  # later: a new session
    assert t.open_sessions(IP) == 2
    assert t.login(IP, 100.5, "courier-login", BY_ADDRESS, counted=True, line=6) is None
    assert t.open_sessions(IP) == 2 and t.repeated == 2


def test_resent_login_after_its_logout_opens_again_and_its_resent_logout_closes_it() -> None:
    """Only open sessions are remembered: a resend of login and logout (in order) leaves the deadline at logout + grace."""
    t = Tracker(grace=30, max_session=3600)
    t.login(IP, 100, session=BY_ADDRESS, counted=True, line="L")
    t.logout(BY_ADDRESS, 110)
    assert t.login(IP, 100, session=BY_ADDRESS, counted=True, line="L") == "extended"
    assert t.open_sessions(IP) == 1
    assert t.logout(BY_ADDRESS, 110) == (IP, "shortened") and t.deadline(IP) == 140


def test_lines_stay_with_their_sessions() -> None:
    """Sessions opened out of order, closed oldest first and evicted: each remaining session still knows its own line."""
    t = Tracker(grace=30, max_session=3600, max_sessions=3)
    for when, line in ((100, "a"), (90, "b"), (95, "c")):
        t.login(IP, when, session=BY_ADDRESS, counted=True, line=line)
    assert t.sessions(IP) == (130, [(BY_ADDRESS, [90, 95, 100])])
    t.logout(BY_ADDRESS, 120)  # closes b (90)
    assert t.login(IP, 90, session=BY_ADDRESS, counted=True, line="b") is None  # b is new again: opens
    assert t.open_sessions(IP) == 3
    t.login("192.0.2.8", 130, session=("s", 1), line="d")  # evicts the oldest: b again
    for line in ("a", "c", "d"):
        owner = "192.0.2.8" if line == "d" else IP
        key = ("s", 1) if line == "d" else BY_ADDRESS
        before = t.all_sessions()
        assert t.login(owner, 1, session=key, counted=key == BY_ADDRESS, line=line) is None
        assert t.all_sessions() == before, line
    assert t.repeated == 3


_SESSION_STEPS = st.lists(st.one_of(
    # login: ip, key (1-2 counted, 3-4 one session), time, resent (and how much later)
    st.tuples(st.just("login"), st.sampled_from(_IPS[:3]), st.sampled_from([1, 2, 3, 4]), _TIMES,
              st.sampled_from([None, 0.0, 0.5, 30.0])),
    st.tuples(st.just("logout"), st.sampled_from([1, 2, 3, 4]), _TIMES),
    st.tuples(st.just("expire"), _TIMES),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(steps=_SESSION_STEPS, max_sessions=st.sampled_from([2, 5, 100]))
def test_a_login_delivered_again_at_once_changes_nothing(steps: list, max_sessions: int) -> None:
    """Any history, with some logins delivered a second time right after (same line, same or later time),
    leaves every deadline, pattern and open session exactly as delivering each once does."""
    once = Tracker(3.0, max_session=20.0, max_sessions=max_sessions)
    twice = Tracker(3.0, max_session=20.0, max_sessions=max_sessions)
    clock = 0.0
    for n, step in enumerate(steps):
        kind = step[0]
        clock = max(clock, step[-2] if kind == "login" else step[-1])
        for t in (once, twice):
            if kind == "login":
                key = ("k", step[2])
                t.login(step[1], clock, "p", key, step[2] <= 2, line=n)
                if t is twice and step[4] is not None:
                    t.login(step[1], clock + step[4], "q", key, step[2] <= 2, line=n)
            elif kind == "logout":
                t.logout(("k", step[1]), clock)
            else:
                t.expire(clock)
        assert twice.entries() == once.entries() and twice.all_sessions() == once.all_sessions(), n
        assert twice.open_count == once.open_count
