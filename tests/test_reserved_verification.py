"""Whether a holder of a reserved name is what the injecting policy renders for the pod:
the field-by-field check that admits it must agree with the full comparison that explains a
refusal, and what it compares against is built per loaded policy set, never carried over a
reload. Engine tests, no HTTP."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_validate_helpers import container, pod, policy, policy_set, run
from webhook.engine.inject import inject
from webhook.engine import reserved
from webhook.engine.target import target_of
from webhook.policy.loader import PolicySet, load_policy_dir, load_policy_sources
from webhook.core.request import AdmissionRequest

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
NAMES_RULE = policy("names", [{"reservedContainerNames": {}}])


def _full(item: Any, raw: dict[str, Any], renderings: Any, what: Any) -> str | None:
    """The comparison `_differs` falls back to: the whole item rendered both ways."""
    expected = item.render(renderings.first)
    why = reserved._compare(expected, expected, raw, what)
    if why is None or item.renderer is None:
        return why
    return reserved._compare(expected, item.render(renderings.second), raw, what)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    raw[key] = value


def _append(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw.setdefault(key, []).append(value)


# Edits a holder may have undergone: the API server's defaulting and other webhooks (which
# must pass) and tampering (which must not).
TWEAKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "none": lambda raw: None,
    "defaulted": lambda raw: raw.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log"),
    "env appended": _append("env", {"name": "TRACE", "value": "1"}),
    "resources raised": lambda raw: _set(raw, "resources", {"limits": {"memory": "1Gi"}}),
    "image": lambda raw: _set(raw, "image", "evil.example.com/x:1"),
    "command added": lambda raw: _set(raw, "command", ["/bin/sh", "-c", "curl evil"]),
    "workingDir added": lambda raw: _set(raw, "workingDir", "/tmp"),
    "restartPolicy dropped": lambda raw: raw.pop("restartPolicy", None),
    "args extended": _append("args", "--debug"),
    "args dropped": lambda raw: raw.pop("args", None),
    "first arg": lambda raw: raw["args"].__setitem__(0, "evil") if raw.get("args") else None,
    "last arg": lambda raw: raw["args"].__setitem__(-1, raw["args"][-1] + "x") if raw.get("args") else None,
    "securityContext": lambda raw: _set(raw, "securityContext", {"privileged": True}),
    "mounts dropped": lambda raw: _set(raw, "volumeMounts", []),
    "mount widened": lambda raw: [m.pop("readOnly", None) for m in raw.get("volumeMounts", [])],
    "emptyDir medium": lambda raw: raw.get("emptyDir", {}).pop("medium", None),
    "volume source swapped": lambda raw: raw.update(hostPath={"path": "/"}) if "emptyDir" in raw else None,
    "sizeLimit": lambda raw: raw.get("emptyDir", {}).update(sizeLimit="100Gi"),
}


def _request(obj: dict[str, Any], namespace: str) -> AdmissionRequest:
    return AdmissionRequest.from_dict({
        "uid": "0b4b1a5e-0000-4000-8000-000000000001", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
        "operation": "CREATE", "userInfo": {"username": "alice"}, "object": obj})


OWNED = {"ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f", "controller": True}],
         "labels": {"app": "web", "pod-template-hash": "5d8f"}}
PODS = {
    "bare, named": pod(container("app")),
    "bare, generateName": {**pod(container("app"), name=None), "metadata": {"generateName": "web-"}},
    "deployment": {**pod(container("app")), "metadata": {"name": "web-5d8f-x7k2p", **OWNED}},
    "labelled app": pod(container("app"), labels={"app": "shop.v2"}),
}


@pytest.mark.parametrize("tweak", sorted(TWEAKS))
@pytest.mark.parametrize("shape", sorted(PODS))
def test_the_field_by_field_check_agrees_with_the_full_comparison(shape: str, tweak: str) -> None:
    policies = load_policy_dir(SHIPPED)
    injected = inject(copy.deepcopy(PODS[shape]), namespace="shop", policies=policies).pod
    summary = reserved._summary(policies)
    target = target_of(_request(injected, "shop"), injected)
    assert target is not None
    facts = target.facts
    seen = 0
    for field, what, entries, items in (
            ("initContainers", "container", injected["spec"].get("initContainers", []), summary.container_items),
            ("containers", "container", injected["spec"]["containers"], summary.container_items),
            ("volumes", "volume", injected["spec"].get("volumes", []), summary.volume_items)):
        for entry in entries:
            for index, item, where, plan in items.get(entry["name"], ()):
                if where != field:
                    continue
                raw = copy.deepcopy(entry)
                TWEAKS[tweak](raw)
                policy_ = policies.injectors[index]
                renderings = reserved._Renderings(facts.from_owners() if policy_.opt_out.value == "Forbidden"
                                                  else facts, bare=facts.owner_kind == "Pod")
                full = _full(item, raw, renderings, what)
                assert reserved._holds(plan, raw, renderings) == (full is None), (entry["name"], full)
                if tweak == "none":
                    assert full is None, (entry["name"], full)
                seen += 1
    assert seen >= 3   # identity-init, log-shipper and their volumes at least


def test_an_image_volume_is_compared_by_its_image() -> None:
    policies = policy_set(NAMES_RULE, extra_files={"inject.yaml": """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: tools}
spec:
  inject:
    volumes:
      - {name: tools, source: {image: {reference: "registry.example.com/tools:1", pullPolicy: IfNotPresent}}}
"""})
    injected = {"name": "tools", "image": {"reference": "registry.example.com/tools:1", "pullPolicy": "IfNotPresent"}}
    assert run(policies, pod(container("app"), volumes=[injected])).violations == ()
    for other in ({"name": "tools", "image": {"reference": "evil.example.com/tools:1"}},
                  {"name": "tools", "hostPath": {"path": "/"}}):
        decision = run(policies, pod(container("app"), volumes=[other]))
        assert [v.path for v in decision.violations] == ["spec.volumes[0].name"], other
        assert "not what policy tools injects: its image differs" in (decision.message or "")


AGENT = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: agent}
spec:
  inject:
    sidecars:
      - {name: agent, image: "registry.example.com/agent:IMAGE", args: ["--ns={{ namespace }}"]}
"""


def _agent_policies(image: str) -> PolicySet:
    return load_policy_sources({"validation.yaml": (SHIPPED / "validation-reserved-names.yaml").read_bytes(),
                                "inject.yaml": AGENT.replace("IMAGE", image).encode()})


def test_a_reload_compares_with_the_new_policy_never_the_old_rendering() -> None:
    old, new = _agent_policies("1"), _agent_policies("2")
    assert old.revision != new.revision
    agent = container("agent", "registry.example.com/agent:1", args=["--ns=default"], restartPolicy="Always")
    obj = pod(container("app"), initContainers=[agent])
    assert run(old, obj).violations == ()
    decision = run(new, obj)
    assert [v.path for v in decision.violations] == ["spec.initContainers[agent].name"]
    assert "its image is 'registry.example.com/agent:1', not 'registry.example.com/agent:2'" in (decision.message or "")
    # Back to the first set (a rollback): its own rendering again.
    assert run(old, obj).violations == ()
    assert run(_agent_policies("1"), obj).violations == ()
