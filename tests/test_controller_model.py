"""The controller's model: which owners may be restarted, and records that cannot change."""

from __future__ import annotations

import dataclasses

import pytest

from webhook.controller.model import (PodView, PolicyState, StaticClusterView, WorkloadRef, WorkloadView)


@pytest.mark.parametrize("kind,restartable", [
    ("Deployment", True), ("StatefulSet", True), ("DaemonSet", True),
    ("Job", False), ("CronJob", False), ("Pod", False), ("Other:kubeflow.org/v1/PyTorchJob", False),
])
def test_only_templated_workloads_are_restartable(kind: str, restartable: bool) -> None:
    ref = WorkloadRef(kind, "ns", "w")
    assert ref.restartable is restartable
    assert (ref.why_not_restartable == "") is restartable


def test_views_are_immutable() -> None:
    state = PolicyState("stale", "changed", "r1", "r2", in_place={"proxy": "proxy:2"})
    pod = PodView("ns", "p", "uid", WorkloadRef("Deployment", "ns", "d"), policies={"mesh": state})
    with pytest.raises(dataclasses.FrozenInstanceError):
        pod.phase = "Running"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pod.policies["other"] = state  # type: ignore[index]
    with pytest.raises(TypeError):
        state.in_place["proxy"] = "x"  # type: ignore[index]
    assert pod.stale_for("mesh") and not pod.stale_for("identity")


def test_rollout_done_needs_every_replica_updated_and_available() -> None:
    ref = WorkloadRef("Deployment", "ns", "d")
    done = WorkloadView(ref, generation=3, observed_generation=3, replicas=2, updated_replicas=2, available_replicas=2)
    assert done.rollout_done
    assert not dataclasses.replace(done, observed_generation=2).rollout_done
    assert not dataclasses.replace(done, available_replicas=1).rollout_done


def test_static_view_groups_pods_by_owner() -> None:
    a, b = WorkloadRef("Deployment", "ns", "a"), WorkloadRef("Pod", "ns", "b")
    pods = (PodView("ns", "a-1", "1", a), PodView("ns", "b", "2", b), PodView("ns", "a-2", "3", a))
    view = StaticClusterView(pods=pods)
    assert [p.name for p in view.pods_of(a)] == ["a-1", "a-2"]
    assert list(view.owners()) == [a, b]
