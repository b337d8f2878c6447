"""TLS listener (RFC 5425) with mutual authentication: real rsyslog gtls in, strangers out.

A client certificate pinned by name speaks only for that name: its
connection's lines must carry it (or its first label) as HOSTNAME.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from harness import (
    LOGGER,
    LOOPBACK_V4,
    RSYSLOGD,
    PbsyslogFactory,
    PbsyslogService,
    SocketRsyslog,
    dovecot_login,
    free_port,
    postmap_q,
    require_program,
    wait_for,
)
from tlscerts import Authority

SERVER_NAME = "pbsyslog.test"
SNIPPET = Path(__file__).resolve().parents[2] / "conf" / "rsyslog" / "pbsyslog-tls.conf"
PINNED_CLIENT = "pop1.test"
SHORT_NAME = "pop1"  # what rsyslog sends as HOSTNAME by default: the first label


class Certs:
    """The certificates of one test module."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory, "test-ca")
        self.other_ca = Authority(directory, "other-ca")
        self.server = self.ca.issue(SERVER_NAME, server=True)
        self.client = self.ca.issue(PINNED_CLIENT, server=False)
        self.unpinned = self.ca.issue("pop2.test", server=False)
        self.foreign = self.other_ca.issue(PINNED_CLIENT, server=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Fresh certificates for this module."""
    return Certs(tmp_path_factory.mktemp("certs"))


def tls_service(pbsyslog_service: PbsyslogFactory, certs: Certs,
                **listener: object) -> tuple[PbsyslogService, int]:
    """A service with one TLS listener pinned to the client certificate name pop1.test (``listener`` overrides)."""
    port = free_port(socket.SOCK_STREAM)
    svc = pbsyslog_service({"listen": [{
        "protocol": "tls", "host": LOOPBACK_V4, "port": port,
        "tls_cert": str(certs.server[0]), "tls_key": str(certs.server[1]), "tls_ca": str(certs.ca.path),
        "tls_peers": [PINNED_CLIENT], **listener,
    }]})
    return svc, port


@pytest.fixture(scope="module")
def service(pbsyslog_service: PbsyslogFactory, certs: Certs) -> tuple[PbsyslogService, int]:
    """A service with one TLS listener pinned to the client certificate name pop1.test."""
    return tls_service(pbsyslog_service, certs)


def login(ip: str, host: str = SHORT_NAME) -> str:
    """A Dovecot login line from ``ip`` with syslog HOSTNAME ``host``."""
    line = dovecot_login(ip)
    assert " vm dovecot: " in line
    return line.replace(" vm dovecot: ", f" {host} dovecot: ", 1)


def send_tls(port: int, certs: Certs, client: tuple[Path, Path] | None, payload: bytes) -> None:
    """Connect with TLS (optionally presenting ``client``), send ``payload``, and close.

    What the server does with the data is seen in the map, with a later good
    client's line as the barrier.
    """
    context = ssl.create_default_context(cafile=str(certs.ca.path))
    context.check_hostname = False
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection((LOOPBACK_V4, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            tls.sendall(payload)
            # A clean TLS close: close_notify both ways, so no unread data
            # (session tickets) makes the kernel reset the connection, which
            # could discard our data before the server read it.
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass  # a refused client: the server hung up first


def in_map(svc: PbsyslogService, ip: str) -> bool:
    """Whether postmap finds ``ip`` in the service's map."""
    return postmap_q(ip, svc.dbfile) == (0, "OK\n")


def test_pinned_client_certificate_authorises(service: tuple[PbsyslogService, int], certs: Certs) -> None:
    """A client with a certificate from the CA and the pinned name gets its login lines through (both framings).

    The lines carry the certificate's name as HOSTNAME: its first label, and in full.
    """
    svc, port = service
    lf = (login("192.0.2.101", SHORT_NAME) + "\n").encode()
    octet = login("192.0.2.102", PINNED_CLIENT.upper()).encode()
    send_tls(port, certs, certs.client, lf + b"%d " % len(octet) + octet)
    assert wait_for(lambda: in_map(svc, "192.0.2.101") and in_map(svc, "192.0.2.102"), 3), svc.describe()


@pytest.mark.parametrize("who", ["no certificate", "other CA", "unpinned name"])
def test_untrusted_clients_are_refused(service: tuple[PbsyslogService, int], certs: Certs, who: str) -> None:
    """Without a certificate, with one from another CA, or with an unpinned name, nothing is accepted."""
    svc, port = service
    client = {"no certificate": None, "other CA": certs.foreign, "unpinned name": certs.unpinned}[who]
    n = {"no certificate": 1, "other CA": 2, "unpinned name": 3}[who]
    ip, barrier = f"192.0.2.11{n}", f"192.0.2.12{n}"
    try:
        send_tls(port, certs, client, (login(ip) + "\n").encode())
    except (ssl.SSLError, OSError):
        pass  # the handshake itself may fail, which is the point
    # Barrier: a good client's line sent afterwards arrives; the bad one never did.
    send_tls(port, certs, certs.client, (login(barrier) + "\n").encode())
    assert wait_for(lambda: in_map(svc, barrier), 3), svc.describe()
    assert not in_map(svc, ip)
    if who == "unpinned name":
        # Said as what it is: the allow list let the client in, its certificate failed the pins.
        assert wait_for(lambda: f"client certificate of {LOOPBACK_V4} matches no tls_peers pin" in svc.output(),
                        3), svc.describe()
        assert "allow list" not in svc.output()


def test_certificate_speaks_only_for_its_own_hostname(pbsyslog_service: PbsyslogFactory, certs: Certs) -> None:
    """pop1's pinned certificate cannot send lines as pop2: refused and logged as such; its own lines go through.

    The listener's ``hostnames`` apply as well (both must pass): pop2.test is
    in them, yet refused on pop1's connection; pop1 is pop1's, but not in them.
    """
    svc, port = tls_service(pbsyslog_service, certs, hostnames=[PINNED_CLIENT, "pop2.test"])
    lines = [login("192.0.2.141", "pop2.test"), login("192.0.2.142", "pop2"),
             login("192.0.2.143", SHORT_NAME), login("192.0.2.144", PINNED_CLIENT)]
    send_tls(port, certs, certs.client, "".join(line + "\n" for line in lines).encode())
    # The last line is the barrier: the connection's lines are handled in order.
    assert wait_for(lambda: in_map(svc, "192.0.2.144"), 3), svc.describe()
    assert not any(in_map(svc, ip) for ip in ("192.0.2.141", "192.0.2.142", "192.0.2.143"))
    assert wait_for(lambda: f"refused syslog over TLS from {LOOPBACK_V4}: HOSTNAME 'pop2.test' is not the name "
                            f"of its client certificate ({PINNED_CLIENT}, pinned in tls_peers)" in svc.output(),
                    3), svc.describe()


class TLSRsyslog(SocketRsyslog):
    """A private rsyslogd running the shipped TLS snippet (gtls, x509/name, client certificate)."""

    name = "rsyslogd-tls"

    def __init__(self, workdir: Path, port: int, certs: Certs, hostname: str = SHORT_NAME) -> None:
        require_program(RSYSLOGD, "rsyslog")
        if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists() and not list(
            Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")
        ):
            pytest.fail("rsyslog's gtls driver is missing: install the Debian package 'rsyslog-gnutls'",
                        pytrace=False)
        # The shipped snippet, with only its target, names and file paths swapped in.
        snippet = (SNIPPET.read_text()
                   .replace('target="pbsyslog.example.org"', 'target="127.0.0.1"')
                   .replace('port="6514"', f'port="{port}"')
                   .replace('StreamDriverPermittedPeers="pbsyslog.example.org"',
                            f'StreamDriverPermittedPeers="{SERVER_NAME}"')
                   .replace("/etc/rsyslog-pbsyslog/ca.pem", str(certs.ca.path))
                   .replace("/etc/rsyslog-pbsyslog/client-cert.pem", str(certs.client[0]))
                   .replace("/etc/rsyslog-pbsyslog/client-key.pem", str(certs.client[1])))
        assert "example.org" not in snippet and "/etc/rsyslog-pbsyslog" not in snippet, snippet
        # The HOSTNAME this rsyslog sends (the host's own, as a POP host's rsyslog would, is not
        # the client certificate's name here).
        super().__init__(workdir, f'global(localHostName="{hostname}")\n' + snippet)


def test_real_rsyslog_over_tls(service: tuple[PbsyslogService, int], certs: Certs,
                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """rsyslog 8 with StreamDriver gtls, mode 1, x509/name delivers a login line through the TLS listener.

    rsyslog sends its short hostname (pop1), which the pin pop1.test speaks for.
    """
    svc, port = service
    rsyslog = TLSRsyslog(tmp_path_factory.mktemp("rsyslog-tls"), port, certs, hostname=SHORT_NAME)
    try:
        rsyslog_login(rsyslog, "192.0.2.130")
        assert wait_for(lambda: in_map(svc, "192.0.2.130"), 5), svc.describe() + "\n" + rsyslog.describe()
    finally:
        rsyslog.stop()


def test_real_rsyslog_with_pinned_certificate_cannot_speak_for_another_host(
        pbsyslog_service: PbsyslogFactory, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> None:
    """rsyslog holding pop1's pinned certificate but sending HOSTNAME pop2: its lines are refused, and logged so."""
    svc, port = tls_service(pbsyslog_service, certs)
    rsyslog = TLSRsyslog(tmp_path_factory.mktemp("rsyslog-tls-pop2"), port, certs, hostname="pop2")
    try:
        rsyslog_login(rsyslog, "192.0.2.131")
        assert wait_for(lambda: "HOSTNAME 'pop2' is not the name of its client certificate (pop1.test" in svc.output(),
                        5), svc.describe() + "\n" + rsyslog.describe()
    finally:
        rsyslog.stop()
    assert not in_map(svc, "192.0.2.131")


def rsyslog_login(rsyslog: TLSRsyslog, ip: str) -> None:
    """Log a Dovecot login from ``ip`` into ``rsyslog`` with the real logger (mail.info, tag dovecot)."""
    subprocess.run(
        [LOGGER, "-u", str(rsyslog.socket_path), "-p", "mail.info", "-t", "dovecot",
         f"pop3-login: Login: user=<alice>, method=PLAIN, rip={ip}, lip=127.0.0.1, "
         "mpid=7, session=<KxeGB2thD8R/ChQe>"],
        check=True, timeout=10,
    )
