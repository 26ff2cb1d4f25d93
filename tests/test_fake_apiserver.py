"""The fake API server behaves as kube-apiserver does where the controller depends on it,
checked through the kubernetes client the controller uses (so its tests prove something)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.fake_apiserver import FakeApiServer, Rule

NS = "shop"


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.put_namespace(NS)
        server.put_namespace("other")
        yield server


@pytest.fixture
def api(fake: FakeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig"))) as api:
        yield api


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "proxy", "image": "proxy:1"}],
                     **spec}}


def deployment(name: str, image: str = "app:1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


class Refusal:
    def __init__(self, exc: ApiException) -> None:
        self.status = exc.status
        self.body = json.loads(exc.body)["message"]   # the Status message, unescaped
        self.reason = json.loads(exc.body)["reason"]


def error(call: Any, *args: Any, **kwargs: Any) -> Refusal:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return Refusal(caught.value)


# -- resource versions, conflicts, generation ------------------------------------------------

def test_one_resource_version_counter_across_kinds_and_lists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_pod(NS, pod("a"))
    config_map = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    assert int(config_map.metadata.resource_version) > int(first.metadata.resource_version)
    # A list is as of the newest write anywhere, as etcd's revision is.
    pods = core.list_namespaced_pod(NS)
    assert pods.metadata.resource_version == config_map.metadata.resource_version
    assert [p.metadata.name for p in pods.items] == ["a"]
    assert first.metadata.uid and first.metadata.creation_timestamp and first.status.phase == "Pending"


def test_a_stale_update_is_a_conflict_and_a_no_op_update_writes_nothing(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    created.data = {"k": "w"}
    updated = core.replace_namespaced_config_map("c", NS, created)
    assert updated.data == {"k": "w"} and updated.metadata.resource_version != created.metadata.resource_version
    created.data = {"k": "x"}   # still carries the old resourceVersion
    conflict = error(core.replace_namespaced_config_map, "c", NS, created)
    assert conflict.status == 409 and "the object has been modified" in conflict.body
    stale_patch = error(core.patch_namespaced_config_map, "c", NS, {"metadata": {
        "resourceVersion": created.metadata.resource_version}, "data": {"k": "z"}})
    assert stale_patch.status == 409   # a patch naming a version is conditional on it
    again = core.replace_namespaced_config_map("c", NS, updated)
    assert again.metadata.resource_version == updated.metadata.resource_version
    # An update without a resourceVersion is unconditional, as on the real server.
    updated.metadata.resource_version = None
    updated.data = {"k": "y"}
    assert core.replace_namespaced_config_map("c", NS, updated).data == {"k": "y"}


def test_generation_counts_spec_changes_and_status_is_its_own_subresource(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    assert created.metadata.generation == 1 and not created.status.observed_generation
    restarted = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})
    assert restarted.metadata.generation == 2
    assert restarted.spec.template.metadata.annotations == {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"team": "a"}}})
    assert labelled.metadata.generation == 2
    # The main resource ignores status; the status subresource ignores everything else.
    ignored = apps.patch_namespaced_deployment("web", NS, {"status": {"replicas": 5}})
    assert not ignored.status.replicas
    status = apps.patch_namespaced_deployment_status("web", NS, {"status": {"observedGeneration": 2, "replicas": 2},
                                                                 "spec": {"replicas": 9}})
    assert status.status.observed_generation == 2 and status.spec.replicas == 2 and status.metadata.generation == 2
    selector = error(apps.patch_namespaced_deployment, "web", NS, {"spec": {"selector": {"matchLabels": {"app": "x"}}}})
    assert selector.status == 422 and "field is immutable" in selector.body


# -- the Pod update rule --------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "allowed"), [
    ({"spec": {"containers": [{"name": "proxy", "image": "proxy:2"}]}}, True),
    ({"metadata": {"labels": {"a": "b"}, "annotations": {"runtime.platform.io/status": "{}"}}}, True),
    ({"spec": {"activeDeadlineSeconds": 30}}, True),
    ({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}}, True),
    ({"spec": {"containers": [{"name": "proxy", "env": [{"name": "A", "value": "1"}]}]}}, False),
    ({"spec": {"containers": [{"name": "extra", "image": "x"}]}}, False),
    ({"spec": {"serviceAccountName": "other"}}, False),
    ({"spec": {"activeDeadlineSeconds": 120}}, False),
    ({"spec": {"tolerations": []}}, False),
    ({"spec": {"terminationGracePeriodSeconds": 5}}, False),
])
def test_pod_updates_change_only_what_the_api_server_allows(api: client.ApiClient, change: dict[str, Any],
                                                             allowed: bool) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("p", activeDeadlineSeconds=60,
                                       tolerations=[{"key": "a", "operator": "Exists"}]))
    if allowed:
        core.patch_namespaced_pod("p", NS, change)
        return
    refused = error(core.patch_namespaced_pod, "p", NS, change)
    assert refused.status == 422 and refused.reason == "Invalid"


def test_an_in_place_image_change_keeps_the_other_containers_and_the_status(api: client.ApiClient,
                                                                            fake: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("p"))
    fake.update_status("pods", "p", NS, {"phase": "Running"})
    patched = core.patch_namespaced_pod("p", NS, {"spec": {"containers": [{"name": "proxy", "image": "proxy:2"}]}})
    assert [(c.name, c.image) for c in patched.spec.containers] == [("app", "app:1"), ("proxy", "proxy:2")]
    assert patched.status.phase == "Running" and patched.metadata.generation == 2
    labelled = core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"x": "1"}}})
    assert labelled.metadata.generation == 2   # only spec changes count
    refused = error(core.patch_namespaced_pod, "p", NS, {"spec": {"containers": [{"name": "app", "image": "a:2",
                                                                                  "args": ["x"]}]}})
    assert "pod updates may not change fields other than `spec.containers[*].image`" in refused.body
    # A merge patch replaces the whole list: the real server refuses dropping a container.
    merge = error(core.patch_namespaced_pod, "p", NS, {"spec": {"containers": [{"name": "app", "image": "a:2"}]}},
                  _content_type="application/merge-patch+json")
    assert merge.status == 422
    put = core.read_namespaced_pod("p", NS)
    put.spec.containers[0].image = "app:3"
    assert core.replace_namespaced_pod("p", NS, put).spec.containers[0].image == "app:3"


def test_json_patch_and_strategic_merge_directives(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("p", labels={"a": "1"}))
    tested = error(core.patch_namespaced_pod, "p", NS, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    assert tested.status == 422
    core.patch_namespaced_pod("p", NS, [{"op": "test", "path": "/metadata/labels/a", "value": "1"},
                                        {"op": "replace", "path": "/spec/containers/0/image", "value": "app:2"}])
    config_map = core.create_namespaced_config_map(NS, {"metadata": {"name": "c", "annotations": {"x": "1", "y": "2"}}})
    patched = core.patch_namespaced_config_map("c", NS, {"metadata": {"annotations": {"x": None, "z": "3"}}})
    assert patched.metadata.annotations == {"y": "2", "z": "3"} and config_map.metadata.name == "c"
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment("web"))
    two = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "side:1"}]}}}})
    assert [c.name for c in two.spec.template.spec.containers] == ["app", "side"]
    one = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}})
    assert [c.name for c in one.spec.template.spec.containers] == ["app"]
    unsupported = error(core.patch_namespaced_pod, "p", NS, {"metadata": {}},
                        _content_type="application/apply-patch+yaml")
    assert unsupported.status == 415


# -- create, delete, validation ---------------------------------------------------------------

def test_create_get_delete_and_their_errors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    missing_namespace = error(core.create_namespaced_pod, "nowhere", pod("p"))
    assert missing_namespace.status == 404 and 'namespaces "nowhere" not found' in missing_namespace.body
    generated = core.create_namespaced_pod(NS, {"metadata": {"generateName": "web-"},
                                                "spec": {"containers": [{"name": "a", "image": "a"}]}})
    assert generated.metadata.name.startswith("web-") and len(generated.metadata.name) == len("web-") + 5
    assert error(core.create_namespaced_pod, NS, pod(generated.metadata.name)).status == 409
    invalid = error(core.create_namespaced_pod, NS, {"metadata": {"name": "bad"}, "spec": {"containers": [
        {"name": "a"}]}})
    assert invalid.status == 422 and "spec.containers[0].image: Required value" in invalid.body
    stale = error(core.delete_namespaced_pod, generated.metadata.name, NS,
                  body=client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1")))
    assert stale.status == 409
    core.delete_namespaced_pod(generated.metadata.name, NS)
    assert error(core.read_namespaced_pod, generated.metadata.name, NS).status == 404
    assert error(core.delete_namespaced_pod, generated.metadata.name, NS).status == 404


def test_dry_run_validates_and_stores_nothing(api: client.ApiClient, fake: FakeApiServer) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment("web"))
    before = fake.resource_version
    dry = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 7}}, dry_run="All")
    assert dry.spec.replicas == 7
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2 and fake.resource_version == before


def test_every_controller_kind_is_served(api: client.ApiClient) -> None:
    apps, batch = client.AppsV1Api(api), client.BatchV1Api(api)
    template = deployment("x")["spec"]
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {**template, "serviceName": "db"}})
    apps.create_namespaced_daemon_set(NS, {"metadata": {"name": "agent"}, "spec": {
        "selector": template["selector"], "template": template["template"]}})
    apps.create_namespaced_replica_set(NS, {"metadata": {"name": "rs"}, "spec": template})
    job_template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "a"}]}}
    batch.create_namespaced_job(NS, {"metadata": {"name": "once"}, "spec": {"template": job_template}})
    batch.create_namespaced_cron_job(NS, {"metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": job_template}}}})
    assert [s.metadata.name for s in apps.list_stateful_set_for_all_namespaces().items] == ["db"]
    assert apps.read_namespaced_daemon_set("agent", NS).metadata.generation == 1
    assert batch.read_namespaced_cron_job("nightly", NS).spec.schedule == "0 0 * * *"
    assert batch.list_namespaced_job(NS).items[0].metadata.name == "once"
    forbidden = error(apps.patch_namespaced_stateful_set, "db", NS, {"spec": {"serviceName": "other"}})
    assert forbidden.status == 422 and "updates to statefulset spec" in forbidden.body
    mismatch = error(apps.create_namespaced_replica_set, NS, {"metadata": {"name": "bad"}, "spec": {
        "selector": {"matchLabels": {"app": "y"}}, "template": template["template"]}})
    assert mismatch.status == 422 and "`selector` does not match template `labels`" in mismatch.body


# -- selectors and paging ---------------------------------------------------------------------

@pytest.mark.parametrize(("selector", "names"), [
    ("tier=web", ["a", "b"]),
    ("tier==web,track!=canary", ["a"]),
    ("tier in (web, db)", ["a", "b", "c"]),
    ("tier notin (web)", ["c", "d"]),
    ("track", ["b"]),
    ("!track", ["a", "c", "d"]),
])
def test_label_selectors(api: client.ApiClient, selector: str, names: list[str]) -> None:
    core = client.CoreV1Api(api)
    for name, labels in {"a": {"tier": "web"}, "b": {"tier": "web", "track": "canary"},
                         "c": {"tier": "db"}, "d": {}}.items():
        core.create_namespaced_pod(NS, pod(name, labels))
    assert [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=selector).items] == names


def test_field_selectors_and_lists_across_namespaces(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("a"))
    core.create_namespaced_pod("other", pod("a"))
    core.create_namespaced_pod("other", pod("b"))
    everywhere = core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [
        ("other", "a"), ("other", "b"), (NS, "a")]
    assert [p.metadata.namespace for p in core.list_pod_for_all_namespaces(
        field_selector=f"metadata.namespace={NS}").items] == [NS]
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(
        field_selector="metadata.namespace!=shop,metadata.name=b").items] == ["b"]
    assert core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items == []
    unsupported = error(core.list_pod_for_all_namespaces, field_selector="spec.nodeName=n1")
    assert unsupported.status == 400 and "field label not supported: spec.nodeName" in unsupported.body
    bad = error(core.list_pod_for_all_namespaces, label_selector="a in ()")
    assert bad.status == 400


def test_paging_neither_repeats_nor_skips_and_an_expired_token_is_gone(api: client.ApiClient,
                                                                       fake: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    for name in "abcde":
        core.create_namespaced_pod(NS, pod(name))
    first = core.list_pod_for_all_namespaces(limit=2)
    assert [p.metadata.name for p in first.items] == ["a", "b"] and first.metadata._continue
    core.delete_namespaced_pod("a", NS)   # a change between pages moves nothing under the token
    second = core.list_pod_for_all_namespaces(limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["c", "d"]
    assert second.metadata.resource_version == first.metadata.resource_version
    fake.compact()
    gone = error(core.list_pod_for_all_namespaces, limit=2, _continue=second.metadata._continue)
    assert gone.status == 410 and gone.reason == "Expired"


# -- watches ---------------------------------------------------------------------------------

def _events(stream: Iterator[dict[str, Any]], until: int) -> list[tuple[str, str]]:
    """(type, name) of a watch's events until `until` of them (bookmarks not counted)."""
    seen: list[tuple[str, str]] = []
    for event in stream:
        if event["type"] != "BOOKMARK":
            seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
        if len(seen) >= until:
            break
    return seen


def test_a_watch_from_a_list_sees_every_change_in_order_with_bookmarks(api: client.ApiClient,
                                                                        fake: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("old"))
    listed = core.list_namespaced_pod(NS)

    def writes() -> None:
        core.create_namespaced_pod(NS, pod("a"))
        core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"x": "1"}}})
        core.create_namespaced_pod("other", pod("elsewhere"))
        core.delete_namespaced_pod("a", NS)

    writer = threading.Timer(0.3, writes)
    writer.start()
    watcher = watch.Watch()
    seen = []
    for event in watcher.stream(core.list_namespaced_pod, NS, resource_version=listed.metadata.resource_version,
                                allow_watch_bookmarks=True, timeout_seconds=3):
        seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
        if event["type"] == "DELETED":
            watcher.stop()
    writer.join()
    changes = [s for s in seen if s[0] != "BOOKMARK"]
    assert changes == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert ("BOOKMARK", "") in seen
    # The client resumes from the last event's version; nothing is replayed from there.
    assert int(watcher.resource_version) >= int(listed.metadata.resource_version)
    core.create_namespaced_pod(NS, pod("later"))
    resumed = _events(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=watcher.resource_version,
                                           timeout_seconds=5), until=1)
    assert resumed == [("ADDED", "later")]


def test_a_watch_without_a_version_starts_with_the_current_state(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("a"))
    core.create_namespaced_pod(NS, pod("b"))
    events = _events(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=5), until=2)
    assert events == [("ADDED", "a"), ("ADDED", "b")]


def test_a_watch_with_a_selector_sees_objects_leave_and_enter_it(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = core.create_namespaced_pod(NS, pod("a", {"tier": "web"})).metadata.resource_version
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"tier": "db"}}})
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"tier": "web"}}})
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"x": "1"}}})
    events = _events(watch.Watch().stream(core.list_namespaced_pod, NS, label_selector="tier=web",
                                          resource_version=str(int(start) - 1), timeout_seconds=5), until=4)
    assert [e[0] for e in events] == ["ADDED", "DELETED", "ADDED", "MODIFIED"]


def test_a_watch_from_a_compacted_version_is_gone(api: client.ApiClient, fake: FakeApiServer) -> None:
    """A version older than the compaction is gone; the newest one is not (etcd keeps the
    compacted revision): a watcher whose bookmarks kept it current resumes."""
    core = client.CoreV1Api(api)
    old = core.create_namespaced_pod(NS, pod("a")).metadata.resource_version
    core.create_namespaced_pod(NS, pod("z"))   # a change after `old`, which compaction forgets
    fake.compact()
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=old, timeout_seconds=1))
    assert gone.value.status == 410 and "Expired" in str(gone.value.reason)
    # A fresh list gives a version the watch accepts.
    fresh = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("b"))
    assert _events(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=fresh, timeout_seconds=5),
                   until=1) == [("ADDED", "b")]
    fake.compact()
    newest = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("c"))
    assert _events(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=newest, timeout_seconds=5),
                   until=1) == [("ADDED", "c")]


def test_workload_watches_carry_status_changes(api: client.ApiClient, fake: FakeApiServer) -> None:
    apps = client.AppsV1Api(api)
    start = apps.create_namespaced_deployment(NS, deployment("web")).metadata.resource_version
    fake.update_status("deployments", "web", NS, {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2})
    stream = watch.Watch().stream(apps.list_deployment_for_all_namespaces, resource_version=start, timeout_seconds=5)
    event = next(stream)
    stream.close()
    assert (event["type"], event["object"].status.updated_replicas) == ("MODIFIED", 2)


def test_a_dropped_watch_ends_the_stream(api: client.ApiClient, fake: FakeApiServer) -> None:
    core = client.CoreV1Api(api)
    version = core.list_namespaced_pod(NS).metadata.resource_version
    threading.Timer(0.3, fake.drop_watches).start()
    started = time.monotonic()
    try:
        list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=version, timeout_seconds=5))
    except Exception:  # noqa: BLE001 - urllib3 reports the cut as one of several errors
        pass
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 2   # the server notices the cut on its own thread
    while fake.open_watches and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.open_watches == 0


# -- leases and events --------------------------------------------------------------------------

def test_two_candidates_racing_for_a_lease_one_wins(api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    leases.create_namespaced_lease(NS, {"metadata": {"name": "controller"}, "spec": {
        "holderIdentity": "a", "leaseDurationSeconds": 15}})
    seen_by_a = leases.read_namespaced_lease("controller", NS)
    seen_by_b = leases.read_namespaced_lease("controller", NS)
    seen_by_b.spec.holder_identity = "b"
    leases.replace_namespaced_lease("controller", NS, seen_by_b)
    seen_by_a.spec.lease_transitions = 1
    assert error(leases.replace_namespaced_lease, "controller", NS, seen_by_a).status == 409
    assert leases.read_namespaced_lease("controller", NS).spec.holder_identity == "b"
    taken = error(leases.create_namespaced_lease, NS, {"metadata": {"name": "controller"}, "spec": {}})
    assert taken.status == 409 and "already exists" in taken.body


def test_events_are_created_listed_by_what_they_regard_and_patched(api: client.ApiClient) -> None:
    events = client.EventsV1Api(api)
    body = {"metadata": {"name": "web.1"}, "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal",
            "reason": "RuntimeRestarted", "action": "Restart", "reportingController": "runtime.platform.io/controller",
            "reportingInstance": "c-1", "note": "restarted",
            "regarding": {"kind": "Deployment", "namespace": NS, "name": "web", "apiVersion": "apps/v1"}}
    events.create_namespaced_event(NS, body)
    events.create_namespaced_event(NS, {**body, "metadata": {"name": "db.1"},
                                        "regarding": {**body["regarding"], "name": "db"}})
    found = events.list_namespaced_event(NS, field_selector="regarding.name=web,reason=RuntimeRestarted")
    assert [e.metadata.name for e in found.items] == ["web.1"]
    patched = events.patch_namespaced_event("web.1", NS, {"series": {"count": 2, "lastObservedTime":
                                                                     "2026-01-01T00:01:00.000000Z"}})
    assert patched.series.count == 2


def test_the_kubernetes_clients_lease_lock_elects_one_leader(api: client.ApiClient) -> None:
    """The client's own leader election (LeaseLock) against the fake: one candidate
    acquires, the other does not while the lease is fresh, and a candidate writing from
    a stale read loses to the conflict."""
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    def candidate(identity: str) -> leaderelection.LeaderElection:
        lock = LeaseLock("controller", NS, identity)
        lock.api_instance = client.CoordinationV1Api(api)
        return leaderelection.LeaderElection(electionconfig.Config(
            lock, lease_duration=15, renew_deadline=10, retry_period=2,
            onstarted_leading=lambda: None, onstopped_leading=lambda: None))

    first, second = candidate("a"), candidate("b")
    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    assert first.try_acquire_or_renew() is True   # renewing from its own fresh read
    lease = client.CoordinationV1Api(api).read_namespaced_lease("controller", NS)
    assert lease.spec.holder_identity == "a"
    stale = first.election_config.lock.lease_reference   # as read before the next renewal
    assert first.try_acquire_or_renew() is True
    first.election_config.lock.lease_reference = stale
    assert first.election_config.lock.update("controller", NS, first.observed_record) is False


def test_a_kind_the_server_does_not_serve_is_not_found(api: client.ApiClient) -> None:
    """The owner of an operator's pods (a CRD not installed here) is a 404, as on a
    cluster without that CRD."""
    missing = error(client.CustomObjectsApi(api).get_namespaced_custom_object, "kubeflow.org", "v1", NS,
                    "tfjobs", "train")
    assert missing.status == 404 and missing.reason == "NotFound"


def test_rbac_covers_the_new_kinds_and_names_subresources(tmp_path: Path) -> None:
    """A rule for `pods` does not grant `pods/status`, and a Role's rule holds in its
    namespace only, as kube-apiserver's RBAC authorizer decides."""
    rules = [Rule(api_groups=frozenset({""}), resources=frozenset({"pods"}),
                  verbs=frozenset({"get", "list", "watch", "patch"}), namespace=NS),
             Rule(api_groups=frozenset({"apps"}), resources=frozenset({"deployments"}),
                  verbs=frozenset({"get", "patch"}), resource_names=frozenset({"web"}))]
    with FakeApiServer(rbac=rules) as server:
        server.put_namespace(NS)
        server.put_namespace("other")
        server.put(pod("p") | {"metadata": {"name": "p", "namespace": NS}})
        server.put(pod("p") | {"metadata": {"name": "p", "namespace": "other"}})
        server.put({"apiVersion": "apps/v1", "kind": "Deployment", **deployment("web"),
                    "metadata": {"name": "web", "namespace": NS}})
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        with config.new_client_from_config(config_file=str(kubeconfig)) as api:
            core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
            core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"a": "b"}}})
            assert error(core.patch_namespaced_pod_status, "p", NS, {"status": {}}).status == 403
            assert error(core.read_namespaced_pod, "p", "other").status == 403
            assert error(core.list_pod_for_all_namespaces).status == 403
            apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"a": "b"}}})
            assert error(apps.list_namespaced_deployment, NS).status == 403


def test_a_created_pod_gets_the_api_servers_defaults_after_admission(fake: FakeApiServer,
                                                                      api: client.ApiClient) -> None:
    def inject(operation: str, resource: str, namespace: str, obj: dict[str, Any], old: Any) -> dict[str, Any]:
        return {**obj, "spec": {**obj["spec"], "initContainers": [
            {"name": "sidecar", "image": "sidecar:latest", "ports": [{"containerPort": 9}]}]}}

    fake.admission.append(inject)
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("web"))
    stored = fake.get("pods", "web", NS)
    spec = stored["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"]) == (
        "Always", "ClusterFirst", 30)
    sidecar = spec["initContainers"][0]   # what a webhook injected is defaulted too
    assert (sidecar["imagePullPolicy"], sidecar["terminationMessagePath"], sidecar["ports"][0]["protocol"]) == (
        "Always", "/dev/termination-log", "TCP")
    assert {c["imagePullPolicy"] for c in spec["containers"]} == {"IfNotPresent"}
