# SPDX-License-Identifier: MIT
"""Tests for bench/genlog.py, the benchmarks' seeded mail.log generator."""

import datetime
import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pbsyslog.patterns import AuthEvent, load_table
from pbsyslog.syslog import parse

GENLOG_PATH = Path(__file__).resolve().parents[1] / "bench" / "genlog.py"


def _load_genlog() -> ModuleType:
    """Import bench/genlog.py (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("genlog", GENLOG_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


genlog = _load_genlog()
TABLE = load_table("all")

FORBIDDEN_V4 = [
    ipaddress.IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/3",
    )
]
DOCUMENTATION_V6 = [ipaddress.IPv6Network("2001:db8::/32"), ipaddress.IPv6Network("3fff::/20")]
SERVER_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")  # the server's own: amavis reinjection, webmail logins
TOKEN_SPLIT = re.compile(r"[\s\[\]()<>,;=?/]+")
DOTTED_QUAD = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")


def classify(line: str) -> AuthEvent | None:
    """What pbsyslog makes of one file line, read as `pbsyslog check` reads it (header gate, parse, classify)."""
    raw = line.encode()
    if TABLE.ignores(raw):
        return None
    return TABLE.classify(parse(raw))


def addresses_in(text: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every IPv4 or IPv6 address written anywhere in ``text`` (mapped ones as written)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for token in TOKEN_SPLIT.split(text):
        token = token.rstrip(":.")
        if token.startswith("smtp:"):
            token = token[5:]
        if "." in token or ":" in token:
            try:
                found.add(ipaddress.ip_address(token))
            except ValueError:
                pass
    for quad in DOTTED_QUAD.findall(text):
        try:
            found.add(ipaddress.IPv4Address(quad))
        except ValueError:
            pass
    return found


def test_same_seed_same_output_other_seed_other_output_exact_line_count() -> None:
    """The same arguments give the same lines, another seed other lines, and there are exactly N of them."""
    first = list(genlog.generate(3000, seed=5, daemon="mixed"))
    assert first == list(genlog.generate(3000, seed=5, daemon="mixed"))
    assert len(first) == 3000
    assert all(line and "\n" not in line for line in first)
    other = list(genlog.generate(3000, seed=6, daemon="mixed"))
    assert len(other) == 3000 and other != first
    assert list(genlog.generate(0)) == []
    assert len(list(genlog.generate(1, login_frac=1.0))) == 1


@pytest.mark.parametrize("timestamp", ["traditional", "rfc3339"])
@pytest.mark.parametrize("daemon", ["dovecot", "uw", "courier", "cyrus", "mixed"])
def test_pattern_table_reads_exactly_the_login_lines(daemon: str, timestamp: str) -> None:
    """Exactly round(N * login_frac) lines are logins, and pbsyslog reads just those as logins, with the intended IP."""
    lines, login_frac = 4000, 0.0513
    log = genlog.MailLog(genlog.Options(
        lines=lines, seed=11, daemon=daemon, timestamp=timestamp, login_frac=login_frac,
        ipv6_frac=0.15, mapped_frac=0.25, local_frac=0.05, ips=300,
    ))
    records = list(log.records())
    assert len(records) == lines
    intended = {number: address for number, (_, address) in enumerate(records) if address is not None}
    assert len(intended) == round(lines * login_frac) == 205
    seen: dict[int, str | None] = {}
    kinds = set()
    for number, (line, _) in enumerate(records):
        event = classify(line)
        if event is not None:
            kinds.add(event.kind)
            if event.kind == "login":
                seen[number] = event.ip
    assert seen == intended
    assert "fail" in kinds  # failed logins are in the noise, and read as failures, not logins
    counts = log.counts
    assert counts["lines"] == lines and counts["login_lines"] == 205 and counts["noise_lines"] == lines - 205
    assert sum(counts[f"login_{kind}"] for kind in ("ipv4", "ipv6", "mapped", "local")) == 205
    assert counts["login_ipv6"] > 0 and counts["login_mapped"] > 0 and counts["login_local"] > 0
    assert sum(address == "127.0.0.1" for address in intended.values()) == counts["login_local"]


def test_no_address_in_reserved_ranges_and_never_the_sentinel_net() -> None:
    """No written address is reserved (bar the server's own 127.0.0.1), and 203.0.113.0/24 never appears."""
    for timestamp in ("traditional", "rfc3339"):
        records = list(genlog.generate_records(
            20_000, seed=3, daemon="mixed", timestamp=timestamp, ipv6_frac=0.3, mapped_frac=0.3, ips=2000,
        ))
        text = "\n".join(line for line, _ in records)
        assert "203.0.113." not in text
        found = addresses_in(text)
        assert len(found) > 2000  # the scan does see the addresses
        logins = {ipaddress.ip_address(address) for _, address in records if address is not None}
        assert SERVER_LOOPBACK not in logins  # --local-frac defaults to 0
        for address in found | logins:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if isinstance(address, ipaddress.IPv4Address):
                assert address == SERVER_LOOPBACK or not any(address in net for net in FORBIDDEN_V4), address
            else:
                assert address.is_global and not any(address in net for net in DOCUMENTATION_V6), address


def test_timestamps_rise_over_the_span_in_utc() -> None:
    """Stamps start at --start, never go back, and stay within the span, in both styles."""
    start = genlog.parse_start("2026-03-01 12:00:00")
    assert start == genlog.parse_start(str(int(start))) == 1772366400.0
    traditional = list(genlog.generate(500, start=start, span=3600.0))
    rfc3339 = list(genlog.generate(500, start=start, span=3600.0, timestamp="rfc3339"))
    assert traditional[0].startswith("Mar  1 12:00:00 mx1 ")
    assert rfc3339[0].startswith("2026-03-01T12:00:00.000000+00:00 mx1 ")
    stamps = [datetime.datetime.fromisoformat(line.split(" ", 1)[0]) for line in rfc3339]
    assert stamps == sorted(stamps) and stamps[-1] < datetime.datetime(2026, 3, 1, 13, tzinfo=datetime.UTC)
    clock = [datetime.datetime.strptime("2026 " + line[:15], "%Y %b %d %H:%M:%S") for line in traditional]
    assert clock == sorted(clock) and clock[-1].hour == 12


def test_cli_writes_the_api_bytes(tmp_path: Path) -> None:
    """The command (-o with --quiet, and stdout with the JSON summary) writes the same bytes as generate()."""
    options = ["--daemon=mixed", "--login-frac=0.03", "--ips=500", "--timestamp", "rfc3339", "--host", "pop1"]
    expected = "".join(line + "\n" for line in genlog.generate(
        2000, seed=9, daemon="mixed", login_frac=0.03, ips=500, timestamp="rfc3339", host="pop1",
    )).encode()
    out = tmp_path / "mail.log"
    quiet = subprocess.run(
        [sys.executable, str(GENLOG_PATH), "-n", "2000", "--seed", "9", "--quiet", "-o", str(out), *options],
        capture_output=True, check=True,
    )
    assert quiet.stdout == b"" and quiet.stderr == b""
    assert out.read_bytes() == expected
    loud = subprocess.run(
        [sys.executable, str(GENLOG_PATH), "--lines", "2000", "--seed", "9", *options],
        capture_output=True, check=True,
    )
    assert loud.stdout == expected
    summary = json.loads(loud.stderr)
    assert summary["lines"] == 2000 and summary["login_lines"] == 60 and summary["noise_lines"] == 1940
    assert set(summary) == set(genlog.SUMMARY_KEYS)
