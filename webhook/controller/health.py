"""The health gate: whether a workload the controller restarted (or updated in place) for a
policy finished, is still going, or failed; and the rollout record that says what it was
restarted for.

Everything here is read from the cluster (the workload's status, its pods, the record on
its template), never from the controller's memory, so a new leader judges a rollout the
old one started exactly as the old one would have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from webhook.controller.model import (DAEMONSET, DEPLOYMENT, RESTARTED_AT_ANNOTATION, ROLLOUT_RECORD_ANNOTATION,
                                      STATEFULSET, ClusterView, WorkloadRef, WorkloadView)

# The record is an annotation anyone who can edit the workload may write: bounded, and
# anything that is not ours reads as no record at all.
MAX_RECORD_BYTES = 8192


@dataclass(frozen=True, slots=True)
class RecordEntry:
    revision: str
    at: datetime


def parse_record(text: str | None) -> dict[str, RecordEntry]:
    """policy -> (revision, when) from the rollout record annotation; {} when absent or not ours."""
    if not text or len(text) > MAX_RECORD_BYTES:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, RecordEntry] = {}
    for policy, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("revision"), str):
            continue
        at = parse_time(entry.get("at"))
        if at is not None:
            out[str(policy)] = RecordEntry(entry["revision"], at)
    return out


def format_record(entries: Mapping[str, RecordEntry]) -> str:
    return json.dumps({policy: {"revision": e.revision, "at": format_time(e.at)}
                       for policy, e in sorted(entries.items())}, separators=(",", ":"))


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as `kubectl rollout restart` writes restartedAt."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


# -- each kind's status, as `kubectl rollout status` reads it ---------------------------------------

def workload_view(ref: WorkloadRef, obj: Mapping[str, Any]) -> WorkloadView:
    """A Deployment's, StatefulSet's or DaemonSet's object as the gate reads it, each kind's
    status names mapped to WorkloadView's."""
    meta = _dict(obj.get("metadata"))
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    annotations = _dict(_dict(_dict(spec.get("template")).get("metadata")).get("annotations"))
    strategy = _dict(spec.get("updateStrategy"))
    common: dict[str, Any] = dict(
        uid=str(meta.get("uid") or ""), generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        restarted_at=_str_or_none(annotations.get(RESTARTED_AT_ANNOTATION)),
        rollout_record=_str_or_none(annotations.get(ROLLOUT_RECORD_ANNOTATION)),
        resource_version=str(meta.get("resourceVersion") or ""))
    if ref.kind == DEPLOYMENT:
        desired = _int(spec.get("replicas"), 1)
        exceeded = any(_dict(c).get("type") == "Progressing" and _dict(c).get("status") == "False"
                       and _dict(c).get("reason") == "ProgressDeadlineExceeded"
                       for c in status.get("conditions") or [])
        # Old replicas still terminating count: the rollout is not over until they are gone.
        return WorkloadView(ref, **common, replicas=max(desired, _int(status.get("replicas"))),
                            updated_replicas=_int(status.get("updatedReplicas")),
                            available_replicas=_int(status.get("availableReplicas")),
                            ready_replicas=_int(status.get("readyReplicas")), progress_deadline_exceeded=exceeded,
                            paused=spec.get("paused") is True)
    if ref.kind == STATEFULSET:
        return WorkloadView(ref, **common, replicas=_int(spec.get("replicas"), 1),
                            updated_replicas=_int(status.get("updatedReplicas")),
                            available_replicas=_int(status.get("availableReplicas", status.get("readyReplicas"))),
                            ready_replicas=_int(status.get("readyReplicas")),
                            partition=_int(_dict(strategy.get("rollingUpdate")).get("partition")),
                            on_delete=strategy.get("type") == "OnDelete")
    if ref.kind == DAEMONSET:
        return WorkloadView(ref, **common, replicas=_int(status.get("desiredNumberScheduled")),
                            updated_replicas=_int(status.get("updatedNumberScheduled")),
                            available_replicas=_int(status.get("numberAvailable")),
                            ready_replicas=_int(status.get("numberReady")),
                            on_delete=strategy.get("type") == "OnDelete")
    raise ValueError(f"{ref.kind} has no rollout")


# -- the gate ------------------------------------------------------------------------------------

Outcome = Literal["done", "progressing", "failed"]


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str = ""


def judge(view: ClusterView, ref: WorkloadRef, policy: str, *, since: datetime, deadline_seconds: int,
          now: datetime) -> Verdict:
    """How the rollout of `ref`, started at `since` to bring it up to `policy`, is going."""
    workload = view.workload(ref)
    if workload is None and ref.restartable:
        return Verdict("done", "the workload is gone")
    pods = view.pods_of(ref)
    for pod in pods:
        state = pod.policies.get(policy)
        if pod.crashlooping and state is not None and state.state != "stale":
            return Verdict("failed", f"injected container(s) {', '.join(sorted(pod.crashlooping))} of pod "
                                     f"{pod.name} crash-loop")
    if workload is not None and workload.progress_deadline_exceeded:
        return Verdict("failed", f"{ref.kind} {ref.name} reports ProgressDeadlineExceeded")
    # A StatefulSet's partition keeps the ordinals below it on the old template by design:
    # their pods stay stale (and reported) without failing the rollout.
    finished = (workload is None or workload.rollout_done) and all(p.ready for p in pods) \
        and (not any(p.stale_for(policy) for p in pods) or (workload is not None and workload.partition > 0))
    if finished:
        return Verdict("done")
    if (now - since).total_seconds() > deadline_seconds:
        return Verdict("failed", f"{ref.kind} {ref.name} did not finish its rollout within {deadline_seconds}s "
                                 f"({_shortfall(workload, pods, policy)})")
    return Verdict("progressing")


def _shortfall(workload: WorkloadView | None, pods: Any, policy: str) -> str:
    parts = []
    if workload is not None:
        parts.append(f"{workload.updated_replicas}/{workload.replicas} updated, "
                     f"{workload.available_replicas}/{workload.replicas} available")
    unready = sum(not p.ready for p in pods)
    stale = sum(p.stale_for(policy) for p in pods)
    if unready:
        parts.append(f"{unready} pod(s) not ready")
    if stale:
        parts.append(f"{stale} pod(s) still stale")
    return "; ".join(parts) or "no progress"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
