"""pbsyslog replay: a log fed at its own timestamps gives the authorisations of its last moment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbsyslog.cli import main
from pbsyslog.outputs.berkeley import open_output

LOG = """\
2026-11-29T14:00:00.000000+00:00 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.254, mpid=1
2026-11-29T14:10:00.000000+00:00 vm dovecot: pop3-login: Login: user=<b>, method=PLAIN, rip=192.0.2.2, lip=192.0.2.254, mpid=2
2026-11-29T14:20:00.000000+00:00 vm dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<c>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.254, session=<y>
2026-11-29T14:35:00.000000+00:00 vm postfix/smtpd[9]: connect from unknown[192.0.2.4]
"""


def test_replay_uses_the_files_own_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 14:00 login has expired by 14:35 (30 min grace); the 14:10 one has 5 minutes left; failures never count."""
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    conf = tmp_path / "c.toml"
    conf.write_text(f'mynetworks = "none"\ndbfile = "{tmp_path}/prod"\n')
    assert main(["replay", "--json", "--config", str(conf), str(log)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["authorised"] == [{"ip": "192.0.2.2", "pattern": "dovecot-login", "seconds_left": 300.0}]


def test_replay_writes_only_a_map_it_is_told_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--write-map writes the result there, and refuses the service's own map."""
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    conf = tmp_path / "c.toml"
    conf.write_text(f'mynetworks = "none"\ndbfile = "{tmp_path}/prod"\n')
    assert main(["replay", "--config", str(conf), "--write-map", str(tmp_path / "test"), str(log)]) == 0
    writer = open_output("postfix-hash", str(tmp_path / "test"))
    assert writer.keys() == {"192.0.2.2"}
    writer.close()
    assert main(["replay", "--config", str(conf), "--write-map", str(tmp_path / "prod"), str(log)]) == 2
    assert "never writes it" in capsys.readouterr().err
    assert not (tmp_path / "prod.db").exists()


def test_replay_loads_no_twisted(tmp_path: Path) -> None:
    """`pbsyslog replay` runs the pipeline without importing Twisted (no reactor, no service)."""
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    conf = tmp_path / "c.toml"
    conf.write_text(f'mynetworks = "none"\ndbfile = "{tmp_path}/prod"\n')
    code = (
        "import sys; from pbsyslog.cli import main; "
        f"code = main(['replay', '--json', '--config', {str(conf)!r}, {str(log)!r}]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'), file=sys.stderr); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["authorised"][0]["ip"] == "192.0.2.2"
    assert done.stderr.splitlines()[-1] == "[]", done.stderr
