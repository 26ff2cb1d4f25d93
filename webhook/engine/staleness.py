"""How a running pod stands against each injection policy: current, stale or skipped.

Staleness means the runtime would change: the pod is rendered again from what its author
wrote (the engine strips what the ledger says earlier passes added, exactly as on
reinvocation), and each policy's part of the result is compared with what the pod has. A
policy edit that renders the same for a pod (a comment, another workload's selector, a
field at its default) leaves the pod current although its ledger names an older revision.

Shared by `webhook report`, `webhook status` and the controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from webhook.core.jsonvalue import as_dict, dicts_in
from webhook.engine.applies import skip_reason
from webhook.engine.inject import inject
from webhook.engine.ledger import LEDGER_ANNOTATION, Ledger, LedgerError, PolicyRecord, parse_ledger
from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.engine.pod import pod_facts
from webhook.policy.common import Mode
from webhook.policy.loader import PolicySet

STALE, WOULD_DENY, UNKNOWN = "stale", "would-deny", "unknown"   # `webhook report` findings
CURRENT, SKIPPED = "current", "skipped"
State = Literal["current", "stale", "skipped"]

# Why a pod is stale for a policy.
MISSING = "missing"             # the policy applies now but the pod has none of it
CHANGED = "changed"             # the policy renders something else for this pod now
REMOVED = "removed"             # the pod has a policy that is no longer in the set
UNMATCHED = "unmatched"         # the pod has a policy that no longer applies to it
UNREADABLE = "unreadable-ledger"

# Fields the API server fills in when a pod is created (SetDefaults_Container and friends in
# k8s.io/kubernetes pkg/apis/core/v1/defaults.go): a running pod has them although no policy
# rendered them, so a key only the stored pod has is no difference when it is one of these.
API_DEFAULTED_KEYS = frozenset({
    "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",   # containers
    "protocol",                                                                # ports
    "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold", "scheme",  # probes
    "defaultMode", "apiVersion",      # configMap/secret/projected volumes; fieldRef
    "resources",                      # {} on every container of a defaulted pod
    "type",                           # hostPath
})


@dataclass(frozen=True, slots=True)
class PolicyState:
    """One injection policy's standing on one pod. A policy that does not match the pod
    (and that the pod does not carry) has no PolicyState at all.

    `in_place`: injected container name -> the image the policy renders now, when the ONLY
    difference between what the pod has and what the policy renders now is the image of
    containers this policy injects (what the Pod API lets one change in place); None
    otherwise, and always None unless `state` is stale."""
    state: State
    reason: str = ""                 # stale: missing | changed | removed | unmatched; skipped: why
    pod_revision: str = ""           # the revision the pod's ledger records ("" when none)
    current_revision: str = ""       # the revision the policy has now ("" when removed)
    in_place: Mapping[str, str] | None = None
    # Items the pod kept against the policy (the ledger's conflicts, onConflict: Keep).
    conflicts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.in_place is not None and not isinstance(self.in_place, MappingProxyType):
            object.__setattr__(self, "in_place", MappingProxyType(dict(self.in_place)))

    @property
    def detail(self) -> str:
        """One line for a person."""
        if self.state == SKIPPED:
            return self.reason
        if self.state == CURRENT:
            return "current" + (f" (kept by the pod: {', '.join(self.conflicts)})" if self.conflicts else "")
        return {MISSING: "would apply but is not injected",
                REMOVED: "is no longer in the policy set",
                UNMATCHED: "no longer applies to this pod",
                UNREADABLE: f"unreadable {LEDGER_ANNOTATION} annotation",
                }.get(self.reason, f"renders differently now (pod at revision {self.pod_revision or '?'}, "
                                   f"current {self.current_revision})"
                      + (" (images only: " + ", ".join(f"{c}={i}" for c, i in sorted(self.in_place.items())) + ")"
                         if self.in_place else ""))


@dataclass(frozen=True, slots=True)
class PodStanding:
    """Every policy's state on one pod, and whether admitting it now would be refused."""
    policies: Mapping[str, PolicyState]
    denial: str | None = None       # injection would refuse the pod as it is now


def pod_states(pod: Mapping[str, Any], policies: PolicySet, *, namespace: str,
               namespace_labels: NamespaceLabels = NOT_GIVEN) -> PodStanding:
    """Each injection policy's standing on a pod as the API server lists it (no kind needed).
    Raises NamespaceLabelsUnavailable when a policy's namespaceSelector needs labels that
    `namespace_labels` does not know."""
    pod = {**pod, "apiVersion": "v1", "kind": "Pod"}   # list items carry neither
    metadata = as_dict(pod.get("metadata"))
    current = {p.name: p.revision for p in policies.injectors}
    states: dict[str, PolicyState] = {}
    old = Ledger()
    raw = as_dict(metadata.get("annotations")).get(LEDGER_ANNOTATION)
    if isinstance(raw, str):
        try:
            old = parse_ledger(raw)
        except LedgerError:
            # It vouches for nothing: every policy that applies renders afresh, and the pod
            # keeps containers nobody can attribute, so it is stale for each of them.
            facts = pod_facts(pod, namespace=namespace, namespace_labels=namespace_labels)
            for policy in policies.injectors:
                if policy.mode is not Mode.SHADOW and skip_reason(policy, facts) is None:
                    states[policy.name] = PolicyState(STALE, UNREADABLE, "", policy.revision)
            return PodStanding(states)
    result = inject(pod, namespace=namespace, policies=policies, namespace_labels=namespace_labels)
    unchanged = not result.patch and result.denial is None
    seen: set[str] = set()
    for outcome in result.outcomes:
        seen.add(outcome.policy)
        if outcome.shadow:
            continue
        was = old.record(outcome.policy)
        revision = current[outcome.policy]
        if outcome.applied and outcome.record is not None and result.denial is not None:
            # Injection refused the pod, so nothing was rendered to compare with: its
            # ledger's revision is all there is to go by.
            states[outcome.policy] = _by_revision(was, revision) if was else PolicyState(STALE, MISSING, "", revision)
        elif outcome.applied and outcome.record is not None:
            now = outcome.record
            conflicts = tuple(_conflict_text(c) for c in now.conflicts if c.get("resolution") == "Keep")
            if was is None:
                states[outcome.policy] = PolicyState(STALE, MISSING, "", revision)
            elif unchanged:
                states[outcome.policy] = PolicyState(CURRENT, "", was.revision, revision, conflicts=conflicts)
            else:
                same_items = _same_record(was, now)
                before, after = _footprint(pod, was), _footprint(result.pod, now)
                if same_items and _same(before, after):
                    states[outcome.policy] = PolicyState(CURRENT, "", was.revision, revision, conflicts=conflicts)
                else:
                    states[outcome.policy] = PolicyState(STALE, CHANGED, was.revision, revision,
                                                         in_place=_images_only(before, after) if same_items else None)
        elif outcome.why.startswith(("skipped: ", "denied: ")):
            states[outcome.policy] = PolicyState(SKIPPED, outcome.why, was.revision if was else "", revision)
        elif was is not None:
            states[outcome.policy] = PolicyState(STALE, UNMATCHED, was.revision, revision)
    for record in old.policies:
        if record.name not in current:
            states[record.name] = PolicyState(STALE, REMOVED, record.revision, "")
        elif record.name not in seen and record.name not in states:
            # Injection stopped before this policy (a denial by an earlier one): what the pod
            # has of it cannot be compared; its revision is all there is to go by.
            states[record.name] = _by_revision(record, current[record.name])
    return PodStanding(states, result.denial)


def in_place_ops(pod: Mapping[str, Any], policy: str, images: Mapping[str, str], revision: str) -> list[dict[str, Any]]:
    """The JSON patch that brings a pod to `policy`'s `revision` in place: the images of the
    containers it injects, and the ledger's revision for it (the other records unchanged), each
    guarded by a test of the value it replaces so a pod changed meanwhile is refused (422)."""
    metadata = as_dict(pod.get("metadata"))
    spec = as_dict(pod.get("spec"))
    raw = as_dict(metadata.get("annotations")).get(LEDGER_ANNOTATION)
    if not isinstance(raw, str):
        raise ValueError("the pod has no ledger")
    ledger = parse_ledger(raw)
    record = ledger.record(policy)
    if record is None:
        raise ValueError(f"the pod's ledger has no record of {policy}")
    ops: list[dict[str, Any]] = []
    for key in ("initContainers", "containers"):
        for index, container in enumerate(dicts_in(spec.get(key))):
            name = container.get("name")
            if isinstance(name, str) and name in images and name in record.containers:
                path = f"/spec/{key}/{index}"
                ops += [{"op": "test", "path": f"{path}/name", "value": name},
                        {"op": "replace", "path": f"{path}/image", "value": images[name]}]
    if len(ops) != 2 * len(images):
        raise ValueError(f"not every container of {sorted(images)} is one {policy} injected into this pod")
    record.revision = revision
    pointer = "/metadata/annotations/" + LEDGER_ANNOTATION.replace("~", "~0").replace("/", "~1")
    return ops + [{"op": "test", "path": pointer, "value": raw},
                  {"op": "replace", "path": pointer, "value": ledger.dumps()}]


# -- comparing one policy's part of a pod ----------------------------------------------------

def _by_revision(record: PolicyRecord, revision: str) -> PolicyState:
    if record.revision == revision:
        return PolicyState(CURRENT, "", record.revision, revision)
    return PolicyState(STALE, CHANGED, record.revision, revision)


def _conflict_text(conflict: Mapping[str, str]) -> str:
    where = conflict.get("container")
    return f"{conflict.get('kind', '?')} {conflict.get('name', '?')}" + (f" in {where}" if where else "")


def _same_record(old: PolicyRecord, new: PolicyRecord) -> bool:
    """The same items by name (what changes with the revision alone is not a difference)."""
    return (sorted(old.containers) == sorted(new.containers) and sorted(old.volumes) == sorted(new.volumes)
            and _sorted_map(old.env) == _sorted_map(new.env) and _sorted_map(old.mounts) == _sorted_map(new.mounts)
            and sorted(old.labels) == sorted(new.labels) and sorted(old.annotations) == sorted(new.annotations))


def _sorted_map(value: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in value.items() if v}


def _footprint(pod: Mapping[str, Any], record: PolicyRecord) -> dict[str, Any]:
    """What `record` says its policy put into `pod`, keyed so that two renders compare."""
    metadata, spec = as_dict(pod.get("metadata")), as_dict(pod.get("spec"))
    labels, annotations = as_dict(metadata.get("labels")), as_dict(metadata.get("annotations"))
    containers: dict[str, Any] = {}
    env: dict[str, Any] = {}
    mounts: dict[str, Any] = {}
    for key in ("initContainers", "containers"):
        for container in dicts_in(spec.get(key)):
            name = container.get("name")
            if name in record.containers:
                containers[name] = (key, container)
            for entry in dicts_in(container.get("env")):
                if entry.get("name") in record.env.get(str(name), ()):
                    env[f"{name}/{entry.get('name')}"] = entry
            for entry in dicts_in(container.get("volumeMounts")):
                if entry.get("mountPath") in record.mounts.get(str(name), ()):
                    mounts[f"{name}/{entry.get('mountPath')}"] = entry
    return {"containers": containers, "env": env, "mounts": mounts,
            "volumes": {v.get("name"): v for v in dicts_in(spec.get("volumes")) if v.get("name") in record.volumes},
            "labels": {k: labels.get(k) for k in record.labels},
            "annotations": {k: annotations.get(k) for k in record.annotations}}


def _same(stored: Any, rendered: Any) -> bool:
    """`stored` (the pod as the API server keeps it) holds what `rendered` does; keys only
    the stored value has count only when the API server would not have defaulted them."""
    if isinstance(rendered, dict):
        if not isinstance(stored, dict):
            return False
        if stored == rendered:   # most parts: no default in them (compared in C)
            return True
        for key, value in rendered.items():
            if key not in stored:
                if value in ({}, [], None):   # the API server drops empty values
                    continue
                return False
            if not _same(stored[key], value):
                return False
        return all(key in rendered or key in API_DEFAULTED_KEYS for key in stored)
    if isinstance(rendered, (list, tuple)):
        return (isinstance(stored, (list, tuple)) and len(stored) == len(rendered)
                and all(_same(s, r) for s, r in zip(stored, rendered)))
    return bool(stored == rendered and type(stored) is type(rendered))


def _images_only(before: dict[str, Any], after: dict[str, Any]) -> dict[str, str] | None:
    """Container -> new image when images of this policy's containers are all that differ
    between its footprint in the pod (`before`) and in the render (`after`)."""
    images: dict[str, str] = {}
    for name, (section, container) in after["containers"].items():
        had = before["containers"].get(name)
        if had is None or had[0] != section:
            return None
        image = container.get("image")
        if isinstance(image, str) and image != had[1].get("image"):
            images[name] = image
    if not images:
        return None
    after = {**after, "containers": {
        name: (section, {**container, "image": before["containers"][name][1].get("image")})
        for name, (section, container) in after["containers"].items()}}
    return images if _same(before, after) else None
