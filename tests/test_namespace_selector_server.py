"""The server with a namespaceSelector policy, over real TLS, its namespace label cache
fed by the in-process fake API server (`--kubeconfig`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import AdmissionResult, ApiServerClient
from tests.conftest import ServerProcess
from tests.fake_apiserver import FakeApiServer
from webhook.admission.connections import ConnectionLimits, LimitedSite
from webhook.kube.namespace_cache import NamespaceCache, client_factory
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.server import ServerState, create_app
from webhook.runtime.tls import ServingCertificate

INJECT = """\
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: payments-audit}
spec:
  match:
    namespaces: {exclude: [kube-system]}
    namespaceSelector: {matchLabels: {team: payments}}
  inject:
    env: [{name: AUDIT, value: "on"}]
"""
VALIDATE = """\
apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata: {name: prod-no-privileged}
spec:
  action: Enforce
  match:
    namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}
  rules: [{privileged: {}}]
"""
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
       "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"}]}}
PRIVILEGED = {**POD, "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0",
                                               "securityContext": {"privileged": True}}]}}


def _policies(tmp_path: Path, *texts: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    for n, text in enumerate(texts):
        (directory / f"p{n}.yaml").write_text(text)
    return directory


def _env_of(result: AdmissionResult) -> list[dict[str, str]] | None:
    return result.patched(POD)["spec"]["containers"][0].get("env") if result.patch else None


def _until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5) as server:
        server.put_namespace("checkout", {"team": "payments", "env": "prod"})
        server.put_namespace("shop", {"team": "shop"})
        server.put_namespace("kube-system")
        yield server


def _start(start_server: Callable[..., ServerProcess], tmp_path: Path, kubeconfig: Path,
           *texts: str, args: tuple[str, ...] = ()) -> ServerProcess:
    return start_server(policies=_policies(tmp_path, *texts), args=["--kubeconfig", str(kubeconfig), *args])


def test_a_selector_injects_and_validates_by_namespace_label_and_follows_changes(
        fake: FakeApiServer, tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = _start(start_server, tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), INJECT, VALIDATE)
    client = server.client
    ready = _until(lambda: (r := client.request("GET", "/readyz")).status == 200 and r)
    assert ready.json()["namespaceCache"]["state"] == "synced"
    assert ready.json()["namespaceCache"]["namespaces"] == 3

    assert _env_of(client.admit(POD, namespace="checkout")) == [{"name": "AUDIT", "value": "on"}]
    assert client.admit(POD, namespace="shop").patch is None
    assert client.admit(POD, namespace="kube-system").patch is None
    denied = client.admit(PRIVILEGED, endpoint="/validate", namespace="checkout")
    assert not denied.allowed and "prod-no-privileged" in denied.response["status"]["message"]
    assert client.admit(PRIVILEGED, endpoint="/validate", namespace="shop").allowed

    # A label change reaches decisions already remembered for identical pods (the memo).
    assert _env_of(client.admit(POD, namespace="checkout")) is not None
    fake.set_labels("checkout", {"team": "shop"})
    _until(lambda: client.admit(POD, namespace="checkout").patch is None)
    _until(lambda: client.admit(PRIVILEGED, endpoint="/validate", namespace="checkout").allowed)
    fake.set_labels("shop", {"team": "payments"})
    _until(lambda: _env_of(client.admit(POD, namespace="shop")) is not None)

    # A pod in a namespace created a moment ago waits for its watch event, not the failure rule.
    fake.watch_delay = 0.7
    fake.put_namespace("fresh", {"team": "payments"})
    started = time.monotonic()
    assert _env_of(client.admit(POD, namespace="fresh")) == [{"name": "AUDIT", "value": "on"}]
    assert time.monotonic() - started > 0.5   # it did wait for the event
    fake.watch_delay = 0.0

    metrics = client.request("GET", "/metrics").body.decode()
    assert 'webhook_namespace_cache_state{state="synced"} 1.0' in metrics
    assert "webhook_namespace_cache_namespaces 4.0" in metrics
    # The watch was kept, not replaced by lists.
    assert [r[0] for r in fake.requests if r[1] == "namespaces"].count("list") == 1


def test_readiness_waits_for_the_first_sync(fake: FakeApiServer, tmp_path: Path,
                                            start_server: Callable[..., ServerProcess]) -> None:
    fake.fail("list", "namespaces", code=503, reason="ServiceUnavailable", message="etcd is down", times=4)
    server = _start(start_server, tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), INJECT)
    waiting = server.client.request("GET", "/readyz")
    assert waiting.status == 503
    assert waiting.json()["namespaceCache"]["state"] == "syncing"
    _until(lambda: server.client.request("GET", "/readyz").status == 200, timeout=30)
    assert _env_of(server.client.admit(POD, namespace="checkout")) is not None


@pytest.mark.parametrize(("failure_policy", "allowed"), [("Fail", False), ("Ignore", True)])
def test_an_unreachable_api_server_applies_the_failure_rule(
        tmp_path: Path, start_server: Callable[..., ServerProcess], failure_policy: str, allowed: bool) -> None:
    gone = FakeApiServer().start()
    kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    gone.stop()
    server = _start(start_server, tmp_path, kubeconfig, INJECT, args=("--failure-policy", failure_policy))
    readyz = _until(lambda: (r := server.client.request("GET", "/readyz")).json()["namespaceCache"]["lastError"]
                    and r)
    assert readyz.status == 503 and "cannot reach the API server" in readyz.json()["namespaceCache"]["lastError"]

    started = time.monotonic()
    result = server.client.admit(POD, namespace="checkout")
    assert time.monotonic() - started < 5   # a brief wait for the cache, never the API server's deadline
    assert result.allowed is allowed and result.patch is None
    assert result.response["status"]["code"] == 500
    message = result.response["status"]["message"]
    assert "labels of namespace 'checkout' are not known" in message and failure_policy in message
    # A namespace the policy leaves out by name needs no labels: decided as usual.
    excluded = server.client.admit(POD, namespace="kube-system")
    assert excluded.allowed and "status" not in excluded.response
    server.wait_for_log(lambda e: e.get("event") == "namespace_labels_unknown")


def test_a_reload_that_adds_a_selector_starts_the_cache(fake: FakeApiServer, tmp_path: Path,
                                                        start_server: Callable[..., ServerProcess]) -> None:
    no_selector = INJECT.replace("    namespaceSelector: {matchLabels: {team: payments}}\n", "")
    server = _start(start_server, tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), no_selector)
    assert server.client.request("GET", "/readyz").json()["namespaceCache"] == {"state": "off"}
    assert fake.requests == []   # no API access while no policy needs it
    (tmp_path / "policies" / "p0.yaml").write_text(INJECT)
    _until(lambda: server.client.request("GET", "/readyz").json()["namespaceCache"]["state"] == "synced")
    assert server.client.admit(POD, namespace="shop").patch is None
    assert _env_of(server.client.admit(POD, namespace="checkout")) is not None
    (tmp_path / "policies" / "p0.yaml").write_text(no_selector)
    _until(lambda: server.client.request("GET", "/readyz").json()["namespaceCache"] == {"state": "off"})


def test_every_worker_keeps_its_own_cache(fake: FakeApiServer, tmp_path: Path,
                                          start_server: Callable[..., ServerProcess]) -> None:
    server = _start(start_server, tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), INJECT,
                    args=("--workers", "2"))
    _until(lambda: [r[0] for r in fake.requests if r[1] == "namespaces"].count("watch") >= 2)
    _until(lambda: server.client.request("GET", "/readyz").status == 200)
    for _ in range(4):   # whichever worker answers
        assert _env_of(server.client.admit(POD, namespace="checkout")) is not None


class _InProcess:
    """The real app over TLS in a background loop, with a cache whose staleness bound is short."""

    def __init__(self, certs: Path, policies: Path, kubeconfig: Path, **state: Any) -> None:
        self.certs, self.policies, self.kubeconfig, self.extra = certs, policies, kubeconfig, state
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            cert = ServingCertificate(self.certs)
            holder = PolicyHolder.load(self.policies)
            self.state = ServerState(policies=holder, certificate=cert,
                                     namespaces=NamespaceCache(client_factory(self.kubeconfig), max_stale=0.5,
                                                               backoff_max=0.2),
                                     **{"wait_for_namespaces": True, **self.extra})
            assert self.state.namespaces is not None
            self.state.namespaces.ensure(holder.current)
            self.runner = web.AppRunner(create_app(self.state), handle_signals=False)
            await self.runner.setup()
            site = LimitedSite(self.runner, "127.0.0.1", 0, ssl_context=cert.listening_context,
                               limits=ConnectionLimits())
            await site.start()
            self.port = self.runner.addresses[0][1]
            self.ready.set()

        from aiohttp import web
        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def __enter__(self) -> ApiServerClient:
        self.thread.start()
        assert self.ready.wait(10)
        return ApiServerClient(self.port, self.certs / "ca.crt")

    def __exit__(self, *exc: object) -> None:
        assert self.state.namespaces is not None
        self.loop.call_soon_threadsafe(self.state.namespaces.stop)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.slow
def test_a_cache_out_of_touch_too_long_decides_by_the_failure_rule_even_for_remembered_pods(
        fake: FakeApiServer, tmp_path: Path, pki: Path) -> None:
    with _InProcess(pki, _policies(tmp_path, INJECT), fake.write_kubeconfig(tmp_path / "kubeconfig")) as client:
        _until(lambda: client.request("GET", "/readyz").status == 200)
        assert _env_of(client.admit(POD, namespace="checkout")) is not None
        assert _env_of(client.admit(POD, namespace="checkout")) is not None   # now remembered
        fake.fail("watch", "namespaces", code=503, reason="ServiceUnavailable", message="down", times=10_000)
        fake.fail("list", "namespaces", code=503, reason="ServiceUnavailable", message="down", times=10_000)
        fake.drop_watches()
        stale = _until(lambda: (r := client.admit(POD, namespace="checkout")).response.get("status") and r)
        assert not stale.allowed and stale.response["status"]["code"] == 500
        assert "lost the API server" in stale.response["status"]["message"]
        # Readiness does not fail over it: every replica would lose it at once.
        readyz = client.request("GET", "/readyz")
        assert readyz.status == 200 and readyz.json()["namespaceCache"]["state"] == "stale"
        fake.heal()
        _until(lambda: _env_of(client.admit(POD, namespace="checkout")) is not None)


@pytest.mark.slow
def test_only_so_many_requests_wait_for_namespace_labels(tmp_path: Path, pki: Path) -> None:
    gone = FakeApiServer().start()
    kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    gone.stop()
    with _InProcess(pki, _policies(tmp_path, INJECT), kubeconfig, max_namespace_waits=1) as client:
        results: list[tuple[float, AdmissionResult]] = []

        def admit() -> None:
            started = time.monotonic()
            result = client.admit(POD, namespace="checkout")
            results.append((time.monotonic() - started, result))

        threads = [threading.Thread(target=admit) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert all(r.response["status"]["code"] == 500 and not r.allowed for _, r in results)
        seconds = sorted(s for s, _ in results)
        assert len(seconds) == 3 and seconds[1] < 1.5 and seconds[2] >= 1.9   # one waited 2 s
