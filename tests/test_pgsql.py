"""The pgsql output against a fake connection that applies our two statements to a dict.

The fake reads the parameters of UPSERT / LOWER / CLEANUP exactly as the
real server would apply them (GREATEST, the conditional lowering, the
advisory lock), so these tests check the writer's decisions; the SQL itself
runs against a real PostgreSQL in tests/integration/test_pgsql.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pbsyslog.config import MAP_KINDS, Config, ConfigError, OutputSpec
from pbsyslog.outputs import Outputs, pgsql
from pbsyslog.outputs.pgsql import CLEANUP, LOCK, LOWER, UPSERT, PgsqlWriter, check_table


class Database:
    """A shared fake table: ip -> dict(expires_at, pattern, source_host); ``now`` is the server's clock."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.now = 1000.0
        self.up = True
        self.fail_next_execute = False
        self.lock_free = True
        self.statements: list[str] = []
        self.connects = 0

    def connect(self, dsn: str) -> Connection:
        if not self.up:
            raise OSError("connection refused (fake)")
        self.connects += 1
        return Connection(self)


class Connection:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def commit(self) -> None:
        if not self.db.up:
            raise OSError("server closed the connection (fake)")
        for sql, params in self.pending:
            self.db.statements.append(sql.split()[0])
            self._apply(sql, params)
        self.pending = []

    def close(self) -> None:
        self.closed = True

    def _apply(self, sql: str, p: dict[str, Any]) -> None:
        rows, now = self.db.rows, self.db.now
        if sql == UPSERT.format(table="pop_before_smtp"):
            for ip, deadline, pattern in zip(p["ips"], p["deadlines"], p["patterns"], strict=True):
                row = rows.get(ip)
                if row is None or deadline > row["expires_at"]:
                    rows[ip] = {"expires_at": deadline, "pattern": pattern, "source_host": p["source"]}
        elif sql == LOWER.format(table="pop_before_smtp"):
            for ip, written, deadline in zip(p["ips"], p["written"], p["deadlines"], strict=True):
                row = rows.get(ip)
                if row is not None and row["expires_at"] <= written:
                    target = now if deadline is None else max(deadline, now)
                    row["expires_at"] = min(row["expires_at"], target)
                    row["source_host"] = p["source"]
        elif sql == CLEANUP.format(table="pop_before_smtp"):
            for ip in [ip for ip, row in rows.items() if row["expires_at"] < now - p["retention"]]:
                del rows[ip]
        else:
            raise AssertionError(f"unexpected statement {sql!r}")


class Cursor:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.result: Any = None

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def execute(self, sql: str, params: dict[str, Any]) -> None:
        if not self.conn.db.up or self.conn.db.fail_next_execute:
            self.conn.db.fail_next_execute = False
            raise OSError("server closed the connection unexpectedly (fake)")
        if sql == LOCK:
            self.result = (self.conn.db.lock_free,)
            return
        self.conn.pending.append((sql, params))

    def fetchone(self) -> Any:
        return self.result


class Tracker:
    """What the writer reads from the service's tracker."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}

    def deadline(self, ip: str) -> float | None:
        return self.deadlines.get(ip)

    def pattern(self, ip: str) -> str | None:
        return "dovecot" if ip in self.deadlines else None


class Logged:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, f: Any, message: str, **fields: Any) -> None:
        self.messages.append(message.format(**fields))


def writer(db: Database, tracker: Tracker, host: str = "pop1", clock: list[float] | None = None,
           **options: Any) -> tuple[PgsqlWriter, Logged]:
    logged = Logged()
    now = clock if clock is not None else [1000.0]
    w = PgsqlWriter("dbname=x", "pop_before_smtp", host, tracker.deadline, tracker.pattern,
                    seconds=lambda: now[0], connect=db.connect, call_in_reactor=logged,
                    start=False, cleanup_interval=0, **options)
    return w, logged


def drain(w: PgsqlWriter) -> None:
    """Run the worker's rounds until nothing is left to write."""
    for _ in range(100):
        if w.run_once() is False and not w.pending():
            return
    raise AssertionError("the writer never finished")


def test_login_is_upserted_with_deadline_pattern_and_host() -> None:
    """An added IP becomes a row with the tracker's deadline, its pattern and this host's name."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    drain(w)
    assert db.rows == {"192.0.2.7": {"expires_at": 2800.0, "pattern": "dovecot", "source_host": "pop1"}}


def test_apply_never_touches_the_database() -> None:
    """apply() only queues: nothing is connected or written until the worker runs."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    assert (db.connects, db.rows) == (0, {})


def test_two_instances_keep_the_later_deadline() -> None:
    """Whichever instance writes last, the row holds the later of the two deadlines."""
    db = Database()
    early, late = Tracker(), Tracker()
    early.deadlines["192.0.2.7"], late.deadlines["192.0.2.7"] = 2000.0, 3000.0
    a, _ = writer(db, late, host="pop1")
    b, _ = writer(db, early, host="pop2")
    a.apply(add=["192.0.2.7"])
    drain(a)
    b.apply(add=["192.0.2.7"])
    drain(b)
    assert (db.rows["192.0.2.7"]["expires_at"], db.rows["192.0.2.7"]["source_host"]) == (3000.0, "pop1")


def test_expiry_writes_nothing() -> None:
    """A removal whose written deadline has passed costs no statement: Postfix's query already says no."""
    db, tracker = Database(), Tracker()
    clock = [1000.0]
    w, _ = writer(db, tracker, clock=clock)
    tracker.deadlines["192.0.2.7"] = 1060.0
    w.apply(add=["192.0.2.7"])
    drain(w)
    written = list(db.statements)
    clock[0] = 1061.0
    del tracker.deadlines["192.0.2.7"]
    w.apply(remove=["192.0.2.7"])
    drain(w)
    assert db.statements == written
    assert w.keys() == set() and w.pending() == 0


def test_administrator_removal_lowers_the_row_to_now() -> None:
    """A removal before the deadline (del/flush) sets expires_at to the server's now."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    drain(w)
    db.now = 1500.0
    del tracker.deadlines["192.0.2.7"]
    w.apply(remove=["192.0.2.7"])
    drain(w)
    assert db.rows["192.0.2.7"]["expires_at"] == 1500.0


def test_removal_does_not_cut_another_instances_later_deadline() -> None:
    """An instance's del leaves a row that another instance has since extended past its own deadline."""
    db = Database()
    mine, theirs = Tracker(), Tracker()
    mine.deadlines["192.0.2.7"], theirs.deadlines["192.0.2.7"] = 2800.0, 2900.0
    a, _ = writer(db, mine, host="pop1")
    b, _ = writer(db, theirs, host="pop2")
    a.apply(add=["192.0.2.7"])
    drain(a)
    b.apply(add=["192.0.2.7"])
    drain(b)
    del mine.deadlines["192.0.2.7"]
    a.apply(remove=["192.0.2.7"])
    drain(a)
    assert db.rows["192.0.2.7"] == {"expires_at": 2900.0, "pattern": "dovecot", "source_host": "pop2"}


def test_shortened_deadline_lowers_the_row() -> None:
    """A logout that shortens the deadline (an open session ended) brings the row down to it."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 90000.0  # open session: login + max_session + grace
    w.apply(add=["192.0.2.7"])
    drain(w)
    tracker.deadlines["192.0.2.7"] = 2900.0  # logged out: logout + grace
    w.refresh(["192.0.2.7"])
    drain(w)
    assert db.rows["192.0.2.7"]["expires_at"] == 2900.0


def test_extended_deadline_is_upserted() -> None:
    """A repeated login that extends the deadline (no change to the set of keys) reaches the row."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    drain(w)
    tracker.deadlines["192.0.2.7"] = 3400.0
    w.refresh(["192.0.2.7"])
    drain(w)
    assert db.rows["192.0.2.7"]["expires_at"] == 3400.0


def test_database_down_is_logged_once_and_caught_up() -> None:
    """While the server is down logins queue and one error is logged; when it returns, all of them arrive."""
    db, tracker = Database(), Tracker()
    db.up = False
    w, logged = writer(db, tracker)
    for i in range(5):
        ip = f"192.0.2.{i + 1}"
        tracker.deadlines[ip] = 2800.0
        w.apply(add=[ip])
        assert w.run_once() is None
    errors = [m for m in logged.messages if "cannot connect" in m]
    assert len(errors) == 1, logged.messages
    db.up = True
    drain(w)
    assert set(db.rows) == {f"192.0.2.{i + 1}" for i in range(5)}
    assert any("connected" in m for m in logged.messages[1:])


def test_backoff_doubles_up_to_thirty_seconds() -> None:
    """Each failed attempt doubles the wait before the next one, from 0.5 s to at most 30 s."""
    db, tracker = Database(), Tracker()
    db.up = False
    w, _ = writer(db, tracker)
    waits = []
    for _ in range(9):
        w.run_once()
        waits.append(w._backoff)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_overflow_drops_the_queue_and_resyncs_everything() -> None:
    """More dirty IPs than max_queue: the queue is dropped, and the resync still writes every live IP."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker, max_queue=3)
    drain(w)  # the first connection's resync, with nothing to write
    db.up = False
    w._close_connection()
    for i in range(10):
        ip = f"198.51.100.{i}"
        tracker.deadlines[ip] = 2800.0
        w.apply(add=[ip])
    assert w.overflows == 1
    assert len(w._dirty) <= 3
    db.up = True
    drain(w)
    assert set(db.rows) == {f"198.51.100.{i}" for i in range(10)}


def test_failed_write_is_retried_after_reconnecting() -> None:
    """A statement that fails drops the connection; the batch is written on the next connection."""
    db, tracker = Database(), Tracker()
    w, logged = writer(db, tracker)
    drain(w)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    db.fail_next_execute = True
    assert w.run_once() is None
    assert db.rows == {}
    drain(w)
    assert "192.0.2.7" in db.rows
    assert db.connects == 2
    assert any("failed" in m for m in logged.messages) and any("work again" in m for m in logged.messages)


def test_reconnect_upserts_rows_the_table_lost() -> None:
    """After a reconnection every live IP is upserted again, even one already written (the table was restored)."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines["192.0.2.7"] = 2800.0
    w.apply(add=["192.0.2.7"])
    drain(w)
    db.rows.clear()  # e.g. failed over to a replica that had not seen it
    w._close_connection()
    drain(w)
    assert db.rows["192.0.2.7"]["expires_at"] == 2800.0


def test_cleanup_deletes_long_expired_rows_under_the_lock() -> None:
    """The cleanup deletes rows expired for longer than retention, and only when it got the advisory lock."""
    db, tracker = Database(), Tracker()
    db.rows = {"192.0.2.1": {"expires_at": 100.0, "pattern": "", "source_host": "x"},
               "192.0.2.2": {"expires_at": 900.0, "pattern": "", "source_host": "x"}}
    w, _ = writer(db, tracker, retention=300.0)
    w.cleanup_interval = 60.0
    db.lock_free = False
    w.run_once()
    assert set(db.rows) == {"192.0.2.1", "192.0.2.2"} and w.cleanups == 0
    db.lock_free = True
    w._next_cleanup = 0.0
    w.run_once()
    assert set(db.rows) == {"192.0.2.2"} and w.cleanups == 1


def test_replace_all_reports_the_difference() -> None:
    """replace_all returns what it added and removed relative to what this instance held."""
    db, tracker = Database(), Tracker()
    w, _ = writer(db, tracker)
    tracker.deadlines.update({"192.0.2.1": 2000.0, "192.0.2.2": 2000.0})
    w.apply(add=["192.0.2.1", "192.0.2.2"])
    tracker.deadlines = {"192.0.2.2": 2000.0, "192.0.2.3": 2000.0}
    assert w.replace_all(["192.0.2.2", "192.0.2.3"]) == ({"192.0.2.3"}, {"192.0.2.1"})
    assert w.keys() == {"192.0.2.2", "192.0.2.3"}


def test_close_with_the_database_down_returns_promptly() -> None:
    """close() does not hang when the server is away: it gives up after close_timeout."""
    db, tracker = Database(), Tracker()
    db.up = False
    w = PgsqlWriter("dbname=x", "pop_before_smtp", "pop1", tracker.deadline, tracker.pattern,
                    connect=db.connect, call_in_reactor=Logged(), close_timeout=2.0)
    tracker.deadlines["192.0.2.7"] = time.time() + 60
    w.apply(add=["192.0.2.7"])
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 2.5


def test_worker_thread_writes_and_close_flushes() -> None:
    """With its thread running, a queued login is in the table once close() returned."""
    db, tracker = Database(), Tracker()
    w = PgsqlWriter("dbname=x", "pop_before_smtp", "pop1", tracker.deadline, tracker.pattern,
                    connect=db.connect, call_in_reactor=Logged())
    tracker.deadlines["192.0.2.7"] = time.time() + 60
    w.apply(add=["192.0.2.7"])
    w.close()
    assert "192.0.2.7" in db.rows


def test_table_names_are_checked() -> None:
    """Only plain identifiers (optionally schema-qualified) are accepted as table names."""
    assert check_table("pbsyslog.pop_before_smtp") == "pbsyslog.pop_before_smtp"
    with pytest.raises(ValueError):
        check_table("t; DROP TABLE x")


# -- config ---------------------------------------------------------------

def test_config_reads_a_pgsql_output() -> None:
    """An [[output]] with kind "pgsql" takes dsn, table and source_host."""
    config = Config.from_mapping({"output": [
        {"kind": "pgsql", "dsn": "host=127.0.0.1 dbname=pbsyslog", "table": "pbs.auth", "source_host": "pop1"},
    ]})
    assert config.outputs == (OutputSpec("pgsql", "pgsql:pbs.auth", None, dsn="host=127.0.0.1 dbname=pbsyslog",
                                         table="pbs.auth", source_host="pop1"),)


def test_config_pgsql_defaults_the_table() -> None:
    """Without table, the pgsql output writes pop_before_smtp."""
    config = Config.from_mapping({"output": [{"kind": "pgsql", "dsn": "dbname=pbsyslog"}]})
    assert (config.outputs[0].table, config.outputs[0].source_host) == ("pop_before_smtp", None)


@pytest.mark.parametrize("item, key", [
    ({"kind": "pgsql"}, "output[0].dsn"),
    ({"kind": "pgsql", "dsn": ""}, "output[0].dsn"),
    ({"kind": "pgsql", "dsn": "dbname=x", "path": "/tmp/x"}, "'path'"),
    ({"kind": "pgsql", "dsn": "dbname=x", "table": "a-b"}, "output[0].table"),
    ({"kind": "pgsql", "dsn": "dbname=x", "source_host": ""}, "output[0].source_host"),
])
def test_config_rejects_bad_pgsql_outputs(item: dict[str, Any], key: str) -> None:
    """A bad pgsql output names the offending key."""
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.from_mapping({"output": [item]})


def test_pgsql_is_not_a_map_kind() -> None:
    """map_kind (the file at dbfile) cannot be pgsql: the primary map stays a Berkeley DB file."""
    assert "pgsql" not in MAP_KINDS
    with pytest.raises(ConfigError, match="map_kind"):
        Config.from_mapping({"map_kind": "pgsql"})


# -- wiring ---------------------------------------------------------------

def test_outputs_need_the_tracker_lookups(tmp_path: Path) -> None:
    """Outputs refuses a pgsql spec without deadline_of/pattern_of instead of writing rows without deadlines."""
    specs = [OutputSpec("postfix-hash", str(tmp_path / "map")),
             OutputSpec("pgsql", "pgsql:pop_before_smtp", dsn="dbname=x", table="pop_before_smtp")]
    with pytest.raises(ValueError, match="deadline_of"):
        Outputs(specs, now=1000)


def test_outputs_keep_the_table_writer_across_reopen(tmp_path: Path) -> None:
    """reopen() (healing a file) keeps the same pgsql writer and its queue."""
    db, tracker = Database(), Tracker()
    specs = [OutputSpec("postfix-hash", str(tmp_path / "map")),
             OutputSpec("pgsql", "pgsql:pop_before_smtp", dsn="dbname=x", table="pop_before_smtp")]
    outputs = Outputs(specs, now=1000, deadline_of=tracker.deadline, pattern_of=tracker.pattern,
                      pgsql_connect=db.connect)
    table = outputs.writers[1]
    tracker.deadlines["192.0.2.7"] = time.time() + 60
    outputs.apply(add=["192.0.2.7"])
    outputs.reopen(1001)
    assert outputs.writers[1] is table and table.keys() == {"192.0.2.7"}
    outputs.close()
    assert "192.0.2.7" in db.rows


def test_service_writes_logins_to_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login received by the service reaches the table with the tracker's deadline; a repeat extends it."""
    from test_service import LOGIN, Reactor

    from pbsyslog.wiring import build

    db = Database()
    monkeypatch.setattr(pgsql, "psycopg_connect", db.connect)
    config = Config.from_mapping({
        "dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none",
        "output": [{"kind": "pgsql", "dsn": "dbname=x", "source_host": "pop9"}],
    })
    reactor = Reactor()
    service = build(config, reactor)
    service.startService()
    try:
        table = service.outputs.writers[1]
        service.receive(LOGIN % b"192.0.2.7")
        reactor.advance(0)
        first = service.tracker.deadline("192.0.2.7")
        assert first is not None
        assert wait(lambda: db.rows.get("192.0.2.7", {}).get("expires_at") == first)
        reactor.advance(10)
        service.receive(LOGIN % b"192.0.2.7")
        reactor.advance(1)
        assert wait(lambda: db.rows["192.0.2.7"]["expires_at"] == first + 10)
        assert db.rows["192.0.2.7"]["source_host"] == "pop9"
    finally:
        service.stopService()
    assert table._thread is None


def wait(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll a condition the worker thread makes true (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_dumped_pgsql_output_loads_back() -> None:
    """The record as dumpconfig writes it (every field not at its default, path included) loads back equal."""
    from pbsyslog.config import to_toml_value

    config = Config.from_mapping({"output": [{"kind": "pgsql", "dsn": "dbname=x", "table": "pbs.auth"}]})
    dumped = to_toml_value(config.outputs[0])
    assert dumped["path"] == "pgsql:pbs.auth"
    assert Config.from_mapping({"output": [dumped]}) == config
    with pytest.raises(ConfigError, match="'path'"):
        Config.from_mapping({"output": [{**dumped, "path": "pgsql:other"}]})
