"""The shipped rsyslog snippets (conf/rsyslog/*.conf) run by a real rsyslog 8.2302.

Each snippet is included verbatim into a private wrapper config; the only
text changed is the target port (the port of the pbsyslog or UDP socket the
test started).  The disk queue lives in the wrapper's work directory, which is
where the snippets expect it (rsyslog's global workDirectory), so queue paths
need no change.  Lines are injected with util-linux ``logger -u SOCKET``
into the wrapper's own imuxsock socket: never /dev/log.

The TLS snippet is checked with ``rsyslogd -N1`` only: pbsyslog has no TLS
listener yet, so there is nothing to forward to.
"""

from __future__ import annotations

import re
import socket
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    LOOPBACK_V4,
    READY_TIMEOUT,
    RSYSLOGD,
    Daemon,
    PbsyslogFactory,
    PbsyslogService,
    describe_output,
    fail_on_tracebacks,
    free_port,
    postmap_q,
    require_program,
    run_logger,
    stopped_at_end,
    wait_for,
)

SNIPPETS = Path(__file__).resolve().parents[2] / "conf" / "rsyslog"
SHIPPED_PORT = 'port="5514"'
SHIPPED_TARGET = 'target="127.0.0.1"'
# The filter every snippet must use, character for character.
FILTER = 'if ($syslogfacility-text == "mail" or $programname == ["popa3d", "spop3d", "solid-pop3d"]) then {'

# How long after logger returns the map must answer for the IP (rsyslog
# forwards from its own queue thread, so allow more than the direct path).
MAP_DEADLINE = 5.0
# After pbsyslog comes back, rsyslog's suspended action retries every second.
RESUME_DEADLINE = 15.0

WRAPPER = string.Template("""\
# Wrapper around a shipped pbsyslog snippet, written by test_rsyslog_snippets.py.
global(workDirectory="$root/work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$socket" CreatePath="on" RateLimit.Interval="0")
*.* action(type="omfile" file="$root/all.log" template="RSYSLOG_FileFormat")
include(file="$snippet")
""")


def snippet_text(name: str, port: int | str | None = None) -> str:
    """The shipped snippet ``name``, with its port (or, for the unix snippet, its socket path) replaced if given."""
    path = SNIPPETS / name
    assert path.is_file(), f"{path} is missing"
    text = path.read_text()
    if isinstance(port, str):
        assert text.count(SHIPPED_SOCKET) == 1, f"{name} must name {SHIPPED_SOCKET} exactly once"
        text = text.replace(SHIPPED_SOCKET, port)
    elif port is not None:
        assert text.count(SHIPPED_PORT) == 1, f"{name} must contain {SHIPPED_PORT} exactly once"
        text = text.replace(SHIPPED_PORT, f'port="{port}"')
    return text


def write_wrapper(root: Path, name: str, port: int | str | None) -> tuple[Path, Path]:
    """Write the snippet copy and its wrapper config under ``root``; return (config, socket)."""
    (root / "work").mkdir(parents=True, exist_ok=True)
    snippet = root / name
    snippet.write_text(snippet_text(name, port))
    sock = root / "sock" / "log"
    config = root / "rsyslog.conf"
    config.write_text(WRAPPER.substitute(root=root, socket=sock, snippet=snippet))
    return config, sock


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``rsyslogd -N1 -f config``."""
    require_program(RSYSLOGD, "rsyslog")
    return subprocess.run(
        [RSYSLOGD, "-N1", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


def complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Lines of an ``rsyslogd -N1`` run other than its banner and its goodbye."""
    quiet = ("config validation run (level 1)", "End of config validation run")
    return [
        line for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(q in line for q in quiet)
    ]


class SnippetRsyslog(Daemon):
    """A private ``rsyslogd -n`` whose only forwarding rule is a shipped snippet."""

    name = "rsyslogd"

    def __init__(self, root: Path, snippet: str, port: int | str) -> None:
        require_program(RSYSLOGD, "rsyslog")
        self.root = root
        self.snippet = snippet
        self.config_path, self.socket_path = write_wrapper(root, snippet, port)
        self.log_path = root / "all.log"
        self.earlier_output: list[str] = []
        check = check_config(self.config_path)
        assert check.returncode == 0 and not complaints(check), (
            f"rsyslogd -N1 rejected the wrapper of {snippet}:\n{check.stdout}{check.stderr}"
        )
        self.start()

    def start(self) -> None:
        """Start (or restart, on the same directory and queue) rsyslogd and wait for its socket."""
        if self.socket_path.exists():
            self.socket_path.unlink()
        if hasattr(self, "proc"):
            self.earlier_output.append(self.output())
        self.spawn([
            RSYSLOGD, "-n", "-f", str(self.config_path), "-i", str(self.root / "rsyslogd.pid"),
        ], self.root)
        self.wait_until(self.socket_path.is_socket, f"its socket {self.socket_path}")

    def log(self, priority: str, tag: str, message: str) -> None:
        """Inject one line with ``logger -u SOCKET -p priority -t tag``; assert logger succeeded."""
        result = run_logger("-u", str(self.socket_path), "-p", priority, "-t", tag, message)
        assert (result.returncode, result.stderr) == (0, ""), result

    def log_text(self) -> str:
        """Everything rsyslog has written to its own log file so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str) -> bool:
        """Wait until ``text`` appears in what rsyslogd printed (its own errors go there)."""
        return bool(wait_for(lambda: text in self.output(), READY_TIMEOUT))

    def wait_for_log(self, text: str) -> bool:
        """Wait until ``text`` appears in rsyslog's own log file."""
        return bool(wait_for(lambda: text in self.log_text(), READY_TIMEOUT))

    def queue_files(self) -> list[Path]:
        """The disk-queue files rsyslog has left in its work directory."""
        return sorted((self.root / "work").glob("pbsyslog-fwd*"))

    def describe(self) -> str:
        """Config, snippet, command line, output and log file, for a failure message."""
        return "\n".join([
            describe_output("rsyslog.conf", self.config_path.read_text()),
            describe_output(self.snippet, (self.root / self.snippet).read_text()),
            *(describe_output(f"rsyslogd output, run {n}", text)
              for n, text in enumerate(self.earlier_output, 1)),
            super().describe(),
            describe_output(f"rsyslog log {self.log_path}", self.log_text()[-4000:]),
        ])


@pytest.fixture(scope="module")
def snippet_rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type]:
    """Factory: ``snippet_rsyslog(snippet, port)`` starts a SnippetRsyslog; all are stopped at module end."""

    def start(snippet: str, port: int | str) -> SnippetRsyslog:
        return SnippetRsyslog(tmp_path_factory.mktemp("rsyslog-snippet"), snippet, port)

    yield from stopped_at_end(start)  # type: ignore[misc]


def login_message(ip: str) -> str:
    """The MSG part of a Dovecot POP3 login line from ``ip``."""
    return (
        f"pop3-login: Login: user=<alice>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
        "mpid=4242, session=<a1b2c3d4e5f6>"
    )


def assert_in_map(service: PbsyslogService, ip: str, deadline: float, *daemons: Daemon) -> None:
    """Assert that ``postmap -q ip`` on the service's map answers OK within ``deadline``."""
    found = wait_for(lambda: postmap_q(ip, service.dbfile) == (0, "OK\n"), deadline)
    assert found, (
        f"postmap -q {ip} gave {postmap_q(ip, service.dbfile)!r} {deadline} s after the login\n"
        + "\n".join(d.describe() for d in (service, *daemons))
    )


# --------------------------------------------------------------------------
# Static checks and rsyslogd -N1

ALL = ["pbsyslog-udp.conf", "pbsyslog-tcp.conf", "pbsyslog-tls.conf", "pbsyslog-unix.conf"]
SHIPPED_SOCKET = "/run/pbsyslog/syslog.sock"


@pytest.mark.parametrize("name", ALL)
def test_snippet_passes_rsyslogd_check(tmp_path: Path, name: str) -> None:
    """rsyslogd -N1 accepts a wrapper config that includes the shipped snippet, with no warnings."""
    config, _ = write_wrapper(tmp_path, name, None)
    result = check_config(config)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    assert complaints(result) == [], f"{result.stdout}{result.stderr}"


def test_rsyslogd_check_catches_a_bad_parameter(tmp_path: Path) -> None:
    """The -N1 check is worth having: a misspelt omfwd parameter in the TLS snippet makes it fail."""
    config, _ = write_wrapper(tmp_path, "pbsyslog-tls.conf", None)
    snippet = tmp_path / "pbsyslog-tls.conf"
    text = snippet.read_text()
    assert "StreamDriver.KeyFile=" in text
    snippet.write_text(text.replace("StreamDriver.KeyFile=", "StreamDriver.KeyFil="))
    result = check_config(config)
    assert result.returncode != 0
    assert "StreamDriver.KeyFil" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ALL)
def test_snippet_uses_the_shared_filter(name: str) -> None:
    """Every snippet forwards through the same filter: mail facility plus popa3d and spop3d."""
    lines = [line.strip() for line in snippet_text(name).splitlines()]
    assert FILTER in lines


@pytest.mark.parametrize("name", ["pbsyslog-tcp.conf", "pbsyslog-tls.conf"])
def test_stream_snippet_queues_on_disk_and_retries_forever(name: str) -> None:
    """The TCP and TLS snippets use a disk-assisted LinkedList queue, saved at shutdown, retried forever."""
    text = snippet_text(name)
    for setting in (
        'TCP_Framing="octet-counted"', 'queue.type="LinkedList"', 'queue.filename="pbsyslog-',
        'queue.saveOnShutdown="on"', 'action.resumeRetryCount="-1"',
    ):
        assert setting in text, f"{name} lacks {setting}"


def test_tls_snippet_uses_gtls_with_name_check() -> None:
    """The TLS snippet speaks TLS only (gtls mode 1), checks the server's name, and names CA, cert and key."""
    text = snippet_text("pbsyslog-tls.conf")
    for setting in (
        'StreamDriver="gtls"', 'StreamDriverMode="1"', 'StreamDriverAuthMode="x509/name"',
        "StreamDriverPermittedPeers=", "StreamDriver.CAFile=", "StreamDriver.CertFile=",
        "StreamDriver.KeyFile=",
    ):
        assert setting in text, f"pbsyslog-tls.conf lacks {setting}"


def test_local_snippets_target_pbsyslog_default() -> None:
    """The UDP and TCP snippets point at pbsyslog's default listener, 127.0.0.1:5514, as shipped."""
    for name in ("pbsyslog-udp.conf", "pbsyslog-tcp.conf"):
        text = snippet_text(name)
        assert SHIPPED_TARGET in text and SHIPPED_PORT in text, name


# --------------------------------------------------------------------------
# What the filter lets through (UDP snippet, into a plain loopback socket)

@pytest.fixture(scope="module")
def udp_sink() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for pbsyslog, to see exactly what rsyslog forwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK_V4, 0))
        sock.settimeout(0.2)
        yield sock


def drain(sock: socket.socket, marker: str) -> list[str]:
    """Read datagrams until one containing ``marker`` arrives (or READY_TIMEOUT passes); return all read."""
    received: list[str] = []

    def read() -> bool:
        try:
            received.append(sock.recv(65536).decode("utf-8", "replace"))
        except TimeoutError:
            pass
        return any(marker in line for line in received)

    wait_for(read, READY_TIMEOUT, interval=0)
    return received


def test_udp_snippet_forwards_only_mail_and_pop_daemons(
    snippet_rsyslog: type, udp_sink: socket.socket
) -> None:
    """Of six lines the UDP snippet forwards exactly the mail-facility ones and popa3d/spop3d on daemon."""
    syslog = snippet_rsyslog("pbsyslog-udp.conf", udp_sink.getsockname()[1])
    sent = {
        ("mail.info", "dovecot", "filter-1 forwarded"): True,
        ("mail.err", "imapd", "filter-2 forwarded"): True,
        ("daemon.info", "popa3d", "filter-3 forwarded"): True,
        ("daemon.notice", "spop3d", "filter-4 forwarded"): True,
        ("daemon.info", "sshd", "filter-5 dropped"): False,
        ("user.notice", "dovecot", "filter-6 dropped"): False,
    }
    for (priority, tag, message) in sent:
        syslog.log(priority, tag, message)
    # Barrier: rsyslog handles one socket's lines in order, and this one is last.
    syslog.log("mail.info", "dovecot", "filter-end")
    received = drain(udp_sink, "filter-end")
    got = {message: any(message in line for line in received) for (_, _, message) in sent}
    want = {message: forwarded for (_, _, message), forwarded in sent.items()}
    assert got == want, f"received: {received}\n{syslog.describe()}"
    # And in RFC 5424 format, as the snippet promises: "<PRI>1 " then a full timestamp.
    dovecot_line = next(line for line in received if "filter-1" in line)
    assert re.match(r"<22>1 \d{4}-\d\d-\d\dT", dovecot_line), dovecot_line


# --------------------------------------------------------------------------
# End to end: logger -> rsyslog (shipped snippet) -> pbsyslog -> postmap

def test_udp_snippet_login_reaches_map(
    pbsyslog_service: PbsyslogFactory, snippet_rsyslog: type
) -> None:
    """A Dovecot login logged into rsyslog running the UDP snippet puts its IP in pbsyslog's map."""
    service = pbsyslog_service()
    syslog = snippet_rsyslog("pbsyslog-udp.conf", service.udp_port)
    syslog.log("mail.info", "dovecot", login_message("192.0.2.31"))
    assert_in_map(service, "192.0.2.31", MAP_DEADLINE, syslog)


def test_unix_snippet_login_reaches_map(
    pbsyslog_service: PbsyslogFactory, snippet_rsyslog: type, tmp_path: Path
) -> None:
    """A Dovecot login logged into rsyslog running the unix snippet reaches pbsyslog's uid-checked UNIX socket and the map."""
    sock = tmp_path / "syslog.sock"
    service = pbsyslog_service({"listen": [{"protocol": "unix", "path": str(sock), "uids": [0]}]})
    syslog = snippet_rsyslog("pbsyslog-unix.conf", str(sock))
    syslog.log("mail.info", "dovecot", login_message("192.0.2.35"))
    assert_in_map(service, "192.0.2.35", MAP_DEADLINE, syslog)


def test_tcp_snippet_login_reaches_map(
    pbsyslog_service: PbsyslogFactory, snippet_rsyslog: type
) -> None:
    """A Dovecot login logged into rsyslog running the TCP snippet puts its IP in pbsyslog's map."""
    service = pbsyslog_service()
    syslog = snippet_rsyslog("pbsyslog-tcp.conf", service.tcp_port)
    syslog.log("mail.info", "dovecot", login_message("192.0.2.32"))
    assert_in_map(service, "192.0.2.32", MAP_DEADLINE, syslog)


@pytest.fixture
def pbsyslog_on_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type]:
    """Factory: ``pbsyslog_on_port(port)`` starts pbsyslog with one TCP listener on that fixed port.

    The shared factory picks fresh ports; a restart must come back on the
    same one.  Every service is stopped at the end and must not have logged
    a traceback.
    """

    def start(port: int) -> PbsyslogService:
        listen = {"listen": [{"protocol": "tcp", "host": LOOPBACK_V4, "port": port}]}
        return PbsyslogService(tmp_path_factory.mktemp("pbsyslog-fixed"), listen)

    yield from stopped_at_end(start, fail_on_tracebacks)  # type: ignore[misc]


def test_tcp_snippet_keeps_logins_while_pbsyslog_restarts(
    pbsyslog_on_port: type, snippet_rsyslog: type
) -> None:
    """A login logged while pbsyslog is down reaches the pbsyslog that comes back on the same port."""
    port = free_port(socket.SOCK_STREAM)
    first = pbsyslog_on_port(port)
    syslog = snippet_rsyslog("pbsyslog-tcp.conf", port)
    syslog.log("mail.info", "dovecot", login_message("192.0.2.33"))
    assert_in_map(first, "192.0.2.33", MAP_DEADLINE, syslog)
    first.stop()

    syslog.log("mail.info", "dovecot", login_message("192.0.2.34"))
    assert syslog.wait_for_output(f"cannot connect to 127.0.0.1:{port}"), syslog.describe()
    second = pbsyslog_on_port(port)
    assert_in_map(second, "192.0.2.34", RESUME_DEADLINE, syslog)


def test_tcp_snippet_saves_queued_logins_across_rsyslog_restart(
    pbsyslog_on_port: type, snippet_rsyslog: type
) -> None:
    """A login queued behind the one in flight, while pbsyslog is down, is saved to disk when rsyslog stops and delivered after both restart."""
    port = free_port(socket.SOCK_STREAM)
    first = pbsyslog_on_port(port)
    syslog = snippet_rsyslog("pbsyslog-tcp.conf", port)
    syslog.log("mail.info", "dovecot", login_message("192.0.2.35"))
    assert_in_map(first, "192.0.2.35", MAP_DEADLINE, syslog)
    first.stop()

    # This one is the batch in flight: the action is suspended while trying
    # it.  rsyslog 8.2302 does not save an in-flight batch at shutdown
    # (rsyslog/rsyslog#2710), so nothing is asserted about 192.0.2.36.
    syslog.log("mail.info", "dovecot", login_message("192.0.2.36"))
    assert syslog.wait_for_output(f"cannot connect to 127.0.0.1:{port}"), syslog.describe()
    # This one waits in the queue behind it...
    syslog.log("mail.info", "dovecot", login_message("192.0.2.37"))
    assert syslog.wait_for_log("rip=192.0.2.37,"), syslog.describe()
    # ...and is spooled to disk at shutdown (queue.saveOnShutdown).
    syslog.stop()
    assert syslog.queue_files(), f"no disk queue files after shutdown\n{syslog.describe()}"

    syslog.start()
    second = pbsyslog_on_port(port)
    assert_in_map(second, "192.0.2.37", RESUME_DEADLINE, syslog)
