"""Whether a policy's `match` selects a pod; every miss comes with a reason (for explain)."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.engine.namespaces import known_labels
from webhook.engine.pod import PodFacts
from webhook.policy.common import LabelSelector, Match



def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics; an empty selector matches everything."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def mismatch(match: Match, facts: PodFacts) -> str | None:
    """None when the pod is selected, otherwise why not."""
    namespaces = match.namespaces
    if not namespaces.includes(facts.namespace):
        return f"namespace {facts.namespace!r} is not in include {namespaces.include}"
    excluded_by = namespaces.excluded_by(facts.namespace)
    if excluded_by is not None:
        return f"namespace {facts.namespace!r} is excluded by {excluded_by!r}"
    if match.namespace_selector is not None:
        miss = namespace_selector_mismatch(match.namespace_selector, facts)
        if miss is not None:
            return miss
    if match.pod_selector is not None and not selector_matches(match.pod_selector, facts.labels):
        return "podSelector does not match the pod's labels"
    if match.workloads and not workload_selected(match, facts):
        return f"workload {workload_text(facts)} is not in {match.workloads}"
    if match.os and facts.os not in match.os:
        return f"pod OS {facts.os} is not in {match.os}"
    if match.host_network is not None and facts.host_network != match.host_network:
        return f"pod hostNetwork is {str(facts.host_network).lower()}"
    excluded = match.exclude.containers
    if excluded and not facts.container_names.isdisjoint(excluded):
        present = next(n for n in excluded if n in facts.container_names)
        return f"pod already has container {present!r} (match.exclude.containers)"
    return None


def workload_selected(match: Match, facts: PodFacts) -> bool:
    """See Match.selects_workload."""
    return match.selects_workload(facts.workload_kind, facts.owner_kind)


def workload_text(facts: PodFacts) -> str:
    """`Deployment (profile Service)`, or just `Job` when kind and profile are one name."""
    if facts.owner_kind == facts.workload_kind.value:
        return facts.owner_kind
    return f"{facts.owner_kind} (profile {facts.workload_kind.value})"


def namespace_selector_mismatch(selector: LabelSelector, facts: PodFacts) -> str | None:
    """Why the namespace's labels miss `selector` (naming them), or None. Raises
    NamespaceLabelsUnavailable when they are unknown: never a silent non-match."""
    labels = known_labels(facts.namespace, facts.namespace_labels)
    if selector_matches(selector, labels):
        return None
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
    return f"namespaceSelector does not match namespace {facts.namespace!r} (its labels: {shown})"
