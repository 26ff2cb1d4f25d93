"""The planner: which restarts and in-place updates to make now, and each policy's rollout
state. A pure function of the cluster as watched, the policies, a little memory and the
time; no I/O.

Rules, per injection policy with `spec.update` (webhook/policy/update.py):
- only Deployments, StatefulSets and DaemonSets are ever changed (not OnDelete ones);
  everything else is reported and left to its next run;
- at most `maxConcurrent` workloads roll out for a policy at once, cluster-wide: those the
  record on their template says were restarted for its current revision and have not
  finished, and those with a pod updated in place that is not ready again yet;
- a workload is restarted at most once per policy revision (the record says so, and a new
  leader reads the same record);
- a restart carries every change the workload's pods are stale for, so it is made only when
  every one of those policies allows it now (Restart, or InPlace falling back to Restart;
  not paused, not halted, the namespace in its canary, a free slot): a Manual, paused or
  halted policy's change is never spread by another policy's rollout;
- InPlace patches one pod of a workload at a time, and only while all its pods are ready;
- a failed rollout (health.py) halts the policy: nothing more starts for it until its
  revision changes or the failed workload recovers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from webhook.controller.actions import Action, Restart, UpdateInPlace
from webhook.controller.health import judge, parse_record
from webhook.controller.model import (CURRENT, HALTED, IDLE, PAUSED, ROLLING, ClusterView, PodView, RolloutState,
                                      WorkloadRef)
from webhook.policy.injection import InjectionPolicy
from webhook.policy.loader import PolicySet
from webhook.policy.update import Update, UpdateFallback, UpdateStrategy


@dataclass(frozen=True)
class InPlaceMark:
    """A pod updated in place: when, so the gate can time its return to ready."""
    ref: WorkloadRef
    uid: str
    policy: str
    revision: str
    at: datetime


@dataclass
class Memory:
    """What the planner keeps between passes. Only in-place timings live here: a restart's
    are in the record on the workload. A new leader starts with none, and loses only the
    deadline of pods updated in place in the last moments (it restarts nothing twice:
    those pods already carry the new revision)."""
    in_place: dict[tuple[str, str], InPlaceMark] = field(default_factory=dict)   # (pod uid, policy) ->
    # Workloads whose last write was refused (an admission policy, RBAC): not tried again
    # before the time given, and why, for status.
    refused: dict[WorkloadRef, tuple[datetime, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Halt:
    policy: str
    revision: str
    ref: WorkloadRef
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    rollouts: Mapping[str, RolloutState]
    halts: tuple[Halt, ...] = ()


def plan(view: ClusterView, policies: PolicySet, memory: Memory, now: datetime) -> Plan:
    by_name = {p.metadata.name: p for p in policies.injection}
    revisions = {p.name: p.revision for p in policies.injectors}
    stale: dict[WorkloadRef, dict[str, list[PodView]]] = {}
    partial: dict[str, set[WorkloadRef]] = defaultdict(set)
    # Workloads with a pod last judged against an older policy set (a reload the cache has
    # not caught up with): what it would do there may be wrong, so nothing is done yet.
    unjudged: set[WorkloadRef] = set()
    for ref in view.owners():
        pods = view.pods_of(ref)
        per_policy: dict[str, list[PodView]] = defaultdict(list)
        for pod in pods:
            for name, state in pod.policies.items():
                if name in revisions and state.current_revision != revisions[name]:
                    unjudged.add(ref)
                if state.state == "stale":
                    per_policy[name].append(pod)
        if per_policy:
            stale[ref] = dict(per_policy)
        for name in per_policy:
            # Some pods have the policy's current revision and some not: updated in place part
            # way, or restarted part way, or simply scaled up since the change.
            if ref.restartable and any(_current(p, name, revisions.get(name, "")) for p in pods):
                partial[name].add(ref)

    in_flight: dict[str, set[WorkloadRef]] = defaultdict(set)
    halts: dict[str, Halt] = {}
    for ref, workload in sorted(view.workloads().items()):
        for name, entry in parse_record(workload.rollout_record).items():
            policy = by_name.get(name)
            if policy is None or entry.revision != revisions.get(name):
                continue   # a change since superseded
            verdict = judge(view, ref, name, since=entry.at,
                            deadline_seconds=policy.spec.update.progress_deadline_seconds, now=now)
            if verdict.outcome == "progressing":
                in_flight[name].add(ref)
            elif verdict.outcome == "failed":
                in_flight[name].add(ref)
                halts.setdefault(name, Halt(name, entry.revision, ref, verdict.reason))
    _in_place_health(view, by_name, revisions, memory, now, in_flight, halts)
    for name, refs in partial.items():
        policy = by_name.get(name)
        if policy is None or policy.spec.update.strategy is not UpdateStrategy.IN_PLACE:
            continue
        # An in-place update under way, read from the pods alone (what a new leader sees): a
        # pod at the new revision not ready yet holds the workload's slot; one crash-looping halts.
        for ref in sorted(refs):
            for pod in view.pods_of(ref):
                if not _current(pod, name, revisions[name]):
                    continue
                if pod.crashlooping:
                    halts.setdefault(name, Halt(name, revisions[name], ref,
                                                f"injected container(s) {', '.join(sorted(pod.crashlooping))} of "
                                                f"pod {pod.name} crash-loop after an in-place update"))
                    in_flight[name].add(ref)
                elif not pod.ready:
                    in_flight[name].add(ref)

    for ref, (until, _) in list(memory.refused.items()):
        if now >= until:
            del memory.refused[ref]
    actions: list[Action] = []
    waiting: dict[str, str] = {}
    taken: dict[str, set[WorkloadRef]] = {name: set(refs) for name, refs in in_flight.items()}
    acted: set[WorkloadRef] = set()   # one change per workload a pass: the next pass sees its effect

    def may_carry(name: str, ref: WorkloadRef) -> str:
        """"" when policy `name` allows restarting `ref` now, else why not."""
        policy = by_name.get(name)
        if policy is None:
            return ""   # removed: what it injected goes with the restart, nobody to ask
        update = policy.spec.update
        if name in halts:
            return f"{name}'s rollout is halted"
        if update.paused:
            return f"{name}'s rollout is paused"
        if not (update.strategy is UpdateStrategy.RESTART or (update.strategy is UpdateStrategy.IN_PLACE
                                                              and update.fallback is UpdateFallback.RESTART)):
            return f"{name} is {update.strategy.value}" + (
                f" with fallback {update.fallback.value}" if update.strategy is UpdateStrategy.IN_PLACE else "")
        if not update.selects_namespace(ref.namespace):
            return f"{ref.namespace} is outside {name}'s update.namespaces"
        if ref not in taken.get(name, set()) and len(taken.get(name, ())) >= update.max_concurrent:
            return f"{name} has {update.max_concurrent} workload(s) rolling out"
        return ""

    for policy in sorted(by_name.values(), key=lambda p: p.metadata.name):
        name, update = policy.metadata.name, policy.spec.update
        if not update.acts or name in halts:
            continue
        revision = revisions[name]
        for ref in sorted(r for r, s in stale.items() if name in s):
            if not ref.restartable or not update.selects_namespace(ref.namespace) or ref in acted:
                continue
            if ref in unjudged:
                waiting.setdefault(name, f"{ref} is being evaluated against the new policies")
                continue
            workload = view.workload(ref)
            if workload is None:
                continue
            if ref in memory.refused:
                waiting.setdefault(name, f"{ref} was refused: {memory.refused[ref][1]}")
                continue
            mine = taken.setdefault(name, set())
            if ref not in mine and len(mine) >= update.max_concurrent:
                waiting.setdefault(name, f"{len(mine)} of {update.max_concurrent} workload(s) rolling out")
                continue
            stale_pods = stale[ref][name]
            if update.strategy is UpdateStrategy.IN_PLACE and all(p.policies[name].in_place for p in stale_pods):
                if all(p.ready for p in view.pods_of(ref)):
                    pod = stale_pods[0]
                    state = pod.policies[name]
                    assert state.in_place is not None
                    actions.append(UpdateInPlace(ref, pod.namespace, pod.name, pod.uid, name, revision,
                                                 state.pod_revision, dict(state.in_place)))
                    memory.in_place[(pod.uid, name)] = InPlaceMark(ref, pod.uid, name, revision, now)
                    mine.add(ref)
                    acted.add(ref)
                elif ref not in mine:
                    # Unready before anything was changed: not ours to make worse, nor to wait for.
                    waiting.setdefault(name, f"{ref} has pods that are not ready")
                continue
            if workload.on_delete or workload.paused:
                waiting.setdefault(name, f"{ref} updates its pods only when they are deleted (OnDelete)"
                                   if workload.on_delete else f"{ref} is paused (spec.paused)")
                continue
            record = parse_record(workload.rollout_record)
            if name in record and record[name].revision == revision:
                continue   # restarted for this revision already: never twice
            if not workload.rollout_done or not all(p.ready for p in view.pods_of(ref)):
                # Unhealthy (or rolling out on its own) before we touch it: a restart would be
                # judged for what it did not cause, and halt the policy's rollout.
                waiting.setdefault(name, f"{ref} is not ready or is rolling out already")
                continue
            carried = sorted(stale[ref])
            blocked = next((why for n in carried if (why := may_carry(n, ref))), "")
            if blocked:
                waiting.setdefault(name, f"{ref} waits: {blocked}")
                continue
            changes = {n: revisions[n] for n in carried if n in revisions}
            previous = {n: _pod_revision(stale[ref][n], n) for n in carried}
            actions.append(Restart(ref, changes, previous))
            acted.add(ref)
            for n in carried:
                taken.setdefault(n, set()).add(ref)

    rollouts = {name: _state(by_name[name].spec.update, name, halts, taken, stale, waiting)
                for name in sorted(by_name)}
    return Plan(tuple(actions), rollouts, tuple(halts[n] for n in sorted(halts)))


def _in_place_health(view: ClusterView, by_name: Mapping[str, InjectionPolicy], revisions: Mapping[str, str],
                     memory: Memory, now: datetime, in_flight: dict[str, set[WorkloadRef]],
                     halts: dict[str, Halt]) -> None:
    for key, mark in list(memory.in_place.items()):
        policy = by_name.get(mark.policy)
        pod = next((p for p in view.pods_of(mark.ref) if p.uid == mark.uid), None)
        if policy is None or revisions.get(mark.policy) != mark.revision or pod is None:
            del memory.in_place[key]
            continue
        if pod.crashlooping:
            in_flight[mark.policy].add(mark.ref)
            halts.setdefault(mark.policy, Halt(mark.policy, mark.revision, mark.ref,
                                               f"injected container(s) {', '.join(sorted(pod.crashlooping))} of pod "
                                               f"{pod.name} crash-loop after an in-place update"))
        elif not pod.ready:
            in_flight[mark.policy].add(mark.ref)
            deadline = policy.spec.update.progress_deadline_seconds
            if (now - mark.at).total_seconds() > deadline:
                halts.setdefault(mark.policy, Halt(mark.policy, mark.revision, mark.ref,
                                                   f"pod {pod.name} not ready {deadline}s after an in-place update"))
        else:
            del memory.in_place[key]


def _current(pod: PodView, policy: str, revision: str) -> bool:
    state = pod.policies.get(policy)
    return state is not None and state.state == CURRENT and state.pod_revision == revision


def _pod_revision(pods: list[PodView], policy: str) -> str:
    return next((p.policies[policy].pod_revision for p in pods if p.policies[policy].pod_revision), "")


def _state(update: Update, name: str, halts: Mapping[str, Halt], taken: Mapping[str, set[WorkloadRef]],
           stale: Mapping[WorkloadRef, Mapping[str, list[PodView]]], waiting: Mapping[str, str]) -> RolloutState:
    if update.strategy is UpdateStrategy.MANUAL:
        return RolloutState(IDLE)
    if name in halts:
        halt = halts[name]
        return RolloutState(HALTED, f"{halt.ref}: {halt.reason}")
    if update.paused:
        return RolloutState(PAUSED, "spec.update.paused")
    in_scope = any(name in s and ref.restartable and update.selects_namespace(ref.namespace)
                   for ref, s in stale.items())
    if taken.get(name) or in_scope:
        return RolloutState(ROLLING, waiting.get(name, ""))
    outside = sum(name in s and ref.restartable for ref, s in stale.items())
    # Done with the canary: say what is left for widening it.
    return RolloutState(IDLE, f"{outside} stale workload(s) outside update.namespaces" if outside else "")
