"""Real lines from real daemons (tests/corpus/, made by tools/capture/capture.py) against the pattern table.

Each line there was written by a Debian 12 daemon driven over loopback and
is labelled from what the client did (see the capture script).  A line
labelled "login" must give a login for exactly the address the client used,
when the daemon wrote that address on the line at all; nothing else may
ever give a login.  Dovecot's own log file (the corpus' real/dovecot/own.log) is
checked here too, in both ways such a line reaches the table.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import pytest

from pbsyslog.patterns import load_table
from pbsyslog.syslog import SyslogMessage, parse

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TABLE = load_table()

# Daemons whose login line carries the client address, and those whose does
# not (a two-line form: the stateful correlator's job, not the table's).
ONE_LINE = {"cyrus", "perdition", "solid-pop3d"}
NO_ADDRESS = {"mailutils", "popa3d"}

LINE = re.compile(
    r"(?:\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)\Z"
)


def split_line(line: str) -> SyslogMessage:
    """A syslog file line (RFC 3339 or classic timestamp) as the header parser would give it."""
    found = LINE.match(line)
    assert found, f"not a syslog file line: {line!r}"
    return SyslogMessage(None, None, None, found["host"], found["tag"], found["pid"], found["msg"])


VERSIONS = json.loads((CORPUS / "versions.json").read_text(encoding="utf-8"))


def load_rows() -> list[dict[str, Any]]:
    """Every labelled line of the daemons versions.json names (real/ and wire/ have tests of their own)."""
    rows = []
    for daemon in sorted(VERSIONS):
        path = CORPUS / daemon / "labels.jsonl"
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows


ROWS = load_rows()


def row_id(row: Mapping[str, Any]) -> str:
    """A short test id for a labelled line."""
    return f"{row['file']}:{row['line'][33:100]}"


def address_in_line(row: Mapping[str, Any]) -> bool:
    """Whether the daemon wrote the client's address on this line."""
    return row["ip"] is not None and re.search(
        rf"(?<![0-9A-Fa-f:.]){re.escape(row['ip'])}(?![0-9A-Fa-f.]|:[0-9A-Fa-f]*[.:])", row["line"][33:]
    ) is not None


def test_corpus_has_every_daemon_and_its_version() -> None:
    """The corpus holds lines of each daemon run, each labelled with the version versions.json records."""
    daemons = {r["daemon"] for r in ROWS}
    assert daemons == ONE_LINE | NO_ADDRESS
    for row in ROWS:
        assert row["version"] == VERSIONS[row["daemon"]]
        assert row["event"] in ("login", "logout", "fail", "other")


def test_corpus_has_logins_from_ipv4_and_ipv6_for_each_daemon() -> None:
    """Every daemon in the corpus has labelled logins from a 127.x address and from ::1."""
    for daemon in ONE_LINE | NO_ADDRESS:
        ips = {r["ip"] for r in ROWS if r["daemon"] == daemon and r["event"] == "login"}
        assert "::1" in ips and any(ip.startswith("127.") for ip in ips), daemon


@pytest.mark.parametrize("row", ROWS, ids=[row_id(r) for r in ROWS])
def test_corpus_line_is_classified_as_labelled(row: Mapping[str, Any]) -> None:
    """A login line with the address gives exactly that login; every other line never gives a login."""
    event = TABLE.match(split_line(row["line"]))
    if row["event"] == "login" and row["daemon"] in ONE_LINE:
        assert event is not None
        assert (event.kind, event.ip) == ("login", row["ip"])
    else:
        assert event is None or event.kind != "login", row["note"]


@pytest.mark.parametrize("row", ROWS, ids=[row_id(r) for r in ROWS])
def test_corpus_event_has_labelled_kind_and_address(row: Mapping[str, Any]) -> None:
    """Whatever event a real line gives has the labelled kind and the client's address."""
    event = TABLE.match(split_line(row["line"]))
    if event is not None:
        assert (event.kind, event.ip) == (row["event"], row["ip"])


def test_corpus_failures_with_an_address_are_reported() -> None:
    """Every failed-login line of a one-line daemon that carries the address gives a failure for it."""
    rows = [r for r in ROWS if r["daemon"] in ONE_LINE and r["event"] == "fail" and address_in_line(r)]
    assert {r["daemon"] for r in rows} == ONE_LINE
    for row in rows:
        event = TABLE.match(split_line(row["line"]))
        assert event is not None and (event.kind, event.ip) == ("fail", row["ip"]), row["line"]


def test_corpus_logouts_with_an_address_are_reported() -> None:
    """Every end-of-session line of Perdition and solid-pop3d after a login gives a logout for the address."""
    rows = [r for r in ROWS if r["event"] == "logout"]
    assert {r["daemon"] for r in rows} >= {"perdition", "solid-pop3d"}
    for row in rows:
        if row["daemon"] in ("perdition", "solid-pop3d"):
            event = TABLE.match(split_line(row["line"]))
            assert event is not None and (event.kind, event.ip) == ("logout", row["ip"]), row["line"]


def test_corpus_no_address_daemons_log_logins_without_the_address() -> None:
    """mailutils pop3d and stock popa3d really write their login line without any address (so no entry can)."""
    for daemon in NO_ADDRESS:
        rows = [r for r in ROWS if r["daemon"] == daemon and r["event"] == "login"]
        assert rows
        assert not any(address_in_line(r) for r in rows), daemon


def test_corpus_hostile_user_names_never_give_their_address() -> None:
    """Lines of sessions whose user name carried 6.6.6.6 never give 6.6.6.6."""
    rows = [r for r in ROWS if "6.6.6.6" in r["line"]]
    assert rows
    for row in rows:
        event = TABLE.match(split_line(row["line"]))
        assert event is None or event.ip != "6.6.6.6"


# ------------------------------------------------------ Dovecot's own log file --


def own_log_rows() -> list[dict[str, Any]]:
    """The corpus' labels of Dovecot's own log_path file."""
    from corpus_paths import REAL as base
    rows = [json.loads(line) for line in (base / "labels.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r["file"].endswith("/own.log")]


OWN = own_log_rows()


def test_own_log_is_there() -> None:
    """The corpus has Dovecot own-log lines with logins and failures."""
    assert {r["event"] for r in OWN} >= {"login", "fail", "logout", "other"}


@pytest.mark.parametrize("row", OWN, ids=[r["line"][:80] for r in OWN])
def test_own_log_line_through_imfile_tag(row: Mapping[str, Any]) -> None:
    """An own-log line forwarded whole under the pseudo-tag dovecot-log gives its labelled login or failure."""
    event = TABLE.match(SyslogMessage(None, None, None, "vm", "dovecot-log", None, row["line"]))
    check_own(row, event)


@pytest.mark.parametrize("row", OWN, ids=[r["line"][:80] for r in OWN])
def test_own_log_line_parsed_as_syslog(row: Mapping[str, Any]) -> None:
    """An own-log line parsed as a hostless syslog line (tag pop3-login / imap-login) gives the same."""
    message = parse(row["line"].encode())
    event = TABLE.match(message)
    check_own(row, event)


def check_own(row: Mapping[str, Any], event: Any) -> None:
    """Logins and failures give their event for the labelled address; nothing else gives anything."""
    if row["event"] in ("login", "fail"):
        assert event is not None and (event.kind, event.ip) == (row["event"], row["ip"])
    else:
        assert event is None
