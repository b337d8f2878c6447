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


def test_json_log_lines(tmp_path: Path) -> None:
    """With --logger pbsyslog.logs.json every log line is a JSON object; an added IP carries ip and pattern keys."""
    import json
    import time

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    udp.close()
    conf = tmp_path / "c.toml"
    conf.write_text(f'dbfile = "{tmp_path}/map"\n[[listen]]\nprotocol = "udp"\nhost = "127.0.0.1"\nport = {port}\n')
    proc = subprocess.Popen(
        [TWISTD, "--nodaemon", "--pidfile=", "--logger", "pbsyslog.logs.json", "pbsyslog", "--config", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        records = []
        deadline = time.monotonic() + 20
        assert proc.stdout is not None
        for line in proc.stdout:
            records.append(json.loads(line))
            if "pbsyslog ready" in records[-1]["text"]:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
                             b"rip=192.0.2.7, lip=127.0.0.1, mpid=1, session=<x>", ("127.0.0.1", port))
            if records[-1].get("ip") == "192.0.2.7" or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    added = records[-1]
    assert added["ip"] == "192.0.2.7" and added["pattern"] == "dovecot-login", records
    assert added["text"] == "added 192.0.2.7 to map (dovecot-login)" and added["level"] == "info"
