"""Kubernetes Events (events.k8s.io/v1) on the owning workload, or the bare pod.

Deduplicated and rate-limited so that 10,000 stale pods do not flood the API server:
- one Event per (workload, policy, revisions, reason). Its name is derived from that key,
  so a new leader that records the same thing finds the Event its predecessor wrote (409
  AlreadyExists) and adopts it instead of writing a second one;
- a repeat of the same key counts in the Event's `series` (count, lastObservedTime), written
  at most every SERIES_INTERVAL_SECONDS whatever the number of repeats;
- every write takes a token from one bucket (WRITES_PER_SECOND, WRITE_BURST); without one
  the Event is not written and counted in webhook_controller_events_suppressed_total, and
  `record` answers False so the caller may try again on a later pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from webhook.controller import metrics
from webhook.controller.model import (BARE_POD, CRONJOB, DAEMONSET, DEPLOYMENT, INJECTION_SKIPPED, JOB,
                                      OTHER_PREFIX, RUNTIME_RESTARTED, RUNTIME_ROLLOUT_HALTED, RUNTIME_STALE,
                                      RUNTIME_UPDATED_IN_PLACE, STATEFULSET, WorkloadRef)
from webhook.policy.common import ANNOTATION_PREFIX

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = f"{ANNOTATION_PREFIX}/webhook-controller"
WRITES_PER_SECOND = 5.0
WRITE_BURST = 50
SERIES_INTERVAL_SECONDS = 60.0
NOTE_LIMIT = 1024          # events.k8s.io/v1 refuses a longer note
WARNINGS = frozenset({RUNTIME_ROLLOUT_HALTED, INJECTION_SKIPPED})
ACTIONS = {RUNTIME_STALE: "Evaluate", RUNTIME_RESTARTED: "Restart", RUNTIME_UPDATED_IN_PLACE: "UpdateInPlace",
           RUNTIME_ROLLOUT_HALTED: "HaltRollout", INJECTION_SKIPPED: "Inject"}
API_VERSIONS = {DEPLOYMENT: "apps/v1", STATEFULSET: "apps/v1", DAEMONSET: "apps/v1", JOB: "batch/v1",
                CRONJOB: "batch/v1", BARE_POD: "v1"}


@dataclass
class _Seen:
    name: str
    count: int          # occurrences known to be in the Event
    pending: int = 0    # occurrences not written yet
    written_at: float = 0.0


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def regarding(ref: WorkloadRef, uid: str = "") -> dict[str, str]:
    if ref.kind.startswith(OTHER_PREFIX):
        api_version, _, kind = ref.kind.removeprefix(OTHER_PREFIX).rpartition("/")
    else:
        api_version, kind = API_VERSIONS.get(ref.kind, "v1"), ref.kind
    out = {"apiVersion": api_version, "kind": kind, "namespace": ref.namespace, "name": ref.name}
    if uid:
        out["uid"] = uid
    return out


def event_name(ref: WorkloadRef, reason: str, policy: str, revisions: str) -> str:
    digest = hashlib.sha256("\0".join((ref.kind, ref.namespace, ref.name, reason, policy, revisions)).encode())
    return f"{ref.name[:200]}.{digest.hexdigest()[:16]}"


class EventRecorder:
    """`record(ref, reason, note, policy, revisions)`: what rollout and status call. Writes only
    while `enabled()` (the leader) and not `dry_run` (then it logs what it would write)."""

    def __init__(self, api_client: Any, *, dry_run: bool = False, enabled: Callable[[], bool] = lambda: True,
                 instance: str | None = None, rate: float = WRITES_PER_SECOND, burst: int = WRITE_BURST,
                 series_interval: float = SERIES_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api_client = api_client
        self.dry_run = dry_run
        self._enabled = enabled
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self._bucket = TokenBucket(rate, burst, clock)
        self._series_interval = series_interval
        self._clock = clock
        self._seen: dict[tuple[WorkloadRef, str, str, str], _Seen] = {}
        self._lock = threading.Lock()
        self.recorded: list[tuple[str, str, str, str]] = []   # (reason, workload, policy, revisions), in order

    def record(self, ref: WorkloadRef, reason: str, note: str, policy: str, revisions: str | tuple[str, str], *,
               uid: str = "") -> bool:
        """Record one occurrence. True when it is in the cluster (or would be, in a dry run) or
        counted for the next series write; False when the rate limit held it back."""
        if not isinstance(revisions, str):
            revisions = f"{revisions[0] or '-'}->{revisions[1] or '-'}"
        if not self._enabled():
            return False
        key = (ref, reason, policy, revisions)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                seen.pending += 1
                self._flush_series(key, seen)
                return True
            if self.dry_run:
                log.info("dry run: would record %s on %s: %s", reason, ref, note,
                         extra={"event": "controller_event", "reason": reason, "policy": policy})
                self._seen[key] = _Seen(event_name(ref, reason, policy, revisions), 1)
                self.recorded.append((reason, str(ref), policy, revisions))
                return True
            if not self._bucket.take():
                metrics.EVENTS_SUPPRESSED.labels(reason=reason).inc()
                return False
            name = event_name(ref, reason, policy, revisions)
            count = self._create(ref, name, reason, note, policy, revisions, uid)
            if count is None:
                return False
            self._seen[key] = _Seen(name, count, 0, self._clock())
            self.recorded.append((reason, str(ref), policy, revisions))
            return True

    def flush(self) -> None:
        """Write the series counts due (each reconcile pass calls it)."""
        with self._lock:
            for key, seen in self._seen.items():
                if seen.pending:
                    self._flush_series(key, seen)

    def forget(self, keep: Callable[[WorkloadRef, str, str, str], bool]) -> None:
        """Drop what no longer needs remembering (workloads gone, revisions superseded)."""
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if keep(*k)}

    # -- writes -------------------------------------------------------------------------------

    def _create(self, ref: WorkloadRef, name: str, reason: str, note: str, policy: str, revisions: str,
                uid: str) -> int | None:
        from kubernetes.client.exceptions import ApiException
        current = revisions.rpartition("->")[2]
        body = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ref.namespace,
                             "annotations": {f"{ANNOTATION_PREFIX}/policy": policy,
                                             f"{ANNOTATION_PREFIX}/revisions": revisions}},
                "eventTime": _micro_time(), "reportingController": REPORTING_CONTROLLER,
                "reportingInstance": self.instance[:128], "action": ACTIONS.get(reason, reason),
                "reason": reason, "type": "Warning" if reason in WARNINGS else "Normal",
                "note": _note(f"{policy} ({revisions}): {note}" if current else f"{policy}: {note}"),
                "regarding": regarding(ref, uid)}
        try:
            self._call("POST", f"/apis/events.k8s.io/v1/namespaces/{ref.namespace}/events", body)
        except ApiException as exc:
            if exc.status == 409:
                # Another leader wrote it: the same occurrence, adopted as it is.
                metrics.EVENTS.labels(reason=reason, action="adopted").inc()
                return 1
            log.warning("event %s on %s not written: %s %s", reason, ref, exc.status, exc.reason,
                        extra={"event": "controller_event", "reason": reason})
            return None
        except Exception as exc:  # noqa: BLE001 - unreachable API server: a later pass tries again
            log.warning("event %s on %s not written: %s", reason, ref, exc, extra={"event": "controller_event"})
            return None
        metrics.EVENTS.labels(reason=reason, action="created").inc()
        return 1

    def _flush_series(self, key: tuple[WorkloadRef, str, str, str], seen: _Seen) -> None:
        if self.dry_run:
            seen.count += seen.pending
            seen.pending = 0
            return
        if self._clock() - seen.written_at < self._series_interval or not self._bucket.take():
            return
        ref, reason = key[0], key[1]
        count = seen.count + seen.pending
        patch = {"series": {"count": count, "lastObservedTime": _micro_time()}}
        try:
            self._call("PATCH", f"/apis/events.k8s.io/v1/namespaces/{ref.namespace}/events/{seen.name}", patch,
                       content_type="application/merge-patch+json")
        except Exception as exc:  # noqa: BLE001 - gone (its TTL) or unreachable: counted again later
            log.info("event series for %s on %s not written: %s", reason, ref, exc,
                     extra={"event": "controller_event"})
            seen.written_at = self._clock()
            return
        seen.count, seen.pending, seen.written_at = count, 0, self._clock()
        metrics.EVENTS.labels(reason=reason, action="repeated").inc()

    def _call(self, method: str, path: str, body: dict[str, Any], *, content_type: str = "application/json") -> Any:
        api = self._api_client
        params = api.param_serialize(method=method, resource_path=path, body=body,
                                     header_params={"Content-Type": content_type, "Accept": "application/json"},
                                     auth_settings=["BearerToken"])
        response = api.call_api(*params, _request_timeout=10)
        response.read()
        if not 200 <= response.status < 300:
            from kubernetes.client.exceptions import ApiException
            raise ApiException(http_resp=response)
        return orjson.loads(response.data or b"{}")


def _note(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text.encode()) <= NOTE_LIMIT else text.encode()[:NOTE_LIMIT - 3].decode(errors="ignore") + "..."


def _micro_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
