"""Bounded work per request, through the real server over TLS with real AdmissionReview
JSON: hostile pods get a small, clear denial without the worker's memory growing, the
serve options set the bounds, and a heavy request is answered at its deadline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import AdmissionResult, make_review, verify_response
from tests.conftest import ROOT, ServerProcess


def _containers(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "image": "registry.example.com/app:1.0", **extra} for i in range(n)]


def _pod(containers: list[dict[str, Any]], *, labels: dict[str, str] | None = None,
         generate_name: str = "web-") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": generate_name, "labels": labels or {"app": "web"}},
            "spec": {"containers": containers}}


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _post(server: ServerProcess, review: dict[str, Any], *, endpoint: str, timeout: str = "10s") -> tuple[
        AdmissionResult, int, float]:
    """The verified answer, its size in bytes, and the seconds it took."""
    started = time.monotonic()
    raw = server.client.request("POST", f"{endpoint}?timeout={timeout}", json.dumps(review).encode(),
                                headers={"Content-Type": "application/json"}, timeout=60)
    elapsed = time.monotonic() - started
    return verify_response(review, raw, mutating=endpoint == "/mutate"), len(raw.body), elapsed


def test_the_hostile_label_gets_a_small_clear_denial_and_the_worker_stays_small(start_server) -> None:
    """A 0.11 MiB review: a 100,000-character app label, which the shipped identity policy
    copies into every container, and 600 containers."""
    server = start_server()
    pid = server.proc.pid  # --workers 1: the process is the worker
    server.client.admit(_pod(_containers(1)))  # warm: the first answer imports and allocates
    before = _status_kib(pid, "VmRSS")
    review = make_review(_pod(_containers(600), labels={"app": "a" * 100_000}))
    assert 100_000 < len(json.dumps(review)) < 0.15 * 2**20
    result, size, elapsed = _post(server, review, endpoint="/mutate")
    assert not result.allowed and result.patch is None
    status = result.response["status"]
    assert status["code"] == 403
    assert "policy identity" in status["message"] and "metadata.labels['app']" in status["message"]
    assert "100000 characters" in status["message"]
    assert size < 4096
    assert elapsed < 5
    assert _status_kib(pid, "VmHWM") - before < 40 * 1024, "the worker's peak grew by tens of MiB"
    assert server.client.admit(_pod(_containers(1))).patch  # and the next pod is injected as ever


def test_too_many_containers_is_denied_at_mutation_and_at_validation(start_server) -> None:
    server = start_server()
    pod = _pod(_containers(1001))
    for endpoint in ("/mutate", "/validate"):
        result, size, _ = _post(server, make_review(pod), endpoint=endpoint)
        assert not result.allowed and result.response["status"]["code"] == 403
        assert "has 1001 containers" in result.response["status"]["message"]
        assert size < 2048
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": _containers(40_000)}}}}
    result, _, elapsed = _post(server, make_review(deployment, kind="Deployment"), endpoint="/validate")
    assert not result.allowed
    assert "the pod template has 40000 containers" in result.response["status"]["message"]
    assert elapsed < 5


def test_the_bounds_are_serve_options(start_server) -> None:
    server = start_server(args=["--max-containers", "3", "--max-copied-value", "16"])
    assert server.client.admit(_pod(_containers(3), labels={"app": "web"})).patch
    denied = server.client.admit(_pod(_containers(4)))
    assert not denied.allowed and "at most 3" in denied.response["status"]["message"]
    # Without an app label the shipped policies copy the workload's name: here the pod's
    # generateName, longer than the 16 characters allowed.
    long_name = server.client.admit(_pod(_containers(1), labels={"tier": "web"}, generate_name="w" * 20 + "-"))
    assert not long_name.allowed
    message = long_name.response["status"]["message"]
    assert "workload.name" in message and "at most 16" in message


@pytest.mark.process
def test_a_bad_bound_in_the_environment_stops_the_start(pki: Path) -> None:
    env = {**os.environ, "WEBHOOK_MAX_CONTAINERS": "0", "WEBHOOK_CERT_DIR": str(pki), "WEBHOOK_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "webhook", "serve"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=30)
    assert result.returncode == 2
    assert "WEBHOOK_MAX_CONTAINERS" in result.stderr and "not a whole number of at least 1" in result.stderr


def test_a_heavy_request_is_answered_at_its_deadline_and_a_normal_one_soon_after(start_server) -> None:
    """Above the container bound (raised here), a validation takes seconds: it is answered by
    the failure rule at its deadline, and a normal request sent meanwhile is not held for
    the whole of it."""
    server = start_server(args=["--max-containers", "100000"])
    pod = _pod(_containers(40_000, securityContext={"privileged": True}))
    decided, _, whole = _post(server, make_review(pod), endpoint="/validate", timeout="30s")
    assert not decided.allowed and decided.response["status"]["code"] == 403  # evaluated in full
    heavy = make_review(pod)
    answers: dict[str, Any] = {}

    def send_heavy() -> None:
        answers["heavy"] = _post(server, heavy, endpoint="/validate", timeout="1s")

    thread = threading.Thread(target=send_heavy)
    thread.start()
    time.sleep(0.3)  # the heavy one is being decided
    normal, _, normal_elapsed = _post(server, make_review(_pod(_containers(1))), endpoint="/validate",
                                      timeout="5s")
    thread.join(60)
    result, _, elapsed = answers["heavy"]
    assert not result.allowed  # failure policy Fail
    status = result.response["status"]
    assert status["code"] == 500 and "deadline passed" in status["message"]
    assert "Traceback" not in status["message"]
    # "deadline passed" is the engine stopping at a checkpoint: an evaluation that ran to its
    # end would have been answered with its 403. The times only bound it loosely, since one
    # rule over 40,000 containers can take a second on a loaded machine.
    assert elapsed < whole + 1.0, f"answered after {elapsed:.1f}s; the whole evaluation takes {whole:.1f}s"
    assert normal.allowed and normal_elapsed < whole + 1.0
    assert not any("Traceback" in json.dumps(line) for line in server.log_lines())
    assert any("deadline passed while deciding" in json.dumps(line) for line in server.log_lines())
