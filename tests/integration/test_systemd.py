"""conf/pbsyslog.service: systemd accepts it, it is sandboxed, and its command line runs.

`systemd-analyze verify` works without systemd as PID 1 (as on this test
machine): it loads the unit file and its dependencies offline.  It also
checks that the ExecStart binary exists and is executable, and the unit
names /usr/local/bin/twistd (a system-wide pip install), which a test
machine need not have; so verify runs on a copy whose ExecStart names the
twistd of the venv running the tests, and nothing else changes.

verify exits 0 even for an unknown directive (it only warns), so the tests
also require that it prints nothing about the unit.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "conf" / "pbsyslog.service"
POSTFIX_SNIPPET = ROOT / "conf" / "postfix" / "main.cf.snippet"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
SHIPPED_TWISTD = "/usr/local/bin/twistd"
SHIPPED_CONFIG = "/etc/pbsyslog/pbsyslog.toml"
EXEC_START = f"{SHIPPED_TWISTD} --nodaemon --pidfile= pbsyslog --config {SHIPPED_CONFIG}"
# systemd-analyze security scores 0.0 (locked down) to 10.0; the unit
# scores 1.4 with systemd 252.  --threshold counts in tenths.
EXPOSURE_THRESHOLD = "20"


def venv_twistd() -> str:
    """The twistd next to the Python running the tests; fail if it is missing."""
    path = Path(sys.executable).parent / "twistd"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run the tests from the project venv (make venv)", pytrace=False)
    return str(path)


def service_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit's [Service] section, values in order of appearance."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """Write the unit (or ``text``) with ExecStart's twistd replaced by the venv's; return its path."""
    text = UNIT.read_text() if text is None else text
    shipped = f"\nExecStart={EXEC_START}\n"
    assert text.count(shipped) == 1, f"the unit must have the line {shipped.strip()!r} exactly once"
    copy = tmp_path / "pbsyslog.service"
    copy.write_text(text.replace(shipped, shipped.replace(SHIPPED_TWISTD, venv_twistd())))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze with ``args``; fail naming the package if it is missing."""
    if not os.access(SYSTEMD_ANALYZE, os.X_OK):
        pytest.fail(f"{SYSTEMD_ANALYZE} is missing: install the Debian package 'systemd'", pytrace=False)
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )


def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit: exit 0 and not one line about it."""
    copy = verifiable_copy(tmp_path)
    result = analyze("verify", str(copy))
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if copy.name in line]
    assert (result.returncode, about_unit) == (0, []), f"{result.stdout}{result.stderr}"


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The warning check is worth having: verify names the unit when a directive is misspelt."""
    text = UNIT.read_text()
    assert "\nProtectHome=yes\n" in text
    copy = verifiable_copy(tmp_path, text.replace("\nProtectHome=yes\n", "\nProtectHom=yes\n"))
    result = analyze("verify", str(copy))
    assert "Unknown key 'ProtectHom'" in result.stderr, result


def test_unit_runs_the_documented_command() -> None:
    """ExecStart is `twistd --nodaemon --pidfile= pbsyslog --config /etc/pbsyslog/pbsyslog.toml`, restarted on failure."""
    settings = service_settings()
    assert settings["ExecStart"] == [EXEC_START]
    assert settings["Restart"] == ["on-failure"]


@pytest.mark.parametrize(("key", "value"), [
    ("StateDirectory", "pbsyslog"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
])
def test_unit_is_sandboxed(key: str, value: str) -> None:
    """The unit sets this sandboxing directive to the expected value, and only once."""
    assert service_settings().get(key) == [value]


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the unit's exposure at 2.0 or below."""
    copy = verifiable_copy(tmp_path)
    result = analyze("security", "--offline=yes", f"--threshold={EXPOSURE_THRESHOLD}", "--no-pager", str(copy))
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert result.returncode == 0 and overall, f"{result.stdout}{result.stderr}"


def test_postfix_map_lives_in_the_state_directory() -> None:
    """The map the Postfix snippet reads is in the unit's StateDirectory, the only place the service may write."""
    state = service_settings()["StateDirectory"][0]
    maps = set(re.findall(r"hash:(\S+?),?$", POSTFIX_SNIPPET.read_text(), re.MULTILINE))
    assert maps == {f"/var/lib/{state}/pop-before-smtp"}, maps


def test_exec_start_command_line_starts_the_service(tmp_path: Path) -> None:
    """The unit's ExecStart argv, with only twistd and the config path swapped, runs pbsyslog in the foreground."""
    argv = shlex.split(service_settings()["ExecStart"][0])
    assert argv[0] == SHIPPED_TWISTD and argv.count(SHIPPED_CONFIG) == 1, argv
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dbfile = tmp_path / "pop-before-smtp"
    config = tmp_path / "pbsyslog.toml"
    config.write_text(
        f'dbfile = "{dbfile}"\n\n[[listen]]\nprotocol = "udp"\nhost = "127.0.0.1"\nport = {port}\n'
    )
    argv = [venv_twistd(), *(str(config) if arg == SHIPPED_CONFIG else arg for arg in argv[1:])]
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while "pbsyslog ready" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "pbsyslog ready" in log.read_text(), log.read_text()
        # --nodaemon: still our child, not forked away; --pidfile=: no twistd.pid.
        assert proc.poll() is None, log.read_text()
        assert not (tmp_path / "twistd.pid").exists()
        assert Path(f"{dbfile}.db").is_file(), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # twistd ends itself with the signal that stopped it (recent Twisted) or
    # exits 0 (older ones); systemd counts both as a clean stop, so neither
    # triggers Restart=on-failure.
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
