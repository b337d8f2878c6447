"""The state files on disk as the real service treats them: what it restores, what it refuses, the modes it makes.

- A journal seeded with network keys (``+ 192.168 ...``, ``+ 10 ...``) used
  to be restored into the map, and a real Postfix smtpd (access maps also
  match parent networks) then relayed for 192.168.0.0/16 and 10.0.0.0/8.
  Now those lines are skipped: the smtpd denies clients in those networks
  (XCLIENT lets the probe speak for them) and still relays for a real
  address restored from the same journal.
- A journal or a map that another uid owns, that group or others may
  write, or that is a symlink stops twistd at start-up with the file and
  the reason; the file is left as it was.
- The files the service makes are private whatever the umask twistd runs
  with: the journal 0600, the map 0640.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    LOOPBACK_V4,
    PbsyslogFactory,
    PostfixFactory,
    control_request,
    dovecot_login,
    free_port,
    postmap_q,
    render_toml,
    smtp_rcpt_as,
    twistd_path,
    wait_for,
)
from pbsyslog.journal import UNCONFIGURED_GRACE

RELAYED, DENIED = 250, 554
OTHER_UID = 65534  # nobody


def test_seeded_network_keys_never_reach_postfix(
    pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory, tmp_path: Path
) -> None:
    """'+ 192.168 ...' and '+ 10 ...' in the journal are skipped: smtpd denies 192.168.4.4 and 10.1.2.3, relays the real address restored with them."""
    dbfile = tmp_path / "pop-before-smtp"
    later = time.time() + 600
    Path(str(dbfile) + ".state").write_text(
        f"+ 192.168 {later!r} dovecot-login\n"
        f"+ 10 {later!r} dovecot-login\n"
        f'+ 172.16 {later!r} dovecot-login {later!r} [[["s",1],[{time.time()!r}]]]\n'
        f"+ 192.0.2.60 {later!r} dovecot-login\n"
        f"+ 192.0.2.61 9000000000.0 manual\n"
    )
    service = pbsyslog_service({"dbfile": str(dbfile)})
    mta = postfix(dbfile)
    assert smtp_rcpt_as(mta.port, "192.0.2.60")[0] == RELAYED, mta.describe()
    for client in ("192.168.4.4", "10.1.2.3", "172.16.0.9"):
        assert smtp_rcpt_as(mta.port, client)[0] == DENIED, f"{client} relayed\n{mta.describe()}"
    for key in ("192.168", "10", "172.16"):
        assert postmap_q(key, dbfile) == (1, ""), f"{key} is in the map\n{service.describe()}"
    assert "skipped 3 unreadable lines" in service.output(), service.describe()
    # The deadline centuries ahead came back capped (at most the configured
    # grace once the service passes it to the loader; a week before).
    entries = control_request(dbfile, {"cmd": "list"})["entries"]
    left = {e["ip"]: e["seconds_left"] for e in entries}  # type: ignore[attr-defined]
    assert 0 < left["192.0.2.61"] <= UNCONFIGURED_GRACE, left


def _journal_of_another_user(path: Path) -> None:
    path.write_bytes(b"+ 10 9000000000.0 p\n")
    os.chown(path, OTHER_UID, -1)


def _world_writable(path: Path) -> None:
    path.write_bytes(b"")
    path.chmod(0o666)


def _symlink_to_a_file_of_ours(path: Path) -> None:
    target = path.parent / "elsewhere"
    target.write_bytes(b"")
    path.symlink_to(target)


def _map_of_another_user(path: Path) -> None:
    path.write_bytes(b"")
    os.chown(path, OTHER_UID, -1)


CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "journal owned by another uid": (".state", _journal_of_another_user, f"it is owned by uid {OTHER_UID}"),
    "journal writable by others": (".state", _world_writable, "it is writable by group or others (mode 0666)"),
    "journal a symlink": (".state", _symlink_to_a_file_of_ours, "it is a symbolic link"),
    "map owned by another uid": (".db", _map_of_another_user, f"it is owned by uid {OTHER_UID}"),
    "map writable by others": (".db", _world_writable, "it is writable by group or others (mode 0666)"),
    "map a symlink": (".db", _symlink_to_a_file_of_ours, "it is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_untrusted_state_file_stops_the_start(tmp_path: Path, case: str) -> None:
    """twistd pbsyslog exits non-zero naming the file and why, before any listener, and leaves the file as it was."""
    suffix, plant, why = CASES[case]
    dbfile = tmp_path / "pop-before-smtp"
    planted = Path(str(dbfile) + suffix)
    plant(planted)
    before = os.lstat(planted)
    config = tmp_path / "pbsyslog.toml"
    port = free_port(socket.SOCK_DGRAM)
    config.write_text(render_toml({
        "dbfile": str(dbfile), "mynetworks": "none",
        "listen": [{"protocol": "udp", "host": LOOPBACK_V4, "port": port}],
    }))
    run = subprocess.run(
        [str(twistd_path()), "--nodaemon", "--pidfile=", "pbsyslog", "--config", str(config)],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert f"UntrustedFile: refusing {planted}: {why}" in output, output
    assert "pbsyslog ready" not in output, output
    after = os.lstat(planted)
    assert (after.st_ino, after.st_uid, after.st_mode, after.st_size) == (
        before.st_ino, before.st_uid, before.st_mode, before.st_size)


def test_files_the_service_makes_are_private(pbsyslog_service: PbsyslogFactory, tmp_path: Path) -> None:
    """Under twistd's default umask the map is 0640 and the journal 0600, after start-up and after logins."""
    dbfile = tmp_path / "pop-before-smtp"
    service = pbsyslog_service({"dbfile": str(dbfile)})
    journal = Path(str(dbfile) + ".state")
    service.send_udp(dovecot_login("192.0.2.62"))
    assert wait_for(lambda: postmap_q("192.0.2.62", dbfile) == (0, "OK\n"), 5), service.describe()
    assert wait_for(lambda: b"192.0.2.62" in journal.read_bytes(), 5), service.describe()
    for path, mode in ((Path(str(dbfile) + ".db"), 0o640), (journal, 0o600)):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), mode), path
