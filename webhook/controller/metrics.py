"""The controller's Prometheus metrics (its own process: one registry, no multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLICY_PODS = Gauge("webhook_controller_policy_pods", "Pods a policy matches, by state (current, stale, skipped)",
                    ["policy", "state"])
POLICY_WORKLOADS = Gauge("webhook_controller_policy_workloads",
                         "Workloads with pods a policy matches, by state (current, stale, skipped)",
                         ["policy", "state"])
ROLLOUT_STATE = Gauge("webhook_controller_rollout_state",
                      "1 for a policy's rollout state (idle, rolling, paused, halted), 0 for the others",
                      ["policy", "state"])
LEADER = Gauge("webhook_controller_leader", "1 while this replica holds the Lease and acts")
LISTS = Counter("webhook_controller_lists_total", "Full lists of a resource, by why (initial, expired, requested, "
                "after_error)", ["resource", "reason"])
WATCH_ERRORS = Counter("webhook_controller_watch_errors_total", "Failed lists and watches, retried with backoff",
                       ["resource"])
EVENT_CPU = Histogram("webhook_controller_watch_event_cpu_seconds", "CPU time to apply one watch event",
                      ["resource"], buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05))
EVENTS = Counter("webhook_controller_events_total", "Kubernetes Events written, by reason and how (created, "
                 "repeated)", ["reason", "action"])
EVENTS_SUPPRESSED = Counter("webhook_controller_events_suppressed_total",
                            "Events not written because of the rate limit, by reason", ["reason"])
PASSES = Counter("webhook_controller_reconcile_passes_total", "Reconcile passes, by result", ["result"])
PASS_SECONDS = Histogram("webhook_controller_reconcile_pass_seconds", "Wall time of one reconcile pass")
STATUS_WRITES = Counter("webhook_controller_status_writes_total", "Writes of the status ConfigMap, by result",
                        ["result"])
