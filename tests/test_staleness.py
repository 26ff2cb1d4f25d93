"""Staleness that means something (engine/staleness.py): a running pod is stale for a policy
only when what the policy renders for it now differs from what it has; an image-only change
of injected containers is marked as one the Pod API can make in place. No HTTP: the pods are
what the webhook admitted, with the fields the API server defaults, as a list returns them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import jsonpatch
import pytest

from tests.conftest import SHIPPED_POLICIES
from tests.fake_kinds import pod_update_problems
from webhook.engine.inject import inject
from webhook.engine.ledger import LEDGER_ANNOTATION
from webhook.engine.staleness import (CHANGED, CURRENT, MISSING, REMOVED, SKIPPED, STALE, UNMATCHED, UNREADABLE,
                                      in_place_ops, pod_states)
from webhook.policy.loader import PolicySet, load_policy_sources

NS = "shop"
SHIPPER_IMAGE = "registry.platform.internal/runtime/log-shipper:3.1.0"
NEW_SHIPPER_IMAGE = "registry.platform.internal/runtime/log-shipper:3.2.0"
INJECTORS = ("identity", "traffic-proxy", "log-shipper")


def shipped(edit: Callable[[dict[str, str]], None] | None = None) -> PolicySet:
    files = {p.name: p.read_text() for p in sorted(SHIPPED_POLICIES.glob("*.yaml"))}
    if edit:
        edit(files)
    return load_policy_sources({k: v.encode() for k, v in files.items()})


def replace_in(name: str, old: str, new: str) -> Callable[[dict[str, str]], None]:
    def edit(files: dict[str, str]) -> None:
        assert old in files[name], (name, old)
        files[name] = files[name].replace(old, new)
    return edit


def remove(name: str) -> Callable[[dict[str, str]], None]:
    return lambda files: files.pop(name)


def authored(name: str = "web-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                                              "uid": "rs-1", "controller": True}]},
            "spec": {"serviceAccountName": "web",
                     "containers": [{"name": "app", "image": "registry.platform.internal/web:1",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                                   "limits": {"memory": "16Mi"}}}]}}


def running(pod: dict[str, Any], policies: PolicySet) -> dict[str, Any]:
    """The pod as a list returns it after the webhook admitted it: with the fields the API
    server defaults on every container, and status."""
    result = inject({**pod, "apiVersion": "v1", "kind": "Pod"}, namespace=NS, policies=policies)
    assert result.denial is None
    out = jsonpatch.apply_patch(pod, result.patch, in_place=False) if result.patch else copy.deepcopy(pod)
    spec = out["spec"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports", []):
            port.setdefault("protocol", "TCP")
    spec.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "nodeName": "node-a"})
    out["status"] = {"phase": "Running"}
    return out


def states(pod: dict[str, Any], policies: PolicySet) -> dict[str, tuple[str, str]]:
    standing = pod_states(pod, policies, namespace=NS)
    return {name: (s.state, s.reason) for name, s in standing.policies.items()}


CURRENT_ALL = {name: (CURRENT, "") for name in INJECTORS}

CASES: list[tuple[str, Callable[[dict[str, str]], None] | None, dict[str, tuple[str, str]]]] = [
    ("nothing changed", None, CURRENT_ALL),
    ("a description edit changes nothing for the pod",
     replace_in("inject-log-shipper.yaml", "description: Log shipping sidecar", "description: Ships logs"),
     CURRENT_ALL),
    ("an image bump", replace_in("inject-log-shipper.yaml", SHIPPER_IMAGE, NEW_SHIPPER_IMAGE),
     {**CURRENT_ALL, "log-shipper": (STALE, CHANGED)}),
    ("an argument changes", replace_in("inject-log-shipper.yaml", "--path=/var/log/app", "--path=/var/log"),
     {**CURRENT_ALL, "log-shipper": (STALE, CHANGED)}),
    ("the policy is gone", remove("inject-log-shipper.yaml"),
     {**CURRENT_ALL, "log-shipper": (STALE, REMOVED)}),
    ("the policy no longer selects the namespace",
     replace_in("inject-log-shipper.yaml", "exclude: [kube-system,", f"exclude: [{NS}, kube-system,"),
     {**CURRENT_ALL, "log-shipper": (STALE, UNMATCHED)}),
]


@pytest.mark.parametrize("title,edit,expected", CASES, ids=[c[0] for c in CASES])
def test_staleness_after_a_policy_change(title: str, edit: Callable[[dict[str, str]], None] | None,
                                         expected: dict[str, tuple[str, str]]) -> None:
    before = shipped()
    pod = running(authored(), before)
    after = shipped(edit)
    assert states(pod, after) == expected
    if edit is not None and "log-shipper" in {p.name for p in after.injectors}:
        old = next(p for p in before.injectors if p.name == "log-shipper").revision
        new = next(p for p in after.injectors if p.name == "log-shipper").revision
        assert old != new, "the edit must change the revision, or the case proves nothing"
        state = pod_states(pod, after, namespace=NS).policies["log-shipper"]
        assert (state.pod_revision, state.current_revision) == (old, new)


def test_an_image_bump_can_be_made_in_place_and_the_pod_is_then_current() -> None:
    pod = running(authored(), shipped())
    after = shipped(replace_in("inject-log-shipper.yaml", SHIPPER_IMAGE, NEW_SHIPPER_IMAGE))
    state = pod_states(pod, after, namespace=NS).policies["log-shipper"]
    assert state.in_place == {"log-shipper": NEW_SHIPPER_IMAGE}

    ops = in_place_ops(pod, "log-shipper", state.in_place, state.current_revision)
    updated = jsonpatch.apply_patch(pod, ops, in_place=False)
    assert pod_update_problems(pod, updated) == []       # the Pod API allows it
    assert states(updated, after) == CURRENT_ALL
    ledger = json.loads(updated["metadata"]["annotations"][LEDGER_ANNOTATION])
    assert {r["name"]: r["revision"] for r in ledger["policies"]}["log-shipper"] == state.current_revision

    changed = copy.deepcopy(pod)
    changed["metadata"]["annotations"][LEDGER_ANNOTATION] = changed["metadata"]["annotations"][LEDGER_ANNOTATION] + " "
    with pytest.raises(jsonpatch.JsonPatchTestFailed):   # the pod changed since it was read
        jsonpatch.apply_patch(changed, ops)


def test_a_change_beyond_images_is_not_in_place() -> None:
    pod = running(authored(), shipped())
    both = shipped(lambda files: [replace_in("inject-log-shipper.yaml", SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)(files),
                                  replace_in("inject-log-shipper.yaml", "--path=/var/log/app", "--path=/x")(files)])
    state = pod_states(pod, both, namespace=NS).policies["log-shipper"]
    assert (state.state, state.in_place) == (STALE, None)
    with pytest.raises(ValueError, match="not every container"):
        in_place_ops(pod, "log-shipper", {"app": "x"}, "r")


def test_pods_without_injection_and_with_a_broken_ledger() -> None:
    policies = shipped()
    bare = {**authored(), "status": {"phase": "Running"}}
    assert states(bare, policies) == {name: (STALE, MISSING) for name in INJECTORS}

    broken = running(authored(), policies)
    broken["metadata"]["annotations"][LEDGER_ANNOTATION] = "{not json"
    assert states(broken, policies) == {name: (STALE, UNREADABLE) for name in INJECTORS}


def test_a_skip_is_reported_with_its_reason() -> None:
    # The pod already has a container named like the proxy's: the policy skips itself or
    # refuses, and either way the pod is not counted as current for it.
    pod = authored()
    pod["spec"]["containers"].append({"name": "traffic-proxy", "image": "registry.example.com/envoy:1"})
    standing = pod_states({**pod, "status": {"phase": "Running"}}, shipped(), namespace=NS)
    proxy = standing.policies["traffic-proxy"]
    assert proxy.state == SKIPPED and proxy.reason
    assert proxy.in_place is None


def test_a_hand_edited_sidecar_is_stale_at_the_same_revision() -> None:
    policies = shipped()
    pod = running(authored(), policies)
    shipper = next(c for c in pod["spec"]["initContainers"] if c["name"] == "log-shipper")
    shipper["args"] = ["--path=/tmp"]
    state = pod_states(pod, policies, namespace=NS).policies["log-shipper"]
    assert (state.state, state.reason) == (STALE, CHANGED)
    assert state.pod_revision == state.current_revision
