"""The printed report: one section per phase, each figure judged against bench/targets.py,
then the summaries. Every section also fills the run's JSON (`--json`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import targets as T
from bench.inprocess import ENDPOINTS
from bench.load import CONCURRENCY, Series
from bench.phases import CONTAINERS, PATHS, POLICY_COUNTS, SCALING_VARIANTS, Main, Multi, Policies, Ready
from bench.settings import Settings

# How tables call each webhook variant, and the suffix of its issue-7 verdicts.
NAMES = {"webhook": "webhook", "webhook-off": "webhook, memo off", "webhook-new": "webhook, never-seen mix"}
SUFFIX = {"webhook": "", "webhook-off": " (memo off)"}
# The issue-21 mixes: (name, variant measured on it)
MIXES = (("repeat", "webhook"), ("never-seen", "webhook-new"), ("repeat, memo off", "webhook-off"))

# Every section's title begins so (the tests look for each).
SECTIONS = ("== Machine ==", "== Corpus ==", "== Throughput and latency", "== Memory", "== Pod size",
            "== Policy count", "== CPU per review", "== Start to ready", "== RSS growth",
            "== Webhook with --workers", "== Rollout repeats and pods never seen before",
            "== Issue 7 targets", "== Issue 21 targets")


class Table:
    def __init__(self, *headers: str) -> None:
        self.headers, self.rows = headers, []

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else f"{c}" for c in cells])

    def render(self) -> str:
        widths = [max(len(str(x)) for x in col) for col in zip(self.headers, *self.rows)]

        def line(cells: list[str] | tuple[str, ...]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

        return "\n".join([line(self.headers), line(["-" * w for w in widths]), *map(line, self.rows)])


def f0(x: float) -> str:
    return f"{x:,.0f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def show(title: str, table: Table, *notes: str) -> None:
    if title:
        print(title)
    print(table.render())
    for note in notes:
        print(note)
    print()


@dataclass
class Report:
    settings: Settings
    results: dict[str, Any] = field(default_factory=dict)          # the run's JSON
    verdicts: list[tuple[str, str, str, str]] = field(default_factory=list)   # issue 7: figure, value, limit, result
    verdicts_21: list[tuple[str, str, str, str]] = field(default_factory=list)

    def _judge(self, into: list[tuple[str, str, str, str]], name: str, value: float, shown: str,
               limit: T.Limit) -> str:
        result = limit.verdict(value)
        into.append((name, shown, limit.text, result))
        return result

    @property
    def _reps(self) -> str:
        return f"medians of {self.settings.repeats} runs"

    def header(self, machine: dict[str, str], corpus_line: str) -> None:
        self.results["machine"] = machine
        print("== Machine ==")
        for k, v in machine.items():
            print(f"{k:<24} {v}")
        print()
        print("== Corpus ==")
        print(corpus_line + "\n", flush=True)

    def main(self, main: Main) -> None:
        s = self.settings
        t = Table("endpoint", "server", "req/s", "p50 ms", "p99 ms", "errors", "server CPU %", "loadgen CPU %")
        for path in PATHS:
            for who in ("baseline", *main.webhooks):
                x = main.series[f"{who} {path}"]
                t.add(path, NAMES.get(who, who), f0(x.rps), f2(x.p50_ms), f2(x.p99_ms), x.errors,
                      f0(x.server_cpu), f0(x.loadgen_cpu))
        show(f"== Throughput and latency: corpus mix, concurrency {CONCURRENCY}, {self._reps} of "
             f"{s.duration:g}s, webhook with {s.workers} worker(s) and the shipped policies ==", t)
        t = Table("ratio webhook / baseline", "value", "target", "result")
        ratios: dict[str, float] = {}
        for variant in SCALING_VARIANTS:
            for path in PATHS:
                w, b = main.series[f"{variant} {path}"], main.series[f"baseline {path}"]
                for what, value, limit in ((f"throughput {path}", w.rps / b.rps, T.THROUGHPUT),
                                           (f"p50 {path}", w.p50_ms / b.p50_ms, None),
                                           (f"p99 {path}", w.p99_ms / b.p99_ms, T.P99)):
                    name = what + SUFFIX[variant]
                    ratios[name] = value
                    if limit is None:
                        t.add(name, f"{value:.2f}x", "-", "info")
                    else:
                        t.add(name, f"{value:.2f}x", limit.text,
                              self._judge(self.verdicts, f"{name} ratio", value, f"{value:.2f}x", limit))
        show("", t)
        self.results["main"] = {k: v.as_dict() for k, v in main.series.items()}
        self.results["ratios"] = ratios
        self.results["preflight"] = {k: vars(v) for k, v in main.answers.items()}

    def memory(self, main: Main) -> None:
        mem = main.memory
        t = Table("server", "processes", "peak RSS MiB", "RSS MiB", "target", "result")
        w_peak, b_peak = mem["webhook"].max_process_peak_mib, mem["baseline"].peak_mib
        ratio = w_peak / b_peak
        t.add("baseline", len(mem["baseline"].per_process), f"{b_peak:.1f}", f"{mem['baseline'].rss_mib:.1f}",
              "-", "info")
        t.add(f"webhook ({self.settings.workers} worker(s))", len(mem["webhook"].per_process),
              f"{mem['webhook'].peak_mib:.1f}", f"{mem['webhook'].rss_mib:.1f}", f"{T.RSS_MIB.text} per worker",
              self._judge(self.verdicts, "peak RSS per worker", w_peak, f"{w_peak:.1f} MiB", T.RSS_MIB))
        t.add("webhook / baseline (largest process)", "", f"{ratio:.2f}x", "", T.RSS_RATIO.text,
              self._judge(self.verdicts, "peak RSS webhook / baseline", ratio, f"{ratio:.2f}x", T.RSS_RATIO))
        new = mem["webhook-new"]
        t.add(NAMES["webhook-new"], len(new.per_process), f"{new.peak_mib:.1f}", f"{new.rss_mib:.1f}", "-", "info")
        show("== Memory (after the main runs; VmHWM = peak RSS, summed over the server's processes) ==", t)
        self.results["memory"] = {k: {"peak_mib": m.peak_mib, "rss_mib": m.rss_mib, "per_process": m.per_process}
                                  for k, m in mem.items()}

    def pod_size(self, series: dict[str, Series]) -> None:
        t = Table("containers", "webhook", "baseline req/s", "/mutate req/s", "ratio", "/mutate p99 ms",
                  "/validate req/s", "ratio", "/validate p99 ms", "target", "result")
        limit = T.CONTAINERS_50
        for variant in SCALING_VARIANTS:
            for n in CONTAINERS:
                b = series[f"baseline {n}c"]
                m, v = series[f"{variant} /mutate {n}c"], series[f"{variant} /validate {n}c"]
                rm, rv = m.rps / b.rps, v.rps / b.rps
                target, res = "-", "info"
                if n == 50:
                    target = limit.text
                    res = "/".join(self._judge(self.verdicts, f"50-container pod {what}{SUFFIX[variant]}", r,
                                               f"{r:.2f}x", limit)
                                   for what, r in (("/mutate", rm), ("/validate", rv)))
                t.add(n, NAMES[variant], f0(b.rps), f0(m.rps), f"{rm:.2f}x", f2(m.p99_ms), f0(v.rps),
                      f"{rv:.2f}x", f2(v.p99_ms), target, res)
        show(f"== Pod size: one synthetic pod repeated, concurrency {CONCURRENCY}, {self._reps} of "
             f"{self.settings.scale_duration:g}s ==", t)
        self.results["containers"] = {k: v.as_dict() for k, v in series.items()}

    def policy_count(self, p: Policies) -> None:
        t = Table("policies", "webhook", "req/s", "ratio to baseline", "p50 ms", "p99 ms", "peak RSS MiB",
                  "target", "result")
        b = p.series["baseline 1c "]
        t.add("baseline", "", f0(b.rps), "1.00x", f2(b.p50_ms), f2(b.p99_ms), "", "-", "info")
        for variant in SCALING_VARIANTS:
            for n in POLICY_COUNTS:
                x = p.series[f"{variant} /mutate {n} policies"]
                r = x.rps / b.rps
                target, res = "-", "info"
                if n == 100:
                    target = T.POLICIES_100.text
                    res = self._judge(self.verdicts, f"100 policies /mutate{SUFFIX[variant]}", r, f"{r:.2f}x",
                                      T.POLICIES_100)
                t.add(n, NAMES[variant], f0(x.rps), f"{r:.2f}x", f2(x.p50_ms), f2(x.p99_ms),
                      f"{p.memory[n].peak_mib:.1f}" if variant == "webhook" else "", target, res)
        show(f"== Policy count: InjectionPolicies (shipped ones first, then one-label policies that all "
             f"match), 1-container pod, /mutate, {self._reps} of {self.settings.scale_duration:g}s ==", t)
        self.results["policies"] = {k: v.as_dict() for k, v in p.series.items()}

    def cpu(self, cpu: dict[str, float]) -> None:
        self.results["cpu_per_review_ms"] = {k: v * 1000 if not k.startswith("bytes/") else v
                                             for k, v in cpu.items()}
        t = Table("pod", "endpoint", "engine only ms", "parse_review + engine ms", "+ response ms",
                  "target", "result")
        limit = T.CPU_MS_200K
        for pod_label, name in (("200KiB", f"{cpu['bytes/200KiB'] / 1024:.0f} KiB pod"), ("1c", "1-container pod")):
            for ep in ENDPOINTS:
                e, pe, full = (cpu[f"{ep}/{pod_label}/{stage}"] * 1000
                               for stage in ("engine", "parse+engine", "parse+engine+response"))
                target, res = "-", "info"
                if pod_label == "200KiB":
                    target = limit.text
                    res = "/".join(limit.verdict(x) for x in (e, pe, full))
                    self._judge(self.verdicts, f"200 KiB pod CPU, {ep} (engine only)", e, f"{e:.2f} ms", limit)
                    self._judge(self.verdicts, f"200 KiB pod CPU, {ep} (with parse_review)", pe, f"{pe:.2f} ms",
                                limit)
                t.add(name, ep, f"{e:.3f}", f"{pe:.3f}", f"{full:.3f}", target, res)
        rounds = self.settings.cpu_rounds
        show(f"== CPU per review, in process (time.process_time; median of {rounds} rounds), shipped policies ==",
             t)

    def ready(self, r: Ready) -> None:
        self.results["ready_s"] = {k: {"median": statistics.median(v), "samples": v, "rss_at_ready_mib": r.rss_mib[k]}
                                   for k, v in r.samples.items()}
        t = Table("server", "median s", "samples s", "RSS at ready MiB", "target", "result")
        rw = r.median("webhook")
        t.add(f"webhook ({self.settings.workers} worker(s))", f"{rw:.3f}",
              " ".join(f"{x:.2f}" for x in r.samples["webhook"]), f"{r.rss_mib['webhook']:.1f}", T.READY_S.text,
              T.READY_S.verdict(rw))
        t.add("baseline", f"{r.median('baseline'):.3f}", " ".join(f"{x:.2f}" for x in r.samples["baseline"]),
              f"{r.rss_mib['baseline']:.1f}", "-", "info")
        show(f"== Start to ready: spawn until GET /readyz answers 200 over TLS "
             f"(median of {len(r.samples['webhook'])}) ==", t)
        self._judge(self.verdicts, "start to ready", rw, f"{rw:.2f} s", T.READY_S)

    def soak(self, soak: dict[str, Any]) -> None:
        self.results["soak"] = soak
        limit = T.RSS_GROWTH
        t = Table("requests", "errors", "req/s", "RSS before MiB", "at 10/25/50/75% MiB", "RSS after MiB",
                  "growth", "target", "result")
        t.add(f"{soak['requests']:,}", soak["errors"], f0(soak["rps"]), f"{soak['rss_before_mib']:.1f}",
              " ".join(f"{x:.1f}" for x in soak["rss_curve_mib"][:4]), f"{soak['rss_after_mib']:.1f}",
              f"{soak['growth_pct']:+.2f}%", limit.text, limit.verdict(soak["growth_pct"]))
        show(f"== RSS growth: {soak['requests']:,} requests (corpus mix, /mutate and /validate alternating), "
             f"after the runs above and {soak['settle_requests']:,} requests to settle; the issue's check is "
             f"200,000 (make bench SOAK=200000) ==", t,
             f"growth from 10% of the soak to its end: {soak['growth_from_10pct']:+.2f}% "
             f"({soak['samples']} samples, min {soak['rss_min_mib']:.1f}, max {soak['rss_max_mib']:.1f} MiB); "
             f"peak RSS (VmHWM) over the whole run, pod-size runs included: {soak['peak_mib']:.1f} MiB")
        label = "RSS growth" + ("" if soak["requests"] >= 200000 else f" (over {soak['requests']:,}, not 200,000)")
        self._judge(self.verdicts, label, soak["growth_pct"], f"{soak['growth_pct']:+.2f}%", limit)

    def multi(self, m: Multi) -> None:
        n = m.workers
        t = Table("endpoint", "server", "req/s", "p50 ms", "p99 ms", "errors", "ratio req/s", "ratio p99")
        for path in PATHS:
            b, w = m.series[f"baseline {path} "], m.series[f"webhook x{n} {path}"]
            t.add(path, "baseline", f0(b.rps), f2(b.p50_ms), f2(b.p99_ms), b.errors, "", "")
            t.add(path, f"webhook x{n}", f0(w.rps), f2(w.p50_ms), f2(w.p99_ms), w.errors,
                  f"{w.rps / b.rps:.2f}x", f"{w.p99_ms / b.p99_ms:.2f}x")
        notes = []
        for path in PATHS:
            splits = "; ".join("/".join(f"{x:.0f}" for x in r.server_cpu_split[:n + 1])
                               for r in m.series[f"webhook x{n} {path}"].runs)
            notes.append(f"server CPU % per process, each run ({path}): {splits}")
        per = ", ".join(f"{role} {hwm / 1024:.1f}" for _, hwm, _, role in m.memory.per_process)
        largest = m.memory.max_process_peak_mib
        notes.append(f"peak RSS (VmHWM): {m.memory.peak_mib:.1f} MiB summed over {len(m.memory.per_process)} "
                     f"processes ({per} MiB); largest process {largest:.1f} MiB "
                     f"({T.RSS_MIB.verdict(largest)} {T.RSS_MIB.text})")
        show(f"== Webhook with --workers {n} vs the single-process baseline: corpus mix, {self._reps} of "
             f"{self.settings.duration:g}s ==", t, *notes)
        self.results["multi_workers"] = {"workers": n, "series": {k: v.as_dict() for k, v in m.series.items()},
                                         "peak_mib": m.memory.peak_mib, "per_process": m.memory.per_process}

    def mixes(self, series: dict[str, Series], earlier: dict[str, Any] | None) -> None:
        """Issue 21: the webhook as it serves on rollout repeats and on pods never seen
        before, each against the baseline of this run; the memo off for reference."""
        before = (earlier or {}).get("mixes") or {}
        t = Table("mix", "endpoint", "webhook req/s", "baseline req/s", "ratio", "p99 ratio", "memo hits",
                  *(("earlier ratio", "this / earlier") if earlier is not None else ()), "target", "result")
        out: dict[str, dict[str, dict[str, float]]] = {}
        for mix, variant in MIXES:
            for path in PATHS:
                w, b = series[f"{variant} {path}"], series[f"baseline {path}"]
                ratio = w.rps / b.rps
                out.setdefault(mix, {})[path] = {"ratio": ratio, "rps": w.rps, "baseline_rps": b.rps,
                                                 "p99_ratio": w.p99_ms / b.p99_ms, "memo_hit_share": w.memo_hit_share}
                target, res, compared = "-", "info", ()
                if mix == "repeat":
                    target, res = T.REPEATS.text, self._judge(self.verdicts_21, f"rollout repeats {path}", ratio,
                                                              f"{ratio:.2f}x", T.REPEATS)
                if earlier is not None:
                    then = (before.get(mix) or {}).get(path, {}).get("ratio", math.nan)
                    compared = ("-", "-") if math.isnan(then) else (f"{then:.2f}x", f"{ratio / then:.2f}x")
                    if mix == "never-seen":
                        target, res = T.NEVER_SEEN_VS_BEFORE.text, self._judge(
                            self.verdicts_21, f"never-seen pods {path}, this run / earlier", ratio / then,
                            f"{ratio / then:.2f}x", T.NEVER_SEEN_VS_BEFORE)
                t.add(mix, path, f0(w.rps), f0(b.rps), f"{ratio:.2f}x", f"{w.p99_ms / b.p99_ms:.2f}x",
                      pct(w.memo_hit_share), *compared, target, res)
        notes = ["repeat: the corpus mix, each pod again and again under new request uids (a rollout's replicas); "
                 "never-seen: the same pods, each request with a label of its own, on a webhook of its own (every "
                 "request a pod not seen before); memo hits: of the memo's decisions in the measured runs"]
        if earlier is None:
            notes.append("never-seen against an earlier run: pass --compare EARLIER.json")
        elif not before:
            notes.append("the earlier run's JSON has no never-seen figures (it predates them): nothing to compare")
        show(f"== Rollout repeats and pods never seen before (issue 21): corpus mix, the webhook as it serves, "
             f"ratios to this run's baseline, {self._reps} of {self.settings.duration:g}s ==", t, *notes)
        self.results["mixes"] = out

    def summary(self, elapsed: float, errors: int) -> None:
        t = Table("target", "figure", "limit", "result")
        for row in self.verdicts:
            t.add(*row)
        passed = sum(v[3] == "PASS" for v in self.verdicts)
        show(f"== Issue 7 targets (one run, {time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f}s) ==", t,
             f"{passed} of {len(self.verdicts)} targets met")
        t = Table("target", "figure", "limit", "result")
        for row in self.verdicts_21:
            t.add(*row)
        passed = sum(v[3] == "PASS" for v in self.verdicts_21)
        show("== Issue 21 targets (rollout repeats in this run; never-seen pods against --compare's run) ==", t,
             f"{passed} of {len(self.verdicts_21)} targets met")
        if errors:
            print(f"WARNING: {errors} failed requests during the measurements (see the per-run log above)")
        self.results["targets"] = [dict(zip(("target", "figure", "limit", "result"), v)) for v in self.verdicts]
        self.results["targets_issue21"] = [dict(zip(("target", "figure", "limit", "result"), v))
                                           for v in self.verdicts_21]

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        print(f"\nfigures written to {path}")
