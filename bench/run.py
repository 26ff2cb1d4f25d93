"""Benchmark the webhook against a no-op aiohttp TLS server, in one run on one machine.

    .venv/bin/python bench/run.py                 # what `make bench` runs; about 4.5 minutes
    .venv/bin/python bench/run.py --soak 200000   # with the issue's RSS growth check (`make bench
                                                  # SOAK=200000`); about 6.5 minutes

See bench/README.md for what is measured and how. Everything the run needs is made
in a temporary directory (certificates, request bodies, policy directories) and
removed at the end; the servers and the load generator only use 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (bench/corpus.py)

BIN = Path(sys.executable).parent
CONCURRENCY = 32
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Issue 7's targets (ratios in one run, concurrency 32, shipped policies).
TARGET_THROUGHPUT = 0.75      # webhook / baseline, /mutate and /validate
TARGET_P99 = 1.5              # webhook p99 / baseline p99
TARGET_100_POLICIES = 0.5     # throughput with 100 policies / baseline
TARGET_50_CONTAINERS = 0.3    # throughput on a 50-container pod / baseline on the same pod
TARGET_CPU_MS_200K = 2.0      # CPU per review of a 200 KiB pod
TARGET_RSS_MIB = 64.0         # peak RSS per worker
TARGET_RSS_RATIO = 1.3        # webhook peak RSS / baseline peak RSS
TARGET_RSS_GROWTH = 5.0       # % growth over the soak (the issue asks over 200,000 requests)
TARGET_READY_S = 1.5          # spawn to GET /readyz 200


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a multi-worker server's supervisor and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds_by_pid(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime
    return out


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds_by_pid(pids).values())


@dataclass
class Memory:
    peak_kib: int            # VmHWM, summed over the process tree
    rss_kib: int             # VmRSS, summed
    per_process: list[tuple[int, int, int, str]]   # (pid, VmHWM, VmRSS, role)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def max_process_peak_mib(self) -> float:
        return max((p[1] for p in self.per_process), default=0) / 1024


def _role(pid: int, root: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "forkserver" in cmd:
        return "forkserver"
    return "main" if pid == root else "child"


def memory(pid: int) -> Memory:
    per = [(p, _status_kib(p, "VmHWM"), _status_kib(p, "VmRSS"), _role(p, pid)) for p in process_tree(pid)]
    per = [p for p in per if p[1] or p[2]]
    return Memory(sum(p[1] for p in per), sum(p[2] for p in per), per)


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

    def wait_ready(self, timeout: float = 30.0, poll: float = 0.005) -> float:
        """Seconds from spawn until GET /readyz answers 200 over TLS (certificate verified)."""
        context = self.context()
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=2)
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


# --- load ---------------------------------------------------------------------------------------

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

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "errors": self.errors, "loadgen_cpu_pct": self.loadgen_cpu,
                "server_cpu_pct": self.server_cpu, "runs": [r.__dict__ for r in self.runs]}


class LoadGenerator:
    def __init__(self, kind: str, threads: int, processes: int) -> None:
        self.kind, self.threads, self.processes = kind, threads, processes
        self.wrk = shutil.which("wrk")

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run([self.wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
            return f"wrk ({version.split(' Copyright')[0].strip()}), {self.threads} thread(s), bench/bodies.lua"
        why = "wrk not installed" if not self.wrk else "--loadgen python"
        return (f"bench/pyload.py (Python, {self.processes} processes; {why}): heavier than wrk, it "
                f"competes with the server for CPU, so absolute figures are lower")

    def run(self, url: str, bodies: Path, duration: int, *, server_pid: int,
            stop_after: int = 0, paths: tuple[str, ...] = ()) -> Run:
        duration = max(1, int(duration))   # wrk takes whole seconds
        if self.kind == "wrk":
            per_thread = -(-stop_after // self.threads) if stop_after else 0
            argv = [self.wrk, f"-t{self.threads}", f"-c{CONCURRENCY}", f"-d{duration:g}s", "--timeout", "10s",
                    "-s", str(HERE / "bodies.lua"), url, "--", str(bodies), str(per_thread), ",".join(paths)]
        else:
            argv = [sys.executable, str(HERE / "pyload.py"), "--url", url, "--bodies", str(bodies),
                    "--connections", str(CONCURRENCY), "--duration", f"{duration:g}",
                    "--processes", str(self.processes), "--stop-after", str(stop_after),
                    "--paths", ",".join(paths)]
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


    def _run_wrk_until_stopped(self, argv: list[str], duration: int) -> subprocess.CompletedProcess:
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
class Target:
    label: str
    server: Server
    path: str
    bodies: Path


_warmed: set[tuple[int, str]] = set()


def measure(load: LoadGenerator, targets: list[Target], *, repeats: int, duration: int,
            warmup: int) -> dict[str, Series]:
    """Each target `repeats` times, interleaved (A B C A B C ...) so that a noisy
    neighbour on the machine hits all of them alike; a short warm-up first for each
    server and path not yet warmed."""
    out = {t.label: Series(t.label) for t in targets}
    for t in targets:
        key = (t.server.pid, t.path.split("?")[0])
        if warmup > 0 and key not in _warmed:   # a server warmed on a path stays warm
            _warmed.add(key)
            load.run(t.server.url(t.path), t.bodies, warmup, server_pid=t.server.pid)
    for rep in range(repeats):
        for t in targets:
            run = load.run(t.server.url(t.path), t.bodies, duration, server_pid=t.server.pid)
            out[t.label].runs.append(run)
            log(f"  {t.label:<34} run {rep + 1}/{repeats}: {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}  server CPU {run.server_cpu:3.0f}%  "
                f"load generator CPU {run.loadgen_cpu:3.0f}%")
    return out


# --- correctness before measuring --------------------------------------------------------------

def preflight(server: Server, bodies: list[bytes], paths: tuple[str, ...]) -> dict[str, int]:
    """Send each body once to each path and check the answer is an AdmissionReview for it."""
    counts = {"answers": 0, "patched": 0, "denied": 0}
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context(), timeout=30)
    try:
        for path in paths:
            for body in bodies:
                uid = json.loads(body)["request"]["uid"]
                conn.request("POST", path + "?timeout=10s", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{server.name} {path}: HTTP {resp.status}: {data[:300]!r}")
                answer = json.loads(data)
                response = answer.get("response") or {}
                if answer.get("kind") != "AdmissionReview" or response.get("uid") != uid \
                        or not isinstance(response.get("allowed"), bool):
                    raise RuntimeError(f"{server.name} {path}: not an answer to {uid}: {data[:300]!r}")
                counts["answers"] += 1
                counts["patched"] += "patch" in response
                counts["denied"] += not response["allowed"]
    finally:
        conn.close()
    return counts


# --- in-process CPU -----------------------------------------------------------------------------

def cpu_per_call(fn: Callable[[], Any], *, rounds: int = 5, round_seconds: float = 0.15) -> float:
    """Median over `rounds` of CPU seconds per call (time.process_time), each round
    running `fn` until it has used `round_seconds` of CPU (at least 10 calls)."""
    fn()
    results = []
    for _ in range(rounds):
        calls, start = 0, time.process_time()
        while True:
            fn()
            calls += 1
            used = time.process_time() - start
            if calls >= 10 and used >= round_seconds:
                break
        results.append(used / calls)
    return statistics.median(results)


def in_process_cpu() -> dict[str, float]:
    from webhook.engine import mutate, validate
    from webhook.policy.loader import load_policy_dir
    import orjson

    from webhook.review import envelope_json, parse_review, response_fields

    policies = load_policy_dir(ROOT / "policies")
    out: dict[str, float] = {}
    for pod_label, raw in (("200KiB", corpus.body(corpus.large_pod())),
                           ("1c", corpus.body(corpus.synthetic_pod(1)))):
        request = parse_review(raw).request
        for name, engine, mutating in (("mutate", mutate, True), ("validate", validate, False)):
            out[f"{name}/{pod_label}/engine"] = cpu_per_call(lambda: engine(request, policies))

            def with_parse() -> None:
                engine(parse_review(raw).request, policies)

            def full() -> None:  # the server's answer on a miss: fields serialised, envelope joined
                review = parse_review(raw)
                decision = engine(review.request, policies)
                envelope_json(api_version=review.api_version, uid=review.request.uid,
                              fields_json=orjson.dumps(response_fields(decision, mutating=mutating)))

            out[f"{name}/{pod_label}/parse+engine"] = cpu_per_call(with_parse)
            out[f"{name}/{pod_label}/parse+engine+response"] = cpu_per_call(full)
        out[f"bytes/{pod_label}"] = len(raw)
    return out


# --- machine ------------------------------------------------------------------------------------

def machine(load: LoadGenerator, workers_flag: bool) -> dict[str, str]:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _status_kib_file("/proc/meminfo", "MemTotal")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=ROOT)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu model": model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load generator": load.describe(),
        "concurrency": str(CONCURRENCY),
        "webhook revision": (rev.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty.stdout.strip() else ""),
        "webhook --workers flag": "yes" if workers_flag else "no",
    }


def _status_kib_file(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def webhook_command() -> list[str]:
    exe = BIN / "webhook"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "webhook"]


def has_workers_flag() -> bool:
    return "--workers" in _serve_help()


def has_memo_flag() -> bool:
    return "--decision-memo" in _serve_help()


@functools.lru_cache(maxsize=1)
def _serve_help() -> str:
    """`webhook serve --help`, run once: which flags this revision's server has."""
    done = subprocess.run([*webhook_command(), "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout


# The decision memo answers a repeated pod from memory (a rollout's replicas). Every
# webhook figure is also measured with it off, so that every request is evaluated.
MEMO_OFF = ["--decision-memo", "0"]
# series name -> how tables call it; and the suffix of its verdicts
VARIANTS = {"webhook": "webhook", "webhook-off": "webhook, memo off"}
SUFFIX = {"webhook": "", "webhook-off": " (memo off)"}


# --- report -------------------------------------------------------------------------------------

def verdict(value: float, limit: float, *, at_least: bool) -> str:
    if value != value:  # NaN
        return "n/a"
    return "PASS" if (value >= limit if at_least else value <= limit) else "MISS"


class Table:
    def __init__(self, *headers: str) -> None:
        self.headers, self.rows = headers, []

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else f"{c}" for c in cells])

    def render(self) -> str:
        widths = [max(len(str(x)) for x in col) for col in zip(self.headers, *self.rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(self.headers), line(["-" * w for w in widths]), *map(line, self.rows)])


def f0(x: float) -> str:
    return f"{x:,.0f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


# --- the run ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description="webhook benchmark against a no-op aiohttp TLS baseline "
                                                 "(see bench/README.md)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per main measurement (5)")
    parser.add_argument("--scale-duration", type=int, default=3,
                        help="seconds per measurement of the policy and container scaling (3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; medians are quoted (3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per target, 0 for none (1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="pass --workers N to `webhook serve` for the main runs (default: 1 worker; "
                             "passed as --workers 1 when the server has the flag)")
    parser.add_argument("--multi-workers", type=int, default=2,
                        help="also measure the webhook with this many workers when the flag exists "
                             "(default 2; 0 to skip)")
    parser.add_argument("--soak", type=int, default=int(os.environ.get("SOAK") or 20000),
                        help="requests for the RSS growth check (default 20000, or $SOAK; the issue's "
                             "check is 200000)")
    parser.add_argument("--ready-runs", type=int, default=5, help="start-to-ready samples (5)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, bodies)")
    args = parser.parse_args()

    began = time.perf_counter()
    kind = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk not found (apt-get install wrk)")
    load = LoadGenerator(kind, args.wrk_threads, processes=2)
    workers_flag = has_workers_flag()
    memo_flag = has_memo_flag()
    main_workers = args.workers or 1
    if args.workers and not workers_flag and args.workers != 1:
        parser.error("this webhook's `serve` has no --workers flag")
    worker_args = ["--workers", str(main_workers)] if workers_flag else []

    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    servers: list[Server] = []
    results: dict[str, Any] = {}
    try:
        info = machine(load, workers_flag)
        results["machine"] = info
        print("== Machine ==")
        for k, v in info.items():
            print(f"{k:<24} {v}")
        print(flush=True)

        # --- inputs
        certs = tmp / "certs"
        subprocess.run([*webhook_command(), "certs", "generate", "--out", str(certs), "--service", "webhook",
                        "--namespace", "webhook-system"], check=True, capture_output=True, cwd=ROOT)
        ca = certs / "ca.crt"
        mix = corpus.mixed_bodies()
        mix_file = corpus.write_bodies(tmp / "mix.txt", [b for _, b in mix])
        pods = {n: corpus.body(corpus.synthetic_pod(n)) for n in (1, 10, 50)}
        pod_files = {n: corpus.write_bodies(tmp / f"pod-{n}c.txt", [b]) for n, b in pods.items()}
        sizes = sorted(len(b) for _, b in mix)
        print("== Corpus ==")
        print(f"{len(mix)} AdmissionReviews: {len(mix) - 4} pods of tests/data/corpus, synthetic pods of 1, 10 and "
              f"50 containers ({', '.join(f'{len(pods[n]):,} B' for n in (1, 10, 50))}) and a "
              f"{len(mix[-1][1]) / 1024:.0f} KiB pod; median body {statistics.median(sizes):,.0f} B, "
              f"mean {statistics.fmean(sizes):,.0f} B. Each connection cycles through them in order.\n",
              flush=True)

        # --- in-process CPU (before any server runs, so the machine is quiet)
        log("in-process CPU per review")
        cpu = in_process_cpu()
        results["cpu_per_review_ms"] = {k: v * 1000 if not k.startswith("bytes/") else v for k, v in cpu.items()}

        # --- start to ready
        log(f"start to ready, {args.ready_runs} times each")
        ready: dict[str, list[float]] = {"webhook": [], "baseline": []}
        ready_rss: dict[str, list[float]] = {"webhook": [], "baseline": []}
        for i in range(args.ready_runs):
            for name in ("webhook", "baseline"):
                port = free_port()
                argv = (_webhook_argv(port, certs, ROOT / "policies", worker_args) if name == "webhook"
                        else _baseline_argv(port, certs))
                s = Server(f"{name}-ready-{i}", argv, port, ca, tmp)
                try:
                    ready[name].append(s.wait_ready())
                    ready_rss[name].append(memory(s.pid).rss_mib)
                finally:
                    s.stop()
        results["ready_s"] = {k: {"median": statistics.median(v), "samples": v,
                                  "rss_at_ready_mib": statistics.median(ready_rss[k])} for k, v in ready.items()}

        # --- the servers for the main comparison
        def start(name: str, argv: list[str], port: int) -> Server:
            s = Server(name, argv, port, ca, tmp)
            servers.append(s)
            s.wait_ready()
            return s

        p = free_port()
        baseline = start("baseline", _baseline_argv(p, certs), p)
        p = free_port()
        webhook = start("webhook", _webhook_argv(p, certs, ROOT / "policies", worker_args), p)
        variants = {"webhook": webhook}
        if memo_flag:
            p = free_port()
            variants["webhook-off"] = start("webhook-memo-off", _webhook_argv(
                p, certs, ROOT / "policies", worker_args + MEMO_OFF), p)
        all_bodies = [b for _, b in mix]
        checks = {s.name: preflight(s, all_bodies, ("/mutate", "/validate"))
                  for s in (baseline, *variants.values())}
        log(f"preflight: every body answered on both paths by both servers; webhook: "
            f"{checks['webhook']['patched']} patched, {checks['webhook']['denied']} denied "
            f"of {checks['webhook']['answers']}")
        results["preflight"] = checks

        log(f"main comparison: corpus mix, {args.repeats} x {args.duration:g}s per figure")
        main_series = measure(load, [
            target
            for path in ("/mutate", "/validate")
            for target in (Target(f"baseline {path}", baseline, f"{path}?timeout=10s", mix_file),
                           *[Target(f"{v} {path}", server, f"{path}?timeout=10s", mix_file)
                             for v, server in variants.items()])
        ], repeats=args.repeats, duration=args.duration, warmup=args.warmup)
        mem_main = {name: memory(server.pid) for name, server in (("baseline", baseline), *variants.items())}

        log(f"pod size: 1, 10, 50 containers, {args.repeats} x {args.scale_duration:g}s per figure")
        container_targets = []
        for n in (1, 10, 50):
            container_targets.append(Target(f"baseline {n}c", baseline, "/mutate?timeout=10s", pod_files[n]))
            for v, server in variants.items():
                container_targets += [
                    Target(f"{v} /mutate {n}c", server, "/mutate?timeout=10s", pod_files[n]),
                    Target(f"{v} /validate {n}c", server, "/validate?timeout=10s", pod_files[n]),
                ]
        container_series = measure(load, container_targets, repeats=args.repeats,
                                   duration=args.scale_duration, warmup=args.warmup)

        log(f"policy count: 1, 10, 100 InjectionPolicies, 1-container pod, {args.repeats} x "
            f"{args.scale_duration:g}s per figure")
        policy_servers: dict[tuple[str, int], Server] = {}
        for n in (1, 10, 100):
            d = corpus.scaling_policy_dir(n, tmp / f"policies-{n}")
            for v in variants:
                p = free_port()
                extra = worker_args + (MEMO_OFF if v == "webhook-off" else [])
                policy_servers[v, n] = start(f"{v}-{n}-policies", _webhook_argv(p, certs, d, extra), p)
                preflight(policy_servers[v, n], [pods[1]], ("/mutate",))
        policy_series = measure(load, [
            Target("baseline 1c ", baseline, "/mutate?timeout=10s", pod_files[1]),
            *[Target(f"{v} /mutate {n} policies", s, "/mutate?timeout=10s", pod_files[1])
              for (v, n), s in policy_servers.items()],
        ], repeats=args.repeats, duration=args.scale_duration, warmup=args.warmup)
        policy_mem = {n: memory(s.pid) for (v, n), s in policy_servers.items() if v == "webhook"}
        for s in policy_servers.values():
            s.stop()
            servers.remove(s)

        # --- soak: RSS growth over N requests (half /mutate, half /validate)
        soak = None
        if args.soak > 0:
            soak_paths = ("/mutate?timeout=10s", "/validate?timeout=10s")
            warm = min(5000, max(1000, args.soak // 10))
            log(f"soak: {warm:,} requests to settle, then {args.soak:,} requests to the webhook, "
                f"/mutate and /validate alternating, RSS sampled every 0.25 s")
            load.run(webhook.url("/mutate"), mix_file, 60, server_pid=webhook.pid, stop_after=warm,
                     paths=soak_paths)
            before = memory(webhook.pid)
            samples: list[tuple[float, int]] = []
            stop_sampling = threading.Event()

            def sample() -> None:
                while not stop_sampling.wait(0.25):
                    samples.append((time.perf_counter() - t0, memory(webhook.pid).rss_kib))

            t0 = time.perf_counter()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            run = load.run(webhook.url("/mutate"), mix_file, max(60, args.soak // 100), server_pid=webhook.pid,
                           stop_after=args.soak, paths=soak_paths)
            seconds = time.perf_counter() - t0
            stop_sampling.set()
            sampler.join()
            after = memory(webhook.pid)
            samples = samples or [(seconds, after.rss_kib)]
            rss = [kib for _, kib in samples]
            # RSS at 10%, 25%, 50%, 75% and 100% of the soak: a step at the start and a
            # steady climb (a leak) look alike in before/after, not in this curve
            curve = [rss[min(len(rss) - 1, int(q * len(rss)))] / 1024 for q in (0.1, 0.25, 0.5, 0.75)]
            curve.append(after.rss_mib)
            soak = {"requests": run.requests, "errors": run.errors, "seconds": seconds, "rps": run.rps,
                    "rss_before_mib": before.rss_mib, "rss_after_mib": after.rss_mib,
                    "rss_min_mib": min(rss) / 1024, "rss_max_mib": max(rss) / 1024, "samples": len(rss),
                    "rss_curve_mib": curve,
                    "growth_from_10pct": 100 * (after.rss_mib - curve[0]) / curve[0],
                    "peak_mib": after.peak_mib, "settle_requests": warm,
                    "growth_pct": 100 * (after.rss_kib - before.rss_kib) / before.rss_kib}
            results["soak"] = soak

        # --- several workers
        multi = None
        if workers_flag and args.multi_workers and args.multi_workers != main_workers:
            n = args.multi_workers
            log(f"webhook with --workers {n}: corpus mix, {args.repeats} x {args.duration:g}s per figure")
            p = free_port()
            wN = start(f"webhook-{n}-workers", _webhook_argv(p, certs, ROOT / "policies",
                                                             ["--workers", str(n)]), p)
            preflight(wN, all_bodies, ("/mutate", "/validate"))
            multi_series = measure(load, [
                Target("baseline /mutate ", baseline, "/mutate?timeout=10s", mix_file),
                Target(f"webhook x{n} /mutate", wN, "/mutate?timeout=10s", mix_file),
                Target("baseline /validate ", baseline, "/validate?timeout=10s", mix_file),
                Target(f"webhook x{n} /validate", wN, "/validate?timeout=10s", mix_file),
            ], repeats=args.repeats, duration=args.duration, warmup=args.warmup)
            multi = (n, multi_series, memory(wN.pid))
            wN.stop()
            servers.remove(wN)

        elapsed = time.perf_counter() - began
        report(results, main_series, mem_main, container_series, policy_series, policy_mem, cpu, ready, soak, multi,
               main_workers=main_workers, args=args, elapsed=elapsed)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(f"\nfigures written to {args.json}")
        return 0
    finally:
        for s in servers:
            s.stop()
        if args.keep:
            print(f"temporary files kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _webhook_argv(port: int, certs: Path, policies: Path, extra: list[str]) -> list[str]:
    return [*webhook_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--cert-dir", str(certs),
            "--policies", str(policies), "--log-level", "warning", "--shutdown-delay", "0", *extra]


def _baseline_argv(port: int, certs: Path) -> list[str]:
    return [sys.executable, str(HERE / "baseline_server.py"), "--host", "127.0.0.1", "--port", str(port),
            "--cert-dir", str(certs)]


def report(results: dict[str, Any], main_series: dict[str, Series], mem: dict[str, Memory],
           container_series: dict[str, Series], policy_series: dict[str, Series],
           policy_mem: dict[int, Memory], cpu: dict[str, float],
           ready: dict[str, list[float]], soak: dict[str, Any] | None,
           multi: tuple[int, dict[str, Series], Memory] | None, *, main_workers: int,
           args: argparse.Namespace, elapsed: float) -> None:
    reps = f"medians of {args.repeats} runs"
    verdicts: list[tuple[str, str, str, str]] = []   # figure, value, target, result

    # --- throughput and latency
    print(f"== Throughput and latency: corpus mix, concurrency {CONCURRENCY}, {reps} of "
          f"{args.duration:g}s, webhook with {main_workers} worker(s) and the shipped policies ==")
    variants = [v for v in VARIANTS if f"{v} /mutate" in main_series]
    t = Table("endpoint", "server", "req/s", "p50 ms", "p99 ms", "errors", "server CPU %", "loadgen CPU %")
    for path in ("/mutate", "/validate"):
        for who in ("baseline", *variants):
            s = main_series[f"{who} {path}"]
            t.add(path, VARIANTS.get(who, who), f0(s.rps), f2(s.p50_ms), f2(s.p99_ms), s.errors, f0(s.server_cpu),
                  f0(s.loadgen_cpu))
    print(t.render())
    print()
    t = Table("ratio webhook / baseline", "value", "target", "result")
    ratios: dict[str, float] = {}
    for v in variants:
        for path in ("/mutate", "/validate"):
            w, b = main_series[f"{v} {path}"], main_series[f"baseline {path}"]
            suffix = SUFFIX[v]
            ratios[f"throughput {path}{suffix}"] = w.rps / b.rps
            ratios[f"p50 {path}{suffix}"] = w.p50_ms / b.p50_ms
            ratios[f"p99 {path}{suffix}"] = w.p99_ms / b.p99_ms
            for name, limit, at_least in ((f"throughput {path}{suffix}", TARGET_THROUGHPUT, True),
                                          (f"p50 {path}{suffix}", None, False),
                                          (f"p99 {path}{suffix}", TARGET_P99, False)):
                value = ratios[name]
                if limit is None:
                    t.add(name, f"{value:.2f}x", "-", "info")
                else:
                    res = verdict(value, limit, at_least=at_least)
                    target = f"{'>=' if at_least else '<='} {limit}x"
                    t.add(name, f"{value:.2f}x", target, res)
                    verdicts.append((f"{name} ratio", f"{value:.2f}x", target, res))
    print(t.render())
    print()
    results["main"] = {k: v.as_dict() for k, v in main_series.items()}
    results["ratios"] = ratios

    # --- memory
    print("== Memory (after the main runs; VmHWM = peak RSS, summed over the server's processes) ==")
    t = Table("server", "processes", "peak RSS MiB", "RSS MiB", "target", "result")
    w_peak, b_peak = mem["webhook"].max_process_peak_mib, mem["baseline"].peak_mib
    res_abs = verdict(w_peak, TARGET_RSS_MIB, at_least=False)
    ratio = w_peak / b_peak
    res_ratio = verdict(ratio, TARGET_RSS_RATIO, at_least=False)
    t.add("baseline", len(mem["baseline"].per_process), f"{b_peak:.1f}", f"{mem['baseline'].rss_mib:.1f}", "-", "info")
    t.add(f"webhook ({main_workers} worker(s))", len(mem["webhook"].per_process), f"{mem['webhook'].peak_mib:.1f}",
          f"{mem['webhook'].rss_mib:.1f}", f"<= {TARGET_RSS_MIB:.0f} MiB per worker", res_abs)
    t.add("webhook / baseline (largest process)", "", f"{ratio:.2f}x", "", f"<= {TARGET_RSS_RATIO}x", res_ratio)
    print(t.render())
    print()
    verdicts.append(("peak RSS per worker", f"{w_peak:.1f} MiB", f"<= {TARGET_RSS_MIB:.0f} MiB", res_abs))
    verdicts.append(("peak RSS webhook / baseline", f"{ratio:.2f}x", f"<= {TARGET_RSS_RATIO}x", res_ratio))
    results["memory"] = {k: {"peak_mib": m.peak_mib, "rss_mib": m.rss_mib, "per_process": m.per_process}
                         for k, m in mem.items()}

    # --- pod size
    print(f"== Pod size: one synthetic pod repeated, concurrency {CONCURRENCY}, {reps} of "
          f"{args.scale_duration:g}s ==")
    t = Table("containers", "webhook", "baseline req/s", "/mutate req/s", "ratio", "/mutate p99 ms",
              "/validate req/s", "ratio", "/validate p99 ms", "target", "result")
    for variant in variants:
        for n in (1, 10, 50):
            b = container_series[f"baseline {n}c"]
            m, v = container_series[f"{variant} /mutate {n}c"], container_series[f"{variant} /validate {n}c"]
            rm, rv = m.rps / b.rps, v.rps / b.rps
            target, res = "-", "info"
            if n == 50:
                target = f">= {TARGET_50_CONTAINERS}x"
                res = "/".join(verdict(r, TARGET_50_CONTAINERS, at_least=True) for r in (rm, rv))
                for what, r in (("/mutate", rm), ("/validate", rv)):
                    verdicts.append((f"50-container pod {what}{SUFFIX[variant]}", f"{r:.2f}x", target,
                                     verdict(r, TARGET_50_CONTAINERS, at_least=True)))
            t.add(n, VARIANTS[variant], f0(b.rps), f0(m.rps), f"{rm:.2f}x", f2(m.p99_ms), f0(v.rps), f"{rv:.2f}x",
                  f2(v.p99_ms), target, res)
    print(t.render())
    print()
    results["containers"] = {k: v.as_dict() for k, v in container_series.items()}

    # --- policy count
    print(f"== Policy count: InjectionPolicies (shipped ones first, then one-label policies that all "
          f"match), 1-container pod, /mutate, {reps} of {args.scale_duration:g}s ==")
    t = Table("policies", "webhook", "req/s", "ratio to baseline", "p50 ms", "p99 ms", "peak RSS MiB", "target",
              "result")
    b = policy_series["baseline 1c "]
    t.add("baseline", "", f0(b.rps), "1.00x", f2(b.p50_ms), f2(b.p99_ms), "", "-", "info")
    for variant in variants:
        for n in (1, 10, 100):
            s = policy_series[f"{variant} /mutate {n} policies"]
            r = s.rps / b.rps
            target, res = "-", "info"
            if n == 100:
                target, res = f">= {TARGET_100_POLICIES}x", verdict(r, TARGET_100_POLICIES, at_least=True)
                verdicts.append((f"100 policies /mutate{SUFFIX[variant]}", f"{r:.2f}x", target, res))
            t.add(n, VARIANTS[variant], f0(s.rps), f"{r:.2f}x", f2(s.p50_ms), f2(s.p99_ms),
                  f"{policy_mem[n].peak_mib:.1f}" if variant == "webhook" else "", target, res)
    print(t.render())
    print()
    results["policies"] = {k: v.as_dict() for k, v in policy_series.items()}

    # --- CPU per review
    print("== CPU per review, in process (time.process_time; median of 5 rounds), shipped policies ==")
    t = Table("pod", "endpoint", "engine only ms", "parse_review + engine ms", "+ response ms",
              "target", "result")
    for pod_label, name in (("200KiB", f"{cpu['bytes/200KiB'] / 1024:.0f} KiB pod"),
                            ("1c", "1-container pod")):
        for ep in ("mutate", "validate"):
            e = cpu[f"{ep}/{pod_label}/engine"] * 1000
            pe = cpu[f"{ep}/{pod_label}/parse+engine"] * 1000
            full = cpu[f"{ep}/{pod_label}/parse+engine+response"] * 1000
            target, res = "-", "info"
            if pod_label == "200KiB":
                target = f"<= {TARGET_CPU_MS_200K:g} ms"
                res = "/".join(verdict(x, TARGET_CPU_MS_200K, at_least=False) for x in (e, pe, full))
                verdicts.append((f"200 KiB pod CPU, {ep} (engine only)", f"{e:.2f} ms", target,
                                 verdict(e, TARGET_CPU_MS_200K, at_least=False)))
                verdicts.append((f"200 KiB pod CPU, {ep} (with parse_review)", f"{pe:.2f} ms", target,
                                 verdict(pe, TARGET_CPU_MS_200K, at_least=False)))
            t.add(name, ep, f"{e:.3f}", f"{pe:.3f}", f"{full:.3f}", target, res)
    print(t.render())
    print()

    # --- start to ready
    print(f"== Start to ready: spawn until GET /readyz answers 200 over TLS (median of {len(ready['webhook'])}) ==")
    t = Table("server", "median s", "samples s", "RSS at ready MiB", "target", "result")
    rw = statistics.median(ready["webhook"])
    res = verdict(rw, TARGET_READY_S, at_least=False)
    rss = results["ready_s"]
    t.add(f"webhook ({main_workers} worker(s))", f"{rw:.3f}", " ".join(f"{x:.2f}" for x in ready["webhook"]),
          f"{rss['webhook']['rss_at_ready_mib']:.1f}", f"<= {TARGET_READY_S} s", res)
    t.add("baseline", f"{statistics.median(ready['baseline']):.3f}",
          " ".join(f"{x:.2f}" for x in ready["baseline"]), f"{rss['baseline']['rss_at_ready_mib']:.1f}",
          "-", "info")
    print(t.render())
    print()
    verdicts.append(("start to ready", f"{rw:.2f} s", f"<= {TARGET_READY_S} s", res))

    # --- soak
    if soak:
        print(f"== RSS growth: {soak['requests']:,} requests (corpus mix, /mutate and /validate alternating), "
              f"after the runs above and {soak['settle_requests']:,} requests to settle; the issue's check is "
              f"200,000 (make bench SOAK=200000) ==")
        t = Table("requests", "errors", "req/s", "RSS before MiB", "at 10/25/50/75% MiB", "RSS after MiB",
                  "growth", "target", "result")
        res = verdict(soak["growth_pct"], TARGET_RSS_GROWTH, at_least=False)
        t.add(f"{soak['requests']:,}", soak["errors"], f0(soak["rps"]), f"{soak['rss_before_mib']:.1f}",
              " ".join(f"{x:.1f}" for x in soak["rss_curve_mib"][:4]), f"{soak['rss_after_mib']:.1f}",
              f"{soak['growth_pct']:+.2f}%", f"< {TARGET_RSS_GROWTH:g}%", res)
        print(t.render())
        print(f"growth from 10% of the soak to its end: {soak['growth_from_10pct']:+.2f}% "
              f"({soak['samples']} samples, min {soak['rss_min_mib']:.1f}, max {soak['rss_max_mib']:.1f} MiB); "
              f"peak RSS (VmHWM) over the whole run, pod-size runs included: {soak['peak_mib']:.1f} MiB")
        print()
        label = "RSS growth" + ("" if soak["requests"] >= 200000 else f" (over {soak['requests']:,}, not 200,000)")
        verdicts.append((label, f"{soak['growth_pct']:+.2f}%", f"< {TARGET_RSS_GROWTH:g}%", res))

    # --- several workers
    if multi:
        n, series, m = multi
        print(f"== Webhook with --workers {n} vs the single-process baseline: corpus mix, {reps} of "
              f"{args.duration:g}s ==")
        t = Table("endpoint", "server", "req/s", "p50 ms", "p99 ms", "errors", "ratio req/s", "ratio p99")
        for path in ("/mutate", "/validate"):
            b, w = series[f"baseline {path} "], series[f"webhook x{n} {path}"]
            t.add(path, "baseline", f0(b.rps), f2(b.p50_ms), f2(b.p99_ms), b.errors, "", "")
            t.add(path, f"webhook x{n}", f0(w.rps), f2(w.p50_ms), f2(w.p99_ms), w.errors,
                  f"{w.rps / b.rps:.2f}x", f"{w.p99_ms / b.p99_ms:.2f}x")
        print(t.render())
        for path in ("/mutate", "/validate"):
            splits = "; ".join("/".join(f"{x:.0f}" for x in r.server_cpu_split[:n + 1])
                               for r in series[f"webhook x{n} {path}"].runs)
            print(f"server CPU % per process, each run ({path}): {splits}")
        per = ", ".join(f"{role} {hwm / 1024:.1f}" for _, hwm, _, role in m.per_process)
        print(f"peak RSS (VmHWM): {m.peak_mib:.1f} MiB summed over {len(m.per_process)} processes ({per} MiB); "
              f"largest process {m.max_process_peak_mib:.1f} MiB "
              f"({verdict(m.max_process_peak_mib, TARGET_RSS_MIB, at_least=False)} <= {TARGET_RSS_MIB:.0f} MiB)")
        print()
        results["multi_workers"] = {"workers": n, "series": {k: v.as_dict() for k, v in series.items()},
                                    "peak_mib": m.peak_mib, "per_process": m.per_process}

    # --- summary
    print(f"== Issue 7 targets (one run, {time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f}s) ==")
    t = Table("target", "figure", "limit", "result")
    for row in verdicts:
        t.add(*row)
    print(t.render())
    passed = sum(v[3] == "PASS" for v in verdicts)
    print(f"{passed} of {len(verdicts)} targets met")
    errors = sum(s.errors for d in (main_series, container_series, policy_series) for s in d.values())
    if errors:
        print(f"WARNING: {errors} failed requests during the measurements (see the per-run log above)")
    results["targets"] = [dict(zip(("target", "figure", "limit", "result"), v)) for v in verdicts]


if __name__ == "__main__":
    sys.exit(main())
