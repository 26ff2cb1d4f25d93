"""`webhook install-ca` and `webhook report` against the in-process fake API server.

These cover the commands against tests/fake_apiserver.py, a fake of the few
endpoints they use; no real cluster is involved.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from cryptography import x509

from tests.apiserver import ApiServerClient
from tests.conftest import ROOT, SHIPPED_POLICIES, copy_policies
from tests.fake_apiserver import FakeApiServer, rules_from_manifests
from webhook.cli.report import report
from webhook.kube import client as kube_client
from webhook.kube.client import ClusterError, load_api_client
from webhook.pki import install_ca as install_module
from webhook.pki.install_ca import install_ca
from webhook.engine.inject import inject
from webhook.engine.ledger import LEDGER_ANNOTATION
from webhook.policy.loader import load_policy_dir

NS = "webhook-system"
SERVICE_NAME = "webhook.webhook-system.svc"
CONFIG_KINDS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
INSTALL_CA_MANIFEST = ROOT / "manifests" / "overlays" / "self-managed" / "install-ca.yaml"


def webhook_configurations() -> list[dict[str, Any]]:
    base = ROOT / "manifests" / "base"
    return [yaml.safe_load((base / f).read_text())
            for f in ("mutatingwebhookconfiguration.yaml", "validatingwebhookconfiguration.yaml")]


def install_ca_rules() -> list:
    """The RBAC the self-managed overlay gives the install-ca Job's ServiceAccount."""
    documents = [d for d in yaml.safe_load_all(INSTALL_CA_MANIFEST.read_text()) if d]
    job = next(d for d in documents if d["kind"] == "Job")
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    rules = rules_from_manifests(documents, account, job["metadata"]["namespace"])
    assert rules, "no Role/ClusterRole bound to the install-ca ServiceAccount"
    return rules


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        for obj in webhook_configurations():
            server.put(obj)
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**base, **(env or {})})


def secret_data(fake: FakeApiServer, name: str) -> dict[str, bytes]:
    obj = fake.get("secrets", name, NS)
    assert obj is not None, f"Secret {name} missing"
    return {k: base64.b64decode(v) for k, v in obj["data"].items()}


def ca_bundles(fake: FakeApiServer) -> list[str]:
    out = []
    for kind in CONFIG_KINDS:
        obj = fake.get(kind, "pod-runtime-webhook")
        out += [w.get("clientConfig", {}).get("caBundle") for w in obj["webhooks"]]
    return out


def serving_cert(fake: FakeApiServer) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secret_data(fake, "webhook-tls")["tls.crt"])


# -- install-ca -----------------------------------------------------------------------------

def test_install_ca_from_scratch_and_the_served_certificate_verifies(
        fake: FakeApiServer, kubeconfig: Path, tmp_path: Path, start_server) -> None:
    result = run("install-ca", "--namespace", NS, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert "CA: created" in result.stdout
    assert "serving certificate: created" in result.stdout
    assert "Secret webhook-system/webhook-tls: created" in result.stdout
    assert result.stdout.count(": patched (caBundle set on 1 of 1 webhook(s))") == 2

    ca = secret_data(fake, "webhook-ca")
    assert set(ca) == {"ca.crt", "ca.key"}
    tls_secret = fake.get("secrets", "webhook-tls", NS)
    assert tls_secret["type"] == "kubernetes.io/tls"
    tls = secret_data(fake, "webhook-tls")
    assert set(tls) == {"tls.crt", "tls.key", "ca.crt"} and tls["ca.crt"] == ca["ca.crt"]
    assert ca_bundles(fake) == [base64.b64encode(ca["ca.crt"]).decode()] * 2

    # The pair from the Secret, served by the webhook itself, verifies against the
    # caBundle for the service name the API server dials.
    cert_dir = tmp_path / "mounted"
    cert_dir.mkdir()
    for key, value in tls.items():   # as the Secret volume mounts it
        (cert_dir / key).write_bytes(value)
    bundle_file = tmp_path / "bundle.pem"
    bundle_file.write_bytes(base64.b64decode(ca_bundles(fake)[0]))
    server = start_server(cert_dir=cert_dir)
    client = ApiServerClient(server.port, bundle_file, server_name=SERVICE_NAME)
    assert client.request("GET", "/readyz").status == 200
    assert client.admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "app", "image": "r.io/a:1"}]}}).allowed


@pytest.mark.process
def test_second_run_changes_nothing(fake: FakeApiServer, kubeconfig: Path) -> None:
    assert run("install-ca", "-n", NS, "--kubeconfig", str(kubeconfig)).returncode == 0
    before = {name: fake.get("secrets", name, NS) for name in ("webhook-ca", "webhook-tls")}
    configs = {kind: fake.get(kind, "pod-runtime-webhook") for kind in CONFIG_KINDS}
    writes = len(fake.writes())

    again = run("install-ca", "-n", NS, "--kubeconfig", str(kubeconfig))
    assert again.returncode == 0, again.stderr
    assert "CA: reused" in again.stdout and "serving certificate: reused" in again.stdout
    assert "webhook-tls: unchanged" in again.stdout
    assert again.stdout.count(": unchanged (caBundle already current") == 2
    assert len(fake.writes()) == writes, fake.writes()[writes:]
    assert {name: fake.get("secrets", name, NS) for name in before} == before
    assert {kind: fake.get(kind, "pod-runtime-webhook") for kind in CONFIG_KINDS} == configs


@pytest.mark.process
def test_near_expiry_certificate_is_renewed_with_the_same_ca(fake: FakeApiServer, kubeconfig: Path) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(days=350)
    with load_api_client(kubeconfig) as api:
        first = install_ca(api, namespace=NS, now=long_ago)   # 365 days from then: 15 days left
    assert first.certificate == "created"
    old_cert, old_ca = serving_cert(fake), secret_data(fake, "webhook-ca")
    bundles = ca_bundles(fake)

    result = run("install-ca", "-n", NS, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert "CA: reused" in result.stdout
    assert "serving certificate: renewed (expires" in result.stdout and "within 30 days" in result.stdout
    assert "webhook-tls: updated" in result.stdout
    assert result.stdout.count(": unchanged (caBundle already current") == 2
    assert secret_data(fake, "webhook-ca") == old_ca and ca_bundles(fake) == bundles
    new_cert = serving_cert(fake)
    assert new_cert.serial_number != old_cert.serial_number
    assert new_cert.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=360)
    new_cert.verify_directly_issued_by(x509.load_pem_x509_certificate(old_ca["ca.crt"]))

    # With a shorter renewal window the same certificate is kept.
    with load_api_client(kubeconfig) as api:
        kept = install_ca(api, namespace=NS, now=datetime.now(timezone.utc) + timedelta(days=300),
                          renew_before_days=10)
    assert (kept.certificate, kept.secret_action, kept.changed) == ("reused", "unchanged", False)


@pytest.mark.slow
def test_a_ca_near_its_expiry_is_renewed_and_both_are_trusted_meanwhile(
        fake: FakeApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It used to be reused (with a warning) until it expired: each run then issued a
    # serving certificate capped at the CA's expiry, and none once it had expired.
    monkeypatch.setattr(install_module, "_sleep", lambda seconds: None)
    with load_api_client(kubeconfig) as api:
        install_ca(api, namespace=NS)
        old_ca = secret_data(fake, "webhook-ca")["ca.crt"]
        late = install_ca(api, namespace=NS, now=datetime.now(timezone.utc) + timedelta(days=3640))
    assert late.certificate == "renewed" and late.ca == "renewed"
    assert "the CA expires" in late.reason and "within 30 days" in late.reason
    new_ca = secret_data(fake, "webhook-ca")["ca.crt"]
    assert new_ca != old_ca
    assert late.not_after >= datetime.now(timezone.utc) + timedelta(days=3640 + 364)  # no longer capped
    serving_cert(fake).verify_directly_issued_by(x509.load_pem_x509_certificate(new_ca))
    assert set(ca_bundles(fake)) == {base64.b64encode(new_ca + old_ca).decode()}   # both, for the overlap
    assert any("also trusts the previous CA" in w for w in late.warnings)


def test_reissues_for_another_service_and_patches_a_stale_bundle(fake: FakeApiServer, kubeconfig: Path) -> None:
    with load_api_client(kubeconfig) as api:
        install_ca(api, namespace=NS)
        # Someone put another CA into the validating configuration and added a webhook.
        validating = fake.get("validatingwebhookconfigurations", "pod-runtime-webhook")
        validating["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(b"other").decode()
        second = copy.deepcopy(validating["webhooks"][0])
        second["name"] = "second.runtime.platform.io"
        del second["clientConfig"]["caBundle"]
        validating["webhooks"].append(second)
        fake.put(validating)

        result = install_ca(api, namespace=NS)
        assert [(c.kind, c.action, c.patched, c.total) for c in result.configurations] == [
            ("MutatingWebhookConfiguration", "unchanged", 0, 1),
            ("ValidatingWebhookConfiguration", "patched", 2, 2)]
        assert len(set(ca_bundles(fake))) == 1

        renamed = install_ca(api, namespace=NS, service="webhook-v2")
    assert renamed.certificate == "renewed" and "does not cover webhook-v2" in renamed.reason
    assert renamed.ca == "reused"
    sans = serving_cert(fake).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "webhook-v2.webhook-system.svc" in sans.get_values_for_type(x509.DNSName)


@pytest.mark.process
def test_install_ca_needs_only_the_overlays_rbac(kubeconfig: Path) -> None:
    rules = install_ca_rules()
    with FakeApiServer(rbac=rules) as fake:
        for obj in webhook_configurations():
            fake.put(obj)
        config = fake.write_kubeconfig(kubeconfig.parent / "rbac-kubeconfig")
        first = run("install-ca", "-n", NS, "--kubeconfig", str(config))
        assert first.returncode == 0, first.stderr
        assert run("install-ca", "-n", NS, "--kubeconfig", str(config)).returncode == 0
        with load_api_client(config) as api:   # a renewal patches the existing Secret
            later = datetime.now(timezone.utc) + timedelta(days=340)
            assert install_ca(api, namespace=NS, now=later).certificate == "renewed"
        verbs = {(verb, resource) for verb, resource, _, _ in fake.requests}
        assert verbs <= {("get", "secrets"), ("create", "secrets"), ("patch", "secrets"),
                         ("get", "mutatingwebhookconfigurations"), ("patch", "mutatingwebhookconfigurations"),
                         ("get", "validatingwebhookconfigurations"),
                         ("patch", "validatingwebhookconfigurations")}, verbs
        assert ("patch", "secrets") in verbs

        # The fake really enforces the rules: a Secret name outside them is refused.
        other = run("install-ca", "-n", NS, "--secret", "elsewhere", "--kubeconfig", str(config))
        assert other.returncode == 1
        assert other.stderr.count("\n") == 1
        assert "get Secret webhook-system/elsewhere: 403 Forbidden" in other.stderr
        in_other_ns = run("install-ca", "-n", "default", "--kubeconfig", str(config))
        assert in_other_ns.returncode == 1 and "403 Forbidden" in in_other_ns.stderr


@pytest.mark.process
def test_install_ca_errors_are_one_line(fake: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    missing = run("install-ca", "-n", NS, "--webhook-configuration", "nope", "--kubeconfig", str(kubeconfig))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "get MutatingWebhookConfiguration nope: 404 Not Found" in missing.stderr

    fake.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "broken-ca", "namespace": NS}, "data": {"ca.crt": "eA=="}})
    broken = run("install-ca", "-n", NS, "--ca-secret", "broken-ca", "--kubeconfig", str(kubeconfig))
    assert broken.returncode == 1 and "lacks ca.key" in broken.stderr and broken.stderr.count("\n") == 1

    usage = run("install-ca", "-n", NS, "--days", "20", "--kubeconfig", str(kubeconfig))
    assert usage.returncode == 2 and "--renew-before-days" in usage.stderr
    beyond = run("install-ca", "-n", NS, "--days", "999999999", "--kubeconfig", str(kubeconfig))
    assert beyond.returncode == 2 and beyond.stderr == "webhook install-ca: --days must be between 1 and 36500\n"

    no_config = run("install-ca", "-n", NS, "--kubeconfig", str(tmp_path / "absent"))
    assert no_config.returncode == 1 and no_config.stderr.count("\n") == 1
    assert "no usable cluster configuration" in no_config.stderr

    fake.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "opaque-tls", "namespace": NS}, "data": {}})
    with load_api_client(kubeconfig) as api, pytest.raises(ClusterError, match="has type 'Opaque'"):
        install_ca(api, namespace=NS, secret="opaque-tls")

    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        return  # these tests run in a pod: in-cluster configuration would load
    # As if in a pod, but without a mounted service account token.
    in_cluster = run("install-ca", "-n", NS, env={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                                  "KUBERNETES_SERVICE_PORT": "443"})
    assert in_cluster.returncode == 1 and in_cluster.stderr.count("\n") == 1
    assert "in-cluster" in in_cluster.stderr


@pytest.mark.process
def test_unreachable_api_server_gives_one_line_and_exit_1(tmp_path: Path) -> None:
    with FakeApiServer() as gone:
        config = gone.write_kubeconfig(tmp_path / "kubeconfig")
    for args in (["install-ca", "-n", NS], ["report"]):
        result = run(*args, "--kubeconfig", str(config))
        assert result.returncode == 1, result
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
        assert "cannot reach the API server at http://127.0.0.1:" in result.stderr
        assert "Traceback" not in result.stderr


# -- report -----------------------------------------------------------------------------------

def pod(name: str, namespace: str = "shop", *, phase: str = "Running", privileged: bool = False,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "registry.example.com/web:1.0",
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                               "limits": {"memory": "16Mi"}}}
    if privileged:
        container["securityContext"] = {"privileged": True}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name},
                         "annotations": dict(annotations or {})},
            "spec": {"containers": [container]}, "status": {"phase": phase}}


def injected(obj: dict[str, Any], policies_dir: Path = SHIPPED_POLICIES) -> dict[str, Any]:
    """The pod as it runs after the webhook admitted it with the current policies: the
    ServiceAccount plugin's token volume before the webhook, API defaults and status after."""
    obj = copy.deepcopy(obj)
    spec, phase = obj["spec"], obj.pop("status")["phase"]
    spec["serviceAccountName"] = "default"
    spec["volumes"] = [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]
    for container in spec["containers"]:
        container["volumeMounts"] = [{"name": "kube-api-access-x7k2p", "readOnly": True,
                                      "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    result = inject(obj, namespace=obj["metadata"]["namespace"], policies=load_policy_dir(policies_dir))
    assert result.denial is None and result.patch
    running = jsonpatch.apply_patch(obj, result.patch, in_place=False)
    spec = running["spec"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    spec.update({"nodeName": "node-1", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "schedulerName": "default-scheduler", "enableServiceLinks": True, "priority": 0,
                 "terminationGracePeriodSeconds": 30, "preemptionPolicy": "PreemptLowerPriority"})
    spec.setdefault("securityContext", {})
    running["status"] = {"phase": phase, "podIP": "10.0.0.7", "qosClass": "Burstable",
                         "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0}
                                               for c in spec["containers"]]}
    return running


def with_ledger(obj: dict[str, Any], edit) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    ledger = json.loads(obj["metadata"]["annotations"][LEDGER_ANNOTATION])
    edit(ledger)
    obj["metadata"]["annotations"][LEDGER_ANNOTATION] = json.dumps(ledger)
    return obj


@pytest.fixture
def cluster_pods(fake: FakeApiServer, tmp_path: Path) -> dict[str, str]:
    """Pods in the fake; returns {pod name: expected status(es)}."""
    policies = load_policy_dir(SHIPPED_POLICIES)
    before_log_shipper = copy_policies(tmp_path / "before-log-shipper")
    (before_log_shipper / "inject-log-shipper.yaml").unlink()
    identity = next(p for p in policies.injectors if p.name == "identity")

    def old_identity(ledger: dict[str, Any]) -> None:
        for record in ledger["policies"]:
            if record["name"] == "identity":
                record["revision"] = "0123456789ab"

    def retired_policy(ledger: dict[str, Any]) -> None:
        ledger["policies"].append({"name": "retired-agent", "revision": "feedfacecafe"})

    fake.put(injected(pod("current")))
    fake.put(with_ledger(injected(pod("stale")), old_identity))
    # Injected by an older identity revision with another agent image: stale, not a denial.
    older_image = with_ledger(injected(pod("stale-image")), old_identity)
    older_image["spec"]["initContainers"][0]["image"] = "registry.platform.internal/runtime/identity-agent:1.7.0"
    fake.put(older_image)
    fake.put(with_ledger(injected(pod("retired")), retired_policy))
    fake.put(pod("uninjected"))
    fake.put(injected(pod("before-log-shipper"), before_log_shipper))  # admitted before it existed
    own_shipper = injected(pod("own-shipper"), before_log_shipper)
    own_shipper["spec"]["containers"].append({"name": "log-shipper", "image": "registry.example.com/ls:1"})
    fake.put(own_shipper)  # injection would now refuse it: its container takes the policy's name
    fake.put(injected(pod("privileged", privileged=True)))
    fake.put(with_ledger(injected(pod("stale-privileged", privileged=True)), old_identity))
    fake.put(with_ledger(injected(pod("finished", phase="Succeeded")), old_identity))
    fake.put(pod("crashed", phase="Failed", privileged=True))
    fake.put(pod("proxy", namespace="kube-system", privileged=True))  # excluded by the policies
    fake.put(injected(pod("current", namespace="team-a")))
    assert identity.revision != "0123456789ab"
    # "stale" and "stale-privileged" name an older identity revision but have what it renders
    # now: the edit changed nothing for them, so they are current.
    return {"stale-image": "stale", "retired": "stale", "uninjected": "stale", "before-log-shipper": "stale",
            "own-shipper": "would-deny", "privileged": "would-deny", "stale-privileged": "would-deny"}


@pytest.mark.process
def test_report_json_lists_stale_and_would_deny_pods(fake: FakeApiServer, kubeconfig: Path,
                                                     cluster_pods: dict[str, str]) -> None:
    result = run("report", "--policies", str(SHIPPED_POLICIES), "-o", "json", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(set(r) >= {"namespace", "pod", "status", "detail"} for r in rows)
    found: dict[str, list[str]] = {}
    for row in rows:
        assert row["namespace"] == "shop", row
        found.setdefault(row["pod"], []).append(row["status"])
    assert {name: ",".join(statuses) for name, statuses in found.items()} == cluster_pods

    by_pod = {(r["pod"], r["status"]): r for r in rows}
    revision = next(p.revision for p in load_policy_dir(SHIPPED_POLICIES).injectors if p.name == "identity")
    stale = by_pod[("stale-image", "stale")]
    image = next(c["image"] for c in injected(pod("x"))["spec"]["initContainers"] if c["name"] == "identity-init")
    assert stale["detail"] == (f"identity renders differently now (pod at revision 0123456789ab, current {revision})"
                               f" (images only: identity-init={image})")
    assert stale["policies"] == [{"policy": "identity", "reason": "changed", "podRevision": "0123456789ab",
                                  "currentRevision": revision, "inPlace": {"identity-init": image}}]
    assert "retired-agent is no longer in the policy set" in by_pod[("retired", "stale")]["detail"]
    missing = by_pod[("uninjected", "stale")]["policies"]
    assert {m["policy"] for m in missing} == {"identity", "traffic-proxy", "log-shipper"}
    assert {m["reason"] for m in missing} == {"missing"}
    assert by_pod[("before-log-shipper", "stale")]["policies"] == [
        {"policy": "log-shipper", "reason": "missing", "currentRevision": next(
            p.revision for p in load_policy_dir(SHIPPED_POLICIES).injectors if p.name == "log-shipper")}]
    assert by_pod[("before-log-shipper", "stale")]["detail"] == "log-shipper would apply but is not injected"
    conflict = by_pod[("own-shipper", "would-deny")]
    assert conflict["detail"].startswith("injection (log-shipper): policy log-shipper injects container")
    assert conflict["violations"][0]["rule"] == "injection"
    deny = by_pod[("privileged", "would-deny")]
    assert "pod-security-baseline" in deny["detail"] and "privileged" in deny["detail"]
    assert deny["violations"][0]["policy"] == "pod-security-baseline"


@pytest.mark.process
def test_report_table_and_namespace_scope(fake: FakeApiServer, kubeconfig: Path,
                                          cluster_pods: dict[str, str]) -> None:
    table = run("report", "--policies", str(SHIPPED_POLICIES), "--kubeconfig", str(kubeconfig))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "STATUS", "DETAIL"]
    cells = [line.split(None, 3) for line in lines[1:]]
    assert {(c[1], c[2]) for c in cells} == {(name, status) for name, statuses in cluster_pods.items()
                                             for status in statuses.split(",")}
    assert all(c[2] != "ok" for c in cells)
    assert "running pod(s) in all namespaces" in table.stderr

    listed = fake.requests[-1]
    assert listed[:3] == ("list", "pods", "")
    empty = run("report", "-n", "team-a", "--policies", str(SHIPPED_POLICIES), "--kubeconfig", str(kubeconfig))
    assert empty.returncode == 0 and empty.stdout == ""
    assert fake.requests[-1][:3] == ("list", "pods", "team-a")
    assert "1 running pod(s) in namespace team-a; 0 with findings" in empty.stderr


def test_report_function_pages_through_the_list(fake: FakeApiServer, kubeconfig: Path,
                                                cluster_pods: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_client, "_PAGE", 2)
    policies = load_policy_dir(SHIPPED_POLICIES)
    with load_api_client(kubeconfig) as api:
        result = report(api, policies, namespace="shop")
    assert result.pods == 9  # 11 pods in shop, minus the Succeeded and the Failed one
    assert len([r for r in fake.requests if r[0] == "list"]) == 6
    assert {(f.pod, f.status) for f in result.findings} >= {("privileged", "would-deny"), ("stale-image", "stale")}
    assert result.policy_revision == policies.revision


@pytest.mark.process
def test_report_errors(fake: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    bad = tmp_path / "policies"
    bad.mkdir()
    (bad / "broken.yaml").write_text("apiVersion: runtime.platform.io/v1\nkind: Nope\n")
    invalid = run("report", "--policies", str(bad), "--kubeconfig", str(kubeconfig))
    assert invalid.returncode == 1 and "invalid policies" in invalid.stderr

    forbidden = FakeApiServer(rbac=install_ca_rules()).start()
    try:
        config = forbidden.write_kubeconfig(tmp_path / "forbidden")
        result = run("report", "--policies", str(SHIPPED_POLICIES), "--kubeconfig", str(config))
    finally:
        forbidden.stop()
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "list pods in all namespaces: 403 Forbidden" in result.stderr


def test_client_errors_surface_as_cluster_errors(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no usable cluster configuration"):
        load_api_client(tmp_path / "missing")


@pytest.mark.process
def test_a_malformed_kubeconfig_is_one_line_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "kc"
    broken.write_text("apiVersion: v1\nclusters: [\n")
    for args, env in ((["report", "--kubeconfig", str(broken)], None),
                      (["install-ca", "-n", NS], {"KUBECONFIG": str(broken)})):
        result = run(*args, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"no usable cluster configuration (kubeconfig {broken}:3): invalid YAML" in result.stderr
