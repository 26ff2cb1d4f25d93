"""The validation engine as a whole (no HTTP): actions, message format and caps,
exceptions, controllers, operations and subresources, garbage input, the shipped set."""

from __future__ import annotations

import copy
import re
from datetime import date
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_validate_helpers import (
    TEMPLATE_PATHS,
    checks,
    container,
    controller,
    good_container,
    pod,
    policy,
    policy_set,
    request,
    run,
)
from webhook.engine.mutate import mutate
from webhook.engine.validate import validate
from webhook.engine.violations import (
    MAX_AUDIT_KEY_CHARS,
    MAX_AUDIT_VALUE_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_WARNING_CHARS,
    MAX_WARNINGS_TOTAL_CHARS,
    audit_key,
)
from webhook.policy.loader import load_policy_dir
from webhook.admission.review import build_response

ROOT = Path(__file__).resolve().parent.parent
PRIVILEGED: dict[str, Any] = {"securityContext": {"privileged": True}}


def _privileged_pod(**kwargs: Any) -> dict[str, Any]:
    return pod(container("app", **PRIVILEGED), **kwargs)


# --- actions -------------------------------------------------------------------------

def test_enforce_denies_listing_every_violation() -> None:
    policies = policy_set(policy("no-host", [{"privileged": {}}, {"hostNetwork": {}}]))
    decision = run(policies, pod(container("a", **PRIVILEGED), container("b", **PRIVILEGED), hostNetwork=True))
    assert not decision.allowed and decision.code == 403 and decision.reason == "Forbidden"
    assert decision.patch is None
    assert decision.message == (
        "3 validation violations: "
        'no-host/privileged[privileged]: spec.containers[a].securityContext.privileged: container "a" must not '
        "be privileged; "
        'no-host/privileged[privileged]: spec.containers[b].securityContext.privileged: container "b" must not '
        "be privileged; "
        "no-host/hostNetwork[hostNetwork]: spec.hostNetwork: pod must not use the host's network (hostNetwork: true)")
    assert [(v.policy, v.rule, v.action, v.container) for v in decision.violations] == [
        ("no-host", "privileged", "Enforce", "a"), ("no-host", "privileged", "Enforce", "b"),
        ("no-host", "hostNetwork", "Enforce", "")]
    assert decision.applied_policies == ("no-host",)


def test_warn_allows_with_one_short_warning_per_violation() -> None:
    policies = policy_set(policy("no-host", [{"privileged": {}}, {"hostNetwork": {}}], action="Warn"))
    decision = run(policies, pod(container("a", **PRIVILEGED), hostNetwork=True))
    assert decision.allowed and decision.message is None and decision.code is None
    assert decision.warnings == (
        'no-host/privileged[privileged]: container "a" must not be privileged',
        "no-host/hostNetwork[hostNetwork]: pod must not use the host's network (hostNetwork: true)")
    assert decision.audit_annotations == {}


def test_audit_allows_and_records_audit_annotations() -> None:
    policies = policy_set(policy("no-host", [{"privileged": {}}, {"name": "net", "hostNetwork": {}}],
                                 action="Audit"))
    decision = run(policies, pod(container("a", **PRIVILEGED), container("b", **PRIVILEGED), hostNetwork=True))
    assert decision.allowed and decision.warnings == () and decision.message is None
    assert decision.audit_annotations == {
        "no-host.privileged": '2 violations: [privileged] spec.containers[a].securityContext.privileged: '
                              'container "a" must not be privileged; [privileged] '
                              'spec.containers[b].securityContext.privileged: container "b" must not be privileged',
        "no-host.net": "1 violation: [hostNetwork] spec.hostNetwork: pod must not use the host's network "
                       "(hostNetwork: true)",
    }
    assert {v.action for v in decision.violations} == {"Audit"}


def test_actions_combine_and_the_response_is_valid_for_a_validating_webhook() -> None:
    policies = policy_set(policy("a-enforce", [{"privileged": {}}]),
                          policy("b-warn", [{"hostNetwork": {}}], action="Warn"),
                          policy("c-audit", [{"images": {"forbidLatest": True}}], action="Audit"))
    decision = run(policies, pod(container("app", "nginx", **PRIVILEGED), hostNetwork=True))
    assert not decision.allowed
    assert decision.message and decision.message.startswith("1 validation violation: a-enforce/privileged")
    assert len(decision.warnings) == 1 and decision.warnings[0].startswith("b-warn/hostNetwork")
    assert list(decision.audit_annotations) == ["c-audit.images"]
    response = build_response(api_version="admission.k8s.io/v1", uid="u", decision=decision, mutating=False)
    assert "patch" not in response["response"] and response["response"]["status"]["code"] == 403


def test_order_is_policy_name_then_rule_then_container_regardless_of_files() -> None:
    docs = [policy("zeta", [{"hostPID": {}}, {"privileged": {}}]), policy("alpha", [{"privileged": {}}])]
    obj = pod(container("b", **PRIVILEGED), container("a", **PRIVILEGED), hostPID=True,
              initContainers=[container("init", **PRIVILEGED)])
    first = run(policy_set(*docs), obj)
    second = run(policy_set(*reversed(docs)), obj)
    assert first.message == second.message
    assert [(v.policy, v.rule, v.container) for v in first.violations] == [
        ("alpha", "privileged", "init"), ("alpha", "privileged", "b"), ("alpha", "privileged", "a"),
        ("zeta", "hostPID", ""),
        ("zeta", "privileged", "init"), ("zeta", "privileged", "b"), ("zeta", "privileged", "a")]


# --- caps ---------------------------------------------------------------------------

def test_message_warning_and_audit_sizes_are_capped() -> None:
    many = [container(f"c{i:03d}-{'x' * 40}", "nginx", **PRIVILEGED) for i in range(200)]
    obj = pod(*many)
    enforce = run(policy_set(policy("p", [{"privileged": {}}])), obj)
    message = enforce.message or ""
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("200 validation violations: p/privileged[privileged]: spec.containers[c000-")
    tail = re.search(r"… and (\d+) more$", message)
    assert tail is not None
    shown = message.count("p/privileged[privileged]")
    assert shown + int(tail.group(1)) == 200
    assert len(enforce.violations) == 200                      # all of them for the log and metrics

    warn = run(policy_set(policy("p", [{"privileged": {}}], action="Warn")), obj)
    assert all(len(w) <= MAX_WARNING_CHARS for w in warn.warnings)
    assert sum(len(w) for w in warn.warnings) <= MAX_WARNINGS_TOTAL_CHARS
    assert re.fullmatch(r"… and \d+ more validation warnings", warn.warnings[-1])

    audit = run(policy_set(policy("p", [{"images": {"forbidLatest": True}}], action="Audit")), obj)
    assert all(len(v) <= MAX_AUDIT_VALUE_CHARS for v in audit.audit_annotations.values())
    assert audit.audit_annotations["p.images"].startswith("200 violations: [latestTag] ")


def test_one_huge_violation_cannot_crowd_out_the_rest() -> None:
    policies = policy_set(policy("p", [{"name": "big", "cel": {"expression": "false", "message": "m" * 512}},
                                       {"privileged": {}}]))
    decision = run(policies, _privileged_pod())
    assert decision.message and "p/privileged[privileged]" in decision.message
    assert len(decision.message) < 1100


@pytest.mark.parametrize(("policy_name", "rule"), [
    ("short", "cel"), ("a" * 48, "b" * 40), ("p", "reservedContainerNames"), ("x" * 48, "reservedContainerNames")])
def test_audit_keys_are_valid_and_bounded(policy_name: str, rule: str) -> None:
    key = audit_key(policy_name, rule)
    # The API server prefixes "<webhook name>/": the key itself is a qualified-name part.
    assert len(key) <= MAX_AUDIT_KEY_CHARS and "/" not in key
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key)
    assert audit_key(policy_name, rule) == key
    assert audit_key(policy_name, rule + "2") != key


# --- exceptions ---------------------------------------------------------------------

def _with_exceptions(*exceptions: dict[str, Any]) -> Any:
    return policy_set(policy("strict", [{"privileged": {}}, {"name": "net", "hostNetwork": {}}],
                             exceptions=exceptions))


EXCEPTION_CASES = [
    ("namespace glob", {"namespaces": ["legacy-*"]}, {"namespace": "legacy-apps"}, True),
    ("namespace glob miss", {"namespaces": ["legacy-*"]}, {"namespace": "apps"}, False),
    ("pod selector", {"podSelector": {"matchLabels": {"tier": "agent"}}}, {}, True),
    ("pod selector miss", {"podSelector": {"matchLabels": {"tier": "web"}}}, {}, False),
    ("username", {"usernames": ["system:serviceaccount:ci:*"]}, {"user": "system:serviceaccount:ci:deployer"}, True),
    ("username miss", {"usernames": ["bob"]}, {}, False),
    ("group", {"groups": ["platform-admins"]}, {"groups": ["system:authenticated", "platform-admins"]}, True),
    ("username or group", {"usernames": ["bob"], "groups": ["platform-admins"]},
     {"groups": ["platform-admins"]}, True),
    ("namespace and selector both needed", {"namespaces": ["legacy-*"], "podSelector": {"matchLabels": {"tier": "x"}}},
     {"namespace": "legacy-apps"}, False),
    ("not expired", {"namespaces": ["*"], "expires": "2026-06-01"}, {}, True),
    ("expired yesterday", {"namespaces": ["*"], "expires": "2026-05-31"}, {}, False),
]


@pytest.mark.parametrize(("exception", "where", "lifted"), [c[1:] for c in EXCEPTION_CASES],
                         ids=[c[0] for c in EXCEPTION_CASES])
def test_exceptions(exception: dict[str, Any], where: dict[str, Any], lifted: bool) -> None:
    policies = _with_exceptions({"reason": "ticket OPS-1", **exception})
    obj = pod(container("app", **PRIVILEGED), labels={"tier": "agent"})
    decision = run(policies, obj, **where)          # TODAY is 2026-06-01
    assert decision.allowed == lifted
    if lifted:
        assert decision.violations == () and decision.applied_policies == ()


def test_exception_expiry_follows_the_date() -> None:
    policies = _with_exceptions({"reason": "migration", "namespaces": ["default"], "expires": "2026-03-31"})
    assert run(policies, _privileged_pod(), today=date(2026, 3, 31)).allowed
    assert not run(policies, _privileged_pod(), today=date(2026, 4, 1)).allowed
    # Without `today` the engine uses the real UTC date: long expired.
    assert not validate(request(_privileged_pod()), policies).allowed


def test_exception_can_lift_some_rules_only() -> None:
    policies = _with_exceptions({"reason": "CNI agent", "namespaces": ["default"], "rules": ["net"]})
    decision = run(policies, pod(container("app", **PRIVILEGED), hostNetwork=True))
    assert [v.rule for v in decision.violations] == ["privileged"]
    assert run(policies, pod(hostNetwork=True)).allowed


def test_user_exception_covers_the_controller_request_not_its_pods() -> None:
    # Pods of a Deployment are created by the ReplicaSet controller's service account.
    policies = _with_exceptions({"reason": "release bot", "usernames": ["deployer"]})
    deployment = controller("Deployment", _privileged_pod())
    assert run(policies, deployment, kind="Deployment", user="deployer").allowed
    assert not run(policies, _privileged_pod(), user="system:serviceaccount:kube-system:replicaset-controller").allowed


def test_exceptions_never_come_from_the_pod() -> None:
    policies = policy_set(policy("strict", [{"privileged": {}}]))
    obj = _privileged_pod(annotations={"runtime.platform.io/exempt": "true", "runtime.platform.io/inject": "false"})
    assert not run(policies, obj).allowed


# --- controllers -------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(TEMPLATE_PATHS))
def test_controllers_are_checked_through_their_pod_template(kind: str) -> None:
    policies = policy_set(policy("pss", [{"podSecurity": {"level": "baseline"}}]))
    decision = run(policies, controller(kind, _privileged_pod()), kind=kind)
    path = f"{TEMPLATE_PATHS[kind]}.spec.containers[app].securityContext.privileged"
    assert not decision.allowed
    assert checks(decision) == [("podSecurity", "privileged", path)]
    assert f"pss/podSecurity[privileged]: {path}: " in (decision.message or "")
    assert run(policies, controller(kind, pod(good_container())), kind=kind).allowed


@pytest.mark.parametrize(("kind", "owner", "workload"), [
    ("Deployment", None, "Service"), ("ReplicaSet", None, "Service"), ("StatefulSet", None, "StatefulSet"),
    ("DaemonSet", None, "DaemonSet"), ("Job", None, "Job"), ("Job", "CronJob", "CronJob"),
    ("CronJob", None, "CronJob")])
def test_controller_templates_match_by_workload_kind(kind: str, owner: str | None, workload: str) -> None:
    policies = policy_set(policy("only", [{"privileged": {}}], match={"workloads": [workload]}),
                          policy("never", [{"privileged": {}}], match={"workloads": ["Training"]}))
    obj = controller(kind, _privileged_pod())
    if owner:
        obj["metadata"]["ownerReferences"] = [{"kind": owner, "name": "nightly", "controller": True}]
    decision = run(policies, obj, kind=kind)
    assert decision.applied_policies == ("only",)


def test_workload_override_label_on_the_template_wins() -> None:
    policies = policy_set(policy("training", [{"privileged": {}}], match={"workloads": ["Training"]}))
    template = _privileged_pod(labels={"runtime.platform.io/workload": "Training"})
    assert not run(policies, controller("Job", template), kind="Job").allowed


def test_controller_template_uses_template_labels_and_request_namespace() -> None:
    policies = policy_set(policy("web", [{"privileged": {}}], match={
        "namespaces": {"include": ["team-*"]}, "podSelector": {"matchLabels": {"app": "web"}}}))
    deployment = controller("Deployment", _privileged_pod(labels={"app": "web"}))
    deployment["metadata"]["labels"] = {"app": "other"}           # the controller's own labels do not count
    assert not run(policies, deployment, kind="Deployment", namespace="team-a").allowed
    assert run(policies, deployment, kind="Deployment", namespace="default").allowed


def test_other_kinds_are_not_validated() -> None:
    policies = policy_set(policy("p", [{"privileged": {}}]))
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    assert run(policies, configmap, kind="ConfigMap").allowed


def test_pod_kind_from_the_object_when_the_request_has_none() -> None:
    policies = policy_set(policy("p", [{"privileged": {}}]))
    req = request(_privileged_pod())._replace(kind=request(None).kind._replace(kind=""))
    assert not validate(req, policies).allowed


# --- operations and subresources ----------------------------------------------------

@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(operation: str) -> None:
    policies = policy_set(policy("p", [{"privileged": {}}]))
    decision = run(policies, _privileged_pod() if operation == "CONNECT" else None, operation=operation,
                   old=_privileged_pod())
    assert decision.allowed and decision.violations == ()


def test_update_is_validated_when_the_spec_changes() -> None:
    policies = policy_set(policy("p", [{"privileged": {}}]))
    old = pod(container("app", "app:1"))
    new = pod(container("app", "app:2", **PRIVILEGED))
    assert not run(policies, new, operation="UPDATE", old=old).allowed


def test_update_leaving_the_evaluated_part_unchanged_is_allowed() -> None:
    policies = policy_set(policy("p", [{"privileged": {}}, {"requiredLabels": [{"key": "team"}]}]))
    old = _privileged_pod(labels={"team": "a"})
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"other": "x"}
    relabelled["metadata"]["finalizers"] = ["example.com/cleanup"]
    assert run(policies, relabelled, operation="UPDATE", old=old).allowed
    # Scaling a Deployment admitted under older policies is not blocked...
    deployment = controller("Deployment", _privileged_pod())
    scaled = copy.deepcopy(deployment)
    scaled["spec"]["replicas"] = 5
    assert run(policies, scaled, kind="Deployment", operation="UPDATE", old=deployment).allowed
    # ...but changing its template is checked, labels included.
    relabelled_template = copy.deepcopy(deployment)
    relabelled_template["spec"]["template"]["metadata"]["labels"] = {"team": "a"}
    decision = run(policies, relabelled_template, kind="Deployment", operation="UPDATE", old=deployment)
    assert [v.rule for v in decision.violations] == ["privileged"]


@pytest.mark.parametrize("sub_resource", ["status", "binding", "eviction", "exec", "log"])
def test_other_subresources_are_allowed(sub_resource: str) -> None:
    policies = policy_set(policy("p", [{"privileged": {}}]))
    assert run(policies, _privileged_pod(), operation="UPDATE", sub_resource=sub_resource,
               old=_privileged_pod()).allowed


def test_ephemeral_containers_are_checked_against_pod_security_and_container_rules() -> None:
    policies = policy_set(policy("p", [{"podSecurity": {"level": "baseline"}},
                                       {"images": {"forbidLatest": True}}, {"hostPorts": {}},
                                       {"requiredLabels": [{"key": "team"}]}]))
    running = pod(good_container())
    debug_ok = copy.deepcopy(running)
    debug_ok["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1.36",
                                                "targetContainerName": "app"}]
    decision = run(policies, debug_ok, operation="UPDATE", sub_resource="ephemeralcontainers", old=running)
    assert decision.allowed and decision.violations == ()       # a missing label: not the debugger's doing
    debug_bad = copy.deepcopy(running)
    debug_bad["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox",
                                                 "securityContext": {"privileged": True,
                                                                     "capabilities": {"add": ["SYS_ADMIN"]}}}]
    decision = run(policies, debug_bad, operation="UPDATE", sub_resource="ephemeralcontainers", old=running)
    assert not decision.allowed
    assert checks(decision) == [
        ("podSecurity", "privileged", "spec.ephemeralContainers[debugger].securityContext.privileged"),
        ("podSecurity", "capabilities_baseline", "spec.ephemeralContainers[debugger].securityContext.capabilities.add"),
        ("images", "latestTag", "spec.ephemeralContainers[debugger].image"),
    ]


def test_debug_containers_cannot_bypass_container_rules() -> None:
    # kubectl debug --image=... --profile=sysadmin: the added container runs inside the pod,
    # so a registry allowlist or a privileged rule must hold for it.
    policies = policy_set(policy("p", [{"images": {"allowedRegistries": ["registry.example.com"]}},
                                       {"privileged": {}}]))
    running = pod(container("app", image="docker.io/legacy:1"))   # admitted before the policy
    running["spec"]["ephemeralContainers"] = [{"name": "old-debug", "image": "evil.example.org/x:1"}]
    debug = copy.deepcopy(running)
    debug["spec"]["ephemeralContainers"].append({"name": "debugger", "image": "evil.example.org/tools:1",
                                                 "securityContext": {"privileged": True}})
    decision = run(policies, debug, operation="UPDATE", sub_resource="ephemeralcontainers", old=running)
    assert not decision.allowed
    # Only the added container: the pod's own and earlier debug containers do not block debugging.
    assert checks(decision) == [
        ("images", "registry", "spec.ephemeralContainers[debugger].image"),
        ("privileged", "privileged", "spec.ephemeralContainers[debugger].securityContext.privileged"),
    ]
    fine = copy.deepcopy(running)
    fine["spec"]["ephemeralContainers"].append({"name": "debugger", "image": "registry.example.com/tools:1"})
    assert run(policies, fine, operation="UPDATE", sub_resource="ephemeralcontainers", old=running).allowed


def test_in_place_resize_is_checked_against_resources_rules_only() -> None:
    # pods/resize changes container resources on a running pod: without a check it
    # would lift the maximum the pod was created under.
    policies = policy_set(policy("p", [{"resources": {"maximum": {"cpu": "2"}}},
                                       {"images": {"forbidLatest": True}}]))
    running = pod(container("app", image="busybox", resources={"limits": {"cpu": "1"}}))
    resized = copy.deepcopy(running)
    resized["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "64"
    decision = run(policies, resized, operation="UPDATE", sub_resource="resize", old=running)
    assert not decision.allowed
    assert checks(decision) == [("resources", "maximum", "spec.containers[app].resources.limits.cpu")]
    shrunk = copy.deepcopy(running)
    shrunk["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    decision = run(policies, shrunk, operation="UPDATE", sub_resource="resize", old=running)
    assert decision.allowed and decision.violations == ()      # latest image: not a resources matter


def test_resize_is_judged_by_the_containers_it_resizes() -> None:
    # A container admitted before the policy (no memory limit) does not block resizing another.
    policies = policy_set(policy("p", [{"resources": {"containers": {"limits": ["memory"]},
                                                      "maximum": {"cpu": "2"}}}]))
    running = pod(container("old", resources={"limits": {"cpu": "8"}}),
                  container("app", resources={"limits": {"cpu": "1", "memory": "1Gi"}}))
    resized = copy.deepcopy(running)
    resized["spec"]["containers"][1]["resources"]["limits"]["cpu"] = "2"
    assert run(policies, resized, operation="UPDATE", sub_resource="resize", old=running).allowed
    resized["spec"]["containers"][1]["resources"]["limits"]["cpu"] = "3"
    decision = run(policies, resized, operation="UPDATE", sub_resource="resize", old=running)
    assert checks(decision) == [("resources", "maximum", "spec.containers[app].resources.limits.cpu")]


# --- namespaces and matching --------------------------------------------------------

def test_request_namespace_is_used_when_the_object_has_none() -> None:
    policies = policy_set(policy("p", [{"privileged": {}}],
                                 match={"namespaces": {"exclude": ["kube-system", "webhook-system"]}}))
    obj = _privileged_pod(name=None)
    obj["metadata"]["generateName"] = "web-"
    assert run(policies, obj, namespace="kube-system").allowed
    assert run(policies, obj, namespace="webhook-system").allowed
    assert not run(policies, obj, namespace="apps").allowed


def test_unmatched_policies_are_not_applied() -> None:
    policies = policy_set(policy("windows", [{"privileged": {}}], match={"os": ["windows"]}),
                          policy("web", [{"privileged": {}}], match={"podSelector": {"matchLabels": {"app": "web"}}}))
    decision = run(policies, _privileged_pod(labels={"app": "db"}))
    assert decision.allowed and decision.applied_policies == ()


# --- a pod breaking many rules at once ------------------------------------------------

def test_a_pod_breaking_thirteen_rules_gets_every_one_named_in_order() -> None:
    rules: list[dict[str, Any]] = [
        {"podSecurity": {"level": "baseline"}},
        {"requiredLabels": [{"key": "team"}]},
        {"requiredAnnotations": [{"key": "example.com/owner"}]},
        {"images": {"forbidLatest": True, "allowedRegistries": ["registry.example.com"]}},
        {"resources": {"containers": {"limits": ["memory"]}}},
        {"hostNetwork": {}}, {"hostPID": {}}, {"hostIPC": {}},
        {"hostPath": {}}, {"hostPorts": {}}, {"privileged": {}},
        {"cel": {"expression": "object.spec.containers.size() <= 1", "message": "one container only"}},
        {"reservedContainerNames": {"names": ["log-shipper"]}},
    ]
    obj = pod(container("app", "nginx:latest", ports=[{"containerPort": 80, "hostPort": 80}], **PRIVILEGED),
              container("log-shipper", "registry.example.com/logs:1"),
              hostNetwork=True, hostPID=True, hostIPC=True,
              volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    decision = run(policy_set(policy("everything", rules)), obj)
    assert not decision.allowed
    broken = list(dict.fromkeys(v.rule for v in decision.violations))
    assert broken == ["podSecurity", "requiredLabels", "requiredAnnotations", "images", "resources", "hostNetwork",
                      "hostPID", "hostIPC", "hostPath", "hostPorts", "privileged", "cel", "reservedContainerNames"]
    message = decision.message or ""
    assert message.startswith(f"{len(decision.violations)} validation violations: everything/podSecurity[")
    positions = [message.index(f"everything/{rule}") for rule in broken]
    assert positions == sorted(positions)
    assert {v.check for v in decision.violations if v.rule == "podSecurity"} == {
        "hostNamespaces", "privileged", "hostPathVolumes", "hostPorts"}
    assert len(message) <= MAX_MESSAGE_CHARS


# --- garbage never crashes ------------------------------------------------------------

EVERY_RULE = policy_set(
    policy("everything", [
        {"podSecurity": {"level": "restricted"}}, {"requiredLabels": [{"key": "app", "pattern": "[a-z]+"}]},
        {"requiredAnnotations": [{"key": "owner"}]},
        {"images": {"forbidLatest": True, "requireDigest": True, "allowedRegistries": ["ghcr.io"]}},
        {"resources": {"containers": {"requests": ["cpu"], "limits": ["memory"]},
                       "initContainers": {"limits": ["cpu"]}, "sidecars": {"requests": ["memory"]},
                       "maximum": {"cpu": "4"}, "maxLimitRequestRatio": {"memory": 2}}},
        {"hostNetwork": {}}, {"hostPID": {}}, {"hostIPC": {}}, {"hostPath": {"allowed": [{"pathPrefix": "/x",
                                                                                          "readOnly": True}]}},
        {"hostPorts": {"allowed": ["1-10"]}}, {"privileged": {}},
        {"cel": {"expression": "object.spec.containers.all(c, c.name != 'x')", "message": "no x"}},
        {"reservedContainerNames": {"names": ["x"]}},
    ]),
    extra_files={"inject.yaml": "apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: i}\n"
                                "spec: {inject: {sidecars: [{name: proxy, image: 'p:1'}]}}\n"},
)

GARBAGE_PODS = [
    {"metadata": "x", "spec": []},
    {"metadata": {"labels": ["a"], "annotations": 5}, "spec": {"containers": {"name": "a"}}},
    {"spec": {"containers": ["nginx", None, 3, {"name": 5, "image": ["x"]}]}},
    {"spec": {"containers": [{"name": "a", "securityContext": [], "resources": {"limits": ["1"]},
                              "ports": [{"hostPort": "80"}, None], "volumeMounts": "x"}],
              "volumes": [{"name": "v", "hostPath": "/"}, {"hostPath": {"path": 5}}],
              "hostNetwork": "yes", "securityContext": "root", "os": "windows"}},
    {"spec": {"initContainers": [{"name": "i", "restartPolicy": "Always", "resources": {"requests": {"memory": {}}}}],
              "containers": [{"name": "a", "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": 1e400}}}]}},
    {"metadata": {"annotations": {"runtime.platform.io/status": "[1, {\"version\": 1}]"}}, "spec": {"containers": []}},
]


@pytest.mark.parametrize("obj", GARBAGE_PODS)
@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_garbage_is_treated_as_absent_never_a_crash(obj: dict[str, Any], kind: str) -> None:
    target = obj if kind == "Pod" else {"spec": {"template": obj, "jobTemplate": {"spec": {"template": obj}}}}
    decision = run(EVERY_RULE, target, kind=kind)
    assert isinstance(decision.allowed, bool)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30)
FIELDS = st.sampled_from(["containers", "initContainers", "ephemeralContainers", "volumes", "securityContext",
                          "hostNetwork", "os", "hostUsers"])


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.dictionaries(FIELDS, JSON, max_size=5), metadata=JSON)
def test_arbitrary_json_never_crashes(spec: dict[str, Any], metadata: Any) -> None:
    decision = run(EVERY_RULE, {"metadata": metadata, "spec": spec})
    assert isinstance(decision.allowed, bool)


# --- the shipped policy set ----------------------------------------------------------

SHIPPED = load_policy_dir(ROOT / "policies")


def test_shipped_set_denies_baseline_breaches() -> None:
    decision = run(SHIPPED, _privileged_pod())
    assert not decision.allowed
    assert "pod-security-baseline/podSecurity[privileged]" in (decision.message or "")


def test_shipped_set_warns_for_restricted_breaches_only() -> None:
    obj = pod(container("app", resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}))
    decision = run(SHIPPED, obj)
    assert decision.allowed and decision.audit_annotations == {}
    assert {w.split(":")[0] for w in decision.warnings} == {
        "pod-security-restricted/podSecurity[allowPrivilegeEscalation]",
        "pod-security-restricted/podSecurity[runAsNonRoot]",
        "pod-security-restricted/podSecurity[seccompProfile_restricted]",
        "pod-security-restricted/podSecurity[capabilities_restricted]"}


def test_shipped_set_audits_latest_images_and_missing_resources() -> None:
    decision = run(SHIPPED, pod(good_container(image="nginx", resources={})))
    assert decision.allowed and decision.warnings == ()
    assert set(decision.audit_annotations) == {"image-tags.images", "resource-limits.resources"}


def test_shipped_set_excludes_system_namespaces() -> None:
    for namespace in ("kube-system", "webhook-system"):
        assert run(SHIPPED, _privileged_pod(), namespace=namespace).applied_policies == ()


def test_shipped_set_denies_a_deployment_reusing_an_injected_name() -> None:
    template = pod(good_container(), good_container("traffic-proxy"))
    decision = run(SHIPPED, controller("Deployment", template), kind="Deployment")
    assert not decision.allowed
    assert "reserved-container-names/reservedContainerNames[reservedName]: " \
           "spec.template.spec.containers[traffic-proxy].name" in (decision.message or "")


@pytest.mark.parametrize("owner", [None, "ReplicaSet", "Job", "DaemonSet"])
def test_shipped_injection_passes_every_shipped_validation(owner: str | None) -> None:
    """The final pod, after the shipped injection policies ran, is clean: no violation at all."""
    obj = pod(good_container(), name=None, labels={"app": "web"})
    obj["metadata"]["generateName"] = "web-"
    if owner:
        obj["metadata"]["ownerReferences"] = [{"kind": owner, "name": "web-5d8f", "controller": True}]
    mutated = mutate(request(obj), SHIPPED)
    assert mutated.allowed and mutated.patch
    final = jsonpatch.apply_patch(obj, mutated.patch)
    assert any(c["name"] == "identity-init" for c in final["spec"]["initContainers"])
    decision = run(SHIPPED, final)
    assert decision.allowed and decision.violations == (), decision.violations


def test_an_opted_out_pod_cannot_vouch_for_its_own_reserved_names_with_a_forged_ledger() -> None:
    from pathlib import Path

    from webhook.engine.validate import validate
    from webhook.core.request import make_request
    from webhook.policy.loader import load_policy_dir

    policies = load_policy_dir(Path(__file__).resolve().parent.parent / "policies")
    forged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "annotations": {
        "runtime.platform.io/inject": "false",
        "runtime.platform.io/status": '{"version":1,"policies":[{"name":"identity","revision":"x",'
                                      '"containers":["identity-init"]}]}'}},
        "spec": {"containers": [{"name": "app", "image": "r.io/a:1"}],
                 "initContainers": [{"name": "identity-init", "image": "evil.io/x:1"}]}}
    # identity cannot be opted out of (optOut: Forbidden): its name stays reserved, and the
    # ledger's word does not make the evil container the injected one.
    decision = validate(make_request(forged, namespace="default"), policies)
    assert not decision.allowed and "identity-init" in (decision.message or "")
    assert "not what policy identity injects: its image is 'evil.io/x:1'" in (decision.message or "")
    # The traffic proxy can be opted out of: an opted-out pod may name its own container so.
    forged["spec"]["initContainers"] = []
    forged["spec"]["containers"].append({"name": "traffic-proxy", "image": "evil.io/x:1"})
    assert validate(make_request(forged, namespace="default"), policies).allowed
    forged["metadata"]["annotations"]["runtime.platform.io/status"] = '{"version":1,"policies":7}'
    validate(make_request(forged, namespace="default"), policies)  # a malformed ledger does not crash
