"""The administrator's CLI against a running service (control socket) and a stopped one (files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import PbsyslogFactory, PbsyslogService, postmap_q, wait_for

PBSYSLOG = str(Path(sys.executable).parent / "pbsyslog")


def cli(dbfile: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `pbsyslog` console script with --dbfile."""
    return subprocess.run([PBSYSLOG, *args, "--dbfile", str(dbfile)], capture_output=True, text=True, timeout=30)


def test_online_commands_go_through_the_service(pbsyslog_service: PbsyslogFactory) -> None:
    """add/list/del/flush/status talk to the running service, which updates its map at once."""
    svc: PbsyslogService = pbsyslog_service()
    assert cli(svc.dbfile, "add", "192.0.2.70", "--grace", "600").stdout == "added 192.0.2.70\n"
    assert postmap_q("192.0.2.70", svc.dbfile) == (0, "OK\n")
    assert svc.wait_for_output("added 192.0.2.70 to map (manual)", 2), svc.describe()
    cli(svc.dbfile, "add", "2001:DB8::71")
    listing = json.loads(cli(svc.dbfile, "list", "--json").stdout)["entries"]
    assert [(e["ip"], e["pattern"]) for e in listing] == [("192.0.2.70", "manual"), ("2001:db8::71", "manual")]
    assert 590 < listing[0]["seconds_left"] <= 600
    assert cli(svc.dbfile, "del", "192.0.2.70").stdout == "removed\n"
    assert postmap_q("192.0.2.70", svc.dbfile) == (1, "")
    status = json.loads(cli(svc.dbfile, "status", "--json").stdout)
    assert status["authorised"] == 1 and status["map_writes"] >= 3
    assert cli(svc.dbfile, "flush").stdout == "removed 1\n"
    assert postmap_q("2001:db8::71", svc.dbfile) == (1, "")
    bad = cli(svc.dbfile, "add", "not-an-ip")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr


def test_offline_commands_work_on_files_and_survive_start(pbsyslog_service: PbsyslogFactory, tmp_path: Path) -> None:
    """With the service stopped, add writes state and map; the next start keeps it; status says not running."""
    dbfile = tmp_path / "pop-before-smtp"
    assert cli(dbfile, "add", "192.0.2.80", "--grace", "900").returncode == 0
    assert postmap_q("192.0.2.80", dbfile) == (0, "OK\n")
    status = cli(dbfile, "status")
    assert status.returncode == 3 and "not running" in status.stderr
    svc = pbsyslog_service({"dbfile": str(dbfile)})
    assert postmap_q("192.0.2.80", dbfile) == (0, "OK\n"), svc.describe()
    listing = json.loads(cli(dbfile, "list", "--json").stdout)["entries"]
    assert listing[0]["ip"] == "192.0.2.80" and 880 < listing[0]["seconds_left"] <= 900
    svc.stop()
    assert cli(dbfile, "del", "192.0.2.80").stdout == "removed\n"
    assert postmap_q("192.0.2.80", dbfile) == (1, "")
    again = pbsyslog_service({"dbfile": str(dbfile)})
    assert wait_for(lambda: "pbsyslog ready" in again.output(), 5)
    assert postmap_q("192.0.2.80", dbfile) == (1, "")
