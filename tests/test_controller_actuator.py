"""The controller's writes against the fake API server: restarts as `kubectl rollout restart`
sends them, in-place image updates the Pod API accepts, each made once, none on a conflict,
none at all under --dry-run."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from tests.engine_helpers import policies_from_yaml
from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import FakeWorkloads
from webhook.controller import metrics
from webhook.controller.actions import Restart, UpdateInPlace
from webhook.controller.actuator import Actuator
from webhook.controller.health import parse_record
from webhook.controller.model import ROLLOUT_RECORD_ANNOTATION, WorkloadRef
from webhook.engine.ledger import LEDGER_ANNOTATION, ledger_of
from webhook.engine.staleness import pod_states
from webhook.policy.loader import PolicySet

NS = "shop"
NOW = datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)
AGENT = """\
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: agent}
spec:
  inject:
    sidecars: [{name: agent, image: "registry.example.com/agent:IMAGE"}]
    env: [{name: AGENT_PORT, value: "9000"}]
"""


def agent(version: str) -> PolicySet:
    return policies_from_yaml(AGENT.replace("IMAGE", version))


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        yield server


@pytest.fixture
def api_client(fake: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    with config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig"))) as api:
        yield api


Told = list[tuple[WorkloadRef, str, str, str, tuple[str, str]]]


@pytest.fixture
def told() -> Told:
    return []


@pytest.fixture
def actuator(api_client: Any, told: Told) -> Actuator:
    return Actuator(api_client, notify=lambda *args: told.append(args))


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "registry.example.com/a:1"}]}}}}


def running(fake: FakeApiServer, policies: PolicySet, name: str = "web") -> FakeWorkloads:
    workloads = FakeWorkloads(fake, policies)
    fake.create("deployments", deployment(name))
    workloads.settle()
    return workloads


def test_a_restart_is_kubectl_rollout_restart_plus_the_record_and_is_made_once(
        fake: FakeApiServer, actuator: Actuator, told: Told) -> None:
    workloads = running(fake, agent("1"))
    before = {p["metadata"]["uid"] for p in fake.list("pods", NS)}
    ref = WorkloadRef("Deployment", NS, "web")
    action = Restart(ref, {"agent": "r2"}, {"agent": "r1"})
    assert actuator.apply(action, NOW).result == "applied"
    web = fake.get("deployments", "web", NS)
    assert web is not None
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == "2026-01-01T00:05:00Z"
    assert {p: (e.revision, e.at) for p, e in parse_record(annotations[ROLLOUT_RECORD_ANNOTATION]).items()} == {
        "agent": ("r2", NOW)}
    assert told == [(ref, "RuntimeRestarted", "restarted for policy agent revision r2 (pods had r1)", "agent",
                     ("r1", "r2"))]
    workloads.settle()
    assert workloads.rollout_complete("deployments", NS, "web")
    assert before.isdisjoint(p["metadata"]["uid"] for p in fake.list("pods", NS))
    # Again (a new leader whose view lags): read, seen done, not written.
    patches = [r for r in fake.writes() if r[0] == "patch"]
    assert actuator.apply(action, NOW).result == "already"
    assert [r for r in fake.writes() if r[0] == "patch"] == patches == [("patch", "deployments", NS, "web")]
    assert len(told) == 1


def test_a_restart_keeps_the_record_of_other_policies(fake: FakeApiServer, actuator: Actuator) -> None:
    running(fake, agent("1"))
    ref = WorkloadRef("Deployment", NS, "web")
    actuator.apply(Restart(ref, {"identity": "i1"}), NOW)
    actuator.apply(Restart(ref, {"agent": "r2"}), NOW)
    text = fake.get("deployments", "web", NS)["spec"]["template"]["metadata"]["annotations"][  # type: ignore[index]
        ROLLOUT_RECORD_ANNOTATION]
    assert {p: e.revision for p, e in parse_record(text).items()} == {"identity": "i1", "agent": "r2"}


def test_a_workload_changed_since_it_was_read_is_not_restarted(fake: FakeApiServer, actuator: Actuator,
                                                               told: Told) -> None:
    running(fake, agent("1"))

    def meanwhile(verb: str, resource: str, namespace: str, name: str) -> None:
        if verb == "patch":   # another writer (an old leader) gets in between the read and the patch
            obj = fake.get("deployments", "web", NS)
            assert obj is not None
            obj["metadata"].setdefault("labels", {})["touched"] = "yes"
            fake.update("deployments", obj)
    fake.before_request = meanwhile
    outcome = actuator.apply(Restart(WorkloadRef("Deployment", NS, "web"), {"agent": "r2"}), NOW)
    assert outcome.result == "conflict" and "409" in outcome.detail
    template = fake.get("deployments", "web", NS)["spec"]["template"]  # type: ignore[index]
    assert "annotations" not in template["metadata"] and told == []


def test_a_missing_workload_is_gone_and_a_job_is_never_restarted(fake: FakeApiServer, actuator: Actuator) -> None:
    assert actuator.apply(Restart(WorkloadRef("StatefulSet", NS, "db"), {"agent": "r2"}), NOW).result == "gone"
    assert actuator.apply(Restart(WorkloadRef("Job", NS, "batch"), {"agent": "r2"}), NOW).result == "failed"
    assert fake.writes() == []


def _in_place(pod: dict[str, Any], images: dict[str, str], revision: str) -> UpdateInPlace:
    previous = ledger_of(pod["metadata"]["annotations"]).record("agent")
    assert previous is not None
    return UpdateInPlace(WorkloadRef("Deployment", NS, "web"), NS, pod["metadata"]["name"], pod["metadata"]["uid"],
                         "agent", revision, previous.revision, images)


def test_in_place_leaves_the_pod_exactly_as_admission_would_make_it_now(fake: FakeApiServer, actuator: Actuator,
                                                                        told: Told) -> None:
    workloads = running(fake, agent("1"))
    new = agent("2")
    revision = new.injectors[0].revision
    pod = fake.list("pods", NS)[0]
    action = _in_place(pod, {"agent": "registry.example.com/agent:2"}, revision)
    assert actuator.apply(action, NOW).result == "applied"
    after = fake.get("pods", pod["metadata"]["name"], NS)
    assert after is not None and after["metadata"]["uid"] == pod["metadata"]["uid"]
    images = {c["name"]: c["image"] for c in after["spec"]["initContainers"]}
    assert images == {"agent": "registry.example.com/agent:2"}
    assert ledger_of(after["metadata"]["annotations"]).record("agent").revision == revision  # type: ignore[union-attr]
    # The new policies find it current: what a new admission makes, API-server defaults aside.
    assert pod_states(after, new, namespace=NS).policies["agent"].state == "current"
    assert told[0][1:3] == ("RuntimeUpdatedInPlace",
                            f"updated agent in place for policy agent revision {revision} (pods had "
                            f"{action.previous})")
    workloads.step()
    status = {s["name"]: s for s in fake.get("pods", pod["metadata"]["name"], NS)["status"][  # type: ignore[index]
        "initContainerStatuses"]}
    assert status["agent"]["restartCount"] == 1 and status["agent"]["image"] == "registry.example.com/agent:2"
    assert actuator.apply(action, NOW).result == "already"
    assert len([w for w in fake.writes() if w[0] == "patch"]) == 1


@pytest.mark.parametrize(("images", "why"), [
    ({"app": "registry.example.com/evil:1"}, "not every container of ['app'] is one agent injected into this pod"),
    ({"agent": "registry.example.com/agent:2", "app": "registry.example.com/evil:1"},
     "not every container of ['agent', 'app'] is one agent injected into this pod"),
])
def test_in_place_never_touches_a_container_the_policy_did_not_inject(fake: FakeApiServer, actuator: Actuator,
                                                                      images: dict[str, str], why: str) -> None:
    running(fake, agent("1"))
    pod = fake.list("pods", NS)[0]
    outcome = actuator.apply(_in_place(pod, images, "r2"), NOW)
    assert (outcome.result, outcome.detail) == ("failed", why)
    assert fake.writes() == []


def test_in_place_on_a_replaced_pod_does_nothing(fake: FakeApiServer, actuator: Actuator) -> None:
    running(fake, agent("1"))
    pod = fake.list("pods", NS)[0]
    action = _in_place(pod, {"agent": "registry.example.com/agent:2"}, "r2")
    fake.remove("pods", pod["metadata"]["name"], NS)
    assert actuator.apply(action, NOW).result == "gone"
    replacement = {**pod, "metadata": {**pod["metadata"], "uid": "another"}}
    fake.put(replacement)
    assert actuator.apply(action, NOW).result == "gone"
    assert fake.writes() == []


def test_dry_run_logs_every_action_and_sends_nothing(fake: FakeApiServer, api_client: Any, told: Told,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    running(fake, agent("1"))
    fake.requests.clear()
    actuator = Actuator(api_client, dry_run=True, notify=lambda *args: told.append(args))
    pod = fake.list("pods", NS)[0]
    with caplog.at_level(logging.INFO, logger="webhook.controller"):
        assert actuator.apply(Restart(WorkloadRef("Deployment", NS, "web"), {"agent": "r2"}, {"agent": "r1"}),
                              NOW).result == "dry-run"
        assert actuator.apply(_in_place(pod, {"agent": "registry.example.com/agent:2"}, "r2"), NOW).result == "dry-run"
    assert fake.requests == [] and told == []
    assert [r.getMessage() for r in caplog.records] == [
        "restart Deployment/shop/web (agent r1 -> r2): dry-run",
        f"update pod shop/{pod['metadata']['name']} of Deployment/shop/web in place "
        f"(agent {_in_place(pod, {}, 'r2').previous} -> r2: agent=registry.example.com/agent:2): dry-run"]


def test_a_pod_update_the_api_server_refuses_is_a_failure_not_a_crash(fake: FakeApiServer, actuator: Actuator) -> None:
    running(fake, agent("1"))
    pod = fake.list("pods", NS)[0]
    fake.fail("patch", "pods", code=422, reason="Invalid", message="pod updates may not change fields")
    outcome = actuator.apply(_in_place(pod, {"agent": "registry.example.com/agent:2"}, "r2"), NOW)
    assert outcome.result == "failed" and "422" in outcome.detail
    assert json.loads(fake.get("pods", pod["metadata"]["name"], NS)["metadata"]["annotations"][  # type: ignore[index]
        LEDGER_ANNOTATION]) == json.loads(pod["metadata"]["annotations"][LEDGER_ANNOTATION])


def test_each_outcome_is_counted(fake: FakeApiServer, actuator: Actuator) -> None:
    running(fake, agent("1"))

    def count(result: str) -> float:
        return metrics.ROLLOUT_ACTIONS.labels(action="restart", result=result)._value.get()
    before = {r: count(r) for r in ("applied", "already", "gone")}
    action = Restart(WorkloadRef("Deployment", NS, "web"), {"agent": "r2"})
    actuator.apply(action, NOW)
    actuator.apply(action, NOW)
    actuator.apply(Restart(WorkloadRef("Deployment", NS, "nope"), {"agent": "r2"}), NOW)
    assert {r: count(r) - before[r] for r in before} == {"applied": 1, "already": 1, "gone": 1}


def test_a_pod_changed_between_the_read_and_the_patch_is_a_conflict(fake: FakeApiServer, actuator: Actuator) -> None:
    running(fake, agent("1"))
    pod = fake.list("pods", NS)[0]
    name = pod["metadata"]["name"]

    def meanwhile(verb: str, resource: str, namespace: str, _: str) -> None:
        if (verb, resource) == ("patch", "pods"):   # another writer rewrites the ledger first
            current = fake.get("pods", name, NS)
            assert current is not None
            current["metadata"]["annotations"][LEDGER_ANNOTATION] += " "
            fake.update("pods", current)
    fake.before_request = meanwhile
    outcome = actuator.apply(_in_place(pod, {"agent": "registry.example.com/agent:2"}, "r2"), NOW)
    assert outcome.result == "conflict" and "422" in outcome.detail
    after = fake.get("pods", name, NS)
    assert after is not None and after["spec"]["initContainers"][0]["image"] == "registry.example.com/agent:1"
