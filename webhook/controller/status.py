"""Per-policy status: matched, current, stale and skipped pods and workloads, and the
rollout state, computed from a ClusterView; shown as Prometheus gauges, `/status`, the
status ConfigMap (one key per policy) and `webhook status`.

A workload counts once per policy: stale when any of its pods is stale for the policy,
else skipped when any is skipped, else current. Stale workloads the controller never
restarts (Jobs, CronJobs, bare pods, other operators' pods) are listed apart with why:
they get the new runtime on their next run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.controller import metrics
from webhook.controller.model import CURRENT, IDLE, SKIPPED, STALE, ClusterView, RolloutState
from webhook.policy.loader import PolicySet

log = logging.getLogger(__name__)

STATES = (CURRENT, STALE, SKIPPED)
ROLLOUT_STATES = ("idle", "rolling", "paused", "halted")
STATUS_CONFIGMAP = "webhook-controller-status"
# The ConfigMap is written at most this often: status is for people, and each write is an
# API request (and a watch event for everyone watching ConfigMaps).
CONFIGMAP_INTERVAL_SECONDS = 10.0
# Workloads listed by name per policy and state (the counts are always complete).
LISTED_WORKLOADS = 50


@dataclass
class PolicyStatus:
    policy: str
    revision: str
    pods: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    workloads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    in_place_pods: int = 0                                   # stale pods an image change would bring current
    stale_workloads: list[str] = field(default_factory=list)
    next_run: dict[str, str] = field(default_factory=dict)   # stale, not restartable -> why
    skipped: dict[str, int] = field(default_factory=dict)    # reason -> pods
    rollout: RolloutState = field(default_factory=RolloutState)

    @property
    def matched_pods(self) -> int:
        return sum(self.pods.values())

    @property
    def matched_workloads(self) -> int:
        return sum(self.workloads.values())

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "revision": self.revision,
                "pods": {"matched": self.matched_pods, **self.pods, "inPlace": self.in_place_pods},
                "workloads": {"matched": self.matched_workloads, **self.workloads},
                "staleWorkloads": self.stale_workloads, "nextRun": self.next_run, "skipped": self.skipped,
                "rollout": {"state": self.rollout.state, **({"reason": self.rollout.reason}
                                                            if self.rollout.reason else {})}}


def compute(view: ClusterView, policies: PolicySet, rollouts: Mapping[str, RolloutState] | None = None, *,
            namespace: str | None = None) -> dict[str, PolicyStatus]:
    """Every injection policy's status (and any policy the pods still carry that is gone)."""
    rollouts = rollouts or {}
    out = {p.name: PolicyStatus(p.name, p.revision, rollout=rollouts.get(p.name, RolloutState()))
           for p in policies.injectors}
    for ref in view.owners():
        if namespace is not None and ref.namespace != namespace:
            continue
        per_policy: dict[str, Counter[str]] = {}
        for pod in view.pods_of(ref):
            if pod.phase in ("Succeeded", "Failed"):
                continue   # done: nothing runs that could be stale
            for name, state in pod.policies.items():
                status = out.get(name)
                if status is None:   # a removed policy the pod still carries
                    status = out[name] = PolicyStatus(name, "", rollout=rollouts.get(name, RolloutState()))
                status.pods[state.state] += 1
                per_policy.setdefault(name, Counter())[state.state] += 1
                if state.state == STALE and state.in_place:
                    status.in_place_pods += 1
                if state.state == SKIPPED:
                    status.skipped[state.reason] = status.skipped.get(state.reason, 0) + 1
        for name, counts in per_policy.items():
            status = out[name]
            state = STALE if counts[STALE] else SKIPPED if counts[SKIPPED] else CURRENT
            status.workloads[state] += 1
            if state == STALE:
                if len(status.stale_workloads) < LISTED_WORKLOADS:
                    status.stale_workloads.append(str(ref))
                if not ref.restartable and len(status.next_run) < LISTED_WORKLOADS:
                    status.next_run[str(ref)] = ref.why_not_restartable
    return out


def publish_metrics(statuses: Mapping[str, PolicyStatus], previous: Iterable[str] = ()) -> None:
    for name, status in statuses.items():
        for state in STATES:
            metrics.POLICY_PODS.labels(policy=name, state=state).set(status.pods[state])
            metrics.POLICY_WORKLOADS.labels(policy=name, state=state).set(status.workloads[state])
        for state in ROLLOUT_STATES:
            metrics.ROLLOUT_STATE.labels(policy=name, state=state).set(1 if status.rollout.state == state else 0)
    for gone in set(previous) - set(statuses):
        # A policy removed from the set: its series go rather than stay frozen at old values.
        for state in STATES:
            for gauge in (metrics.POLICY_PODS, metrics.POLICY_WORKLOADS):
                try:
                    gauge.remove(gone, state)
                except KeyError:
                    pass
        for state in ROLLOUT_STATES:
            try:
                metrics.ROLLOUT_STATE.remove(gone, state)
            except KeyError:
                pass


def configmap_data(statuses: Mapping[str, PolicyStatus]) -> dict[str, str]:
    """One key per policy (a valid ConfigMap key: policy names are DNS labels)."""
    return {name: json.dumps(status.to_json(), sort_keys=True) for name, status in sorted(statuses.items())}


class ConfigMapWriter:
    """Writes the status ConfigMap: only when its content changed, at most every
    CONFIGMAP_INTERVAL_SECONDS. The ConfigMap ships with the manifests, so the controller
    needs only `get` and `update` on it by name (never `create`, which RBAC cannot limit
    to one name); keys of policies that are gone are removed."""

    def __init__(self, api_client: Any, namespace: str, name: str = STATUS_CONFIGMAP, *,
                 interval: float = CONFIGMAP_INTERVAL_SECONDS, clock: Any = time.monotonic) -> None:
        self._api_client = api_client
        self.namespace, self.name = namespace, name
        self.interval = interval
        self._clock = clock
        self._written: dict[str, str] | None = None
        self._last: float | None = None
        self.last_error: str | None = None

    def due(self) -> bool:
        return self._last is None or self._clock() - self._last >= self.interval

    def write(self, data: Mapping[str, str], *, force: bool = False) -> bool:
        """Write if due and changed; True when a write was made."""
        if not force and not self.due():
            return False
        if self._written == data:
            return False
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self._api_client)
        self._last = self._clock()
        try:
            current = json.loads(core.read_namespaced_config_map(
                self.name, self.namespace, _preload_content=False, _request_timeout=10).data)
            # An update with the resourceVersion read: a 409 means another writer (an old
            # leader's last write) came between; the next pass writes again.
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": current.get("metadata") or {},
                    "data": dict(data)}
            core.replace_namespaced_config_map(self.name, self.namespace, body, _preload_content=False,
                                               _request_timeout=10)
        except ApiException as exc:
            self.last_error = f"ConfigMap {self.namespace}/{self.name}: {exc.status} {exc.reason}"
            if exc.status == 404:
                self.last_error += " (it ships with the manifests; apply them again)"
            metrics.STATUS_WRITES.labels(result="error").inc()
            log.warning("status not written: %s", self.last_error, extra={"event": "controller_status"})
            return False
        except Exception as exc:  # noqa: BLE001 - the API server unreachable: the next pass retries
            self.last_error = f"ConfigMap {self.namespace}/{self.name}: {type(exc).__name__}: {exc}"
            metrics.STATUS_WRITES.labels(result="error").inc()
            return False
        self._written = dict(data)
        self.last_error = None
        metrics.STATUS_WRITES.labels(result="written").inc()
        return True


def table(statuses: Mapping[str, PolicyStatus]) -> str:
    """`webhook status`'s table: one line a policy."""
    rows = [("POLICY", "REVISION", "PODS", "CURRENT", "STALE", "SKIPPED", "WORKLOADS", "STALE-WL", "ROLLOUT")]
    for name, s in sorted(statuses.items()):
        rollout = s.rollout.state + (f" ({s.rollout.reason})" if s.rollout.reason else "")
        rows.append((name, s.revision or "(removed)", str(s.matched_pods), str(s.pods[CURRENT]), str(s.pods[STALE]),
                     str(s.pods[SKIPPED]), str(s.matched_workloads), str(s.workloads[STALE]), rollout))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "   " + r[-1] for r in rows)


def stale_lines(statuses: Mapping[str, PolicyStatus]) -> list[str]:
    """The stale workloads under the table, with why the ones never restarted wait."""
    out = []
    for name, s in sorted(statuses.items()):
        for ref in s.stale_workloads:
            why = s.next_run.get(ref)
            out.append(f"{name}: {ref} stale" + (f" ({why})" if why else ""))
        hidden = s.workloads[STALE] - len(s.stale_workloads)
        if hidden > 0:
            out.append(f"{name}: ... and {hidden} more stale workload(s)")
    return out


def rollout_states_from(data: Mapping[str, str]) -> dict[str, RolloutState]:
    """The rollout states a controller wrote into its status ConfigMap (for `webhook status`)."""
    out = {}
    for name, text in data.items():
        try:
            rollout = json.loads(text).get("rollout") or {}
            out[name] = RolloutState(rollout.get("state", IDLE), rollout.get("reason", ""))
        except (ValueError, AttributeError):
            continue
    return out

