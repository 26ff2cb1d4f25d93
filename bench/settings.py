"""The benchmark's command line, and the short mode (`--quick`) the tests run."""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.servers import Pinning


@dataclass(frozen=True)
class Settings:
    duration: float           # seconds per main run
    scale_duration: float     # seconds per pod-size and policy-count run
    repeats: int              # runs per figure; medians are quoted
    warmup: float             # warm-up seconds per server and path, 0 for none
    workers: int              # workers of the main webhook
    multi_workers: int        # the extra run with several workers; 0 skips it
    soak: int                 # requests of the RSS growth check; 0 skips it
    settle: int               # requests before the soak, not counted
    ready_runs: int           # start-to-ready samples
    cpu_rounds: int           # in-process CPU: rounds per figure
    cpu_round_seconds: float  # in-process CPU: CPU seconds per round
    loadgen: str              # wrk or python
    wrk_threads: int
    pinning: Pinning
    quick: bool
    json: Path | None
    compare: Path | None
    keep: bool


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="webhook benchmark against a no-op aiohttp TLS baseline "
                                            "(see bench/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="every section in seconds, with figures too short to quote (what the tests run); "
                        "the options below still apply")
    p.add_argument("--duration", type=float, help="seconds per main measurement (5)")
    p.add_argument("--scale-duration", type=float,
                   help="seconds per measurement of the policy and container scaling (3)")
    p.add_argument("--repeats", type=int, help="runs per figure; medians are quoted (3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per server and path, 0 for none (1)")
    p.add_argument("--workers", type=int, default=1, help="workers of the main webhook (1)")
    p.add_argument("--multi-workers", type=int, default=2,
                   help="also measure the webhook with this many workers (2; 0 to skip)")
    p.add_argument("--soak", type=int,
                   help="requests for the RSS growth check (20000, or $SOAK; the issue's check is 200000)")
    p.add_argument("--ready-runs", type=int, help="start-to-ready samples (5)")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--server-cpus", metavar="LIST",
                   help="pin every server to these CPUs (taskset -c LIST, e.g. 0)")
    p.add_argument("--loadgen-cpus", metavar="LIST",
                   help="pin the load generator to these CPUs (taskset -c LIST, e.g. 1)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--compare", type=Path, metavar="JSON",
                   help="an earlier run's --json file: print this run's repeat and never-seen ratios "
                        "against it")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, bodies)")
    return p


def parse(argv: list[str] | None = None) -> Settings:
    parser = _parser()
    a = parser.parse_args(argv)
    loadgen = a.loadgen if a.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if loadgen == "wrk" and not shutil.which("wrk"):
        parser.error("wrk not found (apt-get install wrk)")
    if (a.server_cpus or a.loadgen_cpus) and not shutil.which("taskset"):
        parser.error("taskset not found (util-linux)")
    if a.compare and not a.compare.is_file():
        parser.error(f"--compare: no such file {a.compare}")
    if a.workers < 1:
        parser.error("--workers must be at least 1")

    def pick(value: float | int | None, full: float | int, quick: float | int) -> float | int:
        return value if value is not None else (quick if a.quick else full)

    soak = int(pick(a.soak, int(os.environ.get("SOAK") or 20000), 300))
    return Settings(
        duration=float(pick(a.duration, 5, 0.5)),
        scale_duration=float(pick(a.scale_duration, 3, 0.5)),
        repeats=int(pick(a.repeats, 3, 1)),
        warmup=float(pick(a.warmup, 1, 0)),
        workers=a.workers,
        multi_workers=a.multi_workers,
        soak=soak,
        settle=min(5000, max(1000, soak // 10)) if not a.quick else max(1, soak // 3),
        ready_runs=int(pick(a.ready_runs, 5, 1)),
        cpu_rounds=1 if a.quick else 5,
        cpu_round_seconds=0.02 if a.quick else 0.15,
        loadgen=loadgen,
        wrk_threads=a.wrk_threads,
        pinning=Pinning(server=a.server_cpus, loadgen=a.loadgen_cpus),
        quick=a.quick,
        json=a.json,
        compare=a.compare,
        keep=a.keep,
    )
