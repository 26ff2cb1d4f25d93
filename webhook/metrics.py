"""Prometheus metrics. Names follow Prometheus conventions (`_total`, `_seconds`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("webhook_requests_total", "Admission requests answered",
                   ["endpoint", "operation", "outcome"])
# Millisecond resolution at the low end: a healthy answer takes about a millisecond.
LATENCY = Histogram("webhook_request_duration_seconds", "Time to answer an admission request",
                    ["endpoint"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0))
BAD_REQUESTS = Counter("webhook_bad_requests_total", "Requests refused as malformed", ["endpoint"])
INJECTIONS = Counter("webhook_injections_total", "Policies applied to pods", ["policy"])
SHADOW_INJECTIONS = Counter("webhook_shadow_injections_total",
                            "Injections computed but not applied (mode: Shadow)", ["policy"])
VIOLATIONS = Counter("webhook_violations_total", "Validation rule violations",
                     ["policy", "rule", "action"])
POLICY_RELOADS = Counter("webhook_policy_reload_total", "Policy reload attempts", ["result"])
POLICY_LAST_RELOAD_SUCCESS = Gauge("webhook_policy_last_reload_success_timestamp_seconds",
                                   "When the serving policy set was last loaded")
POLICY_INFO = Gauge("webhook_policy_set_info", "The serving policy set's revision", ["revision"])
CERT_NOT_AFTER = Gauge("webhook_certificate_expiry_timestamp_seconds",
                       "When the serving certificate expires")
CERT_RELOADS = Counter("webhook_certificate_reload_total", "Certificate reload attempts", ["result"])
