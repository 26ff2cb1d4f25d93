"""The benchmark's targets, in one place: the report judges each figure against these,
and the table in docs/performance.md is generated from them (`python -m bench.targets`;
a test checks the docs match).

Issue 7's targets are ratios within one run (concurrency 32, shipped policies) and a
few absolute figures. Issue 21 adds one for rollout repeats, and a comparison between
two runs (pods never seen before no slower after a change than before it), which one
run cannot judge: the report prints the figure, `--compare` sets it against an
earlier run's.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    what: str          # what is measured, as the docs table says it
    limit: float
    at_least: bool     # the figure must be >= limit (else <=, or < when `strict`)
    unit: str          # "x" (a ratio to the baseline), " ms", " MiB", " s", "%"
    issue: int
    strict: bool = False

    @property
    def text(self) -> str:
        """The limit as the report prints it: '>= 0.75x', '<= 64 MiB', '< 5%'."""
        op = ">=" if self.at_least else ("<" if self.strict else "<=")
        return f"{op} {self.limit:g}{self.unit}"

    def verdict(self, value: float) -> str:
        if math.isnan(value):
            return "n/a"
        if self.at_least:
            ok = value >= self.limit
        else:
            ok = value < self.limit if self.strict else value <= self.limit
        return "PASS" if ok else "MISS"


# Issue 7. The throughput and p99 limits apply to /mutate and /validate, each with the
# memo as it serves and with it off; the 50-container one to both endpoints.
THROUGHPUT = Limit("throughput, webhook / baseline (/mutate, /validate; corpus mix)", 0.75, True, "x", 7)
P99 = Limit("p99 latency, webhook / baseline (/mutate, /validate; corpus mix)", 1.5, False, "x", 7)
POLICIES_100 = Limit("throughput with 100 InjectionPolicies / baseline (/mutate, 1-container pod)",
                     0.5, True, "x", 7)
CONTAINERS_50 = Limit("throughput on a 50-container pod / baseline on the same pod", 0.3, True, "x", 7)
CPU_MS_200K = Limit("CPU per review of a 200 KiB pod, in process", 2.0, False, " ms", 7)
RSS_MIB = Limit("peak RSS per worker", 64.0, False, " MiB", 7)
RSS_RATIO = Limit("peak RSS, webhook / baseline", 1.3, False, "x", 7)
RSS_GROWTH = Limit("RSS growth over 200,000 requests (`make bench SOAK=200000`)", 5.0, False, "%", 7,
                   strict=True)
READY_S = Limit("start to ready (spawn until GET /readyz answers 200)", 1.5, False, " s", 7)

# Issue 21: a rollout's replicas (the repeat mix, with the memo as it serves).
REPEATS = Limit("throughput on rollout repeats, webhook / baseline (/mutate, /validate; repeat mix)",
                0.8, True, "x", 21)
# Issue 21: pods never seen before, no slower than before a change: the never-seen
# mix's ratio to the baseline in a later run over the same in an earlier run.
NEVER_SEEN_VS_BEFORE = Limit("never-seen mix, ratio to the baseline: this run / an earlier run "
                             "(`--compare`)", 1.0, True, "x", 21)

ALL = (THROUGHPUT, P99, POLICIES_100, CONTAINERS_50, CPU_MS_200K, RSS_MIB, RSS_RATIO, RSS_GROWTH, READY_S,
       REPEATS, NEVER_SEEN_VS_BEFORE)


def markdown() -> str:
    """The docs table of the targets."""
    rows = ["| issue | figure | limit |", "| --- | --- | --- |"]
    rows += [f"| {t.issue} | {t.what} | {t.text} |" for t in ALL]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
