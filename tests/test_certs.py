"""`webhook certs generate`: CA reuse, SANs, key modes, and verification by service name."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.conftest import ROOT


def _run_generate(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook", "certs", "generate", "--out", str(out),
                           "--service", "admission", "--namespace", "platform", *extra],
                          capture_output=True, text=True, cwd=ROOT, check=False)


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    return ext.get_values_for_type(x509.DNSName), [str(i) for i in ext.get_values_for_type(x509.IPAddress)]


@pytest.mark.process
def test_generate_writes_pair_ca_and_prints_ca_bundle(tmp_path: Path) -> None:
    result = _run_generate(tmp_path / "c", "--days", "10")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "c"
    import base64
    assert base64.b64decode(result.stdout.strip()) == (out / "ca.crt").read_bytes()
    dns, ips = _sans(out / "tls.crt")
    assert set(dns) >= {"admission", "admission.platform", "admission.platform.svc",
                        "admission.platform.svc.cluster.local", "localhost"}
    assert ips == ["127.0.0.1"]
    for key in ("tls.key", "ca.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 10 <= lifetime.days <= 11


@pytest.mark.process
def test_ca_is_reused_so_the_ca_bundle_does_not_change(tmp_path: Path) -> None:
    out = tmp_path / "c"
    first = _run_generate(out)
    ca_before, cert_before = (out / "ca.crt").read_bytes(), (out / "tls.crt").read_bytes()
    second = _run_generate(out)
    assert second.returncode == 0
    assert first.stdout == second.stdout
    assert (out / "ca.crt").read_bytes() == ca_before
    assert (out / "tls.crt").read_bytes() != cert_before
    assert "reused CA" in second.stderr


@pytest.mark.process
def test_if_missing_keeps_a_valid_pair(tmp_path: Path) -> None:
    out = tmp_path / "c"
    _run_generate(out)
    before = (out / "tls.crt").read_bytes()
    result = _run_generate(out, "--if-missing")
    assert result.returncode == 0 and (out / "tls.crt").read_bytes() == before


@pytest.mark.process
def test_if_missing_reissues_a_pair_that_its_ca_crt_does_not_verify(tmp_path: Path) -> None:
    # `make run` prints certs/ca.crt as the CA to trust: a kept pair must verify against it.
    out, other = tmp_path / "c", tmp_path / "other"
    _run_generate(out)
    for name in ("ca.crt", "ca.key"):
        (out / name).unlink()
    lost_ca = _run_generate(out, "--if-missing")        # the pair's CA is gone
    assert lost_ca.returncode == 0, lost_ca.stderr
    assert "ca.crt" in lost_ca.stderr and "created CA" in lost_ca.stderr
    _handshake(out, "admission.platform.svc")

    _run_generate(other)
    for name in ("ca.crt", "ca.key"):
        (out / name).write_bytes((other / name).read_bytes())
    other_ca = _run_generate(out, "--if-missing")       # ca.crt is another CA
    assert other_ca.returncode == 0, other_ca.stderr
    assert "not issued by" in other_ca.stderr and "reused CA" in other_ca.stderr
    _handshake(out, "admission.platform.svc")

    kept = (out / "tls.crt").read_bytes()
    assert "nothing to do" in _run_generate(out, "--if-missing").stderr
    assert (out / "tls.crt").read_bytes() == kept


@pytest.mark.process
def test_bad_days_is_a_usage_error(tmp_path: Path) -> None:
    # Exit 2 like any other usage error (`--days x`, install-ca's own --days check), not 1.
    for days in ("0", "36501", "x"):
        result = _run_generate(tmp_path / "c", "--days", days)
        assert result.returncode == 2 and "--days" in result.stderr, (days, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    result = _run_generate(tmp_path / "c", "--days", "0", "--if-missing")
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "c").exists()


def _handshake(cert_dir: Path, server_name: str) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out_bio, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out_bio.read())
    client.do_handshake()


@pytest.mark.process
@pytest.mark.parametrize("name", ["admission.platform.svc", "admission.platform.svc.cluster.local",
                                  "admission", "localhost", "127.0.0.1"])
def test_client_verifying_against_ca_accepts_service_names(tmp_path: Path, name: str) -> None:
    _run_generate(tmp_path / "c")
    _handshake(tmp_path / "c", name)


@pytest.mark.process
@pytest.mark.parametrize("name", ["other.platform.svc", "admission.other.svc", "example.com", "127.0.0.2"])
def test_client_verifying_against_ca_rejects_other_names(tmp_path: Path, name: str) -> None:
    _run_generate(tmp_path / "c")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path / "c", name)


@pytest.mark.process
def test_ip_san_is_an_ip_not_a_dns_name(tmp_path: Path) -> None:
    _run_generate(tmp_path / "c")
    dns, ips = _sans(tmp_path / "c" / "tls.crt")
    assert "127.0.0.1" not in dns and ipaddress.ip_address(ips[0]).is_loopback


def test_expiry_read_without_cryptography_matches_cryptography(tmp_path: Path) -> None:
    import glob
    import warnings
    from datetime import datetime, timezone

    from webhook.pki.certs import generate
    from webhook.runtime.tls import certificate_not_after

    generate(tmp_path, service="s", namespace="n", days=3, now=datetime(2049, 12, 31, tzinfo=timezone.utc))
    paths = [tmp_path / "tls.crt", tmp_path / "ca.crt", *map(Path, sorted(glob.glob("/etc/ssl/certs/*.pem"))[:50])]
    for path in paths:  # 2050+ is GeneralizedTime, earlier UTCTime; system CAs vary widely
        pem = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        assert certificate_not_after(pem) == expected, path


def test_a_certificate_chain_in_tls_crt_is_served(tmp_path: Path) -> None:
    from webhook.pki.certs import generate
    from webhook.runtime.tls import ServingCertificate

    generate(tmp_path, service="s", namespace="n")
    leaf = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    (tmp_path / "tls.crt").write_bytes((tmp_path / "tls.crt").read_bytes() + (tmp_path / "ca.crt").read_bytes())
    assert ServingCertificate(tmp_path).not_after == leaf.not_valid_after_utc
