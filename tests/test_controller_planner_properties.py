"""The planner's rules as properties over generated clusters (deterministic in `make test`:
tests/fuzzing.py): whatever the mix of workloads, records and update stanzas, no action
breaks a policy's pace, pause, canary, halt or strategy, or touches a workload that is not
to be touched."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import examples
from tests.test_controller_planner import NOW, World, policies, rev
from webhook.controller.actions import Restart, UpdateInPlace
from webhook.controller.health import RecordEntry
from webhook.controller.planner import Memory
from webhook.policy.loader import PolicySet
from webhook.policy.update import UpdateFallback, UpdateStrategy

NAMES = ("log", "mesh")
KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "Other:kubeflow.org/v1/PyTorchJob")

stanzas = st.builds(
    lambda strategy, fallback, most, paused, canary: (
        "{strategy: %s%s, maxConcurrent: %d, paused: %s%s}" % (
            strategy, f", fallback: {fallback}" if strategy == "InPlace" else "", most, str(paused).lower(),
            ", namespaces: {include: [canary-*]}" if canary else "")),
    st.sampled_from(["Restart", "InPlace", "Restart", "Manual"]), st.sampled_from(["Restart", "Restart", "Manual"]),
    st.integers(1, 3), st.sampled_from([False, False, True]), st.sampled_from([False, False, True]))


@lru_cache(maxsize=256)
def policy_set(log: str, mesh: str) -> PolicySet:
    return policies(log=log, mesh=mesh)


# Weighted towards workloads the planner may act on (restartable, stale, healthy, not yet
# restarted): otherwise halts and waits would hide most of the rules.
workload = st.fixed_dictionaries({
    "kind": st.sampled_from(["Deployment", "Deployment", "StatefulSet", "DaemonSet", *KINDS[3:]]),
    "namespace": st.sampled_from(["canary-1", "prod"]),
    "replicas": st.integers(1, 3),
    "stale": st.sampled_from([{"log"}, {"mesh"}, {"log", "mesh"}, {"log", "mesh"}, set()]),
    "in_place": st.booleans(),
    "ready": st.sampled_from([True, True, True, False]),
    "recorded": st.sampled_from([set()] * 6 + [{"log"}, {"mesh"}]),
    "age": st.sampled_from([5, 5, 5, 5, 5, 5000]),
    "done": st.booleans(),
    "current_pods": st.sampled_from([0, 0, 1]),
    "on_delete": st.sampled_from([False, False, False, True]),
    "crash": st.sampled_from([False] * 7 + [True]),
})


@settings(max_examples=examples(300), deadline=None)
@given(log=stanzas, mesh=stanzas, specs=st.lists(workload, max_size=8))
def test_no_action_breaks_a_rule(log: str, mesh: str, specs: list[dict[str, Any]]) -> None:
    policy_set_ = policy_set(log, mesh)
    world = World(policy_set_)
    stale_of, unready = {}, set()
    for i, spec in enumerate(specs):
        record = {n: RecordEntry(rev(policy_set_, n), NOW - timedelta(seconds=spec["age"])) for n in spec["recorded"]}
        ref = world.add(spec["kind"], f"w{i}", namespace=spec["namespace"], replicas=spec["replicas"],
                        stale=spec["stale"], in_place=spec["in_place"], ready=spec["ready"], record=record or None,
                        done=spec["done"], current_pods=min(spec["current_pods"], spec["replicas"]),
                        on_delete=spec["on_delete"],
                        crashlooping=frozenset({"mesh"}) if spec["crash"] else frozenset())
        stale_of[ref] = set(spec["stale"])
        if not spec["ready"]:
            unready.add(ref)
    result = world.plan(Memory())
    updates = {p.metadata.name: p.spec.update for p in policy_set_.injection}
    halted = {h.policy for h in result.halts}
    touched = [a.ref for a in result.actions]
    assert len(touched) == len(set(touched)), "one change per workload a pass"
    per_policy = {n: 0 for n in NAMES}
    for action in result.actions:
        ref = action.ref
        assert ref.restartable, f"{ref} is never touched"
        view = world.workloads[ref]
        if isinstance(action, Restart):
            assert not view.on_delete and not view.paused
            assert view.rollout_done and ref not in unready, "only a healthy, settled workload is restarted"
            assert set(action.revisions) == stale_of[ref], "a restart carries every change, and says so"
            for name in action.revisions:
                update = updates[name]
                assert name not in halted and not update.paused and update.selects_namespace(ref.namespace)
                assert update.strategy is UpdateStrategy.RESTART or (
                    update.strategy is UpdateStrategy.IN_PLACE and update.fallback is UpdateFallback.RESTART)
                per_policy[name] += 1
        else:
            assert isinstance(action, UpdateInPlace)
            update = updates[action.policy]
            assert update.strategy is UpdateStrategy.IN_PLACE and not update.paused
            assert action.policy not in halted and update.selects_namespace(ref.namespace)
            assert action.policy in stale_of[ref] and ref not in unready, "only while all its pods are ready"
            per_policy[action.policy] += 1
    for name, started in per_policy.items():
        assert started <= updates[name].max_concurrent, f"{name}: {started} started at once"
