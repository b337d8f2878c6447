"""Never stuck, never silent: a restart after SIGKILL whatever became of the old PID, and a quiet double SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import PbsyslogFactory, PbsyslogService, control_request, dovecot_login, postmap_q, wait_for

GRACE = 2.0


def sigkill(service: PbsyslogService) -> None:
    """Kill twistd with SIGKILL and reap it."""
    service.proc.send_signal(signal.SIGKILL)
    assert service.proc.wait(10) == -signal.SIGKILL


@pytest.mark.parametrize("holder", ["live process", "zombie"])
def test_restart_after_sigkill_whatever_holds_the_old_pid(pbsyslog_service: PbsyslogFactory, holder: str) -> None:
    """After SIGKILL, with the dead service's PID lock pointing at a live process (or a zombie), the service starts, its control socket answers, and a grant that ran out while it was down is gone."""
    first = pbsyslog_service({"grace": GRACE, "expire_interval": 0.5})
    first.send_udp(dovecot_login("192.0.2.90"))
    assert wait_for(lambda: postmap_q("192.0.2.90", first.dbfile) == (0, "OK\n"), 5), first.describe()
    sigkill(first)
    # PIDs are reused: make the control socket's PID lock (as a PID-locking
    # listener leaves it behind) name a process that is alive, or a zombie.
    if holder == "live process":
        other = subprocess.Popen(["sleep", "60"])
    else:
        other = subprocess.Popen(["true"])
        wait_for(lambda: Path(f"/proc/{other.pid}/stat").read_text().split()[2] == "Z", 5)
    lock = Path(str(first.dbfile) + ".ctl.lock")
    try:
        if lock.is_symlink() or lock.exists():
            lock.unlink()
        lock.symlink_to(str(other.pid))
        assert os.path.exists(f"/proc/{other.pid}"), "the PID holder is gone already"
        time.sleep(GRACE)  # the grant runs out while the service is down
        second = pbsyslog_service({"grace": GRACE, "expire_interval": 0.5, "dbfile": str(first.dbfile)})
        assert second.proc.poll() is None, second.describe()
        status = control_request(first.dbfile, {"cmd": "status"})
        assert status["ok"] is True and status["authorised"] == 0, status
        assert wait_for(lambda: postmap_q("192.0.2.90", first.dbfile) == (1, ""), 2), second.describe()
        assert not lock.exists() and not lock.is_symlink(), "the stale PID lock was left in place"
    finally:
        other.kill()
        other.wait()


def test_second_sigterm_is_quiet(pbsyslog_service: PbsyslogFactory) -> None:
    """Two SIGTERMs in a row (make forwards one, then sends its own): exit 0, the last batch written, no traceback."""
    service = pbsyslog_service({})
    service.send_udp(dovecot_login("192.0.2.91"))
    assert wait_for(lambda: postmap_q("192.0.2.91", service.dbfile) == (0, "OK\n"), 5), service.describe()
    service.proc.send_signal(signal.SIGTERM)
    # Two pending SIGTERMs merge into one: the second goes once the first is being handled.
    assert service.wait_for_output("received SIGTERM", 5), service.describe()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(10) == 0, service.describe()
    service.stop()
    text = service.output()
    assert "ReactorNotRunning" not in text and "#critical]" not in text, service.describe()
    assert service.tracebacks() == [], service.describe()
