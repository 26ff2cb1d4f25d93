"""The controller process (webhook/controller/main.py) against the fake API server and the
simulated workloads: status in all four places, events once per workload, staleness after
policy edits, the kinds it never restarts reported with why, leader election, --once and
--dry-run."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.conftest import SHIPPED_POLICIES
from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import FakeWorkloads
from tests.test_staleness import NEW_SHIPPER_IMAGE, SHIPPER_IMAGE
from webhook.cli.main import main as cli
from webhook.controller.main import Controller, ControllerConfig, run_once
from webhook.controller.status import STATUS_CONFIGMAP
from webhook.kube.client import load_api_client
from webhook.policy.loader import load_policy_dir

NS, SYSTEM = "shop", "webhook-system"
LEASE = "webhook-controller"
SHIPPER_POLICY = "inject-log-shipper.yaml"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.put_namespace(NS)
        server.put_namespace(SYSTEM)
        # Both ship with the manifests: the controller never creates them.
        server.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": STATUS_CONFIGMAP,
                                                                         "namespace": SYSTEM}})
        server.put({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": LEASE, "namespace": SYSTEM}, "spec": {}})
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    target.mkdir()
    for source in SHIPPED_POLICIES.glob("*.yaml"):
        shutil.copy(source, target / source.name)
    return target


def edit(directory: Path, old: str, new: str) -> None:
    path = directory / SHIPPER_POLICY
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def workload_pod(name: str, owner: dict[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": {"app": name}}
    if owner and owner["kind"] == "Job":
        metadata["labels"]["job-name"] = owner["name"]   # what its Job's selector selects
    if owner:
        metadata["ownerReferences"] = [{**owner, "uid": f"uid-{owner['name']}", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"restartPolicy": "Never" if owner and owner["kind"] == "Job" else "Always",
                     "containers": [{"name": "app", "image": "registry.platform.internal/app:1"}]}}


@pytest.fixture
def cluster(fake: FakeApiServer) -> FakeWorkloads:
    """A Deployment of two, and one pod each of a bare pod, a Job, a CronJob's Job and an
    operator: all admitted by the webhook's engine with the shipped policies, running."""
    workloads = FakeWorkloads(fake, load_policy_dir(SHIPPED_POLICIES))
    fake.create("deployments", {"metadata": {"name": "web", "namespace": NS}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "app", "image": "registry.platform.internal/web:1"}]}}}})
    for name, parent in (("nightly-29000000", [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                                                "uid": "c1", "controller": True}]), ("migrate", [])):
        fake.put({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": name, "namespace": NS, "uid": f"uid-{name}", "ownerReferences": parent},
            "spec": {"selector": {"matchLabels": {"job-name": name}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}})
    for name, owner in (("debug", None),
                        ("migrate-x1", {"apiVersion": "batch/v1", "kind": "Job", "name": "migrate"}),
                        ("nightly-29000000-x2", {"apiVersion": "batch/v1", "kind": "Job",
                                                 "name": "nightly-29000000"}),
                        ("train-worker-0", {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "train"})):
        pod = workload_pod(name, owner)
        fake.create("pods", workloads.webhook("CREATE", "pods", NS, pod, None) or pod)
    workloads.settle()
    return workloads


def make(config: ControllerConfig, kubeconfig: Path, **options: Any) -> Controller:
    return Controller(config, client_factory=lambda: load_api_client(kubeconfig),
                      watch_options={"backoff_initial": 0.05, "backoff_max": 0.5}, **options)


def started(controller: Controller) -> Controller:
    controller.start()
    assert controller.watcher.wait_synced(10)
    return controller


def events(fake: FakeApiServer, reason: str | None = None) -> list[dict[str, Any]]:
    return [e for e in fake.list("events") if reason is None or e["reason"] == reason]


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_an_image_bump_shows_as_stale_in_all_four_places_and_once_per_workload_as_an_event(
        fake: FakeApiServer, kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads,
        capsys: pytest.CaptureFixture[str]) -> None:
    edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
    controller = started(make(ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM), kubeconfig))
    try:
        assert controller.reconcile()
        shipper = controller.statuses["log-shipper"]
        assert shipper.pods == {"current": 0, "stale": 6, "skipped": 0}
        assert shipper.workloads == {"current": 0, "stale": 5, "skipped": 0}
        assert shipper.in_place_pods == 6       # only the sidecar's image differs
        assert controller.statuses["identity"].pods["stale"] == 0
        assert shipper.rollout.state == "idle"  # Manual: nothing rolls
        # The kinds the controller never restarts, each with why.
        assert set(shipper.next_run) == {f"Pod/{NS}/debug", f"Job/{NS}/migrate", f"CronJob/{NS}/nightly",
                                         f"Other:kubeflow.org/v1/PyTorchJob/{NS}/train"}
        assert "next run" in shipper.next_run[f"CronJob/{NS}/nightly"]
        assert "recreated" in shipper.next_run[f"Pod/{NS}/debug"]
        assert "kubeflow.org/v1/PyTorchJob" in shipper.next_run[f"Other:kubeflow.org/v1/PyTorchJob/{NS}/train"]

        # 1. Prometheus
        assert metric("webhook_controller_policy_pods", policy="log-shipper", state="stale") == 6
        assert metric("webhook_controller_policy_workloads", policy="log-shipper", state="stale") == 5
        assert metric("webhook_controller_rollout_state", policy="log-shipper", state="idle") == 1
        # 2. /status
        port = controller.serve_http("127.0.0.1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as response:
            served = json.loads(response.read())
        assert served["leader"] is True and served["synced"] is True
        assert served["policies"]["log-shipper"]["pods"] == {"matched": 6, "current": 0, "stale": 6, "skipped": 0,
                                                            "inPlace": 6}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            assert b'webhook_controller_policy_pods{policy="log-shipper",state="stale"} 6.0' in response.read()
        # 3. the status ConfigMap, one key per policy
        data = fake.get("configmaps", STATUS_CONFIGMAP, SYSTEM)["data"]
        assert set(data) == {"identity", "traffic-proxy", "log-shipper"}
        assert json.loads(data["log-shipper"])["workloads"]["stale"] == 5
        # 4. webhook status, computed from the cluster
        assert cli(["status", "-o", "json", "--policies", str(policies_dir), "--kubeconfig", str(kubeconfig),
                    "--controller-namespace", SYSTEM]) == 0
        listed = {s["policy"]: s for s in json.loads(capsys.readouterr().out)}
        assert listed["log-shipper"]["pods"] == served["policies"]["log-shipper"]["pods"]
        assert listed["log-shipper"]["rollout"] == {"state": "idle"}
        assert cli(["status", "-n", NS, "--policies", str(policies_dir), "--kubeconfig", str(kubeconfig)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["POLICY", "REVISION", "PODS", "CURRENT", "STALE", "SKIPPED", "WORKLOADS",
                                    "STALE-WL", "ROLLOUT"]
        assert f"log-shipper: CronJob/{NS}/nightly stale (a CronJob's pods get the new runtime on their next run)" \
            in table

        # Events: one RuntimeStale per workload, however many pods and passes.
        stale = events(fake, "RuntimeStale")
        assert sorted(e["regarding"]["name"] for e in stale) == ["debug", "migrate", "nightly", "train", "web"]
        web = next(e for e in stale if e["regarding"]["name"] == "web")
        assert web["regarding"]["kind"] == "Deployment" and web["regarding"]["uid"]
        assert "2 of 2 pod(s)" in web["note"] and web["type"] == "Normal"
        assert web["metadata"]["annotations"]["runtime.platform.io/policy"] == "log-shipper"
        writes = len(fake.writes())
        for _ in range(3):
            assert controller.reconcile()
        assert len(events(fake, "RuntimeStale")) == 5
        assert len(fake.writes()) == writes    # status unchanged, events already there: nothing written
    finally:
        controller.stop()


def test_a_policy_edit_that_changes_nothing_for_the_pods_leaves_them_current(
        fake: FakeApiServer, kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads) -> None:
    edit(policies_dir, "description: Log shipping sidecar", "description: Ships the logs")
    before = next(p.revision for p in load_policy_dir(SHIPPED_POLICIES).injectors if p.name == "log-shipper")
    controller = started(make(ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM), kubeconfig))
    try:
        assert controller.reconcile()
        shipper = controller.statuses["log-shipper"]
        assert shipper.revision != before
        assert shipper.pods == {"current": 6, "stale": 0, "skipped": 0}
        assert events(fake, "RuntimeStale") == []

        # Hot reload: a real change is picked up by the running controller.
        edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
        wait_for(lambda: controller.reconcile() and controller.statuses["log-shipper"].pods["stale"] == 6)
        assert len(events(fake, "RuntimeStale")) == 5
    finally:
        controller.stop()


def test_a_skip_is_reported_and_recorded_as_an_event(fake: FakeApiServer, kubeconfig: Path,
                                                     policies_dir: Path, cluster: FakeWorkloads) -> None:
    pod = workload_pod("own-proxy", None)
    pod["spec"]["containers"].append({"name": "traffic-proxy", "image": "registry.example.com/envoy:1"})
    pod["status"] = {"phase": "Running"}
    fake.put(pod)   # admitted while the webhook was bypassed
    controller = started(make(ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM), kubeconfig))
    try:
        assert controller.reconcile()
        proxy = controller.statuses["traffic-proxy"]
        assert proxy.pods["skipped"] == 1 and proxy.workloads["skipped"] == 1
        (reason,) = proxy.skipped
        skipped = events(fake, "InjectionSkipped")
        assert [e["regarding"]["name"] for e in skipped if "traffic-proxy" in e["note"]] == ["own-proxy"]
        assert all(e["type"] == "Warning" for e in skipped)
    finally:
        controller.stop()


def test_two_controllers_one_acts_and_the_other_takes_over_when_it_dies(
        fake: FakeApiServer, kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads) -> None:
    edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
    # Short, but long enough that a loaded machine does not starve the renewals.
    lease = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.1}
    config = ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM, lease_name=LEASE,
                              lease_namespace=SYSTEM)
    acted: list[str] = []

    def hook(name: str) -> Any:
        def factory(context: Any) -> Any:
            def plan_and_act(view: Any, policies: Any, now: float) -> dict[str, Any]:
                acted.append(name)
                return {}
            return plan_and_act
        return factory

    a = started(make(config, kubeconfig, hook_factory=hook("a"), identity="a", lease_options=lease))
    wait_for(lambda: a.elector.is_leader)
    b = started(make(config, kubeconfig, hook_factory=hook("b"), identity="b", lease_options=lease))
    try:
        for _ in range(5):
            assert a.reconcile() and b.reconcile()
            assert not (a.elector.is_leader and b.elector.is_leader)
        assert set(acted) == {"a"} and not b.elector.is_leader
        assert {e["reportingInstance"] for e in events(fake)} == {"a"}
        assert fake.get("leases", LEASE, SYSTEM)["spec"]["holderIdentity"] == "a"
        # b reports status too, but as a follower writes nothing.
        assert b.statuses["log-shipper"].workloads["stale"] == 5
        assert b.status_json()["leader"] is False and b.status_json()["holder"] == "a"

        # a dies without releasing its Lease: b takes over once it expires, and continues
        # without writing again what a wrote.
        a.elector._stop.set()
        a.elector._thread.join()   # type: ignore[union-attr]
        a.watcher.stop()
        before = len(events(fake))
        wait_for(lambda: b.elector.is_leader, timeout=10)
        acted.clear()
        assert b.reconcile()
        assert acted == ["b"]
        lease_now = fake.get("leases", LEASE, SYSTEM)["spec"]
        assert lease_now["holderIdentity"] == "b" and lease_now["leaseTransitions"] == 1
        assert len(events(fake)) == before     # the same events, adopted, not duplicated
    finally:
        a.stop()
        b.stop()


def test_once_and_dry_run(fake: FakeApiServer, kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads) -> None:
    edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
    lines: list[str] = []
    with load_api_client(kubeconfig) as api:
        before = len(fake.requests)
        assert run_once(ControllerConfig(policies=policies_dir, once=True, dry_run=True, namespace=SYSTEM),
                        out=lines.append, api_client=api) == 0
        asked = fake.requests[before:]
        assert asked and all(verb in ("list", "get") for verb, *_ in asked)   # changed nothing
        assert f"dry run: would record event RuntimeStale on Deployment/{NS}/web" in "\n".join(lines)
        assert any(line.startswith("log-shipper ") and " 6 " in f" {line} " for line in lines)

        lines.clear()
        assert run_once(ControllerConfig(policies=policies_dir, once=True, namespace=SYSTEM),
                        out=lines.append, api_client=api) == 0
    assert len(events(fake, "RuntimeStale")) == 5
    assert json.loads(fake.get("configmaps", STATUS_CONFIGMAP, SYSTEM)["data"]["log-shipper"])["pods"]["stale"] == 6
    assert f"recorded event RuntimeStale on Deployment/{NS}/web" in "\n".join(lines)


def test_the_shipped_rbac_is_enough(kubeconfig: Path, policies_dir: Path, tmp_path: Path) -> None:
    """The controller's passes against an API server that enforces the manifests' RBAC for
    its ServiceAccount: nothing it does is forbidden."""
    import yaml

    from tests.fake_apiserver import rules_from_manifests
    from tests.test_manifests import DOCUMENTS

    rules = rules_from_manifests([d for _, d in DOCUMENTS], "webhook-controller", SYSTEM)
    edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
    with FakeApiServer(rbac=rules, bookmark_interval=0.2) as server:
        for name in (NS, SYSTEM):
            server.put_namespace(name)
        for path in ("controller-state.yaml",):
            for doc in yaml.safe_load_all((Path(__file__).parent.parent / "manifests" / "base" / path).read_text()):
                server.put(doc)
        workloads = FakeWorkloads(server, load_policy_dir(SHIPPED_POLICIES))
        server.create("deployments", {"metadata": {"name": "web", "namespace": NS}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": "registry.platform.internal/web:1"}]}}}})
        workloads.settle()
        config = ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM, lease_name=LEASE,
                                  lease_namespace=SYSTEM)
        controller = started(make(config, server.write_kubeconfig(tmp_path / "rbac-kubeconfig")))
        try:
            wait_for(lambda: controller.elector.is_leader)
            assert controller.reconcile()
            assert [e["regarding"]["name"] for e in server.list("events", NS)] == ["web"]
            assert "log-shipper" in server.get("configmaps", STATUS_CONFIGMAP, SYSTEM)["data"]
            assert controller.elector.last_error is None and controller.configmap.last_error is None
        finally:
            controller.stop()


def test_namespace_labels_a_policy_selects_on_are_followed(fake: FakeApiServer, kubeconfig: Path,
                                                           policies_dir: Path, cluster: FakeWorkloads) -> None:
    fake.set_labels(NS, {"logs": "shipped"})
    edit(policies_dir, "    os: [linux]", "    os: [linux]\n    namespaceSelector: {matchLabels: {logs: shipped}}")
    controller = started(make(ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM), kubeconfig))
    try:
        assert "namespaces" in controller.watcher.reflectors
        wait_for(lambda: controller.reconcile() and controller.statuses["log-shipper"].pods["current"] == 6)
        # The namespace no longer selected: its pods carry a runtime the policy no longer gives.
        # Only that namespace's pods are listed again.
        full_lists = controller.watcher.reflectors["pods"].lists
        by_namespace = metric("webhook_controller_lists_total", resource="pods", reason="namespace_labels") or 0
        fake.set_labels(NS, {})
        wait_for(lambda: controller.reconcile() and controller.statuses["log-shipper"].pods["stale"] == 6)
        assert controller.watcher.reflectors["pods"].lists == full_lists
        assert metric("webhook_controller_lists_total", resource="pods", reason="namespace_labels") == by_namespace + 1
        assert {s.reason for p in controller.state.snapshot().pods() for s in p.policies.values()
                if s.state == "stale"} == {"unmatched"}
    finally:
        controller.stop()


def test_the_rollout_state_the_hook_reports_is_shown(fake: FakeApiServer, kubeconfig: Path,
                                                     policies_dir: Path, cluster: FakeWorkloads) -> None:
    from webhook.controller.model import RolloutState

    def factory(context: Any) -> Any:
        return lambda view, policies, now: {"log-shipper": RolloutState("halted", "Deployment/shop/web never "
                                                                                   "became available")}

    controller = started(make(ControllerConfig(policies=policies_dir, port=0, namespace=SYSTEM), kubeconfig,
                              hook_factory=factory))
    try:
        assert controller.reconcile()
        shown = json.loads(fake.get("configmaps", STATUS_CONFIGMAP, SYSTEM)["data"]["log-shipper"])["rollout"]
        assert shown == {"state": "halted", "reason": "Deployment/shop/web never became available"}
        assert metric("webhook_controller_rollout_state", policy="log-shipper", state="halted") == 1
        assert metric("webhook_controller_rollout_state", policy="log-shipper", state="idle") == 0
        assert controller.status_json()["policies"]["identity"]["rollout"] == {"state": "idle"}
    finally:
        controller.stop()


@pytest.mark.process
def test_the_command_once_dry_run(kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads,
                                  fake: FakeApiServer) -> None:
    import subprocess
    import sys

    edit(policies_dir, SHIPPER_IMAGE, NEW_SHIPPER_IMAGE)
    result = subprocess.run([sys.executable, "-m", "webhook", "controller", "--once", "--dry-run", "--policies",
                             str(policies_dir), "--kubeconfig", str(kubeconfig), "--namespace", SYSTEM,
                             "--log-format", "text"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"dry run: would record event RuntimeStale on Deployment/{NS}/web" in result.stdout
    assert result.stdout.count("RuntimeStale") == 5
    assert "POLICY" in result.stdout and fake.writes() == []


def test_status_says_in_one_line_what_it_may_not_list(policies_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fake_apiserver import Rule

    pods_only = [Rule(frozenset({""}), frozenset({"pods"}), frozenset({"get", "list"}))]
    with FakeApiServer(rbac=pods_only) as server:
        code = cli(["status", "--policies", str(policies_dir),
                    "--kubeconfig", str(server.write_kubeconfig(tmp_path / "kc"))])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("webhook status: list replicasets: 403 Forbidden")


@pytest.mark.process
def test_the_command_serves_its_probes_and_releases_the_lease_on_sigterm(
        kubeconfig: Path, policies_dir: Path, cluster: FakeWorkloads, fake: FakeApiServer) -> None:
    import signal
    import subprocess
    import sys

    from bench.proc import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "webhook", "controller", "--policies", str(policies_dir),
                                "--kubeconfig", str(kubeconfig), "--lease-name", LEASE, "--lease-namespace", SYSTEM,
                                "--port", str(port), "--log-format", "text"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_for(ready, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            served = json.loads(response.read())
        assert served["leader"] is True and served["policies"]["log-shipper"]["pods"]["current"] == 6
        assert fake.get("leases", LEASE, SYSTEM)["spec"]["holderIdentity"] == served["identity"]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert fake.get("leases", LEASE, SYSTEM)["spec"].get("holderIdentity") is None   # released for the next
    assert "controller started" in err
