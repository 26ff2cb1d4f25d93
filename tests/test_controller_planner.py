"""The planner, table-driven on hand-built cluster views: no API, no HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import pytest

from tests.engine_helpers import policies_from_yaml
from webhook.controller.actions import Restart, UpdateInPlace
from webhook.controller.health import RecordEntry, format_record
from webhook.controller.model import (PodView, PolicyState, RolloutState, StaticClusterView, WorkloadRef,
                                      WorkloadView)
from webhook.controller.planner import InPlaceMark, Memory, plan
from webhook.policy.loader import PolicySet

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
POLICY = """\
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {{name: {name}}}
spec:
  inject:
    sidecars: [{{name: {name}, image: "registry.example.com/{name}:2"}}]
  update: {update}
"""


def policies(**updates: str) -> PolicySet:
    return policies_from_yaml(*(POLICY.format(name=name, update=update) for name, update in updates.items()))


def rev(policy_set: PolicySet, name: str) -> str:
    return next(p.revision for p in policy_set.injectors if p.name == name)


class World:
    """Workloads of `replicas` pods, each pod's state per policy."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policies = policy_set
        self.pods: list[PodView] = []
        self.workloads: dict[WorkloadRef, WorkloadView] = {}

    def add(self, kind: str, name: str, *, namespace: str = "ns", replicas: int = 2, stale: Iterable[str] = (),
            in_place: bool = False, ready: bool = True, record: dict[str, RecordEntry] | None = None,
            current_pods: int = 0, on_delete: bool = False, crashlooping: frozenset[str] = frozenset(),
            done: bool = True) -> WorkloadRef:
        ref = WorkloadRef(kind, namespace, name)
        stale = set(stale)
        for i in range(replicas):
            states = {}
            for p in self.policies.injectors:
                if p.name in stale and i >= current_pods:
                    states[p.name] = PolicyState("stale", "changed", "old", p.revision,
                                                 in_place={p.name: f"registry.example.com/{p.name}:2"}
                                                 if in_place else None)
                else:
                    states[p.name] = PolicyState("current", "", p.revision, p.revision)
            self.pods.append(PodView(namespace, f"{name}-{i}", f"{name}-{i}-uid", ref, phase="Running",
                                     ready=ready, policies=states,
                                     crashlooping=crashlooping if i < current_pods else frozenset()))
        if ref.restartable:
            updated = replicas if done else 0
            self.workloads[ref] = WorkloadView(ref, generation=2, observed_generation=2, replicas=replicas,
                                               updated_replicas=updated, available_replicas=updated,
                                               ready_replicas=updated, on_delete=on_delete,
                                               rollout_record=format_record(record) if record else None)
        return ref

    def plan(self, memory: Memory | None = None, now: datetime = NOW):   # type: ignore[no-untyped-def]
        view = StaticClusterView(pods=tuple(self.pods), workload_views=self.workloads)
        return plan(view, self.policies, memory or Memory(), now)


def restarted(result) -> list[str]:   # type: ignore[no-untyped-def]
    return [a.ref.name for a in result.actions if isinstance(a, Restart)]


def test_restart_never_more_than_max_concurrent_and_never_non_templated_kinds() -> None:
    world = World(policies(mesh="{strategy: Restart, maxConcurrent: 2}"))
    for name in ("a", "b", "c"):
        world.add("Deployment", name, stale=["mesh"])
    for kind in ("Job", "CronJob", "Pod", "Other:kubeflow.org/v1/PyTorchJob"):
        world.add(kind, kind.lower().replace(":", "-").replace("/", "-"), stale=["mesh"])
    result = world.plan()
    assert restarted(result) == ["a", "b"]
    action = result.actions[0]
    assert isinstance(action, Restart) and dict(action.revisions) == {"mesh": rev(world.policies, "mesh")}
    assert dict(action.previous) == {"mesh": "old"}
    assert result.rollouts["mesh"].state == "rolling"


def test_workloads_rolling_out_hold_their_slots_until_done() -> None:
    p = policies(mesh="{strategy: Restart, maxConcurrent: 1}")
    r = rev(p, "mesh")
    world = World(p)
    world.add("Deployment", "a", stale=["mesh"], record={"mesh": RecordEntry(r, NOW - timedelta(seconds=60))},
              current_pods=1, done=False)
    world.add("Deployment", "b", stale=["mesh"])
    assert restarted(world.plan()) == []          # a is still rolling
    finished = World(p)
    finished.add("Deployment", "a", record={"mesh": RecordEntry(r, NOW - timedelta(seconds=60))})
    finished.add("Deployment", "b", stale=["mesh"])
    assert restarted(finished.plan()) == ["b"]    # a finished: its slot is free


def test_a_workload_is_never_restarted_twice_for_one_revision() -> None:
    p = policies(mesh="{strategy: Restart}")
    world = World(p)
    # Restarted for the current revision, finished, and still stale (a webhook replica
    # that had not reloaded admitted the new pods): reported, not restarted again.
    world.add("Deployment", "a", stale=["mesh"], record={"mesh": RecordEntry(rev(p, "mesh"), NOW)})
    assert restarted(world.plan()) == []
    again = World(p)
    again.add("Deployment", "a", stale=["mesh"], record={"mesh": RecordEntry("older", NOW)})
    assert restarted(again.plan()) == ["a"]       # a later revision is a new change


def test_a_rollout_that_never_finishes_halts_the_policy() -> None:
    p = policies(mesh="{strategy: Restart, maxConcurrent: 5, progressDeadlineSeconds: 300}")
    world = World(p)
    world.add("Deployment", "a", stale=["mesh"], record={"mesh": RecordEntry(rev(p, "mesh"), NOW - timedelta(
        seconds=301))}, current_pods=1, done=False, ready=False)
    world.add("Deployment", "b", stale=["mesh"])
    result = world.plan()
    assert restarted(result) == []
    assert result.rollouts["mesh"].state == "halted"
    assert "Deployment/ns/a: Deployment a did not finish its rollout within 300s" in result.rollouts["mesh"].reason
    assert [(h.policy, h.ref.name) for h in result.halts] == [("mesh", "a")]


def test_crash_looping_injected_containers_halt_at_once() -> None:
    p = policies(mesh="{strategy: Restart, maxConcurrent: 5}")
    world = World(p)
    world.add("Deployment", "a", stale=["mesh"], record={"mesh": RecordEntry(rev(p, "mesh"), NOW)},
              current_pods=1, done=False, crashlooping=frozenset({"mesh"}))
    world.add("Deployment", "b", stale=["mesh"])
    result = world.plan()
    assert restarted(result) == [] and result.rollouts["mesh"] == RolloutState(
        "halted", "Deployment/ns/a: injected container(s) mesh of pod a-0 crash-loop")


def test_a_recovered_workload_lifts_the_halt() -> None:
    p = policies(mesh="{strategy: Restart, progressDeadlineSeconds: 300}")
    world = World(p)
    world.add("Deployment", "a", record={"mesh": RecordEntry(rev(p, "mesh"), NOW - timedelta(hours=1))})
    world.add("Deployment", "b", stale=["mesh"])
    result = world.plan()
    assert restarted(result) == ["b"] and result.halts == ()


@pytest.mark.parametrize(("update", "namespace", "expected", "state"), [
    ("{strategy: Manual}", "ns", [], RolloutState("idle")),
    ("{strategy: Restart, paused: true}", "ns", [], RolloutState("paused", "spec.update.paused")),
    ("{strategy: Restart, namespaces: {include: [canary-*]}}", "prod", [],
     RolloutState("idle", "1 stale workload(s) outside update.namespaces")),
    ("{strategy: Restart, namespaces: {include: [canary-*]}}", "canary-1", ["a"], RolloutState("rolling")),
    ("{strategy: Restart, namespaces: {exclude: [canary-*]}}", "canary-1", [],
     RolloutState("idle", "1 stale workload(s) outside update.namespaces")),
])
def test_manual_paused_and_the_canary(update: str, namespace: str, expected: list[str],
                                      state: RolloutState) -> None:
    world = World(policies(mesh=update))
    world.add("Deployment", "a", namespace=namespace, stale=["mesh"])
    result = world.plan()
    assert restarted(result) == expected and result.rollouts["mesh"] == state


@pytest.mark.parametrize(("other", "restarts", "why"), [
    ("{strategy: Restart}", True, ""),
    ("{strategy: InPlace}", True, ""),                  # falls back to Restart
    ("{strategy: Manual}", False, "Deployment/ns/a waits: identity is Manual"),
    ("{strategy: Restart, paused: true}", False, "Deployment/ns/a waits: identity's rollout is paused"),
    ("{strategy: Restart, namespaces: {include: [canary]}}", False,
     "Deployment/ns/a waits: ns is outside identity's update.namespaces"),
    ("{strategy: InPlace, fallback: Manual}", False, "Deployment/ns/a waits: identity is InPlace with fallback Manual"),
])
def test_a_restart_never_spreads_a_change_its_policy_does_not_allow(other: str, restarts: bool, why: str) -> None:
    p = policies(mesh="{strategy: Restart}", identity=other)
    world = World(p)
    world.add("Deployment", "a", stale=["mesh", "identity"])
    result = world.plan()
    assert restarted(result) == (["a"] if restarts else [])
    if restarts:
        action = result.actions[0]
        assert isinstance(action, Restart) and set(action.revisions) == {"mesh", "identity"}
    else:
        assert result.rollouts["mesh"] == RolloutState("rolling", why)


def test_in_place_updates_one_ready_pod_per_workload_without_a_restart() -> None:
    p = policies(mesh="{strategy: InPlace, maxConcurrent: 2}")
    world = World(p)
    for name in ("a", "b", "c"):
        world.add("Deployment", name, replicas=3, stale=["mesh"], in_place=True)
    memory = Memory()
    result = world.plan(memory)
    assert restarted(result) == []
    updates = [a for a in result.actions if isinstance(a, UpdateInPlace)]
    assert [(a.ref.name, a.pod) for a in updates] == [("a", "a-0"), ("b", "b-0")]
    assert dict(updates[0].images) == {"mesh": "registry.example.com/mesh:2"}
    assert (updates[0].revision, updates[0].previous) == (rev(p, "mesh"), "old")
    assert set(memory.in_place) == {("a-0-uid", "mesh"), ("b-0-uid", "mesh")}


def test_in_place_waits_for_the_pod_it_updated_and_halts_when_it_never_comes_back() -> None:
    p = policies(mesh="{strategy: InPlace, progressDeadlineSeconds: 60}")
    world = World(p)
    world.add("Deployment", "a", replicas=2, stale=["mesh"], in_place=True, current_pods=1, ready=False)
    world.add("Deployment", "b", replicas=2, stale=["mesh"], in_place=True)
    memory = Memory()
    ref = WorkloadRef("Deployment", "ns", "a")
    memory.in_place[("a-0-uid", "mesh")] = InPlaceMark(ref, "a-0-uid", "mesh", rev(p, "mesh"), NOW)
    assert world.plan(memory, NOW + timedelta(seconds=30)).actions == ()       # a holds the only slot
    late = world.plan(memory, NOW + timedelta(seconds=61))
    assert late.actions == () and late.rollouts["mesh"] == RolloutState(
        "halted", "Deployment/ns/a: pod a-0 not ready 60s after an in-place update")


def test_in_place_falls_back_when_more_than_images_changed() -> None:
    world = World(policies(mesh="{strategy: InPlace}"))
    world.add("Deployment", "a", stale=["mesh"], in_place=False)
    assert restarted(world.plan()) == ["a"]
    manual = World(policies(mesh="{strategy: InPlace, fallback: Manual}"))
    manual.add("Deployment", "a", stale=["mesh"], in_place=False)
    assert manual.plan().actions == ()


def test_on_delete_workloads_are_left_alone() -> None:
    world = World(policies(mesh="{strategy: Restart}"))
    world.add("StatefulSet", "db", stale=["mesh"], on_delete=True)
    world.add("DaemonSet", "agent", stale=["mesh"])
    result = world.plan()
    assert restarted(result) == ["agent"]


def test_workloads_part_current_by_themselves_take_no_extra_slots() -> None:
    # Each scaled up (or had a pod rescheduled) since the change: a new pod current, an old
    # one stale. Nobody restarted them, so each restart still needs a free slot.
    world = World(policies(mesh="{strategy: Restart, maxConcurrent: 1}"))
    for name in ("a", "b", "c"):
        world.add("Deployment", name, stale=["mesh"], current_pods=1)
    assert restarted(world.plan()) == ["a"]


def test_a_new_leader_sees_an_in_place_update_crash_loop_from_the_pods_alone() -> None:
    world = World(policies(mesh="{strategy: InPlace, maxConcurrent: 3}"))
    world.add("Deployment", "a", stale=["mesh"], in_place=True, current_pods=1, ready=False,
              crashlooping=frozenset({"mesh"}))
    world.add("Deployment", "b", stale=["mesh"], in_place=True)
    result = world.plan(Memory())
    assert result.actions == () and result.rollouts["mesh"] == RolloutState(
        "halted", "Deployment/ns/a: injected container(s) mesh of pod a-0 crash-loop after an in-place update")


def test_a_paused_deployment_is_left_alone_with_the_reason() -> None:
    world = World(policies(mesh="{strategy: Restart}"))
    ref = world.add("Deployment", "a", stale=["mesh"])
    world.workloads[ref] = dataclasses.replace(world.workloads[ref], paused=True)
    result = world.plan()
    assert result.actions == () and result.rollouts["mesh"] == RolloutState(
        "rolling", "Deployment/ns/a is paused (spec.paused)")


def test_in_place_reaches_on_delete_workloads_which_a_restart_cannot() -> None:
    world = World(policies(mesh="{strategy: InPlace}"))
    world.add("StatefulSet", "db", stale=["mesh"], in_place=True, on_delete=True)
    assert [(type(a).__name__, a.ref.name) for a in world.plan().actions] == [("UpdateInPlace", "db")]


def test_a_refused_workload_waits_and_frees_its_slot() -> None:
    world = World(policies(mesh="{strategy: Restart, maxConcurrent: 1}"))
    a = world.add("Deployment", "a", stale=["mesh"])
    world.add("Deployment", "b", stale=["mesh"])
    memory = Memory(refused={a: (NOW + timedelta(seconds=60), "403 Forbidden: denied by policy")})
    result = world.plan(memory)
    assert restarted(result) == ["b"]
    assert restarted(world.plan(memory, NOW + timedelta(seconds=61))) == ["a"]
    assert memory.refused == {}


def test_nothing_is_done_on_pods_judged_against_older_policies() -> None:
    # Policies reloaded, the cache not yet caught up: the pods' states (and in-place images)
    # are the old set's; acting on them could record a revision the pod does not have.
    old = policies(mesh="{strategy: InPlace}")
    new = policies_from_yaml(POLICY.format(name="mesh", update="{strategy: InPlace}").replace(":2", ":3"))
    world = World(old)
    world.add("Deployment", "a", stale=["mesh"], in_place=True)
    world.policies = new
    result = world.plan()
    assert result.actions == () and result.rollouts["mesh"] == RolloutState(
        "rolling", "Deployment/ns/a is being evaluated against the new policies")


@pytest.mark.parametrize(("ready", "done"), [(False, True), (True, False)])
def test_an_unhealthy_or_busy_workload_is_not_restarted_nor_holds_a_slot(ready: bool, done: bool) -> None:
    world = World(policies(mesh="{strategy: Restart, maxConcurrent: 1}"))
    world.add("Deployment", "a", stale=["mesh"], ready=ready, done=done)
    world.add("Deployment", "b", stale=["mesh"])
    result = world.plan()
    assert restarted(result) == ["b"]
