"""The namespace label cache against the in-process fake API server: list (paged) +
watch, events, bookmarks, a dropped watch, 410 Gone, outages, RBAC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.engine_helpers import policies_from_yaml
from tests.fake_apiserver import FakeApiServer, rules_from_manifests
from webhook.kube import namespace_api, namespace_cache
from webhook.engine.namespaces import LabelsUnknown
from webhook.kube.namespace_cache import NamespaceCache, client_factory
from webhook.policy.loader import EMPTY

# Real watch and reconnect timers: each test waits on them for up to a second.
pytestmark = pytest.mark.slow

NAME = "kubernetes.io/metadata.name"


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.put_namespace("checkout", {"team": "payments"})
        server.put_namespace("shop", {"team": "shop"})
        yield server


def _cache(fake: FakeApiServer, tmp_path: Path, **kwargs: Any) -> NamespaceCache:
    return NamespaceCache(client_factory(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                          backoff_max=0.2, **kwargs)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _verbs(fake: FakeApiServer) -> list[str]:
    return [verb for verb, resource, _, _ in fake.requests if resource == "namespaces"]


def test_it_lists_every_page_then_follows_changes(fake: FakeApiServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespace_api, "LIST_PAGE", 2)
    for n in range(3):
        fake.put_namespace(f"team-{n}", {"n": str(n)})

    async def test() -> None:
        cache = _cache(fake, tmp_path)
        assert cache.state == "off" and isinstance(cache.labels_for("shop"), LabelsUnknown)
        cache.start()
        try:
            await cache.wait_known("team-2", 5)
            assert cache.state == "synced"
            assert dict(cache.labels_for("team-2")) == {NAME: "team-2", "n": "2"}
            assert _verbs(fake)[:3] == ["list", "list", "list"]   # 5 namespaces, pages of 2
            generation = cache.generation

            fake.set_labels("shop", {"team": "shop", "env": "prod"})
            await _until(lambda: cache.labels_for("shop").get("env") == "prod")  # type: ignore[union-attr]
            fake.put_namespace("fresh", {"team": "payments"})
            await cache.wait_known("fresh", 5)
            assert dict(cache.labels_for("fresh")) == {NAME: "fresh", "team": "payments"}
            fake.remove("namespaces", "team-0")
            await _until(lambda: isinstance(cache.labels_for("team-0"), LabelsUnknown))
            assert cache.generation >= generation + 3   # the decision memo empties on each change

            # Bookmarks move the resourceVersion on without touching what lookups answer.
            fake.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}})
            newest = int(fake.get("secrets", "s", "shop")["metadata"]["resourceVersion"])
            generation = cache.generation
            await _until(lambda: int(cache.resource_version or 0) >= newest)
            assert cache.generation == generation
            assert _verbs(fake).count("list") == 3   # followed by watch alone, no relist
        finally:
            cache.stop()
        assert cache.state == "off"

    _run(test)


def test_a_dropped_watch_resumes_from_its_version_and_loses_nothing(fake: FakeApiServer, tmp_path: Path) -> None:
    async def test() -> None:
        cache = _cache(fake, tmp_path)
        cache.start()
        try:
            await cache.wait_known("shop", 5)
            await _until(lambda: fake.open_watches == 1)
            fake.drop_watches()
            fake.set_labels("checkout", {"team": "payments", "env": "prod"})   # while cut off
            await _until(lambda: cache.labels_for("checkout").get("env") == "prod")  # type: ignore[union-attr]
            assert _verbs(fake).count("list") == 1
            assert _verbs(fake).count("watch") >= 2
            assert cache.state == "synced"
        finally:
            cache.stop()

    _run(test)


def test_410_gone_relists_and_picks_up_what_changed(fake: FakeApiServer, tmp_path: Path) -> None:
    expired = namespace_cache.LISTS.labels(reason="expired")

    async def test() -> None:
        before = expired._value.get()
        cache = _cache(fake, tmp_path)
        cache.start()
        try:
            await cache.wait_known("shop", 5)
            await _until(lambda: fake.open_watches == 1)
            # The watch is cut and cannot come back while the namespaces change, so the
            # cache's version is older than the compaction (a compaction keeps the newest
            # version watchable): the resumed watch gets 410.
            fake.fail("watch", "namespaces", times=1_000)
            fake.drop_watches()
            await _until(lambda: fake.open_watches == 0)
            fake.set_labels("shop", {"team": "shop", "env": "prod"})
            fake.put_namespace("fresh")
            fake.remove("namespaces", "checkout")
            fake.compact()
            fake.heal()
            await _until(lambda: _verbs(fake).count("list") == 2)
            await _until(lambda: not isinstance(cache.labels_for("fresh"), LabelsUnknown))
            assert cache.labels_for("shop").get("env") == "prod"  # type: ignore[union-attr]
            assert isinstance(cache.labels_for("checkout"), LabelsUnknown)
            assert expired._value.get() == before + 1
            assert cache.state == "synced" and cache.last_error is None
        finally:
            cache.stop()

    _run(test)


def test_unreachable_before_the_first_list_is_pending_with_the_reason(tmp_path: Path) -> None:
    server = FakeApiServer().start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    server.stop()   # nothing listens there any more

    async def test() -> None:
        cache = NamespaceCache(client_factory(kubeconfig), backoff_max=0.2)
        cache.start()
        try:
            await _until(lambda: cache.last_error is not None)
            found = cache.labels_for("shop")
            assert isinstance(found, LabelsUnknown) and found.pending
            assert "has not synced yet" in found.reason and "cannot reach the API server" in found.reason
            assert cache.state == "syncing" and cache.detail()["lastError"]
            started = time.monotonic()
            await cache.wait_known("shop", 0.3)   # gives up after its timeout
            assert 0.25 < time.monotonic() - started < 2
        finally:
            cache.stop()

    _run(test)


def test_out_of_touch_longer_than_max_stale_answers_unknown_until_back(fake: FakeApiServer,
                                                                      tmp_path: Path) -> None:
    async def test() -> None:
        cache = _cache(fake, tmp_path, max_stale=0.5)
        cache.start()
        try:
            await cache.wait_known("shop", 5)
            epoch = cache.memo_epoch()
            fake.fail("watch", "namespaces", code=503, reason="ServiceUnavailable", message="down", times=10_000)
            fake.fail("list", "namespaces", code=503, reason="ServiceUnavailable", message="down", times=10_000)
            fake.drop_watches()
            await _until(lambda: cache.last_error is not None)
            assert dict(cache.labels_for("shop"))[NAME] == "shop"   # a short outage keeps the labels
            # The first error recorded may be the dropped watch's; the 503 comes with the
            # first reconnect, whose backoff can outlast max_stale.
            await _until(lambda: cache.state == "stale" and "503" in (cache.last_error or ""))
            found = cache.labels_for("shop")
            assert isinstance(found, LabelsUnknown) and not found.pending
            assert "lost the API server" in found.reason and "503" in found.reason
            assert cache.memo_epoch() != epoch
            fake.heal()
            await _until(lambda: cache.state == "synced")
            assert dict(cache.labels_for("shop"))[NAME] == "shop"
        finally:
            cache.stop()

    _run(test)


def test_it_runs_only_while_a_policy_selects_namespaces_by_label(fake: FakeApiServer, tmp_path: Path) -> None:
    selecting = policies_from_yaml("""
        apiVersion: runtime.platform.io/v1
        kind: ValidationPolicy
        metadata: {name: prod}
        spec:
          action: Enforce
          match: {namespaceSelector: {matchLabels: {env: prod}}}
          rules: [{privileged: {}}]
    """)

    async def test() -> None:
        cache = _cache(fake, tmp_path)
        cache.ensure(EMPTY)
        assert not cache.running and fake.requests == []
        cache.ensure(selecting)
        try:
            await cache.wait_known("shop", 5)
            assert cache.running and _verbs(fake)[0] == "list"
        finally:
            cache.ensure(EMPTY)
        assert not cache.running and cache.state == "off"

    _run(test)


def test_the_manifests_rbac_is_enough(tmp_path: Path) -> None:
    documents = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text()) if d]
    rules = rules_from_manifests(documents, "webhook", "webhook-system")
    with FakeApiServer(rbac=rules, bookmark_interval=0.2) as fake:
        fake.put_namespace("shop", {"team": "shop"})

        async def test() -> None:
            cache = _cache(fake, tmp_path)
            cache.start()
            try:
                await cache.wait_known("shop", 5)
                await _until(lambda: fake.open_watches == 1)
                assert cache.last_error is None and cache.state == "synced"
            finally:
                cache.stop()

        _run(test)
    with FakeApiServer(rbac=[], bookmark_interval=0.2) as fake:   # without it: a 403, named

        async def forbidden() -> None:
            cache = _cache(fake, tmp_path)
            cache.start()
            try:
                await _until(lambda: cache.last_error is not None)
                assert "403" in cache.last_error and "cannot list resource \"namespaces\"" in cache.last_error
            finally:
                cache.stop()

        _run(forbidden)


def test_report_reads_namespace_labels_when_a_policy_needs_them(fake: FakeApiServer, tmp_path: Path) -> None:
    from webhook.kube.client import load_api_client
    from webhook.cli.report import report

    policies = policies_from_yaml("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: payments-audit}
        spec:
          match: {namespaceSelector: {matchLabels: {team: payments}}}
          inject: {env: [{name: AUDIT, value: "on"}]}
    """)
    for namespace in ("checkout", "shop", "gone"):
        fake.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace},
                  "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1"}]},
                  "status": {"phase": "Running"}})
    with load_api_client(fake.write_kubeconfig(tmp_path / "kubeconfig")) as api_client:
        everywhere = report(api_client, policies)
        assert {(f.namespace, f.status) for f in everywhere.findings} == {("checkout", "stale"), ("gone", "unknown")}
        assert "labels of namespace 'gone' are not known" in next(f.detail for f in everywhere.findings
                                                                 if f.status == "unknown")
        assert [r[:2] for r in fake.requests[-2:]] == [("list", "pods"), ("list", "namespaces")]
        one = report(api_client, policies, namespace="shop")
        assert one.findings == [] and fake.requests[-1][:2] == ("get", "namespaces")
        assert report(api_client, policies_from_yaml("""
            apiVersion: runtime.platform.io/v1
            kind: InjectionPolicy
            metadata: {name: everywhere}
            spec: {inject: {env: [{name: A, value: "1"}]}}
        """), namespace="shop").findings[0].status == "stale"
        assert fake.requests[-1][:2] == ("list", "pods")   # no namespace read without a selector


def test_a_request_waiting_before_the_cache_starts_gets_the_labels(fake: FakeApiServer, tmp_path: Path) -> None:
    """A reload swaps in the first namespaceSelector policy, then starts the cache: a
    request in between waits for it rather than meeting the failure rule."""
    async def test() -> None:
        cache = _cache(fake, tmp_path)
        asyncio.get_running_loop().call_later(0.2, cache.start)
        try:
            await cache.wait_known("shop", 5)
            assert dict(cache.labels_for("shop"))["team"] == "shop"
        finally:
            cache.stop()

    _run(test)


@pytest.mark.slow
def test_the_fake_api_server_watches_pods_per_namespace_as_well(fake: FakeApiServer) -> None:
    """The same watch semantics serve pods (for the controller of issue 19), filtered by namespace."""
    import json
    import urllib.request

    def pod(name: str, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}

    first = fake.put(pod("a", "shop"))
    fake.put(pod("b", "checkout"))
    fake.remove("pods", "a", "shop")
    since = first["metadata"]["resourceVersion"]
    url = f"{fake.url}/api/v1/namespaces/shop/pods?watch=true&resourceVersion={int(since) - 1}&timeoutSeconds=1"
    with urllib.request.urlopen(url, timeout=5) as response:
        events = [json.loads(line) for line in response.read().splitlines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("DELETED", "a")]
    assert ("watch", "pods", "shop", "") in fake.requests
    fake.compact()
    with urllib.request.urlopen(url, timeout=5) as response:
        gone = json.loads(response.read().splitlines()[0])
    assert gone["type"] == "ERROR" and gone["object"]["code"] == 410 and gone["object"]["reason"] == "Expired"
