"""Events (webhook/controller/events.py): one per workload, policy, revisions and reason;
repeats counted in the series at a bounded rate; a second leader adopts rather than
duplicates; a burst is held back by the rate limit, not sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_apiserver import FakeApiServer
from webhook.controller.events import EventRecorder, event_name, regarding
from webhook.controller.model import WorkloadRef
from webhook.kube.client import load_api_client

NS = "shop"
WEB = WorkloadRef("Deployment", NS, "web")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        yield server


@pytest.fixture
def api(fake: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    with load_api_client(fake.write_kubeconfig(tmp_path / "kubeconfig")) as client:
        yield client


def test_repeats_are_counted_in_one_event_at_a_bounded_rate(fake: FakeApiServer, api: Any) -> None:
    clock = Clock()
    recorder = EventRecorder(api, clock=clock, series_interval=60, instance="c-1")
    for _ in range(10):
        assert recorder.record(WEB, "RuntimeRestarted", "restarted for log-shipper", "log-shipper", ("a", "b"))
    (event,) = fake.list("events", NS)
    assert event["metadata"]["name"] == event_name(WEB, "RuntimeRestarted", "log-shipper", "a->b")
    assert "series" not in event            # repeats within the interval wait
    clock.now += 61
    recorder.flush()
    (event,) = fake.list("events", NS)
    assert event["series"]["count"] == 10
    assert event["reportingController"] == "runtime.platform.io/webhook-controller"
    assert (event["action"], event["type"], event["reportingInstance"]) == ("Restart", "Normal", "c-1")
    # Another revision or reason is another event.
    recorder.record(WEB, "RuntimeRestarted", "again", "log-shipper", ("b", "c"))
    recorder.record(WEB, "RuntimeRolloutHalted", "never available", "log-shipper", ("b", "c"))
    assert sorted((e["reason"], e["type"]) for e in fake.list("events", NS)) == [
        ("RuntimeRestarted", "Normal"), ("RuntimeRestarted", "Normal"), ("RuntimeRolloutHalted", "Warning")]
    assert len([r for r in fake.writes() if r[1] == "events"]) == 4   # 3 creates and 1 series patch


def test_a_new_leader_adopts_the_event_its_predecessor_wrote(fake: FakeApiServer, api: Any) -> None:
    EventRecorder(api).record(WEB, "RuntimeStale", "2 of 2 pods", "log-shipper", ("a", "b"))
    successor = EventRecorder(api)
    assert successor.record(WEB, "RuntimeStale", "2 of 2 pods", "log-shipper", ("a", "b"))
    (event,) = fake.list("events", NS)
    assert "series" not in event


def test_a_flood_is_held_back_by_the_rate_limit(fake: FakeApiServer, api: Any) -> None:
    clock = Clock()
    recorder = EventRecorder(api, clock=clock, rate=1.0, burst=5)
    written = [recorder.record(WorkloadRef("Deployment", NS, f"w{i}"), "RuntimeStale", "stale", "p", ("a", "b"))
               for i in range(20)]
    assert written == [True] * 5 + [False] * 15
    assert len(fake.list("events", NS)) == 5
    clock.now += 2
    assert recorder.record(WorkloadRef("Deployment", NS, "w5"), "RuntimeStale", "stale", "p", ("a", "b"))
    assert len(fake.list("events", NS)) == 6


def test_nothing_is_written_by_a_follower_or_in_a_dry_run(fake: FakeApiServer, api: Any) -> None:
    assert not EventRecorder(api, enabled=lambda: False).record(WEB, "RuntimeStale", "x", "p", ("a", "b"))
    dry = EventRecorder(api, dry_run=True)
    assert dry.record(WEB, "RuntimeStale", "x", "p", ("a", "b"))
    assert dry.recorded == [("RuntimeStale", f"Deployment/{NS}/web", "p", "a->b")]
    assert fake.writes() == []


@pytest.mark.parametrize("ref,expected", [
    (WEB, {"apiVersion": "apps/v1", "kind": "Deployment"}),
    (WorkloadRef("CronJob", NS, "n"), {"apiVersion": "batch/v1", "kind": "CronJob"}),
    (WorkloadRef("Pod", NS, "p"), {"apiVersion": "v1", "kind": "Pod"}),
    (WorkloadRef.other("kubeflow.org/v1", "PyTorchJob", NS, "t"), {"apiVersion": "kubeflow.org/v1",
                                                                   "kind": "PyTorchJob"}),
])
def test_events_regard_the_owning_object(ref: WorkloadRef, expected: dict[str, str]) -> None:
    assert regarding(ref).items() >= expected.items()
    assert regarding(ref)["name"] == ref.name and regarding(ref)["namespace"] == NS


def test_the_status_configmap_is_written_at_most_every_ten_seconds_and_only_when_changed(
        fake: FakeApiServer, api: Any) -> None:
    from webhook.controller.status import ConfigMapWriter

    fake.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "webhook-controller-status",
                                                                   "namespace": NS}})
    clock = Clock()
    writer = ConfigMapWriter(api, NS, clock=clock)
    assert writer.write({"a": "1"})
    assert not writer.write({"a": "2"})                 # within 10 s
    clock.now += 10
    assert writer.write({"a": "2"})
    clock.now += 10
    assert not writer.write({"a": "2"})                 # unchanged
    assert fake.get("configmaps", "webhook-controller-status", NS)["data"] == {"a": "2"}
    assert len([r for r in fake.writes() if r[1] == "configmaps"]) == 2

    missing = ConfigMapWriter(api, NS, "gone", clock=clock)
    assert not missing.write({"a": "1"})
    assert missing.last_error and "404" in missing.last_error and "apply them again" in missing.last_error
