"""The health gate: each kind's status read as `kubectl rollout status` reads it (checked
against the simulated controllers step by step), the rollout record, and the verdicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import SHIPPED_POLICIES
from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import RESTARTED_AT, FakeWorkloads
from webhook.controller.health import (MAX_RECORD_BYTES, RecordEntry, Verdict, format_record, judge, parse_record,
                                       workload_view)
from webhook.controller.model import (PodView, PolicyState, StaticClusterView, WorkloadRef, WorkloadView)
from webhook.policy.loader import load_policy_dir

NS = "shop"
KIND = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        yield server


def _workload(resource: str, name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"containers": [{"name": "app",
                                                                  "image": "registry.example.com/a:1"}]}},
                            **spec}
    if resource != "daemonsets":
        body.setdefault("replicas", 3)
    if resource == "statefulsets":
        body["serviceName"] = name
    return {"metadata": {"name": name, "namespace": NS}, "spec": body}


@pytest.mark.parametrize(("resource", "spec"), [
    ("deployments", {}),
    ("deployments", {"strategy": {"type": "Recreate"}}),
    ("deployments", {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}),
    ("statefulsets", {}),
    ("statefulsets", {"podManagementPolicy": "Parallel"}),
    ("statefulsets", {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
    ("daemonsets", {}),
])
def test_each_kinds_status_reads_as_kubectl_rollout_status(fake: FakeApiServer, resource: str,
                                                           spec: dict[str, Any]) -> None:
    workloads = FakeWorkloads(fake, load_policy_dir(SHIPPED_POLICIES))
    fake.create(resource, _workload(resource, "w", **spec))
    ref = WorkloadRef(KIND[resource], NS, "w")

    def agree() -> bool:
        obj = fake.get(resource, "w", NS)
        assert obj is not None
        done = workload_view(ref, obj).rollout_done
        assert done == workloads.rollout_complete(resource, NS, "w"), obj.get("status")
        return done

    seen = [agree()]
    for _ in range(30):
        workloads.step()
        seen.append(agree())
    assert seen[-1] and not seen[0]
    obj = fake.get(resource, "w", NS)
    assert obj is not None
    obj["spec"]["template"].setdefault("metadata", {})["annotations"] = {RESTARTED_AT: "2026-01-01T00:05:00Z"}
    fake.update(resource, obj)
    assert not agree()   # a new generation the workload's controller has not seen yet
    seen = []
    for _ in range(30):
        workloads.step()
        seen.append(agree())
    assert False in seen and seen[-1]
    assert workload_view(ref, fake.get(resource, "w", NS) or {}).restarted_at == "2026-01-01T00:05:00Z"


def test_a_stuck_deployment_reports_its_deadline_exceeded(fake: FakeApiServer) -> None:
    workloads = FakeWorkloads(fake, load_policy_dir(SHIPPED_POLICIES))
    fake.create("deployments", _workload("deployments", "w", progressDeadlineSeconds=60))
    workloads.fail_rollout("deployments", NS, "w")
    for _ in range(10):
        workloads.step()
    view = workload_view(WorkloadRef("Deployment", NS, "w"), fake.get("deployments", "w", NS) or {})
    assert view.progress_deadline_exceeded and not view.rollout_done


def test_on_delete_partition_and_paused_are_read() -> None:
    sts = _workload("statefulsets", "db", updateStrategy={"type": "OnDelete"})
    assert workload_view(WorkloadRef("StatefulSet", NS, "db"), sts).on_delete
    assert workload_view(WorkloadRef("Deployment", NS, "w"), _workload("deployments", "w", paused=True)).paused
    ds = _workload("daemonsets", "agent", updateStrategy={"type": "RollingUpdate"})
    assert not workload_view(WorkloadRef("DaemonSet", NS, "agent"), ds).on_delete
    with pytest.raises(ValueError):
        workload_view(WorkloadRef("Job", NS, "j"), {})


@pytest.mark.parametrize("text", [
    None, "", "not json", "[1]", '{"p": 1}', '{"p": {"revision": 1, "at": "2026-01-01T00:00:00Z"}}',
    '{"p": {"revision": "r", "at": "yesterday"}}', '{"p": {"revision": "r"}}',
    '{"p": {"revision": "r", "at": "2026-01-01T00:00:00Z", "pad": "' + "x" * MAX_RECORD_BYTES + '"}}',
])
def test_a_record_that_is_not_ours_reads_as_none(text: str | None) -> None:
    assert parse_record(text) == {}


def test_the_record_round_trips() -> None:
    entries = {"mesh": RecordEntry("abc", T0), "identity": RecordEntry("def", T0 + timedelta(seconds=5))}
    text = format_record(entries)
    assert text == ('{"identity":{"revision":"def","at":"2026-01-01T00:00:05Z"},'
                    '"mesh":{"revision":"abc","at":"2026-01-01T00:00:00Z"}}')
    assert parse_record(text) == entries


# -- verdicts -----------------------------------------------------------------------------------

REF = WorkloadRef("Deployment", NS, "web")
DONE = WorkloadView(REF, generation=2, observed_generation=2, replicas=2, updated_replicas=2, available_replicas=2)
CURRENT = PolicyState("current", pod_revision="r2", current_revision="r2")
STALE = PolicyState("stale", "changed", "r1", "r2")


def pod(name: str, state: PolicyState = CURRENT, *, ready: bool = True,
        crashlooping: frozenset[str] = frozenset()) -> PodView:
    return PodView(NS, name, name, REF, phase="Running", ready=ready, policies={"mesh": state},
                   crashlooping=crashlooping)


@pytest.mark.parametrize(("workload", "pods", "after", "expected"), [
    (DONE, [pod("a"), pod("b")], 30, Verdict("done")),
    (None, [], 30, Verdict("done", "the workload is gone")),
    (dataclasses.replace(DONE, updated_replicas=1), [pod("a"), pod("b", STALE)], 30, Verdict("progressing")),
    (dataclasses.replace(DONE, observed_generation=1), [pod("a"), pod("b")], 30, Verdict("progressing")),
    (DONE, [pod("a"), pod("b", ready=False)], 30, Verdict("progressing")),
    (dataclasses.replace(DONE, updated_replicas=1, available_replicas=1), [pod("a"), pod("b", ready=False)], 700,
     Verdict("failed", "Deployment web did not finish its rollout within 600s (1/2 updated, 1/2 available; "
                       "1 pod(s) not ready)")),
    (DONE, [pod("a"), pod("b", STALE)], 700,
     Verdict("failed", "Deployment web did not finish its rollout within 600s (2/2 updated, 2/2 available; "
                       "1 pod(s) still stale)")),
    (dataclasses.replace(DONE, updated_replicas=1), [pod("a", ready=False, crashlooping=frozenset({"proxy"}))], 30,
     Verdict("failed", "injected container(s) proxy of pod a crash-loop")),
    # An old pod crash-looping is not the new runtime's doing.
    (dataclasses.replace(DONE, updated_replicas=1), [pod("a", STALE, crashlooping=frozenset({"proxy"}))], 30,
     Verdict("progressing")),
    # A partition keeps the ordinals below it stale on purpose: done once the rest are.
    (dataclasses.replace(DONE, partition=1, updated_replicas=1), [pod("a"), pod("b", STALE)], 700, Verdict("done")),
    (dataclasses.replace(DONE, updated_replicas=1, progress_deadline_exceeded=True), [pod("a")], 30,
     Verdict("failed", "Deployment web reports ProgressDeadlineExceeded")),
])
def test_the_gate_judges(workload: WorkloadView | None, pods: list[PodView], after: int, expected: Verdict) -> None:
    view = StaticClusterView(pods=tuple(pods), workload_views={REF: workload} if workload else {})
    assert judge(view, REF, "mesh", since=T0, deadline_seconds=600, now=T0 + timedelta(seconds=after)) == expected
