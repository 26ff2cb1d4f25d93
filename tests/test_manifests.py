"""The deployment manifests: valid against the Kubernetes schemas, self-excluding, restricted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.test_validate_helpers import KINDS, TODAY, container, controller, pod, policy, policy_set
from webhook.engine.validate import validate
from webhook.core.request import AdmissionRequest
from webhook.rules.cel import Variables, evaluate
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
            if doc and doc["apiVersion"] != "builtin":  # a kustomize transformer's configuration
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
    assert {"pods", "pods/ephemeralcontainers", "pods/resize", "replicationcontrollers", "deployments", "replicasets",
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


def test_the_server_may_read_namespaces_and_nothing_else() -> None:
    """get, list, watch on namespaces (the label cache for namespaceSelector), bound to the
    account the Deployment runs as, whose token it mounts; no other grant to that account."""
    from tests.fake_apiserver import rules_from_manifests

    spec = _find("Deployment", "webhook")["spec"]["template"]["spec"]
    account = spec["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is True
    rules = rules_from_manifests([d for _, d in DOCUMENTS], account, "webhook-system")
    assert [(set(r.api_groups), set(r.resources), set(r.verbs), r.namespace) for r in rules] == [
        ({""}, {"namespaces"}, {"get", "list", "watch"}, None)]
    assert "rbac.yaml" in (MANIFESTS / "base" / "kustomization.yaml").read_text()


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


def test_network_policy_admits_the_serving_port_from_anywhere_metrics_from_monitoring_only() -> None:
    policy = _find("NetworkPolicy", "webhook")["spec"]
    template = _find("Deployment", "webhook")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    # The server serves /metrics on the named port only when told to.
    assert "--metrics-port=9090" in container["args"]
    # The API server's address varies by cluster: the https rule names no peers.
    webhook_rule, metrics_rule = policy["ingress"]
    assert "from" not in webhook_rule
    assert [(p["port"], p["protocol"]) for p in webhook_rule["ports"]] == [("https", "TCP")]
    # Metrics: only pods in the monitoring namespace (all of them: no podSelector).
    assert [(p["port"], p["protocol"]) for p in metrics_rule["ports"]] == [("metrics", "TCP")]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # The only connections the server opens go to the API server (the namespace label
    # cache), whose address varies by cluster: its usual ports, no DNS, nothing else.
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [out] = policy["egress"]
    assert "to" not in out and sorted((p["port"], p["protocol"]) for p in out["ports"]) == [
        (443, "TCP"), (6443, "TCP")]
    # ... which must not select the install Job's pods: they talk to the API server.
    for kind, name in (("Job", "webhook-install-ca"), ("CronJob", "webhook-renew-certificate")):
        spec = _find(kind, name)["spec"]
        template = (spec["jobTemplate"]["spec"] if kind == "CronJob" else spec)["template"]
        labels = template.get("metadata", {}).get("labels", {})
        assert not policy["podSelector"]["matchLabels"].items() <= labels.items(), name


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
    """Every kustomization's resources, transformers and generator files exist."""
    def walk(directory: Path) -> None:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []) + kustomization.get("transformers", []):
            target = (directory / resource).resolve()
            assert target.exists(), f"{directory}: missing {resource}"
            if target.is_dir():
                walk(target)
        for generator in kustomization.get("configMapGenerator", []):
            for file in generator.get("files", []):
                assert (directory / file).is_file(), f"{directory}: missing {file}"
    walk(MANIFESTS)


def test_the_webhooks_own_workloads_pass_the_projects_policies() -> None:
    from webhook.cli.offline import Document, admit
    from webhook.policy.loader import load_policy_dir

    policies = load_policy_dir(ROOT / "policies")
    for kind, name in (("Deployment", "webhook"), ("Job", "webhook-install-ca"),
                       ("CronJob", "webhook-renew-certificate")):
        # in its own namespace every policy skips it; check it as if it ran elsewhere
        result = admit(Document(name, _find(kind, name)), policies=policies, namespace="default")
        assert not result.denied
        for _, decision in result.validations[:1]:  # as submitted: nothing injected
            assert decision.violations == (), decision.violations


# --- the validating webhook's matchConditions ---------------------------------------
#
# The API server evaluates the condition (Kubernetes CEL, cel-go); here the project's
# own CEL library evaluates it. Both raise on has() of a missing parent and on a field
# of null, so an unguarded access shows up here as an error. With failurePolicy Fail an
# error rejects the request, so no case may raise; and a skipped call is a policy
# bypass unless the server itself admits that request without evaluation, which the
# differential checks below ask the engine (webhook/engine/validate.py).

MATCH_CONDITION = "evaluated-part-changed"
CONTROLLER_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
                    "ReplicationController")


def _match_expression() -> str:
    hook = _find("ValidatingWebhookConfiguration", "pod-runtime-webhook")["webhooks"][0]
    conditions = hook.get("matchConditions", [])
    assert [c["name"] for c in conditions] == [MATCH_CONDITION]
    return conditions[0]["expression"]


def _raw_request(kind: str, operation: str, new: Any, old: Any, sub_resource: str) -> dict[str, Any]:
    group, resource = KINDS[kind]
    return {"uid": "0b4b1a5e-0000-4000-8000-000000000002",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "subResource": sub_resource, "namespace": "default", "operation": operation,
            "userInfo": {"username": "alice", "uid": "1", "groups": ["system:authenticated"]},
            "object": new, "oldObject": old}


def _webhook_called(kind: str, operation: str, new: Any, old: Any, sub_resource: str = "") -> bool:
    """The condition's verdict, checked to be the same whether `request.subResource` is
    absent (the API server converts the request with omitempty) or an empty string."""
    raw = _raw_request(kind, operation, new, old, sub_resource)
    request = {k: v for k, v in raw.items() if k not in ("object", "oldObject")}
    verdicts = set()
    for variant in (request, {k: v for k, v in request.items() if not (k == "subResource" and not v)}):
        variables = Variables({"object": copy.deepcopy(new), "oldObject": copy.deepcopy(old), "request": variant})
        verdicts.add(evaluate(_match_expression(), variables))  # raises CelError on an evaluation error
    assert len(verdicts) == 1, verdicts
    return verdicts.pop()


def _server_evaluates(kind: str, operation: str, new: Any, old: Any, sub_resource: str = "") -> bool:
    """Whether the server evaluates the request (rather than admitting it untouched): a
    policy that applies to everything shows up in applied_policies only when evaluated."""
    policies = policy_set(policy("everything", [{"podSecurity": {"level": "baseline"}}], action="Audit"))
    request = AdmissionRequest.from_dict(_raw_request(kind, operation, new, old, sub_resource))
    return "everything" in validate(request, policies, today=TODAY).applied_policies


def _template(obj: dict[str, Any]) -> dict[str, Any]:
    """The evaluated pod template of a controller (the pod itself for a Pod)."""
    if obj["kind"] == "Pod":
        return obj
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]


def _object(kind: str) -> dict[str, Any]:
    template = pod(container("app", "registry.example.com/app:1.0"), labels={"app": "web"},
                   annotations={"team": "a"})
    return template if kind == "Pod" else controller(kind, template)


def _changed(obj: dict[str, Any], change: Any) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    change(new)
    return new


def _relabel(o: dict[str, Any]) -> None:
    o["metadata"]["labels"] = {"app": "web", "pod-template-hash": "5d8f"}
    o["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    o["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                                         "uid": "7c1e", "controller": True}]


def _new_image(o: dict[str, Any]) -> None:
    _template(o)["spec"]["containers"][0]["image"] = "registry.example.com/app:2.0"


def _template_labels(o: dict[str, Any]) -> None:
    _template(o)["metadata"]["labels"] = {"app": "web", "tier": "front"}


def _template_annotations(o: dict[str, Any]) -> None:
    _template(o)["metadata"]["annotations"] = {"team": "b"}


def _debug_container(o: dict[str, Any]) -> None:
    o["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox", "targetContainerName": "app"}]


def _drop(*path: str) -> Any:
    def change(o: dict[str, Any]) -> None:
        for key in path[:-1]:
            o = o[key]
        del o[path[-1]]
    return change


def _set(path: tuple[str, ...], value: Any) -> Any:
    def change(o: dict[str, Any]) -> None:
        for key in path[:-1]:
            o = o[key]
        o[path[-1]] = value
    return change


def _no_finalizers(o: dict[str, Any]) -> None:
    o["metadata"].pop("finalizers", None)


POD, DEPLOYMENT, CRONJOB = _object("Pod"), _object("Deployment"), _object("CronJob")
FINALIZED_POD = _changed(POD, _relabel)
# (case, kind, operation, subresource, new, old, whether the webhook must be called)
MATCH_CASES: list[tuple[str, str, str, str, Any, Any, bool]] = [
    ("create-pod", "Pod", "CREATE", "", POD, None, True),
    ("create-deployment", "Deployment", "CREATE", "", DEPLOYMENT, None, True),
    ("create-pod-without-spec", "Pod", "CREATE", "", _changed(POD, _drop("spec")), None, True),
    ("pod-labels-finalizers-ownerrefs", "Pod", "UPDATE", "", FINALIZED_POD, POD, False),
    ("pod-finalizer-removed-by-job-controller", "Pod", "UPDATE", "", _changed(FINALIZED_POD, _no_finalizers),
     FINALIZED_POD, False),
    ("pod-spec-changed", "Pod", "UPDATE", "", _changed(POD, _new_image), POD, True),
    ("pod-ephemeral-container-added", "Pod", "UPDATE", "ephemeralcontainers", _changed(POD, _debug_container),
     POD, True),
    ("pod-ephemeralcontainers-unchanged", "Pod", "UPDATE", "ephemeralcontainers", POD, POD, True),
    ("pod-resized", "Pod", "UPDATE", "resize", _changed(POD, _set(("spec", "nodeName"), "node-1")), POD, True),
    ("deployment-scaled", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _set(("spec", "replicas"), 5)),
     DEPLOYMENT, False),
    ("deployment-metadata-only", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _relabel), DEPLOYMENT, False),
    ("deployment-template-spec", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _new_image), DEPLOYMENT, True),
    ("deployment-template-labels", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _template_labels),
     DEPLOYMENT, True),
    ("deployment-template-annotations", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _template_annotations),
     DEPLOYMENT, True),
    ("cronjob-template-spec", "CronJob", "UPDATE", "", _changed(CRONJOB, _new_image), CRONJOB, True),
    ("cronjob-schedule-only", "CronJob", "UPDATE", "", _changed(CRONJOB, _set(("spec", "schedule"), "@daily")),
     CRONJOB, False),
    ("cronjob-suspended", "CronJob", "UPDATE", "", _changed(CRONJOB, _set(("spec", "suspend"), True)),
     CRONJOB, False),
    # Objects lacking the compared part: never an error; called (the server admits them
    # anyway, or evaluates them: calling is right either way).
    ("pod-both-without-spec", "Pod", "UPDATE", "", _changed(POD, _drop("spec")), _changed(POD, _drop("spec")),
     True),
    ("pod-spec-removed", "Pod", "UPDATE", "", _changed(POD, _drop("spec")), POD, True),
    ("pod-spec-added", "Pod", "UPDATE", "", POD, _changed(POD, _drop("spec")), True),
    ("pod-without-metadata", "Pod", "UPDATE", "", _changed(POD, _drop("metadata")), POD, False),
    ("deployment-without-spec", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _drop("spec")),
     _changed(DEPLOYMENT, _drop("spec")), True),
    ("deployment-without-template", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _drop("spec", "template")),
     _changed(DEPLOYMENT, _drop("spec", "template")), True),
    ("deployment-template-removed", "Deployment", "UPDATE", "", _changed(DEPLOYMENT, _drop("spec", "template")),
     DEPLOYMENT, True),
    ("cronjob-without-jobtemplate", "CronJob", "UPDATE", "", _changed(CRONJOB, _drop("spec", "jobTemplate")),
     _changed(CRONJOB, _drop("spec", "jobTemplate")), True),
    ("cronjob-jobtemplate-without-spec", "CronJob", "UPDATE", "",
     _changed(CRONJOB, _drop("spec", "jobTemplate", "spec")), CRONJOB, True),
    ("cronjob-without-template", "CronJob", "UPDATE", "",
     _changed(CRONJOB, _drop("spec", "jobTemplate", "spec", "template")),
     _changed(CRONJOB, _drop("spec", "jobTemplate", "spec", "template")), True),
    ("update-without-old-object", "Pod", "UPDATE", "", POD, None, True),
]


@pytest.mark.parametrize(("case", "kind", "operation", "sub_resource", "new", "old", "called"), MATCH_CASES,
                         ids=[c[0] for c in MATCH_CASES])
def test_validating_webhook_is_not_called_for_updates_the_server_admits_unevaluated(
        case: str, kind: str, operation: str, sub_resource: str, new: Any, old: Any, called: bool) -> None:
    assert _webhook_called(kind, operation, new, old, sub_resource) is called
    if not called:  # a skipped call must be one the server answers "allowed" without evaluating
        assert not _server_evaluates(kind, operation, new, old, sub_resource)


@pytest.mark.parametrize("kind", CONTROLLER_KINDS)
def test_match_condition_per_controller_kind(kind: str) -> None:
    obj = _object(kind)
    for change, called in ((_relabel, False), (_new_image, True), (_template_labels, True),
                           (_template_annotations, True)):
        new = _changed(obj, change)
        assert _webhook_called(kind, "UPDATE", new, obj) is called, (kind, change.__name__)
        assert _server_evaluates(kind, "UPDATE", new, obj) is called, (kind, change.__name__)
    assert _webhook_called(kind, "CREATE", obj, None)


@pytest.mark.slow
def test_match_condition_never_skips_what_the_server_evaluates() -> None:
    """Every pairing of these edits as old and new object, for every kind the rules
    select: the condition never raises, and it skips only updates the server admits
    without evaluation. It may call where the server would skip (template metadata
    beyond labels and annotations), never the reverse."""
    def template_name(o: dict[str, Any]) -> None:
        _template(o)["metadata"]["name"] = "ignored"

    def template_spec_removed(o: dict[str, Any]) -> None:
        _template(o).pop("spec", None)

    def spec_removed(o: dict[str, Any]) -> None:
        o.pop("spec", None)

    def spec_emptied(o: dict[str, Any]) -> None:
        o["spec"] = {}

    def outer_spec_field(o: dict[str, Any]) -> None:
        o["spec"]["paused" if o["kind"] != "Pod" else "nodeName"] = True if o["kind"] != "Pod" else "node-1"

    edits = [lambda o: None, _relabel, _new_image, _template_labels, _template_annotations, template_name,
             template_spec_removed, spec_removed, spec_emptied, outer_spec_field]
    skipped = 0
    for kind in ("Pod", *CONTROLLER_KINDS):
        base = _object(kind)
        variants = []
        for edit in edits:
            try:
                variants.append(_changed(base, edit))
            except (KeyError, TypeError):
                continue
        for old in variants:
            for new in variants:
                for operation, sub_resource in (("UPDATE", ""), ("UPDATE", "ephemeralcontainers"),
                                                ("UPDATE", "resize"), ("CREATE", "")):
                    if sub_resource and kind != "Pod":
                        continue
                    previous = old if operation == "UPDATE" else None
                    if not _webhook_called(kind, operation, new, previous, sub_resource):
                        skipped += 1
                        assert not _server_evaluates(kind, operation, new, previous, sub_resource), (kind, new, old)
    assert skipped > 50  # the comparison is exercised, not vacuous


# --- re-applying, upgrading, uninstalling (docs/operations.md) -----------------------

def _doc_commands(section: str) -> list[str]:
    """The shell lines of one `## section` of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line for block in body.split("```sh\n")[1:] for line in block.split("```")[0].splitlines()]


def test_the_install_job_can_be_applied_again_with_a_new_image() -> None:
    job = _find("Job", "webhook-install-ca")
    # A Job's template is immutable: while the Job exists, applying another image fails.
    # It goes a minute after finishing, so a plain re-apply soon recreates it...
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 60
    # ...and the documented upgrade deletes it first, by the name and namespace it has.
    delete = (f"kubectl -n {job['metadata']['namespace']} delete job {job['metadata']['name']} "
              "--ignore-not-found")
    commands = _doc_commands("Upgrade")
    assert commands[:2] == [delete, "kubectl apply -k manifests/"]


def test_uninstall_stops_the_controller_then_the_webhooks_and_names_what_exists() -> None:
    commands = _doc_commands("Uninstall")
    assert commands[-1] == "kubectl delete -k manifests/ --ignore-not-found"
    deleted = []
    for command in commands[:-1]:
        words = command.split()
        namespace = words[words.index("-n") + 1] if "-n" in words else None
        words = [w for w in words if w not in ("-n", namespace)]
        assert words[:2] == ["kubectl", "delete"] and words[-1] == "--ignore-not-found", command
        kinds, name = words[2], words[3]
        for kind in kinds.split(","):
            assert any(d["kind"].lower() == kind and d["metadata"]["name"] == name
                       and d["metadata"].get("namespace", "webhook-system" if namespace else None) == namespace
                       for _, d in DOCUMENTS), command
            deleted.append(kind)
    # No restart while injection goes away; no webhook left without a replica to answer.
    assert deleted[:3] == ["deployment", "mutatingwebhookconfiguration", "validatingwebhookconfiguration"]
    assert _find("Deployment", "webhook-controller")["spec"]["template"]["spec"]["containers"][0]["command"] == \
        ["webhook", "controller"]


# --- the lifecycle controller ------------------------------------------------------------

def test_the_controller_runs_two_restricted_replicas_with_probes_and_its_lease() -> None:
    deployment = _find("Deployment", "webhook-controller")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert check_pod_spec(template["metadata"], template["spec"], level="restricted") == []
    container = template["spec"]["containers"][0]
    assert container["command"] == ["webhook", "controller"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    lease = _find("Lease", args["lease-name"])
    assert lease["metadata"]["namespace"] == "webhook-system"
    assert _find("ConfigMap", "webhook-controller-status")
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert int(args["port"]) == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {e["name"] for e in container["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    assert template["spec"]["serviceAccountName"] == "webhook-controller"
    base = (MANIFESTS / "base" / "kustomization.yaml").read_text()
    assert all(name in base for name in ("controller-rbac.yaml", "controller-state.yaml", "controller-deployment.yaml"))
    for overlay in ("cert-manager", "self-managed"):
        assert "../../base" in (MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text()
    # Egress only to the API server's ports; ingress only on its HTTP port.
    policy = _find("NetworkPolicy", "webhook-controller")["spec"]
    assert policy["podSelector"]["matchLabels"] == template["metadata"]["labels"]
    assert [p["port"] for rule in policy["egress"] for p in rule["ports"]] == [443, 6443]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]


def test_the_controllers_rbac_is_least_privilege() -> None:
    from tests.fake_apiserver import rules_from_manifests

    rules = rules_from_manifests([d for _, d in DOCUMENTS], "webhook-controller", "webhook-system")
    granted = {(group, resource, verb, r.namespace, tuple(sorted(r.resource_names)))
               for r in rules for group in r.api_groups for resource in r.resources for verb in r.verbs}
    read = {(g, res, v, None, ()) for g, resources in (("", ("pods", "namespaces")),
                                                        ("apps", ("replicasets", "deployments", "statefulsets",
                                                                  "daemonsets")),
                                                        ("batch", ("jobs",)))
            for res in resources for v in ("get", "list", "watch")}
    write = {("apps", res, "patch", None, ()) for res in ("deployments", "statefulsets", "daemonsets")}
    write |= {("", "pods", "patch", None, ()), ("events.k8s.io", "events", "create", None, ()),
              ("events.k8s.io", "events", "patch", None, ())}
    own = {("coordination.k8s.io", "leases", v, "webhook-system", ("webhook-controller",)) for v in ("get", "update")}
    own |= {("", "configmaps", v, "webhook-system", ("webhook-controller-status",)) for v in ("get", "update")}
    assert granted == read | write | own
    # No create but on events; nothing on secrets; no delete anywhere.
    assert {(g, res) for g, res, v, *_ in granted if v == "create"} == {("events.k8s.io", "events")}
    assert not any(res == "secrets" or v in ("delete", "deletecollection", "*") for _, res, v, *_ in granted)


@pytest.mark.process
@pytest.mark.parametrize("overlay", ["cert-manager", "self-managed"])
def test_both_overlays_render_the_controller(overlay: str) -> None:
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run([kubectl, "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True,
                              capture_output=True, text=True, timeout=60).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    for key in (("Deployment", "webhook-controller"), ("ServiceAccount", "webhook-controller"),
                ("ClusterRole", "pod-runtime-webhook-controller"), ("Role", "webhook-controller"),
                ("Lease", "webhook-controller"), ("ConfigMap", "webhook-controller-status")):
        assert key in docs, key
    # The controller reads the same generated policy ConfigMap as the server.
    volumes = {v["name"]: v for v in docs[("Deployment", "webhook-controller")]["spec"]["template"]["spec"]["volumes"]}
    server = {v["name"]: v for v in docs[("Deployment", "webhook")]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == server["policies"]["configMap"]["name"] != "webhook-policies"
