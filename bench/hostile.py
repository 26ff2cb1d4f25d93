"""Replay issue 17's hostile inputs against a real worker and check the issue's targets.

    .venv/bin/python bench/hostile.py                  # what `make bench-hostile` runs; about 4 minutes
    .venv/bin/python bench/hostile.py --cases uid-3mb,malformed-apiversion-list
    .venv/bin/python bench/hostile.py --list

Each case gets a fresh `webhook serve --workers 1` (the shipped Deployment's worker
count) with the shipped policies and certificates made for the run, pinned with
taskset to one core while this script (the load generator) runs on another, when
there are two. A fresh worker makes VmHWM (the kernel's high-water mark of its
RSS) the exact peak of that case. Printed per case: the answers' HTTP status and
review code, answer size and time, the worker's RSS before, its peak, its RSS some
seconds after the last answer (10 by default), the largest log line it wrote, and
PASS or MISS against the targets below, with the reasons. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from hostile_bodies import (  # noqa: E402  (bench/hostile_bodies.py)
    BODY_LIMIT, MIB, deep_patch, deep_update, deployment_40k, label_600, normal_review, pod_44k, pod_200k,
    privileged_30k, quantity_review, uid_3mb)

WEBHOOK = [sys.executable, "-m", "webhook"]

# Issue 17's targets.
TARGET_PEAK_MIB = 200.0        # worker peak RSS for any single request within the body limit
TARGET_SETTLED_MIB = 100.0     # worker RSS within SETTLE_SECONDS after a burst
SETTLE_SECONDS = 10.0
ALONGSIDE_TIMEOUT_S = 5        # the normal request's deadline (`?timeout=5s`)
# The issue asks for a documented bound on a decision log line without a figure; this
# is the bound the table checks until one is documented.
TARGET_LOG_LINE_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 120.0       # a heavy answer today takes tens of seconds: wait for it


# --- the worker ---------------------------------------------------------------------------------

def status_kib(pid: int, key: str) -> int:
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cores() -> tuple[int | None, int | None]:
    """(the worker's core, the load generator's core), or Nones where there is only one."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2 or shutil.which("taskset") is None:
        return None, None
    return available[0], available[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """`webhook serve --workers 1` on 127.0.0.1 with the shipped policies; its log to a file."""

    def __init__(self, certs: Path, log_path: Path, *, core: int | None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        argv = [*WEBHOOK, "serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(self.port),
                "--cert-dir", str(certs), "--policies", str(ROOT / "policies"), "--log-format", "json",
                "--log-level", "info", "--shutdown-delay", "0"]
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid   # taskset execs the server: same pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if get(self, "/readyz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready within {timeout}s:\n{self.log_tail()}")

    def rss_mib(self) -> float:
        return status_kib(self.pid, "VmRSS") / 1024

    def peak_mib(self) -> float:
        return status_kib(self.pid, "VmHWM") / 1024

    def alive(self) -> bool:
        return self.proc.poll() is None

    def largest_log_line(self) -> int:
        self._log.flush()
        with self.log_path.open("rb") as f:
            return max((len(line.rstrip(b"\n")) for line in f), default=0)

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_bytes()[-20_000:].decode(errors="replace")
        return "\n".join(line[:300] for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- the client ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    label: str
    status: int            # HTTP status; 0 when no answer came (reset, timeout)
    code: int | None       # the review's response.status.code, when the answer is a review carrying one
    size: int              # answer body bytes
    seconds: float
    error: str = ""

    @property
    def server_error(self) -> bool:
        return self.status >= 500 or (self.code is not None and self.code >= 500)

    def describe(self) -> str:
        if not self.status:
            return f"no answer ({self.error})"
        return f"{self.status}" + (f"/{self.code}" if self.code is not None else "")


def _review_code(body: bytes) -> int | None:
    try:
        document = json.loads(body)
        status = document["response"].get("status") or {}
        return int(status["code"]) if "code" in status else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def request(worker: Worker, method: str, path: str, body: bytes | None = None, *, label: str = "",
            headers: dict[str, str] | None = None, timeout: float = CLIENT_TIMEOUT_S,
            source: str = "127.0.0.1") -> Answer:
    """One request on a new TLS connection from `source`, timed from connect to the last byte."""
    started = time.perf_counter()
    conn = http.client.HTTPSConnection("127.0.0.1", worker.port, context=worker.context, timeout=timeout,
                                       source_address=(source, 0))
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return Answer(label or path, response.status, _review_code(data) if response.status == 200 else None,
                      len(data), time.perf_counter() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(label or path, 0, None, 0, time.perf_counter() - started, type(exc).__name__)
    finally:
        conn.close()


def get(worker: Worker, path: str, *, timeout: float) -> Answer:
    return request(worker, "GET", path, timeout=timeout)


def post(worker: Worker, path: str, body: bytes, **kwargs: Any) -> Answer:
    # The targets are for requests within the body limit; a case over it would test the 413.
    if len(body) > BODY_LIMIT:
        raise ValueError(f"a {len(body)} byte body is over the server's {BODY_LIMIT} byte limit")
    return request(worker, "POST", path, body, **kwargs)


def concurrently(*calls: Callable[[], Answer], stagger: float = 0.0) -> list[Answer]:
    """Run each call in its own thread, started `stagger` seconds apart; answers in call order."""
    answers: list[Answer | None] = [None] * len(calls)

    def run(i: int) -> None:
        answers[i] = calls[i]()

    threads = []
    for i in range(len(calls)):
        if i and stagger:
            time.sleep(stagger)
        thread = threading.Thread(target=run, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return [a for a in answers if a is not None]


@contextmanager
def idle_connections(worker: Worker, count: int, *, source: str = "127.0.0.1") -> Iterator[int]:
    """Hold `count` TLS connections from `source` open without sending a request; yields how
    many completed their handshake (the rest were refused or dropped)."""
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(count):
            raw = socket.socket()
            try:
                raw.settimeout(5)
                raw.bind((source, 0))
                raw.connect(("127.0.0.1", worker.port))
                held.append(worker.context.wrap_socket(raw, server_hostname="127.0.0.1"))
            except OSError:
                raw.close()
        yield len(held)
    finally:
        for s in held:
            s.close()


# --- the cases ----------------------------------------------------------------------------------

@dataclass
class Extra:
    """A check beyond the ones every case gets, with what was seen."""
    name: str
    ok: bool
    seen: str


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    send: Callable[[Worker], tuple[list[Answer], list[Extra]]]
    heavy: bool = True          # check RSS some seconds after (a burst); small bodies need not
    later: float = 0.0          # also report RSS this many seconds after the last answer


Send = Callable[["Worker"], tuple[list["Answer"], list["Extra"]]]


def one_request(path: str, build: Callable[[], bytes], **kwargs: Any) -> Send:
    def send(worker: Worker) -> tuple[list[Answer], list[Extra]]:
        return [post(worker, path, build(), **kwargs)], []
    return send


def _two_at_once(worker: Worker) -> tuple[list[Answer], list[Extra]]:
    body = pod_44k()
    return concurrently(lambda: post(worker, "/mutate?timeout=30s", body, label="first"),
                        lambda: post(worker, "/mutate?timeout=30s", body, label="second")), []


def _alongside(worker: Worker) -> tuple[list[Answer], list[Extra]]:
    heavy, normal = pod_200k(), normal_review()
    answers = concurrently(
        lambda: post(worker, "/validate?timeout=30s", heavy, label="heavy"),
        lambda: post(worker, f"/validate?timeout={ALONGSIDE_TIMEOUT_S}s", normal, label="normal",
                     timeout=CLIENT_TIMEOUT_S),
        stagger=0.5)   # the heavy body is in and being worked on when the normal one arrives
    normal_answer = answers[1]
    ok = normal_answer.status == 200 and normal_answer.seconds <= ALONGSIDE_TIMEOUT_S
    return answers, [Extra("normal request within its deadline", ok,
                           f"normal {normal_answer.describe()} in {normal_answer.seconds:.2f}s")]


def _quantities(count: int = 35) -> Send:
    def send(worker: Worker) -> tuple[list[Answer], list[Extra]]:
        answers = []
        for i in range(count):
            digits = 1_000_000 + (i % 11) * 100_000   # 1 to 2 MB strings
            answers.append(post(worker, "/validate?timeout=30s", quantity_review(i, digits), label=f"q{i}"))
        return answers, []
    return send


def many_connections(count: int = 1_100) -> Send:
    def send(worker: Worker) -> tuple[list[Answer], list[Extra]]:
        with idle_connections(worker, count) as held:
            answer = post(worker, f"/validate?timeout={ALONGSIDE_TIMEOUT_S}s", normal_review(),
                          label="from 127.0.0.2", source="127.0.0.2", timeout=ALONGSIDE_TIMEOUT_S + 5)
        ok = answer.status == 200 and answer.seconds <= ALONGSIDE_TIMEOUT_S
        return [answer], [Extra("a second address is served", ok,
                                f"127.0.0.2 {'served' if ok else 'not served'} beside {held} of {count} "
                                f"connections held from 127.0.0.1")]
    return send


NOT_GZIP = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}'

CASES: tuple[Case, ...] = (
    Case("label-100k-600-containers", "/mutate: 100,000-char app label, 600 containers (0.11 MiB)",
         one_request("/mutate?timeout=30s", label_600)),
    Case("mutate-44k-containers", "/mutate: 44,000 containers (7.9 MiB)",
         one_request("/mutate?timeout=30s", pod_44k)),
    Case("mutate-44k-containers-x2", "/mutate: two of the above at once", _two_at_once),
    Case("validate-deployment-40k", "/validate: Deployment with 40,000 containers (7.2 MiB)",
         one_request("/validate?timeout=30s", deployment_40k)),
    Case("validate-200k-with-normal", "/validate: pod with 200,000 containers (6.6 MiB), and a normal "
         f"/validate?timeout={ALONGSIDE_TIMEOUT_S}s 0.5 s later", _alongside),
    Case("quantities-35x1-2mb", "/validate: 35 reviews, each with two 1-2 MB quantity strings, then idle 20 s",
         _quantities(), later=20.0),
    Case("connections-1100", "1,100 idle TLS connections from 127.0.0.1, then a /validate from 127.0.0.2",
         many_connections(), heavy=False),
    Case("malformed-apiversion-list", '/mutate: {"apiVersion": []}',
         one_request("/mutate", lambda: b'{"apiVersion": []}'), heavy=False),
    Case("malformed-apiversion-object", '/mutate: {"apiVersion": {}}',
         one_request("/mutate", lambda: b'{"apiVersion": {}}'), heavy=False),
    Case("malformed-gzip", "/mutate: Content-Encoding: gzip, body not gzip",
         one_request("/mutate", lambda: NOT_GZIP, headers={"Content-Encoding": "gzip"}), heavy=False),
    Case("malformed-deflate", "/mutate: Content-Encoding: deflate, body not deflate",
         one_request("/mutate", lambda: NOT_GZIP, headers={"Content-Encoding": "deflate"}), heavy=False),
    Case("update-nested-990", "/validate: UPDATE, object and oldObject equal, nested ~990 deep",
         one_request("/validate", deep_update), heavy=False),
    Case("patch-nested-300", "/mutate: the patch carries pod content nested 300 deep",
         one_request("/mutate", deep_patch), heavy=False),
    Case("privileged-30k-log", "/validate: 30,000 privileged containers (2.7 MB): largest log line",
         one_request("/validate?timeout=30s", privileged_30k)),
    Case("uid-3mb-log", "/mutate: a 3 MB uid: largest log line", one_request("/mutate?timeout=30s", uid_3mb)),
)


# --- running and judging ------------------------------------------------------------------------

@dataclass
class Outcome:
    case: Case
    answers: list[Answer]
    idle_mib: float            # RSS once ready, before the case
    peak_mib: float            # VmHWM: the peak over the worker's life, which is this case's
    settled_mib: float | None  # RSS `settle` seconds after the last answer (heavy cases)
    later_mib: float | None    # RSS `case.later` seconds after
    log_line: int              # bytes of the longest line the worker wrote
    extras: list[Extra] = field(default_factory=list)
    worker_died: bool = False

    def misses(self) -> list[str]:
        out = []
        if self.peak_mib > TARGET_PEAK_MIB:
            out.append(f"peak {self.peak_mib:.0f} > {TARGET_PEAK_MIB:.0f} MiB")
        if self.settled_mib is not None and self.settled_mib > TARGET_SETTLED_MIB:
            out.append(f"RSS after {self.settled_mib:.0f} > {TARGET_SETTLED_MIB:.0f} MiB")
        out.extend(f"{a.label}: {a.describe()}" for a in self.answers if a.server_error or not a.status)
        for extra in self.extras:
            if not extra.ok:
                out.append(extra.seen)
        if self.log_line > TARGET_LOG_LINE_BYTES:
            out.append(f"log line {self.log_line:,} > {TARGET_LOG_LINE_BYTES:,} B")
        if self.worker_died:
            out.append("worker died")
        return out

    @property
    def passed(self) -> bool:
        return not self.misses()


def run_case(case: Case, *, certs: Path, logdir: Path, worker_core: int | None, settle: float) -> Outcome:
    worker = Worker(certs, logdir / f"{case.name}.log", core=worker_core)
    try:
        worker.wait_ready()
        time.sleep(0.2)
        idle = worker.rss_mib()
        answers, extras = case.send(worker)
        peak = worker.peak_mib()
        settled = later = None
        if case.heavy:
            finished = time.monotonic()
            time.sleep(settle)
            settled = worker.rss_mib()
            if case.later:
                time.sleep(max(0.0, finished + case.later - time.monotonic()))
                later = worker.rss_mib()
        died = not worker.alive()
        return Outcome(case, answers, idle, max(peak, worker.peak_mib()), settled, later,
                       worker.largest_log_line(), extras, died)
    finally:
        worker.stop()


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def table(outcomes: Sequence[Outcome], *, settle: float = SETTLE_SECONDS) -> str:
    rows = [f"| case | answer (HTTP/review code) | answer size | time | RSS idle MiB | peak RSS MiB "
            f"| RSS +{settle:g} s MiB | largest log line | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        answers = o.answers
        if len(answers) > 3:   # a burst: the distinct outcomes, and the slowest
            kinds = sorted({a.describe() for a in answers})
            status = f"{len(answers)}x " + ", ".join(kinds)
            size = f"max {_size(max(a.size for a in answers))}"
            took = f"max {max(a.seconds for a in answers):.2f} s"
        else:
            status = "; ".join(f"{a.label if len(answers) > 1 else ''} {a.describe()}".strip() for a in answers)
            size = "; ".join(_size(a.size) for a in answers)
            took = "; ".join(f"{a.seconds:.2f} s" for a in answers)
        settled = f"{o.settled_mib:.1f}" if o.settled_mib is not None else "-"
        if o.later_mib is not None:
            settled += f" (+{o.case.later:.0f} s: {o.later_mib:.1f})"
        misses = o.misses()
        verdict = "PASS" if not misses else "MISS: " + "; ".join(misses)
        rows.append(f"| {o.case.name} | {status} | {size} | {took} | {o.idle_mib:.1f} | {o.peak_mib:.1f} "
                    f"| {settled} | {_size(o.log_line)} | {verdict} |")
    return "\n".join(rows)


def make_certs(directory: Path) -> Path:
    certs = directory / "certs"
    subprocess.run([*WEBHOOK, "certs", "generate", "--out", str(certs), "--service", "webhook",
                    "--namespace", "webhook-system"], check=True, capture_output=True, cwd=ROOT)
    return certs


def run(cases: Sequence[Case], *, settle: float = SETTLE_SECONDS, pin: bool = True, keep: Path | None = None,
        progress: Callable[[str], None] = lambda _: None) -> list[Outcome]:
    worker_core, client_core = cores() if pin else (None, None)
    previous = os.sched_getaffinity(0)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    tmp = Path(tempfile.mkdtemp(prefix="webhook-hostile-"))
    try:
        certs = make_certs(tmp)
        outcomes = []
        for case in cases:
            progress(f"{case.name}: {case.what}")
            outcome = run_case(case, certs=certs, logdir=keep or tmp, worker_core=worker_core, settle=settle)
            progress("  " + ("PASS" if outcome.passed else "MISS: " + "; ".join(outcome.misses())))
            outcomes.append(outcome)
        return outcomes
    finally:
        os.sched_setaffinity(0, previous)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                        help="seconds after a heavy case's last answer at which RSS is read")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the worker and this script to cores")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the workers' logs in DIR")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.name:30} {case.what}")
        return 0
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    unknown = set(filter(None, args.cases.split(","))) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))} (see --list)")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    worker_core, client_core = cores() if not args.no_pin else (None, None)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "?"
    pinning = (f"worker on core {worker_core}, load generator on core {client_core}" if worker_core is not None
               else "not pinned")
    print(f"# issue 17 hostile inputs at {commit}; {pinning}; shipped policies; RSS after = "
          f"{args.settle:g} s after the last answer", flush=True)
    outcomes = run(chosen, settle=args.settle, pin=not args.no_pin, keep=args.keep,
                   progress=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True))
    print(table(outcomes, settle=args.settle))
    passed = sum(o.passed for o in outcomes)
    print(f"\n{passed} of {len(outcomes)} cases PASS. Targets: peak RSS <= {TARGET_PEAK_MIB:.0f} MiB; RSS "
          f"<= {TARGET_SETTLED_MIB:.0f} MiB {args.settle:g} s after a burst; no 5xx (HTTP or review code) and "
          f"an answer to every request; the normal request within its {ALONGSIDE_TIMEOUT_S} s deadline; a "
          f"second address served beside 1,100 connections; log lines <= {TARGET_LOG_LINE_BYTES:,} bytes.")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
