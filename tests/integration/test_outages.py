"""What a real Postfix smtpd answers while pbsyslog (or its database) is away, for each output and shipped recipe.

Each stack is pbsyslog with one output, and a private Postfix whose
``smtpd_relay_restrictions`` is the shipped snippet's value, read with the
real ``postconf`` from ``conf/postfix/`` with only paths and ports
changed.  Three probes, each one SMTP session from its own loopback address
that stops after RCPT (RSET, QUIT; every transport is discard anyway):

* inbound: a stranger sends to the Postfix's own domain;
* relay, logged in: a client that logged in to POP3 before the outage
  relays to a foreign domain;
* relay, stranger: a client that never logged in relays.

``OUTAGES`` holds the answers (RCPT reply codes) the README's outage table
shows; ``test_readme_table_is_this_one`` keeps the two the same.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_pgsql_live import SQL, PostgreSQL, pgsql_cf

from harness import (
    LOCAL_DOMAIN,
    LOOPBACK_V4,
    PbsyslogFactory,
    PbsyslogService,
    Postfix,
    PostfixFactory,
    dovecot_login,
    free_port,
    postfix_config_dir,
    smtp_rcpt,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = ROOT / "conf" / "postfix"
README = ROOT / "README.rst"

LOGGED_IN = "127.0.0.21"  # logged in to POP3 before the outage
STRANGER = "127.0.0.22"  # never logged in
INBOUND = f"someone@{LOCAL_DOMAIN}"
FOREIGN = "someone@example.net"

# (output, situation) -> RCPT codes for (inbound, relay logged in, relay stranger).
OUTAGES: dict[tuple[str, str], tuple[int, int, int]] = {
    ("hash", "pbsyslog running"): (250, 250, 554),
    ("hash", "pbsyslog stopped"): (250, 250, 554),
    ("hash", "a commit holds the map's lock"): (250, 250, 554),
    ("socketmap", "pbsyslog running"): (250, 250, 554),
    ("socketmap", "pbsyslog stopped"): (250, 451, 451),
    ("socketmap without permit_auth_destination", "pbsyslog stopped"): (451, 451, 451),
    ("policy", "pbsyslog running"): (250, 250, 554),
    ("policy", "pbsyslog stopped"): (250, 554, 554),
    ("pgsql", "pbsyslog running"): (250, 250, 554),
    ("pgsql", "pbsyslog stopped"): (250, 250, 554),
    ("pgsql", "database stopped"): (250, 451, 451),
}


def snippet_restrictions(name: str, replace: dict[str, str]) -> str:
    """``smtpd_relay_restrictions`` of the shipped snippet ``name`` as postconf reads it, with ``replace`` applied."""
    directory = Path(tempfile.mkdtemp(prefix="pbsyslog-snippet-"))
    try:
        (directory / "main.cf").write_text((SNIPPETS / name).read_text())
        (directory / "master.cf").write_text("")
        result = subprocess.run(["/usr/sbin/postconf", "-c", str(directory), "-h", "smtpd_relay_restrictions"],
                                capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert (result.returncode, result.stderr) == (0, ""), result
    value = result.stdout.strip()
    for old, new in replace.items():
        assert old in value, (name, old, value)
        value = value.replace(old, new)
    return value


def probe(mta: Postfix) -> tuple[int, int, int]:
    """The three probes' RCPT codes."""
    return (smtp_rcpt(mta.port, STRANGER, INBOUND)[0], smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0],
            smtp_rcpt(mta.port, STRANGER, FOREIGN)[0])


def logged_in(service: PbsyslogService, visible: Callable[[], bool]) -> None:
    """Log LOGGED_IN in through the service's UDP listener and wait until ``visible()`` says the output has it."""
    service.send_udp(dovecot_login(LOGGED_IN))
    assert wait_for(visible, 5), service.describe()


def check(output: str, situation: str, got: tuple[int, int, int], mta: Postfix) -> None:
    assert got == OUTAGES[(output, situation)], f"{output}, {situation}: got {got}\n{mta.describe()}"


def test_hash_map(pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory) -> None:
    """hash: the file outlives pbsyslog; a commit in progress makes a lookup wait, never fail."""
    service = pbsyslog_service({"grace": 600})
    restrictions = snippet_restrictions(
        "main.cf.snippet", {"/var/lib/pbsyslog/pop-before-smtp": str(service.dbfile)})
    mta = postfix(service.dbfile, relay_restrictions=restrictions)
    logged_in(service, lambda: smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0] == 250)
    check("hash", "pbsyslog running", probe(mta), mta)

    # A commit holds the map's exclusive lock: smtpd's shared-lock lookup waits for it.
    hold = 1.0
    fd = os.open(service.db_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    release = threading.Timer(hold, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    started = time.monotonic()
    release.start()
    try:
        relayed = smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0]
        waited = time.monotonic() - started
    finally:
        release.join()
    inbound, _, stranger = probe(mta)
    check("hash", "a commit holds the map's lock", (inbound, relayed, stranger), mta)
    assert waited >= hold * 0.9, f"the lookup did not wait for the lock ({waited:.2f} s)"

    service.stop()
    check("hash", "pbsyslog stopped", probe(mta), mta)


@pytest.mark.parametrize("recipe", ["socketmap", "socketmap without permit_auth_destination"])
def test_socketmap(pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory, recipe: str) -> None:
    """socketmap: while pbsyslog is down every lookup is a 451; the shipped order keeps inbound mail out of it."""
    port = free_port(socket.SOCK_STREAM)
    service = pbsyslog_service({"grace": 600, "socketmap": [
        {"host": LOOPBACK_V4, "port": port, "names": ["pop-before-smtp"]}]})
    restrictions = snippet_restrictions(
        "main.cf.socketmap.snippet", {"inet:127.0.0.1:9514": f"inet:{LOOPBACK_V4}:{port}"})
    if recipe != "socketmap":
        restrictions = re.sub(r"\s*permit_auth_destination,", "", restrictions)
    mta = postfix(None, relay_restrictions=restrictions)
    logged_in(service, lambda: smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0] == 250)
    if recipe == "socketmap":
        check(recipe, "pbsyslog running", probe(mta), mta)
    service.stop()
    check(recipe, "pbsyslog stopped", probe(mta), mta)


def test_policy_service(pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory) -> None:
    """policy service: while pbsyslog is down, default_action=DUNNO refuses relaying and nothing else."""
    port = free_port(socket.SOCK_STREAM)
    service = pbsyslog_service({"grace": 600, "policy": [{"host": LOOPBACK_V4, "port": port}]})
    restrictions = snippet_restrictions(
        "main.cf.policy.snippet", {"inet:127.0.0.1:9515": f"inet:{LOOPBACK_V4}:{port}"})
    mta = postfix(None, relay_restrictions=restrictions)
    logged_in(service, lambda: smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0] == 250)
    check("policy", "pbsyslog running", probe(mta), mta)
    service.stop()
    check("policy", "pbsyslog stopped", probe(mta), mta)


@pytest.fixture(scope="module")
def database() -> Iterator[PostgreSQL]:
    """A private PostgreSQL with the shipped table (stopped by the test that needs it down)."""
    root = Path(tempfile.mkdtemp(prefix="pbsyslog-pg-"))
    server = PostgreSQL(root)
    try:
        assert server.psql("postgres", "CREATE DATABASE pbsyslog").returncode == 0
        loaded = server.psql("pbsyslog", "", "-f", str(SQL))
        assert (loaded.returncode, loaded.stderr) == (0, ""), loaded
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_pgsql(pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory, database: PostgreSQL) -> None:
    """pgsql: the rows outlive pbsyslog (expiry is in the query); while the database is down every lookup is a 451."""
    cf = pgsql_cf(database, Path(postfix_config_dir()))
    text = cf.read_text()
    # The pgsql recipe is the one in the .cf file's comment: the hash snippet's order with the pgsql: lookup.
    commented = "\n".join(line[2:] for line in text.splitlines()
                          if line.startswith("#   ") or line.startswith("#       "))
    assert "permit_auth_destination," in commented, commented
    restrictions = snippet_restrictions(
        "main.cf.snippet", {"hash:/var/lib/pbsyslog/pop-before-smtp": f"pgsql:{cf}"})
    service = pbsyslog_service({"grace": 600, "output": [{"kind": "pgsql", "dsn": database.dsn}]})
    mta = postfix(None, relay_restrictions=restrictions)
    logged_in(service, lambda: smtp_rcpt(mta.port, LOGGED_IN, FOREIGN)[0] == 250)
    check("pgsql", "pbsyslog running", probe(mta), mta)
    service.stop()
    check("pgsql", "pbsyslog stopped", probe(mta), mta)
    database.stop()
    check("pgsql", "database stopped", probe(mta), mta)


def readme_table() -> dict[tuple[str, str], tuple[int, int, int]]:
    """The rows of the README's outage table: (output, situation) -> (inbound, relay logged in, relay stranger)."""
    text = README.read_text()
    start = text.index("When pbsyslog is away")
    rows: dict[tuple[str, str], tuple[int, int, int]] = {}
    for line in text[start:].splitlines()[3:]:
        if line.startswith("Running a fleet") or (rows and not line.strip()):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 5 and cells[2].isdigit():
            rows[(cells[0].strip("`"), cells[1])] = (int(cells[2]), int(cells[3]), int(cells[4]))
    return rows


def test_readme_table_is_this_one() -> None:
    """The README's outage table has exactly the rows these tests check."""
    assert readme_table() == OUTAGES
