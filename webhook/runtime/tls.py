"""TLS for the server: a listening context whose certificate can change without a restart.

The listening context never holds a certificate itself. Its SNI callback (which
OpenSSL calls on every handshake, with or without a server name) hands the
connection to the newest fully validated context. A reload builds a fresh context
from the files on disk, so a half-written or mismatched pair fails there and the
serving context is never touched; open connections keep the context they started
with, so nothing in flight is dropped.
"""

from __future__ import annotations

import logging
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from webhook.runtime.filewatch import fingerprint

log = logging.getLogger(__name__)

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class CertificateError(RuntimeError):
    pass


# What a reload did, as counted in webhook_certificate_reload_total{result}.
ReloadResult = Literal["success", "error", "unchanged"]


class ServingCertificate:
    """Holds the current certificate context and swaps in a new one when the files change."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = cert_dir
        self.fingerprint = self.current_fingerprint()
        self._current, self.not_after = load_pair(cert_dir)
        self.listening_context = _new_context()
        self.listening_context.sni_callback = self._select_context

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.cert_dir / CERT_FILE, self.cert_dir / KEY_FILE

    def current_fingerprint(self) -> str:
        return fingerprint(self.paths)

    def reload(self) -> ReloadResult:
        """Serve the pair on disk if it changed and is valid; keep the old one otherwise."""
        seen = self.current_fingerprint()
        if seen == self.fingerprint:
            # The files are the serving pair again (a refused edit undone): nothing is wrong.
            log.info("TLS certificate files match the serving certificate again; nothing to reload",
                     extra={"event": "cert_reload", "result": "unchanged"})
            return "unchanged"
        try:
            context, not_after = load_pair(self.cert_dir)
        except CertificateError as exc:
            # Refused until the files change again; a half-written pair is complete
            # a moment later, and that write is the change that brings it in.
            log.error("refusing new TLS certificate, keeping the current one: %s", exc,
                      extra={"event": "cert_reload", "result": "error"})
            return "error"
        self._current, self.not_after, self.fingerprint = context, not_after, seen
        log.info("serving new TLS certificate (expires %s)", not_after.isoformat(),
                 extra={"event": "cert_reload", "result": "success"})
        return "success"

    def _select_context(self, ssl_obj: ssl.SSLObject, _server_name: str | None,
                        _context: ssl.SSLContext) -> None:
        ssl_obj.context = self._current


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The API server speaks TLS 1.2+; older versions have known weaknesses.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_pair(cert_dir: Path) -> tuple[ssl.SSLContext, datetime]:
    """A fresh context holding the pair in `cert_dir`, and the certificate's expiry.

    An expired certificate is refused: every API server would reject it, and a
    server that starts (or reloads) with one only hides that until the first request."""
    cert_path, key_path = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    cert_pem = _read(cert_path, cert_dir)
    _read(key_path, cert_dir)
    context = _new_context()
    try:
        context.load_cert_chain(cert_path, key_path)
        not_after = certificate_not_after(cert_pem)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateError(f"{cert_path} and {key_path} are not a valid pair: {exc}") from None
    if not_after <= datetime.now(timezone.utc):
        raise CertificateError(f"{cert_path} expired on {not_after:%Y-%m-%d %H:%M} UTC")
    return context, not_after


def _read(path: Path, cert_dir: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # The hint is a whole command (the names `make run` uses): it is what gets pasted.
        raise CertificateError(f"{path} not found (for local use, generate development "
                               f"certificates with 'webhook certs generate --out {cert_dir} "
                               f"--service webhook --namespace webhook-system')") from None
    except OSError as exc:  # e.g. a directory the server's user may not read
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from None


def certificate_not_after(pem: bytes) -> datetime:
    """The first certificate's notAfter, read from its DER structure.

    A dozen lines of DER walking instead of importing `cryptography` in the server,
    which would cost each worker about 14 MiB for this one field."""
    text = pem.decode("ascii", "replace")
    end = "-----END CERTIFICATE-----"
    if end in text:  # tls.crt may hold a chain; the serving certificate comes first
        text = text[: text.index(end) + len(end)] + "\n"
    der = ssl.PEM_cert_to_DER_cert(text)
    tbs = _der_children(_der_children(der)[0][1])[0][1]  # Certificate -> tbsCertificate
    fields = _der_children(tbs)
    if fields and fields[0][0] == 0xA0:  # explicit [0] version is optional
        fields = fields[1:]
    validity = _der_children(fields[3][1])  # serialNumber, signature, issuer, validity
    tag, value = validity[1]  # notBefore, notAfter
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 1950-2049
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        raise ValueError("certificate validity is not a time")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)


def _der_children(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, contents) of each DER element in `data`, or of the one constructed element it holds."""
    out = []
    pos = 0
    while pos < len(data):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
            count = length & 0x7F
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("truncated DER")
        out.append((tag, data[pos:pos + length]))
        pos += length
    return out
