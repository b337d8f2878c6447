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
