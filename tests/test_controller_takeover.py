"""The leader dies mid-rollout: two `webhook controller` processes' controllers (watches,
Lease, the default rollout hook) on one fake API server; the second finishes the rollout the
first started, restarting no workload twice and never more than maxConcurrent at once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.controller_cluster import AGENT, Cluster, agent
from tests.fake_apiserver import FakeApiServer
from webhook.controller.main import Controller, ControllerConfig
from webhook.controller.status import STATUS_CONFIGMAP
from webhook.kube.client import load_api_client

SYSTEM, LEASE = "webhook-system", "webhook-controller"
UPDATE = "{strategy: Restart, maxConcurrent: 1}"
LEASE_OPTIONS = {"lease_duration": 1.0, "renew_deadline": 0.7, "retry_period": 0.1}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with FakeApiServer(bookmark_interval=0.2) as fake:
        fake.put_namespace(SYSTEM)
        fake.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": STATUS_CONFIGMAP,
                                                                         "namespace": SYSTEM}})
        fake.put({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                  "metadata": {"name": LEASE, "namespace": SYSTEM}, "spec": {}})
        cluster = Cluster(fake, agent("1", UPDATE), tmp_path)
        for name in ("a", "b", "c"):
            cluster.deploy("Deployment", name)
        cluster.workloads.settle()
        cluster.set_policies(agent("2", UPDATE))
        yield cluster
        cluster.close()


def controller(cluster: Cluster, tmp_path: Path, identity: str) -> Controller:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "agent.yaml").write_text(AGENT.format(version="2", update=UPDATE, port="9000"))
    kubeconfig = cluster.fake.write_kubeconfig(tmp_path / "kubeconfig")
    config = ControllerConfig(policies=policies, port=0, namespace=SYSTEM, lease_name=LEASE, lease_namespace=SYSTEM)
    made = Controller(config, client_factory=lambda: load_api_client(kubeconfig), watch_options={"backoff_max": 0.5},
                      identity=identity, lease_options=LEASE_OPTIONS)
    made.start()
    assert made.watcher.wait_synced(10)
    return made


def test_the_new_leader_finishes_the_rollout_restarting_no_workload_twice(cluster: Cluster, tmp_path: Path) -> None:
    first = controller(cluster, tmp_path, "first")
    wait_for(lambda: first.elector.is_leader)
    second = controller(cluster, tmp_path, "second")
    try:
        def restarted() -> Counter[str]:
            return Counter(name for verb, resource, _, name in cluster.fake.writes()
                           if (verb, resource) == ("patch", "deployments"))

        # The first leader restarts one workload, which is still rolling out when it dies.
        wait_for(lambda: first.reconcile() and bool(restarted()))
        assert restarted() == {"a": 1}
        cluster.workloads.step()
        assert cluster.rolling() == ["Deployment/shop/a"]
        first.elector._stop.set()
        first.elector._thread.join()   # type: ignore[union-attr]
        first.watcher.stop()
        wait_for(lambda: second.elector.is_leader, timeout=5)

        deadline = time.monotonic() + 60
        while cluster.stale() or cluster.rolling():
            assert time.monotonic() < deadline, f"not done: {restarted()}, {cluster.rolling()}"
            second.reconcile()
            cluster.most_rolling = max(cluster.most_rolling, len(cluster.rolling()))
            cluster.workloads.step()
            cluster.most_rolling = max(cluster.most_rolling, len(cluster.rolling()))
            time.sleep(0.05)   # the watches deliver what the step changed
        assert restarted() == {"a": 1, "b": 1, "c": 1}
        assert cluster.most_rolling == 1
        by = {e["regarding"]["name"]: e["reportingInstance"] for e in cluster.fake.list("events", "shop")
              if e["reason"] == "RuntimeRestarted"}
        assert by == {"a": "first", "b": "second", "c": "second"}
    finally:
        first.stop()
        second.stop()


def test_a_halt_shows_in_every_status_place_and_as_one_event(cluster: Cluster, tmp_path: Path) -> None:
    update = "{strategy: Restart, progressDeadlineSeconds: 60}"
    cluster.set_policies(agent("2", update))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "agent.yaml").write_text(AGENT.format(version="2", update=update, port="9000"))
    kubeconfig = cluster.fake.write_kubeconfig(tmp_path / "kubeconfig")
    config = ControllerConfig(policies=policies, port=0, namespace=SYSTEM)
    made = Controller(config, client_factory=lambda: load_api_client(kubeconfig), watch_options={"backoff_max": 0.5})
    made.configmap.interval = 0   # written each pass here; at most every 10 s in a cluster
    made.start()
    assert made.watcher.wait_synced(10)
    cluster.workloads.fail_rollout("deployments", "shop", "a")
    try:
        deadline = time.monotonic() + 30
        while made.rollouts.get("agent") is None or made.rollouts["agent"].state != "halted":
            assert time.monotonic() < deadline, made.rollouts
            made.reconcile(now=cluster.workloads.now.timestamp())   # on the simulated clock
            cluster.workloads.step()
            time.sleep(0.05)
        made.reconcile(now=cluster.workloads.now.timestamp())
        reason = made.rollouts["agent"].reason
        assert reason.startswith("Deployment/shop/a: Deployment a did not finish its rollout within 60s")
        configmap = cluster.fake.get("configmaps", STATUS_CONFIGMAP, SYSTEM)
        assert configmap is not None
        data = json.loads(configmap["data"]["agent"])
        assert data["rollout"] == {"state": "halted", "reason": reason}
        assert made.status_json()["policies"]["agent"]["rollout"]["state"] == "halted"
        assert REGISTRY.get_sample_value("webhook_controller_rollout_state",
                                         {"policy": "agent", "state": "halted"}) == 1
        halted = [e for e in cluster.fake.list("events", "shop") if e["reason"] == "RuntimeRolloutHalted"]
        assert [e["regarding"]["name"] for e in halted] == ["a"] and "agent" in halted[0]["note"]
        assert [n for v, r, _, n in cluster.fake.writes() if (v, r) == ("patch", "deployments")] == ["a"]
    finally:
        made.stop()
