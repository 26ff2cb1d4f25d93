"""Namespace labels as the engine sees them: known, or unknown with a reason.

An AdmissionReview carries the pod's namespace by name only; its labels come from
outside the engine (the server's namespace cache, the offline tools' input), handed
in with the request. A policy whose `match.namespaceSelector` needs labels that are
unknown must not read that as "no labels": a silent non-match would skip mandatory
runtime. The engine raises NamespaceLabelsUnavailable instead, and the caller applies
its failure rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.policy.loader import PolicySet


@dataclass(frozen=True)
class LabelsUnknown:
    """Why a namespace's labels are not known."""

    reason: str
    # The labels may be known in a moment (the cache is still syncing, or the namespace
    # is newer than what the cache has seen): worth a brief wait before the failure rule.
    pending: bool = False


NamespaceLabels = Mapping[str, str] | LabelsUnknown
NOT_GIVEN = LabelsUnknown("no namespace labels were given")


class NamespaceLabelsUnavailable(Exception):
    """A policy with a namespaceSelector met a namespace whose labels are unknown."""

    def __init__(self, namespace: str, unknown: LabelsUnknown) -> None:
        super().__init__(f"the labels of namespace {namespace!r} are not known ({unknown.reason})")
        self.namespace = namespace
        self.unknown = unknown


def known_labels(namespace: str, labels: NamespaceLabels) -> Mapping[str, str]:
    if isinstance(labels, LabelsUnknown):
        raise NamespaceLabelsUnavailable(namespace, labels)
    return labels


def needs_namespace_labels(policies: PolicySet) -> bool:
    """Whether any loaded policy matches namespaces by label."""
    return any(p.spec.match.namespace_selector is not None for p in (*policies.injection, *policies.validation))
