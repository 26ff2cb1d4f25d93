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

from cryptography import x509

from webhook.filewatch import fingerprint

log = logging.getLogger(__name__)

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class CertificateError(RuntimeError):
    pass


class ServingCertificate:
    """Holds the current certificate context and swaps in a new one when the files change."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = cert_dir
        self.fingerprint = self.current_fingerprint()
        self._current, self.not_after = _load(cert_dir)
        self.listening_context = _new_context()
        self.listening_context.sni_callback = self._select_context

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.cert_dir / CERT_FILE, self.cert_dir / KEY_FILE

    def current_fingerprint(self) -> str:
        return fingerprint(self.paths)

    def reload(self) -> bool:
        """Serve the pair on disk if it changed and is valid; keep the old one otherwise."""
        seen = self.current_fingerprint()
        if seen == self.fingerprint:
            return False
        try:
            context, not_after = _load(self.cert_dir)
        except CertificateError as exc:
            # The fingerprint is not recorded, so the next poll tries again: a
            # half-written pair is usually complete a moment later.
            log.error("refusing new TLS certificate, keeping the current one: %s", exc,
                      extra={"event": "cert_reload", "result": "error"})
            return False
        self._current, self.not_after, self.fingerprint = context, not_after, seen
        log.info("serving new TLS certificate (expires %s)", not_after.isoformat(),
                 extra={"event": "cert_reload", "result": "success"})
        return True

    def _select_context(self, ssl_obj: ssl.SSLObject, _server_name: str | None,
                        _context: ssl.SSLContext) -> None:
        ssl_obj.context = self._current


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The API server speaks TLS 1.2+; older versions have known weaknesses.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load(cert_dir: Path) -> tuple[ssl.SSLContext, datetime]:
    """A fresh context holding the pair in `cert_dir`, and the certificate's expiry."""
    cert_path, key_path = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    for path in (cert_path, key_path):
        if not path.is_file():
            raise CertificateError(f"{path} not found (for local use, generate development "
                                   f"certificates with 'webhook certs generate --out {cert_dir}')")
    context = _new_context()
    try:
        context.load_cert_chain(cert_path, key_path)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateError(f"{cert_path} and {key_path} are not a valid pair: {exc}") from None
    return context, cert.not_valid_after_utc.astimezone(timezone.utc)
