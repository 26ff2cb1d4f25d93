"""Certificates: a CA and a serving certificate signed by it.

The PKI works on bytes (PEM in, PEM out): `new_ca`, `load_ca`, `issue_serving` and
`why_reissue` serve `install-ca`, which keeps its keys in Secrets and never on disk.
`generate` and `reissue_reason` are the file-based `certs generate` on top of them; the
CA is reused when `ca.key` already exists, so re-issuing the serving certificate keeps
the caBundle that the webhook configurations already trust.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
# Tolerates clock skew between this machine and the API server: a certificate's
# notBefore is this long before the `now` it is issued at.
BACKDATE = timedelta(minutes=5)
# The CA outlives many serving certificates so that the caBundle rarely changes.
CA_DAYS = 3650
# A century: ample (a serving certificate ends with its CA anyway), and far from the
# year 9999 where date arithmetic overflows.
MAX_DAYS = 36500
# `--if-missing` reissues a serving certificate that expires sooner than this.
RENEW_WITHIN = timedelta(days=7)


@dataclass(frozen=True)
class GeneratedCertificates:
    out_dir: Path
    ca_reused: bool
    ca_pem: bytes
    dns_names: tuple[str, ...]

    @property
    def ca_bundle(self) -> str:
        """The caBundle value for a webhook configuration (base64 of the PEM)."""
        return base64.b64encode(self.ca_pem).decode("ascii")


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local", "localhost")


def check_days(days: int) -> None:
    """ValueError for a validity `generate` cannot issue."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"--days must be between 1 and {MAX_DAYS}")


def uncovered_names(cert: x509.Certificate, dns_names: Sequence[str]) -> list[str]:
    """The names of `dns_names` that `cert`'s subjectAltName does not list."""
    try:
        covered = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                      .value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        covered = set()
    return [name for name in dns_names if name not in covered]


@dataclass(frozen=True)
class CA:
    """A CA as PEM, with its certificate and key parsed once."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ServingPair:
    cert_pem: bytes
    key_pem: bytes


def spki(public_key: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo: equal for a certificate and its private key."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_ca(cert_pem: bytes, key_pem: bytes) -> CA:
    """A CA from its PEM; ValueError when either is unreadable or the key is not the certificate's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable CA: {exc}") from None
    if spki(cert.public_key()) != spki(key.public_key()):
        raise ValueError(f"{CA_KEY} does not match {CA_CERT}")
    return CA(cert=cert, key=key, cert_pem=cert_pem, key_pem=key_pem)  # type: ignore[arg-type]


def new_ca(*, service: str, namespace: str, now: datetime) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(key, now=now, service=service, namespace=namespace)
    return CA(cert=cert, key=key, cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def issue_serving(ca: CA, *, dns_names: tuple[str, ...], now: datetime, days: int) -> ServingPair:
    """A new key and a serving certificate for `dns_names` (and 127.0.0.1) signed by `ca`,
    valid `days` days (1 to MAX_DAYS) but never past the CA."""
    check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _serving_certificate(key, ca_key=ca.key, ca_cert=ca.cert, dns_names=dns_names, now=now, days=days)
    return ServingPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def why_reissue(cert_pem: bytes, key_pem: bytes, ca: x509.Certificate, dns_names: Sequence[str], *,
                now: datetime, renew_before: timedelta) -> str:
    """Why a serving pair must be replaced; "" when it can stay."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return "unreadable tls.crt or tls.key"
    if spki(cert.public_key()) != spki(key.public_key()):
        return "tls.key does not match tls.crt"
    if not issued_by(cert, ca):
        return "not issued by the current CA"
    uncovered = uncovered_names(cert, dns_names)
    if uncovered:
        return f"does not cover {', '.join(uncovered)}"
    if cert.not_valid_before_utc > now:
        # Issued on a clock ahead of the API server's, which refuses it until then.
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_after_utc - now <= renew_before:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d} (within {renew_before.days} days)"
    return ""


def generate(out_dir: Path, *, service: str, namespace: str, days: int = 365,
             now: datetime | None = None) -> GeneratedCertificates:
    check_days(days)
    now = now or datetime.now(timezone.utc)
    ca_key_path = out_dir / CA_KEY
    ca_reused = ca_key_path.exists()
    if ca_reused and not (out_dir / CA_CERT).exists():
        # A new CA would overwrite the key behind the caBundle that clusters may trust.
        raise ValueError(f"{ca_key_path} exists but {out_dir / CA_CERT} is missing: restore "
                         f"{CA_CERT}, or move {CA_KEY} away to create a new CA")
    if ca_reused:
        try:
            ca = load_ca((out_dir / CA_CERT).read_bytes(), ca_key_path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{out_dir / CA_CERT} and {ca_key_path}: {exc}") from None
    else:
        ca = new_ca(service=service, namespace=namespace, now=now)
    dns_names = service_dns_names(service, namespace)
    pair = issue_serving(ca, dns_names=dns_names, now=now, days=days)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not ca_reused:
        _write(ca_key_path, ca.key_pem, private=True)
        _write(out_dir / CA_CERT, ca.cert_pem)
    # Key first, then certificate: a watcher that sees the new certificate then
    # finds its key already in place.
    _write(out_dir / TLS_KEY, pair.key_pem, private=True)
    _write(out_dir / TLS_CERT, pair.cert_pem)
    return GeneratedCertificates(out_dir=out_dir, ca_reused=ca_reused, ca_pem=ca.cert_pem, dns_names=dns_names)


def reissue_reason(out_dir: Path, *, service: str, namespace: str) -> str | None:
    """Why `generate --if-missing` must issue a serving certificate in `out_dir`; None when
    the pair there is valid now and covers the service's names."""
    from webhook.runtime.tls import CertificateError, load_pair

    cert_path = out_dir / TLS_CERT
    if not (cert_path.exists() or (out_dir / TLS_KEY).exists()):
        return "no serving certificate yet"
    try:
        _, not_after = load_pair(out_dir)  # readable, a matching pair, not expired
    except CertificateError as exc:
        return str(exc)
    if not_after - datetime.now(timezone.utc) < RENEW_WITHIN:
        # `make run` uses --if-missing: renew before a development server starts with a
        # certificate that would lapse while it runs.
        return f"{cert_path} expires on {not_after:%Y-%m-%d %H:%M} UTC, within {RENEW_WITHIN.days} days"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    uncovered = uncovered_names(cert, service_dns_names(service, namespace))
    if uncovered:
        return f"{cert_path} does not cover {', '.join(uncovered)}"
    # The command names DIR/ca.crt as the CA to trust: a kept pair must verify against it.
    ca_path = out_dir / CA_CERT
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    except FileNotFoundError:
        return f"{ca_path} is missing"
    except (OSError, ValueError) as exc:
        return f"{ca_path} is unreadable: {exc}"
    if not issued_by(cert, ca_cert):
        return f"{cert_path} is not issued by {ca_path}"
    return None


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (names and signature)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ca_certificate(key: ec.EllipticCurvePrivateKey, *, now: datetime, service: str,
                    namespace: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace} webhook CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _serving_certificate(key: ec.EllipticCurvePrivateKey, *, ca_key: CertificateIssuerPrivateKeyTypes,
                         ca_cert: x509.Certificate,
                         dns_names: tuple[str, ...], now: datetime, days: int) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[2])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (temp file + rename) so a watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600 if private else 0o644)
    os.replace(tmp, path)
