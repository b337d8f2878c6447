"""Dovecot's own log file through rsyslog imfile (the shipped snippet) to pbsyslog."""

from __future__ import annotations

import socket
from pathlib import Path

from harness import (
    RSYSLOGD,
    Daemon,
    PbsyslogFactory,
    check_rsyslog_config,
    free_port,
    postmap_q,
    require_program,
    wait_for,
)

SNIPPET = Path(__file__).resolve().parents[2] / "conf" / "rsyslog" / "pbsyslog-dovecot-logfile.conf"
OWN_LOG_LINES = [
    "Nov 29 14:27:53 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.150, lip=127.0.0.1, "
    "mpid=17844, session=<3MxEGWthG41/GxAy>",
    "Nov 29 14:27:54 pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, "
    "method=PLAIN, rip=192.0.2.151, lip=127.0.0.1, session=<4MxEGWthG41/GxAy>",
    "Nov 29 14:27:55 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=2001:db8::152, lip=::1, "
    "mpid=17845, session=<5MxEGWthG41/GxAy>",
]


class ImfileRsyslog(Daemon):
    """A private rsyslogd running the shipped imfile snippet (file path swapped) and a TCP forward."""

    name = "rsyslogd-imfile"

    def __init__(self, workdir: Path, logfile: Path, port: int) -> None:
        require_program(RSYSLOGD, "rsyslog")
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        snippet = SNIPPET.read_text().replace("/var/log/dovecot.log", str(logfile))
        self.config_path = workdir / "rsyslog.conf"
        self.config_path.write_text(
            f'global(workDirectory="{workdir}/work")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            + snippet
            + f'mail.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" '
            'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")\n'
        )
        check_rsyslog_config(self.config_path)
        self.spawn([RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(workdir / "pid")], workdir)
        # imfile reads a file from its start, so lines written before it polls are not missed.
        self.wait_until(lambda: True, "start-up")


def test_own_log_file_lines_authorise(pbsyslog_service: PbsyslogFactory, tmp_path: Path) -> None:
    """Login lines appended to Dovecot's own log file reach the map; the failed login does not."""
    port = free_port(socket.SOCK_STREAM)
    # 2001:db8::152 is written to the hash map only with allow-parent-match
    # (Postfix would also match it for 2001:db8::152:X); see test_ipv6_exact.py.
    svc = pbsyslog_service({"patterns": ["dovecot-file"], "ipv6_file_maps": "allow-parent-match",
                            "listen": [{"protocol": "tcp", "host": "127.0.0.1", "port": port}]})
    logfile = tmp_path / "dovecot.log"
    logfile.write_text("")
    rsyslog = ImfileRsyslog(tmp_path / "rsyslog", logfile, port)
    try:
        with logfile.open("a") as f:
            for line in OWN_LOG_LINES:
                f.write(line + "\n")
        found = lambda: postmap_q("192.0.2.150", svc.dbfile) == (0, "OK\n") and \
            postmap_q("2001:db8::152", svc.dbfile) == (0, "OK\n")  # noqa: E731
        assert wait_for(found, 10), svc.describe() + "\n" + rsyslog.describe()
        assert postmap_q("192.0.2.151", svc.dbfile) == (1, "")
    finally:
        rsyslog.stop()
