"""The load generator (wrk with bodies.lua, or pyload.py) and interleaved measurement.

A run drives one server and path at a fixed concurrency for a duration (or until a
number of responses) and reports throughput, latency, failures and the CPU that the
server and the load generator used meanwhile. `Measurer.measure` runs several such
jobs a number of times each, interleaved, so that a noisy neighbour on a shared
machine hits all of them alike.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import cpu_seconds_by_pid, process_tree
from bench.servers import HERE, ROOT, Pinning, Server, memo_counts

CONCURRENCY = 32


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    loadgen_cpu: float    # load generator CPU, % of one core
    server_cpu: float     # server CPU (all its processes), % of one core
    server_cpu_split: list[float] = field(default_factory=list)   # per server process, % of one core


@dataclass
class Series:
    label: str
    runs: list[Run] = field(default_factory=list)
    memo: dict[str, float] = field(default_factory=dict)   # memo results over the runs (webhooks only)

    def _median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs) if self.runs else float("nan")

    @property
    def rps(self) -> float:
        return self._median("rps")

    @property
    def p50_ms(self) -> float:
        return self._median("p50_ms")

    @property
    def p99_ms(self) -> float:
        return self._median("p99_ms")

    @property
    def loadgen_cpu(self) -> float:
        return self._median("loadgen_cpu")

    @property
    def server_cpu(self) -> float:
        return self._median("server_cpu")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def memo_hit_share(self) -> float:
        """Hits among the memo's decisions (hit, miss, skip) in the measured runs; NaN for
        a server without the memo."""
        total = sum(self.memo.values())
        return self.memo.get("hit", 0.0) / total if total else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "errors": self.errors, "loadgen_cpu_pct": self.loadgen_cpu,
                "server_cpu_pct": self.server_cpu, "memo": self.memo, "runs": [r.__dict__ for r in self.runs]}


class LoadGenerator:
    def __init__(self, kind: str, threads: int, processes: int, pinning: Pinning = Pinning()) -> None:
        self.kind, self.threads, self.processes, self.pinning = kind, threads, processes, pinning
        self.wrk = shutil.which("wrk")

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run([str(self.wrk), "-v"], capture_output=True, text=True).stdout.split("\n")[0]
            return f"wrk ({version.split(' Copyright')[0].strip()}), {self.threads} thread(s), bench/bodies.lua"
        why = "wrk not installed" if not self.wrk else "--loadgen python"
        return (f"bench/pyload.py (Python, {self.processes} processes; {why}): heavier than wrk, it "
                f"competes with the server for CPU, so absolute figures are lower")

    def _argv(self, url: str, bodies: Path, duration: float, stop_after: int, paths: tuple[str, ...]) -> list[str]:
        if self.kind == "wrk":
            per_thread = -(-stop_after // self.threads) if stop_after else 0
            seconds = max(1, math.ceil(duration))   # wrk takes whole seconds
            argv = [str(self.wrk), f"-t{self.threads}", f"-c{CONCURRENCY}", f"-d{seconds}s", "--timeout", "10s",
                    "-s", str(HERE / "bodies.lua"), url, "--", str(bodies), str(per_thread), ",".join(paths)]
        else:
            argv = [sys.executable, str(HERE / "pyload.py"), "--url", url, "--bodies", str(bodies),
                    "--connections", str(CONCURRENCY), "--duration", f"{duration:g}",
                    "--processes", str(self.processes), "--stop-after", str(stop_after),
                    "--paths", ",".join(paths)]
        return self.pinning.wrap(argv, self.pinning.loadgen)

    def run(self, url: str, bodies: Path, duration: float, *, server_pid: int,
            stop_after: int = 0, paths: tuple[str, ...] = ()) -> Run:
        argv = self._argv(url, bodies, duration, stop_after, paths)
        pids = process_tree(server_pid)
        server_before = cpu_seconds_by_pid(pids)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        if self.kind == "wrk" and stop_after:
            done = self._run_wrk_until_stopped(argv, duration)
        else:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, cwd=ROOT)
        elapsed = time.perf_counter() - started
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_after = cpu_seconds_by_pid(pids)
        server_used = {pid: server_after.get(pid, 0.0) - before for pid, before in server_before.items()}
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        r = json.loads(line.split(" ", 1)[1])
        seconds = r["duration_us"] / 1e6
        loadgen_used = ((children_after.ru_utime + children_after.ru_stime)
                        - (children_before.ru_utime + children_before.ru_stime))
        errors = sum(r[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_status",
                                    "errors_timeout"))
        return Run(rps=r["requests"] / seconds, p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000,
                   requests=r["requests"], errors=errors,
                   loadgen_cpu=100 * loadgen_used / elapsed,
                   server_cpu=100 * sum(server_used.values()) / seconds,
                   server_cpu_split=sorted((100 * u / seconds for u in server_used.values()), reverse=True))

    def _run_wrk_until_stopped(self, argv: list[str], duration: float) -> subprocess.CompletedProcess[str]:
        """wrk keeps running until -d even after every thread has stopped: interrupt it
        (SIGINT, on which wrk prints its report) once each thread reports its quota done."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        lines, stopped = [], 0
        assert proc.stdout is not None
        timer = threading.Timer(duration + 120, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("BENCH_THREAD_STOPPED"):
                    stopped += 1
                    if stopped == self.threads:
                        proc.send_signal(signal.SIGINT)
            proc.wait()
        finally:
            timer.cancel()
        return subprocess.CompletedProcess(argv, proc.returncode, "".join(lines), "")


@dataclass
class Job:
    """One figure: a server, a path and the bodies sent to it. `webhook`: the server
    has the decision memo's counters, read around each run."""
    label: str
    server: Server
    path: str
    bodies: Path
    webhook: bool = False


class Measurer:
    def __init__(self, load: LoadGenerator, warmup: float, log: Callable[[str], None]) -> None:
        self.load, self.warmup, self.log = load, warmup, log
        self._warmed: set[tuple[int, str]] = set()

    def measure(self, jobs: list[Job], *, repeats: int, duration: float) -> dict[str, Series]:
        """Each job `repeats` times, interleaved (A B C A B C ...); a short warm-up first
        for each server and path not yet warmed."""
        out = {j.label: Series(j.label) for j in jobs}
        for j in jobs:
            key = (j.server.pid, j.path.split("?")[0])
            if self.warmup > 0 and key not in self._warmed:   # a server warmed on a path stays warm
                self._warmed.add(key)
                self.load.run(j.server.url(j.path), j.bodies, self.warmup, server_pid=j.server.pid)
        for rep in range(repeats):
            for j in jobs:
                before = memo_counts(j.server) if j.webhook else {}
                run = self.load.run(j.server.url(j.path), j.bodies, duration, server_pid=j.server.pid)
                series = out[j.label]
                series.runs.append(run)
                if j.webhook:
                    for result, count in memo_counts(j.server).items():
                        series.memo[result] = series.memo.get(result, 0.0) + count - before.get(result, 0.0)
                self.log(f"  {j.label:<34} run {rep + 1}/{repeats}: {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                         f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}  server CPU {run.server_cpu:3.0f}%  "
                         f"load generator CPU {run.loadgen_cpu:3.0f}%")
        return out
