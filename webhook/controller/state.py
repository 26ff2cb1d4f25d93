"""The controller's cache: PodViews and WorkloadViews built from what the watches deliver.

Whole objects are read, reduced and dropped: a pod becomes a PodView (its policies'
states computed at once by engine/staleness), a Deployment, StatefulSet or DaemonSet a
WorkloadView, a ReplicaSet or Job only the owner it points to. Re-evaluating pods after a
policy change or a namespace's labels changing needs their specs again, which the cache
does not keep: the watcher lists the pods again (`Watcher.relist`), and each comes back
through `upsert` and is evaluated with what is current then.

Watch threads write, the reconcile loop reads a snapshot; one lock guards both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from webhook.controller import health
from webhook.controller.model import (BARE_POD, CRONJOB, DAEMONSET, DEPLOYMENT, JOB, STATEFULSET, PodView,
                                      WorkloadRef, WorkloadView)
from webhook.controller.reading import controller_of, failing_containers, pod_ready, selects
from webhook.core.jsonvalue import as_dict
from webhook.engine.ledger import ledger_of
from webhook.engine.namespaces import LabelsUnknown, NamespaceLabelsUnavailable, needs_namespace_labels
from webhook.engine.staleness import pod_states
from webhook.policy.loader import PolicySet

log = logging.getLogger(__name__)

Key = tuple[str, str]       # (namespace, name)
_WORKLOAD_KINDS = {"deployments": DEPLOYMENT, "statefulsets": STATEFULSET, "daemonsets": DAEMONSET}


@dataclass(frozen=True)
class Snapshot:
    """A consistent, read-only ClusterView (webhook.controller.model.ClusterView)."""
    epoch: int
    by_owner: Mapping[WorkloadRef, tuple[PodView, ...]]
    workload_views: Mapping[WorkloadRef, WorkloadView]
    labels: Mapping[str, Mapping[str, str]]
    policies: PolicySet | None = None
    unevaluated: int = 0      # pods whose namespace's labels were not known yet
    pod_count: int = field(default=0)
    outdated: int = 0         # pods last evaluated with other policies (a relist under way)

    @property
    def settled(self) -> bool:
        """Every pod evaluated with the current policies: safe to act on."""
        return self.unevaluated == 0 and self.outdated == 0

    def workloads(self) -> Mapping[WorkloadRef, WorkloadView]:
        return self.workload_views

    def workload(self, ref: WorkloadRef) -> WorkloadView | None:
        return self.workload_views.get(ref)

    def pods_of(self, ref: WorkloadRef) -> tuple[PodView, ...]:
        return self.by_owner.get(ref, ())

    def owners(self) -> Iterable[WorkloadRef]:
        return sorted(self.by_owner)

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.labels.get(namespace)

    def pods(self) -> Iterable[PodView]:
        for ref in sorted(self.by_owner):
            yield from self.by_owner[ref]


class ClusterState:
    def __init__(self, policies: PolicySet) -> None:
        self._lock = threading.Lock()
        self._policies = policies
        self._needs_labels = needs_namespace_labels(policies)
        self._pods: dict[str, PodView] = {}                      # uid -> view
        self._pod_keys: dict[Key, str] = {}                      # (namespace, name) -> uid
        # uid -> its controllerRef (kind, apiVersion, name, uid), and the pods by (kind, apiVersion, name)
        self._direct: dict[str, tuple[str, str, str, str]] = {}
        self._by_direct: dict[tuple[str, str, str], set[str]] = {}
        self._pod_labels: dict[str, Mapping[str, str]] = {}       # uid -> labels, to check a selector
        self._by_owner: dict[WorkloadRef, dict[str, PodView]] = {}
        self._unevaluated: set[str] = set()
        # The controllers pods name (ReplicaSets, StatefulSets, DaemonSets, Jobs) by
        # (kind, namespace, name): what a pod's claim to one is checked against.
        self._controllers: dict[tuple[str, str, str], _Controller] = {}
        self._workloads: dict[WorkloadRef, WorkloadView] = {}
        self._labels: dict[str, Mapping[str, str]] = {}
        self._labels_known = False
        self._label_versions: dict[str, int] = {}   # namespace -> changes seen (0: never)
        self._policy_version = 0
        # Namespaces whose pods need evaluating again ("" alone: every pod).
        self._relabelled: set[str] = set()
        # uid -> (policy version, label version) the pod's states were computed with
        self._evaluated_with: dict[str, tuple[int, int]] = {}
        self.epoch = 0
        self._snapshot: Snapshot | None = None

    # -- policies ---------------------------------------------------------------------------

    @property
    def policies(self) -> PolicySet:
        return self._policies

    def set_policies(self, policies: PolicySet) -> None:
        """New policies: pods are evaluated with them as they come back (a relist)."""
        with self._lock:
            self._policies = policies
            self._policy_version += 1
            self._needs_labels = needs_namespace_labels(policies)
            self._bump()

    @property
    def needs_labels(self) -> bool:
        return self._needs_labels

    # -- what the watches deliver ---------------------------------------------------------------

    def upsert(self, resource: str, obj: Mapping[str, Any]) -> None:
        metadata = as_dict(obj.get("metadata"))
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        if resource == "pods":
            self._upsert_pod(obj, metadata, namespace, name)
            return
        with self._lock:
            if resource == "namespaces":
                labels = MappingProxyType({k: v for k, v in as_dict(metadata.get("labels")).items()
                                           if isinstance(k, str) and isinstance(v, str)})
                if self._labels.get(name) != labels:
                    if name in self._labels and self._needs_labels:
                        self._relabelled.add(name)
                    self._labels[name] = labels
                    self._label_versions[name] = self._label_versions.get(name, 0) + 1
                    self._bump()
            elif resource in _CONTROLLER_KINDS:
                self._register(_CONTROLLER_KINDS[resource], namespace, name, obj)
            if resource in _WORKLOAD_KINDS:
                view = workload_view(_WORKLOAD_KINDS[resource], obj)
                before = self._workloads.get(view.ref)
                if before != view:
                    self._workloads[view.ref] = view
                    if view.ref.kind == DEPLOYMENT and (before is None or before.uid != view.uid):
                        self._reresolve_deployment(view.ref)
                    self._bump()

    def delete(self, resource: str, obj: Mapping[str, Any]) -> None:
        metadata = as_dict(obj.get("metadata"))
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        with self._lock:
            if resource == "pods":
                uid = str(metadata.get("uid") or "") or self._pod_keys.get((namespace, name), "")
                self._drop_pod(uid)
            elif resource == "namespaces":
                if self._labels.pop(name, None) is not None:
                    self._label_versions[name] = self._label_versions.get(name, 0) + 1
                    self._bump()
            elif resource in _CONTROLLER_KINDS:
                kind = _CONTROLLER_KINDS[resource]
                if self._controllers.pop((kind, namespace, name), None) is not None:
                    self._reresolve(kind, namespace, name)
            if resource in _WORKLOAD_KINDS:
                ref = WorkloadRef(_WORKLOAD_KINDS[resource], namespace, name)
                if self._workloads.pop(ref, None):
                    if ref.kind == DEPLOYMENT:
                        self._reresolve_deployment(ref)
                    self._bump()

    def keys(self, resource: str) -> set[Key]:
        """What the cache holds of a resource, for a relist to drop what is gone."""
        with self._lock:
            if resource == "pods":
                return set(self._pod_keys)
            if resource == "namespaces":
                return {("", n) for n in self._labels}
            if resource in ("replicasets", "jobs"):
                kind = _CONTROLLER_KINDS[resource]
                return {(ns, name) for k, ns, name in self._controllers if k == kind}
            kind = _WORKLOAD_KINDS.get(resource)
            return {(r.namespace, r.name) for r in self._workloads if r.kind == kind}

    def forget(self, resource: str, keys: Iterable[Key]) -> None:
        for namespace, name in keys:
            self.delete(resource, {"metadata": {"namespace": namespace, "name": name}})

    def labels_synced(self) -> None:
        with self._lock:
            if not self._labels_known and self._unevaluated:
                self._relabelled.add("")   # pods that came first wait for their labels
            self._labels_known = True
            self._bump()

    def take_relabelled(self) -> set[str]:
        """The namespaces whose pods need evaluating again because labels a policy selects
        on changed ("" for every namespace: the labels arrived after the pods); reading it
        clears it."""
        with self._lock:
            out, self._relabelled = self._relabelled, set()
            return out

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None or self._snapshot.epoch != self.epoch:
                self._snapshot = Snapshot(
                    epoch=self.epoch,
                    by_owner={ref: tuple(sorted(pods.values(), key=lambda p: p.name))
                              for ref, pods in self._by_owner.items()},
                    workload_views=dict(self._workloads), labels=dict(self._labels),
                    policies=self._policies, unevaluated=len(self._unevaluated), pod_count=len(self._pods),
                    outdated=sum(1 for version, _ in self._evaluated_with.values()
                                 if version != self._policy_version))
            return self._snapshot

    def pod(self, namespace: str, name: str) -> PodView | None:
        with self._lock:
            uid = self._pod_keys.get((namespace, name))
            return self._pods.get(uid) if uid else None

    @property
    def unevaluated(self) -> int:
        return len(self._unevaluated)

    # -- internals --------------------------------------------------------------------------

    def _bump(self) -> None:
        self.epoch += 1

    def _upsert_pod(self, obj: Mapping[str, Any], metadata: Mapping[str, Any], namespace: str, name: str) -> None:
        uid = str(metadata.get("uid") or f"{namespace}/{name}")
        version = str(metadata.get("resourceVersion") or "")
        with self._lock:
            policies, labels_known = self._policies, self._labels_known or not self._needs_labels
            evaluated_with = (self._policy_version, self._labels_epoch(namespace))
            previous = self._pods.get(uid)
            labels: Any = self._labels.get(namespace, LabelsUnknown("the namespace is not known (yet)", True)) \
                if self._needs_labels else {}
            if (previous is not None and previous.resource_version == version and version
                    and self._evaluated_with.get(uid) == evaluated_with):
                return   # a relist brought the same pod back, evaluated with the same policies
        controller = controller_of(metadata)
        evaluated = True
        try:
            standing = pod_states(obj, policies, namespace=namespace,
                                  namespace_labels=labels if labels_known else
                                  LabelsUnknown("namespaces not listed yet", True))
            states = standing.policies
        except NamespaceLabelsUnavailable:
            states, evaluated = {}, False
        except Exception:  # noqa: BLE001 - one pod the engine cannot read must not stop the watch
            log.exception("pod %s/%s could not be evaluated; reported with no policy state", namespace, name,
                          extra={"event": "controller_pod", "namespace": namespace, "pod": name})
            states = {}
        status = as_dict(obj.get("status"))
        injected = {c for record in ledger_of(as_dict(metadata.get("annotations"))).policies
                    for c in record.containers}
        pod_labels = MappingProxyType({k: v for k, v in as_dict(metadata.get("labels")).items()
                                       if isinstance(k, str) and isinstance(v, str)})
        with self._lock:
            owner = self._resolve(controller, namespace, name, pod_labels)
            view = PodView(namespace=namespace, name=name, uid=uid, owner=owner,
                           phase=str(status.get("phase") or "Pending"), ready=pod_ready(status),
                           policies=states, crashlooping=failing_containers(status, injected), resource_version=version)
            self._drop_pod(uid, bump=False)
            replaced = self._pod_keys.get((namespace, name))
            if replaced is not None and replaced != uid:
                # The same name, another pod (a StatefulSet's replacement, seen by a list
                # after a gap in which the old one's deletion was missed).
                self._drop_pod(replaced)
            self._pods[uid] = view
            self._pod_keys[(namespace, name)] = uid
            if controller is not None:
                self._direct[uid] = controller
                self._by_direct.setdefault(controller[:3], set()).add(uid)
                self._pod_labels[uid] = pod_labels
            self._by_owner.setdefault(owner, {})[uid] = view
            if evaluated:
                self._unevaluated.discard(uid)
                self._evaluated_with[uid] = evaluated_with
            else:
                self._unevaluated.add(uid)
            self._bump()

    def _labels_epoch(self, namespace: str) -> int:
        """Which labels of its namespace a pod was evaluated with, so that a relist after a
        change of them evaluates it again (-1: evaluated before the namespaces were listed)."""
        if not self._needs_labels:
            return 0
        return self._label_versions.get(namespace, 0) if self._labels_known else -1

    def _drop_pod(self, uid: str, *, bump: bool = True) -> None:
        view = self._pods.pop(uid, None)
        if view is None:
            return
        self._pod_keys.pop((view.namespace, view.name), None)
        controller = self._direct.pop(uid, None)
        self._pod_labels.pop(uid, None)
        if controller is not None:
            users = self._by_direct.get(controller[:3])
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._by_direct[controller[:3]]
        pods = self._by_owner.get(view.owner)
        if pods is not None:
            pods.pop(uid, None)
            if not pods:
                del self._by_owner[view.owner]
        self._unevaluated.discard(uid)
        if not bump:
            return
        self._evaluated_with.pop(uid, None)
        self._bump()

    def _resolve(self, controller: tuple[str, str, str, str] | None, namespace: str, name: str,
                 labels: Mapping[str, str]) -> WorkloadRef:
        """The pod's top owner. Its controllerRef is the pod author's to write, so a claim to a
        ReplicaSet, StatefulSet, DaemonSet or Job counts only when that object exists with
        the uid named and its selector selects the pod (as its controller would own it);
        a claim that fails that is a bare pod's, never a workload someone could restart."""
        if controller is None:
            return WorkloadRef(BARE_POD, namespace, name)
        kind, api_version, owner, owner_uid = controller
        if (kind, api_version) not in _CONTROLLER_API:
            return WorkloadRef.other(api_version, kind, namespace, owner)
        known = self._controllers.get((kind, namespace, owner))
        if known is None:   # not seen yet: settled when it arrives
            return WorkloadRef.other(api_version, kind, namespace, owner)
        if known.uid != owner_uid or not selects(known.selector, labels):
            return WorkloadRef(BARE_POD, namespace, name)
        if known.top.kind == DEPLOYMENT:
            # The ReplicaSet's own claim on its Deployment, checked the same way.
            deployment = self._workloads.get(known.top)
            if deployment is not None and deployment.uid != known.parent_uid:
                return WorkloadRef.other(api_version, kind, namespace, owner)
        return known.top

    def _register(self, kind: str, namespace: str, name: str, obj: Mapping[str, Any]) -> None:
        metadata, spec = as_dict(obj.get("metadata")), as_dict(obj.get("spec"))
        parent = controller_of(metadata)
        if kind in (STATEFULSET, DAEMONSET):
            top = WorkloadRef(kind, namespace, name)
        elif kind == "ReplicaSet":
            top = (WorkloadRef(DEPLOYMENT, namespace, parent[2]) if parent and parent[:2] == (DEPLOYMENT, "apps/v1")
                   else WorkloadRef.other("apps/v1", kind, namespace, name))
        else:
            top = (WorkloadRef(CRONJOB, namespace, parent[2]) if parent and parent[:2] == (CRONJOB, "batch/v1")
                   else WorkloadRef(JOB, namespace, name))
        entry = _Controller(str(metadata.get("uid") or ""), as_dict(spec.get("selector")), top,
                            parent[3] if parent else "")
        if self._controllers.get((kind, namespace, name)) == entry:
            return
        self._controllers[(kind, namespace, name)] = entry
        self._reresolve(kind, namespace, name)

    def _reresolve_deployment(self, ref: WorkloadRef) -> None:
        """A Deployment arrived, changed uid or went: its ReplicaSets' pods checked again."""
        for (kind, namespace, name), entry in list(self._controllers.items()):
            if kind == "ReplicaSet" and entry.top == ref:
                self._reresolve(kind, namespace, name)

    def _reresolve(self, kind: str, namespace: str, name: str) -> None:
        """Its pods seen before it (or claiming it), moved to the owner now known."""
        api_version = "batch/v1" if kind == JOB else "apps/v1"
        for uid in list(self._by_direct.get((kind, api_version, name), ())):
            view = self._pods.get(uid)
            if view is None or view.namespace != namespace:
                continue
            ref = self._resolve(self._direct.get(uid), namespace, view.name, self._pod_labels.get(uid, {}))
            if ref == view.owner:
                continue
            pods = self._by_owner.get(view.owner, {})
            pods.pop(uid, None)
            if not pods:
                self._by_owner.pop(view.owner, None)
            moved = PodView(view.namespace, view.name, view.uid, ref, view.phase, view.ready, view.policies,
                            view.crashlooping, view.resource_version)
            self._pods[uid] = moved
            self._by_owner.setdefault(ref, {})[uid] = moved
        self._bump()


@dataclass(frozen=True)
class _Controller:
    uid: str
    selector: Mapping[str, Any]
    top: WorkloadRef
    parent_uid: str = ""    # the uid its own controllerRef names


_CONTROLLER_KINDS = {"replicasets": "ReplicaSet", "statefulsets": STATEFULSET, "daemonsets": DAEMONSET, "jobs": JOB}
_CONTROLLER_API = frozenset({("ReplicaSet", "apps/v1"), (STATEFULSET, "apps/v1"), (DAEMONSET, "apps/v1"),
                             (JOB, "batch/v1")})


def workload_view(kind: str, obj: Mapping[str, Any]) -> WorkloadView:
    """Each kind's status under the same names (`kubectl rollout status` reads the same):
    the health gate's reading (partition, OnDelete and old replicas included)."""
    metadata = as_dict(obj.get("metadata"))
    ref = WorkloadRef(kind, str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
    return health.workload_view(ref, obj)
