"""The "pgsql" output: a PostgreSQL table that Postfix reads with ``pgsql:``.

Contract: the only module that imports the PostgreSQL driver (psycopg 3).
``PgsqlWriter`` has the writers' interface (``apply(add, remove)``,
``replace_all(keys)``, ``keys()``, ``close()``, ``path``, ``filename``)
plus ``refresh(ips)`` for deadlines that moved without changing the set.
Those methods run on the reactor thread and never wait for the database:
they update this instance's view (``want``: ip -> deadline, pattern, read
from the tracker through ``deadline_of`` / ``pattern_of``) and mark the IP
dirty.  One worker thread turns dirty IPs into SQL, in batches of up to
``batch`` IPs per transaction.

The table (``conf/pgsql/pop-before-smtp.sql``) has one row per IP and is
shared by every instance of a fleet.  Postfix enforces expiry in its query
(``... WHERE ip = '%s' AND expires_at > now()``), so an instance that dies
leaves no permit beyond the deadline it wrote.  What this instance writes,
per IP, from the deadline it wants now and the one it last wrote:

* a deadline at or past the one it wrote (a login, a restart's restore):
  an upsert that only ever extends, ``expires_at = GREATEST(old, new)``.
  Two instances writing the same IP keep the later deadline.
* no deadline, and the written one has passed (expiry): nothing at all.
  The row is already dead for Postfix; the cleanup deletes it later.
* no deadline while the written one is still ahead (the administrator's
  ``del`` / ``flush``), or an earlier deadline than the written one (a
  logout ending an open session): lower the row to the new deadline (now,
  for a removal) ``WHERE expires_at <= the deadline this instance wrote``.
  So a removal never cuts a later authorisation another instance wrote.
  The price of one row per IP: a grant of another instance that was no
  later than ours (hidden under GREATEST) is lowered with ours; that
  instance's next login for the IP extends it again.

Bounds: the dirty set holds at most ``max_queue`` IPs.  When it would grow
past that (the database is down during a login storm) it is dropped and a
full resync is due instead: every IP this instance wants is upserted again.
A full resync is also done after every (re)connection, since whatever was
in flight when the connection broke may or may not have been committed.
Memory is otherwise bounded by the tracker's own bound (max_tracked): this
writer keeps two numbers per IP the tracker holds.

Cleanup: every ``cleanup_interval`` seconds the worker deletes rows that
expired more than ``retention`` seconds ago, in a transaction that first
takes ``pg_try_advisory_xact_lock``: with many instances, one does it per
round and the others skip.

How it fails: never into the caller.  A failed connection or statement is
logged once per kind of failure (until that kind works again); the worker
reconnects with exponential backoff (0.5 s doubling to 30 s), then resyncs.
The other outputs are not affected.  ``close()`` gives the worker up to
``close_timeout`` seconds to write what is pending, then gives up on it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from pbsyslog.logs import Failing

log = Logger(namespace="pbsyslog")

DEFAULT_TABLE = "pop_before_smtp"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

# One statement per kind of write; {table} is a checked identifier.
# source_host and pattern follow whoever holds the latest deadline.
UPSERT = """
INSERT INTO {table} AS t (ip, expires_at, pattern, source_host, updated_at)
SELECT u.ip, to_timestamp(u.deadline), u.pattern, %(source)s, now()
  FROM unnest(%(ips)s::text[], %(deadlines)s::float8[], %(patterns)s::text[]) AS u(ip, deadline, pattern)
ON CONFLICT (ip) DO UPDATE SET
    expires_at = GREATEST(t.expires_at, EXCLUDED.expires_at),
    pattern = EXCLUDED.pattern,
    source_host = EXCLUDED.source_host,
    updated_at = now()
  WHERE EXCLUDED.expires_at > t.expires_at
"""
# Lower a row to u.deadline (NULL: now) only while it still holds no later
# deadline than the one this instance wrote; never raise it, never below now.
LOWER = """
UPDATE {table} AS t
   SET expires_at = LEAST(t.expires_at, GREATEST(to_timestamp(u.deadline), now())),
       source_host = %(source)s,
       updated_at = now()
  FROM unnest(%(ips)s::text[], %(written)s::float8[], %(deadlines)s::float8[]) AS u(ip, written, deadline)
 WHERE t.ip = u.ip AND t.expires_at <= to_timestamp(u.written)
"""
CLEANUP = "DELETE FROM {table} WHERE expires_at < now() - make_interval(secs => %(retention)s)"
LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(%(key)s))"


def check_table(name: str) -> str:
    """Return ``name`` if it is a plain (optionally schema-qualified) SQL identifier, else raise ValueError."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL table name (letters, digits, _; schema.table): {name!r}")
    return name


def psycopg_connect(dsn: str) -> Any:
    """Open a psycopg connection (imported here: the driver is needed only with a pgsql output)."""
    import psycopg

    return psycopg.connect(dsn, connect_timeout=5, autocommit=False)


class PgsqlWriter:
    """This instance's authorisations, mirrored into a shared PostgreSQL table by a worker thread."""

    def __init__(
        self,
        dsn: str,
        table: str,
        source_host: str,
        deadline_of: Callable[[str], float | None],
        pattern_of: Callable[[str], str | None],
        *,
        seconds: Callable[[], float] = time.time,
        connect: Callable[[str], Any] | None = None,
        call_in_reactor: Callable[..., Any] | None = None,
        max_queue: int = 100_000,
        batch: int = 1000,
        cleanup_interval: float = 300.0,
        retention: float = 3600.0,
        close_timeout: float = 5.0,
        start: bool = True,
    ) -> None:
        self.dsn = dsn
        self.table = check_table(table)
        self.path = f"pgsql:{table}"
        self.filename = self.path
        self.source_host = source_host
        self._deadline_of = deadline_of
        self._pattern_of = pattern_of
        self._seconds = seconds
        self._connect = connect or (lambda dsn: psycopg_connect(dsn))  # looked up late: tests replace it
        self._call = call_in_reactor or (lambda f, *a, **kw: f(*a, **kw))
        self.max_queue = max_queue
        self.batch = batch
        self.cleanup_interval = cleanup_interval
        self.retention = retention
        self.close_timeout = close_timeout
        # Shared with the worker, under _lock.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._want: dict[str, tuple[float, str]] = {}  # reactor side: what the tracker holds
        self._written: dict[str, float] = {}  # worker side: the deadline last committed per IP
        self._dirty: set[str] = set()
        self._force: set[str] = set()  # resync: upsert these even where the written deadline is the same
        self._resync = True  # first connection: upsert everything
        self._stopping = False
        # Worker-only state.
        self._conn: Any = None
        self._failing = Failing()
        self._backoff = 0.0
        self._next_cleanup = 0.0
        # Counters (read by tests and status; approximate across threads).
        self.overflows = 0
        self.commits = 0
        self.errors = 0
        self.cleanups = 0
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name=f"pbsyslog-pgsql-{table}", daemon=True)
            self._thread.start()

    # -- the MapOutput interface (reactor thread; never waits for the database) --

    # Never raises (it queues for its worker), and heals itself: kept as it is when the files are reopened.
    self_healing = True
    # Postfix's pgsql: lookups for check_client_access include parent networks.
    parent_match = True

    def abandon(self) -> None:
        """Nothing to drop: the worker keeps its own connection."""

    def apply(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Queue new authorisations and removals."""
        with self._lock:
            for ip in add:
                self._take(ip)
            for ip in remove:
                self._want.pop(ip, None)
                self._mark(ip)
            self._wake.notify()

    def refresh(self, ips: Iterable[str]) -> None:
        """Queue the current deadlines of ``ips`` (extended by a login, shortened by a logout)."""
        with self._lock:
            for ip in ips:
                if ip in self._want or self._deadline_of(ip) is not None:
                    self._take(ip)
            self._wake.notify()

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Want exactly ``keys`` (at the tracker's deadlines) and resync the table; return (added, removed)."""
        wanted = set(keys)
        with self._lock:
            before = set(self._want)
            for ip in before - wanted:
                del self._want[ip]
                self._mark(ip)
            for ip in wanted:
                self._take(ip, mark=False)
            self._resync = True
            self._wake.notify()
        return wanted - before, before - wanted

    def keys(self) -> set[str]:
        """The IPs this instance holds authorised (written or queued)."""
        with self._lock:
            return set(self._want)

    def close(self) -> None:
        """Stop the worker after it wrote what is pending (at most close_timeout seconds)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(self.close_timeout)
            if self._thread.is_alive():
                log.warn("pgsql output {table}: gave up writing {n} pending changes at shutdown "
                         "(the database is unreachable); rows expire at the deadlines already written",
                         table=self.table, n=len(self._dirty))
            self._thread = None
        else:
            self._close_connection()

    def pending(self) -> int:
        """How many IPs wait to be written (the whole set when a resync is due)."""
        with self._lock:
            return len(self._want) + len(self._written) if self._resync else len(self._dirty)

    def _take(self, ip: str, mark: bool = True) -> None:
        deadline = self._deadline_of(ip)
        if deadline is None:
            self._want.pop(ip, None)
        else:
            self._want[ip] = (deadline, self._pattern_of(ip) or "")
        if mark:
            self._mark(ip)

    def _mark(self, ip: str) -> None:
        if self._resync:
            return  # the resync covers every IP
        if len(self._dirty) >= self.max_queue and ip not in self._dirty:
            # Bounded: drop the queue, resync everything once the database answers.
            self._dirty.clear()
            self._resync = True
            self.overflows += 1
            return
        self._dirty.add(ip)

    # -- the worker ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._dirty or self._resync or self._stopping) and not self._cleanup_due():
                    self._wake.wait(self._until_cleanup())
                stopping = self._stopping
            progressed = self.run_once()
            if stopping and (progressed is None or not self.pending()):
                # Stopping: leave once everything is written or the database is away.
                self._close_connection()
                return
            if progressed is None:
                with self._lock:
                    if not self._stopping:
                        self._wake.wait(self._backoff)

    def _cleanup_due(self) -> bool:
        return self.cleanup_interval > 0 and time.monotonic() >= self._next_cleanup

    def _until_cleanup(self) -> float | None:
        if self.cleanup_interval <= 0:
            return None
        return max(0.0, self._next_cleanup - time.monotonic())

    def run_once(self) -> bool | None:
        """One round: connect if needed, write one batch, clean up if due.

        Returns True if something was written, False if there was nothing
        to do, None if the database failed (the caller backs off).
        """
        if self._conn is None:
            try:
                self._conn = self._connect(self.dsn)
            except Exception as e:
                self._failed("connect", "cannot connect to PostgreSQL for the pgsql output {table}: {error}",
                             error=e)
                return None
            with self._lock:
                self._resync = True  # the table may have lost or missed writes: upsert everything again
                n = len(self._want)
            self._failing.works("connect")  # the resync line below says it
            self._call(log.info, "pgsql output {table}: connected; resyncing {n} authorisations", table=self.table, n=n)
        try:
            wrote = self._write_batch()
            if self._cleanup_due():
                self._next_cleanup = time.monotonic() + self.cleanup_interval
                self._cleanup()
        except Exception as e:
            self.errors += 1
            self._failed("write", "writing to the pgsql output {table} failed: {error}; reconnecting",
                         error=e)
            self._close_connection()
            with self._lock:
                self._resync = True
            return None
        self._backoff = 0.0
        self._works("write", "writes to the pgsql output {table} work again")
        return wrote

    def _write_batch(self) -> bool:
        now = self._seconds()
        with self._lock:
            if self._resync:
                self._resync = False
                self._dirty = set(self._want) | set(self._written)
                self._force = set(self._want)
            ips: list[str] = []
            while self._dirty and len(ips) < self.batch:
                ips.append(self._dirty.pop())
            plan = [(ip, self._want.get(ip), self._written.get(ip), ip in self._force) for ip in ips]
            self._force.difference_update(ips)
        ups: list[tuple[str, float, str]] = []
        lows: list[tuple[str, float, float | None]] = []
        done: dict[str, float | None] = {}
        for ip, want, written, force in plan:
            if want is not None:
                deadline, pattern = want
                if written is not None and deadline < written:
                    lows.append((ip, written, deadline))
                elif written is None or deadline > written or force:
                    ups.append((ip, deadline, pattern))
                done[ip] = deadline
            elif written is not None and written > now:
                lows.append((ip, written, None))
                done[ip] = None
            else:
                done[ip] = None  # expired (or never written): the query already says no
        if ups or lows:
            try:
                with self._conn.cursor() as cur:
                    if ups:
                        cur.execute(UPSERT.format(table=self.table), {
                            "source": self.source_host, "ips": [u[0] for u in ups],
                            "deadlines": [u[1] for u in ups], "patterns": [u[2] for u in ups],
                        })
                    if lows:
                        cur.execute(LOWER.format(table=self.table), {
                            "source": self.source_host, "ips": [low[0] for low in lows],
                            "written": [low[1] for low in lows], "deadlines": [low[2] for low in lows],
                        })
                self._conn.commit()
            except BaseException:
                with self._lock:
                    self._dirty.update(ips)
                    # Not written: again after the reconnect's resync.
                    self._force.update(ip for ip, _, _, force in plan if force)
                raise
            self.commits += 1
        with self._lock:
            for ip, committed in done.items():
                if committed is None:
                    self._written.pop(ip, None)
                else:
                    self._written[ip] = committed
        return bool(ups or lows)

    def _cleanup(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(LOCK, {"key": f"pbsyslog cleanup {self.table}"})
            (locked,) = cur.fetchone()
            if locked:
                cur.execute(CLEANUP.format(table=self.table), {"retention": self.retention})
                self.cleanups += 1
        self._conn.commit()  # ends the transaction, releasing the advisory lock

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _failed(self, kind: str, message: str, **fields: Any) -> None:
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        if self._failing.failed(kind):
            self._call(log.error, message + " (logged once until it works again; retrying)",
                       table=self.table, **fields)

    def _works(self, kind: str, message: str, **fields: Any) -> None:
        if self._failing.works(kind):
            self._call(log.info, message, table=self.table, **fields)
