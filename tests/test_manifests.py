"""The deployment manifests: valid against the Kubernetes schemas, self-excluding, restricted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from webhook.rules.pod_security import check_pod_spec

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
# Schemas of the oldest Kubernetes version we support (native sidecars are GA in 1.33).
KUBERNETES_VERSION = "1.33.0"
CRD_GROUPS = ("cert-manager.io/",)  # custom resources: no schema in the Kubernetes OpenAPI


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or "policies" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.relative_to(MANIFESTS)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCUMENTS = _documents()


def _find(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(("where", "doc"), DOCUMENTS, ids=[w for w, _ in DOCUMENTS])
def test_manifest_validates_against_the_kubernetes_schema(where: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith(CRD_GROUPS):
        assert doc["spec"], where
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_webhooks_own_pod_passes_restricted() -> None:
    template = _find("Deployment", "webhook")["spec"]["template"]
    assert check_pod_spec(template["metadata"], template["spec"], level="restricted") == []
    job = _find("Job", "webhook-install-ca")["spec"]["template"]
    assert check_pod_spec(job.get("metadata", {}), job["spec"], level="restricted") == []
    renewal = _find("CronJob", "webhook-renew-certificate")["spec"]["jobTemplate"]["spec"]["template"]
    assert check_pod_spec(renewal.get("metadata", {}), renewal["spec"], level="restricted") == []


def test_the_serving_certificate_is_renewed_by_the_same_command_and_account() -> None:
    # A one-off Job alone would leave the certificate to expire after --days (365).
    job = _find("Job", "webhook-install-ca")["spec"]["template"]["spec"]
    cron = _find("CronJob", "webhook-renew-certificate")["spec"]
    renewal = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert renewal["containers"][0]["command"] == job["containers"][0]["command"]
    assert renewal["serviceAccountName"] == job["serviceAccountName"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert len(cron["schedule"].split()) == 5 and cron["schedule"].split()[2:4] == ["*", "*"]  # weekly or more


@pytest.mark.parametrize(("kind", "label"), [("MutatingWebhookConfiguration", "runtime.platform.io/injection"),
                                           ("ValidatingWebhookConfiguration", "runtime.platform.io/validation")])
def test_webhook_configurations_exclude_their_own_and_system_namespaces(kind: str, label: str) -> None:
    for hook in _find(kind, "pod-runtime-webhook")["webhooks"]:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        by_name = next(e for e in expressions if e["key"] == "kubernetes.io/metadata.name")
        assert by_name["operator"] == "NotIn"
        assert {"kube-system", "kube-node-lease", "webhook-system"} <= set(by_name["values"])
        # Each webhook has its own opt-out label: turning injection off for a namespace
        # must not also turn off its Pod Security checks.
        labels = [e for e in expressions if e["key"].startswith("runtime.platform.io/")]
        assert labels == [{"key": label, "operator": "NotIn", "values": ["disabled"]}]
        assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
        assert hook["clientConfig"]["service"]["namespace"] == "webhook-system"
        assert hook["timeoutSeconds"] <= 10


def test_mutating_webhook_reinvocation_and_scope() -> None:
    hook = _find("MutatingWebhookConfiguration", "pod-runtime-webhook")["webhooks"][0]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]


def test_validating_webhook_covers_controllers_and_ephemeral_containers() -> None:
    hook = _find("ValidatingWebhookConfiguration", "pod-runtime-webhook")["webhooks"][0]
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    assert {"pods", "pods/ephemeralcontainers", "replicationcontrollers", "deployments", "replicasets",
            "statefulsets", "daemonsets", "jobs", "cronjobs"} <= resources


def test_deployment_is_highly_available() -> None:
    deployment = _find("Deployment", "webhook")
    assert deployment["spec"]["replicas"] >= 2
    budget = _find("PodDisruptionBudget", "webhook")["spec"]
    assert budget["minAvailable"] == 1 and budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    spec = deployment["spec"]["template"]["spec"]
    assert all(c.get("nodeTaintsPolicy") == "Honor" for c in spec["topologySpreadConstraints"]
               if c["whenUnsatisfiable"] == "DoNotSchedule")
    container = spec["containers"][0]
    # Workers said outright and within the limits: each needs about 64 MiB.
    env = {e["name"]: e["value"] for e in container["env"]}
    limits = container["resources"]["limits"]
    assert int(env["WEBHOOK_WORKERS"]) <= int(limits["cpu"])
    assert int(limits["memory"].removesuffix("Mi")) >= 64 * (int(env["WEBHOOK_WORKERS"]) + 1)
    if spec.get("priorityClassName") == "system-cluster-critical":
        quota = _find("ResourceQuota", "webhook-critical-pods")["spec"]
        assert quota["scopeSelector"]["matchExpressions"][0]["values"] == ["system-cluster-critical"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_namespace_opts_itself_out_of_injection_and_validation() -> None:
    labels = _find("Namespace", "webhook-system")["metadata"]["labels"]
    assert labels["runtime.platform.io/injection"] == labels["runtime.platform.io/validation"] == "disabled"


@pytest.mark.parametrize("kind", ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"])
def test_the_cert_manager_overlay_excludes_cert_managers_namespace(kind: str) -> None:
    # Until cainjector writes the caBundle every call fails; failing closed must not
    # keep cert-manager's own pods from starting. The overlay's patches, applied here
    # as kustomize applies them:
    overlay = yaml.safe_load((MANIFESTS / "overlays" / "cert-manager" / "kustomization.yaml").read_text())
    patch = next(p["patch"] for p in overlay["patches"] if p["target"]["kind"] == kind)
    patched = jsonpatch.apply_patch(_find(kind, "pod-runtime-webhook"), yaml.safe_load(patch))
    for hook in patched["webhooks"]:
        by_name = hook["namespaceSelector"]["matchExpressions"][0]
        assert by_name["key"] == "kubernetes.io/metadata.name" and by_name["operator"] == "NotIn"
        assert {"kube-system", "webhook-system", "cert-manager"} <= set(by_name["values"])
    kubernetes_validate.validate(patched, KUBERNETES_VERSION, strict=True)


def test_service_maps_443_to_the_server_port() -> None:
    port = _find("Service", "webhook")["spec"]["ports"][0]
    assert port["port"] == 443 and port["targetPort"] == "https"


def test_policy_configmap_copy_matches_the_shipped_policies() -> None:
    shipped = {p.name: p.read_bytes() for p in (ROOT / "policies").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (MANIFESTS / "base" / "policies").glob("*.yaml")}
    assert copied == shipped, "run `make manifests` to refresh manifests/base/policies"
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    listed = kustomization["configMapGenerator"][0]["files"]
    assert sorted(Path(f).name for f in listed) == sorted(shipped)


def test_kubectl_apply_k_manifests_finds_a_kustomization_tree() -> None:
    """Every kustomization's resources, patches and generator files exist."""
    def walk(directory: Path) -> None:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []):
            target = (directory / resource).resolve()
            assert target.exists(), f"{directory}: missing {resource}"
            if target.is_dir():
                walk(target)
        for generator in kustomization.get("configMapGenerator", []):
            for file in generator["files"]:
                assert (directory / file).is_file(), f"{directory}: missing {file}"
    walk(MANIFESTS)


def test_the_webhooks_own_workloads_pass_the_projects_policies() -> None:
    from webhook.offline import Document, admit
    from webhook.policy.loader import load_policy_dir

    policies = load_policy_dir(ROOT / "policies")
    for kind, name in (("Deployment", "webhook"), ("Job", "webhook-install-ca"),
                       ("CronJob", "webhook-renew-certificate")):
        # in its own namespace every policy skips it; check it as if it ran elsewhere
        result = admit(Document(name, _find(kind, name)), policies=policies, namespace="default")
        assert not result.denied
        for _, decision in result.validations[:1]:  # as submitted: nothing injected
            assert decision.violations == (), decision.violations
