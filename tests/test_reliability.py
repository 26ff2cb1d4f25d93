"""Reliability under load on loopback: reloads and certificate rotation without a failed
request, and SIGTERM without losing requests in flight.

The default run is short enough for CI; set WEBHOOK_SOAK_SECONDS for a long soak.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import yaml

from tests.conftest import copy_policies, make_pki
from webhook.pki.certs import generate

CORPUS = Path(__file__).parent / "data" / "corpus"
SOAK_SECONDS = float(os.environ.get("WEBHOOK_SOAK_SECONDS", "6"))
GOOD = """apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: churn}
spec:
  inject:
    labels: {churn: "%d"}
"""
BROKEN = "apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: churn}\nspec: {injectt: {}}\n"


def _corpus_pods() -> list[tuple[str, dict]]:
    pods = []
    for path in sorted(CORPUS.glob("*.yaml"))[:12]:
        text = path.read_text()
        namespace = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                          if line.startswith("# namespace:")), "default")
        pods.append((namespace, yaml.safe_load(text)))
    return pods


class Load:
    """Threads sending admission reviews as fast as they can; every failure is kept."""

    def __init__(self, server, threads: int = 4) -> None:
        self.server, self.pods = server, _corpus_pods()
        self.failures: list[str] = []
        self.count = 0
        self.accepting = threading.Event()
        self.accepting.set()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        i = index
        while self.accepting.is_set():
            namespace, pod = self.pods[i % len(self.pods)]
            endpoint = "/mutate" if i % 2 else "/validate"
            i += 1
            try:
                result = self.server.client.admit(pod, namespace=namespace, endpoint=endpoint)
                if result.response.get("status", {}).get("code") == 500:
                    raise AssertionError(f"internal error: {result.response}")
            except Exception as exc:  # every kind of failure counts
                with self._lock:
                    self.failures.append(f"{endpoint} {pod['metadata'].get('name')}: {exc!r}")
            with self._lock:
                self.count += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.accepting.clear()
        for thread in self.threads:
            thread.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def test_no_failed_request_while_policies_reload_and_certificates_rotate(start_server, tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    certs = make_pki(tmp_path / "certs")
    server = start_server(policies=policies, cert_dir=certs, args=["--workers", "2"])
    edits = 10
    with Load(server) as load:
        for edit in range(edits):
            time.sleep(SOAK_SECONDS / edits)
            (policies / "churn.yaml").write_text(BROKEN if edit % 3 == 2 else GOOD % edit)
            if edit in (3, 7):
                generate(certs, service="webhook", namespace="webhook-system", days=30)
        time.sleep(1.5)
    assert load.failures == [], load.failures[:5]
    assert load.count > 50
    reloads = [e for e in server.log_lines() if e.get("event") == "policy_reload"]
    assert {e["result"] for e in reloads} == {"success", "error"}
    assert [e for e in server.log_lines() if e.get("event") == "cert_reload" and e.get("result") == "success"]


def test_sigterm_under_load_loses_no_request_in_flight(start_server) -> None:
    server = start_server(args=["--workers", "2", "--shutdown-delay", "2"])
    with Load(server) as load:
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        # Endpoints controllers take the pod out of rotation during the shutdown delay;
        # clients stop starting new requests in that window, as the API server would.
        time.sleep(1.0)
        load.stop()
    assert server.proc.wait(timeout=40) == 0
    assert load.failures == [], load.failures[:5]
    assert load.count > 20


def test_certificate_directory_swapped_wholesale(start_server, tmp_path: Path) -> None:
    """A Secret volume replaced while requests flow (the `..data` swap is in test_server_lifecycle)."""
    certs = make_pki(tmp_path / "certs")
    server = start_server(cert_dir=certs)
    with Load(server, threads=2) as load:
        staged = shutil.copytree(certs, tmp_path / "staged")
        generate(staged, service="webhook", namespace="webhook-system", days=30)
        for name in ("tls.key", "tls.crt"):
            os.replace(staged / name, certs / name)
        time.sleep(2.5)
    assert load.failures == []
