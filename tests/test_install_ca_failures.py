"""`webhook install-ca` when things go wrong: CA rotation, a write failing part-way,
concurrent runs, and an API server whose clock differs from the Job's.

The invariant throughout: every certificate a replica may be serving (the one in the
Secret, or the one before it until the kubelet syncs the volume) verifies, as the API
server checks it, against the caBundle of every webhook. Run against the in-process
fake API server (tests/fake_apiserver.py), not a real cluster.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification

from tests.fake_apiserver import FakeApiServer
# `fake`: the fake API server holding the shipped webhook configurations (a fixture).
from tests.test_cluster import CONFIG_KINDS, NS, SERVICE_NAME, fake, webhook_configurations  # noqa: F401
from webhook.pki.certs import generate
from webhook.kube.client import ClusterError, load_api_client
from webhook.pki import install_ca as install_module
from webhook.pki.install_ca import install_ca

CONFIG = "pod-runtime-webhook"


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_module, "_sleep", lambda seconds: None)


@pytest.fixture
def api(fake: FakeApiServer, tmp_path: Path) -> Iterator[object]:
    with load_api_client(fake.write_kubeconfig(tmp_path / "kubeconfig")) as client:
        yield client


def bundles(fake: FakeApiServer) -> list[bytes]:
    """The decoded caBundle of every webhook of both configurations (b"" when unset)."""
    out = []
    for kind in CONFIG_KINDS:
        for webhook in fake.get(kind, CONFIG)["webhooks"]:
            out.append(base64.b64decode((webhook.get("clientConfig") or {}).get("caBundle") or ""))
    return out


def served(fake: FakeApiServer) -> x509.Certificate:
    obj = fake.get("secrets", "webhook-tls", NS)
    assert obj is not None
    return x509.load_pem_x509_certificate(base64.b64decode(obj["data"]["tls.crt"]))


def trusts(bundle: bytes, cert: x509.Certificate, at: datetime | None = None) -> bool:
    """Whether a TLS client trusting `bundle` accepts `cert` for the service name at `at`."""
    if not bundle:
        return False
    store = verification.Store(x509.load_pem_x509_certificates(bundle))
    verifier = (verification.PolicyBuilder().store(store).time(at or datetime.now(timezone.utc))
                .build_server_verifier(verification.DNSName(SERVICE_NAME)))
    try:
        verifier.verify(cert, [])
    except verification.VerificationError:
        return False
    return True


def watch_trust(fake: FakeApiServer, *certs: x509.Certificate) -> list[str]:
    """After every write, record any webhook whose caBundle does not trust one of `certs`
    or the certificate then in the Secret (the ones replicas may be serving)."""
    breaches: list[str] = []

    def check(verb: str, resource: str, _ns: str, name: str) -> None:
        serving = [*certs]
        if fake.get("secrets", "webhook-tls", NS) is not None:
            serving.append(served(fake))
        for bundle in bundles(fake):
            for cert in serving:
                if not trusts(bundle, cert):
                    breaches.append(f"after {verb} {resource} {name}: certificate {cert.serial_number} "
                                    "not trusted by a caBundle")

    fake.after_write.append(check)
    return breaches


def test_rotating_the_ca_never_leaves_a_served_certificate_untrusted(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS)
    old_ca, old_cert = bundles(fake)[0], served(fake)

    # The documented rotation: delete both Secrets and run again.
    fake.remove("secrets", "webhook-ca", NS)
    fake.remove("secrets", "webhook-tls", NS)
    breaches = watch_trust(fake, old_cert)   # replicas serve old_cert until the kubelet syncs
    rotated = install_ca(api, namespace=NS)
    assert rotated.ca == "created"
    assert breaches == []
    new_cert = served(fake)
    assert new_cert.issuer == old_cert.issuer and new_cert.serial_number != old_cert.serial_number
    assert all(not trusts(old_ca, new_cert) and trusts(b, old_cert) and trusts(b, new_cert)
               for b in bundles(fake))
    assert any("previous CA" in w for w in rotated.warnings), rotated.warnings

    # Runs while the replicas may still be loading the new pair write nothing ...
    writes = len(fake.writes())
    again = install_ca(api, namespace=NS)
    assert not again.changed and len(fake.writes()) == writes
    # ... and a run once they have had ample time drops the old CA from the bundle.
    later = install_ca(api, namespace=NS, now=datetime.now(timezone.utc) + timedelta(hours=1))
    assert [c.action for c in later.configurations] == ["patched", "patched"]
    assert later.certificate == "reused" and later.secret_action == "unchanged"
    new_ca = base64.b64decode(later.ca_bundle)
    assert bundles(fake) == [new_ca, new_ca] and trusts(new_ca, new_cert) and not trusts(new_ca, old_cert)
    assert len(x509.load_pem_x509_certificates(new_ca)) == 1
    steady = install_ca(api, namespace=NS, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert not steady.changed


def test_a_lost_ca_secret_alone_is_rotated_without_an_outage(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS)
    old_cert = served(fake)
    fake.remove("secrets", "webhook-ca", NS)   # deleted by mistake; webhook-tls still there
    breaches = watch_trust(fake, old_cert)
    result = install_ca(api, namespace=NS)
    assert (result.ca, result.certificate, result.secret_action) == ("created", "renewed", "updated")
    assert breaches == []


@pytest.mark.parametrize("failing", ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"])
def test_a_failed_bundle_patch_during_rotation_leaves_the_old_pair_in_place(
        fake: FakeApiServer, api, failing: str) -> None:
    install_ca(api, namespace=NS)
    old_cert = served(fake)
    fake.remove("secrets", "webhook-ca", NS)
    breaches = watch_trust(fake, old_cert)
    fake.fail("patch", failing, CONFIG, code=500)
    with pytest.raises(ClusterError, match="500"):
        install_ca(api, namespace=NS)
    # The Secret the replicas mount still holds a pair every caBundle trusts.
    assert served(fake).serial_number == old_cert.serial_number
    assert breaches == []

    done = install_ca(api, namespace=NS)     # the Job's next attempt completes it
    assert done.ca == "reused" and done.secret_action == "updated"
    assert breaches == []
    assert all(trusts(b, served(fake)) for b in bundles(fake))


def test_a_failed_secret_write_during_rotation_is_completed_by_the_next_run(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS)
    old_cert = served(fake)
    fake.remove("secrets", "webhook-ca", NS)
    breaches = watch_trust(fake, old_cert)
    fake.fail("patch", "secrets", "webhook-tls", code=503, reason="ServiceUnavailable")
    with pytest.raises(ClusterError, match="patch Secret webhook-system/webhook-tls: 503"):
        install_ca(api, namespace=NS)
    done = install_ca(api, namespace=NS)
    assert (done.ca, done.certificate) == ("reused", "renewed")
    assert breaches == [] and all(trusts(b, served(fake)) for b in bundles(fake))


def test_certificates_are_dated_by_the_api_servers_clock(fake: FakeApiServer, api) -> None:
    # The Job's node runs ten minutes ahead of the API server (the party that checks
    # notBefore): a certificate dated by the node's clock is "not yet valid" there.
    fake.clock_offset = -timedelta(minutes=10)
    result = install_ca(api, namespace=NS)
    apiserver_now = datetime.now(timezone.utc) - timedelta(minutes=10)
    cert = served(fake)
    assert cert.not_valid_before_utc <= apiserver_now
    assert all(trusts(b, cert, at=apiserver_now) for b in bundles(fake))
    assert any("clock" in w for w in result.warnings), result.warnings


def test_a_certificate_not_yet_valid_is_reissued(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS, now=datetime.now(timezone.utc) + timedelta(minutes=8))
    assert served(fake).not_valid_before_utc > datetime.now(timezone.utc)
    result = install_ca(api, namespace=NS)
    assert result.certificate == "renewed" and "not valid before" in result.reason
    assert served(fake).not_valid_before_utc <= datetime.now(timezone.utc)


def _other_runs_ca() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), service="webhook", namespace=NS)
        data = {k: base64.b64encode((Path(tmp) / k).read_bytes()).decode() for k in ("ca.crt", "ca.key")}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "webhook-ca", "namespace": NS}, "data": data}


def test_two_first_runs_at_once_agree_on_one_ca(fake: FakeApiServer, api) -> None:
    # Another run creates the CA Secret between this run's read (404) and its create.
    other = _other_runs_ca()

    def race(verb: str, resource: str, _ns: str, _name: str) -> None:
        if (verb, resource) == ("create", "secrets") and fake.get("secrets", "webhook-ca", NS) is None:
            fake.put(other)

    fake.before_request = race
    result = install_ca(api, namespace=NS)
    assert result.ca == "reused"
    their_ca = base64.b64decode(other["data"]["ca.crt"])
    assert bundles(fake) == [their_ca, their_ca] and trusts(their_ca, served(fake))


def test_a_concurrent_renewal_is_not_an_error(fake: FakeApiServer, api, tmp_path: Path) -> None:
    install_ca(api, namespace=NS, now=datetime.now(timezone.utc) - timedelta(days=350))
    raced = []

    def race(verb: str, resource: str, _ns: str, name: str) -> None:
        if (verb, resource, name) == ("patch", "secrets", "webhook-tls") and not raced:
            raced.append(True)
            obj = fake.get("secrets", "webhook-tls", NS)
            obj["metadata"]["labels"]["touched-by"] = "the-other-run"
            fake.put(obj)   # a new resourceVersion: this run's guarded patch fails

    fake.before_request = race
    result = install_ca(api, namespace=NS)
    assert raced and result.certificate == "renewed"
    assert served(fake).not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=300)


def test_a_webhook_inserted_concurrently_still_gets_the_bundle(fake: FakeApiServer, api) -> None:
    inserted = []

    def race(verb: str, resource: str, _ns: str, name: str) -> None:
        if (verb, resource) == ("patch", "validatingwebhookconfigurations") and not inserted:
            inserted.append(True)
            obj = fake.get(resource, name)
            first = {**obj["webhooks"][0], "name": "first.runtime.platform.io"}
            first["clientConfig"] = {k: v for k, v in first["clientConfig"].items() if k != "caBundle"}
            obj["webhooks"].insert(0, first)
            fake.put(obj)   # the name `test` on index 0 fails

    fake.before_request = race
    result = install_ca(api, namespace=NS)
    assert inserted and [c.total for c in result.configurations] == [1, 2]
    assert all(trusts(b, served(fake)) for b in bundles(fake))


def test_a_missing_configuration_does_not_keep_the_other_from_its_bundle(fake: FakeApiServer, api) -> None:
    fake.remove("mutatingwebhookconfigurations", CONFIG)   # deleted, or renamed by a new manifest
    with pytest.raises(ClusterError, match=f"get MutatingWebhookConfiguration {CONFIG}: 404 Not Found"):
        install_ca(api, namespace=NS)
    # Everything else is done: the validating webhook trusts the pair the Secret holds.
    validating = fake.get("validatingwebhookconfigurations", CONFIG)["webhooks"]
    assert trusts(base64.b64decode(validating[0]["clientConfig"]["caBundle"]), served(fake))


def test_a_missing_configuration_does_not_hold_back_a_renewal(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS, now=datetime.now(timezone.utc) - timedelta(days=350))
    old_cert = served(fake)
    fake.remove("validatingwebhookconfigurations", CONFIG)
    with pytest.raises(ClusterError, match=f"get ValidatingWebhookConfiguration {CONFIG}: 404"):
        install_ca(api, namespace=NS)
    renewed = served(fake)
    assert renewed.serial_number != old_cert.serial_number
    assert renewed.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=300)


def test_a_configuration_that_cannot_be_read_holds_back_a_new_ca(fake: FakeApiServer, api) -> None:
    install_ca(api, namespace=NS)
    old_cert = served(fake)
    fake.remove("secrets", "webhook-ca", NS)
    breaches = watch_trust(fake, old_cert)
    fake.fail("get", "validatingwebhookconfigurations", CONFIG, code=403, reason="Forbidden",
              message="forbidden")
    with pytest.raises(ClusterError, match="ValidatingWebhookConfiguration .*403"):
        install_ca(api, namespace=NS)
    # Its caBundle may not trust the new CA: the replicas keep the pair it does trust.
    assert served(fake).serial_number == old_cert.serial_number and breaches == []
    install_ca(api, namespace=NS)
    assert breaches == [] and served(fake).serial_number != old_cert.serial_number


def test_a_new_ca_has_time_to_reach_the_api_servers_before_its_pair_is_stored(
        fake: FakeApiServer, api, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(install_module, "_sleep", lambda seconds: events.append(f"wait {seconds:g}s"))
    fake.after_write.append(lambda verb, resource, _ns, name: events.append(f"{verb} {resource} {name}"))
    install_ca(api, namespace=NS)
    assert not any(e.startswith("wait") for e in events)   # a first install has nothing to wait for
    events.clear()
    fake.remove("secrets", "webhook-ca", NS)
    install_ca(api, namespace=NS)
    assert events == ["create secrets ", f"patch mutatingwebhookconfigurations {CONFIG}",
                      f"patch validatingwebhookconfigurations {CONFIG}", "wait 10s", "patch secrets webhook-tls"]


def test_a_renewal_window_as_long_as_the_ca_is_refused() -> None:
    from webhook.pki.install_ca import check_install_args
    with pytest.raises(ValueError, match="less than the CA's 3650 days"):
        check_install_args(days=36500, renew_before_days=3650)
    check_install_args(days=36500, renew_before_days=3649)


def test_a_rotation_needs_only_the_overlays_rbac(tmp_path: Path) -> None:
    from tests.test_cluster import install_ca_rules
    with FakeApiServer(rbac=install_ca_rules()) as server:
        for obj in webhook_configurations():
            server.put(obj)
        with load_api_client(server.write_kubeconfig(tmp_path / "kc")) as client:
            install_ca(client, namespace=NS)
            renewed = install_ca(client, namespace=NS, now=datetime.now(timezone.utc) + timedelta(days=3640))
            assert renewed.ca == "renewed"
            server.remove("secrets", "webhook-ca", NS)
            assert install_ca(client, namespace=NS).ca == "created"
        assert not any(r for r in server.requests if r[1] == "secrets" and r[0] not in ("get", "create", "patch"))
