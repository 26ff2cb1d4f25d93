"""What /validate evaluates: the pod of a Pod request, or the pod template of a controller.

A Deployment is checked at `kubectl apply` through its template, so a user sees the
denial there rather than a ReplicaSet that silently fails to create pods. Paths in
messages carry the template prefix (`spec.template.`) so they point into the object
the user actually wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.engine.pod import PodFacts, label_profile, pod_facts
from webhook.core.jsonvalue import as_dict, as_list, as_str
from webhook.policy.common import Workload
from webhook.core.request import AdmissionRequest, object_kind

# (API group, kind) -> where the pod template sits, and the workload kind its pods get.
_TEMPLATE = ("spec", "template")
CONTROLLERS: dict[tuple[str, str], tuple[tuple[str, ...], Workload]] = {
    ("apps", "Deployment"): (_TEMPLATE, Workload.SERVICE),
    ("apps", "ReplicaSet"): (_TEMPLATE, Workload.SERVICE),
    ("apps", "StatefulSet"): (_TEMPLATE, Workload.STATEFUL_SET),
    ("apps", "DaemonSet"): (_TEMPLATE, Workload.DAEMON_SET),
    ("batch", "Job"): (_TEMPLATE, Workload.JOB),
    ("batch", "CronJob"): (("spec", "jobTemplate", "spec", "template"), Workload.CRON_JOB),
    ("", "ReplicationController"): (_TEMPLATE, Workload.SERVICE),
}
POD = ("", "Pod")


@dataclass(frozen=True)
class Target:
    kind: str                      # the request's kind: Pod, Deployment, ...
    metadata: Mapping[str, Any]    # the pod's metadata, or the template's
    spec: Mapping[str, Any]        # the pod's spec, or the template's
    prefix: str                    # "" for a pod, e.g. "spec.template." for a Deployment
    facts: PodFacts

    @property
    def is_template(self) -> bool:
        return bool(self.prefix)

    def path(self, relative: str) -> str:
        """A pod-relative path as a path in the request's object."""
        if not relative:
            return self.prefix.rstrip(".")
        return self.prefix + relative

    def as_pod(self) -> dict[str, Any]:
        """The pod as CEL's `object` sees it: a template is presented as the Pod it becomes,
        so one expression serves pods and controllers alike."""
        metadata = dict(self.metadata)
        metadata.setdefault("namespace", self.facts.namespace)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": dict(self.spec)}

    def evaluated_view(self) -> tuple[Any, ...]:
        """What an UPDATE must change for the object to be evaluated again (see `unchanged`)."""
        if self.is_template:
            return (self.metadata.get("labels"), self.metadata.get("annotations"), self.spec)
        return (self.spec,)


def at_path(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The mapping at `path` inside `obj` (a controller's pod template); {} when absent."""
    value: Any = obj
    for key in path:
        value = as_dict(value).get(key)
    return as_dict(value)


def request_kind(request: AdmissionRequest, obj: Mapping[str, Any]) -> tuple[str, str]:
    """(group, kind) from the request; from the object's apiVersion/kind when the request has none."""
    if request.kind.kind:
        return request.kind.group, request.kind.kind
    return object_kind(obj)


def target_of(request: AdmissionRequest, obj: Any, *, namespace_labels: NamespaceLabels = NOT_GIVEN) -> Target | None:
    """The pod to evaluate in `obj` (the request's object or oldObject); None when the kind is
    not one we validate or `obj` is not an object."""
    if not isinstance(obj, dict):
        return None
    group, kind = request_kind(request, obj)
    metadata = as_dict(obj.get("metadata"))
    # The object's namespace may be absent on CREATE; the request's is authoritative.
    namespace = request.namespace or as_str(metadata.get("namespace"))
    if (group, kind) == POD:
        facts = pod_facts(obj, namespace=namespace, namespace_labels=namespace_labels)
        return Target(kind=kind, metadata=metadata, spec=as_dict(obj.get("spec")), prefix="", facts=facts)
    controller = CONTROLLERS.get((group, kind))
    if controller is None:
        return None
    where, workload = controller
    template = at_path(obj, where)
    t_metadata = as_dict(template.get("metadata"))
    t_spec = as_dict(template.get("spec"))
    facts = pod_facts({"metadata": t_metadata, "spec": t_spec}, namespace=namespace,
                      namespace_labels=namespace_labels)
    # The kind its pods will show (see pod.owner_of): a Deployment's ReplicaSet and a
    # CronJob's Job count as their owner, as their pods do.
    owner_kind = kind
    if kind == "Job" and _owned_by(metadata, "CronJob"):
        owner_kind, workload = "CronJob", Workload.CRON_JOB
    elif kind == "ReplicaSet" and _owned_by(metadata, "Deployment"):
        owner_kind = "Deployment"
    facts = dataclasses.replace(facts, workload_kind=label_profile(facts.labels) or workload,
                                workload_name=as_str(metadata.get("name")), owner_kind=owner_kind,
                                owner_profile=workload)
    return Target(kind=kind, metadata=t_metadata, spec=t_spec, prefix=".".join(where) + ".", facts=facts)


def _owned_by(metadata: Mapping[str, Any], kind: str) -> bool:
    return any(isinstance(o, dict) and o.get("kind") == kind for o in as_list(metadata.get("ownerReferences")))
