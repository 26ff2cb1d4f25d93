from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.fuzzing  # noqa: F401  (loads the Hypothesis profile before any test module)
from tests.apiserver import ApiServerClient
from webhook.pki.certs import generate

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_POLICIES = ROOT / "policies"

# Fixtures that start a process: a test using one is marked `process` at collection.
PROCESS_FIXTURES = frozenset({"server", "start_server", "evanphx", "quick_run"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


# --- every test that starts a process says so ------------------------------------------------
# `make test-fast` leaves out the tests marked `process`; one that starts a process unmarked
# would slowly make the fast subset slow. So starting one from a test (or a fixture it set
# up) that is not marked fails at once, naming the marker.

_running: list[pytest.Item] = []
_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
    item = _running[-1] if _running else None
    if item is not None and item.get_closest_marker("process") is None:
        command = args if isinstance(args, (str, bytes)) else " ".join(map(str, args))
        pytest.fail(f"{item.nodeid} starts a process ({command[:120]}) but is not marked "
                    "`process`: add @pytest.mark.process (or a module's pytestmark), or use a "
                    f"fixture of {sorted(PROCESS_FIXTURES)}", pytrace=False)
    _popen_init(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _guarded_popen_init  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


class ServerProcess:
    """`webhook serve` in a subprocess on a free port, logging JSON lines to a file."""

    def __init__(self, *, cert_dir: Path, policies: Path, log_file: Path, args: list[str]) -> None:
        self.cert_dir, self.policies, self.log_file = cert_dir, policies, log_file
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = log_file.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", "0",
             "--cert-dir", str(cert_dir), "--policies", str(policies), "--log-format", "json",
             "--shutdown-delay", "0.5", *(args if "--workers" in args else ["--workers", "1", *args])],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        # Below info the "listening" line is not logged: such a server is given its port.
        self.port = self._wait_listening() if "--port" not in args else self._wait_connectable(
            int(args[args.index("--port") + 1]))
        self.client = ApiServerClient(self.port, cert_dir / "ca.crt")

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def _wait_listening(self) -> int:
        return self._wait_for_port(lambda: next(
            (int(e["port"]) for e in self.log_lines() if e.get("event") == "listening"), None), "start")

    def _wait_connectable(self, port: int) -> int:
        def connectable() -> int | None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return None
            return port
        return self._wait_for_port(connectable, f"listen on {port}")

    def _wait_for_port(self, port_if_ready: Callable[[], int | None], what: str, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = port_if_ready()
            if port is not None:
                return port
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not {what}:\n{self.log_file.read_text()}")

    def wait_for_log(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.log_lines():
                if predicate(entry):
                    return entry
            time.sleep(0.05)
        raise AssertionError(f"log line not seen within {timeout}s:\n{self.log_file.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def make_pki(directory: Path) -> Path:
    generate(directory, service="webhook", namespace="webhook-system", days=30)
    return directory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server(tmp_path: Path, pki: Path) -> Iterator:
    started: list[ServerProcess] = []

    def start(*, cert_dir: Path | None = None, policies: Path = SHIPPED_POLICIES,
              args: list[str] | None = None) -> ServerProcess:
        server = ServerProcess(cert_dir=cert_dir or pki, policies=policies,
                               log_file=tmp_path / f"server{len(started)}.log", args=args or [])
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[ServerProcess]:
    """One shared server on the shipped policies, for tests that do not change its state."""
    log_dir = tmp_path_factory.mktemp("server")
    proc = ServerProcess(cert_dir=pki, policies=SHIPPED_POLICIES, log_file=log_dir / "server.log", args=[])
    yield proc
    proc.stop()


def copy_policies(target: Path, source: Path = SHIPPED_POLICIES) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
