"""Certificates that must not be served or kept: expired, for another service, unreadable;
and `certs generate` inputs that must not destroy a CA key or end in a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import ROOT, SHIPPED_POLICIES, make_pki
from webhook.pki.certs import _serving_certificate, generate, reissue_reason, service_dns_names

TEN_DAYS_AGO = datetime.now(timezone.utc) - timedelta(days=10)


def _webhook(*args: str, prefix: tuple[str, ...] = (), timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "webhook", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)


def _generate_cli(out: Path, *extra: str, service: str = "webhook",
                  namespace: str = "webhook-system") -> subprocess.CompletedProcess[str]:
    return _webhook("certs", "generate", "--out", str(out), "--service", service,
                    "--namespace", namespace, *extra)


def _replace(path: Path, data: bytes) -> None:
    """Write as a renewal tool does (temp file + rename), so no reload sees half a file."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _expired_crt_for_the_served_key(certs: Path) -> bytes:
    """tls.crt for the key already in `certs`, signed by its CA, expired nine days ago."""
    load_key = lambda name: serialization.load_pem_private_key((certs / name).read_bytes(), password=None)  # noqa: E731
    cert = _serving_certificate(load_key("tls.key"), ca_key=load_key("ca.key"),
                                ca_cert=x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes()),
                                dns_names=service_dns_names("webhook", "webhook-system"),
                                now=TEN_DAYS_AGO, days=1)
    return cert.public_bytes(serialization.Encoding.PEM)


def _not_after(path: Path) -> datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _reloads(server, result: str) -> float:
    text = server.client.request("GET", "/metrics").body.decode()
    prefix = f'webhook_certificate_reload_total{{result="{result}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def _reload_logged(result: str, text: str = ""):
    return lambda e: e.get("event") == "cert_reload" and e.get("result") == result and text in e.get("msg", "")


# --- serve ---------------------------------------------------------------------------------

@pytest.mark.process
def test_serve_refuses_to_start_with_an_expired_certificate(tmp_path: Path) -> None:
    generate(tmp_path, service="webhook", namespace="webhook-system", days=1, now=TEN_DAYS_AGO)
    expired = _not_after(tmp_path / "tls.crt")
    result = _webhook("serve", "--port", "0", "--workers", "1", "--cert-dir", str(tmp_path),
                      "--policies", str(SHIPPED_POLICIES), timeout=20)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{tmp_path / 'tls.crt'} expired on {expired:%Y-%m-%d %H:%M}" in result.stderr


def test_an_expired_replacement_is_refused_and_the_current_certificate_kept(start_server, tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    server = start_server(cert_dir=certs)
    before = server.client.peer_certificate()["serialNumber"]
    _replace(certs / "tls.crt", _expired_crt_for_the_served_key(certs))
    server.wait_for_log(_reload_logged("error", "expired on"))
    assert server.client.peer_certificate()["serialNumber"] == before
    assert _reloads(server, "error") == 1.0 and _reloads(server, "success") == 0.0


def test_rolling_back_to_the_serving_certificate_is_not_an_error(start_server, tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    original = (certs / "tls.crt").read_bytes()
    server = start_server(cert_dir=certs)
    _replace(certs / "tls.crt", b"garbage")
    server.wait_for_log(_reload_logged("error"))
    _replace(certs / "tls.crt", original)
    server.wait_for_log(_reload_logged("unchanged"))
    assert _reloads(server, "error") == 1.0
    assert server.client.request("GET", "/readyz").status == 200


def _without_dac_override() -> tuple[str, ...]:
    """A prefix under which a mode-000 directory is unreadable, even to root."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
    # Root's capabilities after exec are its bounding set: drop them there.
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    # Dropping needs CAP_SETPCAP, which a container may not grant: skip rather than fail.
    if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    return prefix


@pytest.mark.process
def test_an_unreadable_cert_dir_is_reported_as_such(tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    prefix = _without_dac_override()
    certs.chmod(0)
    try:
        result = _webhook("serve", "--port", "0", "--workers", "1", "--cert-dir", str(certs),
                          "--policies", str(SHIPPED_POLICIES), prefix=prefix, timeout=20)
    finally:
        certs.chmod(0o700)
    assert result.returncode == 1
    assert f"cannot read {certs / 'tls.crt'}: Permission denied" in result.stderr, result.stderr
    assert "listen" not in result.stderr


# --- certs generate ------------------------------------------------------------------------

@pytest.mark.process
def test_if_missing_renews_an_expired_pair_and_keeps_the_ca(tmp_path: Path) -> None:
    generate(tmp_path, service="webhook", namespace="webhook-system", days=1, now=TEN_DAYS_AGO)
    ca = (tmp_path / "ca.crt").read_bytes()
    result = _generate_cli(tmp_path, "--if-missing")
    assert result.returncode == 0, result.stderr
    assert _not_after(tmp_path / "tls.crt") > datetime.now(timezone.utc)
    assert (tmp_path / "ca.crt").read_bytes() == ca


def test_reissue_reason_names_expiry_and_uncovered_names(tmp_path: Path) -> None:
    assert reissue_reason(tmp_path, service="webhook", namespace="webhook-system") is not None  # empty
    generate(tmp_path, service="webhook", namespace="webhook-system", days=30)
    assert reissue_reason(tmp_path, service="webhook", namespace="webhook-system") is None
    other = reissue_reason(tmp_path, service="other-svc", namespace="prod")
    assert other is not None and "does not cover other-svc, other-svc.prod" in other
    generate(tmp_path, service="webhook", namespace="webhook-system", days=3)
    soon = reissue_reason(tmp_path, service="webhook", namespace="webhook-system")
    assert soon is not None and f"expires on {_not_after(tmp_path / 'tls.crt'):%Y-%m-%d}" in soon
    assert soon.endswith("within 7 days")
    generate(tmp_path, service="webhook", namespace="webhook-system", days=1, now=TEN_DAYS_AGO)
    expired = reissue_reason(tmp_path, service="webhook", namespace="webhook-system")
    assert expired is not None and f"expired on {_not_after(tmp_path / 'tls.crt'):%Y-%m-%d}" in expired


@pytest.mark.process
def test_if_missing_reissues_for_another_service_and_says_why(tmp_path: Path) -> None:
    generate(tmp_path, service="webhook", namespace="webhook-system", days=30)
    result = _generate_cli(tmp_path, "--if-missing", service="other-svc", namespace="prod")
    assert result.returncode == 0, result.stderr
    assert "does not cover other-svc" in result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "other-svc.prod.svc" in sans.get_values_for_type(x509.DNSName)


@pytest.mark.process
def test_an_existing_ca_key_is_never_overwritten(tmp_path: Path) -> None:
    generate(tmp_path, service="webhook", namespace="webhook-system")
    (tmp_path / "ca.crt").unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = _generate_cli(tmp_path)
    assert result.returncode == 1
    assert "ca.crt" in result.stderr and "ca.key" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written


@pytest.mark.process
def test_days_beyond_any_date_is_a_clear_error(tmp_path: Path) -> None:
    result = _generate_cli(tmp_path / "c", "--days", "999999999")
    assert result.returncode == 2   # a usage error, as `--days x` is
    assert result.stderr.count("\n") == 1 and "--days" in result.stderr, result.stderr
    assert not (tmp_path / "c").exists()
