"""The simulated workload controllers and kubelet replace pods as the real ones do, create
them through the webhook's engine, and fail rollouts when told to (tests/fake_workloads.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import SHIPPED_POLICIES
from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import RESTARTED_AT, FakeWorkloads
from webhook.policy.loader import load_policy_dir

NS = "shop"
LEDGER = "runtime.platform.io/status"
SHIPPER = "registry.platform.internal/runtime/log-shipper:3.1.0"


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        yield server


@pytest.fixture
def workloads(fake: FakeApiServer) -> FakeWorkloads:
    return FakeWorkloads(fake, load_policy_dir(SHIPPED_POLICIES))


@pytest.fixture
def apps(fake: FakeApiServer, tmp_path: Path) -> Iterator[client.AppsV1Api]:
    with config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig"))) as api:
        yield client.AppsV1Api(api)


def template(name: str, image: str = "registry.platform.internal/app:1", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image}], **spec}}


def deployment(name: str, replicas: int = 4, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template(name),
                     **spec}}


def restart(apps: client.AppsV1Api, kind: str, name: str, when: str = "2026-01-01T00:00:00Z") -> None:
    """What `kubectl rollout restart` sends."""
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}
    getattr(apps, f"patch_namespaced_{kind}")(name, NS, body)


def pods(fake: FakeApiServer) -> list[dict[str, Any]]:
    return fake.list("pods", NS)


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_new_pods_are_admitted_by_the_engine_and_carry_real_ledgers(fake: FakeApiServer,
                                                                    workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=2))
    workloads.settle()
    assert workloads.rollout_complete("deployments", NS, "web")
    created = pods(fake)
    assert len(created) == 2
    for pod in created:
        ledger = json.loads(pod["metadata"]["annotations"][LEDGER])
        assert {p["name"] for p in ledger["policies"]} >= {"identity", "log-shipper"}
        sidecars = {c["name"]: c["image"] for c in pod["spec"].get("initContainers") or []}
        assert sidecars["log-shipper"] == SHIPPER
        owner = pod["metadata"]["ownerReferences"][0]
        template_hash = pod["metadata"]["labels"]["pod-template-hash"]
        assert owner["kind"] == "ReplicaSet" and owner["name"] == f"web-{template_hash}"
        assert pod["status"]["phase"] == "Running" and ready(pod)
        assert {s["name"] for s in pod["status"]["initContainerStatuses"]} >= {"identity-init", "log-shipper"}
    status = fake.get("deployments", "web", NS)["status"]
    assert status["observedGeneration"] == 1 and status["replicas"] == status["availableReplicas"] == 2
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Progressing"] == "NewReplicaSetAvailable"


def test_a_restarted_deployment_replaces_every_pod_within_its_surge_and_unavailability(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api) -> None:
    fake.create("deployments", deployment("web", strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}))
    workloads.settle()
    before = {p["metadata"]["name"] for p in pods(fake)}
    restart(apps, "deployment", "web")
    assert fake.get("deployments", "web", NS)["metadata"]["generation"] == 2
    assert not workloads.rollout_complete("deployments", NS, "web")
    for _ in range(30):
        workloads.step()
        current = pods(fake)
        assert len(current) <= 4 + 1                        # maxSurge
        assert sum(ready(p) for p in current) >= 4 - 1 - 1  # maxUnavailable, and the one just surged
        if workloads.rollout_complete("deployments", NS, "web"):
            break
    after = pods(fake)
    assert workloads.rollout_complete("deployments", NS, "web") and len(after) == 4
    assert not before & {p["metadata"]["name"] for p in after}
    assert all(p["metadata"]["annotations"].get(RESTARTED_AT) for p in after)
    assert fake.get("deployments", "web", NS)["status"]["updatedReplicas"] == 4
    replica_sets = {rs["metadata"]["name"]: rs["status"]["replicas"] for rs in fake.list("replicasets", NS)}
    assert sorted(replica_sets.values()) == [0, 4]


def test_recreate_deletes_every_old_pod_before_creating_new_ones(fake: FakeApiServer, workloads: FakeWorkloads,
                                                                 apps: client.AppsV1Api) -> None:
    fake.create("deployments", deployment("web", replicas=2, strategy={"type": "Recreate"}))
    workloads.settle()
    restart(apps, "deployment", "web")
    workloads.step()
    assert pods(fake) == []
    workloads.settle()
    assert workloads.rollout_complete("deployments", NS, "web")


def test_a_rollout_that_never_becomes_ready_stalls_and_exceeds_its_deadline(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api) -> None:
    fake.create("deployments", deployment("web", replicas=2, progressDeadlineSeconds=60))
    workloads.settle()
    workloads.fail_rollout("deployments", NS, "web")
    restart(apps, "deployment", "web")
    for _ in range(10):   # 100 simulated seconds
        workloads.step()
    status = fake.get("deployments", "web", NS)["status"]
    assert not workloads.rollout_complete("deployments", NS, "web")
    # 25% of 2 rounds down to no unavailable pod: the old pods stay; one new pod surged, never ready.
    assert status["availableReplicas"] == 2 and status["updatedReplicas"] == 1 and status["replicas"] == 3
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    workloads.heal()
    workloads.settle()
    assert workloads.rollout_complete("deployments", NS, "web")


def test_a_crash_looping_injected_container_is_reported_as_the_kubelet_does(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api) -> None:
    fake.create("deployments", deployment("web", replicas=1))
    workloads.settle()
    workloads.fail_rollout("deployments", NS, "web", "crash-loop")
    restart(apps, "deployment", "web")
    for _ in range(4):
        workloads.step()
    new = next(p for p in pods(fake) if p["metadata"]["annotations"].get(RESTARTED_AT))
    statuses = {s["name"]: s for s in new["status"]["containerStatuses"] + new["status"]["initContainerStatuses"]}
    crashing = [name for name, s in statuses.items() if "waiting" in s["state"]]
    assert crashing == ["traffic-proxy"]   # the first container the webhook injected
    assert statuses["traffic-proxy"]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert statuses["traffic-proxy"]["restartCount"] >= 2 and not ready(new)
    count = statuses["traffic-proxy"]["restartCount"]
    workloads.step()
    again = fake.get("pods", new["metadata"]["name"], NS)
    assert next(s for s in again["status"]["initContainerStatuses"] if s["name"] == "traffic-proxy")[
        "restartCount"] == count + 1


def test_an_image_changed_in_place_restarts_only_that_container(fake: FakeApiServer, workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=1))
    workloads.settle()
    pod = pods(fake)[0]
    name = pod["metadata"]["name"]
    for container in pod["spec"]["initContainers"]:
        if container["name"] == "log-shipper":
            container["image"] = SHIPPER.replace("3.1.0", "3.2.0")
    fake.update("pods", pod)
    workloads.settle()
    changed = fake.get("pods", name, NS)
    assert changed["metadata"]["generation"] == 2 and changed["status"]["observedGeneration"] == 2
    statuses = {s["name"]: s for s in changed["status"]["initContainerStatuses"]}
    assert statuses["log-shipper"]["restartCount"] == 1 and statuses["log-shipper"]["image"].endswith(":3.2.0")
    app = fake.get("pods", name, NS)["status"]["containerStatuses"][0]
    assert app["restartCount"] == 0 and [p["metadata"]["name"] for p in pods(fake)] == [name]
    # A broken release crash-loops wherever it runs.
    workloads.fail_image(SHIPPER.replace("3.1.0", "3.2.0"))
    workloads.step()
    broken = {s["name"]: s for s in fake.get("pods", name, NS)["status"]["initContainerStatuses"]}["log-shipper"]
    assert broken["state"]["waiting"]["reason"] == "CrashLoopBackOff"


def test_a_statefulset_replaces_from_the_highest_ordinal_down_to_its_partition(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api) -> None:
    fake.create("statefulsets", {"metadata": {"name": "db", "namespace": NS}, "spec": {
        "replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db"),
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}})
    workloads.settle()
    assert sorted(p["metadata"]["name"] for p in pods(fake)) == ["db-0", "db-1", "db-2"]
    first = fake.get("statefulsets", "db", NS)["status"]
    assert first["currentRevision"] == first["updateRevision"] and first["readyReplicas"] == 3
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(fake)}
    restart(apps, "stateful_set", "db")
    workloads.step()
    assert [d[1] for d in workloads.deleted] == ["db-2"]   # one at a time, highest first
    workloads.settle()
    assert [d[1] for d in workloads.deleted] == ["db-2", "db-1"]
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(fake)}
    assert after["db-0"] == uids["db-0"] and after["db-1"] != uids["db-1"]
    status = fake.get("statefulsets", "db", NS)["status"]
    assert status["updatedReplicas"] == 2 and status["currentReplicas"] == 1
    assert status["currentRevision"] != status["updateRevision"]
    assert workloads.rollout_complete("statefulsets", NS, "db")   # as far as the partition lets it
    apps.patch_namespaced_stateful_set("db", NS, {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})
    workloads.settle()
    status = fake.get("statefulsets", "db", NS)["status"]
    assert status["currentRevision"] == status["updateRevision"] and status["currentReplicas"] == 3


def test_a_daemonset_runs_one_pod_per_node_and_replaces_them_one_node_at_a_time(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api) -> None:
    fake.create("daemonsets", {"metadata": {"name": "agent", "namespace": NS}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}})
    workloads.settle()
    assert sorted(p["spec"]["nodeName"] for p in pods(fake)) == list(workloads.nodes)
    restart(apps, "daemon_set", "agent")
    while not workloads.rollout_complete("daemonsets", NS, "agent"):
        workloads.step()
        assert sum(ready(p) for p in pods(fake)) >= len(workloads.nodes) - 1
    status = fake.get("daemonsets", "agent", NS)["status"]
    assert status["updatedNumberScheduled"] == status["numberAvailable"] == status["desiredNumberScheduled"] == 3
    assert status["observedGeneration"] == 2 and status["numberUnavailable"] == 0
    assert len(workloads.deleted) == 3


def test_on_delete_workloads_jobs_and_bare_pods_are_never_replaced(fake: FakeApiServer,
                                                                   workloads: FakeWorkloads) -> None:
    fake.create("statefulsets", {"metadata": {"name": "db", "namespace": NS}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db"),
        "updateStrategy": {"type": "OnDelete"}}})
    job = fake.create("jobs", {"metadata": {"name": "once", "namespace": NS}, "spec": {
        "template": template("once", restartPolicy="Never")}})
    fake.create("pods", {"metadata": {"name": "job-pod", "namespace": NS, "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "once", "uid": job["metadata"]["uid"], "controller": True}]},
        "spec": template("once", restartPolicy="Never")["spec"]})
    fake.create("pods", {"metadata": {"name": "bare", "namespace": NS}, "spec": template("bare")["spec"]})
    workloads.settle()
    names = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(fake)}
    fake.update("statefulsets", {**fake.get("statefulsets", "db", NS), "spec": {
        **fake.get("statefulsets", "db", NS)["spec"], "template": template("db", "registry.platform.internal/app:2")}})
    fake.update("jobs", {**fake.get("jobs", "once", NS), "metadata": {
        **fake.get("jobs", "once", NS)["metadata"], "annotations": {"x": "1"}}})
    workloads.settle()
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(fake)} == names
    assert all(p["status"]["phase"] == "Running" for p in pods(fake))
    assert fake.get("statefulsets", "db", NS)["status"]["updatedReplicas"] == 0


def test_pods_follow_the_policies_in_force_and_a_denied_pod_is_not_created(
        fake: FakeApiServer, workloads: FakeWorkloads, apps: client.AppsV1Api, tmp_path: Path) -> None:
    fake.create("deployments", deployment("web", replicas=1))
    workloads.settle()
    edited = tmp_path / "policies"
    edited.mkdir()
    for source in SHIPPED_POLICIES.glob("*.yaml"):
        (edited / source.name).write_text(source.read_text().replace("log-shipper:3.1.0", "log-shipper:3.2.0"))
    workloads.policies = load_policy_dir(edited)   # the webhook reloaded its policies
    restart(apps, "deployment", "web")
    workloads.settle()
    (pod,) = pods(fake)
    assert {c["name"]: c["image"] for c in pod["spec"]["initContainers"]}["log-shipper"].endswith(":3.2.0")
    fake.create("deployments", deployment("root", replicas=1, template=template(
        "root", securityContext={"runAsUser": 0}, hostNetwork=True)))
    workloads.step()
    assert not [p for p in pods(fake) if p["metadata"]["name"].startswith("root-")]
    assert workloads.failed_creates and workloads.failed_creates[0][1] == "ReplicaSet/" + next(
        rs["metadata"]["name"] for rs in fake.list("replicasets", NS) if rs["metadata"]["name"].startswith("root-"))


def test_the_garbage_collector_removes_what_a_deleted_workload_owned(fake: FakeApiServer,
                                                                     workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=2))
    workloads.settle()
    fake.delete("deployments", "web", NS)
    workloads.step()
    workloads.step()
    assert fake.list("replicasets", NS) == [] and pods(fake) == []


def test_a_background_thread_steps_until_stopped(fake: FakeApiServer, workloads: FakeWorkloads) -> None:
    fake.create("deployments", deployment("web", replicas=2))
    workloads.start(interval=0.01)
    try:
        deadline = time.monotonic() + 10
        while not workloads.rollout_complete("deployments", NS, "web") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        workloads.stop()
    assert workloads.rollout_complete("deployments", NS, "web")
    moment = workloads.now
    time.sleep(0.05)
    assert workloads.now == moment


def test_the_engine_admits_pods_created_over_http_when_installed_as_a_webhook(
        fake: FakeApiServer, workloads: FakeWorkloads, tmp_path: Path) -> None:
    fake.admission.append(workloads.webhook)
    with config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig"))) as api:
        core = client.CoreV1Api(api)
        created = core.create_namespaced_pod(NS, {"metadata": {"name": "bare"}, "spec": template("bare")["spec"]})
        assert LEDGER in created.metadata.annotations
        assert "log-shipper" in [c.name for c in created.spec.init_containers]
        with pytest.raises(client.ApiException) as denied:
            core.create_namespaced_pod(NS, {"metadata": {"name": "root"}, "spec": template(
                "root", hostNetwork=True)["spec"]})
    assert denied.value.status == 403 and "denied the request" in json.loads(denied.value.body)["message"]
    assert fake.get("pods", "root", NS) is None
