"""SIGHUP on the real service: a new config applies without losing state; a broken one is refused."""

from __future__ import annotations

import signal

from harness import PbsyslogFactory, postmap_q, wait_for


def dovecot(ip: str) -> str:
    """A Dovecot login line."""
    return ("<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
            f"rip={ip}, lip=127.0.0.1, mpid=1, session=<x>")


def courier(ip: str) -> str:
    """A Courier login line."""
    return f"<22>Nov 29 14:44:39 vm pop3d: LOGIN, user=alice, ip=[{ip}], port=[41751]"


def test_sighup_reloads_patterns_and_refuses_broken_config(pbsyslog_service: PbsyslogFactory) -> None:
    """After SIGHUP with dovecot disabled, dovecot lines stop authorising, earlier IPs stay, and a broken file is refused."""
    svc = pbsyslog_service({"patterns": ["dovecot", "courier"]})
    svc.send_udp(dovecot("192.0.2.60"))
    assert wait_for(lambda: postmap_q("192.0.2.60", svc.dbfile) == (0, "OK\n"), 2), svc.describe()

    text = svc.config_path.read_text()
    svc.config_path.write_text(text.replace('patterns = ["dovecot", "courier"]', 'patterns = ["courier"]'))
    svc.proc.send_signal(signal.SIGHUP)
    assert svc.wait_for_output("reloaded configuration", 5), svc.describe()
    svc.send_udp(dovecot("192.0.2.61"))
    svc.send_udp(courier("192.0.2.62"))
    assert wait_for(lambda: postmap_q("192.0.2.62", svc.dbfile) == (0, "OK\n"), 2), svc.describe()
    assert postmap_q("192.0.2.61", svc.dbfile) == (1, "")
    assert postmap_q("192.0.2.60", svc.dbfile) == (0, "OK\n")

    svc.config_path.write_text("grace = -1\n" + text)
    svc.proc.send_signal(signal.SIGHUP)
    assert svc.wait_for_output("reload refused", 5), svc.describe()
    svc.send_udp(courier("192.0.2.63"))
    assert wait_for(lambda: postmap_q("192.0.2.63", svc.dbfile) == (0, "OK\n"), 2), svc.describe()
    assert svc.proc.poll() is None
