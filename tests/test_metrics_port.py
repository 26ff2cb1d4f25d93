"""--metrics-port: /metrics over plain HTTP on a port of its own, and not on the webhook port."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHIPPED_POLICIES
from tests.test_inject_shipped import pod


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def _mutate_count(text: str) -> float:
    return sum(float(v) for v in re.findall(
        r'^webhook_requests_total\{endpoint="mutate"[^}]*\} (\S+)$', text, re.M))


def _scraped_count(port: int, at_least: float, timeout: float = 10.0) -> float:
    """The mutate count on the metrics port once it reaches `at_least` (workers fold
    their counts into the shared files within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        count = _mutate_count(_get(port, "/metrics")[2])
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_metrics_move_to_their_own_plain_http_port(start_server) -> None:
    metrics_port = _free_port()
    server = start_server(args=["--metrics-port", str(metrics_port)])
    server.wait_for_log(lambda e: e.get("event") == "metrics_listening" and e.get("port") == metrics_port)
    assert server.client.admit(pod()).allowed  # the webhook port still admits
    status, content_type, text = _get(metrics_port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    assert "# TYPE webhook_requests_total counter" in text
    assert _mutate_count(text) == 1  # this worker's counts are folded before the answer
    # ... and the webhook port serves no metrics, so a NetworkPolicy can restrict them.
    moved = server.client.request("GET", "/metrics")
    assert moved.status == 404 and "--metrics-port" in moved.json()["error"]
    assert server.client.request("GET", "/healthz").status == 200
    # The metrics port serves nothing else, and only reads.
    status, _, body = _get(metrics_port, "/mutate")
    assert status == 404 and "only /metrics" in body
    assert _get(metrics_port, "/metrics", method="POST")[0] == 405
    # It stops with the server.
    assert server.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", metrics_port), timeout=2).close()


def test_without_the_flag_metrics_stay_on_the_webhook_port(server) -> None:
    answer = server.client.request("GET", "/metrics")
    assert answer.status == 200 and b"# TYPE webhook_requests_total counter" in answer.body


def test_every_worker_serves_the_summed_metrics_on_the_metrics_port(
        start_server, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics_port = _free_port()
    monkeypatch.setenv("WEBHOOK_METRICS_PORT", str(metrics_port))  # the environment sets it too
    server = start_server(args=["--workers", "2"])
    deadline = time.monotonic() + 20
    while sum(e.get("event") == "metrics_listening" for e in server.log_lines()) < 2:
        assert time.monotonic() < deadline, server.log_file.read_text()
        time.sleep(0.1)
    for _ in range(20):  # new connection each time: the kernel spreads them over both workers
        assert server.client.admit(pod()).allowed
    # Scraped over new connections, so from either worker: each answers the sum.
    assert _scraped_count(metrics_port, 20) == 20
    assert all(_mutate_count(_get(metrics_port, "/metrics")[2]) == 20 for _ in range(6))
    assert server.client.request("GET", "/metrics").status == 404


@pytest.mark.process
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_port_in_use_is_one_clear_start_error(workers: str, pki: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", "0",
             "--cert-dir", str(pki), "--policies", str(SHIPPED_POLICIES), "--workers", workers,
             "--metrics-port", str(port), "--log-format", "json"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, capture_output=True, text=True,
            timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = [l for l in proc.stderr.splitlines() if not l.startswith("{")]  # JSON lines: the log
    assert f"127.0.0.1:{port}" in line and "--metrics-port" in line and "in use" in line, line
