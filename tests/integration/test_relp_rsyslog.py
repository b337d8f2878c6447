"""RELP listener with Debian's real rsyslog omrelp: delivery, a restart mid-stream losing nothing, TLS."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import (
    LOGGER,
    LOOPBACK_V4,
    RSYSLOGD,
    PbsyslogFactory,
    PbsyslogService,
    SocketRsyslog,
    describe_output,
    free_port,
    postmap_q,
    require_program,
    run_postmap,
    wait_for,
)
from tlscerts import Authority

SERVER_NAME = "pbsyslog.test"
CLIENT_NAME = "pop1.test"
STREAM = 10_000


def require_omrelp() -> None:
    """Fail (never skip) when rsyslog's RELP output module is not installed."""
    require_program(RSYSLOGD, "rsyslog")
    if not list(Path("/usr/lib").glob("*/rsyslog/omrelp.so")):
        pytest.fail("rsyslog's omrelp module is missing: install the Debian package 'rsyslog-relp' "
                    "(make deps-test)", pytrace=False)


def login_text(ip: str, n: int = 1) -> str:
    """The MSG of a Dovecot POP3 login from ``ip`` (logger adds the header)."""
    return (f"pop3-login: Login: user=<alice>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
            f"mpid={n}, session=<KxeGB2thD8R/ChQe>")


def stream_ip(i: int) -> str:
    """The i-th of the stream's distinct addresses, in 10.0.0.0/8."""
    return f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


class RelpRsyslog(SocketRsyslog):
    """A private rsyslogd forwarding mail.* with omrelp (disk-less action queue, retried forever)."""

    name = "rsyslogd-relp"

    def __init__(self, workdir: Path, port: int, tls: dict[str, str] | None = None) -> None:
        require_omrelp()
        self.log_path = workdir / "rsyslog-internal.log"
        tls_params = ""
        if tls is not None:
            tls_params = (
                f'tls="on" tls.caCert="{tls["ca"]}" tls.myCert="{tls["cert"]}" '
                f'tls.myPrivKey="{tls["key"]}" tls.authMode="name" '
                f'tls.permittedPeer=["{SERVER_NAME}"]'
            )
        super().__init__(
            workdir,
            # A client certificate pinned by name speaks only for that HOSTNAME (or its first label).
            (f'global(localHostName="{CLIENT_NAME.split(".")[0]}")\n' if tls is not None else "")
            + 'module(load="omrelp")\n'
            # rsyslog's own messages (connection errors, suspensions), for failure reports.
            f'syslog.* action(type="omfile" file="{self.log_path}")\n'
            f'mail.* action(type="omrelp" name="to-pbsyslog" target="{LOOPBACK_V4}" port="{port}"\n'
            f'    template="RSYSLOG_SyslogProtocol23Format" {tls_params}\n'
            '    queue.type="LinkedList" queue.size="100000"\n'
            '    action.resumeRetryCount="-1" action.resumeInterval="1")\n',
        )

    def log(self, *messages: str) -> None:
        """Inject ``messages`` with the real logger, one process, one line each (mail.info, tag dovecot)."""
        require_program(LOGGER, "bsdutils (util-linux logger)")
        subprocess.run([LOGGER, "-u", str(self.socket_path), "-p", "mail.info", "-t", "dovecot"],
                       input="".join(m + "\n" for m in messages), text=True, check=True, timeout=60)

    def describe(self) -> str:
        try:
            internal = self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            internal = ""
        return super().describe() + "\n" + describe_output("rsyslog internal log", internal)


def relp_service(start: PbsyslogFactory, port: int, dbfile: Path | None = None,
                 tls: dict[str, object] | None = None) -> PbsyslogService:
    """A pbsyslog whose only listener is RELP on 127.0.0.1:port (over TLS with ``tls`` settings)."""
    listener: dict[str, object] = {"protocol": "relp", "host": LOOPBACK_V4, "port": port, **(tls or {})}
    overrides: dict[str, object] = {"listen": [listener]}
    if dbfile is not None:
        overrides["dbfile"] = str(dbfile)
    return start(overrides)


def in_map(svc: PbsyslogService, ip: str) -> bool:
    """Whether Postfix's postmap finds ``ip`` in the service's map."""
    return postmap_q(ip, svc.dbfile) == (0, "OK\n")


def map_keys(dbfile: Path) -> set[str]:
    """Every key of the map, as postmap -s dumps it."""
    result = run_postmap("-s", f"hash:{dbfile}")
    assert result.returncode == 0 and not result.stderr, result.stderr
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def test_omrelp_delivers_login_to_map(pbsyslog_service: PbsyslogFactory,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """rsyslog's omrelp delivers logger-injected Dovecot logins through the RELP listener; postmap finds them."""
    port = free_port(socket.SOCK_STREAM)
    svc = relp_service(pbsyslog_service, port)
    rsyslog = RelpRsyslog(tmp_path_factory.mktemp("rsyslog-relp"), port)
    try:
        rsyslog.log(login_text("192.0.2.61"), login_text("192.0.2.62", 2),
                    "imap-login: Disconnected (no auth attempts): rip=192.0.2.63, lip=127.0.0.1")
        assert wait_for(lambda: in_map(svc, "192.0.2.61") and in_map(svc, "192.0.2.62"), 10), (
            svc.describe() + "\n" + rsyslog.describe())
        assert not in_map(svc, "192.0.2.63")
        assert "listening on relp 127.0.0.1" in svc.output()
    finally:
        rsyslog.stop()


def test_restart_mid_stream_every_login_reaches_map(pbsyslog_service: PbsyslogFactory,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """10,000 logins; pbsyslog is SIGTERMed and restarted mid-stream; all 10,000 IPs end up in the map.

    rsyslog resends over RELP whatever was not acknowledged; pbsyslog
    acknowledges only what its tracker holds and writes that on SIGTERM.
    """
    port = free_port(socket.SOCK_STREAM)
    first = relp_service(pbsyslog_service, port)
    dbfile = first.dbfile
    rsyslog = RelpRsyslog(tmp_path_factory.mktemp("rsyslog-relp-restart"), port)
    ips = [stream_ip(i) for i in range(STREAM)]
    assert len(set(ips)) == STREAM
    # Injected in chunks, paced, by a thread, so the stream is still flowing
    # while pbsyslog stops and starts again.
    chunks = [ips[i:i + 500] for i in range(0, STREAM, 500)]
    injected: list[int] = []

    def inject() -> None:
        for chunk in chunks:
            rsyslog.log(*(login_text(ip, n) for n, ip in enumerate(chunk)))
            injected.append(len(chunk))
            time.sleep(0.15)

    started = time.monotonic()
    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    try:
        assert wait_for(lambda: first.output().count("added 10.") >= 2000, 20), (
            first.describe() + "\n" + rsyslog.describe())
        assert injector.is_alive(), "the stream ended before the restart: slow the injection down"
        stopped_at = time.monotonic()
        first.stop()
        assert first.proc.returncode == 0, first.describe()
        before_restart = first.output().count("added 10.")
        second = relp_service(pbsyslog_service, port, dbfile=dbfile)
        restarted_at = time.monotonic()
        injector.join(60)
        assert not injector.is_alive() and sum(injected) == STREAM
        missing: set[str] = set(ips)

        def all_in_map() -> bool:
            missing.difference_update(map_keys(dbfile))
            return not missing

        assert wait_for(all_in_map, 30, interval=0.2), (
            f"{len(missing)} of {STREAM} IPs never reached the map, e.g. {sorted(missing)[:5]}\n"
            + second.describe() + "\n" + rsyslog.describe())
        finished = time.monotonic()
    finally:
        rsyslog.stop()
    # The restart really was mid-stream: the first instance had part of it, not all.
    assert 2000 <= before_restart < STREAM, before_restart
    print(f"\nRELP restart: {STREAM} logins, first instance committed {before_restart} before SIGTERM at "
          f"{stopped_at - started:.2f} s; down for {restarted_at - stopped_at:.2f} s; "
          f"all {STREAM} in the map {finished - started:.2f} s after the first line")


class Certs:
    """The certificates of the TLS test."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory, "test-ca")
        self.server = self.ca.issue(SERVER_NAME, server=True)
        self.client = self.ca.issue(CLIENT_NAME, server=False)


def test_omrelp_over_tls_with_pinned_client(pbsyslog_service: PbsyslogFactory,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """RELP over TLS: omrelp (tls, authMode name) with a client certificate pinned by name gets logins through."""
    certs = Certs(tmp_path_factory.mktemp("relp-certs"))
    port = free_port(socket.SOCK_STREAM)
    svc = relp_service(pbsyslog_service, port, tls={
        "tls_cert": str(certs.server[0]), "tls_key": str(certs.server[1]),
        "tls_ca": str(certs.ca.path), "tls_peers": [CLIENT_NAME],
    })
    rsyslog = RelpRsyslog(tmp_path_factory.mktemp("rsyslog-relp-tls"), port, tls={
        "ca": str(certs.ca.path), "cert": str(certs.client[0]), "key": str(certs.client[1]),
    })
    try:
        rsyslog.log(login_text("192.0.2.71"))
        assert wait_for(lambda: in_map(svc, "192.0.2.71"), 10), svc.describe() + "\n" + rsyslog.describe()
        assert "listening on relp+tls 127.0.0.1" in svc.output()
    finally:
        rsyslog.stop()


def test_plain_client_cannot_talk_to_tls_relp(pbsyslog_service: PbsyslogFactory,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """A RELP client without TLS gets nothing through a RELP-over-TLS listener."""
    certs = Certs(tmp_path_factory.mktemp("relp-certs-plain"))
    port = free_port(socket.SOCK_STREAM)
    svc = relp_service(pbsyslog_service, port, tls={
        "tls_cert": str(certs.server[0]), "tls_key": str(certs.server[1]), "tls_ca": str(certs.ca.path),
    })
    with socket.create_connection((LOOPBACK_V4, port), timeout=5) as sock:
        body = b"<22>Nov 29 14:22:55 vm dovecot: " + login_text("192.0.2.81").encode()
        open_data = b"relp_version=0\ncommands=syslog"
        try:
            sock.sendall(b"1 open %d %s\n2 syslog %d %s\n" % (len(open_data), open_data, len(body), body))
            reply = sock.recv(100)
        except OSError:
            reply = b""
    assert b"rsp" not in reply
    assert not in_map(svc, "192.0.2.81")
