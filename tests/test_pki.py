"""The PKI on bytes (webhook.pki.certs: PEM in, PEM out), as install-ca uses it: no key
is ever written to disk, and every reason to replace a serving pair is told apart."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509

from webhook.pki.certs import (
    CA_DAYS,
    ServingPair,
    issue_serving,
    issued_by,
    load_ca,
    new_ca,
    service_dns_names,
    uncovered_names,
    why_reissue,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
NAMES = service_dns_names("webhook", "webhook-system")
CA = new_ca(service="webhook", namespace="webhook-system", now=NOW)
OTHER_CA = new_ca(service="webhook", namespace="webhook-system", now=NOW)


def test_a_ca_round_trips_through_its_pem() -> None:
    loaded = load_ca(CA.cert_pem, CA.key_pem)
    assert loaded.cert == CA.cert and loaded.cert_pem == CA.cert_pem
    assert loaded.cert.not_valid_after_utc == NOW + timedelta(days=CA_DAYS)


@pytest.mark.parametrize(("cert_pem", "key_pem", "message"), [
    (CA.cert_pem, OTHER_CA.key_pem, "ca.key does not match ca.crt"),
    (b"not a certificate", CA.key_pem, "unreadable CA"),
    (CA.cert_pem, b"", "unreadable CA"),
])
def test_a_broken_ca_is_refused(cert_pem: bytes, key_pem: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_ca(cert_pem, key_pem)


def test_a_serving_pair_is_issued_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the PKI must not touch the disk")
    monkeypatch.setattr(builtins, "open", no_disk)
    monkeypatch.setattr(os, "open", no_disk)
    ca = new_ca(service="webhook", namespace="webhook-system", now=NOW)
    pair = issue_serving(ca, dns_names=NAMES, now=NOW, days=30)
    monkeypatch.undo()
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert issued_by(cert, ca.cert) and uncovered_names(cert, NAMES) == []
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert why_reissue(pair.cert_pem, pair.key_pem, ca.cert, NAMES, now=NOW, renew_before=timedelta(days=7)) == ""


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    pair = issue_serving(CA, dns_names=NAMES, now=NOW, days=CA_DAYS + 100)
    assert x509.load_pem_x509_certificate(pair.cert_pem).not_valid_after_utc == CA.cert.not_valid_after_utc


def _pair(**kwargs: Any) -> ServingPair:
    return issue_serving(kwargs.pop("ca", CA), dns_names=kwargs.pop("names", NAMES), now=kwargs.pop("now", NOW),
                         days=kwargs.pop("days", 365))


FRESH = _pair()
REASONS: list[tuple[str, Callable[[], tuple[bytes, bytes]], str]] = [
    ("fresh", lambda: (FRESH.cert_pem, FRESH.key_pem), ""),
    ("garbage", lambda: (b"x", FRESH.key_pem), "unreadable tls.crt or tls.key"),
    ("key of another pair", lambda: (FRESH.cert_pem, _pair().key_pem), "tls.key does not match tls.crt"),
    ("another CA", lambda: (lambda p: (p.cert_pem, p.key_pem))(_pair(ca=OTHER_CA)), "not issued by the current CA"),
    ("names missing", lambda: (lambda p: (p.cert_pem, p.key_pem))(_pair(names=NAMES[:3])),
     "does not cover webhook.webhook-system.svc.cluster.local, localhost"),
    ("issued ahead of the clock", lambda: (lambda p: (p.cert_pem, p.key_pem))(_pair(now=NOW + timedelta(hours=1))),
     "not valid before 2026-06-01 12:55 UTC"),
    ("expiring", lambda: (lambda p: (p.cert_pem, p.key_pem))(_pair(days=5)), "expires 2026-06-06 (within 7 days)"),
]


@pytest.mark.parametrize(("make", "reason"), [(m, r) for _, m, r in REASONS], ids=[n for n, _, _ in REASONS])
def test_why_reissue(make: Callable[[], tuple[bytes, bytes]], reason: str) -> None:
    cert_pem, key_pem = make()
    assert why_reissue(cert_pem, key_pem, CA.cert, NAMES, now=NOW, renew_before=timedelta(days=7)) == reason
