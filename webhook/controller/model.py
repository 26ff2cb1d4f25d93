"""The controller's picture of the cluster: small immutable records the watcher builds and
the planner, health gate, status and events read. Types only, no I/O.

Kept small on purpose: a PodView is a few strings and flags, never the pod object, so
10,000 pods cost little memory and a planner test builds its world by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from webhook.engine.staleness import CURRENT as CURRENT, SKIPPED as SKIPPED, STALE as STALE
from webhook.engine.staleness import PolicyState as PolicyState

if TYPE_CHECKING:
    from webhook.policy.loader import PolicySet

# -- workloads ------------------------------------------------------------------------------

DEPLOYMENT, STATEFULSET, DAEMONSET = "Deployment", "StatefulSet", "DaemonSet"
JOB, CRONJOB, BARE_POD = "Job", "CronJob", "Pod"
OTHER_PREFIX = "Other:"
# Only these have a pod template the controller may restart through, as `kubectl rollout
# restart` does; everything else gets the new runtime on its next run.
RESTARTABLE_KINDS = frozenset({DEPLOYMENT, STATEFULSET, DAEMONSET})

# `kubectl rollout restart` sets exactly this template annotation.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# The controller's own record on a workload's template: which policy revisions it was
# restarted for, so a new leader never restarts a workload twice for the same change.
ROLLOUT_RECORD_ANNOTATION = "runtime.platform.io/rollout"


@dataclass(frozen=True, slots=True, order=True)
class WorkloadRef:
    """The top owner of a pod: Deployment (through its ReplicaSet), StatefulSet, DaemonSet,
    Job, CronJob (through its Job), "Pod" for a bare pod, or "Other:<apiVersion>/<kind>"
    for a pod another operator owns (the name is then that owner's name)."""
    kind: str
    namespace: str
    name: str

    @property
    def restartable(self) -> bool:
        return self.kind in RESTARTABLE_KINDS

    @property
    def why_not_restartable(self) -> str:
        """Why the controller leaves this workload to its next run ("" when restartable)."""
        if self.restartable:
            return ""
        if self.kind == BARE_POD:
            return "a bare pod: it gets the new runtime when it is recreated"
        if self.kind in (JOB, CRONJOB):
            return f"a {self.kind}'s pods get the new runtime on their next run"
        owner = self.kind.removeprefix(OTHER_PREFIX)
        return f"owned by {owner}: it gets the new runtime when its operator recreates it"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def other(cls, api_version: str, kind: str, namespace: str, name: str) -> WorkloadRef:
        return cls(f"{OTHER_PREFIX}{api_version}/{kind}", namespace, name)


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """What the health gate and the planner need of a workload, each kind's status fields
    mapped to the same names (a DaemonSet's desiredNumberScheduled is `replicas`, its
    updatedNumberScheduled `updated_replicas`, numberAvailable `available_replicas`,
    numberReady `ready_replicas`)."""
    ref: WorkloadRef
    uid: str = ""
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    ready_replicas: int = 0
    # The template annotations that matter: RESTARTED_AT_ANNOTATION, ROLLOUT_RECORD_ANNOTATION.
    restarted_at: str | None = None
    rollout_record: str | None = None
    progress_deadline_exceeded: bool = False    # a Deployment's Progressing=False condition
    resource_version: str = ""

    @property
    def rollout_done(self) -> bool:
        """The workload's controller saw its latest template and every replica runs it, available."""
        return (self.observed_generation >= self.generation
                and self.updated_replicas >= self.replicas
                and self.available_replicas >= self.replicas)


# -- pods -----------------------------------------------------------------------------------

# PolicyState (one policy's standing on one pod: current | stale | skipped, the revisions,
# `in_place`) is the engine's, as `webhook report` and `webhook status` compute it too.
@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    uid: str
    owner: WorkloadRef
    phase: str = "Pending"
    ready: bool = False
    policies: Mapping[str, PolicyState] = field(default_factory=dict)
    # Injected containers that keep failing: waiting in CrashLoopBackOff (or an image or
    # start error), or terminated with an error after at least one restart.
    crashlooping: frozenset[str] = frozenset()
    resource_version: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.policies, MappingProxyType):
            object.__setattr__(self, "policies", MappingProxyType(dict(self.policies)))

    def stale_for(self, policy: str) -> bool:
        state = self.policies.get(policy)
        return state is not None and state.state == STALE


# -- the whole picture ----------------------------------------------------------------------

class ClusterView(Protocol):
    """Read-only access for the planner. `epoch` goes up whenever anything in the view
    changes (a pod, a workload, a namespace's labels, the policies it was evaluated for)."""

    @property
    def epoch(self) -> int: ...

    @property
    def settled(self) -> bool:
        """Every pod evaluated with the current policies (the hook is called only then)."""
        ...

    def workloads(self) -> Mapping[WorkloadRef, WorkloadView]: ...

    def workload(self, ref: WorkloadRef) -> WorkloadView | None: ...

    def pods_of(self, ref: WorkloadRef) -> tuple[PodView, ...]: ...

    def owners(self) -> Iterable[WorkloadRef]:
        """Every top owner that has at least one pod (bare pods, Jobs, other operators' too)."""
        ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """The namespace's labels; None when unknown (not watched, or the namespace is gone)."""
        ...


@dataclass(frozen=True)
class StaticClusterView:
    """A ClusterView from plain values: planner tests and `--once` snapshots."""
    pods: tuple[PodView, ...] = ()
    workload_views: Mapping[WorkloadRef, WorkloadView] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    epoch: int = 0
    settled: bool = True

    def workloads(self) -> Mapping[WorkloadRef, WorkloadView]:
        return self.workload_views

    def workload(self, ref: WorkloadRef) -> WorkloadView | None:
        return self.workload_views.get(ref)

    def pods_of(self, ref: WorkloadRef) -> tuple[PodView, ...]:
        return tuple(p for p in self.pods if p.owner == ref)

    def owners(self) -> Iterable[WorkloadRef]:
        return sorted({p.owner for p in self.pods})

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.labels.get(namespace)


# -- what rollout reports back ------------------------------------------------------------

IDLE, ROLLING, PAUSED, HALTED = "idle", "rolling", "paused", "halted"
RolloutPhase = Literal["idle", "rolling", "paused", "halted"]


@dataclass(frozen=True, slots=True)
class RolloutState:
    """A policy's rollout as the planner sees it; status shows it. `reason` says why it
    halted (or paused)."""
    state: RolloutPhase = "idle"
    reason: str = ""


# Event reasons (events.k8s.io/v1 `reason`), on the owning workload or the bare pod.
RUNTIME_STALE = "RuntimeStale"
RUNTIME_RESTARTED = "RuntimeRestarted"
RUNTIME_UPDATED_IN_PLACE = "RuntimeUpdatedInPlace"
RUNTIME_ROLLOUT_HALTED = "RuntimeRolloutHalted"
INJECTION_SKIPPED = "InjectionSkipped"

# The hook each reconcile pass calls, on the leader only and only on a settled view: decide
# and act, and say each policy's rollout state (status shows it; a policy left out is
# idle). `now` is time.time(). The default does nothing (every policy Manual).
PlanAndAct = Callable[[ClusterView, "PolicySet", float], Mapping[str, RolloutState]]


def no_plan(view: ClusterView, policies: PolicySet, now: float) -> Mapping[str, RolloutState]:
    return {}


@dataclass(frozen=True)
class HookContext:
    """What the process hands a hook factory: the raw ApiClient (webhook.kube.client.Kube
    wraps it), the EventRecorder (webhook.controller.events), whether writes are off, the
    log, and `say`: one line of what was done or would be done (printed by --once, logged
    otherwise)."""
    api_client: Any
    recorder: Any
    dry_run: bool
    log: Any
    say: Callable[[str], None]


HookFactory = Callable[[HookContext], PlanAndAct]
