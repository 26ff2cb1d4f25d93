"""Prometheus metrics. Names follow Prometheus conventions (`_total`, `_seconds`).

With several worker processes, prometheus-client's multiprocess mode is used: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before the workers import this module,
each worker writes its values there, and /metrics on any worker sums them. Gauges
say how to combine workers (`multiprocess_mode`); it is ignored in one process.
A PROMETHEUS_MULTIPROC_DIR given from outside must exist: it is checked on import,
because prometheus-client writes its files there as the metrics below are defined.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client's own file names: `counter_<pid>.db`, `gauge_livesum_<pid>.db`, ...
_MULTIPROC_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")

# prometheus-client enters multiprocess mode when the variable is set at all, even empty.
if MULTIPROC_ENV in os.environ and not os.path.isdir(os.environ[MULTIPROC_ENV]):
    # Raised at import, before any command can catch it: a clear line, not a traceback
    # ending in FileNotFoundError for gauge_livemin_<pid>.db.
    raise SystemExit(f"webhook: {MULTIPROC_ENV}={os.environ[MULTIPROC_ENV]!r} is not a directory; "
                     "create it or unset the variable")

REQUESTS = Counter("webhook_requests_total", "Admission requests answered",
                   ["endpoint", "operation", "outcome"])
# Millisecond resolution at the low end: a healthy answer takes about a millisecond.
LATENCY = Histogram("webhook_request_duration_seconds", "Time to answer an admission request",
                    ["endpoint"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0))
SHED = Counter("webhook_shed_requests_total", "Requests refused with 429 under overload", ["endpoint"])
CONNECTIONS_DROPPED = Counter("webhook_dropped_connections_total",
                              "Connections closed by a limit: limit (too many open), client_limit (too many open from "
                              "one address), head_timeout, "
                              "head_too_large", ["reason"])
BAD_REQUESTS = Counter("webhook_bad_requests_total", "Requests refused as malformed", ["endpoint"])
INJECTIONS = Counter("webhook_injections_total", "Policies applied to pods", ["policy"])
SHADOW_INJECTIONS = Counter("webhook_shadow_injections_total",
                            "Injections computed but not applied (mode: Shadow)", ["policy"])
VIOLATIONS = Counter("webhook_violations_total", "Validation rule violations",
                     ["policy", "rule", "action"])
DECISION_MEMO = Counter("webhook_decision_memo_total",
                        "Decisions by memo use: hit (an identical pod was decided before), "
                        "miss (decided and remembered), skip (not memoisable)", ["endpoint", "result"])
POLICY_RELOADS = Counter("webhook_policy_reload_total", "Policy reload attempts", ["result"])
POLICY_LAST_RELOAD_SUCCESS = Gauge("webhook_policy_last_reload_success_timestamp_seconds",
                                   "When the serving policy set was last loaded",
                                   multiprocess_mode="livemin")  # the most stale worker
# An info metric reads 1 however many workers serve the revision (livesum would read the
# worker count); during a reload the old and the new revision may both read 1 for a moment.
POLICY_INFO = Gauge("webhook_policy_set_info", "The serving policy set's revision", ["revision"],
                    multiprocess_mode="livemax")
CERT_NOT_AFTER = Gauge("webhook_certificate_expiry_timestamp_seconds",
                       "When the serving certificate expires", multiprocess_mode="livemin")
CERT_RELOADS = Counter("webhook_certificate_reload_total", "Certificate reload attempts", ["result"])
# The namespace label cache (namespace_cache.py), running while a policy has a namespaceSelector.
NAMESPACE_CACHE_STATE = Gauge("webhook_namespace_cache_state",
                              "Namespace label cache state per worker: off (no policy has a "
                              "namespaceSelector), syncing (before the first list), synced, stale (out of "
                              "touch with the API server)",
                              ["state"], multiprocess_mode="livesum")  # workers in each state
NAMESPACE_CACHE_NAMESPACES = Gauge("webhook_namespace_cache_namespaces", "Namespaces in the label cache",
                                   multiprocess_mode="livemax")
NAMESPACE_CACHE_LISTS = Counter("webhook_namespace_cache_lists_total",
                                "Full lists of the namespaces: initial, expired (410 Gone), after_error",
                                ["reason"])
NAMESPACE_CACHE_ERRORS = Counter("webhook_namespace_cache_errors_total",
                                 "Failed namespace list or watch requests")


log = logging.getLogger(__name__)

_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: the lookup costs microseconds on every request.
    Label values come from policies and a fixed vocabulary, so the cache stays small."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


class Tally:
    """Requests and their latencies, kept in a plain dict by what they touch and folded into
    the Prometheus metrics in batches. A locked counter or histogram update costs several
    microseconds on the request path (one per policy applied: a hundred with 100
    policies); appending to a list costs a fraction of one. Single-threaded use: the
    event loop's."""

    def __init__(self, fold: Callable[[Any, list[float]], None]) -> None:
        self._fold = fold
        self._pending: dict[Hashable, list[float]] = {}

    def add(self, key: Hashable, seconds: float) -> None:
        samples = self._pending.get(key)
        if samples is None:
            self._pending[key] = [seconds]
        else:
            samples.append(seconds)

    def fold(self) -> None:
        pending, self._pending = self._pending, {}
        for key, samples in pending.items():
            try:
                self._fold(key, samples)
            except Exception:  # a metrics fault must not stop the folding, nor the server
                log.exception("could not record metrics")


def exposition() -> tuple[bytes, str]:
    """The metrics page, summed over every worker when there are several."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def clear_multiproc_dir() -> None:
    """Remove every process's metric files from PROMETHEUS_MULTIPROC_DIR, before workers start.

    Files of processes that are not workers would otherwise be summed for ever: the
    supervisor's own, from its pre-start policy load (one more process serving the
    start revision, a reload timestamp pinned at start), and those of an earlier run
    (prometheus-client asks for the directory to be wiped between runs). The
    supervisor keeps no values there afterwards: it writes no metrics once it forks."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for name in os.listdir(directory):
        if _MULTIPROC_FILE.match(name):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they were real)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


if os.environ.get(MULTIPROC_ENV):
    # A process that exits normally takes its live gauges with it; the supervisor does
    # this for workers that die, but a single-worker server has no supervisor.
    atexit.register(worker_exited, os.getpid())
