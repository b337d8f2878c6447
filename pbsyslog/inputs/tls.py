"""TLS for syslog listeners (RFC 5425): mutual authentication and optional pins.

Contract: builds the server's TLS context from PEM files (certificate, key,
and the CA that must have signed every client certificate), and decides
whether a client's certificate matches the listener's pins (names or
SHA-256 fingerprints).  A client without a certificate, or with one from
another CA, fails the handshake; one that does not match a pin is
disconnected before any of its data is read.

How it fails: unreadable or invalid PEM files raise ``TLSSetupError`` at
start-up, naming the file, before any port is bound.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def names(cert: crypto.X509) -> set[str]:
    """The subject CN and DNS subjectAltNames of a certificate, lowercased."""
    parsed = cert.to_cryptography()
    found = {a.value.lower() for a in parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
             if isinstance(a.value, str)}
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    return found | {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def matches_pins(cert: crypto.X509 | None, pins: Iterable[str]) -> bool:
    """Say whether ``cert`` matches one of ``pins`` (names, or sha256:... fingerprints)."""
    if cert is None:
        return False
    wanted = {_pin(p) for p in pins}
    return fingerprint(cert) in wanted or bool(names(cert) & wanted)


def _pin(text: str) -> str:
    """A pin in the form ``fingerprint``/``names`` produce: sha256:UPPER:HEX, or a lowercase name."""
    if text.lower().startswith("sha256:"):
        return "sha256:" + text[7:].upper()
    return text.lower()
