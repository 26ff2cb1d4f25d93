"""The phases of one run, in the order they run; each returns what it measured.

bench/README.md says what each measures and why; bench/report.py prints it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import corpus
from bench.load import Job, LoadGenerator, Measurer, Series
from bench.proc import Memory, free_port, memory
from bench.servers import ROOT, Answers, Fleet, Server, baseline_argv, preflight, webhook_argv
from bench.settings import Settings

PATHS = ("/mutate", "/validate")
CONTAINERS = (1, 10, 50)
POLICY_COUNTS = (1, 10, 100)
# The webhooks of the main comparison: the default one on the repeat mix (a rollout's
# replicas), the same server software with the memo off on the repeat mix (every request
# evaluated), and a default one of its own on the never-seen mix (every request a new pod).
VARIANTS = ("webhook", "webhook-off", "webhook-new")
# The variants every scaling figure is also taken on.
SCALING_VARIANTS = ("webhook", "webhook-off")


def _query(path: str) -> str:
    return f"{path}?timeout=10s"


@dataclass
class Inputs:
    """What one run sends, written to its temporary directory."""
    tmp: Path
    certs: Path
    mix: list[tuple[str, bytes]]
    mix_file: Path
    never_seen: list[tuple[str, bytes]]
    never_seen_file: Path
    pods: dict[int, bytes]
    pod_files: dict[int, Path]


def inputs(tmp: Path, certs: Path) -> Inputs:
    mix = corpus.mixed_bodies()
    never_seen = corpus.mixed_bodies(never_seen=True)
    pods = {n: corpus.body(corpus.synthetic_pod(n)) for n in CONTAINERS}
    return Inputs(tmp=tmp, certs=certs,
                  mix=mix, mix_file=corpus.write_bodies(tmp / "mix.txt", [b for _, b in mix]),
                  never_seen=never_seen,
                  never_seen_file=corpus.write_bodies(tmp / "never-seen.txt", [b for _, b in never_seen]),
                  pods=pods, pod_files={n: corpus.write_bodies(tmp / f"pod-{n}c.txt", [b]) for n, b in pods.items()})


@dataclass
class Ready:
    samples: dict[str, list[float]]           # server -> seconds from spawn to ready
    rss_mib: dict[str, float]                 # server -> median RSS at ready

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


def start_to_ready(fleet: Fleet, inp: Inputs, s: Settings) -> Ready:
    samples: dict[str, list[float]] = {"webhook": [], "baseline": []}
    rss: dict[str, list[float]] = {"webhook": [], "baseline": []}
    for i in range(s.ready_runs):
        for name in ("webhook", "baseline"):
            port = free_port()
            argv = (webhook_argv(port, inp.certs, ROOT / "policies", workers=s.workers) if name == "webhook"
                    else baseline_argv(port, inp.certs))
            server = fleet.spawn(f"{name}-ready-{i}", argv, port)
            try:
                samples[name].append(server.wait_ready())
                rss[name].append(memory(server.pid).rss_mib)
            finally:
                server.stop()
    return Ready(samples, {k: statistics.median(v) for k, v in rss.items()})


@dataclass
class Main:
    baseline: Server
    webhooks: dict[str, Server]               # VARIANTS -> server
    series: dict[str, Series]                 # "{who} {path}" -> runs
    memory: dict[str, Memory] = field(default_factory=dict)
    answers: dict[str, Answers] = field(default_factory=dict)


def main_comparison(fleet: Fleet, measurer: Measurer, inp: Inputs, s: Settings,
                    log: Callable[[str], None]) -> Main:
    def start(name: str, argv: Callable[[int], list[str]]) -> Server:
        port = free_port()
        return fleet.start(name, argv(port), port)

    baseline = start("baseline", lambda p: baseline_argv(p, inp.certs))
    policies = ROOT / "policies"
    webhooks = {
        "webhook": start("webhook", lambda p: webhook_argv(p, inp.certs, policies, workers=s.workers)),
        "webhook-off": start("webhook-memo-off",
                             lambda p: webhook_argv(p, inp.certs, policies, workers=s.workers, memo=False)),
        "webhook-new": start("webhook-never-seen",
                             lambda p: webhook_argv(p, inp.certs, policies, workers=s.workers)),
    }
    mix = [b for _, b in inp.mix]
    answers = {baseline.name: preflight(baseline, mix, PATHS)}
    for variant, server in webhooks.items():
        bodies = [b for _, b in inp.never_seen] if variant == "webhook-new" else mix
        answers[server.name] = preflight(server, bodies, PATHS)
    repeat, new = answers["webhook"], answers["webhook-never-seen"]
    log(f"preflight: every body answered on both paths by every server; webhook: {repeat.patched} patched, "
        f"{repeat.denied} denied of {repeat.answers}; never-seen mix: {new.patched} patched, {new.denied} denied")
    if (repeat.patched, repeat.denied) != (new.patched, new.denied):
        log("WARNING: the never-seen mix is not decided as the repeat mix (its label changed a decision)")

    log(f"main comparison: corpus mix, {s.repeats} x {s.duration:g}s per figure")
    jobs = []
    for path in PATHS:
        jobs.append(Job(f"baseline {path}", baseline, _query(path), inp.mix_file))
        for variant, server in webhooks.items():
            bodies = inp.never_seen_file if variant == "webhook-new" else inp.mix_file
            jobs.append(Job(f"{variant} {path}", server, _query(path), bodies, webhook=True))
    series = measurer.measure(jobs, repeats=s.repeats, duration=s.duration)
    mem = {"baseline": memory(baseline.pid), **{v: memory(w.pid) for v, w in webhooks.items()}}
    return Main(baseline, webhooks, series, mem, answers)


def pod_size(measurer: Measurer, main: Main, inp: Inputs, s: Settings) -> dict[str, Series]:
    jobs = []
    for n in CONTAINERS:
        # the baseline's handler is the same for both paths: measured on /mutate
        jobs.append(Job(f"baseline {n}c", main.baseline, _query("/mutate"), inp.pod_files[n]))
        for variant in SCALING_VARIANTS:
            server = main.webhooks[variant]
            jobs += [Job(f"{variant} {path} {n}c", server, _query(path), inp.pod_files[n], webhook=True)
                     for path in PATHS]
    return measurer.measure(jobs, repeats=s.repeats, duration=s.scale_duration)


@dataclass
class Policies:
    series: dict[str, Series]
    memory: dict[int, Memory]                  # policy count -> the default webhook's


def policy_count(fleet: Fleet, measurer: Measurer, main: Main, inp: Inputs, s: Settings) -> Policies:
    servers: dict[tuple[str, int], Server] = {}
    for n in POLICY_COUNTS:
        d = corpus.scaling_policy_dir(n, inp.tmp / f"policies-{n}")
        for variant in SCALING_VARIANTS:
            port = free_port()
            argv = webhook_argv(port, inp.certs, d, workers=s.workers, memo=variant == "webhook")
            servers[variant, n] = fleet.start(f"{variant}-{n}-policies", argv, port)
            preflight(servers[variant, n], [inp.pods[1]], ("/mutate",))
    try:
        series = measurer.measure([
            Job("baseline 1c ", main.baseline, _query("/mutate"), inp.pod_files[1]),
            *[Job(f"{v} /mutate {n} policies", server, _query("/mutate"), inp.pod_files[1], webhook=True)
              for (v, n), server in servers.items()],
        ], repeats=s.repeats, duration=s.scale_duration)
        mem = {n: memory(server.pid) for (v, n), server in servers.items() if v == "webhook"}
    finally:
        for server in servers.values():
            fleet.stop(server)
    return Policies(series, mem)


def soak(load: LoadGenerator, webhook: Server, inp: Inputs, s: Settings) -> dict[str, Any]:
    """RSS growth over `s.soak` requests of the mix, /mutate and /validate alternating,
    after `s.settle` requests to settle; RSS sampled every 0.25 s meanwhile."""
    paths = (_query("/mutate"), _query("/validate"))
    load.run(webhook.url("/mutate"), inp.mix_file, 60, server_pid=webhook.pid, stop_after=s.settle, paths=paths)
    before = memory(webhook.pid)
    samples: list[int] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.25):
            samples.append(memory(webhook.pid).rss_kib)

    started = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = load.run(webhook.url("/mutate"), inp.mix_file, max(60, s.soak // 100), server_pid=webhook.pid,
                   stop_after=s.soak, paths=paths)
    seconds = time.perf_counter() - started
    stop_sampling.set()
    sampler.join()
    after = memory(webhook.pid)
    rss = samples or [after.rss_kib]
    # RSS at 10%, 25%, 50%, 75% and 100% of the soak: a step at the start and a steady
    # climb (a leak) look alike in before/after, not in this curve
    curve = [rss[min(len(rss) - 1, int(q * len(rss)))] / 1024 for q in (0.1, 0.25, 0.5, 0.75)]
    curve.append(after.rss_mib)
    return {"requests": run.requests, "errors": run.errors, "seconds": seconds, "rps": run.rps,
            "rss_before_mib": before.rss_mib, "rss_after_mib": after.rss_mib,
            "rss_min_mib": min(rss) / 1024, "rss_max_mib": max(rss) / 1024, "samples": len(rss),
            "rss_curve_mib": curve, "growth_from_10pct": 100 * (after.rss_mib - curve[0]) / curve[0],
            "peak_mib": after.peak_mib, "settle_requests": s.settle,
            "growth_pct": 100 * (after.rss_kib - before.rss_kib) / before.rss_kib}


@dataclass
class Multi:
    workers: int
    series: dict[str, Series]
    memory: Memory


def several_workers(fleet: Fleet, measurer: Measurer, main: Main, inp: Inputs, s: Settings) -> Multi:
    n = s.multi_workers
    port = free_port()
    server = fleet.start(f"webhook-{n}-workers", webhook_argv(port, inp.certs, ROOT / "policies", workers=n), port)
    try:
        preflight(server, [b for _, b in inp.mix], PATHS)
        series = measurer.measure([
            job for path in PATHS
            for job in (Job(f"baseline {path} ", main.baseline, _query(path), inp.mix_file),
                        Job(f"webhook x{n} {path}", server, _query(path), inp.mix_file, webhook=True))
        ], repeats=s.repeats, duration=s.duration)
        return Multi(n, series, memory(server.pid))
    finally:
        fleet.stop(server)
