"""The servers under test: the webhook (`webhook serve`) and the no-op baseline, as
subprocesses on 127.0.0.1, optionally pinned to CPUs; the checks made on them before
measuring, and the memo counters read from the webhook's /metrics.

The benchmark ships with the server it measures, so it passes the flags this
revision's `serve` has (`--workers`, `--decision-memo`) without asking it first.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Pinning:
    """CPU lists (taskset's syntax, e.g. "0" or "0,1") for the servers and for the load
    generator; None leaves a process where the scheduler puts it."""
    server: str | None = None
    loadgen: str | None = None

    def wrap(self, argv: list[str], cpus: str | None) -> list[str]:
        # taskset execs the command: the child keeps the pid the benchmark reads /proc by
        return ["taskset", "-c", cpus, *argv] if cpus else argv

    def describe(self) -> str:
        if not (self.server or self.loadgen):
            return "no (the scheduler places every process)"
        return f"servers on CPUs {self.server or 'any'}, load generator on CPUs {self.loadgen or 'any'} (taskset)"


def webhook_command() -> list[str]:
    exe = BIN / "webhook"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "webhook"]


def make_certs(dest: Path) -> Path:
    """A CA and serving certificate for 127.0.0.1 runs; returns the directory."""
    subprocess.run([*webhook_command(), "certs", "generate", "--out", str(dest), "--service", "webhook",
                    "--namespace", "webhook-system"], check=True, capture_output=True, cwd=ROOT)
    return dest


def webhook_argv(port: int, certs: Path, policies: Path, *, workers: int = 1, memo: bool = True) -> list[str]:
    argv = [*webhook_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--cert-dir", str(certs),
            "--policies", str(policies), "--log-level", "warning", "--shutdown-delay", "0",
            "--workers", str(workers)]
    return argv if memo else [*argv, "--decision-memo", "0"]


def baseline_argv(port: int, certs: Path) -> list[str]:
    return [sys.executable, str(HERE / "baseline_server.py"), "--host", "127.0.0.1", "--port", str(port),
            "--cert-dir", str(certs)]


class Server:
    """A server subprocess on 127.0.0.1:port; its output goes to a log file."""

    def __init__(self, name: str, argv: list[str], port: int, ca: Path, logdir: Path) -> None:
        self.name, self.port, self.ca = name, port, ca
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(), timeout=timeout)

    def wait_ready(self, timeout: float = 30.0, poll: float = 0.005) -> float:
        """Seconds from spawn until GET /readyz answers 200 over TLS (certificate verified)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            conn = self.connection(timeout=2)
            try:
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return time.perf_counter() - self.spawned
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(poll)
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Fleet:
    """The servers of one run: started ready, stopped together at the end."""

    def __init__(self, certs: Path, logdir: Path, pinning: Pinning) -> None:
        self.certs, self.logdir, self.pinning = certs, logdir, pinning
        self.running: list[Server] = []

    def spawn(self, name: str, argv: list[str], port: int) -> Server:
        """Started, not yet waited for (start-to-ready times it)."""
        return Server(name, self.pinning.wrap(argv, self.pinning.server), port, self.certs / "ca.crt",
                      self.logdir)

    def start(self, name: str, argv: list[str], port: int) -> Server:
        server = self.spawn(name, argv, port)
        self.running.append(server)
        server.wait_ready()
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        self.running.remove(server)

    def stop_all(self) -> None:
        for server in list(self.running):
            self.stop(server)


@dataclass
class Answers:
    """What one server answered to each body of a preflight."""
    answers: int = 0
    patched: int = 0
    denied: int = 0


def preflight(server: Server, bodies: list[bytes], paths: tuple[str, ...]) -> Answers:
    """Send each body once to each path and check the answer is an AdmissionReview for it."""
    counts = Answers()
    conn = server.connection(timeout=30)
    try:
        for path in paths:
            for body in bodies:
                uid = json.loads(body)["request"]["uid"]
                conn.request("POST", path + "?timeout=10s", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{server.name} {path}: HTTP {resp.status}: {data[:300]!r}")
                answer = json.loads(data)
                response = answer.get("response") or {}
                if answer.get("kind") != "AdmissionReview" or response.get("uid") != uid \
                        or not isinstance(response.get("allowed"), bool):
                    raise RuntimeError(f"{server.name} {path}: not an answer to {uid}: {data[:300]!r}")
                counts.answers += 1
                counts.patched += "patch" in response
                counts.denied += not response["allowed"]
    finally:
        conn.close()
    return counts


_MEMO_SAMPLE = re.compile(r'^webhook_decision_memo_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
_RESULT_LABEL = re.compile(r'result="([^"]*)"')


def memo_counts(server: Server) -> dict[str, float]:
    """The webhook's decision memo counters by result (hit, miss, skip), summed over
    endpoints and workers, from GET /metrics."""
    conn = server.connection(timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for labels, value in _MEMO_SAMPLE.findall(text):
        result = _RESULT_LABEL.search(labels)
        if result:
            out[result.group(1)] = out.get(result.group(1), 0.0) + float(value)
    return out
