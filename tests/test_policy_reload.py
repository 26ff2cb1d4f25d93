"""Hot reload under a running server: edits take effect, bad edits never replace the good set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from tests.conftest import SHIPPED_POLICIES, copy_policies
from tests.test_inject_shipped import pod
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.serve import _watch_policies
from webhook.admission.server import STATE

EXTRA = """apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: extra}
spec:
  inject:
    labels: {reloaded: "%s"}
"""


def _label(server, value_key: str = "reloaded") -> str | None:
    result = server.client.admit(pod(name="x"))
    return result.patched(pod(name="x"))["metadata"].get("labels", {}).get(value_key)


def _wait(predicate, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_edit_break_fix_cycle(start_server, tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    server = start_server(policies=policies)
    revision = server.client.request("GET", "/readyz").json()["policyRevision"]

    (policies / "extra.yaml").write_text(EXTRA % "one")
    took = _wait(lambda: _label(server) == "one")
    assert took < 2.5  # an edit is in effect within about two seconds
    good = server.client.request("GET", "/readyz").json()
    assert good["policyRevision"] != revision and good["lastReloadError"] is None

    (policies / "extra.yaml").write_text(EXTRA.replace("labels", "labelz") % "two")
    _wait(lambda: server.client.request("GET", "/readyz").json()["lastReloadError"] is not None)
    ready = server.client.request("GET", "/readyz")
    assert ready.status == 200  # a bad edit must not take every replica out of service
    body = ready.json()
    assert body["policyRevision"] == good["policyRevision"]
    assert "extra.yaml:6: extra/spec.inject.labelz: unknown field" in body["lastReloadError"]
    assert _label(server) == "one"  # the last good set keeps serving
    metrics = server.client.request("GET", "/metrics").body.decode()
    assert 'webhook_policy_reload_total{result="error"} 1.0' in metrics
    assert "webhook_policy_last_reload_success_timestamp_seconds" in metrics

    (policies / "extra.yaml").write_text(EXTRA % "three")
    _wait(lambda: _label(server) == "three")
    assert server.client.request("GET", "/readyz").json()["lastReloadError"] is None


def _configmap_volume(root: Path, files: dict[str, str], version: str) -> None:
    """Lay out files like a mounted ConfigMap and swap `..data` atomically."""
    target = root / f"..{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    os.symlink(target.name, root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)


def test_configmap_symlink_swap_with_requests_in_flight(start_server, tmp_path: Path) -> None:
    files = {p.name: p.read_text() for p in SHIPPED_POLICIES.glob("*.yaml")}
    volume = tmp_path / "cm"
    volume.mkdir()
    _configmap_volume(volume, {**files, "extra.yaml": EXTRA % "v1"}, "v1")
    server = start_server(policies=volume)
    assert _label(server) == "v1"

    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                result = server.client.admit(pod(name="x"))
                if not result.allowed or result.patch is None:
                    failures.append(str(result.response))
            except Exception as exc:  # any failed request during a swap is a defect
                failures.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in ("v2", "v3", "v4"):
            _configmap_volume(volume, {**files, "extra.yaml": EXTRA % version}, version)
            _wait(lambda v=version: _label(server) == v)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    shutil.rmtree(volume / "..v1")


def test_an_emptied_directory_never_replaces_the_serving_set(start_server, tmp_path: Path) -> None:
    # A ConfigMap mounted empty (or unmounted) would otherwise turn off every injection
    # and validation without a word.
    policies = copy_policies(tmp_path / "policies")
    (policies / "extra.yaml").write_text(EXTRA % "kept")
    server = start_server(policies=policies)
    revision = server.client.request("GET", "/readyz").json()["policyRevision"]
    for path in policies.glob("*.y*ml"):
        path.unlink()
    _wait(lambda: server.client.request("GET", "/readyz").json()["lastReloadError"] is not None)
    body = server.client.request("GET", "/readyz").json()
    assert body["policyRevision"] == revision
    assert f"{policies}: no policies in .yaml or .yml files; an empty policy set is refused" \
        in body["lastReloadError"]
    assert _label(server) == "kept"


def test_a_directory_that_cannot_be_listed_is_a_reload_error(tmp_path: Path, monkeypatch) -> None:
    # Tests run as root here, where mode 000 does not stop a listing: raise what the
    # kernel would answer a server without the permission.
    policies = copy_policies(tmp_path / "policies")
    holder = PolicyHolder.load(policies)
    revision = holder.current.revision
    listing = Path.iterdir

    def refused(self: Path):
        if self == policies:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    assert holder.reload() is False
    assert holder.current.revision == revision
    assert holder.last_error == f"{policies}: cannot read the policy directory: Permission denied"


@pytest.mark.slow
def test_an_edit_made_while_the_server_starts_is_not_missed(tmp_path: Path) -> None:
    # The edit lands after the policies were read and before the watcher takes its
    # first look: a watcher that took that look as its baseline would never reload
    # (a worker restarted by the supervisor would serve the old set until the next edit).
    policies = copy_policies(tmp_path / "policies")
    holder = PolicyHolder.load(policies)
    served = holder.current.revision
    (policies / "extra.yaml").write_text(EXTRA % "late")
    app = web.Application()
    app[STATE] = SimpleNamespace(policies=holder, namespaces=None)

    async def start_and_wait() -> None:
        watcher = _watch_policies(app)
        await watcher.__anext__()
        try:
            for _ in range(40):
                if holder.current.revision != served:
                    return
                await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(StopAsyncIteration):
                await watcher.__anext__()

    asyncio.run(start_and_wait())
    assert holder.current.revision != served
    assert any(p.metadata.name == "extra" for p in holder.current.injection)


def test_a_policy_added_in_a_subdirectory_is_reported_not_silently_ignored(start_server, tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    server = start_server(policies=policies)
    revision = server.client.request("GET", "/readyz").json()["policyRevision"]
    (policies / "team-a").mkdir()
    (policies / "team-a" / "extra.yaml").write_text(EXTRA % "nested")
    _wait(lambda: server.client.request("GET", "/readyz").json()["lastReloadError"] is not None)
    body = server.client.request("GET", "/readyz").json()
    assert body["policyRevision"] == revision
    assert (f"{policies / 'team-a' / 'extra.yaml'}:2: kind InjectionPolicy in a subdirectory is not read"
            in body["lastReloadError"])
    assert _label(server) is None   # the last good set keeps serving
    (policies / "team-a" / "extra.yaml").rename(policies / "extra.yaml")
    _wait(lambda: _label(server) == "nested")
    assert server.client.request("GET", "/readyz").json()["lastReloadError"] is None
