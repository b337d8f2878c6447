"""TLS client-certificate pins: names by RFC 6125 (SAN, else CN), and a certificate speaks only for its name."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.relp import RelpFactory, encode, rsp
from pbsyslog.inputs.stream import SyslogStreamFactory
from pbsyslog.inputs.tls import PinMatch, fingerprint, match_pins, matches_pins, names

_KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(cn: str | None, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> crypto.X509:
    """A self-signed certificate with subject CN ``cn`` and the given subjectAltNames (none: no SAN extension)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else [])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return crypto.X509.from_cryptography(builder.sign(_KEY, hashes.SHA256()))


# -- names and pins (RFC 6125) ----------------------------------------------

def test_cn_does_not_count_when_the_certificate_has_dns_sans() -> None:
    """CN pop1 with the SAN webserver is webserver only: the pin pop1 does not match it."""
    cert = certificate("pop1", dns=["webserver"])
    assert names(cert) == {"webserver"}
    assert not matches_pins(cert, ["pop1"])
    assert match_pins(cert, ["pop1"]) is None
    assert matches_pins(cert, ["webserver"])


def test_san_dns_name_matches() -> None:
    """A DNS subjectAltName matches a name pin, case-insensitively, whatever the CN."""
    cert = certificate("something else", dns=["Pop1.Example.org", "mail.example.org"])
    assert match_pins(cert, ["POP1.example.ORG"]) == PinMatch(frozenset({"pop1.example.org"}))
    assert not matches_pins(cert, ["something else"])


def test_cn_matches_when_there_is_no_san() -> None:
    """Without subjectAltNames, the subject CN is the certificate's name."""
    cert = certificate("pop1")
    assert names(cert) == {"pop1"}
    assert match_pins(cert, ["pop1"]) == PinMatch(frozenset({"pop1"}))


def test_cn_matches_when_the_san_holds_no_dns_name() -> None:
    """A SAN with only an IP address has no DNS-ID: the CN is the name."""
    cert = certificate("pop1", ips=["192.0.2.1"])
    assert names(cert) == {"pop1"}
    assert matches_pins(cert, ["pop1"])


def test_no_certificate_and_no_matching_pin() -> None:
    """No certificate, or one no pin names, matches nothing."""
    assert match_pins(None, ["pop1"]) is None
    assert match_pins(certificate("pop2"), ["pop1", "sha256:00:11"]) is None


def test_fingerprint_pin_ties_to_no_name() -> None:
    """A certificate matched by its fingerprint alone may carry any HOSTNAME (the listener's hostnames still apply)."""
    cert = certificate("pop1", dns=["pop1.example.org"])
    match = match_pins(cert, [fingerprint(cert).lower()])
    assert match == PinMatch(frozenset())
    assert match.hostnames is None


def test_name_pin_ties_even_when_a_fingerprint_pin_matches_too() -> None:
    """A name pin that matches ties the certificate to it, a matching fingerprint pin notwithstanding."""
    cert = certificate(None, dns=["pop1.example.org"])
    match = match_pins(cert, [fingerprint(cert), "pop1.example.org"])
    assert match is not None and match.names == {"pop1.example.org"}


def test_a_name_speaks_for_itself_and_its_short_form() -> None:
    """The pin pop1.example.org speaks for pop1.example.org and pop1 (rsyslog's default HOSTNAME), nothing else."""
    match = match_pins(certificate(None, dns=["pop1.example.org", "pop2.example.org"]),
                       ["pop1.example.org", "pop3.example.org"])
    assert match is not None
    assert match.hostnames == {"pop1.example.org", "pop1"}
    assert PinMatch(frozenset({"pop1"})).hostnames == {"pop1"}
    assert PinMatch(frozenset({"*.example.org"})).hostnames == {"*.example.org"}  # no short form "*"


# -- a certificate speaks only for its name (TCP/TLS stream listener) ----------

class TLSTransport(StringTransport):
    """A StringTransport that presents a client certificate, as a TLS transport does after the handshake."""

    def __init__(self, cert: crypto.X509 | None, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.cert = cert
        self.aborted = False

    def getPeerCertificate(self) -> crypto.X509 | None:
        return self.cert

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Listener:
    """A TLS listener context with pins, a recording sink and a fake clock."""

    def __init__(self, pins: tuple[str, ...], batch: bool = False, relp: bool = False) -> None:
        self.frames: list[bytes] = []
        self.refused: list[str] = []
        self.counters = TransportCounters()
        self.clock = Clock()
        ctx = Listening(
            sink=lambda frame, peer: self.frames.append(frame),
            sink_batch=self.frames.extend if batch else None,
            allowed=lambda host: True, refused=self.refused.append,
            counters=self.counters, limits=Limits(), clock=self.clock, tls_peers=pins,
        )
        self.factory = RelpFactory(ctx) if relp else SyslogStreamFactory(ctx)

    def connect(self, cert: crypto.X509 | None, host: str = "192.0.2.10") -> tuple[Any, TLSTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        assert proto is not None
        transport = TLSTransport(cert, host)
        proto.makeConnection(transport)
        proto.handshakeCompleted()
        return proto, transport


def line(host: str, text: str = "hi") -> bytes:
    """An RFC 5424 line with HOSTNAME ``host``, as rsyslog's RSYSLOG_SyslogProtocol23Format sends it."""
    return f"<22>1 2024-05-01T10:00:00+00:00 {host} dovecot 7 - - {text}".encode()


POP1 = certificate("pop1.example.org", dns=["pop1.example.org"])


@pytest.mark.parametrize("batch", [False, True], ids=["one by one", "batch"])
def test_certificate_pinned_by_name_speaks_only_for_that_name(batch: bool) -> None:
    """pop1's certificate gets HOSTNAME pop1 / pop1.example.org through; pop2 and lookalikes are dropped and counted."""
    listener = Listener(("pop1.example.org", "pop2.example.org"), batch=batch)
    proto, transport = listener.connect(POP1)
    good = [line("pop1", "a"), line("pop1.example.org", "b"), line("POP1.Example.Org", "c")]
    bad = [line("pop2", "x"), line("pop2.example.org", "y"), line("pop1.evil.org", "z"),
           b"<22>dovecot: no hostname at all"]
    with capturedLogs() as events:
        proto.dataReceived(b"".join(frame + b"\n" for frame in [bad[0], good[0], bad[1], good[1], bad[2]]))
        proto.dataReceived(b"".join(b"%d %s" % (len(f), f) for f in [good[2], bad[3]]))
    assert listener.frames == good
    assert listener.counters.untrusted == 4 and listener.counters.frames == 3
    assert not transport.aborted and listener.refused == []
    said = [formatEvent(e) for e in events]
    assert said == ["refused syslog over TLS from 192.0.2.10: HOSTNAME 'pop2' is not the name of its "
                    "client certificate (pop1.example.org, pinned in tls_peers)"]  # then quiet for a minute


def test_hostname_refusals_are_logged_once_a_minute_per_peer() -> None:
    """Each connection of a peer still counts every refusal; the log says it at most once a minute."""
    listener = Listener(("pop1.example.org",))
    with capturedLogs() as events:
        for _ in range(2):
            proto, _transport = listener.connect(POP1)
            proto.dataReceived(line("pop2") + b"\n")
        listener.clock.advance(61)
        proto.dataReceived(line("pop3") + b"\n")
    assert listener.counters.untrusted == 3
    assert ["'pop2'" in formatEvent(e) for e in events] == [True, False]
    assert "'pop3'" in formatEvent(events[1])


def test_unparsable_frames_are_left_to_the_pipeline() -> None:
    """A frame syslog.parse rejects (bad PRI) is handed on: the pipeline counts it malformed."""
    listener = Listener(("pop1.example.org",))
    proto, _transport = listener.connect(POP1)
    proto.dataReceived(b"<999>1 - pop2 x - - - y\n")
    assert listener.frames == [b"<999>1 - pop2 x - - - y"] and listener.counters.untrusted == 0


def test_certificate_pinned_by_fingerprint_may_carry_any_hostname() -> None:
    """Pinned by fingerprint, the certificate is tied to no name."""
    listener = Listener((fingerprint(POP1),))
    proto, _transport = listener.connect(POP1)
    proto.dataReceived(line("pop2") + b"\n")
    assert listener.frames == [line("pop2")] and listener.counters.untrusted == 0


def test_without_pins_any_certificate_of_the_ca_may_carry_any_hostname() -> None:
    """No tls_peers: nothing to tie (the listener's hostnames are the only check)."""
    listener = Listener(())
    proto, _transport = listener.connect(POP1)
    proto.dataReceived(line("pop2") + b"\n")
    assert listener.frames == [line("pop2")]


def test_unpinned_certificate_is_cut_off_and_logged_as_such() -> None:
    """A certificate no pin matches: connection aborted, counted once, logged as a pin failure, not the allow list."""
    listener = Listener(("pop1.example.org",))
    with capturedLogs() as events:
        proto, transport = listener.connect(certificate("pop1.example.org", dns=["webserver.example.org"]))
        proto.dataReceived(line("webserver") + b"\n")
        proto.dataReceived(line("pop1") + b"\n")
    assert transport.aborted and listener.frames == []
    assert listener.counters.untrusted == 1
    assert listener.refused == []  # the allow-list hook is not told: the allow list let it in
    assert [formatEvent(e) for e in events] == [
        "refused syslog over TLS: client certificate of 192.0.2.10 matches no tls_peers pin"]


# -- the same on RELP over TLS ------------------------------------------------

def test_relp_certificate_speaks_only_for_its_name() -> None:
    """RELP: a message from another HOSTNAME is acknowledged (rsyslog must not resend it) but not delivered."""
    listener = Listener(("pop1.example.org",), relp=True)
    proto, transport = listener.connect(POP1)
    offers = b"relp_version=0\ncommands=syslog"
    proto.dataReceived(encode(1, "open", offers) + encode(2, "syslog", line("pop2")) + encode(3, "syslog", line("pop1")))
    assert listener.frames == [line("pop1")]
    assert transport.value().endswith(rsp(2) + rsp(3))
    assert listener.counters.untrusted == 1 and listener.counters.frames == 2


def test_relp_unpinned_certificate_is_cut_off() -> None:
    """RELP over TLS shares the pin check: a certificate named by no pin gets nothing through."""
    listener = Listener(("pop1.example.org",), relp=True)
    proto, transport = listener.connect(certificate("pop2.example.org"))
    proto.dataReceived(encode(1, "open", b"commands=syslog") + encode(2, "syslog", line("pop1")))
    assert transport.aborted and listener.frames == [] and transport.value() == b""
