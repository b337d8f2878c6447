"""The twistd plugin as installed: listed by twistd, and bad settings stop it before binding."""

import socket
import subprocess
import sys
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")


def test_twistd_lists_plugin() -> None:
    """`twistd --help` from the project's virtualenv lists pbsyslog."""
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True).stdout
    assert any(line.split()[:1] == ["pbsyslog"] for line in out.splitlines()), out


def test_bad_config_exits_before_binding(tmp_path: Path) -> None:
    """An unknown key stops twistd with the key named and a non-zero exit, before the map is even created."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "var").mkdir()  # where the default map would be created if it started
    conf = tmp_path / "bad.toml"
    conf.write_text(f'gracee = 5\n[[listen]]\nprotocol = "tcp"\nhost = "127.0.0.1"\nport = {port}\n')
    proc = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "pbsyslog", "--config", str(conf)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert proc.returncode != 0
    assert "'gracee'" in proc.stdout + proc.stderr
    assert not (tmp_path / "var" / "pop-before-smtp.db").exists()
