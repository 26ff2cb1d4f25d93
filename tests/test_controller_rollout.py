"""The issue's rollout scenarios end to end: the fake API server, the simulated workload
controllers and kubelet (every pod admitted through the webhook's engine), the controller's
cache and its rollout hook, on the simulated clock (tests/controller_cluster.py)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controller_cluster import Cluster, agent
from tests.fake_apiserver import ApiError, FakeApiServer, rules_from_manifests
from tests.test_manifests import DOCUMENTS
from webhook.controller.events import EventRecorder
from webhook.controller.model import HookContext, RolloutState, WorkloadRef
from webhook.controller.rollout import Rollout
from webhook.controller.watch import list_all


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def make(fake: FakeApiServer, tmp_path: Path, update: str) -> Iterator[Cluster]:
    cluster = Cluster(fake, agent("1", update), tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def workloads(cluster: Cluster, names: tuple[str, ...] = ("a", "b", "c"), namespace: str = "shop") -> None:
    for name in names:
        cluster.deploy("Deployment", name, namespace)


def others(cluster: Cluster) -> dict[str, str]:
    """A Job's pod, a CronJob's, a bare pod and a training operator's; their uids."""
    cluster.ensure_namespace("shop")
    # Each Job selects its pod, as the Job controller's selector does (the controller checks).
    job = cluster.fake.create("jobs", {"metadata": {"name": "once", "namespace": "shop"},
                                       "spec": {"selector": {"matchLabels": {"app": "once-x"}}}})
    cron = cluster.fake.create("cronjobs", {"metadata": {"name": "nightly", "namespace": "shop"}, "spec": {}})
    run = cluster.fake.create("jobs", {"metadata": {
        "name": "nightly-1", "namespace": "shop", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": cron["metadata"]["uid"],
            "controller": True}]}, "spec": {"selector": {"matchLabels": {"app": "nightly-1-x"}}}})
    pods = [cluster.pod("once-x", owner={"apiVersion": "batch/v1", "kind": "Job", "name": "once",
                                         "uid": job["metadata"]["uid"]}),
            cluster.pod("nightly-1-x", owner={"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1",
                                              "uid": run["metadata"]["uid"]}),
            cluster.pod("debug"),
            cluster.pod("train-0", owner={"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "train",
                                          "uid": "uid-train"})]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


def started(cluster: Cluster) -> None:
    cluster.workloads.settle()
    assert cluster.stale() == [] and cluster.rolling() == []
    cluster.reconcile()
    assert cluster.fake.writes() == [w for w in cluster.fake.writes() if w[1] == "pods" and w[0] == "create"]
    cluster.fake.requests.clear()


def bump(cluster: Cluster, update: str, version: str = "2", **kw: str) -> None:
    cluster.set_policies(agent(version, update, **kw))
    assert cluster.stale()


def restartable_stale(cluster: Cluster) -> list[str]:
    return [p for p in cluster.stale() if p.split("/")[1] not in ("once-x", "nightly-1-x", "debug", "train-0")]


# -- Restart -----------------------------------------------------------------------------------------

@pytest.fixture
def restart2(fake: FakeApiServer, tmp_path: Path) -> Iterator[Cluster]:
    yield from make(fake, tmp_path, "{strategy: Restart, maxConcurrent: 2}")


def test_an_image_bump_under_restart_converges_never_more_than_max_concurrent_at_once(restart2: Cluster) -> None:
    cluster = restart2
    workloads(cluster, ("a", "b", "c"))
    cluster.deploy("StatefulSet", "db", replicas=2)
    cluster.deploy("DaemonSet", "node-agent")
    uids = others(cluster)
    started(cluster)
    bump(cluster, "{strategy: Restart, maxConcurrent: 2}")
    cluster.run(lambda: not restartable_stale(cluster) and not cluster.rolling())
    assert cluster.most_rolling == 2
    # Each restarted once, as kubectl rollout restart would.
    assert Counter(cluster.restarts()) == {("patch", r, n): 1 for r, n in (
        ("deployments", "a"), ("deployments", "b"), ("deployments", "c"), ("statefulsets", "db"),
        ("daemonsets", "node-agent"))}
    assert sorted(e for e in cluster.events.reasons() if e[1] == "RuntimeRestarted") == [
        ("DaemonSet/shop/node-agent", "RuntimeRestarted"), ("Deployment/shop/a", "RuntimeRestarted"),
        ("Deployment/shop/b", "RuntimeRestarted"), ("Deployment/shop/c", "RuntimeRestarted"),
        ("StatefulSet/shop/db", "RuntimeRestarted")]
    # Jobs, CronJob pods, bare pods and an operator's pods: reported stale, never touched.
    assert cluster.stale() == ["shop/debug", "shop/nightly-1-x", "shop/once-x", "shop/train-0"]
    assert {name: uid for name, uid in ((k.split("/")[1], v) for k, v in cluster.pod_uids().items())
            if name in uids} == uids
    assert not [w for w in cluster.fake.writes() if w[1] == "pods"]
    cluster.reconcile()
    assert cluster.rollouts["agent"] == RolloutState("idle")


def test_a_rollout_that_never_becomes_available_halts_with_the_event(fake: FakeApiServer, tmp_path: Path) -> None:
    update = "{strategy: Restart, progressDeadlineSeconds: 60}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b", "c"))
        started(cluster)
        cluster.workloads.fail_rollout("deployments", "shop", "b")
        bump(cluster, update)
        cluster.run(lambda: cluster.rollouts.get("agent", RolloutState()).state == "halted")
        state = cluster.rollouts["agent"]
        assert state.reason.startswith("Deployment/shop/b: Deployment b did not finish its rollout within 60s")
        for _ in range(10):   # halted: nothing more starts
            cluster.reconcile()
            cluster.workloads.step()
        assert Counter(n for _, _, n in cluster.restarts()) == {"a": 1, "b": 1}
        assert [e for e in cluster.events.reasons() if e[1] == "RuntimeRolloutHalted"] == [
            ("Deployment/shop/b", "RuntimeRolloutHalted")]   # told once, however long the halt
        halted = next(e for e in cluster.events.recorded if e[1] == "RuntimeRolloutHalted")
        assert halted[3] == "agent" and halted[4][1] == cluster.policies.injectors[0].revision
        # The broken release is fixed: b recovers, the halt lifts, c follows.
        cluster.workloads.heal()
        cluster.run(lambda: not restartable_stale(cluster) and not cluster.rolling())
        assert Counter(n for _, _, n in cluster.restarts()) == {"a": 1, "b": 1, "c": 1}


def test_crash_looping_injected_containers_halt_the_rollout(fake: FakeApiServer, tmp_path: Path) -> None:
    update = "{strategy: Restart}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b"))
        started(cluster)
        cluster.workloads.fail_image("registry.example.com/agent:2")
        bump(cluster, update)
        cluster.run(lambda: cluster.rollouts.get("agent", RolloutState()).state == "halted")
        assert "crash-loop" in cluster.rollouts["agent"].reason
        for _ in range(5):
            cluster.reconcile()
            cluster.workloads.step()
        assert [n for _, _, n in cluster.restarts()] == ["a"]


# -- InPlace -----------------------------------------------------------------------------------------

def test_an_image_bump_under_in_place_converges_without_replacing_a_pod(fake: FakeApiServer,
                                                                        tmp_path: Path) -> None:
    update = "{strategy: InPlace, maxConcurrent: 2}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b"))
        cluster.deploy("StatefulSet", "db", replicas=2)
        uids = others(cluster)
        started(cluster)
        before = cluster.pod_uids()
        bump(cluster, update)
        cluster.run(lambda: not restartable_stale(cluster))
        assert cluster.pod_uids() == before and cluster.workloads.deleted == []
        assert cluster.restarts() == []
        patched = [w for w in cluster.fake.writes() if w[1] == "pods"]
        assert sorted(name for *_, name in patched) == sorted(k.split("/")[1] for k in before
                                                              if k.split("/")[1] not in uids)
        for pod in cluster.fake.list("pods"):
            if pod["metadata"]["name"] in uids:
                continue
            status = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
            assert status["agent"]["image"] == "registry.example.com/agent:2"
            assert status["agent"]["restartCount"] == 1   # only the sidecar restarted
        assert ("Deployment/shop/a", "RuntimeUpdatedInPlace") in cluster.events.reasons()


def test_in_place_falls_back_to_restart_when_more_than_the_image_changed(fake: FakeApiServer,
                                                                         tmp_path: Path) -> None:
    update = "{strategy: InPlace}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a",))
        started(cluster)
        bump(cluster, update, port="9100")
        cluster.run(lambda: not cluster.stale() and not cluster.rolling())
        assert cluster.restarts() == [("patch", "deployments", "a")]
        assert not [w for w in cluster.fake.writes() if w[1] == "pods"]


# -- the knobs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("update", ["{}", "{strategy: Manual}", "{strategy: Restart, paused: true}"])
def test_manual_and_paused_change_nothing(fake: FakeApiServer, tmp_path: Path, update: str) -> None:
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b"))
        started(cluster)
        bump(cluster, update)
        for _ in range(5):
            cluster.reconcile()
            cluster.workloads.step()
        assert cluster.fake.writes() == [] and cluster.events.recorded == []
        assert len(cluster.stale()) == 4
        expected = RolloutState("paused", "spec.update.paused") if "paused" in update else RolloutState("idle")
        assert cluster.rollouts["agent"] == expected
        if "paused" in update:   # resumed: the same revision rolls out
            cluster.set_policies(agent("2", "{strategy: Restart}"))
            cluster.run(lambda: not cluster.stale() and not cluster.rolling())
            assert sorted(n for *_, n in cluster.restarts()) == ["a", "b"]


def test_the_namespaces_canary_rolls_out_there_first(fake: FakeApiServer, tmp_path: Path) -> None:
    canary = "{strategy: Restart, maxConcurrent: 3, namespaces: {include: [canary-*]}}"
    for cluster in make(fake, tmp_path, canary):
        workloads(cluster, ("a",), "canary-1")
        workloads(cluster, ("a", "b"), "prod")
        started(cluster)
        bump(cluster, canary)
        cluster.run(lambda: not [p for p in cluster.stale() if p.startswith("canary-")] and not cluster.rolling())
        for _ in range(3):
            cluster.reconcile()
            cluster.workloads.step()
        assert [(r, n) for _, r, n in cluster.restarts()] == [("deployments", "a")]
        assert all(p.startswith("prod/") for p in cluster.stale())
        assert cluster.rollouts["agent"] == RolloutState("idle", "2 stale workload(s) outside update.namespaces")
        # Widened: the rest follows, the canary is not restarted again.
        cluster.set_policies(agent("2", "{strategy: Restart, maxConcurrent: 3}"))
        cluster.run(lambda: not cluster.stale() and not cluster.rolling())
        assert len(cluster.restarts()) == 3


def test_dry_run_decides_and_logs_but_changes_nothing(fake: FakeApiServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    update = "{strategy: Restart, maxConcurrent: 2}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b", "c"))
        started(cluster)
        bump(cluster, update)
        dry = cluster.leader(dry_run=True)
        with caplog.at_level("INFO", logger="webhook.controller"):
            for _ in range(3):
                cluster.reconcile(dry)
                cluster.workloads.step()
        assert cluster.fake.writes() == [] and cluster.events.recorded == []
        assert len(cluster.stale()) == 6
        lines = [r.getMessage() for r in caplog.records if r.getMessage().endswith(": dry-run")]
        # Each decision told once while it stands, not once a pass.
        assert [line.split(" (")[0] for line in lines] == ["restart Deployment/shop/a", "restart Deployment/shop/b"]


# -- leadership --------------------------------------------------------------------------------------

def test_a_new_leader_finishes_the_rollout_restarting_no_workload_twice(fake: FakeApiServer, tmp_path: Path) -> None:
    update = "{strategy: Restart, maxConcurrent: 1}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b", "c"))
        started(cluster)
        bump(cluster, update)
        # The first leader restarts a, and dies while a rolls out.
        cluster.reconcile()
        assert [n for *_, n in cluster.restarts()] == ["a"]
        lagging = cluster.state.snapshot()   # what a new leader's watch may still show
        cluster.workloads.step()
        second = cluster.leader()
        # Its cache lags behind the first leader's last write: it reads before writing.
        second(lagging, cluster.policies, cluster.workloads.now.timestamp())
        assert [o.result for o in second.outcomes] == ["already"]
        cluster.run(lambda: not cluster.stale() and not cluster.rolling(), rollout=second)
        assert Counter(n for *_, n in cluster.restarts()) == {"a": 1, "b": 1, "c": 1}
        assert cluster.most_rolling == 1


def test_two_leaders_at_once_restart_a_workload_once(fake: FakeApiServer, tmp_path: Path) -> None:
    # An old leader that has not yet noticed it lost the lease plans on the same view.
    update = "{strategy: Restart}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a",))
        started(cluster)
        bump(cluster, update)
        list_all(cluster.state, cluster.api)
        view, now = cluster.state.snapshot(), cluster.workloads.now.timestamp()
        old, new = cluster.leader(), cluster.leader()
        new(view, cluster.policies, now)
        old(view, cluster.policies, now)
        assert [o.result for o in new.outcomes] == ["applied"] and [o.result for o in old.outcomes] == ["already"]
        assert cluster.restarts() == [("patch", "deployments", "a")]


def test_job_cronjob_bare_and_operator_pods_are_reported_never_restarted(fake: FakeApiServer,
                                                                        tmp_path: Path) -> None:
    update = "{strategy: Restart, maxConcurrent: 5}"
    for cluster in make(fake, tmp_path, update):
        uids = others(cluster)
        started(cluster)
        bump(cluster, "{strategy: InPlace, maxConcurrent: 5}")
        for _ in range(5):
            cluster.reconcile()
            cluster.workloads.step()
        assert cluster.fake.writes() == [] and cluster.events.recorded == []
        assert cluster.stale() == ["shop/debug", "shop/nightly-1-x", "shop/once-x", "shop/train-0"]
        assert {k.split("/")[1]: v for k, v in cluster.pod_uids().items()} == uids
        owners = {p.owner for p in cluster.state.snapshot().pods()}
        assert owners == {WorkloadRef("Job", "shop", "once"), WorkloadRef("CronJob", "shop", "nightly"),
                          WorkloadRef("Pod", "shop", "debug"),
                          WorkloadRef("Other:kubeflow.org/v1/PyTorchJob", "shop", "train")}
        assert cluster.rollouts["agent"] == RolloutState("idle")


@pytest.mark.parametrize("update", ["{strategy: Restart, maxConcurrent: 2}", "{strategy: InPlace, maxConcurrent: 2}"])
def test_rollouts_need_nothing_beyond_the_shipped_rbac(fake: FakeApiServer, tmp_path: Path, update: str) -> None:
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b"))
        cluster.deploy("StatefulSet", "db")
        cluster.deploy("DaemonSet", "node-agent")
        started(cluster)
        bump(cluster, update)
        fake.rbac = rules_from_manifests([d for _, d in DOCUMENTS], "webhook-controller", "webhook-system")
        recorder = EventRecorder(cluster.api)
        leader = Rollout(HookContext(api_client=cluster.api, recorder=recorder, dry_run=False,
                                     log=logging.getLogger("webhook.controller"), say=cluster.said.append))

        def done() -> bool:
            recorder.flush()
            return not cluster.stale() and not cluster.rolling()
        cluster.run(done, rollout=leader)
        assert not [line for line in cluster.said if not line.endswith(": applied")]
        assert {e["regarding"]["name"] for e in fake.list("events", "shop")} == {"a", "b", "db", "node-agent"}


def test_a_refused_restart_is_tried_again_a_minute_later_and_others_go_on(fake: FakeApiServer,
                                                                          tmp_path: Path) -> None:
    update = "{strategy: Restart, maxConcurrent: 1}"
    for cluster in make(fake, tmp_path, update):
        workloads(cluster, ("a", "b"))
        started(cluster)
        refusing = [True]

        def admission(operation: str, resource: str, namespace: str, obj: dict, old: dict | None) -> None:
            if refusing[0] and (operation, resource, obj["metadata"]["name"]) == ("UPDATE", "deployments", "a"):
                raise ApiError(403, "Forbidden", "admission webhook \"validate.example.com\" denied the request")
        fake.admission.append(admission)
        bump(cluster, update)
        cluster.reconcile()
        assert cluster.said[-1].startswith("restart Deployment/shop/a") and ": failed (" in cluster.said[-1]
        cluster.run(lambda: not [p for p in cluster.stale() if p.startswith("shop/b-")] and not cluster.rolling())
        assert cluster.restarts() == [("patch", "deployments", "a"), ("patch", "deployments", "b")]
        refusing[0] = False
        cluster.run(lambda: not cluster.stale() and not cluster.rolling())
        assert cluster.restarts()[-1] == ("patch", "deployments", "a") and len(cluster.restarts()) == 3
