"""README.rst's commands: the quick start run verbatim, the rest mapped to the tests that run them.

Every literal command line in the README is either executed here or named
in COVERED with the test that exercises it; a README line that is neither
fails the test, so the docs cannot drift from what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import postmap_q, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.rst"
BIN = Path(sys.executable).parent

# Lines run verbatim by test_quick_start_verbatim (from the checkout).
QUICK_START = {
    "make run",
    "logger -n 127.0.0.1 -P 5514 -d -t dovecot 'pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.7, "
    "lip=127.0.0.1, mpid=1, session=<x>'",
    ".venv/bin/pbsyslog list --config conf/pbsyslog.toml",
}
# Lines run elsewhere: README line -> (test file, test function).
COVERED = {
    "make test": (".ci/run", "make test"),
    "python3 -m venv /opt/pbsyslog": ("tests/integration/test_packaging.py", "def venv("),
    "/opt/pbsyslog/bin/pip install /path/to/pbsyslog      # or the wheel": ("tests/integration/test_packaging.py", "def venv("),
    "/opt/pbsyslog/bin/twistd --help | grep pbsyslog": ("tests/integration/test_packaging.py", "def test_installed_twistd_lists_pbsyslog"),
    "cp conf/pbsyslog.service /etc/systemd/system/": ("tests/integration/test_systemd.py", "def test_unit_verifies_without_warnings"),
    "systemctl daemon-reload && systemctl enable --now pbsyslog": ("tests/integration/test_systemd.py", "def test_unit_verifies_without_warnings"),
    "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,":
        ("tests/integration/test_packaging.py", "def test_snippet_checks_the_map_in_relay_restrictions"),
    "permit_auth_destination,":
        ("tests/integration/test_packaging.py", "def test_snippet_checks_the_map_in_relay_restrictions"),
    "check_client_access hash:/var/lib/pbsyslog/pop-before-smtp,":
        ("tests/integration/test_packaging.py", "def test_snippet_checks_the_map_in_relay_restrictions"),
    "reject_unauth_destination": ("tests/integration/test_packaging.py", "def test_snippet_checks_the_map_in_relay_restrictions"),
    "postmap -q 192.0.2.7 hash:/var/lib/pbsyslog/pop-before-smtp": ("tests/integration/test_postmap.py", "def test_ipv4_login_is_added_then_expires"),
    "pbsyslog list --config /etc/pbsyslog/pbsyslog.toml": ("tests/integration/test_admin_cli.py", "def test_online_commands_go_through_the_service"),
    "twistd -n pbsyslog --config FILE [--udp HOST:PORT]... [--tcp HOST:PORT]...": ("tests/test_service.py", "def test_options_override_file"),
    "[--allow CIDR]... [--socketmap HOST:PORT]... [--metrics HOST:PORT]": ("tests/integration/test_metrics_http.py", "--metrics"),
    "[--dbfile PATH] [--grace SECONDS]": ("tests/test_service.py", "def test_options_override_file"),
    # The RELP recipe: the same omrelp action (target and port swapped) in the RELP tests.
    'module(load="omrelp")': ("tests/integration/test_relp_rsyslog.py", 'module(load="omrelp")'),
    'mail.* action(type="omrelp" target="pbsyslog.example.org" port="2514"':
        ("tests/integration/test_relp_rsyslog.py", 'mail.* action(type="omrelp"'),
    'template="RSYSLOG_SyslogProtocol23Format"':
        ("tests/integration/test_relp_rsyslog.py", 'template="RSYSLOG_SyslogProtocol23Format"'),
    'queue.type="LinkedList" action.resumeRetryCount="-1")':
        ("tests/integration/test_relp_rsyslog.py", 'queue.type="LinkedList"'),
}
NOT_COMMANDS = ("POP/IMAP daemon ->", "-> pattern table ->")


def readme_lines() -> list[str]:
    """Every non-empty line of the README's literal blocks."""
    lines = README.read_text().splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            i += 1
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                if lines[i].strip():
                    found.append(lines[i].strip())
                i += 1
        else:
            i += 1
    return found


def test_every_readme_command_is_tested() -> None:
    """Each literal line of the README is run here or by the named test, which exists."""
    unknown = [line for line in readme_lines()
               if line not in QUICK_START and line not in COVERED and not line.startswith(NOT_COMMANDS)]
    assert not unknown, f"README lines no test runs: {unknown}"
    for path, needle in COVERED.values():
        assert needle in (ROOT / path).read_text(), f"{path} has no {needle!r}"


def test_quick_start_verbatim() -> None:
    """`make run`, then the README's logger line, makes its list line show the IP within a second, and Postfix finds it."""
    assert subprocess.run([str(BIN / "pbsyslog"), "flush", "--dbfile", "var/pop-before-smtp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30).returncode in (0, 2)
    service = subprocess.Popen(["make", "run"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    output: list[str] = []
    try:
        assert service.stdout is not None
        for line in service.stdout:
            output.append(line)
            if "pbsyslog ready" in line:
                break
        else:
            pytest.fail("make run ended before 'pbsyslog ready':\n" + "".join(output))
        listing = next(x for x in QUICK_START if x.startswith(".venv/bin/pbsyslog list"))

        def listed() -> str:
            done = subprocess.run(listing, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert "192.0.2.7\t" not in listed()
        logger = next(x for x in QUICK_START if x.startswith("logger"))
        subprocess.run(logger, shell=True, cwd=ROOT, check=True, timeout=10)
        found = wait_for(lambda: "192.0.2.7\tdovecot" in listed(), 1.0)
        assert found, "the list line did not show 192.0.2.7 within a second\n" + "".join(output)
        # What the quick start says in prose: Postfix's own lookup finds it too.
        assert wait_for(lambda: postmap_q("192.0.2.7", ROOT / "var" / "pop-before-smtp") == (0, "OK\n"), 1.0)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(15)
