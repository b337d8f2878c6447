"""Real daemons and clients for the pbsyslog integration tests.

What this does: starts and stops the real programs the service meets in
production (pbsyslog under twistd, rsyslogd, Dovecot, a private Postfix), and
drives the real clients (POP3, IMAP, SMTP, util-linux logger, Postfix's
postmap), on loopback only.

What it must not do: touch any system-wide instance, configuration or port
(every daemon gets its own config, state directories and free ports), or skip
anything: a missing program is a failure with a message that names it.

How it fails: every wait has a deadline; when one passes, the failure message
carries what the daemon printed, so a broken set-up explains itself.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import imaplib
import json
import os
import poplib
import pwd
import re
import shutil
import signal
import smtplib
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest

T = TypeVar("T")
P = ParamSpec("P")

HERE = Path(__file__).resolve().parent
# Every address these tests use is in 127.0.0.0/8 or is ::1: never anything else.
LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"

# Where Debian puts the programs; found by absolute path so that a missing
# package fails with its name instead of a vague "not found".
RSYSLOGD = "/usr/sbin/rsyslogd"
DOVECOT = "/usr/sbin/dovecot"
POSTMAP = "/usr/sbin/postmap"
LOGGER = "/usr/bin/logger"
UNSHARE = "/usr/bin/unshare"

USER = "alice"
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "Tr0ub4dor&3"

READY_TIMEOUT = 15.0
POLL_INTERVAL = 0.02


def require_program(path: str, package: str) -> str:
    """Return ``path`` if it is executable, otherwise fail naming the package."""
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: install the Debian package {package!r} "
            "(make deps-test) -- the integration tests need the real program",
            pytrace=False,
        )
    return path


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = POLL_INTERVAL) -> T:
    """Call ``predicate`` until it returns something truthy or ``timeout`` passes.

    Returns the last value, so ``assert wait_for(...)`` fails when time ran out.
    Polling with a deadline, not sleeping a guessed time: the fast path is fast.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def free_port(kind: int, hosts: Sequence[str] = (LOOPBACK_V4,)) -> int:
    """Return a port that was free for ``kind`` (SOCK_DGRAM/SOCK_STREAM) on all ``hosts``.

    Racy by nature (someone may take it before the daemon binds it); good
    enough on a test machine, and a collision fails loudly at bind time.
    """
    for _ in range(50):
        port = 0
        try:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, kind) as sock:
                    sock.bind((host, port))
                    port = int(sock.getsockname()[1])
        except OSError:
            continue
        return port
    pytest.fail(f"no port free on all of {hosts}", pytrace=False)


def fill_template(name: str, values: Mapping[str, object]) -> str:
    """Fill the ``$placeholders`` of the config template ``name`` next to this file."""
    text = (HERE / name).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


class OutputCollector:
    """Collect a child's combined stdout/stderr in a thread, for waiting and for failure messages."""

    def __init__(self, stream: Any) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self._lines.append(raw.decode("utf-8", "replace"))
        stream.close()

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Daemon:
    """A child process run in the foreground, with its output collected.

    Subclasses build their config, call ``spawn`` and then ``wait_until``
    their own readiness check; ``stop`` is idempotent.
    """

    name = "daemon"
    argv: list[str]
    proc: subprocess.Popen[bytes]
    _output: OutputCollector

    def spawn(self, argv: list[str], cwd: Path, new_session: bool = False) -> None:
        """Start ``argv`` in ``cwd`` with stdout and stderr collected.

        ``new_session`` makes the child a session and process group leader,
        for daemons that signal their whole process group on the way out.
        """
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        self._output = OutputCollector(self.proc.stdout)

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Wait for ``ready()``; stop and fail with the output if the process exits or time runs out."""
        up = wait_for(lambda: ready() or self.proc.poll() is not None, READY_TIMEOUT)
        if self.proc.poll() is None and up:
            return
        status = self.proc.returncode
        self.stop()
        problem = f"exited with status {status}" if status is not None else f"timed out after {READY_TIMEOUT} s"
        pytest.fail(f"{self.name} {problem} waiting for {what}\n{self.describe()}", pytrace=False)

    def output(self) -> str:
        """Everything the process printed so far."""
        return self._output.text()

    def describe(self) -> str:
        """The command line and output, for a failure message."""
        return f"command: {' '.join(self.argv)}\n" + describe_output(f"{self.name} output", self.output())

    # How the daemon is asked to stop, and how long it may take before SIGKILL.
    stop_signal = signal.SIGTERM
    stop_timeout = 5.0

    def stop(self, timeout: float | None = None) -> None:
        """Send stop_signal, SIGKILL the process if it lingers, and collect its last output."""
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._output.join(2.0)


def describe_output(title: str, text: str) -> str:
    """Format a daemon's output for a failure message."""
    return f"--- {title} ---\n{text.rstrip() or '(no output)'}\n--- end of {title} ---"


D = TypeVar("D", bound=Daemon)


def stopped_at_end(
    make: Callable[P, D], check: Callable[[list[D]], None] | None = None
) -> Iterator[Callable[P, D]]:
    """The body of a factory fixture: ``yield from stopped_at_end(make, check)``.

    Yields a function that starts a daemon with ``make`` and keeps it; when
    the fixture is torn down, every daemon it started is stopped, and then
    ``check`` (if given) sees them all and may fail the test or module.
    """
    started: list[D] = []

    def start(*args: P.args, **kwargs: P.kwargs) -> D:
        daemon = make(*args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
    if check is not None:
        check(started)


# --------------------------------------------------------------------------
# Configuration files

def toml_value(value: object) -> str:
    """Render one TOML value (str, bool, int, float or a list of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def render_toml(config: Mapping[str, object]) -> str:
    """Render pbsyslog's flat config, with ``listen`` as an array of tables."""
    lines = []
    tables: list[tuple[str, Sequence[Mapping[str, object]]]] = []
    for key, value in config.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            tables.append((key, value))  # type: ignore[arg-type]
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, rows in tables:
        for row in rows:
            lines.append("")
            lines.append(f"[[{key}]]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# pbsyslog

def twistd_path() -> Path:
    """Return the twistd of the venv pytest runs from, failing clearly if it is absent."""
    path = Path(sys.executable).parent / "twistd"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: run the integration tests with the project's venv "
            "(make venv; .venv/bin/python -m pytest tests/integration)",
            pytrace=False,
        )
    return path


class PbsyslogService(Daemon):
    """A running ``twistd --nodaemon pbsyslog --config FILE`` with its ports and map."""

    name = "pbsyslog"

    def __init__(
        self,
        workdir: Path,
        overrides: Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port(socket.SOCK_STREAM)
        config: dict[str, object] = {
            "grace": 1800,
            "expire_interval": 10,
            "dbfile": str(workdir / "pop-before-smtp"),
            "map_value": "OK",
            "patterns": ["dovecot", "uw-imap", "courier"],
            # Every client in these tests is on loopback, which the machine's
            # Postfix has in mynetworks.
            "authorise_loopback": True,
            "mynetworks": "none",
            "listen": [
                {"protocol": "udp", "host": LOOPBACK_V4, "port": self.udp_port},
                {"protocol": "tcp", "host": LOOPBACK_V4, "port": self.tcp_port},
            ],
        }
        config.update(overrides or {})
        self.dbfile = Path(str(config["dbfile"]))
        self.config_path = workdir / "pbsyslog.toml"
        self.config_path.write_text(render_toml(config))
        self.spawn([
            str(twistd_path()), "--nodaemon", "--pidfile=", "pbsyslog",
            "--config", str(self.config_path), *extra_args,
        ], workdir)
        self.wait_until(lambda: "pbsyslog ready" in self.output(), "'pbsyslog ready'")

    @property
    def db_path(self) -> Path:
        """The Berkeley DB file itself, ``<dbfile>.db``."""
        return Path(str(self.dbfile) + ".db")

    def describe(self) -> str:
        """The command line, config and output, for a failure message."""
        return (
            describe_output("pbsyslog.toml", self.config_path.read_text()) + "\n"
            + super().describe()
        )

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the service's output."""
        return bool(wait_for(lambda: text in self.output(), timeout))

    def send_udp(self, line: str) -> None:
        """Send one syslog datagram to the service's UDP listener."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(line.encode(), (LOOPBACK_V4, self.udp_port))

    def tracebacks(self) -> list[str]:
        """Lines of the output that show an exception reached the log."""
        return [
            line for line in self.output().splitlines()
            if "Traceback (most recent call last)" in line or "Unhandled Error" in line
        ]


def control_request(dbfile: Path | str, request: dict[str, object]) -> dict[str, object]:
    """One request on a running service's control socket (``<dbfile>.ctl``); the decoded reply.

    Never the offline path ``pbsyslog list`` falls back to: the socket must answer.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(f"{dbfile}.ctl")
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "the service closed the control connection"
            reply += chunk
    answer: dict[str, object] = json.loads(reply)
    return answer


def fail_on_tracebacks(services: Sequence[PbsyslogService]) -> None:
    """Fail if any of the (stopped) services logged a traceback: bad input must be dropped, not raised."""
    broken = [service for service in services if service.tracebacks()]
    if broken:
        pytest.fail(
            "pbsyslog logged a traceback:\n" + "\n".join(s.describe() for s in broken),
            pytrace=False,
        )


# --------------------------------------------------------------------------
# rsyslog

RSYSLOG_TEMPLATES = (
    "RSYSLOG_TraditionalForwardFormat",
    "RSYSLOG_ForwardFormat",
    "RSYSLOG_SyslogProtocol23Format",
)
# transport name -> (omfwd protocol, omfwd framing parameter)
RSYSLOG_TRANSPORTS = {
    "udp": ("udp", ""),
    "tcp-octet": ("tcp", 'TCP_Framing="octet-counted"'),
    "tcp-lf": ("tcp", 'TCP_Framing="traditional"'),
}


def check_rsyslog_config(config_path: Path) -> None:
    """Fail, showing the config, unless ``rsyslogd -N1`` accepts ``config_path``."""
    check = subprocess.run(
        [RSYSLOGD, "-N1", "-f", str(config_path)],
        capture_output=True, text=True, timeout=30,
    )
    if check.returncode != 0:
        pytest.fail(
            f"rsyslogd -N1 rejected the test config (status {check.returncode}):\n"
            f"{check.stdout}{check.stderr}\n"
            + describe_output("rsyslog.conf", config_path.read_text()),
            pytrace=False,
        )


class SocketRsyslog(Daemon):
    """A private ``rsyslogd -n`` that reads only its own socket ``workdir/sock/log`` (never /dev/log).

    The base of the test modules' own rsyslogs: a subclass passes the rest
    of the config (its modules and actions) to ``__init__``.
    """

    name = "rsyslogd"

    def __init__(self, workdir: Path, rules: str) -> None:
        require_program(RSYSLOGD, "rsyslog")
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        self.socket_path = workdir / "sock" / "log"
        self.config_path = workdir / "rsyslog.conf"
        self.config_path.write_text(
            f'global(workDirectory="{workdir}/work")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f'input(type="imuxsock" Socket="{self.socket_path}" CreatePath="on" RateLimit.Interval="0")\n'
            + rules
        )
        check_rsyslog_config(self.config_path)
        self.spawn([RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(workdir / "pid")], workdir)
        self.wait_until(self.socket_path.is_socket, f"its socket {self.socket_path}")


class Rsyslog(Daemon):
    """A private ``rsyslogd -n`` forwarding mail.* and daemon.* to a loopback port."""

    name = "rsyslogd"

    def __init__(
        self,
        workdir: Path,
        port: int,
        transport: str = "udp",
        template: str = "RSYSLOG_TraditionalForwardFormat",
    ) -> None:
        require_program(RSYSLOGD, "rsyslog")
        if transport not in RSYSLOG_TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; one of {sorted(RSYSLOG_TRANSPORTS)}")
        if template not in RSYSLOG_TEMPLATES:
            raise ValueError(f"unknown template {template!r}; one of {RSYSLOG_TEMPLATES}")
        protocol, framing = RSYSLOG_TRANSPORTS[transport]
        self.workdir = workdir
        self.port = port
        self.transport = transport
        self.template = template
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        self.socket_path = workdir / "sock" / "log"
        self.log_path = workdir / "all.log"
        self.pid_path = workdir / "rsyslogd.pid"
        self.config_path = workdir / "rsyslog.conf"
        self.config_path.write_text(fill_template("rsyslog.conf.in", {
            "root": workdir, "socket": self.socket_path, "port": port,
            "protocol": protocol, "framing": framing, "template": template,
        }))
        check_rsyslog_config(self.config_path)
        self.spawn([RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(self.pid_path)], workdir)
        self.wait_until(self.socket_path.is_socket, f"its socket {self.socket_path}")

    def log_text(self) -> str:
        """Everything rsyslog has written to its own log file so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in rsyslog's own log file."""
        return bool(wait_for(lambda: text in self.log_text(), timeout))

    def describe(self) -> str:
        """Command line, output and log file, for a failure message."""
        return (
            super().describe() + "\n"
            + describe_output(f"rsyslog log {self.log_path}", self.log_text()[-4000:])
        )


# --------------------------------------------------------------------------
# Dovecot

def ensure_dev_log_mount_point() -> None:
    """Make sure /dev/log exists so that a private namespace can bind-mount over it.

    Dovecot logs with libc syslog(), which always writes to /dev/log; the
    socket cannot be configured. We must not take over the machine's /dev/log,
    so Dovecot runs in its own mount namespace where our rsyslog's socket is
    bind-mounted onto /dev/log. A bind mount needs an existing target: if
    there is no /dev/log at all (as on this test machine, which runs no
    syslog daemon), an empty regular file is created as the mount point. It
    is harmless outside the namespace (syslog() to a non-socket is dropped,
    exactly as with no /dev/log) and is left in place, because removing it
    could detach another test session's bind mount. An existing /dev/log
    (socket or not) is never touched.
    """
    dev_log = Path("/dev/log")
    if not os.path.lexists(dev_log):
        try:
            dev_log.touch(mode=0o644, exist_ok=True)
        except OSError as exc:
            pytest.fail(f"cannot create the mount point /dev/log: {exc}", pytrace=False)


class Dovecot(Daemon):
    """A private Dovecot 2.3 (POP3 + IMAP, plain text) that logs into a given syslog socket."""

    name = "dovecot"

    def __init__(self, syslog: Rsyslog) -> None:
        require_program(DOVECOT, "dovecot-core (dovecot-pop3d, dovecot-imapd)")
        require_program(UNSHARE, "util-linux")
        for protocol, package in (("pop3", "dovecot-pop3d"), ("imap", "dovecot-imapd")):
            require_program(f"/usr/lib/dovecot/{protocol}-login", package)
        self.syslog = syslog
        # Not under pytest's tmp_path: that tree is mode 0700, and Dovecot's
        # auth process (user dovecot) and mail processes (user mail) must
        # read the passwd-file and write the home directories.
        self.root = Path(tempfile.mkdtemp(prefix="pbsyslog-dovecot-"))
        self.root.chmod(0o755)
        mail_user = pwd.getpwnam("mail")
        self.uid, self.gid = mail_user.pw_uid, mail_user.pw_gid
        home = self.root / "home" / USER
        home.mkdir(parents=True)
        os.chown(home, self.uid, self.gid)
        (self.root / "home").chmod(0o755)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        (self.root / "passwd").chmod(0o644)
        both = (LOOPBACK_V4, LOOPBACK_V6)
        self.pop3_port = free_port(socket.SOCK_STREAM, both)
        self.imap_port = free_port(socket.SOCK_STREAM, both)
        self.config_path = self.root / "dovecot.conf"
        # Kept in memory too: stop() removes the directory, describe() may come after.
        self.config_text = fill_template("dovecot.conf.in", {
            "root": self.root, "uid": self.uid, "gid": self.gid,
            "pop3_port": self.pop3_port, "imap_port": self.imap_port,
        })
        self.config_path.write_text(self.config_text)
        ensure_dev_log_mount_point()
        # unshare execs sh, sh execs dovecot: self.proc.pid is Dovecot's
        # master, and the bind mount vanishes with the namespace.
        script = 'mount --bind "$1" /dev/log && exec "$2" -F -c "$3"'
        self.spawn([
            UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(syslog.socket_path), DOVECOT, str(self.config_path),
        ], self.root)
        self.wait_until(self._pop3_banner, f"a POP3 banner on 127.0.0.1:{self.pop3_port}")
        # Proof that the syslog route works: the master's start-up line must
        # come out of our rsyslog, otherwise no login line ever will.
        if not syslog.wait_for_log("starting up", READY_TIMEOUT):
            self.stop()
            pytest.fail(
                "Dovecot is up, but its 'starting up' line never reached the test rsyslog "
                f"through the /dev/log bind mount of {syslog.socket_path}\n"
                f"{self.describe()}\n{syslog.describe()}",
                pytrace=False,
            )

    def _pop3_banner(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK_V4, self.pop3_port), timeout=2) as sock:
                return sock.recv(64).startswith(b"+OK")
        except OSError:
            return False

    def describe(self) -> str:
        """Config, command line and output, for a failure message."""
        return describe_output("dovecot.conf", self.config_text) + "\n" + super().describe()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Dovecot and remove its directory."""
        super().stop(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------
# Postfix

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
# Where a message would sit if one were ever accepted or submitted.
POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def process_group_alive(pgid: int) -> bool:
    """Say whether any process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Postfix(Daemon):
    """A private Postfix 3.7 (``master -d``) whose smtpd checks relaying against ``hash:ACCESS_MAP``.

    Own config, queue, data directory and log file under a temporary
    directory; one smtpd listener on 127.0.0.1:<free port>; every transport
    is discard. The system instance (/etc/postfix/main.cf, /var/spool/postfix)
    is never read or touched.

    The map must exist before the first smtpd starts (an smtpd that opens a
    missing ``.db`` answers 451 to every RCPT until it exits): start pbsyslog
    first, it creates the map at start-up.
    """

    name = "postfix master"

    def __init__(self, access_map: Path | None, relay_restrictions: str | None = None) -> None:
        """``relay_restrictions``: main.cf's value instead of the hash map check (``access_map`` may then be None)."""
        for program in (POSTFIX, POSTQUEUE, POSTFIX_MASTER):
            require_program(program, "postfix")
        if relay_restrictions is None:
            assert access_map is not None, "without relay_restrictions the hash map is the policy"
            relay_restrictions = f"permit_mynetworks, check_client_access hash:{access_map}, reject_unauth_destination"
        self.relay_restrictions = relay_restrictions
        db_file = Path(str(access_map) + ".db") if access_map is not None else None
        if db_file is not None and not db_file.is_file():
            pytest.fail(
                f"{db_file} does not exist: start pbsyslog before Postfix (an smtpd that "
                "opens a missing map answers 451 to every RCPT until it exits)",
                pytrace=False,
            )
        self.access_map = access_map
        # Not under pytest's tmp_path, for the same reason as Dovecot's: the
        # queue's subdirectories belong to the postfix user.
        self.root = Path(tempfile.mkdtemp(prefix="pbsyslog-postfix-"))
        self._final_log: str | None = None
        self._final_queue: list[str] | None = None
        try:
            self._configure()
        except BaseException:  # pytest.fail's exception included
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        # A session leader: on SIGTERM the master signals its own process
        # group, and fails with "kill process group: No such process" (leaving
        # its children behind) when it does not lead one.
        self.spawn([POSTFIX_MASTER, "-c", str(self.config_dir), "-d"], self.root, new_session=True)
        self.wait_until(self._banner, f"an SMTP banner on {LOOPBACK_V4}:{self.port}")

    def _configure(self) -> None:
        """Write main.cf and master.cf and let `postfix check` create the queue."""
        self.root.chmod(0o755)
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.log_path = self.root / "postfix.log"
        self.config_dir.mkdir(mode=0o755)
        # Postfix insists on a root-owned queue_directory; `postfix check`
        # creates its subdirectories with the right owners and modes.
        self.queue_dir.mkdir(mode=0o755)
        self.queue_dir.chmod(0o755)
        self.port = free_port(socket.SOCK_STREAM)
        values = {
            "root": self.root, "log": self.log_path, "relay_restrictions": self.relay_restrictions,
            "listen": f"{LOOPBACK_V4}:{self.port}", "local_domain": LOCAL_DOMAIN,
        }
        # Kept in memory too: stop() removes the directory, describe() may come after.
        self.main_cf = fill_template("postfix-main.cf.in", values)
        self.master_cf = fill_template("postfix-master.cf.in", values)
        (self.config_dir / "main.cf").write_text(self.main_cf)
        (self.config_dir / "master.cf").write_text(self.master_cf)
        # Postfix pauses 300 ms at a time while a config file's mtime is
        # within the last second (see postfix_config_dir): age them.
        an_hour_ago = time.time() - 3600
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (an_hour_ago, an_hour_ago))
        check = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), "check"],
            capture_output=True, text=True, timeout=60,
        )
        if check.returncode != 0:
            pytest.fail(
                f"postfix -c {self.config_dir} check failed (status {check.returncode}):\n"
                f"{check.stdout}{check.stderr}\n"
                + describe_output("main.cf", self.main_cf) + "\n"
                + describe_output(f"postfix log {self.log_path}", self.log_text()),
                pytrace=False,
            )

    def _banner(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK_V4, self.port), timeout=2) as sock:
                ready = sock.recv(512).startswith(b"220 ")
                sock.sendall(b"QUIT\r\n")
                return ready
        except OSError:
            return False

    def log_text(self) -> str:
        """Everything Postfix has logged (through postlogd) so far."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def restart_lines(self) -> list[str]:
        """The log's "table hash:<map> has changed -- restarting" lines: one per smtpd that reopened the map.

        Postfix 3.7 writes the table with its open flags, as in
        ``table hash:/path/map(0,lock|fold_fix|utf8_request) has changed -- restarting``.
        """
        pattern = re.compile(rf"table hash:{re.escape(str(self.access_map))}(\([^)]*\))? has changed -- restarting")
        return [line for line in self.log_text().splitlines() if pattern.search(line)]

    def problems(self) -> list[str]:
        """Log lines that say Postfix hit a fatal error or a panic."""
        return [
            line for line in self.log_text().splitlines()
            if ": fatal: " in line or ": panic: " in line
        ]

    def rcpt(self, source: str, recipient: str = "someone@example.net") -> tuple[int, str]:
        """One SMTP session from ``source`` up to RCPT (then RSET, QUIT); return RCPT's reply."""
        return smtp_rcpt(self.port, source, recipient)

    def queued_files(self) -> list[str]:
        """Every file in the queue directories that would hold a message (relative paths)."""
        if self._final_queue is not None:
            return self._final_queue
        found = []
        for queue in POSTFIX_QUEUES:
            base = self.queue_dir / queue
            for dirpath, _, filenames in os.walk(base):
                found.extend(str(Path(dirpath, f).relative_to(self.queue_dir)) for f in filenames)
        return sorted(found)

    def postqueue_listing(self) -> str:
        """What ``postqueue -p`` says about this instance's queue."""
        result = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-p"],
            capture_output=True, text=True, timeout=30,
        )
        return result.stdout + result.stderr

    def assert_queue_empty(self) -> None:
        """Fail unless the queue holds no message: no queue file, and postqueue -p agrees."""
        files = self.queued_files()
        assert not files, f"Postfix queued something: {files}\n{self.describe()}"
        listing = self.postqueue_listing()
        assert listing.strip() == "Mail queue is empty", (
            f"postqueue -p said {listing!r}, not 'Mail queue is empty'\n{self.describe()}"
        )

    def describe(self) -> str:
        """Config, command line, output and log, for a failure message."""
        return (
            describe_output("main.cf", self.main_cf) + "\n"
            + describe_output("master.cf", self.master_cf) + "\n"
            + super().describe() + "\n"
            + describe_output(f"postfix log {self.log_path}", self.log_text()[-6000:])
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the master and every process it started, keep the log and queue listing, remove the directory."""
        if self._final_log is not None:
            return
        super().stop(timeout)
        group = self.proc.pid
        if not wait_for(lambda: not process_group_alive(group), timeout):
            os.killpg(group, signal.SIGKILL)
        self._final_queue = self.queued_files()
        self._final_log = self.log_text()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------
# Clients

class FromSource:
    """Mixin for poplib.POP3 and imaplib.IMAP4: connect from a chosen local address (neither has source_address)."""

    host: str
    port: int

    def __init__(self, host: str, port: int, source: str, timeout: float = 10.0) -> None:
        self._source = source
        super().__init__(host, port, timeout)  # type: ignore[call-arg]

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, (self._source, 0))


class SourcePOP3(FromSource, poplib.POP3):
    """poplib.POP3 that connects from a chosen local address."""


class SourceIMAP4(FromSource, imaplib.IMAP4):
    """imaplib.IMAP4 that connects from a chosen local address."""


def server_for(source: str) -> str:
    """The Dovecot address to connect to from ``source``: same address family."""
    return LOOPBACK_V6 if ":" in source else LOOPBACK_V4


@contextlib.contextmanager
def pop3_as_alice(port: int, source: str) -> Iterator[SourcePOP3]:
    """A POP3 connection to Dovecot from ``source`` that has sent USER alice; QUIT when the block ends."""
    client = SourcePOP3(server_for(source), port, source)
    try:
        client.user(USER)
        yield client
        client.quit()
    finally:
        client.close()


def pop3_login(port: int, source: str, password: str = PASSWORD) -> bytes:
    """Log in to Dovecot's POP3 as alice from ``source`` with USER/PASS; return the +OK reply."""
    with pop3_as_alice(port, source) as client:
        reply = client.pass_(password)
        client.stat()
    return reply


def pop3_login_fails(port: int, source: str) -> bytes:
    """Try alice with a wrong password from ``source``; assert -ERR and return it."""
    with pop3_as_alice(port, source) as client:
        with pytest.raises(poplib.error_proto) as info:
            client.pass_(WRONG_PASSWORD)
        reply = info.value.args[0]
        assert reply.startswith(b"-ERR"), f"wrong password answered {reply!r}, not -ERR"
    return reply


def imap_login(port: int, source: str) -> str:
    """Log in to Dovecot's IMAP as alice from ``source``; return the tagged status."""
    client = SourceIMAP4(server_for(source), port, source)
    try:
        status, _ = client.login(USER, PASSWORD)
    finally:
        client.logout()  # also closes the socket
    return status


@dataclasses.dataclass(frozen=True)
class Stack:
    """One pbsyslog, the rsyslog that forwards to it, and the Dovecot that logs into that rsyslog."""

    service: PbsyslogService
    syslog: Rsyslog
    dovecot: Dovecot

    def describe(self) -> str:
        """Everything the daemons said, for a failure message."""
        return f"{self.service.describe()}\n{self.syslog.describe()}"


def dovecot_login(ip: str, session: str | None = None) -> str:
    """A Dovecot POP3 login line for ``ip`` as rsyslog's traditional forward format carries it.

    Without ``session`` the login opens no session, so it lasts exactly the
    grace; with one, logout tracking keeps it while that session is open.
    """
    line = (
        "<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
        f"rip={ip}, lip=127.0.0.1, mpid=13339"
    )
    return line + (f", session=<{session}>" if session else "")


def postfix_config_dir() -> str:
    """A Postfix config directory with an empty main.cf, for postmap -c.

    postmap refuses to run without main.cf, and the machine's /etc/postfix
    may have none (Debian's "No configuration"); an empty file means all
    defaults, which is all a hash: lookup needs.
    """
    path = tempfile.mkdtemp(prefix="pbsyslog-postfix-")
    main_cf = Path(path, "main.cf")
    main_cf.write_text("")
    # Postfix rereads a config file whose mtime is within the last second,
    # pausing 300 ms at a time until it "cools down" (util/dict.c,
    # dict_load_file_xt): a fresh main.cf made the first postmap take ~2 s.
    an_hour_ago = time.time() - 3600
    os.utime(main_cf, (an_hour_ago, an_hour_ago))
    atexit.register(shutil.rmtree, path, True)
    return path


def run_postmap(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real postmap with our config directory."""
    require_program(POSTMAP, "postfix")
    return subprocess.run(
        [POSTMAP, "-c", postfix_config_dir(), *args],
        capture_output=True, text=True, timeout=30,
    )


def postmap_q(key: str, dbfile: Path | str) -> tuple[int, str]:
    """Look ``key`` up the way Postfix does: ``postmap -q KEY hash:DBFILE``.

    Fails the test if postmap complains on stderr: a fatal error (say, an
    unreadable map) also exits 1, and must never pass for "key not found".
    """
    result = run_postmap("-q", key, f"hash:{dbfile}")
    if result.stderr:
        pytest.fail(
            f"postmap -q {key} hash:{dbfile} exited {result.returncode} with:\n{result.stderr}",
            pytrace=False,
        )
    return result.returncode, result.stdout


def run_logger(*args: str) -> subprocess.CompletedProcess[str]:
    """Run util-linux logger with ``args`` (server, port, options and message)."""
    require_program(LOGGER, "bsdutils (util-linux logger)")
    return subprocess.run([LOGGER, *args], capture_output=True, text=True, timeout=30)


# The one domain the test Postfix is the final destination for: mail to it
# is inbound mail, never relaying (delivered to discard, and never sent anyway).
LOCAL_DOMAIN = "local.pbsyslog-test.invalid"

# What the SMTP probes say about themselves: .invalid names, never resolved.
SMTP_HELO = "probe.pbsyslog-test.invalid"
SMTP_SENDER = "probe@pbsyslog-test.invalid"


def smtp_rcpt(
    port: int, source: str, recipient: str = "someone@example.net", timeout: float = 10.0
) -> tuple[int, str]:
    """One SMTP session from ``source`` to 127.0.0.1:port: EHLO, MAIL, RCPT, then RSET and QUIT.

    Returns RCPT's (code, text). DATA is never sent, so nothing is queued
    whatever the answer; EHLO and MAIL must succeed, or the session is not
    the relay check it pretends to be.
    """
    return _smtp_session(port, source, None, recipient, timeout)


def smtp_rcpt_as(port: int, client: str, recipient: str = "someone@example.net", timeout: float = 10.0) -> tuple[int, str]:
    """One SMTP session in which smtpd takes ``client`` as the client address (XCLIENT from 127.0.0.1), up to RCPT.

    The test Postfix lets 127.0.0.1 use XCLIENT (smtpd_authorized_xclient_hosts);
    ``client`` may be any IPv4 or IPv6 address: no packet ever goes to it.
    Returns RCPT's (code, text); nothing is queued (RSET, QUIT).
    """
    return _smtp_session(port, LOOPBACK_V4, client, recipient, timeout)


def _smtp_session(port: int, source: str, xclient: str | None, recipient: str, timeout: float) -> tuple[int, str]:
    """EHLO (XCLIENT ADDR=xclient and EHLO again, if given), MAIL, RCPT, RSET, QUIT; RCPT's reply."""
    client = smtplib.SMTP(local_hostname=SMTP_HELO, timeout=timeout, source_address=(source, 0))
    try:
        client.connect(LOOPBACK_V4, port)
        code, text = client.ehlo()
        assert code == 250, f"EHLO from {source} answered {code} {text!r}"
        if xclient is not None:
            assert b"XCLIENT" in text, f"EHLO answered {text!r} (no XCLIENT)"
            addr = f"IPV6:{xclient}" if ":" in xclient else xclient
            code, text = client.docmd("XCLIENT", f"ADDR={addr} NAME=[UNAVAILABLE]")
            assert code == 220, f"XCLIENT ADDR={addr} answered {code} {text!r}"
            code, text = client.ehlo()
            assert code == 250, f"EHLO after XCLIENT answered {code} {text!r}"
        code, text = client.mail(SMTP_SENDER)
        assert code == 250, f"MAIL FROM from {xclient or source} answered {code} {text!r}"
        code, text = client.rcpt(recipient)
        client.rset()
        client.quit()
    finally:
        client.close()
    return code, text.decode("utf-8", "replace")


# The types of the conftest.py factory fixtures, for annotating tests.
PbsyslogFactory = Callable[..., PbsyslogService]
RsyslogFactory = Callable[..., Rsyslog]
DovecotFactory = Callable[[Rsyslog], Dovecot]
PostfixFactory = Callable[[Path], Postfix]
