"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
only the holder acts; the others watch and take over when it stops renewing.

- Expiry is judged by this replica's own clock since it last saw the Lease change (its
  renewTime or holder), never by comparing its clock with the writer's: clocks differ.
- Every write is an update carrying the resourceVersion read, so of two replicas racing
  for an expired Lease exactly one wins (the other gets 409 Conflict and stays follower).
- A leader that cannot renew for RENEW_DEADLINE_SECONDS stops acting before its Lease can
  expire for the others (RENEW_DEADLINE < LEASE_DURATION), so two never act at once.
- On a clean stop the leader releases the Lease (holder cleared), so a successor need not
  wait out the duration.

The Lease ships with the manifests: the controller needs `get` and `update` on it by
name, never `create` (which RBAC cannot limit to one name). When it is missing the
elector creates it only if allowed to, and otherwise reports the error and stays follower.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from webhook.controller import metrics

log = logging.getLogger(__name__)

LEASE_DURATION_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10.0
RETRY_PERIOD_SECONDS = 2.0


class LeaderElector:
    def __init__(self, api_client: Any, namespace: str, name: str, identity: str, *,
                 lease_duration: float = LEASE_DURATION_SECONDS, renew_deadline: float = RENEW_DEADLINE_SECONDS,
                 retry_period: float = RETRY_PERIOD_SECONDS, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None) -> None:
        from kubernetes import client
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._clock = clock
        self._on_change = on_change
        self._leader = False
        self._observed: tuple[str, str] | None = None      # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self.last_error: str | None = None
        self.holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        # A leader that has not renewed within the deadline no longer acts, even before the
        # thread notices: its Lease may be about to expire for the others.
        return self._leader and self._clock() - self._renewed_at < self.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release and self._leader:
            self._release()
        self._set(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self.retry_period)

    def try_acquire_or_renew(self) -> bool:
        """One round; True while this replica leads."""
        from kubernetes.client.exceptions import ApiException
        now = self._clock()
        try:
            lease = self._get()
            if lease is None:
                self._create()
                self._renewed_at = now
                self._set(True)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            observed = (holder, str(spec.get("renewTime") or ""))
            if observed != self._observed:
                self._observed, self._observed_at = observed, now
            self.holder = holder or None
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and holder != self.identity and now - self._observed_at < duration:
                self._set(False)
                return False
            self._update(lease, took_over=holder != self.identity)
            self._renewed_at = now
            self.last_error = None
            self._set(True)
            return True
        except ApiException as exc:
            self.last_error = f"Lease {self.namespace}/{self.name}: {exc.status} {exc.reason}"
            if exc.status != 409:
                log.warning("leader election: %s", self.last_error, extra={"event": "leader_election"})
        except Exception as exc:  # noqa: BLE001 - unreachable API server: retried next round
            self.last_error = f"Lease {self.namespace}/{self.name}: {type(exc).__name__}: {exc}"
            log.warning("leader election: %s", self.last_error, extra={"event": "leader_election"})
        if self._leader and self._clock() - self._renewed_at >= self.renew_deadline:
            log.error("leader election: could not renew the Lease for %.0fs; stopping to act",
                      self.renew_deadline, extra={"event": "leader_election"})
            self._set(False)
        return self.is_leader

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            if leader:
                self.holder = self.identity
            log.info("leader election: %s %s Lease %s/%s", self.identity, "acquired" if leader else "lost",
                     self.namespace, self.name, extra={"event": "leader_election", "leader": leader})
            if self._on_change is not None:
                self._on_change(leader)
        metrics.LEADER.set(1 if leader else 0)

    def _get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        try:
            response = self._api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                       _request_timeout=self.retry_period * 2)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def _create(self) -> None:
        now = _micro_time()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
        self._api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                          _request_timeout=self.retry_period * 2)

    def _update(self, lease: dict[str, Any], *, took_over: bool) -> None:
        spec = dict(lease.get("spec") or {})
        now = _micro_time()
        if took_over:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if spec.get("holderIdentity") else 0)
        spec.update({"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                     "renewTime": now})
        body = {**lease, "spec": spec}   # metadata.resourceVersion as read: a stale one is a 409
        self._api.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False,
                                           _request_timeout=self.retry_period * 2)

    def _release(self) -> None:
        try:
            lease = self._get()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**(lease.get("spec") or {}), "holderIdentity": None, "renewTime": _micro_time(),
                    "leaseDurationSeconds": 1}
            self._api.replace_namespaced_lease(self.name, self.namespace, {**lease, "spec": spec},
                                               _preload_content=False, _request_timeout=self.retry_period * 2)
            log.info("leader election: released Lease %s/%s", self.namespace, self.name,
                     extra={"event": "leader_election"})
        except Exception as exc:  # noqa: BLE001 - the others take over when it expires instead
            log.warning("leader election: could not release the Lease: %s", exc, extra={"event": "leader_election"})


class AlwaysLeader:
    """Without --lease-name (one replica, --once): this process acts."""
    is_leader = True
    holder: str | None = None
    last_error: str | None = None

    def start(self) -> None:
        metrics.LEADER.set(1)

    def stop(self, *, release: bool = True) -> None:
        metrics.LEADER.set(0)


def _micro_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
