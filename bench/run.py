"""Benchmark the webhook against a no-op aiohttp TLS server, in one run on one machine.

    .venv/bin/python bench/run.py                 # what `make bench` runs
    .venv/bin/python bench/run.py --soak 200000   # with the issue's RSS growth check (`make bench SOAK=200000`)
    .venv/bin/python bench/run.py --quick         # every section, briefly (what the tests run)
    .venv/bin/python bench/run.py --server-cpus 0 --loadgen-cpus 1   # pinned with taskset

See bench/README.md for what is measured and how. Everything the run needs is made
in a temporary directory (certificates, request bodies, policy directories) and
removed at the end; the servers and the load generator only use 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    # run as a script (bench/run.py): import the package `bench` from the repository root,
    # not this folder's modules by their bare names
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import phases, settings  # noqa: E402
from bench.inprocess import in_process_cpu  # noqa: E402
from bench.load import CONCURRENCY, LoadGenerator, Measurer  # noqa: E402
from bench.phases import Inputs  # noqa: E402
from bench.proc import status_kib  # noqa: E402
from bench.report import Report  # noqa: E402
from bench.servers import ROOT, Fleet, make_certs  # noqa: E402


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(load: LoadGenerator, s: settings.Settings) -> dict[str, str]:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = status_kib("/proc/meminfo", "MemTotal")
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
        "pinned": s.pinning.describe(),
        "mode": "--quick: figures too short to quote" if s.quick else "full",
    }


def corpus_line(inp: Inputs) -> str:
    sizes = sorted(len(b) for _, b in inp.mix)
    extra = statistics.fmean(len(n) - len(r) for (_, r), (_, n) in zip(inp.mix, inp.never_seen))
    return (f"{len(inp.mix)} AdmissionReviews: {len(inp.mix) - 4} pods of tests/data/corpus, synthetic pods of 1, "
            f"10 and 50 containers ({', '.join(f'{len(inp.pods[n]):,} B' for n in (1, 10, 50))}) and a "
            f"{len(inp.mix[-1][1]) / 1024:.0f} KiB pod; median body {statistics.median(sizes):,.0f} B, "
            f"mean {statistics.fmean(sizes):,.0f} B. Each connection cycles through them in order.\n"
            f"The never-seen mix: the same pods with a label that is new in every request "
            f"({extra:.0f} B more per body).")


def run(s: settings.Settings) -> int:
    began = time.perf_counter()
    earlier: dict[str, Any] | None = json.loads(s.compare.read_text()) if s.compare else None
    # --quick: pyload.py in one process, which starts at once (figures are not quoted)
    load = LoadGenerator(s.loadgen, s.wrk_threads, processes=1 if s.quick else 2, pinning=s.pinning)
    measurer = Measurer(load, s.warmup, log)
    report = Report(s)
    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    fleet = Fleet(make_certs(tmp / "certs"), tmp, s.pinning)
    try:
        inp = phases.inputs(tmp, fleet.certs)
        report.header(machine(load, s), corpus_line(inp))

        log("in-process CPU per review")   # before any server runs, so the machine is quiet
        cpu = in_process_cpu(rounds=s.cpu_rounds, round_seconds=s.cpu_round_seconds)
        log(f"start to ready, {s.ready_runs} times each")
        ready = phases.start_to_ready(fleet, inp, s)
        main = phases.main_comparison(fleet, measurer, inp, s, log)
        log(f"pod size: 1, 10, 50 containers, {s.repeats} x {s.scale_duration:g}s per figure")
        pods = phases.pod_size(measurer, main, inp, s)
        log(f"policy count: 1, 10, 100 InjectionPolicies, 1-container pod, {s.repeats} x "
            f"{s.scale_duration:g}s per figure")
        policies = phases.policy_count(fleet, measurer, main, inp, s)
        soak = None
        if s.soak > 0:
            log(f"soak: {s.settle:,} requests to settle, then {s.soak:,} requests to the webhook, "
                f"/mutate and /validate alternating, RSS sampled every 0.25 s")
            soak = phases.soak(load, main.webhooks["webhook"], inp, s)
        multi = None
        if s.multi_workers and s.multi_workers != s.workers:
            log(f"webhook with --workers {s.multi_workers}: corpus mix, {s.repeats} x {s.duration:g}s per figure"
                + (f" (its workers share CPUs {s.pinning.server})" if s.pinning.server else ""))
            multi = phases.several_workers(fleet, measurer, main, inp, s)

        report.main(main)
        report.memory(main)
        report.pod_size(pods)
        report.policy_count(policies)
        report.cpu(cpu)
        report.ready(ready)
        if soak:
            report.soak(soak)
        if multi:
            report.multi(multi)
        report.mixes(main.series, earlier)
        errors = sum(x.errors for d in (main.series, pods, policies.series) for x in d.values())
        report.summary(time.perf_counter() - began, errors)
        if s.json:
            report.write_json(s.json)
        return 0
    finally:
        fleet.stop_all()
        if s.keep:
            print(f"temporary files kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return run(settings.parse(argv))


if __name__ == "__main__":
    sys.exit(main())
