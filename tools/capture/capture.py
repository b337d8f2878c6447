#!/usr/bin/env python3
"""Capture real syslog lines from real POP3/IMAP daemons, for tests/corpus/.

Not run by CI: it needs root, Debian 12 packages and a few minutes.  Run it
as root from the repository root:

    python3 tools/capture/capture.py [DAEMON ...]      # default: all

What it does, for each daemon: starts a private rsyslogd (its own imuxsock
socket, no /dev/log, no forwarding) writing every message it gets to two
files, RFC 3339 (Debian 12's default file format) and the classic format;
starts the daemon on loopback ports, inside a private mount namespace where
that socket is bind-mounted onto /dev/log (as tests/integration/harness.py
does for Dovecot) and where /etc/passwd, /etc/shadow, /var/mail and /var/lib
are throw-away copies; then drives scripted sessions from 127.0.0.N and ::1
with Python's poplib / imaplib, one session at a time, and files the lines
each session produced under that session.

Labels: the client decides what a session was (a login that succeeded or
failed, with which password, from which address, ended by QUIT/LOGOUT or by
dropping the connection).  Which line of a session reports the
authentication result, and which one its end, is read with a fixed
per-daemon keyword (ROLES below), never with the pattern table under test.
So a line is labelled "login" when its session's login succeeded and it is
that session's authentication-result line; "fail" the same for a failed
login; "logout" for the end-of-session line of a logged-in session; "other"
for everything else.  "ip" is the address the client really used.

Daemons that conflict with the installed Dovecot packages (cyrus-imapd,
cyrus-pop3d, popa3d, solid-pop3d all Provide/Conflict imap-server or
pop3-server) are not installed: their .deb files are fetched with
`apt-get download` and unpacked under the work directory, and run from
there.  mailutils-pop3d and perdition install without conflicts and are
run from /usr/sbin.  No system daemon is started; everything listens on
127.0.0.1 / ::1 on free high ports and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import poplib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus"
WORK = Path(os.environ.get("PBSYSLOG_CAPTURE_WORK", "/tmp/pbsyslog-capture"))
DEBS = WORK / "debs"
UNPACKED = WORK / "root"

USER = "alice"
PASSWORD = "correct horse battery staple"
WRONG = "Tr0ub4dor&3"
UID = 64101
CYRUS_UID = 64102

RSYSLOG_CONF = """\
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" CreatePath="on" RateLimit.Interval="0")
*.* action(type="omfile" file="{out}/mail.log" template="RSYSLOG_FileFormat")
*.* action(type="omfile" file="{out}/mail.traditional.log" template="RSYSLOG_TraditionalFileFormat")
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on both 127.0.0.1 and ::1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def package_version(*packages: str) -> str:
    """dpkg-query's version of installed packages, or the version in an unpacked .deb's name."""
    versions = []
    for package in packages:
        found = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
        )
        if found.returncode == 0 and found.stdout:
            versions.append(f"{package} {found.stdout}")
            continue
        debs = sorted(DEBS.glob(f"{package}_*.deb"))
        if not debs:
            raise RuntimeError(f"{package}: neither installed nor downloaded")
        info = subprocess.run(
            ["dpkg-deb", "-f", str(debs[-1]), "Version"], capture_output=True, text=True, check=True
        )
        versions.append(f"{package} {info.stdout.strip()} (unpacked .deb, not installed)")
    return ", ".join(versions)


def unpack(*packages: str) -> None:
    """apt-get download the packages (once) and unpack them under UNPACKED."""
    DEBS.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(DEBS.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=DEBS, check=True)
    for package in packages:
        deb = sorted(DEBS.glob(f"{package}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(UNPACKED)], check=True)


# ------------------------------------------------------------------ rsyslog --


class Rsyslog:
    """A private rsyslogd that writes what it receives on its own socket to two files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.out.mkdir(parents=True)
        (root / "work").mkdir()
        self.socket = root / "log.sock"
        conf = root / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(work=root / "work", socket=self.socket, out=self.out))
        self.proc = subprocess.Popen(
            ["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i", str(root / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("rsyslogd did not create its socket")
            time.sleep(0.05)

    def lines(self, name: str = "mail.log") -> list[str]:
        path = self.out / name
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def settle(self, quiet: float = 0.8, limit: float = 10.0) -> None:
        """Wait until no new line has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        count = -1
        while time.monotonic() < deadline:
            now = len(self.lines())
            if now == count:
                return
            count = now
            time.sleep(quiet)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------- namespace --


class Namespace:
    """Command lines that run a program in a private mount namespace with our /dev/log and users."""

    def __init__(self, root: Path, syslog: Rsyslog, extra_users: Sequence[str] = ()) -> None:
        self.root = root
        etc = root / "etc"
        etc.mkdir()
        passwd = Path("/etc/passwd").read_text()
        shadow = Path("/etc/shadow").read_text()
        home = root / "home" / USER
        home.mkdir(parents=True)
        os.chown(home, UID, UID)
        crypted = subprocess.run(
            ["openssl", "passwd", "-6", PASSWORD], capture_output=True, text=True, check=True
        ).stdout.strip()
        passwd += f"{USER}:x:{UID}:{UID}:capture user:{home}:/bin/sh\n"
        shadow += f"{USER}:{crypted}:19000:0:99999:7:::\n"
        for line in extra_users:
            passwd += line + "\n"
            shadow += line.split(":")[0] + ":*:19000:0:99999:7:::\n"
        group = Path("/etc/group").read_text() + f"{USER}:x:{UID}:\n"
        # "localhost" resolves to both loopback addresses in here (Cyrus's
        # listen="localhost:port" then binds 127.0.0.1 and ::1).
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        (etc / "passwd").write_text(passwd)
        (etc / "group").write_text(group)
        (etc / "shadow").write_text(shadow)
        (etc / "shadow").chmod(0o640)
        self.mail = root / "mail"
        self.mail.mkdir()
        self.mail.chmod(0o1777)
        mbox = self.mail / USER
        mbox.write_text(
            "From someone@example.com Thu Nov 29 14:00:00 2026\n"
            "From: someone@example.com\nSubject: hello\n\nhello\n\n"
        )
        os.chown(mbox, UID, UID)
        mbox.chmod(0o600)
        self.varlib = root / "varlib"
        self.varlib.mkdir()
        self.binds = [
            (str(syslog.socket), "/dev/log"),
            (str(etc / "passwd"), "/etc/passwd"),
            (str(etc / "group"), "/etc/group"),
            (str(etc / "hosts"), "/etc/hosts"),
            (str(etc / "shadow"), "/etc/shadow"),
            (str(self.mail), "/var/mail"),
            (str(self.varlib), "/var/lib"),
        ]

    def argv(self, argv: Sequence[str]) -> list[str]:
        script = " && ".join(
            f"mount --bind '{src}' '{dst}'" for src, dst in self.binds
        ) + ' && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


class Inetd:
    """A tiny 'nowait' inetd: each connection on 127.0.0.1/::1:port runs argv with the socket as stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env
        self.port = free_port()
        self.children: list[subprocess.Popen[bytes]] = []
        self.listeners = []
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, self.port))
            s.listen(8)
            self.listeners.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            child = subprocess.Popen(
                self.argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL,
                env=self.env,
            )
            self.children.append(child)
            conn.close()

    def stop(self) -> None:
        for s in self.listeners:
            s.close()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)


# ------------------------------------------------------------------ clients --


class SourcePOP3(poplib.POP3):
    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, (self._source, 0))


class SourceIMAP4(imaplib.IMAP4):
    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, (self._source, 0))


def server_for(source: str) -> str:
    return "::1" if ":" in source else "127.0.0.1"


def pop3_session(port: int, source: str, password: str, end: str, user: str = USER) -> bool:
    """One POP3 session; True when the login succeeded.  end: quit | drop."""
    client = SourcePOP3(server_for(source), port, source)
    ok = False
    try:
        client.user(user)
        client.pass_(password)
        ok = True
        client.stat()
    except poplib.error_proto:
        pass
    if end == "quit":
        with contextlib.suppress(Exception):
            client.quit()
    client.close()
    return ok


def pop3_no_auth(port: int, source: str) -> bool:
    client = SourcePOP3(server_for(source), port, source)
    client.quit()
    return False


def imap_session(port: int, source: str, password: str, end: str, user: str = USER) -> bool:
    client = SourceIMAP4(server_for(source), port, source)
    ok = False
    try:
        client.login(user, password)
        ok = True
        client.select("INBOX")
    except imaplib.IMAP4.error:
        pass
    if end == "quit":
        with contextlib.suppress(Exception):
            client.logout()  # also closes the socket
    else:
        client.shutdown()
    return ok


# Each session: (kind, source, password, end, user).  kind pop3|imap|noauth.
def sessions(kind: str, n: int) -> list[tuple[str, str, str, str, str]]:
    """The standard session plan; n picks distinct 127.x addresses per daemon."""
    a = lambda k: f"127.{n}.{k}.{10 + k}"  # noqa: E731
    plan = [
        (kind, a(1), PASSWORD, "quit", USER),
        (kind, a(2), WRONG, "quit", USER),
        (kind, a(3), PASSWORD, "drop", USER),
        (kind, "::1", PASSWORD, "quit", USER),
        (kind, "::1", WRONG, "quit", USER),
        (kind, a(4), WRONG, "quit", "nosuchuser"),
        (kind, a(5), WRONG, "quit", "x host=[6.6.6.6]"),
        (kind, a(6), WRONG, "quit", 'x" at (evil) 6.6.6.6 [6.6.6.6] from 6.6.6.6'),
        ("noauth", a(7), "", "quit", ""),
    ]
    return plan


def run_session(session: tuple[str, str, str, str, str], port: int) -> bool:
    kind, source, password, end, user = session
    try:
        if kind == "pop3":
            return pop3_session(port, source, password, end, user)
        if kind == "imap":
            return imap_session(port, source, password, end, user)
        return pop3_no_auth(port, source)
    except (OSError, EOFError, poplib.error_proto, imaplib.IMAP4.error) as exc:
        log(f"  session {session} error: {exc!r}")
        return False


# -------------------------------------------------------------- recording --


class Recorder:
    """Runs sessions one by one and labels the lines each produced."""

    def __init__(self, daemon: str, version: str, syslog: Rsyslog, roles: dict[str, Sequence[str]]) -> None:
        self.daemon = daemon
        self.version = version
        self.syslog = syslog
        self.roles = roles
        self.rows: list[dict[str, Any]] = []
        self.seen = 0
        self.seen_traditional = 0

    def skip_startup(self, note: str = "daemon start-up") -> None:
        self.syslog.settle()
        self._take(None, False, note)

    def run(self, session: tuple[str, str, str, str, str], port: int, run: Callable[[], bool] | None = None) -> None:
        ok = run() if run is not None else run_session(session, port)
        log(f"  {session[0]} from {session[1]} user={session[4]!r} end={session[3]}: {'ok' if ok else 'refused'}")
        self.syslog.settle()
        self._take(session, ok, "")

    def _role(self, line: str) -> str | None:
        for role, keywords in self.roles.items():
            if any(k in line for k in keywords):
                return role
        return None

    def _take(self, session: tuple[str, str, str, str, str] | None, ok: bool, note: str) -> None:
        lines = self.syslog.lines()[self.seen:]
        traditional = self.syslog.lines("mail.traditional.log")[self.seen_traditional:]
        self.seen += len(lines)
        self.seen_traditional += len(traditional)
        for file, batch in (("mail.log", lines), ("mail.traditional.log", traditional)):
            for line in batch:
                role = self._role(line) if session is not None else None
                if session is None or session[0] == "noauth":
                    event = "other"
                elif role == "auth":
                    event = "login" if ok else "fail"
                elif role == "end" and ok:
                    event = "logout"
                else:
                    event = "other"
                what = note
                if session is not None:
                    kind, source, password, end, user = session
                    what = (
                        f"{kind} session from {source}, user {user!r}, "
                        + ("no authentication" if kind == "noauth" else
                           f"{'right' if password == PASSWORD else 'wrong'} password, "
                           f"login {'succeeded' if ok else 'failed'}, "
                           f"ended by {'QUIT/LOGOUT' if end == 'quit' else 'dropping the connection'}")
                    )
                self.rows.append({
                    "file": f"{self.daemon}/{file}",
                    "line": line,
                    "daemon": self.daemon,
                    "version": self.version,
                    "event": event,
                    "ip": session[1] if session is not None and session[0] != "noauth" else (
                        session[1] if session is not None else None),
                    "note": what + (f"; line role: {role}" if role else ""),
                })

    def record(self, plan: Iterable[tuple[tuple[str, str, str, str, str], int]]) -> None:
        """File the start-up lines, run each (session, port) of ``plan`` in turn, and save the corpus files."""
        self.skip_startup()
        for session, port in plan:
            self.run(session, port)
        self.save()

    def save(self) -> None:
        target = CORPUS / self.daemon
        target.mkdir(parents=True, exist_ok=True)
        for name in ("mail.log", "mail.traditional.log"):
            shutil.copyfile(self.syslog.out / name, target / name)
        with (target / "labels.jsonl").open("w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        versions_path = CORPUS / "versions.json"
        versions = json.loads(versions_path.read_text()) if versions_path.exists() else {}
        versions[self.daemon] = self.version
        versions_path.write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
        log(f"  saved {len(self.rows)} labelled lines to {target}")


def record_pop3_inetd(argv: list[str], recorder: Recorder, n: int) -> None:
    """Serve ``argv`` with a private Inetd and record the standard POP3 sessions against it."""
    inetd = Inetd(argv)
    try:
        recorder.record((s, inetd.port) for s in sessions("pop3", n))
    finally:
        inetd.stop()


@contextlib.contextmanager
def stack(daemon: str) -> Iterator[tuple[Path, Rsyslog]]:
    root = Path(tempfile.mkdtemp(prefix=f"{daemon}-", dir=WORK))
    root.chmod(0o755)
    syslog = Rsyslog(root)
    try:
        yield root, syslog
    finally:
        syslog.stop()


# ------------------------------------------------------------------ daemons --


def capture_mailutils(n: int) -> None:
    """GNU mailutils pop3d (mailutils-pop3d), inetd mode, system (shadow) passwords."""
    version = package_version("mailutils-pop3d")
    with stack("mailutils") as (root, syslog):
        ns = Namespace(root, syslog)
        # Without a certificate this pop3d refuses to start in inetd mode
        # ("no certificate set"), even with tls-mode false: give it one.
        tls = root / "tls"
        tls.mkdir(mode=0o700)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
            check=True, capture_output=True,
        )
        (tls / "key.pem").chmod(0o600)
        conf = root / "pop3d.conf"
        conf.write_text(
            "logging { syslog yes; facility mail; };\n"
            "auth { authentication system; authorization system; };\n"
            "mailbox { mailbox-pattern \"mbox:///var/mail/${user}\"; };\n"
            "tls-mode ondemand;\n"
            f"tls {{ ssl-certificate-file {tls}/cert.pem; ssl-key-file {tls}/key.pem; }};\n"
        )
        record_pop3_inetd(
            ns.argv(["/usr/sbin/pop3d", "--no-site-config", f"--config-file={conf}", "--inetd"]),
            Recorder("mailutils", version, syslog, {
                "auth": ["logged in with mailbox", "authentication failed", "Bad login", "Cannot authenticate"],
                "end": ["session ended for user", "session timed out for user"],
            }),
            n,
        )


def capture_popa3d(n: int) -> None:
    """popa3d (unpacked .deb), inetd mode, PAM (pam_unix against the namespace's shadow)."""
    unpack("popa3d")
    version = package_version("popa3d")
    with stack("popa3d") as (root, syslog):
        ns = Namespace(root, syslog, [f"popa3d:x:{UID + 10}:{UID + 10}::/var/lib/popa3d:/bin/false"])
        (ns.varlib / "popa3d").mkdir()
        record_pop3_inetd(
            ns.argv([str(UNPACKED / "usr/sbin/popa3d")]),
            Recorder("popa3d", version, syslog, {
                "auth": ["Authentication passed", "Authentication failed"],
            }),
            n,
        )


def capture_solid(n: int) -> None:
    """solid-pop3d (unpacked .deb), inetd mode, PAM, Debian's spop3d.conf."""
    unpack("solid-pop3d")
    version = package_version("solid-pop3d")
    with stack("solid-pop3d") as (root, syslog):
        ns = Namespace(root, syslog, [f"spop3d:x:{UID + 11}:{UID + 11}::/nonexistent:/bin/false"])
        (ns.varlib / "solid-pop3d" / "bulletins").mkdir(parents=True)
        # The binary reads /etc/spop3d.conf; the system has none, so use its
        # built-in defaults (the packaged file only sets the same mailbox).
        record_pop3_inetd(
            ns.argv([str(UNPACKED / "usr/sbin/solid-pop3d")]),
            Recorder("solid-pop3d", version, syslog, {
                "auth": ["authenticated", "authentication failed"],
                "end": ["session ended for user", "autologout time elapsed for user"],
            }),
            n,
        )


class FakeBackend:
    """A minimal POP3 server for Perdition to proxy to: USER alice / PASS PASSWORD."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        f.write(b"+OK fake backend\r\n")
        f.flush()
        user = None
        try:
            for raw in f:
                cmd, _, arg = raw.decode(errors="replace").rstrip("\r\n").partition(" ")
                cmd = cmd.upper()
                if cmd == "USER":
                    user = arg
                    f.write(b"+OK\r\n")
                elif cmd == "PASS":
                    f.write(b"+OK logged in\r\n" if (user, arg) == (USER, PASSWORD) else b"-ERR bad login\r\n")
                elif cmd == "STAT":
                    f.write(b"+OK 0 0\r\n")
                elif cmd == "QUIT":
                    f.write(b"+OK bye\r\n")
                    f.flush()
                    break
                elif cmd == "CAPA":
                    f.write(b"+OK\r\nUSER\r\n.\r\n")
                else:
                    f.write(b"-ERR\r\n")
                f.flush()
        finally:
            conn.close()

    def stop(self) -> None:
        self.sock.close()


def capture_perdition(n: int) -> None:
    """Perdition POP3 proxy in front of a fake backend; listens on 127.0.0.1 and ::1."""
    version = package_version("perdition")
    with stack("perdition") as (root, syslog):
        ns = Namespace(root, syslog)
        backend = FakeBackend()
        port = free_port()
        argv = ns.argv([
            "/usr/sbin/perdition.pop3", "--no_daemon", "--no_lookup",
            "-f", "/dev/null", # "127.0.0.1,::1" fails ("Fatal error listening"): IPv6 needs
            # brackets, and each address its own port.
            "--bind_address", f"127.0.0.1:{port},[::1]:{port}", "--listen_port", str(port),
            "--outgoing_server", f"127.0.0.1:{backend.port}", "--ssl_mode", "none",
            "--pid_file", str(root / "perdition.pid"), "--log_facility", "mail",
        ])
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(1.5)
            if proc.poll() is not None:
                raise RuntimeError(f"perdition exited: {proc.stderr.read().decode()}")
            Recorder("perdition", version, syslog, {
                "auth": ["Auth:"],
                "end": ["Closing session", "Close:"],
            }).record((s, port) for s in sessions("pop3", n))
        finally:
            proc.terminate()
            proc.wait(10)
            backend.stop()


def capture_cyrus(n: int) -> None:
    """Cyrus IMAP 3.6 (unpacked .debs): master + imapd + pop3d, sasldb passwords."""
    unpack("cyrus-common", "cyrus-imapd", "cyrus-pop3d")
    version = package_version("cyrus-common", "cyrus-imapd", "cyrus-pop3d")
    bindir = UNPACKED / "usr/lib/cyrus/bin"
    with stack("cyrus") as (root, syslog):
        ns = Namespace(root, syslog, [f"cyrus:x:{CYRUS_UID}:8::{root}/cyrus:/bin/sh"])
        base = root / "cyrus"
        for d in ("config", "config/socket", "config/proc", "config/db", "config/log",
                  "config/lock", "spool", "sieve", "tmp"):
            (base / d).mkdir(parents=True, exist_ok=True)
        sasldb = base / "sasldb2"
        imap_port, pop3_port = free_port(), free_port()
        imapd_conf = base / "imapd.conf"
        imapd_conf.write_text(
            f"configdirectory: {base}/config\n"
            f"partition-default: {base}/spool\n"
            f"sievedir: {base}/sieve\n"
            f"temp_path: {base}/tmp\n"
            "admins: cyrus\n"
            "allowplaintext: yes\n"
            "sasl_pwcheck_method: auxprop\n"
            "sasl_auxprop_plugin: sasldb\n"
            f"sasl_sasldb_path: {sasldb}\n"
            "sasl_mech_list: PLAIN LOGIN\n"
            "unixhierarchysep: yes\n"
            "popminpoll: 0\n"
            "autocreate_quota: 0\n"
            "autocreate_inbox_folders: Sent\n"
            "syslog_prefix: cyrus\n"
            f"mboxname_lockpath: {base}/config/lock\n"
            f"proc_path: {base}/config/proc\n"
        )
        cyrus_conf = base / "cyrus.conf"
        cyrus_conf.write_text(
            "START {\n"
            f"  recover cmd=\"{bindir}/ctl_cyrusdb -r -C {imapd_conf}\"\n"
            "}\n"
            "SERVICES {\n"
            # "localhost" resolves to 127.0.0.1 and ::1: master binds both, and
            # the syslog tag stays cyrus/imap, cyrus/pop3 as in Debian's cyrus.conf.
            f"  imap cmd=\"{bindir}/imapd -C {imapd_conf}\" listen=\"localhost:{imap_port}\" prefork=0\n"
            f"  pop3 cmd=\"{bindir}/pop3d -C {imapd_conf}\" listen=\"localhost:{pop3_port}\" prefork=0\n"
            "}\n"
            "EVENTS {\n}\n"
        )
        for who, password in ((USER, PASSWORD), ("cyrus", "admin secret")):
            subprocess.run(
                ["saslpasswd2", "-p", "-c", "-f", str(sasldb), who],
                input=password + "\n", text=True, check=True,
            )
        sasldb.chmod(0o644)
        subprocess.run(["chown", "-R", f"{CYRUS_UID}:8", str(base)], check=True)
        env = dict(os.environ, LD_LIBRARY_PATH=str(UNPACKED / "usr/lib/x86_64-linux-gnu"))
        proc = subprocess.Popen(
            ns.argv([str(bindir / "master"), "-C", str(imapd_conf), "-M", str(cyrus_conf),
                     "-p", str(base / "master.pid"), "-D"]),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", imap_port), 1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"cyrus master did not come up: {proc.stdout.read().decode()}") from None
                    time.sleep(0.2)
            Recorder("cyrus", version, syslog, {
                "auth": ["login: ", "badlogin: "],
            }).record(
                (s, port)
                for kind, port in (("imap", imap_port), ("pop3", pop3_port))
                for s in sessions(kind, n + (kind == "pop3"))
                if not (kind == "imap" and s[0] == "noauth")
            )
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


DAEMONS: dict[str, Callable[[int], None]] = {
    "mailutils": capture_mailutils,
    "perdition": capture_perdition,
    "popa3d": capture_popa3d,
    "solid-pop3d": capture_solid,
    "cyrus": capture_cyrus,
}


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        log("run as root (mount namespaces, /etc/shadow copies)")
        return 2
    if not Path("/dev/log").exists():
        Path("/dev/log").touch()  # a bind-mount target; see harness.ensure_dev_log_mount_point
    WORK.mkdir(parents=True, exist_ok=True)
    names = argv or list(DAEMONS)
    for number, name in enumerate(DAEMONS, start=50):
        if name in names:
            log(f"== {name}")
            DAEMONS[name](number)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
