"""Table-driven tests of the shipped runtime policies through the engine (no HTTP)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.engine_helpers import SHIPPED, env_names, mount_paths, names, run, runtime_env
from webhook.engine.ledger import LEDGER_ANNOTATION

IDENTITY_ENV = ["POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE_NAME", "POD_SERVICE_ACCOUNT",
                "SERVICE_NAME", "SERVICE_DISPLAY_NAME", "IDENTITY_CERT_DIR"]
APP_MOUNTS_ALL = ["/var/run/identity", "/var/log/app"]
SERVICE_INIT = ["identity-init", "traffic-proxy", "log-shipper"]
BATCH_INIT = ["identity-init", "log-shipper"]


def app(name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": f"registry.example.com/{name}:1.0", **extra}


def pod(*containers: dict[str, Any], owner: tuple[str, str] | None = None, labels: dict | None = None,
        annotations: dict | None = None, name: str | None = "p", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = "gen-"
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1],
                                        "uid": "u", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": list(containers or [app()]), **spec}}


def ledger(result_pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(result_pod["metadata"]["annotations"][LEDGER_ANNOTATION])


def service_env(container: dict[str, Any], name: str = "SERVICE_DISPLAY_NAME") -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


# (case, pod, expected init containers, expected app env, expected app mounts, SERVICE_DISPLAY_NAME)
CASES = [
    ("bare pod", pod(labels={"app": "web"}), SERVICE_INIT, IDENTITY_ENV, APP_MOUNTS_ALL, "web"),
    ("deployment pod: generateName, no name, no namespace",
     pod(name=None, owner=("ReplicaSet", "checkout-5d8f7c9b6"),
         labels={"pod-template-hash": "5d8f7c9b6"}), SERVICE_INIT, IDENTITY_ENV, APP_MOUNTS_ALL, "checkout"),
    ("job pod", pod(name=None, owner=("Job", "db-migrate"), restartPolicy="Never"),
     BATCH_INIT, IDENTITY_ENV, APP_MOUNTS_ALL, "db-migrate"),
    ("cronjob pod", pod(name=None, owner=("Job", "nightly-report-29410560"), restartPolicy="OnFailure"),
     BATCH_INIT, IDENTITY_ENV, APP_MOUNTS_ALL, "nightly-report"),
    ("statefulset pod", pod(name="db-0", owner=("StatefulSet", "db")), SERVICE_INIT, IDENTITY_ENV,
     APP_MOUNTS_ALL, "db"),
    ("daemonset pod", pod(name=None, owner=("DaemonSet", "node-agent")), ["identity-init"], IDENTITY_ENV,
     ["/var/run/identity"], "node-agent"),
    ("training pod", pod(name=None, owner=("PyTorchJob", "resnet")), BATCH_INIT, IDENTITY_ENV,
     APP_MOUNTS_ALL, "resnet"),
    ("hostNetwork pod: no traffic proxy", pod(hostNetwork=True, labels={"app": "edge"}), BATCH_INIT,
     IDENTITY_ENV, APP_MOUNTS_ALL, "edge"),
    ("workload label overrides the owner", pod(name=None, owner=("ReplicaSet", "x-1"),
                                               labels={"runtime.platform.io/workload": "Job"}),
     BATCH_INIT, IDENTITY_ENV, APP_MOUNTS_ALL, "x-1"),
]


@pytest.mark.parametrize(("case", "given", "init", "env", "mounts", "service"), CASES, ids=[c[0] for c in CASES])
def test_shipped_profiles(case: str, given: dict, init: list[str], env: list[str], mounts: list[str],
                          service: str) -> None:
    result = run(given)
    out = result.pod
    assert names(out["spec"]["initContainers"]) == init
    container = out["spec"]["containers"][0]
    assert env_names(container) == env
    assert mount_paths(container) == mounts
    assert service_env(container) == service
    # The identity is the namespace's service account, whatever the labels say.
    assert service_env(container, "SERVICE_NAME") == "default.default"
    assert names(out["spec"]["containers"]) == ["app"]
    volumes = [v["name"] for v in out["spec"]["volumes"]]
    assert volumes == (["identity-certs", "app-logs"] if "/var/log/app" in mounts else ["identity-certs"])
    for sidecar in out["spec"]["initContainers"]:
        # native sidecars keep running; the init container runs to completion
        assert sidecar.get("restartPolicy") == (None if sidecar["name"] == "identity-init" else "Always")
    recorded = ledger(out)
    assert [p["name"] for p in recorded["policies"]] == [
        {"identity-init": "identity", "traffic-proxy": "traffic-proxy", "log-shipper": "log-shipper"}[n]
        for n in init]


def test_bare_pod_exact_result() -> None:
    given = pod(labels={"app": "web"})
    out = run(given).pod
    identity_init, proxy, shipper = out["spec"]["initContainers"]
    assert identity_init["args"] == ["fetch", "--cert-dir=/var/run/identity", "--namespace=default",
                                     "--service-account=default", "--display-name=web"]
    assert proxy["args"] == ["run", "--cert-dir=/var/run/identity", "--namespace=default",
                             "--service-account=default", "--display-name=web"]
    assert identity_init["volumeMounts"] == [{"name": "identity-certs", "mountPath": "/var/run/identity"}]
    assert proxy["volumeMounts"] == [{"name": "identity-certs", "mountPath": "/var/run/identity",
                                      "readOnly": True}]
    assert shipper["args"] == ["--path=/var/log/app", "--namespace=default", "--workload=Pod/p"]
    assert out["spec"]["containers"][0] == {
        "name": "app", "image": "registry.example.com/app:1.0",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "SERVICE_NAME", "value": "default.default"},
            {"name": "SERVICE_DISPLAY_NAME", "value": "web"},
            {"name": "IDENTITY_CERT_DIR", "value": "/var/run/identity"},
        ],
        "volumeMounts": [
            {"name": "identity-certs", "mountPath": "/var/run/identity", "readOnly": True},
            {"name": "app-logs", "mountPath": "/var/log/app"},
        ],
    }
    assert out["spec"]["volumes"] == [
        {"name": "identity-certs", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "app-logs", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    assert out["metadata"]["labels"] == {"app": "web"}
    recorded = ledger(out)
    assert recorded["policies"][0] == {
        "name": "identity", "revision": recorded["policies"][0]["revision"],
        "containers": ["identity-init"], "volumes": ["identity-certs"],
        "env": {"app": IDENTITY_ENV}, "mounts": {"app": ["/var/run/identity"]}}
    # traffic-proxy defines identity-certs exactly as identity does: one volume they share
    assert recorded["policies"][1]["volumes"] == ["identity-certs"]
    assert "conflicts" not in recorded["policies"][1]


def test_own_init_containers_run_after_injected_ones() -> None:
    given = pod(initContainers=[app("migrate"), app("warm-cache")])
    result = run(given)
    assert names(result.pod["spec"]["initContainers"]) == [*SERVICE_INIT, "migrate", "warm-cache"]
    # user init containers get no env or mounts unless a policy asks for them
    assert "env" not in result.pod["spec"]["initContainers"][3]
    assert [op["path"] for op in result.patch if "initContainers" in op["path"]] == [
        "/spec/initContainers/0", "/spec/initContainers/1", "/spec/initContainers/2"]


def test_already_injected_pod_gets_no_patch() -> None:
    first = run(pod(labels={"app": "web"})).pod
    assert run(first).patch == []


def test_container_added_by_another_webhook_after_injection_gets_env_and_mounts() -> None:
    first = run(pod(labels={"app": "web"})).pod
    first["spec"]["containers"].append(app("mesh-helper"))
    first["spec"]["initContainers"].insert(0, app("other-init"))
    result = run(first)
    out = result.pod
    assert names(out["spec"]["initContainers"]) == [*SERVICE_INIT, "other-init"]
    helper = out["spec"]["containers"][1]
    assert env_names(helper) == IDENTITY_ENV and mount_paths(helper) == APP_MOUNTS_ALL
    assert env_names(out["spec"]["containers"][0]) == IDENTITY_ENV  # not duplicated
    assert any(op["path"].startswith("/spec/containers/1/") for op in result.patch)
    assert not any(op["path"].startswith("/spec/containers/0/") for op in result.patch)


def test_user_container_named_like_an_injected_one_is_denied_naming_both() -> None:
    result = run(pod(app(), app("traffic-proxy")))
    assert result.denial is not None
    assert "traffic-proxy" in result.denial and "spec.containers" in result.denial
    assert "policy traffic-proxy" in result.denial


def test_user_env_var_wins_over_the_policy_and_is_recorded() -> None:
    given = pod(app(env=[{"name": "SERVICE_NAME", "value": "mine"}]), labels={"app": "web"})
    out = run(given).pod
    container = out["spec"]["containers"][0]
    assert service_env(container, "SERVICE_NAME") == "mine"
    # Keep: the pod's own var stays where it was, after the injected ones; none is injected for it.
    assert env_names(container) == [n for n in IDENTITY_ENV if n != "SERVICE_NAME"] + ["SERVICE_NAME"]
    assert {"kind": "env", "name": "SERVICE_NAME", "resolution": "Keep", "container": "app"} in \
        ledger(out)["policies"][0]["conflicts"]


def test_pod_without_labels_or_annotations_or_volumes() -> None:
    given = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "x-"},
             "spec": {"containers": [app()]}}
    result = run(given)
    ops = {op["path"]: op["op"] for op in result.patch}
    assert ops["/metadata/annotations"] == "add"
    assert ops["/spec/initContainers"] == "add" and ops["/spec/volumes"] == "add"
    assert service_env(result.pod["spec"]["containers"][0]) == "x"  # falls back to generateName


def test_annotation_keys_with_slash_and_tilde_are_escaped() -> None:
    given = pod(annotations={"example.com/a~b": "1", "plain": "2"})
    result = run(given)
    ledger_op = next(op for op in result.patch if "status" in op["path"])
    assert ledger_op["path"] == "/metadata/annotations/runtime.platform.io~1status"
    assert result.pod["metadata"]["annotations"]["example.com/a~b"] == "1"


def test_windows_pod_gets_nothing() -> None:
    result = run(pod(os={"name": "windows"}))
    assert result.patch == []
    assert all(not o.applied and "OS windows" in o.reason for o in result.outcomes)


@pytest.mark.parametrize("spec", [
    {"nodeSelector": {"kubernetes.io/os": "windows"}},
    {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}]}}}},
], ids=["nodeSelector", "required affinity"])
def test_pod_pinned_to_windows_nodes_counts_as_windows(spec: dict) -> None:
    assert run(pod(**spec)).patch == []


def test_pod_with_thirty_containers() -> None:
    given = pod(*[app(f"c{i}") for i in range(30)])
    out = run(given).pod
    assert names(out["spec"]["containers"]) == [f"c{i}" for i in range(30)]
    assert all(env_names(c) == IDENTITY_ENV for c in out["spec"]["containers"])


def test_opt_out_of_everything_but_the_mandatory_identity() -> None:
    result = run(pod(annotations={"runtime.platform.io/inject": "false"}))
    assert result.applied == ("identity",)
    assert names(result.pod["spec"]["initContainers"]) == ["identity-init"]
    assert result.warnings == ['annotation runtime.platform.io/inject: "false" is ignored for policy identity, '
                               'which pods cannot opt out of (optOut: Forbidden)']
    assert [o.reason for o in result.outcomes[1:]] == ['pod opted out (runtime.platform.io/inject: "false")'] * 2


def test_identity_cannot_be_opted_out_of() -> None:
    result = run(pod(annotations={"runtime.platform.io/inject-identity": "false"}))
    assert names(result.pod["spec"]["initContainers"]) == SERVICE_INIT
    assert result.warnings == ['annotation runtime.platform.io/inject-identity: "false" is ignored for policy '
                               'identity, which pods cannot opt out of (optOut: Forbidden)']


@pytest.mark.parametrize("label", ["Other", "DaemonSet", "Job"])
def test_the_workload_label_does_not_move_a_pod_out_of_identity_but_still_picks_optional_sidecars(
        label: str) -> None:
    given = pod(name=None, owner=("ReplicaSet", "web-5d8f"),
                labels={"pod-template-hash": "5d8f", "runtime.platform.io/workload": label})
    result = run(given)
    # The traffic proxy (optOut: Allowed) reads the label; identity reads only the owner.
    assert "identity" in result.applied and "traffic-proxy" not in result.applied
    assert any("label runtime.platform.io/workload" in w and "(Deployment)" in w for w in result.warnings)


def test_opt_out_of_one_policy() -> None:
    out = run(pod(annotations={"runtime.platform.io/inject-traffic-proxy": "false"})).pod
    assert names(out["spec"]["initContainers"]) == BATCH_INIT


def test_opting_in_and_out_as_documented_warns_of_nothing() -> None:
    assert run(pod(annotations={"runtime.platform.io/inject-traffic-proxy": "false",
                                "runtime.platform.io/inject-identity": "true"})).warnings == []


@pytest.mark.parametrize(("annotations", "warning"), [
    # Read as neither "true" nor "false": the pod is injected, and its author is told.
    ({"runtime.platform.io/inject": "False"}, "annotation runtime.platform.io/inject: 'False' is ignored"),
    ({"runtime.platform.io/inject-traffic-proxy": "no"},
     "annotation runtime.platform.io/inject-traffic-proxy: 'no' is ignored"),
    ({"runtime.platform.io/inject-trafic-proxy": "false"},
     "annotation runtime.platform.io/inject-trafic-proxy is ignored: no injection policy is named 'trafic-proxy'"),
])
def test_an_inject_annotation_that_does_nothing_is_a_warning(annotations: dict[str, str], warning: str) -> None:
    result = run(pod(annotations=annotations))
    assert result.warnings == [warning + ("; it takes \"true\" or \"false\"" if "' is ignored" in warning else "")]
    assert names(result.pod["spec"]["initContainers"]) == SERVICE_INIT   # injected, as before


def test_an_opted_out_pod_still_hears_of_an_ignored_policy_annotation() -> None:
    result = run(pod(annotations={"runtime.platform.io/inject": "false", "runtime.platform.io/inject-x": "false"}),
                 namespace="kube-system")
    assert result.patch == [] and result.warnings == [
        "annotation runtime.platform.io/inject-x is ignored: no injection policy is named 'x'"]


@pytest.mark.parametrize("namespace", ["kube-system", "webhook-system", "kube-node-lease"])
def test_excluded_namespaces(namespace: str) -> None:
    assert run(pod(), namespace=namespace).patch == []


def test_unreadable_ledger_is_ignored_with_a_warning() -> None:
    result = run(pod(annotations={LEDGER_ANNOTATION: "{not json"}))
    assert any("unreadable" in w for w in result.warnings)
    assert names(result.pod["spec"]["initContainers"]) == SERVICE_INIT


def test_shipped_policy_revisions_are_stable() -> None:
    assert [p.name for p in SHIPPED.injectors] == ["identity", "traffic-proxy", "log-shipper"]
    assert SHIPPED.init_order == {"identity-init": 0, "traffic-proxy": 1, "log-shipper": 2}


def test_pod_repeating_a_container_name_is_left_to_the_api_server() -> None:
    result = run(pod(app(), app()))
    assert result.patch == [] and result.denial is None
    assert "repeats a container name" in result.warnings[0]


def test_wrongly_typed_names_do_not_crash_the_engine() -> None:
    result = run(pod(app(volumeMounts=[{"name": ["x"], "mountPath": ["/y"]}]), volumes=[{"name": []}]))
    assert result.denial is None


PEER_ENV = [{"name": "PEER_ID", "value": "$(POD_NAME).$(POD_NAMESPACE)"},
            {"name": "CERT_FILE", "value": "$(IDENTITY_CERT_DIR)/tls.crt"},
            {"name": "LITERAL", "value": "$$(POD_NAME)"}]


def test_own_env_may_reference_the_injected_identity_vars() -> None:
    """Kubernetes expands `$(VAR)` only from the vars defined before it in the container's
    env, so the injected vars go first and the pod's own follow, unchanged and in order."""
    given = pod(app(env=PEER_ENV), labels={"app": "web"})
    result = run(given)  # the patch applies with jsonpatch and a second pass adds nothing
    container = result.pod["spec"]["containers"][0]
    assert env_names(container) == IDENTITY_ENV + ["PEER_ID", "CERT_FILE", "LITERAL"]
    assert container["env"][len(IDENTITY_ENV):] == PEER_ENV
    env = runtime_env(container)
    assert env["PEER_ID"] == "<metadata.name>.<metadata.namespace>"
    assert env["CERT_FILE"] == "/var/run/identity/tls.crt"
    assert env["LITERAL"] == "$(POD_NAME)"
    # Inserted one by one at the front: the pod's own entries are not rewritten.
    env_ops = [(op["op"], op["path"]) for op in result.patch if op["path"].startswith("/spec/containers/0/env")]
    assert env_ops == [("add", f"/spec/containers/0/env/{i}") for i in range(len(IDENTITY_ENV))]
