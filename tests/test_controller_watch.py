"""The controller's list + watch (webhook/controller/watch.py) against the fake API server:
pods reduced to PodViews with their owners resolved, nothing lost across a dropped watch or
a 410 Gone, and pods evaluated again when the policies change."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHIPPED_POLICIES
from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import FakeWorkloads
from tests.test_staleness import NEW_SHIPPER_IMAGE, SHIPPER_IMAGE, replace_in, shipped
from webhook.controller.model import WorkloadRef
from webhook.controller.state import ClusterState
from webhook.controller.watch import Watcher, list_all
from webhook.kube.client import load_api_client
from webhook.policy.loader import load_policy_dir

NS = "shop"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app",
                                                           "image": "registry.platform.internal/a:1"}]}}}}


def bare_pod(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": {"app": name}}
    if owner:
        metadata["ownerReferences"] = [{"uid": f"uid-{owner['name']}", **owner, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "registry.platform.internal/a:1"}]},
            "status": {"phase": "Running"}}


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.put_namespace(NS)
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def workloads(fake: FakeApiServer) -> FakeWorkloads:
    return FakeWorkloads(fake, load_policy_dir(SHIPPED_POLICIES))


def pod_names(state: ClusterState) -> set[str]:
    return {p.name for p in state.snapshot().pods()}


def api_names(fake: FakeApiServer) -> set[str]:
    return {p["metadata"]["name"] for p in fake.list("pods", NS)}


def test_owners_are_resolved_and_every_pod_is_evaluated(fake: FakeApiServer, kubeconfig: Path,
                                                        workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web"))
    workloads.settle()
    fake.put(bare_pod("debug"))
    fake.put(bare_pod("train-0", {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "train"}))
    fake.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "nightly-1", "namespace": NS, "uid": "uid-nightly-1",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "c",
                             "controller": True}]},
        "spec": {"selector": {"matchLabels": {"app": "nightly-1-abc"}}, "template": {"spec": {"containers": []}}}})
    fake.put(bare_pod("nightly-1-abc", {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1"}))
    # A pod's claims on a controller count only when they hold: the uid and the selector.
    fake.put(bare_pod("forged-uid", {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1",
                                     "uid": "someone-else"}))
    forged = bare_pod("forged-rs", {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "name": fake.list("replicasets", NS)[0]["metadata"]["name"],
                                    "uid": fake.list("replicasets", NS)[0]["metadata"]["uid"]})
    fake.put(forged)   # the right uid, but labels its selector does not select
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    with load_api_client(kubeconfig) as api:
        list_all(state, api)
    view = state.snapshot()
    owners = {p.name: p.owner for p in view.pods()}
    web = WorkloadRef("Deployment", NS, "web")
    assert [owners[n] for n in sorted(owners) if n.startswith("web-")] == [web, web]
    assert owners["debug"] == WorkloadRef("Pod", NS, "debug")
    assert owners["train-0"] == WorkloadRef("Other:kubeflow.org/v1/PyTorchJob", NS, "train")
    assert owners["nightly-1-abc"] == WorkloadRef("CronJob", NS, "nightly")
    assert owners["forged-uid"] == WorkloadRef("Pod", NS, "forged-uid")
    assert owners["forged-rs"] == WorkloadRef("Pod", NS, "forged-rs")
    # Pods the simulated ReplicaSet created went through the webhook's engine: current.
    for pod in view.pods_of(web):
        assert {s.state for s in pod.policies.values()} == {"current"}, pod
        assert pod.ready and pod.phase == "Running"
    assert {s.reason for s in view.pods_of(WorkloadRef("Pod", NS, "debug"))[0].policies.values()} == {"missing"}
    workload = view.workload(web)
    assert workload is not None and workload.rollout_done and workload.replicas == 2


def test_a_dropped_watch_and_a_410_lose_no_pod(fake: FakeApiServer, kubeconfig: Path) -> None:
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    watcher = Watcher(state, lambda: load_api_client(kubeconfig), backoff_initial=0.05, backoff_max=0.2)
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        fake.put(bare_pod("a"))
        wait_for(lambda: pod_names(state) == {"a"})

        # Cut: what changes while no watch is open arrives when it resumes from its version.
        fake.fail("watch", "pods", code=500, times=2)
        fake.drop_watches()
        fake.put(bare_pod("b"))
        fake.remove("pods", "a", NS)
        wait_for(lambda: pod_names(state) == {"b"})
        assert watcher.reflectors["pods"].lists == 1   # resumed, not listed again

        # 410: the history the watch would resume from is gone; a list brings the truth,
        # including a deletion no event will ever tell.
        fake.fail("watch", "pods", code=500, times=3)
        fake.drop_watches()
        fake.put(bare_pod("c"))
        fake.remove("pods", "b", NS)
        fake.compact()
        wait_for(lambda: pod_names(state) == {"c"})
        assert watcher.reflectors["pods"].lists == 2
        assert pod_names(state) == api_names(fake)
    finally:
        watcher.stop()


def test_a_policy_change_evaluates_every_pod_again(fake: FakeApiServer, kubeconfig: Path,
                                                   workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web"))
    workloads.settle()
    state = ClusterState(shipped())
    watcher = Watcher(state, lambda: load_api_client(kubeconfig))
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        web = WorkloadRef("Deployment", NS, "web")
        wait_for(lambda: len(state.snapshot().pods_of(web)) == 2)
        assert state.snapshot().settled
        state.set_policies(shipped(replace_in("inject-log-shipper.yaml", SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)))
        assert not state.snapshot().settled and state.snapshot().outdated == 2   # not yet evaluated again
        watcher.policies_changed()
        wait_for(lambda: all(p.policies["log-shipper"].state == "stale" for p in state.snapshot().pods_of(web)))
        assert state.snapshot().settled
        pod = state.snapshot().pods_of(web)[0]
        assert pod.policies["log-shipper"].in_place == {"log-shipper": NEW_SHIPPER_IMAGE}
        assert pod.policies["identity"].state == "current"
    finally:
        watcher.stop()


def test_a_crash_looping_injected_container_is_noted_on_the_pod(fake: FakeApiServer, kubeconfig: Path,
                                                                 workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=1))
    workloads.settle()
    pod = fake.list("pods", NS)[0]
    shipper = next(c["image"] for c in pod["spec"]["initContainers"] if c["name"] == "log-shipper")
    workloads.fail_image(shipper)
    for _ in range(3):
        workloads.step()
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    with load_api_client(kubeconfig) as api:
        list_all(state, api)
    (view,) = state.snapshot().pods_of(WorkloadRef("Deployment", NS, "web"))
    assert view.crashlooping == frozenset({"log-shipper"}) and not view.ready


def test_a_pod_replaced_under_the_same_name_while_unwatched_leaves_no_ghost(fake: FakeApiServer,
                                                                            kubeconfig: Path) -> None:
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}
    fake.put({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": NS,
                                                                          "uid": "uid-db"},
              "spec": {"selector": {"matchLabels": {"app": "db-0"}}}})
    fake.put(bare_pod("db-0", owner))
    with load_api_client(kubeconfig) as api:
        list_all(state, api)
        first = state.pod(NS, "db-0")
        fake.remove("pods", "db-0", NS)
        fake.put(bare_pod("db-0", owner))      # a new uid, the same name
        list_all(state, api)
    pods = state.snapshot().pods_of(WorkloadRef("StatefulSet", NS, "db"))
    assert len(pods) == 1 and first is not None and pods[0].uid != first.uid
    assert pods[0].uid == fake.get("pods", "db-0", NS)["metadata"]["uid"]


def test_a_watch_refused_with_410_lists_again(fake: FakeApiServer, kubeconfig: Path) -> None:
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    watcher = Watcher(state, lambda: load_api_client(kubeconfig), backoff_initial=0.05, backoff_max=0.2)
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        fake.fail("watch", "pods", code=410, reason="Expired", message="too old resource version", times=1)
        fake.drop_watches()
        wait_for(lambda: watcher.reflectors["pods"].lists == 2)
        fake.put(bare_pod("after"))
        wait_for(lambda: pod_names(state) == {"after"})
    finally:
        watcher.stop()


def test_bookmarks_keep_a_quiet_watch_resumable_after_compaction(fake: FakeApiServer, kubeconfig: Path) -> None:
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    watcher = Watcher(state, lambda: load_api_client(kubeconfig), backoff_initial=0.05, backoff_max=0.2)
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        pods = watcher.reflectors["pods"]
        # Writes elsewhere move the cluster's version on; no pod event says so, a bookmark does.
        for n in range(5):
            fake.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{n}", "namespace": NS}})
        newest = fake.resource_version
        wait_for(lambda: int(pods.resource_version or 0) >= newest)
        fake.compact()
        fake.drop_watches()
        fake.put(bare_pod("after"))
        wait_for(lambda: pod_names(state) == {"after"})
        assert pods.lists == 1      # resumed from the bookmark's version: no 410, no list
    finally:
        watcher.stop()


def test_a_replicaset_that_claims_a_deployment_it_does_not_belong_to_is_not_that_deployment(
        fake: FakeApiServer, kubeconfig: Path, workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=1))
    workloads.settle()
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "web-forged", "namespace": NS, "uid": "uid-web-forged",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "not-web",
                             "controller": True}]},
        "spec": {"selector": {"matchLabels": {"app": "forged"}}}}
    fake.put(rs)
    fake.put(bare_pod("forged", {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-forged"}))
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    with load_api_client(kubeconfig) as api:
        list_all(state, api)
    view = state.snapshot()
    assert [p.name for p in view.pods_of(WorkloadRef("Deployment", NS, "web"))] != [] and \
        "forged" not in [p.name for p in view.pods_of(WorkloadRef("Deployment", NS, "web"))]
    assert state.pod(NS, "forged").owner == WorkloadRef("Other:apps/v1/ReplicaSet", NS, "web-forged")


def test_a_pod_the_engine_cannot_evaluate_does_not_stop_the_watch(fake: FakeApiServer, kubeconfig: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.controller.state as state_module

    real = state_module.pod_states

    def failing(pod: Any, *args: Any, **kwargs: Any) -> Any:
        if pod["metadata"]["name"] == "poison":
            raise RecursionError("maximum recursion depth exceeded")
        return real(pod, *args, **kwargs)

    monkeypatch.setattr(state_module, "pod_states", failing)
    state = ClusterState(load_policy_dir(SHIPPED_POLICIES))
    watcher = Watcher(state, lambda: load_api_client(kubeconfig), backoff_initial=0.05, backoff_max=0.2)
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        fake.put(bare_pod("poison"))
        fake.put(bare_pod("after"))
        wait_for(lambda: pod_names(state) == {"poison", "after"})
        assert state.pod(NS, "poison").policies == {} and state.pod(NS, "after").policies
        assert watcher.reflectors["pods"].last_error is None
    finally:
        watcher.stop()
