"""Matching, table-driven through the engine (no HTTP): workloads by profile or by the owner's
own kind, match.exclude.containers, and optOut: Allowed | Forbidden."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine_helpers import names, policies_from_yaml, run
from webhook.engine.pod import pod_facts
from webhook.policy.errors import PolicyLoadError
from webhook.policy.lint import lint


def owned_pod(owner: tuple[str, str] | None, *, labels: dict[str, str] | None = None,
              containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "x-", "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1], "uid": "u",
                                        "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": containers or [{"name": "app", "image": "a"}], **spec}}


HASH = {"pod-template-hash": "5d8f7c9b6"}
DEPLOYMENT = owned_pod(("ReplicaSet", "web-5d8f7c9b6"), labels=HASH)
BARE_REPLICASET = owned_pod(("ReplicaSet", "web-rs"))
CRONJOB = owned_pod(("Job", "nightly-29410560"))
JOB = owned_pod(("Job", "migrate-20240115"))


# --- the owner: its own kind, its profile, its name ---------------------------------------

@pytest.mark.parametrize(("pod", "kind", "profile", "name"), [
    (owned_pod(None), "Pod", "Pod", "x"),
    (DEPLOYMENT, "Deployment", "Service", "web"),
    (BARE_REPLICASET, "ReplicaSet", "Service", "web-rs"),
    # A hash label that is not the ReplicaSet name's suffix: not the Deployment controller's.
    (owned_pod(("ReplicaSet", "web-rs"), labels=HASH), "ReplicaSet", "Service", "web-rs"),
    (owned_pod(("ReplicationController", "legacy")), "ReplicationController", "Service", "legacy"),
    (JOB, "Job", "Job", "migrate-20240115"),
    (CRONJOB, "CronJob", "CronJob", "nightly"),
    (owned_pod(("StatefulSet", "db")), "StatefulSet", "StatefulSet", "db"),
    (owned_pod(("DaemonSet", "agent")), "DaemonSet", "DaemonSet", "agent"),
    (owned_pod(("PyTorchJob", "resnet")), "PyTorchJob", "Training", "resnet"),
    (owned_pod(("Workflow", "etl-x7k2p")), "Workflow", "Other", "etl-x7k2p"),
])
def test_owner_kind_profile_and_name(pod: dict[str, Any], kind: str, profile: str, name: str) -> None:
    facts = pod_facts(pod, namespace="default")
    assert (facts.owner_kind, facts.workload_kind.value, facts.workload_name) == (kind, profile, name)


def test_the_workload_label_sets_the_profile_not_the_owner_kind() -> None:
    facts = pod_facts(owned_pod(("ReplicaSet", "web-5d8f7c9b6"),
                                labels={**HASH, "runtime.platform.io/workload": "Job"}), namespace="d")
    assert (facts.owner_kind, facts.workload_kind.value, facts.owner_profile.value) == ("Deployment", "Job", "Service")
    assert facts.from_owners().workload_kind.value == "Service"


# --- match.workloads ----------------------------------------------------------------------

def workloads_policy(entries: str, *, opt_out: str = "Allowed") -> str:
    return f"""
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {{name: agent}}
spec:
  optOut: {opt_out}
  match: {{workloads: {entries}}}
  inject:
    labels: {{injected: "yes"}}
"""


def applied(pod: dict[str, Any], entries: str, **kwargs: Any) -> bool:
    result = run(pod, policies=policies_from_yaml(workloads_policy(entries, **kwargs)))
    return result.applied == ("agent",)


LABELLED_JOB = owned_pod(("ReplicaSet", "web-5d8f7c9b6"), labels={**HASH, "runtime.platform.io/workload": "Job"})
MISNAMED_JOB = owned_pod(("Job", "report-29410560"), labels={"runtime.platform.io/workload": "Job"})


@pytest.mark.parametrize(("pod", "entries", "selected"), [
    (DEPLOYMENT, "[Deployment]", True),
    (BARE_REPLICASET, "[Deployment]", False),
    (DEPLOYMENT, "[ReplicaSet]", False),         # the top owner is the Deployment
    (BARE_REPLICASET, "[ReplicaSet]", True),
    (DEPLOYMENT, "[Service]", True),             # the profile covers both
    (BARE_REPLICASET, "[Service]", True),
    (CRONJOB, "[CronJob]", True),
    (CRONJOB, "[Job]", False),
    (JOB, "[Job]", True),
    (owned_pod(None), "[Pod]", True),
    (owned_pod(("PyTorchJob", "r")), "[PyTorchJob]", True),
    (owned_pod(("PyTorchJob", "r")), "[Training]", True),
    (owned_pod(("TFJob", "r")), "[PyTorchJob]", False),
    (owned_pod(("Workflow", "w")), "[Workflow]", True),
    (owned_pod(("Workflow", "w")), "[Deployment, StatefulSet]", False),
    # The label moves the profile; an owner kind that is no profile name stays the owner's.
    (LABELLED_JOB, "[Service]", False),
    (LABELLED_JOB, "[Job]", True),
    (LABELLED_JOB, "[Deployment]", True),
    # ... and corrects the CronJob name convention, which a Job's own name can imitate.
    (MISNAMED_JOB, "[CronJob]", False),
    (MISNAMED_JOB, "[Job]", True),
])
def test_workloads_entries_select_profiles_or_owner_kinds(pod: dict[str, Any], entries: str, selected: bool) -> None:
    assert applied(pod, entries) is selected


def test_a_workload_miss_names_kind_and_profile() -> None:
    result = run(BARE_REPLICASET, policies=policies_from_yaml(workloads_policy("[Deployment, Job]")))
    assert result.outcomes[0].reason == "workload ReplicaSet (profile Service) is not in ['Deployment', 'Job']"


@pytest.mark.parametrize(("entries", "error"), [
    ("[deployment]", "workload 'deployment': give a profile"),
    ("['Stateful Set']", "workload 'Stateful Set'"),
    ("[]", "at least 1 item"),
])
def test_malformed_workload_entries_are_load_errors(entries: str, error: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        policies_from_yaml(workloads_policy(entries))
    assert error in str(caught.value)


def test_policies_check_warns_of_a_kind_that_looks_misspelt() -> None:
    warnings = lint(policies_from_yaml(workloads_policy("[Deploymnet, Workflow, Statefulset]")))
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "policy agent: workload 'Deploymnet' is neither a profile nor a built-in kind, so it matches only pods "
        "owned by an operator's Deploymnet; did you mean 'Deployment'?",
        "policy agent: workload 'Statefulset' is neither a profile nor a built-in kind, so it matches only pods "
        "owned by an operator's Statefulset; did you mean 'StatefulSet'?"]


# --- match.exclude.containers -------------------------------------------------------------

MESH = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: mesh}
spec:
  match:
    exclude: {containers: [istio-proxy, linkerd-proxy]}
  inject:
    sidecars: [{name: proxy, image: proxy:1}]
"""


@pytest.mark.parametrize(("spec", "skipped_for"), [
    ({"containers": [{"name": "app", "image": "a"}, {"name": "istio-proxy", "image": "i"}]}, "istio-proxy"),
    # Istio's native sidecar mode puts its proxy among the init containers.
    ({"containers": [{"name": "app", "image": "a"}],
      "initContainers": [{"name": "istio-proxy", "image": "i", "restartPolicy": "Always"}]}, "istio-proxy"),
    ({"containers": [{"name": "app", "image": "a"}],
      "ephemeralContainers": [{"name": "linkerd-proxy", "image": "l"}]}, "linkerd-proxy"),
    ({"containers": [{"name": "app", "image": "a"}, {"name": "istio-proxy-helper", "image": "h"}]}, None),
])
def test_a_pod_already_in_another_mesh_is_skipped(spec: dict[str, Any], skipped_for: str | None) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    result = run(pod, policies=policies_from_yaml(MESH))
    if skipped_for is None:
        assert result.applied == ("mesh",)
    else:
        assert result.patch == [] and result.outcomes[0].reason == \
            f"pod already has container {skipped_for!r} (match.exclude.containers)"


def test_a_container_another_policy_injects_does_not_exclude_on_reinvocation() -> None:
    """Exclusion reads the pod as its author wrote it: what this webhook added on an earlier
    pass does not change which policies apply (run() checks the second pass adds nothing)."""
    first = MESH.replace("mesh}", "first}").replace("exclude: {containers: [istio-proxy, linkerd-proxy]}", "{}") \
        .replace("name: proxy, image: proxy:1", "name: istio-proxy, image: i:1")
    result = run(owned_pod(None), policies=policies_from_yaml(first, MESH.replace("spec:", "spec:\n  priority: 200")))
    assert result.applied == ("first", "mesh")


def test_exclude_containers_takes_container_names() -> None:
    with pytest.raises(PolicyLoadError, match="containers"):
        policies_from_yaml(MESH.replace("istio-proxy, linkerd-proxy", "Istio_Proxy"))


# --- optOut ---------------------------------------------------------------------------------

def test_opt_in_and_forbidden_opt_out_contradict() -> None:
    with pytest.raises(PolicyLoadError, match="optIn: true lets each pod choose the policy"):
        policies_from_yaml(workloads_policy("[Service]", opt_out="Forbidden").replace("spec:", "spec:\n  optIn: true"))


@pytest.mark.parametrize("opt_out", ["Allowed", "Forbidden", "Sometimes"])
def test_opt_out_takes_allowed_or_forbidden(opt_out: str) -> None:
    text = workloads_policy("[Service]", opt_out=opt_out)
    if opt_out == "Sometimes":
        with pytest.raises(PolicyLoadError, match="optOut"):
            policies_from_yaml(text)
    else:
        assert policies_from_yaml(text).injectors[0].opt_out.value == opt_out


@pytest.mark.parametrize("annotations", [{"runtime.platform.io/inject": "false"},
                                         {"runtime.platform.io/inject-agent": "false"}])
@pytest.mark.parametrize("opt_out", ["Allowed", "Forbidden"])
def test_opt_out_annotations_count_only_where_allowed(annotations: dict[str, str], opt_out: str) -> None:
    pod = owned_pod(None)
    pod["metadata"]["annotations"] = annotations
    result = run(pod, policies=policies_from_yaml(workloads_policy("[Pod]", opt_out=opt_out)))
    key = next(iter(annotations))
    if opt_out == "Allowed":
        assert result.applied == () and result.warnings == []
        assert result.outcomes[0].reason == f'pod opted out ({key}: "false")'
    else:
        assert result.applied == ("agent",)
        assert result.warnings == [f'annotation {key}: "false" is ignored for policy agent, which pods cannot '
                                   'opt out of (optOut: Forbidden)']


@pytest.mark.parametrize(("pod", "label", "allowed", "forbidden"), [
    (DEPLOYMENT, "Other", False, True),
    (DEPLOYMENT, "DaemonSet", False, True),
    # Without an owner the pod is a bare Pod: the label cannot move it out either.
    (owned_pod(None), "DaemonSet", False, True),
])
def test_under_forbidden_the_workload_label_does_not_escape(pod: dict[str, Any], label: str, allowed: bool,
                                                            forbidden: bool) -> None:
    labelled = {**pod, "metadata": {**pod["metadata"], "labels": {**pod["metadata"]["labels"],
                                                                   "runtime.platform.io/workload": label}}}
    assert applied(labelled, "[Service, Pod]") is allowed
    assert applied(labelled, "[Service, Pod]", opt_out="Forbidden") is forbidden
    result = run(labelled, policies=policies_from_yaml(workloads_policy("[Service, Pod]", opt_out="Forbidden")))
    assert any(w.startswith(f"label runtime.platform.io/workload: {label!r} is ignored for policy agent")
               for w in result.warnings)


def test_forbidden_policies_render_the_owner_profile() -> None:
    body = workloads_policy("[Service]", opt_out="Forbidden").replace(
        'labels: {injected: "yes"}', 'labels: {kind: "{{ workload.kind }}"}')
    labelled = owned_pod(("ReplicaSet", "web-5d8f7c9b6"), labels={**HASH, "runtime.platform.io/workload": "Other"})
    result = run(labelled, policies=policies_from_yaml(body))
    assert result.pod["metadata"]["labels"]["kind"] == "Service"


def test_an_opt_out_of_everything_still_gets_forbidden_policies_only() -> None:
    allowed = workloads_policy("[Pod]").replace("name: agent", "name: optional")
    pod = owned_pod(None)
    pod["metadata"]["annotations"] = {"runtime.platform.io/inject": "false"}
    result = run(pod, policies=policies_from_yaml(allowed, workloads_policy("[Pod]", opt_out="Forbidden")))
    assert result.applied == ("agent",)
    assert [(o.policy, o.applied) for o in result.outcomes] == [("agent", True), ("optional", False)]
    assert names(result.pod["spec"].get("initContainers")) == []


def test_an_ignored_label_warning_cuts_the_owner_kind_the_pod_wrote() -> None:
    pod = owned_pod(("K" * 5000, "x"), labels={"runtime.platform.io/workload": "Job"})
    result = run(pod, policies=policies_from_yaml(workloads_policy("[Other]", opt_out="Forbidden")))
    assert result.applied == ("agent",)
    warning = next(w for w in result.warnings if w.startswith("label runtime.platform.io/workload"))
    assert len(warning) < 250 and warning.endswith("KKK...)")


def test_policies_check_warns_of_a_mandatory_policy_the_author_can_still_leave() -> None:
    steered = workloads_policy("[Pod]", opt_out="Forbidden").replace(
        "match: {workloads: [Pod]}", "match: {podSelector: {matchLabels: {tier: web}}, exclude: {containers: [x]}}")
    warnings = [w.split(": ", 1)[1] for w in lint(policies_from_yaml(steered))]
    assert warnings == [
        "policy agent has optOut: Forbidden but matches on podSelector (the pod's labels), which the pod's author "
        "writes: a pod can still leave it that way",
        "policy agent has optOut: Forbidden but matches on exclude.containers (the pod's container names), which "
        "the pod's author writes: a pod can still leave it that way"]
    assert lint(policies_from_yaml(steered.replace("Forbidden", "Allowed"))) == []
