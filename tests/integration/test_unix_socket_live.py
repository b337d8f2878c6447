"""Only the daemon's side can authorise: a UNIX listener hears root (or rsyslog's user) and refuses any other local user.

The real service listens on a UNIX datagram socket with ``uids = [0]``; the
real ``logger -u SOCKET`` sends a Dovecot login line to it, once as root and
once as ``nobody`` (``runuser``).  The kernel's credentials decide, not the
text: nobody's line is refused and counted; root's is in the map.  For
contrast, the loopback UDP listener takes nobody's line (what issue-free
"127.0.0.1 is trusted" meant): sites that keep it need ``iptables -m owner``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import LOOPBACK_V4, PbsyslogFactory, postmap_q, require_program, wait_for

LOGGER = "/usr/bin/logger"
LINE = "pop3-login: Login: user=<a>, method=PLAIN, rip={ip}, lip=127.0.0.1, mpid=1"


def logger(*args: str, as_user: str | None = None) -> None:
    """Run the real logger (as ``as_user`` through runuser); fail on an error."""
    require_program(LOGGER, "bsdutils")
    command = [LOGGER, *args]
    if as_user is not None:
        command = ["runuser", "-u", as_user, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done


def test_unix_listener_hears_root_and_refuses_nobody(pbsyslog_service: PbsyslogFactory, tmp_path: Path) -> None:
    """logger -u as root authorises its address; the same line from nobody authorises nothing and is counted."""
    # Not under pytest's tmp_path (its parent is 0700): nobody must reach the
    # socket, so that its credentials refuse it, not a directory's mode.
    directory = Path(tempfile.mkdtemp(prefix="pbsyslog-unix-"))
    directory.chmod(0o755)
    sock = directory / "syslog.sock"
    service = pbsyslog_service({"listen": [{"protocol": "unix", "path": str(sock)}]})
    try:
        logger("-u", str(sock), "--socket-errors=on", "--rfc5424", "-t", "dovecot", LINE.format(ip="192.0.2.61"),
               as_user="nobody")
        logger("-u", str(sock), "--socket-errors=on", "--rfc5424", "-t", "dovecot", LINE.format(ip="192.0.2.60"))
        # Datagrams are read in order: once root's is in, nobody's was handled.
        assert wait_for(lambda: postmap_q("192.0.2.60", service.dbfile) == (0, "OK\n"), 3), service.describe()
    finally:
        service.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert postmap_q("192.0.2.60", service.dbfile) == (0, "OK\n"), service.describe()
    assert postmap_q("192.0.2.61", service.dbfile) == (1, ""), service.describe()
    assert "refused syslog from untrusted sender uid 65534" in service.output(), service.describe()


def test_loopback_udp_takes_any_local_user(pbsyslog_service: PbsyslogFactory) -> None:
    """The contrast: on the loopback UDP listener, nobody's forged line authorises (trust by address only)."""
    service = pbsyslog_service({})
    logger("-n", LOOPBACK_V4, "-P", str(service.udp_port), "-d", "-t", "dovecot", LINE.format(ip="192.0.2.62"),
           as_user="nobody")
    assert wait_for(lambda: postmap_q("192.0.2.62", service.dbfile) == (0, "OK\n"), 3), service.describe()
