"""Replay the hostile requests that the per-request bounds answer, against a worker.

    .venv/bin/python bench/bounds.py

Each case runs against a fresh `webhook serve --workers 1` (shipped policies) over TLS,
as the API server would send it, and prints the review's size, the answer (outcome, its
size, seconds) and the worker's RSS before the request and its peak (VmHWM) after.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.apiserver import make_review, verify_response  # noqa: E402
from tests.conftest import SHIPPED_POLICIES, ServerProcess, make_pki  # noqa: E402


def _containers(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "image": "registry.example.com/app:1.0", **extra} for i in range(n)]


def _pod(containers: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": labels or {"app": "web"}},
            "spec": {"containers": containers}}


def _deployment(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}}


_PADDED = {"imagePullPolicy": "IfNotPresent", "env": [{"name": "MODE", "value": "production-blue-a"}]}
CASES = [  # (name, endpoint, review)
    ("100,000-char app label, 600 containers", "/mutate",
     lambda: make_review(_pod(_containers(600), {"app": "a" * 100_000}))),
    ("44,000 containers", "/mutate", lambda: make_review(_pod(_containers(44_000, **_PADDED)))),
    ("Deployment, 40,000 containers", "/validate",
     lambda: make_review(_deployment(_containers(40_000, **_PADDED)), kind="Deployment")),
    ("200,000 containers", "/validate",
     lambda: make_review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "spec": {"containers": [{"name": f"{i}", "image": "x"} for i in range(200_000)]}})),
    ("1,000 containers (the bound)", "/mutate",
     lambda: make_review(_pod(_containers(1000, **_PADDED)))),
]


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp) / "pki")
        for name, endpoint, build in CASES:
            server = ServerProcess(cert_dir=pki, policies=SHIPPED_POLICIES, log_file=Path(tmp) / "server.log",
                                   args=[])
            try:
                server.client.admit(_pod(_containers(1)))  # warm
                review = build()
                body = json.dumps(review).encode()
                before = _kib(server.proc.pid, "VmRSS")
                started = time.monotonic()
                raw = server.client.request("POST", f"{endpoint}?timeout=10s", body,
                                            headers={"Content-Type": "application/json"}, timeout=60)
                elapsed = time.monotonic() - started
                result = verify_response(review, raw, mutating=endpoint == "/mutate")
                peak = _kib(server.proc.pid, "VmHWM")
                status = result.response.get("status", {})
                outcome = "patched" if result.patch else ("allowed" if result.allowed else f"denied {status.get('code')}")
                print(f"{name} ({endpoint}, {len(body) / 2**20:.2f} MiB): {outcome}, answer {len(raw.body):,} B "
                      f"in {elapsed:.2f} s; worker RSS {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB"
                      f"{'; ' + status['message'][:120] if status.get('message') else ''}")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
