"""``mynetworks = "postconf"``: the real postconf, on a private config directory, gives networks pbsyslog can read."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from harness import postfix_config_dir, require_program
from pbsyslog.policy import from_postconf


def test_real_postconf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Postfix's own postconf answers with networks this module can read (mynetworks as main.cf sets it)."""
    require_program("/usr/sbin/postconf", "postfix")
    directory = postfix_config_dir()
    main_cf = Path(directory, "main.cf")
    stamp = main_cf.stat()
    main_cf.write_text("mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/28\n")
    # Keep the file "cool" (see postfix_config_dir): a fresh mtime costs postconf seconds.
    os.utime(main_cf, (stamp.st_atime, stamp.st_mtime))
    monkeypatch.setenv("MAIL_CONFIG", directory)
    nets, warnings = from_postconf()
    assert warnings == []
    assert nets == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
                    ipaddress.ip_network("192.0.2.0/28")]
