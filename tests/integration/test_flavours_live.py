"""The Sendmail, Exim and postfix-btree maps as the *running* service keeps them.

test_other_mtas.py shows each flavour's writer produces files the real
programs read.  Here the writers are driven by ``twistd pbsyslog`` itself:
the primary map (postfix-hash) plus one ``[[output]]`` of each other file
flavour, fed real-format Dovecot login lines over UDP, changed by the
administrator's CLI through the control socket, and carried across a
SIGTERM + restart.  After every step each real reader is asked:

* Postfix: ``postmap -q IP hash:PRIMARY`` and ``postmap -q IP btree:BTREE``;
* Sendmail (Debian's sendmail-bin, unpacked by mta_tools): ``sendmail -bt``
  running rulesets that look ``Connect:${client_addr}`` up in the access map
  and ``${client_addr}`` in the popauth map (IPv6 in the form Debian's
  Sendmail gives ${client_addr}), and ``makemap -u`` dumping both files;
* Exim (Debian's exim4): ``exim4 -be '${lookup{IP}dbm{MAP}...}'`` and a
  simulated SMTP session ``exim4 -bh IP`` whose connect ACL tests
  ``hosts = net-dbm;MAP``.

Nothing listens but pbsyslog (UDP/TCP on 127.0.0.1, its control socket);
Sendmail and Exim run only in their test modes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import PbsyslogService, dovecot_login, postmap_q, run_postmap, wait_for
from mta_tools import SENDMAIL_RULES, Exim, MtaTree, makemap_dump, sendmail_cf, sendmail_test_mode

PBSYSLOG = str(Path(sys.executable).parent / "pbsyslog")

V4, V6 = "192.0.2.7", "2001:db8::7"
SHORT = "192.0.2.9"  # added by hand with a 2 s grace that runs out while the service is down
OTHER = "192.0.2.8"  # never authorised: every reader must miss it throughout
ALL = (V4, V6, SHORT, OTHER)
# ${client_addr} as Debian's Sendmail (IPV6_FULL) sets it for each client.
CLIENT_ADDR = {V4: V4, V6: "IPv6:2001:db8:0:0:0:0:0:7", SHORT: SHORT, OTHER: OTHER}
# What `makemap -u` lists for each authorised address, per Sendmail flavour.
ACCESS_ENTRIES = {
    V4: [("connect:192.0.2.7", "RELAY")],
    V6: [("connect:ipv6:2001:db8:0:0:0:0:0:7", "RELAY"), ("connect:ipv6:2001:db8::7", "RELAY")],
    SHORT: [("connect:192.0.2.9", "RELAY")],
}
POPAUTH_ENTRIES = {
    V4: [("192.0.2.7", "OK")],
    V6: [("ipv6:2001:db8:0:0:0:0:0:7", "OK"), ("ipv6:2001:db8::7", "OK")],
    SHORT: [("192.0.2.9", "OK")],
}


# Long enough that no expiry tick runs during the module: SHORT must leave
# the maps at start-up, not through a tick of the first service.
EXPIRE_INTERVAL = 600
ARRIVAL_TIMEOUT = 10.0


class Readers:
    """Every real program that reads one of the service's maps, and where each map is."""

    def __init__(self, tree: MtaTree, exim: Exim, maps: Path, primary: Path) -> None:
        self.tree, self.exim = tree, exim
        self.primary = primary
        self.btree = maps / "btree"
        self.access = maps / "sendmail-access"
        self.popauth = maps / "sendmail-popauth"
        # Exim's -bh drops to Debian-exim: its map lives in make_exim's
        # world-traversable directory (the one its net-dbm ACL names).
        self.exim_map = exim.directory / "map"
        self.cf = sendmail_cf(maps, SENDMAIL_RULES.format(access=self.access, popauth=self.popauth))

    def outputs(self) -> list[dict[str, str]]:
        """The [[output]] tables of the service's config."""
        return [
            {"kind": "sendmail-access", "path": str(self.access)},
            {"kind": "sendmail-popauth", "path": str(self.popauth)},
            {"kind": "exim-dbm", "path": str(self.exim_map)},
            {"kind": "postfix-btree", "path": str(self.btree)},
        ]

    def files(self) -> dict[str, Path]:
        """The file each flavour writes (and its MTA opens): PATH.db, but Exim's exactly PATH."""
        return {
            "postfix-hash": Path(f"{self.primary}.db"),
            "postfix-btree": Path(f"{self.btree}.db"),
            "sendmail-access": Path(f"{self.access}.db"),
            "sendmail-popauth": Path(f"{self.popauth}.db"),
            "exim-dbm": self.exim_map,
        }

    # -- the lookups --------------------------------------------------------

    def postfix_hash(self, ip: str) -> bool:
        return _postmap_answer(postmap_q(ip, self.primary), f"hash:{self.primary}", ip)

    def postfix_btree(self, ip: str) -> bool:
        result = run_postmap("-q", ip, f"btree:{self.btree}")
        assert result.stderr == "", result
        return _postmap_answer((result.returncode, result.stdout), f"btree:{self.btree}", ip)

    def sendmail(self, ips: tuple[str, ...]) -> dict[str, list[bool]]:
        """One ``sendmail -bt``: both rulesets for each client address."""
        script = "".join(
            f".D{{client_addr}}{CLIENT_ADDR[ip]}\nConnect_access x\nIs_popauth_ok x\n" for ip in ips
        )
        out = sendmail_test_mode(self.tree, self.cf, script)
        answers: dict[str, list[str]] = {"Connect_access": [], "Is_popauth_ok": []}
        for line in out.splitlines():
            name, _, rest = line.strip().partition(" ")
            if name in answers and "returns:" in rest:
                answers[name].append(rest.split("returns:", 1)[1].strip())
        access, popauth = answers["Connect_access"], answers["Is_popauth_ok"]
        assert len(access) == len(popauth) == len(ips), out
        assert set(access) <= {"RELAY", "NOTFOUND"} and set(popauth) <= {"YES", "NO"}, out
        return {
            "sendmail access Connect:${client_addr}": [a == "RELAY" for a in access],
            "sendmail popauth ${client_addr}": [a == "YES" for a in popauth],
        }

    def exim_dbm(self, ips: tuple[str, ...]) -> list[bool]:
        """One ``exim4 -be`` expanding ``${lookup{IP}dbm{MAP}{<$value>}{NOTFOUND}}`` per address."""
        result = self.exim.run(
            "-be", *(f"${{lookup{{{ip}}}dbm{{{self.exim_map}}}{{<$value>}}{{NOTFOUND}}}}" for ip in ips)
        )
        lines = result.stdout.splitlines()
        assert len(lines) == len(ips) and set(lines) <= {"<OK>", "NOTFOUND"}, result
        return [line == "<OK>" for line in lines]

    def exim_net_dbm(self, ip: str) -> bool:
        """``exim4 -bh IP``: does the connect ACL's ``hosts = net-dbm;MAP`` match the client?"""
        result = self.exim.run("-bh", ip, stdin="QUIT\r\n")
        both = result.stdout + result.stderr
        assert "220 test.example" in result.stdout, result
        assert "failed to open" not in both and "defer" not in both.lower(), result
        return "PBSYSLOG net-dbm hit" in both

    def view(self, ips: tuple[str, ...] = ALL) -> dict[str, list[bool]]:
        """Which of ``ips`` each real reader finds."""
        seen = {
            "postmap hash:": [self.postfix_hash(ip) for ip in ips],
            "postmap btree:": [self.postfix_btree(ip) for ip in ips],
            **self.sendmail(ips),
            "exim4 -be dbm lookup": self.exim_dbm(ips),
            "exim4 -bh net-dbm host list": [self.exim_net_dbm(ip) for ip in ips],
        }
        return seen

    def dumps(self) -> dict[str, list[tuple[str, str]]]:
        """Everything ``makemap -u`` lists in the two Sendmail maps."""
        return {
            "access": makemap_dump(self.tree, self.cf, self.access),
            "popauth": makemap_dump(self.tree, self.cf, self.popauth),
        }


def _postmap_answer(answer: tuple[int, str], table: str, ip: str) -> bool:
    assert answer in ((0, "OK\n"), (1, "")), f"postmap -q {ip} {table} answered {answer}"
    return answer == (0, "OK\n")


def expected(present: set[str], ips: tuple[str, ...] = ALL) -> dict[str, list[bool]]:
    """What every reader must say when exactly ``present`` is authorised."""
    row = [ip in present for ip in ips]
    readers = (
        "postmap hash:", "postmap btree:",
        "sendmail access Connect:${client_addr}", "sendmail popauth ${client_addr}",
        "exim4 -be dbm lookup", "exim4 -bh net-dbm host list",
    )
    return {reader: row for reader in readers}


def expected_dumps(present: set[str]) -> dict[str, list[tuple[str, str]]]:
    return {
        "access": sorted(e for ip in present for e in ACCESS_ENTRIES[ip]),
        "popauth": sorted(e for ip in present for e in POPAUTH_ENTRIES[ip]),
    }


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pbsyslog`` console script against ``config``."""
    return subprocess.run(
        [PBSYSLOG, *args, "--config", str(config)], capture_output=True, text=True, timeout=30
    )


def journal_ips(config: Path) -> set[str]:
    """The IPs ``pbsyslog list`` reports (with the service stopped: from the state journal, expired ones dropped)."""
    result = cli(config, "list", "--json")
    assert result.returncode == 0, result
    return {entry["ip"] for entry in json.loads(result.stdout)["entries"]}





def test_flavours_follow_the_running_service(
    tree: MtaTree, exim: Exim, services: list[PbsyslogService], tmp_path: Path
) -> None:
    """Logins, an admin del and a restart (with a grace that ran out meanwhile) reach every real reader."""
    workdir, maps = tmp_path / "service", tmp_path / "maps"
    workdir.mkdir()
    maps.mkdir()
    readers = Readers(tree, exim, maps, primary=workdir / "pop-before-smtp")
    # 2001:db8::7 is written to maps that match parent networks only with
    # allow-parent-match: this test is about each flavour's key forms
    # (test_ipv6_exact.py is about which keys are written).
    overrides = {"expire_interval": EXPIRE_INTERVAL, "output": readers.outputs(),
                 "ipv6_file_maps": "allow-parent-match"}

    def start() -> PbsyslogService:
        service = PbsyslogService(workdir, overrides)
        services.append(service)
        return service

    def settled(present: set[str], why: str, service: PbsyslogService, wait: bool) -> None:
        """Every reader finds exactly ``present`` (polled for up to ARRIVAL_TIMEOUT if ``wait``)."""
        want = expected(present)
        if wait:
            wait_for(lambda: readers.view() == want, ARRIVAL_TIMEOUT, interval=0.05)
        seen = readers.view()
        assert seen == want, f"{why}: readers saw {seen}\n{service.describe()}"
        assert readers.dumps() == expected_dumps(present), f"{why}\n{service.describe()}"

    svc = start()
    assert svc.dbfile == readers.primary and svc.config_path == workdir / "pbsyslog.toml"
    # Each flavour's file is where its MTA opens it, created at start-up.
    for kind, path in readers.files().items():
        assert path.is_file(), f"{kind}: {path} missing after start-up\n{svc.describe()}"
    assert not Path(f"{readers.exim_map}.db").exists(), "exim-dbm must write PATH itself, not PATH.db"
    settled(set(), "empty at start", svc, wait=False)

    # 1. Two real-format Dovecot logins over UDP reach every flavour.
    svc.send_udp(dovecot_login(V4))
    svc.send_udp(dovecot_login(V6))
    settled({V4, V6}, "after the logins", svc, wait=True)

    # 2. The administrator takes V4 away through the control socket (the
    #    offline path would touch the primary map only): the reply comes
    #    after the commit, so every reader misses it at once; V6 stays.
    removed = cli(svc.config_path, "del", V4)
    assert (removed.returncode, removed.stdout) == (0, "removed\n"), removed
    assert svc.wait_for_output(f"removed {V4} from map (administrator)", 2.0), svc.describe()
    settled({V6}, f"after pbsyslog del {V4}", svc, wait=False)

    # 3. SHORT by hand with a 2 s grace; then a clean stop (SIGTERM).
    added = cli(svc.config_path, "add", SHORT, "--grace", "2")
    assert (added.returncode, added.stdout) == (0, f"added {SHORT}\n"), added
    assert svc.wait_for_output(f"added {SHORT} to map (manual)", 2.0), svc.describe()
    settled({V6, SHORT}, f"after pbsyslog add {SHORT} --grace 2", svc, wait=False)
    svc.stop()
    assert svc.proc.returncode == 0, f"SIGTERM should be a clean stop\n{svc.describe()}"

    # SHORT's deadline passes while nothing runs: the journal no longer
    # lists it, but the files still hold it (nobody removed it yet).
    assert wait_for(lambda: SHORT not in journal_ips(svc.config_path), 5.0, interval=0.1), svc.describe()
    assert journal_ips(svc.config_path) == {V6}
    settled({V6, SHORT}, "stopped, SHORT's grace over", svc, wait=False)

    # The restarted service restores V6 (every spelling of it stays) and
    # drops SHORT from every map before it says it is ready.
    again = start()
    assert again.config_path == svc.config_path and again.dbfile == svc.dbfile
    settled({V6}, "after the restart", again, wait=False)
    assert f"removed {SHORT} from map (not authorised at start-up)" in again.output(), again.describe()
    assert "restored 1 authorisations" in again.output(), again.describe()
