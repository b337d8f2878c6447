"""Only the daemon can authorise: with require_origin, Dovecot's own logins pass and `logger -t dovecot` never does.

The real chain on one host: Dovecot (its log process writes to a private
rsyslog's socket through a /dev/log bind mount) -> rsyslog with imuxsock's
annotation on (Annotate, ParseTrusted: the sender's kernel-verified uid and
its /proc exe) and the shipped conf/rsyslog/pbsyslog-unix.conf (only its
socket path changed) -> pbsyslog's uid-checked UNIX listener with
``require_origin = true``.  A forger on the POP host writes the very line
Dovecot writes, with ``logger -t dovecot``, as nobody and as root: the
origin rsyslog recorded is /usr/bin/logger, not /usr/lib/dovecot/log.
"""

from __future__ import annotations

import shutil
import string
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    READY_TIMEOUT,
    RSYSLOGD,
    Daemon,
    DovecotFactory,
    PbsyslogFactory,
    check_rsyslog_config,
    dovecot_login,
    pop3_login,
    postmap_q,
    require_program,
    run_logger,
    stopped_at_end,
    wait_for,
)

SNIPPET = Path(__file__).resolve().parents[2] / "conf" / "rsyslog" / "pbsyslog-unix.conf"
SHIPPED_SOCKET = "/run/pbsyslog/syslog.sock"
WRAPPER = string.Template("""\
global(workDirectory="$root/work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$socket" CreatePath="on" RateLimit.Interval="0" Annotate="on" ParseTrusted="on")
*.* action(type="omfile" file="$root/all.log" template="RSYSLOG_FileFormat")
include(file="$snippet")
""")


class OriginRsyslog(Daemon):
    """A private rsyslogd with imuxsock annotation on, forwarding with the shipped unix snippet."""

    name = "rsyslogd"

    def __init__(self, root: Path, target: Path) -> None:
        require_program(RSYSLOGD, "rsyslog")
        (root / "work").mkdir(parents=True, exist_ok=True)
        self.socket_path = root / "sock" / "log"
        self.log_path = root / "all.log"
        snippet = root / "pbsyslog-unix.conf"
        text = SNIPPET.read_text()
        assert text.count(SHIPPED_SOCKET) == 1, f"{SNIPPET} must name {SHIPPED_SOCKET} once"
        snippet.write_text(text.replace(SHIPPED_SOCKET, str(target)))
        self.config_path = root / "rsyslog.conf"
        self.config_path.write_text(WRAPPER.substitute(root=root, socket=self.socket_path, snippet=snippet))
        check_rsyslog_config(self.config_path)
        self.spawn([RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(root / "rsyslogd.pid")], root)
        self.wait_until(self.socket_path.is_socket, f"its socket {self.socket_path}")
        self.socket_path.chmod(0o666)  # the forgers below write as nobody too

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in rsyslog's own log file (the Dovecot harness waits for its start)."""
        return bool(wait_for(lambda: text in self.log_text(), timeout))

    def describe(self) -> str:
        return super().describe() + "\n--- all.log ---\n" + self.log_text()[-4000:]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A directory every user may traverse (nobody writes to rsyslog's socket here)."""
    path = Path(tempfile.mkdtemp(prefix="pbsyslog-origin-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def origin_rsyslog() -> Iterator[type]:
    yield from stopped_at_end(OriginRsyslog)  # type: ignore[misc]


def forge(socket_path: Path, ip: str, as_user: str | None) -> None:
    """Write Dovecot's login line for ``ip`` with logger -t dovecot (as ``as_user``) into rsyslog's socket."""
    message = dovecot_login(ip).split("dovecot: ", 1)[1]
    args = ["-u", str(socket_path), "-p", "mail.info", "-t", "dovecot", message]
    if as_user is None:
        result = run_logger(*args)
    else:
        result = subprocess.run(["runuser", "-u", as_user, "--", "/usr/bin/logger", *args],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result


def test_only_dovecot_itself_authorises(
    pbsyslog_service: PbsyslogFactory, origin_rsyslog: type, dovecot: DovecotFactory, root: Path
) -> None:
    """A real Dovecot POP3 login authorises; the same line from logger (nobody, then root) does not."""
    sock = root / "pbsyslog.sock"
    service = pbsyslog_service({"patterns": ["dovecot"], "require_origin": True,
                                "listen": [{"protocol": "unix", "path": str(sock), "uids": [0]}]})
    syslog = origin_rsyslog(root / "rsyslog", sock)
    daemon = dovecot(syslog)
    assert pop3_login(daemon.pop3_port, "127.0.0.71").startswith(b"+OK")
    assert wait_for(lambda: postmap_q("127.0.0.71", service.dbfile) == (0, "OK\n"), READY_TIMEOUT), \
        service.describe() + "\n" + syslog.describe()
    forge(syslog.socket_path, "127.0.0.72", "nobody")
    forge(syslog.socket_path, "127.0.0.73", None)
    # Barrier: rsyslog forwards its socket's lines in order; once Dovecot's next login is in, the forged ones were handled.
    assert pop3_login(daemon.pop3_port, "127.0.0.74").startswith(b"+OK")
    assert wait_for(lambda: postmap_q("127.0.0.74", service.dbfile) == (0, "OK\n"), READY_TIMEOUT), service.describe()
    assert postmap_q("127.0.0.72", service.dbfile) == (1, ""), service.describe() + "\n" + syslog.describe()
    assert postmap_q("127.0.0.73", service.dbfile) == (1, ""), service.describe() + "\n" + syslog.describe()
    assert "rip=127.0.0.72" in syslog.log_text() and "rip=127.0.0.73" in syslog.log_text()
