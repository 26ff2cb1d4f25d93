"""Simulated workload controllers and kubelet for the fake API server.

What the controller of issue 19 relies on from a real cluster, as a simple, deterministic
model driven by `step()` (or by a background thread the test starts and stops):

- the kubelet: a Pending pod becomes Running, its containers' statuses written (image,
  ready, restartCount, state); a container whose image changed in place is restarted
  (restartCount + 1) and runs the new image; a container told to fail either never becomes
  ready or crash-loops (waiting reason CrashLoopBackOff, restartCount growing each step);
- Deployments (through ReplicaSets named by a pod-template-hash), StatefulSets (pods by
  ordinal, revisions in controller-revision-hash, partition, OrderedReady or Parallel) and
  DaemonSets (one pod per node) replace their pods when the pod template changes, paced
  as their RollingUpdate strategies say (maxSurge / maxUnavailable, partition);
  Recreate and OnDelete are honoured; each step deletes what may go and creates what may
  come, and writes the status fields `kubectl rollout status` reads, under each kind's own
  names; a Deployment whose rollout makes no progress for progressDeadlineSeconds (on the
  simulated clock, `seconds_per_step` a step) gets Progressing=False ProgressDeadlineExceeded;
- every new pod is admitted by the webhook's own engine (as `webhook mutate` does
  offline) with `policies`, so it carries a real ledger; a pod the engine denies is not
  created and is recorded in `failed_creates`, as a ReplicaSet's FailedCreate;
- the garbage collector: pods and ReplicaSets whose controlling owner is gone are deleted.

Jobs, CronJobs, bare pods and pods of other owners are never replaced (the kubelet runs them).
Its writes go to the store directly, not over HTTP, so `api.requests` and `api.writes()`
show only what the code under test asked for; watches see them like any other write.
Pods are deleted at once (no graceful termination), and there is no scheduler: a
DaemonSet's pod names its node, other pods run nowhere in particular.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from tests.fake_apiserver import ApiError, FakeApiServer
from webhook.cli.offline import Document, NamespaceLabelSource, admit
from webhook.policy.loader import PolicySet

FailureMode = Literal["never-ready", "crash-loop"]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # what the real controllers' hashes are spelled in


@dataclass(frozen=True)
class Failure:
    mode: FailureMode
    container: str | None = None   # None: every container (never-ready) or the first injected (crash-loop)


@dataclass
class FakeWorkloads:
    api: FakeApiServer
    policies: PolicySet
    nodes: tuple[str, ...] = ("node-a", "node-b", "node-c")
    seconds_per_step: float = 10.0
    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    # (namespace, pod name, owner "Kind/name") of each pod created / deleted, in order.
    created: list[tuple[str, str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str, str]] = field(default_factory=list)
    failed_creates: list[tuple[str, str, str]] = field(default_factory=list)   # (namespace, owner, why)

    def __post_init__(self) -> None:
        self._failing_workloads: dict[tuple[str, str, str], Failure] = {}
        self._failing_images: dict[str, Failure] = {}
        self._failing_pods: dict[tuple[str, str], Failure] = {}
        self._revisions: dict[tuple[str, str, str], dict[str, Any]] = {}   # StatefulSet revisions' templates
        self._progress: dict[tuple[str, str], tuple[str, datetime]] = {}  # Deployment -> (last state, since)
        self._by_owner: dict[str, list[dict[str, Any]]] = {}       # this step's pods by controller uid
        self._replicasets: dict[str, list[dict[str, Any]]] = {}    # this step's ReplicaSets by Deployment uid
        self._labels = NamespaceLabelSource()
        self._collected: set[str] = set()   # uids the garbage collector deleted this step
        self._admitted: dict[tuple[str, str, str], tuple[dict[str, Any] | None, str]] = {}
        self._admitted_by: PolicySet | None = None   # the policies the memo's answers came from
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._step_lock = threading.Lock()

    # -- what tests tell it ---------------------------------------------------------------

    def fail_rollout(self, resource: str, namespace: str, name: str, mode: FailureMode = "never-ready", *,
                     container: str | None = None) -> None:
        """Pods this workload creates from now on fail: never ready, or a container (by
        default the first one the webhook injected) crash-loops."""
        self._failing_workloads[(resource, namespace, name)] = Failure(mode, container)

    def fail_image(self, image: str, mode: FailureMode = "crash-loop") -> None:
        """Any container running this image fails (a broken sidecar release), wherever and
        however it got there: a new pod or an image changed in place."""
        self._failing_images[image] = Failure(mode)

    def heal(self) -> None:
        """Nothing fails any more (a fixed release); running pods recover on the next step."""
        self._failing_workloads.clear()
        self._failing_images.clear()
        self._failing_pods.clear()

    # Objects read from the store are shared with it (FakeApiServer.snapshot): nothing here
    # changes them in place; every write builds a new object.

    # -- driving it ----------------------------------------------------------------------------

    def step(self) -> list[str]:
        """One pass of the kubelet, the garbage collector and each workload controller;
        what it did, one line an action (pod status churn not counted)."""
        with self._step_lock:
            self.now += timedelta(seconds=self.seconds_per_step)
            actions: list[str] = []
            pods = self._kubelet()
            actions += self._collect_garbage(pods)
            # One snapshot a step, kept current with this step's own writes.
            self._by_owner = {}
            for pod in pods:
                if pod["metadata"]["uid"] in self._collected:
                    continue
                self._by_owner.setdefault((_controller(pod) or {}).get("uid", ""), []).append(pod)
            self._replicasets = {}
            for rs in self.api.snapshot("replicasets"):
                self._replicasets.setdefault((_controller(rs) or {}).get("uid", ""), []).append(rs)
            self._labels = self._namespace_labels()
            for deployment in self.api.snapshot("deployments"):
                actions += self._deployment(deployment)
            for statefulset in self.api.snapshot("statefulsets"):
                actions += self._statefulset(statefulset)
            for daemonset in self.api.snapshot("daemonsets"):
                actions += self._daemonset(daemonset)
            return actions

    def settle(self, max_steps: int = 100) -> int:
        """Step until a step does nothing (a rollout that cannot finish stops at max_steps);
        the number of steps taken."""
        for taken in range(1, max_steps + 1):
            if not self.step():
                return taken
        return max_steps

    def run_until(self, done: Callable[[], bool], max_steps: int = 100) -> int:
        """Step until `done()`; AssertionError after max_steps."""
        for taken in range(max_steps + 1):
            if done():
                return taken
            self.step()
        raise AssertionError(f"not done after {max_steps} steps")

    def start(self, interval: float = 0.05) -> None:
        """Step in a background thread every `interval` seconds until stop()."""
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval):
                self.step()
        self._thread = threading.Thread(target=run, name="fake-workloads", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def rollout_complete(self, resource: str, namespace: str, name: str) -> bool:
        """What `kubectl rollout status` waits for, from the workload's status alone."""
        obj = self.api.get(resource, name, namespace)
        if obj is None:
            return False
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 1):
            return False
        if resource == "deployments":
            replicas = spec.get("replicas", 1)
            return (status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
                    and status.get("availableReplicas", 0) == replicas)
        if resource == "statefulsets":
            replicas = spec.get("replicas", 1)
            partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0)
            if status.get("readyReplicas", 0) != replicas:
                return False
            if partition:
                return bool(status.get("updatedReplicas", 0) >= replicas - partition)
            return bool(status.get("updateRevision") == status.get("currentRevision"))
        if resource == "daemonsets":
            desired = status.get("desiredNumberScheduled", 0)
            return bool(status.get("updatedNumberScheduled", 0) == desired
                        and status.get("numberAvailable", 0) == desired)
        raise ValueError(f"no rollout for {resource}")

    # -- the kubelet ----------------------------------------------------------------------------

    def _kubelet(self) -> list[dict[str, Any]]:
        pods = []
        for pod in self.api.snapshot("pods"):
            status = self._pod_status(pod)
            if status != pod.get("status"):
                pod = self._ignore_gone(lambda p=pod, s=status: self.api.update_status(
                    "pods", p["metadata"]["name"], p["metadata"]["namespace"], s)) or pod
            pods.append(pod)
        return pods

    def _pod_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        meta, spec, old = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        if old.get("phase") in ("Succeeded", "Failed"):
            return old
        pod_failure = self._failing_pods.get((meta["namespace"], meta["name"]))
        stamp = _time(self.now)

        def container_status(container: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
            image = container.get("image", "")
            restarts = int(previous.get("restartCount", 0)) if previous else 0
            if previous and previous.get("image") != image:
                restarts += 1   # an image changed in place restarts just this container
            failure = self._failing_images.get(image)
            if failure is None and pod_failure is not None and pod_failure.container in (None, container["name"]):
                failure = pod_failure
            digest = hashlib.sha256(image.encode()).hexdigest()
            out: dict[str, Any] = {"name": container["name"], "image": image,
                                   "imageID": f"{image.split('@')[0]}@sha256:{digest}",
                                   "containerID": f"containerd://{digest[:32]}{restarts:04d}"}
            if failure is not None and failure.mode == "crash-loop":
                out.update(ready=False, started=False, restartCount=restarts + 1,
                           state={"waiting": {"reason": "CrashLoopBackOff", "message":
                                              f"back-off restarting failed container {container['name']}"}},
                           lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": stamp}})
                return out
            kept = previous is not None and previous.get("image") == image and \
                previous.get("restartCount") == restarts and "running" in (previous.get("state") or {})
            out.update(ready=failure is None, started=True, restartCount=restarts,
                       state=previous["state"] if kept and previous else {"running": {"startedAt": stamp}})
            return out

        previous = {s["name"]: s for s in old.get("containerStatuses") or []}
        previous_init = {s["name"]: s for s in old.get("initContainerStatuses") or []}
        init_statuses = []
        for container in spec.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":   # a native sidecar runs beside the app
                init_statuses.append(container_status(container, previous_init.get(container["name"])))
            elif container["name"] in previous_init:
                init_statuses.append(previous_init[container["name"]])
            else:
                init_statuses.append({"name": container["name"], "image": container.get("image", ""),
                                      "imageID": "", "ready": True, "restartCount": 0, "started": False,
                                      "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                               "finishedAt": stamp}}})
        statuses = [container_status(c, previous.get(c["name"])) for c in spec.get("containers") or []]
        ready = all(s["ready"] for s in statuses + init_statuses)
        started = old.get("startTime") or stamp
        out = {**old, "phase": "Running", "observedGeneration": meta.get("generation", 1),
               "startTime": started, "hostIP": "10.0.0.1",
               "podIP": _pod_ip(meta["uid"]),
               "conditions": [_condition("PodScheduled", True, started), _condition("Initialized", True, started),
                              _condition("ContainersReady", ready, stamp), _condition("Ready", ready, stamp)],
               "containerStatuses": statuses}
        if init_statuses:
            out["initContainerStatuses"] = init_statuses
        # Conditions keep their transition time while they hold.
        before = {c["type"]: c for c in old.get("conditions") or []}
        out["conditions"] = [before[c["type"]] if c["type"] in before and before[c["type"]]["status"] == c["status"]
                             else c for c in out["conditions"]]
        return out

    # -- garbage collection -----------------------------------------------------------------------

    def _collect_garbage(self, pods: list[dict[str, Any]]) -> list[str]:
        actions: list[str] = []
        self._collected = set()
        with self.api.store.lock:
            uids = {obj["metadata"]["uid"] for obj in self.api.objects.values()}
        for resource, owners in (("replicasets", ("Deployment",)),
                                 ("pods", ("ReplicaSet", "StatefulSet", "DaemonSet"))):
            for obj in (pods if resource == "pods" else self.api.snapshot(resource)):
                owner = _controller(obj)
                if owner and owner.get("kind") in owners and owner.get("uid") not in uids:
                    meta = obj["metadata"]
                    self._ignore_gone(lambda r=resource, m=meta: self.api.delete(r, m["name"], m["namespace"]))
                    actions.append(f"collect {resource} {meta['namespace']}/{meta['name']}")
                    self._collected.add(meta["uid"])
                    if resource == "pods":
                        self.deleted.append((meta["namespace"], meta["name"], f"{owner['kind']}/{owner['name']}"))
        return actions

    # -- pods through the webhook's engine -----------------------------------------------------------

    def _create_pod(self, owner: dict[str, Any], template: dict[str, Any], *, name: str = "",
                    generate_name: str = "", labels: dict[str, str] | None = None, node: str = "",
                    workload: tuple[str, str, str]) -> str | None:
        """Create a pod from a template through the webhook's mutation engine; its name, or None
        when the webhook (or the API server) refused it."""
        namespace = owner["metadata"]["namespace"]
        metadata = copy.deepcopy(template.get("metadata") or {})
        metadata.pop("name", None)
        metadata["labels"] = {**(metadata.get("labels") or {}), **(labels or {})}
        metadata["namespace"] = namespace
        if name:
            metadata["name"] = name
        else:
            metadata["generateName"] = generate_name
        metadata["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]
        spec = copy.deepcopy(template.get("spec") or {})
        if node:
            spec["nodeName"] = node
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        title = f"{owner['kind']}/{owner['metadata']['name']}"
        mutated, why = self._admit(pod, namespace, title, self._labels)
        if mutated is None:
            self.failed_creates.append((namespace, title, why))
            return None
        try:
            created = self.api.create("pods", mutated, namespace)
        except ApiError as exc:
            self.failed_creates.append((namespace, title, exc.message))
            return None
        pod_name = str(created["metadata"]["name"])
        failure = self._failing_workloads.get(workload)
        if failure is not None:
            if failure.mode == "crash-loop" and failure.container is None:
                authored = {c.get("name") for key in ("containers", "initContainers") for c in spec.get(key) or []}
                injected = [c["name"] for key in ("initContainers", "containers")
                            for c in created["spec"].get(key) or [] if c["name"] not in authored
                            and (key == "containers" or c.get("restartPolicy") == "Always")]
                failure = Failure("crash-loop", injected[0] if injected else None)
            self._failing_pods[(namespace, pod_name)] = failure
        self.created.append((namespace, pod_name, title))
        self._by_owner.setdefault(owner["metadata"]["uid"], []).append(created)
        return pod_name

    def _admit(self, pod: dict[str, Any], namespace: str, title: str,
               labels: NamespaceLabelSource) -> tuple[dict[str, Any] | None, str]:
        """The pod as the webhook admits it (None and why when it refuses). The engine is a
        pure function of the pod, its namespace's labels and the policies, so the replicas
        of one template are admitted once."""
        if self._admitted_by is not self.policies or len(self._admitted) > 10_000:
            self._admitted, self._admitted_by = {}, self.policies
        key = (json.dumps(pod, sort_keys=True), namespace,
               json.dumps(dict(labels.objects.get(namespace) or {}), sort_keys=True))
        if key in self._admitted:
            mutated, why = self._admitted[key]
            return copy.deepcopy(mutated), why
        admission = admit(Document(where=title, obj=pod), policies=self.policies, namespace=namespace,
                          namespace_labels=labels)
        if admission.injection and admission.injection.denial:
            answer: tuple[dict[str, Any] | None, str] = (None, admission.injection.denial)
        elif admission.denied or admission.mutated is None:
            answer = (None, "; ".join(d.message for _, d in admission.validations if not d.allowed)
                      or "not admitted")
        else:
            answer = (admission.mutated, "")
        self._admitted[key] = (copy.deepcopy(answer[0]), answer[1])
        return answer

    def webhook(self, operation: str, resource: str, namespace: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> dict[str, Any] | None:
        """An admission callback for the fake API server (`api.admission.append(w.webhook)`):
        pods created over HTTP (bare pods, a Job's) are admitted by the engine too, as the
        MutatingWebhookConfiguration sends the webhook every pod CREATE."""
        if resource != "pods" or operation != "CREATE":
            return None
        mutated, why = self._admit(obj, namespace, f"Pod/{(obj.get('metadata') or {}).get('name', '')}",
                                   self._namespace_labels())
        if mutated is None:
            raise ApiError(403, "Forbidden", f"admission webhook \"inject.runtime.platform.io\" denied the "
                           f"request: {why}")
        return mutated

    def _namespace_labels(self) -> NamespaceLabelSource:
        return NamespaceLabelSource({ns["metadata"]["name"]: dict(ns["metadata"].get("labels") or {})
                                     for ns in self.api.snapshot("namespaces")})

    def _delete_pod(self, pod: dict[str, Any], owner: str) -> str:
        meta = pod["metadata"]
        self._ignore_gone(lambda: self.api.delete("pods", meta["name"], meta["namespace"]))
        self._failing_pods.pop((meta["namespace"], meta["name"]), None)
        self.deleted.append((meta["namespace"], meta["name"], owner))
        siblings = self._by_owner.get((_controller(pod) or {}).get("uid", ""), [])
        siblings[:] = [p for p in siblings if p["metadata"]["uid"] != meta["uid"]]
        return f"delete pod {meta['namespace']}/{meta['name']} ({owner})"

    def _pods_of(self, owner_uid: str) -> list[dict[str, Any]]:
        return list(self._by_owner.get(owner_uid, []))

    def _write_status(self, resource: str, obj: dict[str, Any], status: dict[str, Any]) -> list[str]:
        meta = obj["metadata"]
        merged = {**(obj.get("status") or {}), **status}
        if merged == obj.get("status"):
            return []
        self._ignore_gone(lambda: self.api.update_status(resource, meta["name"], meta["namespace"], merged))
        return [f"status {resource} {meta['namespace']}/{meta['name']}"]

    @staticmethod
    def _ignore_gone(write: Callable[[], Any]) -> Any:
        """A write racing a delete or an update by the test (or the controller under test)
        is retried by the next step, as a real controller requeues; None then."""
        try:
            return write()
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise
            return None

    # -- Deployments -----------------------------------------------------------------------------------

    def _deployment(self, deployment: dict[str, Any]) -> list[str]:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        title = f"Deployment/{name}"
        replicas = int(spec.get("replicas", 1))
        template_hash = _hash(spec.get("template") or {})
        actions: list[str] = []
        owned = list(self._replicasets.get(meta["uid"], []))
        new_rs = next((rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == template_hash), None)
        if new_rs is None:
            revision = 1 + max((int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
                                for rs in owned), default=0)
            template = copy.deepcopy(spec.get("template") or {})
            template.setdefault("metadata", {})["labels"] = {**(template["metadata"].get("labels") or {}),
                                                             "pod-template-hash": template_hash}
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
            new_rs = self.api.create("replicasets", {
                "metadata": {"name": f"{name}-{template_hash}", "namespace": namespace,
                             "labels": template["metadata"]["labels"],
                             "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                  "uid": meta["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": {"replicas": 0, "selector": selector, "template": template}}, namespace)
            owned.append(new_rs)
            actions.append(f"create replicaset {namespace}/{new_rs['metadata']['name']}")
        new_pods = self._pods_of(new_rs["metadata"]["uid"])
        old_pods = [p for rs in owned if rs is not new_rs for p in self._pods_of(rs["metadata"]["uid"])]
        strategy = spec.get("strategy") or {}
        if spec.get("paused"):
            pass   # a paused Deployment rolls nothing out until resumed
        elif strategy.get("type") == "Recreate":
            for pod in old_pods:
                actions.append(self._delete_pod(pod, title))
            if not old_pods:
                for _ in range(replicas - len(new_pods)):
                    if self._create_pod(new_rs, new_rs["spec"]["template"],
                                        generate_name=f"{new_rs['metadata']['name']}-",
                                        workload=("deployments", namespace, name)):
                        actions.append(f"create pod for {title}")
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = _scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1   # the API server refuses both zero; the controller behaves as with one
            room = min(replicas + surge - len(new_pods) - len(old_pods), replicas - len(new_pods))
            for _ in range(max(room, 0)):
                if self._create_pod(new_rs, new_rs["spec"]["template"], generate_name=f"{new_rs['metadata']['name']}-",
                                    workload=("deployments", namespace, name)):
                    actions.append(f"create pod for {title}")
            available = sum(_ready(p) for p in new_pods + old_pods)
            for pod in sorted(old_pods, key=_ready):   # the unready go first: they cost nothing
                if not _ready(pod):
                    actions.append(self._delete_pod(pod, title))
                elif available - 1 >= replicas - unavailable:
                    actions.append(self._delete_pod(pod, title))
                    available -= 1
            if not old_pods and len(new_pods) > replicas:
                for pod in sorted(new_pods, key=_ready)[:len(new_pods) - replicas]:
                    actions.append(self._delete_pod(pod, title))
        # Status from the pods as they are now.
        new_pods = self._pods_of(new_rs["metadata"]["uid"])
        all_pods = [p for rs in owned for p in self._pods_of(rs["metadata"]["uid"])]
        for rs in owned:
            pods = self._pods_of(rs["metadata"]["uid"])
            if rs["spec"].get("replicas") != len(pods):
                rs = self._ignore_gone(lambda r=rs, n=len(pods): self.api.update("replicasets", {
                    **r, "spec": {**r["spec"], "replicas": n}})) or rs
            ready = sum(_ready(p) for p in pods)
            self._write_status("replicasets", rs, {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                                                   "readyReplicas": ready, "availableReplicas": ready,
                                                   "observedGeneration": rs["metadata"].get("generation", 1)})
        available = sum(_ready(p) for p in all_pods)
        updated = len(new_pods)
        complete = updated == replicas and len(all_pods) == replicas and available == replicas
        state = f"{template_hash}:{updated}:{available}:{len(all_pods)}"
        last_state, since = self._progress.get((namespace, name), ("", self.now))
        if state != last_state:
            since = self.now
            self._progress[(namespace, name)] = (state, since)
        deadline = int(spec.get("progressDeadlineSeconds", 600))
        stamp = _time(since)
        if complete:
            progressing = _condition("Progressing", True, stamp, "NewReplicaSetAvailable",
                                     f"ReplicaSet \"{new_rs['metadata']['name']}\" has successfully progressed.")
        elif self.now - since > timedelta(seconds=deadline):
            progressing = _condition("Progressing", False, stamp, "ProgressDeadlineExceeded",
                                     f"ReplicaSet \"{new_rs['metadata']['name']}\" has timed out progressing.")
        else:
            progressing = _condition("Progressing", True, stamp, "ReplicaSetUpdated",
                                     f"ReplicaSet \"{new_rs['metadata']['name']}\" is progressing.")
        rolling = strategy.get("rollingUpdate") or {}
        minimum = replicas - _scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        available_condition = _condition("Available", available >= minimum, stamp,
                                         "MinimumReplicasAvailable" if available >= minimum
                                         else "MinimumReplicasUnavailable",
                                         "Deployment has minimum availability." if available >= minimum
                                         else "Deployment does not have minimum availability.")
        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1), "replicas": len(all_pods), "updatedReplicas": updated,
            "readyReplicas": available, "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            "conditions": [available_condition, progressing]}
        return actions + self._write_status("deployments", deployment, status)

    # -- StatefulSets ----------------------------------------------------------------------------------

    def _statefulset(self, statefulset: dict[str, Any]) -> list[str]:
        meta, spec = statefulset["metadata"], statefulset.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        title = f"StatefulSet/{name}"
        replicas = int(spec.get("replicas", 1))
        update_revision = f"{name}-{_hash(spec.get('template') or {})}"
        self._revisions[(namespace, name, update_revision)] = copy.deepcopy(spec.get("template") or {})
        old_status = statefulset.get("status") or {}
        current_revision = old_status.get("currentRevision") or update_revision
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        partition = int(rolling.get("partition", 0))
        max_unavailable = _scaled(rolling.get("maxUnavailable", 1), replicas, round_up=False) or 1
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        actions: list[str] = []
        pods = {_ordinal(p, name): p for p in self._pods_of(meta["uid"])}
        for ordinal in sorted((o for o in pods if o >= replicas), reverse=True):
            actions.append(self._delete_pod(pods.pop(ordinal), title))
            if ordered:
                break
        for ordinal in range(replicas):
            if ordinal in pods:
                if ordered and not _ready(pods[ordinal]):
                    break
                continue
            revision = update_revision if ordinal >= partition else current_revision
            template = self._revisions.get((namespace, name, revision), spec.get("template") or {})
            if self._create_pod(statefulset, template, name=f"{name}-{ordinal}",
                                labels={"controller-revision-hash": revision,
                                        "statefulset.kubernetes.io/pod-name": f"{name}-{ordinal}",
                                        "apps.kubernetes.io/pod-index": str(ordinal)},
                                workload=("statefulsets", namespace, name)):
                actions.append(f"create pod {namespace}/{name}-{ordinal} ({title})")
            if ordered:
                break
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and len(pods) == replicas and not actions:
            unavailable = sum(not _ready(p) for p in pods.values())
            for ordinal in sorted(pods, reverse=True):
                if ordinal < partition:
                    break
                pod = pods[ordinal]
                if pod["metadata"]["labels"].get("controller-revision-hash") == update_revision:
                    if ordered and not _ready(pod):
                        break
                    continue
                if unavailable >= max_unavailable:
                    break
                actions.append(self._delete_pod(pod, title))
                unavailable += 1
        pods = {_ordinal(p, name): p for p in self._pods_of(meta["uid"])}
        ready = sum(_ready(p) for p in pods.values())
        updated = sum(p["metadata"]["labels"].get("controller-revision-hash") == update_revision for p in pods.values())
        if updated == replicas and len(pods) == replicas:
            current_revision = update_revision
        current = sum(p["metadata"]["labels"].get("controller-revision-hash") == current_revision
                      for p in pods.values())
        status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "currentReplicas": current, "updatedReplicas": updated,
                  "currentRevision": current_revision, "updateRevision": update_revision, "collisionCount": 0}
        return actions + self._write_status("statefulsets", statefulset, status)

    # -- DaemonSets ------------------------------------------------------------------------------------

    def _daemonset(self, daemonset: dict[str, Any]) -> list[str]:
        meta, spec = daemonset["metadata"], daemonset.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        title = f"DaemonSet/{name}"
        revision = _hash(spec.get("template") or {})
        strategy = spec.get("updateStrategy") or {}
        max_unavailable = _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1),
                                  len(self.nodes), round_up=True) or 1
        actions: list[str] = []
        pods = self._pods_of(meta["uid"])
        by_node = {p["spec"].get("nodeName"): p for p in pods}
        for node in self.nodes:
            if node not in by_node and self._create_pod(
                    daemonset, spec.get("template") or {}, generate_name=f"{name}-", node=node,
                    labels={"controller-revision-hash": revision,
                            "pod-template-generation": str(meta.get("generation", 1))},
                    workload=("daemonsets", namespace, name)):
                actions.append(f"create pod for {title} on {node}")
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            unavailable = sum(not _ready(p) for p in pods) + sum(node not in by_node for node in self.nodes)
            outdated = [p for p in pods if p["metadata"]["labels"].get("controller-revision-hash") != revision]
            for pod in sorted(outdated, key=lambda p: (_ready(p), p["spec"].get("nodeName") or "")):
                if not _ready(pod):
                    actions.append(self._delete_pod(pod, title))
                elif unavailable < max_unavailable:
                    actions.append(self._delete_pod(pod, title))
                    unavailable += 1
        pods = self._pods_of(meta["uid"])
        ready = sum(_ready(p) for p in pods)
        status = {"observedGeneration": meta.get("generation", 1), "desiredNumberScheduled": len(self.nodes),
                  "currentNumberScheduled": len(pods), "numberMisscheduled": 0, "numberReady": ready,
                  "numberAvailable": ready, "numberUnavailable": len(self.nodes) - ready,
                  "updatedNumberScheduled": sum(p["metadata"]["labels"].get("controller-revision-hash") == revision
                                                for p in pods)}
        return actions + self._write_status("daemonsets", daemonset, status)


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _ordinal(pod: dict[str, Any], name: str) -> int:
    return int(pod["metadata"]["name"][len(name) + 1:])


def _hash(template: dict[str, Any]) -> str:
    """A stable hash of a pod template, spelled as the real controllers spell theirs."""
    number = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:15], 16)
    out = ""
    for _ in range(10):
        number, digit = divmod(number, len(_HASH_ALPHABET))
        out += _HASH_ALPHABET[digit]
    return out


def _scaled(value: int | str, total: int, *, round_up: bool) -> int:
    """An int-or-percent against a replica count (maxSurge rounds up, maxUnavailable down)."""
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, stamp: str, reason: str = "", message: str = "") -> dict[str, Any]:
    out = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": stamp}
    if reason:
        out.update(reason=reason, message=message, lastUpdateTime=stamp)
    return out


def _pod_ip(uid: str) -> str:
    digest = hashlib.sha256(uid.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] % 250 + 2}"
