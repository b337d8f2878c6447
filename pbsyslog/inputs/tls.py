"""TLS for syslog listeners (RFC 5425): mutual authentication and optional pins.

Contract: builds the server's TLS context from PEM files (certificate, key,
and the CA that must have signed every client certificate), and decides
how a client's certificate matches the listener's pins (names or SHA-256
fingerprints).  A client without a certificate, or with one from another
CA, fails the handshake; one that matches no pin is disconnected before any
of its data is read.

Names follow RFC 6125: a certificate's names are its DNS subjectAltNames
when it has any, and its subject CN only when it has none (a CN ``pop1``
with the SAN ``webserver`` is ``webserver``, not ``pop1``).  Names compare
case-insensitively and literally (no wildcard expansion).  A certificate
that matches a *name* pin speaks only for that name: ``PinMatch.hostnames``
is the syslog HOSTNAMEs its messages may carry (the name and its first
label, the short form rsyslog sends by default).  A fingerprint pin ties
the certificate to no name.

How it fails: unreadable or invalid PEM files raise ``TLSSetupError`` at
start-up, naming the file, before any port is bound.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import crypto
from twisted.internet import ssl


class TLSSetupError(ValueError):
    """A certificate, key or CA file that cannot be used."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSSetupError(f"cannot read {what} {path}: {e.strerror}") from None


def server_options(cert: str | None, key: str | None, ca: str | None) -> ssl.CertificateOptions:
    """TLS options for a listener: present ``cert``/``key``, require a client certificate signed by ``ca``."""
    if cert is None or key is None or ca is None:
        raise TLSSetupError("a TLS listener needs tls_cert, tls_key and tls_ca")
    try:
        certificate = ssl.PrivateCertificate.loadPEM(_read(cert, "certificate") + b"\n" + _read(key, "key"))
    except Exception as e:
        raise TLSSetupError(f"certificate {cert} / key {key} unusable: {e}") from None
    try:
        authority = ssl.Certificate.loadPEM(_read(ca, "CA certificate"))
    except Exception as e:
        raise TLSSetupError(f"CA certificate {ca} unusable: {e}") from None
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        verify=True,
        requireCertificate=True,
        caCerts=[authority.original],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def fingerprint(cert: crypto.X509) -> str:
    """The certificate's SHA-256 fingerprint as ``sha256:AB:CD:...``."""
    raw = cert.to_cryptography().fingerprint(hashes.SHA256())
    return "sha256:" + ":".join(f"{b:02X}" for b in raw)


def names(cert: crypto.X509) -> frozenset[str]:
    """The names ``cert`` is issued to, lowercased: its DNS subjectAltNames, or its subject CN when it has none.

    RFC 6125 (6.4.4): a certificate with DNS subjectAltNames is not also
    known by its CN, so a CN cannot smuggle a second identity past the SAN.
    """
    parsed = cert.to_cryptography()
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        dns: list[str] = []
    else:
        dns = san.get_values_for_type(x509.DNSName)
    if dns:
        return frozenset(name.lower() for name in dns)
    return frozenset(a.value.lower() for a in parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                     if isinstance(a.value, str))


@attrs.frozen
class PinMatch:
    """How a client certificate matched the pins: by which names (none: by its fingerprint alone)."""

    names: frozenset[str]

    @property
    def hostnames(self) -> frozenset[str] | None:
        """The syslog HOSTNAMEs (lowercase) the certificate speaks for; None: any (a fingerprint pin).

        Each matched name and its first label: the pin ``pop1.example.org``
        speaks for ``pop1.example.org`` and ``pop1`` (rsyslog sends the short
        hostname unless told to keep the FQDN).
        """
        if not self.names:
            return None
        short = {name.split(".", 1)[0] for name in self.names}
        return self.names | {label for label in short if label and "*" not in label}


def match_pins(cert: crypto.X509 | None, pins: Iterable[str]) -> PinMatch | None:
    """How ``cert`` matches ``pins`` (names, or sha256:... fingerprints); None when it matches none.

    A certificate that matches a name pin is tied to the names it matched,
    even when a fingerprint pin matches it too: only a fingerprint alone
    leaves it untied.
    """
    if cert is None:
        return None
    wanted = {_pin(p) for p in pins}
    matched = names(cert) & wanted
    if matched:
        return PinMatch(frozenset(matched))
    if fingerprint(cert) in wanted:
        return PinMatch(frozenset())
    return None


def matches_pins(cert: crypto.X509 | None, pins: Iterable[str]) -> bool:
    """Say whether ``cert`` matches one of ``pins`` (names, or sha256:... fingerprints)."""
    return match_pins(cert, pins) is not None


def _pin(text: str) -> str:
    """A pin in the form ``fingerprint``/``names`` produce: sha256:UPPER:HEX, or a lowercase name."""
    if text.lower().startswith("sha256:"):
        return "sha256:" + text[7:].upper()
    return text.lower()
