"""Packaging and the Postfix recipe: the wheel, a non-editable install, conf/postfix.

The wheel is built from a copy of the checkout (minus what .gitignore
leaves out), so the build leaves no build/ or *.egg-info in the working
tree.  It is installed, with its dependencies from the package
index, into one fresh virtualenv per test session (module-scoped; about
10-60 s, mostly building bsddb3 against libdb5.3-dev), and the tests run its
twistd from a directory outside the checkout, with no PYTHONPATH, so that
nothing can be found in the source tree by accident.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
POSTCONF = "/usr/sbin/postconf"
POSTMAP = "/usr/sbin/postmap"
SNIPPET = ROOT / "conf" / "postfix" / "main.cf.snippet"
MAP = "hash:/var/lib/pbsyslog/pop-before-smtp"
TIMEOUT = 15.0


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` without PYTHONPATH or an active virtualenv; fail with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n--- stdout ---\n{result.stdout}"
            f"\n--- stderr ---\n{result.stderr}",
            pytrace=False,
        )
    return result


def require(path: str, package: str) -> str:
    """Return ``path`` if executable, else fail naming the Debian package."""
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install the Debian package {package!r}", pytrace=False)
    return path


# --------------------------------------------------------------------------
# The wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout; return its path."""
    # What .gitignore leaves out, plus .git: no git needed, works from a tarball too.
    junk = shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis", "dropin.cache",
    )
    source = tmp_path_factory.mktemp("source") / "pbsyslog"
    shutil.copytree(ROOT, source, ignore=junk, symlinks=True)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)], dist)
    wheels = list(dist.glob("pbsyslog-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    """The file names inside the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_contains_plugin_and_pattern_table(wheel_names: set[str]) -> None:
    """The wheel ships the twistd plugin file and the built-in pattern table."""
    assert "twisted/plugins/pbsyslog_plugin.py" in wheel_names
    assert "pbsyslog/patterns.toml" in wheel_names


def test_wheel_does_not_shadow_twisted(wheel_names: set[str]) -> None:
    """The wheel has no twisted/__init__.py or twisted/plugins/__init__.py, which would replace Twisted's own."""
    assert "twisted/__init__.py" not in wheel_names
    assert "twisted/plugins/__init__.py" not in wheel_names
    others = sorted(n for n in wheel_names if n.startswith("twisted/") and n != "twisted/plugins/pbsyslog_plugin.py")
    assert others == [], f"the wheel puts more than the plugin under twisted/: {others}"


def test_wheel_declares_runtime_dependencies(wheel: Path) -> None:
    """The wheel's metadata requires Twisted, attrs and a Berkeley DB binding."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    required = {
        re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip(), maxsplit=1)[0].lower()
        for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    assert {"twisted", "attrs"} <= required, required
    assert required & {"bsddb3", "berkeleydb"}, required


# --------------------------------------------------------------------------
# A non-editable install into a fresh virtualenv

@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtualenv (system Python) with the wheel and its dependencies installed; return its bin/."""
    require(SYSTEM_PYTHON, "python3")
    root = tmp_path_factory.mktemp("venv")
    run([SYSTEM_PYTHON, "-m", "venv", str(root)], root)
    run([str(root / "bin" / "pip"), "install", "--quiet", str(wheel)], root)
    return root / "bin"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty working directory outside the checkout."""
    return tmp_path_factory.mktemp("elsewhere")


def test_installed_twistd_lists_pbsyslog(venv: Path, outside: Path) -> None:
    """`twistd --help` from the installed venv lists the pbsyslog plugin next to Twisted's own."""
    help_text = run([str(venv / "twistd"), "--help"], outside).stdout
    commands = {line.split()[0] for line in help_text.splitlines() if line.startswith("    ") and line.split()}
    assert "pbsyslog" in commands, help_text
    # Twisted's own plugins still load: nothing of ours shadows twisted.plugins.
    assert "web" in commands, help_text


def test_installed_plugin_help_works(venv: Path, outside: Path) -> None:
    """`twistd pbsyslog --help` from the installed venv exits 0 and documents --config."""
    result = run([str(venv / "twistd"), "pbsyslog", "--help"], outside)
    assert "--config" in result.stdout, result.stdout


def test_installed_plugin_comes_from_site_packages(venv: Path, outside: Path) -> None:
    """The installed venv imports the plugin and the package from its site-packages, not from the checkout."""
    code = (
        "import pbsyslog, twisted.plugins.pbsyslog_plugin as p; "
        "print(p.__file__); print(pbsyslog.__file__)"
    )
    paths = run([str(venv / "python"), "-c", code], outside).stdout.split()
    assert len(paths) == 2, paths
    for path in paths:
        assert "site-packages" in path and not Path(path).is_relative_to(ROOT), path


def test_installed_console_script_checks_a_login_line(venv: Path, outside: Path) -> None:
    """The installed `pbsyslog` command exists and `pbsyslog check -` finds the login in a Dovecot line."""
    script = venv / "pbsyslog"
    assert os.access(script, os.X_OK), f"{script} is missing: no console_scripts entry point?"
    line = (
        "Nov 29 12:00:00 mailhost dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
        "rip=192.0.2.42, lip=192.0.2.1, mpid=4242, session=<a1b2c3d4e5f6>\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(script), "check", "-"], input=line, cwd=outside, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result
    assert result.stdout.split("\t")[1:4] == ["dovecot-login", "login", "192.0.2.42"], result


def test_installed_service_authorises_a_login(venv: Path, outside: Path) -> None:
    """The installed twistd pbsyslog takes a Dovecot login over UDP and Postfix's postmap finds the IP in its map."""
    require(POSTMAP, "postfix")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dbfile = outside / "pop-before-smtp"
    config = outside / "pbsyslog.toml"
    config.write_text(
        f'dbfile = "{dbfile}"\n\n[[listen]]\nprotocol = "udp"\nhost = "127.0.0.1"\nport = {port}\n'
    )
    log = outside / "twistd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "twistd"), "--nodaemon", "--pidfile=", "pbsyslog", "--config", str(config)],
            cwd=outside, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while "pbsyslog ready" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "pbsyslog ready" in log.read_text(), log.read_text()
        line = (
            "<22>Nov 29 12:00:00 mailhost dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            "rip=192.0.2.41, lip=192.0.2.1, mpid=4242, session=<a1b2c3d4e5f6>"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(line.encode(), ("127.0.0.1", port))
        postfix_dir = outside / "postfix"
        postfix_dir.mkdir(exist_ok=True)
        (postfix_dir / "main.cf").write_text("")
        # Postfix pauses on a main.cf modified within the last second.
        os.utime(postfix_dir / "main.cf", (time.time() - 3600, time.time() - 3600))
        query = [POSTMAP, "-c", str(postfix_dir), "-q", "192.0.2.41", f"hash:{dbfile}"]
        while True:
            result = subprocess.run(query, capture_output=True, text=True, timeout=30)
            if (result.returncode, result.stdout) == (0, "OK\n") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (result.returncode, result.stdout, result.stderr) == (0, "OK\n", ""), (
            f"{result}\n{log.read_text()}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --------------------------------------------------------------------------
# conf/postfix/main.cf.snippet

def postconf(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real postconf on ``config_dir``."""
    require(POSTCONF, "postfix")
    return subprocess.run(
        [POSTCONF, "-c", str(config_dir), *args], capture_output=True, text=True, timeout=30
    )


def snippet_dir(tmp_path: Path, extra: str = "") -> Path:
    """A Postfix config directory whose main.cf is the snippet (plus ``extra``) and master.cf is empty."""
    (tmp_path / "main.cf").write_text(SNIPPET.read_text() + extra)
    (tmp_path / "master.cf").write_text("")  # postconf warns when master.cf is missing
    return tmp_path


def test_postfix_parses_the_snippet_cleanly(tmp_path: Path) -> None:
    """`postconf -n` reads the snippet as main.cf with no warning and exactly one setting of ours."""
    result = postconf(snippet_dir(tmp_path), "-n")
    assert (result.returncode, result.stderr) == (0, ""), result
    names = [line.split(" = ", 1)[0] for line in result.stdout.splitlines()]
    assert sorted(names) == ["config_directory", "smtpd_relay_restrictions"], result.stdout


def test_snippet_checks_the_map_in_relay_restrictions(tmp_path: Path) -> None:
    """smtpd_relay_restrictions looks the client up in pbsyslog's map after mynetworks and mail to own domains, before reject_unauth_destination."""
    result = postconf(snippet_dir(tmp_path), "-h", "smtpd_relay_restrictions")
    assert (result.returncode, result.stderr) == (0, ""), result
    items = [item.strip() for item in result.stdout.split(",")]
    check = f"check_client_access {MAP}"
    assert check in items, items
    assert items.index("permit_mynetworks") < items.index("permit_auth_destination") < items.index(check) \
        < items.index("reject_unauth_destination")
    assert items[-1] == "reject_unauth_destination", items


def test_snippet_leaves_client_restrictions_alone(tmp_path: Path) -> None:
    """The snippet does not put pbsyslog's map into smtpd_client_restrictions."""
    result = postconf(snippet_dir(tmp_path), "-h", "smtpd_client_restrictions")
    assert (result.returncode, result.stderr) == (0, ""), result
    assert "pop-before-smtp" not in result.stdout


def test_postconf_check_catches_a_misspelt_parameter(tmp_path: Path) -> None:
    """The warning check is worth having: postconf warns about a misspelt parameter name."""
    result = postconf(snippet_dir(tmp_path, "smtpd_relay_restriction = permit\n"), "-n")
    assert "unused parameter: smtpd_relay_restriction" in result.stderr, result
