"""The pgsql output end to end: real PostgreSQL, real pbsyslog, real Postfix lookups.

A private PostgreSQL 15 (Debian's ``postgresql``) is initialised in its own
directory and listens on a free loopback port and a private socket
directory; the table comes from conf/pgsql/pop-before-smtp.sql.  Postfix's
side is the shipped conf/postfix/pgsql-pop-before-smtp.cf with only the
connection lines changed, looked up by the real ``postmap -q KEY pgsql:FILE``
(Debian's ``postfix-pgsql``).  Logins are hand-sent UDP datagrams.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    LOOPBACK_V4,
    Daemon,
    OutputCollector,
    PbsyslogFactory,
    PbsyslogService,
    free_port,
    postfix_config_dir,
    require_program,
    run_postmap,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SQL = ROOT / "conf" / "pgsql" / "pop-before-smtp.sql"
POSTFIX_CF = ROOT / "conf" / "postfix" / "pgsql-pop-before-smtp.cf"
GRACE = 3.0


def login(ip: str, session: str | None = None) -> str:
    """A Dovecot POP3 login line for ``ip``; with ``session``, it opens a session (logout tracking)."""
    return (f"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            f"rip={ip}, lip=192.0.2.1, mpid=4711" + (f", session=<{session}>" if session else ""))


def logout(session: str) -> str:
    """The Dovecot mail process's logout line for the session ``session``."""
    return f"<22>Nov 29 14:23:55 vm dovecot: pop3(alice)<4711><{session}>: Disconnected: Logged out"


class PostgreSQL(Daemon):
    """A private ``postgres`` server run as the postgres user, on 127.0.0.1:port."""

    name = "postgres"
    # Fast shutdown (SIGINT): a smart one (SIGTERM) would wait for pbsyslog's connection forever.
    stop_signal = signal.SIGINT
    stop_timeout = 10.0

    def __init__(self, root: Path) -> None:
        require_program(str(PG_BIN / "initdb"), "postgresql")
        require_program(str(PG_BIN / "postgres"), "postgresql")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("no postgres user: install the Debian package 'postgresql'", pytrace=False)
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sock"
        self.sockets.mkdir()
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        init = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            user="postgres", group="postgres", capture_output=True, text=True, timeout=60, cwd=root,
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}", pytrace=False)
        self.port = free_port(socket.SOCK_STREAM)
        self.start()

    @property
    def dsn(self) -> str:
        return f"host={LOOPBACK_V4} port={self.port} dbname=pbsyslog user=postgres connect_timeout=2"

    def start(self) -> None:
        """Start the server on the same data directory and port; wait until it answers."""
        self.argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-k", str(self.sockets),
                     "-h", LOOPBACK_V4, "-p", str(self.port), "-c", "fsync=off", "-c", "TimeZone=UTC"]
        self.proc = subprocess.Popen(self.argv, cwd=self.root, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     user="postgres", group="postgres", extra_groups=[])
        self._output = OutputCollector(self.proc.stdout)
        self.wait_until(lambda: self.psql("postgres", "SELECT 1").returncode == 0, "a connection")

    def psql(self, db: str, sql: str = "", *args: str) -> subprocess.CompletedProcess[str]:
        """Run psql against the server (``sql`` as -c unless empty)."""
        command = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                   "-h", LOOPBACK_V4, "-p", str(self.port), "-U", "postgres", "-d", db, *args]
        if sql:
            command += ["-c", sql]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    def query(self, sql: str) -> str:
        """One query's output (unaligned, tuples only); fail the test on an error."""
        result = self.psql("pbsyslog", sql)
        assert result.returncode == 0, f"{sql}: {result.stderr}\n{self.describe()}"
        return result.stdout.strip()


@pytest.fixture(scope="module")
def database() -> Iterator[PostgreSQL]:
    """A running private PostgreSQL with the pbsyslog database and the shipped table."""
    root = Path(tempfile.mkdtemp(prefix="pbsyslog-pg-"))
    server = PostgreSQL(root)
    try:
        created = server.psql("postgres", "CREATE DATABASE pbsyslog")
        assert created.returncode == 0, created.stderr
        loaded = server.psql("pbsyslog", "", "-f", str(SQL))
        assert (loaded.returncode, loaded.stderr) == (0, ""), loaded
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postfix_map(database: PostgreSQL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped Postfix pgsql: map file, pointed at the test server (connection lines only)."""
    check = subprocess.run(["/usr/sbin/postconf", "-c", postfix_config_dir(), "-m"],
                           capture_output=True, text=True, timeout=30)
    if "pgsql" not in check.stdout.split():
        pytest.fail("Postfix has no pgsql: map type: install the Debian package 'postfix-pgsql'\n"
                    f"postconf -m: {check.stdout}{check.stderr}", pytrace=False)
    return pgsql_cf(database, tmp_path_factory.mktemp("postfix"))


def pgsql_cf(database: PostgreSQL, directory: Path) -> Path:
    """The shipped Postfix pgsql: map file in ``directory``, pointed at the test server (connection lines only)."""
    text = POSTFIX_CF.read_text()
    replaced = {"hosts": f"inet:{LOOPBACK_V4}:{database.port}", "user": "postgres",
                "password": "unused", "dbname": "pbsyslog"}
    for key, value in replaced.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, f"{POSTFIX_CF} has no single '{key} =' line"
    path = directory / "pgsql-pop-before-smtp.cf"
    path.write_text(text)
    an_hour_ago = time.time() - 3600  # Postfix waits for a config file younger than 1 s to "cool down"
    os.utime(path, (an_hour_ago, an_hour_ago))
    return path


def postmap_pgsql(key: str, cf: Path) -> tuple[int, str]:
    """``postmap -q KEY pgsql:CF``; fail on anything on stderr (a broken query must not pass as 'not found')."""
    result = run_postmap("-q", key, f"pgsql:{cf}")
    if result.stderr:
        pytest.fail(f"postmap -q {key} pgsql:{cf} exited {result.returncode}:\n{result.stderr}", pytrace=False)
    return result.returncode, result.stdout


def start_pbsyslog(factory: PbsyslogFactory, database: PostgreSQL, name: str, grace: float) -> PbsyslogService:
    return factory({
        "grace": grace, "expire_interval": 0.5,
        "output": [{"kind": "pgsql", "dsn": database.dsn, "source_host": name}],
    })


def row(database: PostgreSQL, ip: str) -> str:
    """``expires_at epoch|source_host|pattern`` of ``ip``'s row, or ''."""
    return database.query(
        f"SELECT extract(epoch FROM expires_at)::float8 || '|' || source_host || '|' || pattern "
        f"FROM pop_before_smtp WHERE ip = '{ip}'")


def test_shipped_query_is_the_one_tested(postfix_map: Path) -> None:
    """The Postfix file's query enforces expiry in the database, as the README and table comment say."""
    query = [line for line in postfix_map.read_text().splitlines() if line.startswith("query = ")]
    assert query == ["query = SELECT 'OK' FROM pop_before_smtp WHERE ip = '%s' AND expires_at > now()"]


def test_login_is_ok_for_postfix_until_it_expires(
    database: PostgreSQL, postfix_map: Path, pbsyslog_service: PbsyslogFactory
) -> None:
    """After a login Postfix's pgsql: lookup answers OK; once expires_at has passed, nothing."""
    service = start_pbsyslog(pbsyslog_service, database, "pop1", GRACE)
    assert postmap_pgsql("192.0.2.7", postfix_map) == (1, "")
    service.send_udp(login("192.0.2.7", "KxeGB2thD8R"))
    assert wait_for(lambda: postmap_pgsql("192.0.2.7", postfix_map) == (0, "OK\n"), 3.0), (
        f"no OK from pgsql: after a login; row: {row(database, '192.0.2.7')!r}\n{service.describe()}")
    # An open session keeps the IP authorised: login + max_session (1 day) + grace.
    expires, source, pattern = row(database, "192.0.2.7").split("|")
    assert float(expires) > time.time() + 86000 and (source, pattern) == ("pop1", "dovecot-login")
    # A host name, as check_client_access also looks up, is simply not found (text column, no error).
    assert postmap_pgsql("mail.example.com", postfix_map) == (1, "")
    # The logout shortens the deadline to logout + grace: the row is lowered to it.
    logged_out = time.time()
    service.send_udp(logout("KxeGB2thD8R"))
    assert wait_for(lambda: float(row(database, "192.0.2.7").split("|")[0]) < time.time() + 60, 3.0), (
        f"row after the logout: {row(database, '192.0.2.7')!r}\n{service.describe()}")
    assert abs(float(row(database, "192.0.2.7").split("|")[0]) - (logged_out + GRACE)) < 1.0
    assert postmap_pgsql("192.0.2.7", postfix_map) == (0, "OK\n")
    assert wait_for(lambda: postmap_pgsql("192.0.2.7", postfix_map) == (1, ""), GRACE + 3.0)
    assert time.time() - logged_out >= GRACE - 0.5
    assert service.wait_for_output("removed 192.0.2.7 from map (expired)", 3.0), service.describe()


def test_two_instances_keep_the_later_deadline(
    database: PostgreSQL, postfix_map: Path, pbsyslog_service: PbsyslogFactory
) -> None:
    """Two pbsyslogs log the same IP in; the row keeps the later deadline whichever writes last."""
    long = start_pbsyslog(pbsyslog_service, database, "pop-long", 600.0)
    short = start_pbsyslog(pbsyslog_service, database, "pop-short", 30.0)
    long.send_udp(login("192.0.2.8"))
    assert wait_for(lambda: row(database, "192.0.2.8").endswith("|pop-long|dovecot-login"), 3.0), long.describe()
    first = float(row(database, "192.0.2.8").split("|")[0])
    short.send_udp(login("192.0.2.8"))
    # A sentinel logged in after it: once its row is there, the short instance's
    # upsert of 192.0.2.8 has been committed too (same or earlier transaction).
    short.send_udp(login("192.0.2.98"))
    assert wait_for(lambda: row(database, "192.0.2.98"), 3.0), short.describe()
    expires, source, _ = row(database, "192.0.2.8").split("|")
    assert (float(expires), source) == (pytest.approx(first, abs=1e-3), "pop-long")
    # The other way round: a short deadline written first is extended by the long one.
    short.send_udp(login("192.0.2.9"))
    assert wait_for(lambda: row(database, "192.0.2.9").endswith("|pop-short|dovecot-login"), 3.0), short.describe()
    long.send_udp(login("192.0.2.9"))
    assert wait_for(lambda: row(database, "192.0.2.9").endswith("|pop-long|dovecot-login"), 3.0), long.describe()
    assert float(row(database, "192.0.2.9").split("|")[0]) > time.time() + 500
    assert postmap_pgsql("192.0.2.9", postfix_map) == (0, "OK\n")


def test_administrator_del_does_not_cut_another_instances_later_grant(
    database: PostgreSQL, postfix_map: Path, pbsyslog_service: PbsyslogFactory
) -> None:
    """``pbsyslog del`` on one instance ends its own grant at once, but leaves a later grant of another."""
    a = start_pbsyslog(pbsyslog_service, database, "pop-a", 600.0)
    b = start_pbsyslog(pbsyslog_service, database, "pop-b", 900.0)
    a.send_udp(login("192.0.2.10"))
    a.send_udp(login("192.0.2.11"))
    assert wait_for(lambda: row(database, "192.0.2.10") and row(database, "192.0.2.11"), 3.0), a.describe()
    b.send_udp(login("192.0.2.11"))
    assert wait_for(lambda: row(database, "192.0.2.11").endswith("|pop-b|dovecot-login"), 3.0), b.describe()
    for ip in ("192.0.2.10", "192.0.2.11"):
        deleted = subprocess.run(
            [str(Path(sys.executable).parent / "pbsyslog"), "del", ip, "--config", str(a.config_path)],
            capture_output=True, text=True, timeout=30)
        assert deleted.returncode == 0, deleted
    assert wait_for(lambda: postmap_pgsql("192.0.2.10", postfix_map) == (1, ""), 3.0), row(database, "192.0.2.10")
    assert postmap_pgsql("192.0.2.11", postfix_map) == (0, "OK\n")
    assert row(database, "192.0.2.11").split("|")[1] == "pop-b"


def test_logins_during_a_database_outage_reach_the_table_after_it_returns(
    database: PostgreSQL, postfix_map: Path, pbsyslog_service: PbsyslogFactory
) -> None:
    """With PostgreSQL stopped, logins still reach the hash map; when it is back, they reach the table."""
    service = start_pbsyslog(pbsyslog_service, database, "pop-outage", 600.0)
    service.send_udp(login("198.51.100.1"))
    assert wait_for(lambda: row(database, "198.51.100.1"), 3.0), service.describe()
    database.stop()
    ips = [f"198.51.100.{i}" for i in range(2, 7)]
    for ip in ips:
        service.send_udp(login(ip))
    for ip in ips:
        assert service.wait_for_output(f"added {ip} to map", 3.0), service.describe()
    listing = run_postmap("-s", f"hash:{service.dbfile}")
    assert set(ips) <= {line.split("\t")[0] for line in listing.stdout.splitlines()}, listing
    assert service.wait_for_output("logged once until it works again", 5.0), service.describe()
    time.sleep(1.0)
    database.start()
    assert wait_for(lambda: all(row(database, ip) for ip in ips), 20.0), (
        f"rows after the restart: {database.query('SELECT ip FROM pop_before_smtp')}\n{service.describe()}")
    for ip in ips:
        assert postmap_pgsql(ip, postfix_map) == (0, "OK\n")
    errors = [line for line in service.output().splitlines() if "logged once until it works again" in line]
    assert 1 <= len(errors) <= 2, errors  # one per kind of failure (write, connect), not one per retry
    reconnects = [line for line in service.output().splitlines() if "connected; resyncing" in line]
    assert len(reconnects) == 2, service.describe()  # at start-up, and once after the restart
