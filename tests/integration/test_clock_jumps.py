"""A step of the system clock while pbsyslog runs neither extends a grant nor ends every grant at once.

The real service runs under libfaketime (Debian's ``libfaketime``), whose
offset the test changes at run time through a timestamp file: the
service's wall clock jumps back or forward an hour, its monotonic clock
does not.  Expiry must follow the time that really passed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import PbsyslogFactory, PbsyslogService, dovecot_login, postmap_q, require_program, wait_for

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
GRACE = 3.0


def start_under_faketime(factory: PbsyslogFactory, offset_file: Path, monkeypatch: pytest.MonkeyPatch,
                         grace: float) -> PbsyslogService:
    """The real service with its wall clock taken from ``offset_file`` (re-read at every call)."""
    if not os.path.exists(LIBFAKETIME):
        require_program("/usr/bin/faketime", "faketime")  # fails the test, naming the package
        pytest.fail(f"{LIBFAKETIME} is missing: install the Debian package 'libfaketime'", pytrace=False)
    offset_file.write_text("+0\n")
    with monkeypatch.context() as env:  # only twistd runs under libfaketime, not postmap
        env.setenv("LD_PRELOAD", LIBFAKETIME)
        env.setenv("FAKETIME_TIMESTAMP_FILE", str(offset_file))
        env.setenv("FAKETIME_NO_CACHE", "1")
        env.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        return factory({"grace": grace, "expire_interval": 0.25})


def test_clock_set_back_an_hour_does_not_extend_a_grant(
    pbsyslog_service: PbsyslogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login, then the service's wall clock goes back an hour: the IP still leaves the map when its grace ends."""
    offset = tmp_path / "faketime"
    service = start_under_faketime(pbsyslog_service, offset, monkeypatch, GRACE)
    service.send_udp(dovecot_login("192.0.2.95"))
    dbfile = service.dbfile
    assert wait_for(lambda: postmap_q("192.0.2.95", dbfile) == (0, "OK\n"), 2), service.describe()
    logged_in = time.monotonic()
    offset.write_text("-3600\n")
    assert wait_for(lambda: postmap_q("192.0.2.95", dbfile) == (1, ""), GRACE + 3), (
        "the grant outlived its grace after the clock was set back\n" + service.describe())
    assert time.monotonic() - logged_in >= GRACE - 0.5


def test_clock_set_forward_an_hour_ends_no_grant_early(
    pbsyslog_service: PbsyslogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login with a 60 s grace, then the wall clock goes forward an hour: the IP stays authorised."""
    offset = tmp_path / "faketime"
    service = start_under_faketime(pbsyslog_service, offset, monkeypatch, 60)
    service.send_udp(dovecot_login("192.0.2.96"))
    dbfile = service.dbfile
    assert wait_for(lambda: postmap_q("192.0.2.96", dbfile) == (0, "OK\n"), 2), service.describe()
    offset.write_text("+3600\n")
    time.sleep(1.5)  # several expiry ticks (0.25 s) on the jumped clock
    assert postmap_q("192.0.2.96", dbfile) == (0, "OK\n"), service.describe()
