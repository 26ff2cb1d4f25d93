"""`webhook controller`: the process. Watches pods and owners, keeps status, and on each
reconcile pass calls the plan-and-act hook (only the leader acts and writes).

Threads: one per watched resource (controller/watch.py), the Lease (controller/leader.py),
the plain-HTTP probe server, and the reconcile loop in the main thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhook.controller import metrics, status
from webhook.controller.events import EventRecorder
from webhook.controller.leader import AlwaysLeader, LeaderElector
from webhook.controller.model import (INJECTION_SKIPPED, RUNTIME_STALE, SKIPPED, STALE, ClusterView, HookContext,
                                      HookFactory, PlanAndAct, RolloutState, WorkloadRef, no_plan)
from webhook.controller.state import ClusterState, Snapshot
from webhook.controller.watch import Watcher, list_all
from webhook.runtime.policy_holder import PolicyHolder

log = logging.getLogger(__name__)

PASS_INTERVAL_SECONDS = 1.0
# /healthz fails when the reconcile loop has not completed a pass for this long (stuck).
STUCK_SECONDS = 120.0
DEFAULT_NAMESPACE = "webhook-system"


@dataclass
class ControllerConfig:
    policies: Path
    kubeconfig: Path | None = None
    lease_namespace: str | None = None
    lease_name: str | None = None
    port: int = 8080
    dry_run: bool = False
    once: bool = False
    namespace: str | None = None          # where the status ConfigMap is (default: the Lease's, POD_NAMESPACE)
    status_configmap: str = status.STATUS_CONFIGMAP
    interval: float = PASS_INTERVAL_SECONDS

    @property
    def own_namespace(self) -> str:
        return self.namespace or self.lease_namespace or os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def default_hook_factory(context: HookContext) -> PlanAndAct:
    """Manual for every policy: status and events only."""
    return no_plan


class Controller:
    def __init__(self, config: ControllerConfig, *, api_client: Any = None,
                 client_factory: Callable[[], Any] | None = None, hook_factory: HookFactory | None = None,
                 out: Callable[[str], None] | None = None, watch_options: Mapping[str, Any] | None = None,
                 lease_options: Mapping[str, Any] | None = None, identity: str | None = None) -> None:
        from webhook.kube.client import load_api_client
        self.config = config
        self._client_factory = client_factory or (lambda: load_api_client(config.kubeconfig))
        self.api_client = api_client if api_client is not None else self._client_factory()
        self.holder = PolicyHolder.load(config.policies)
        self._fingerprint = self.holder.loaded_fingerprint
        self.state = ClusterState(self.holder.current)
        self.watcher = Watcher(self.state, self._client_factory, **dict(watch_options or {}))
        self.identity = identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.elector: LeaderElector | AlwaysLeader
        if config.lease_name and not config.once:
            self.elector = LeaderElector(self.api_client, config.lease_namespace or config.own_namespace,
                                         config.lease_name, self.identity, **dict(lease_options or {}))
        else:
            self.elector = AlwaysLeader()
        self.recorder = EventRecorder(self.api_client, dry_run=config.dry_run, instance=self.identity,
                                      enabled=lambda: self.elector.is_leader)
        self._out = out or (lambda line: log.info("%s", line, extra={"event": "controller_action"}))
        context = HookContext(api_client=self.api_client, recorder=self.recorder, dry_run=config.dry_run,
                              log=logging.getLogger("webhook.controller.rollout"), say=self._out)
        self.plan_and_act = (hook_factory or default_hook_factory)(context)
        self.configmap = status.ConfigMapWriter(self.api_client, config.own_namespace, config.status_configmap)
        self.statuses: dict[str, status.PolicyStatus] = {}
        self.rollouts: dict[str, RolloutState] = {}
        self._emitted: set[tuple[WorkloadRef, str, str, str]] = set()
        self.last_pass: float | None = None
        self.last_error: str | None = None
        self.passes = 0
        self._stop = threading.Event()
        self._http: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.watcher.start()
        self.elector.start()

    def serve_http(self, host: str = "0.0.0.0") -> int:
        """Plain HTTP /healthz /readyz /metrics /status on config.port (0: any); returns the port."""
        self._http = ThreadingHTTPServer((host, self.config.port), _handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="http", daemon=True).start()
        return int(self._http.server_address[1])

    def run(self) -> None:
        """Reconcile until stop()."""
        while not self._stop.is_set():
            started = time.monotonic()
            self.reconcile()
            self._stop.wait(max(0.0, self.config.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self.elector.stop()
        self.watcher.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def synced(self) -> bool:
        return self.config.once or self.watcher.synced

    # -- one pass -----------------------------------------------------------------------------

    def reconcile(self, now: float | None = None) -> bool:
        """One pass: pick up new policies, refresh status, and (leader only) act and write.
        False when it could not run (the watches not synced yet, or an error, logged)."""
        started = time.monotonic()
        try:
            self._reload_policies()
            relabelled = self.state.take_relabelled()
            if "" in relabelled:
                self.watcher.policies_changed()   # the same: every pod evaluated again
            elif relabelled:
                self.watcher.relist_pods_in(relabelled)
            if not self.synced:
                metrics.PASSES.labels(result="not_synced").inc()
                return False
            view = self.state.snapshot()
            policies = self.state.policies
            leader = self.elector.is_leader
            # Acting on a view half evaluated with new policies (a relist under way) could
            # restart for a change that is not the current one: wait for it to settle.
            if leader and view.settled:
                self.rollouts = dict(self.plan_and_act(view, policies, time.time() if now is None else now))
            statuses = status.compute(view, policies, self.rollouts)
            status.publish_metrics(statuses, self.statuses)
            self.statuses = statuses
            if leader:
                self._emit_events(view)
                self.recorder.flush()
                if not self.config.dry_run:
                    self.configmap.write(status.configmap_data(statuses), force=self.config.once)
            self.last_pass = time.time()
            self.passes += 1
            self.last_error = None
            metrics.PASSES.labels(result="ok").inc()
            return True
        except Exception as exc:  # noqa: BLE001 - one failed pass must not end the process
            self.last_error = f"{type(exc).__name__}: {exc}"
            metrics.PASSES.labels(result="error").inc()
            log.exception("reconcile pass failed", extra={"event": "controller_pass"})
            return False
        finally:
            metrics.PASS_SECONDS.observe(time.monotonic() - started)

    def _reload_policies(self) -> None:
        if self.config.once:
            return
        current = self.holder.fingerprint()
        if current == self._fingerprint:
            return
        self._fingerprint = current
        if self.holder.reload():
            self.state.set_policies(self.holder.current)
            self.watcher.policies_changed()

    def _emit_events(self, view: ClusterView) -> None:
        """RuntimeStale and InjectionSkipped, once per workload, policy, revisions and reason
        while the condition lasts (a workload that becomes stale again later counts as a repeat)."""
        wanted: dict[tuple[WorkloadRef, str, str, str], str] = {}
        for ref in view.owners():
            pods = [p for p in view.pods_of(ref) if p.phase not in ("Succeeded", "Failed")]
            by_policy: dict[str, list[Any]] = {}
            for pod in pods:
                for name, state in pod.policies.items():
                    if state.state in (STALE, SKIPPED):
                        by_policy.setdefault(name, []).append(state)
            for name, states in by_policy.items():
                stale = [s for s in states if s.state == STALE]
                if stale:
                    revisions = f"{min(s.pod_revision for s in stale) or '-'}->{stale[0].current_revision or '-'}"
                    reasons = sorted({s.reason for s in stale})
                    note = (f"{len(stale)} of {len(pods)} pod(s) run an older runtime ({', '.join(reasons)})"
                            + (f"; {ref.why_not_restartable}" if not ref.restartable else ""))
                    wanted[(ref, RUNTIME_STALE, name, revisions)] = note
                for reason in sorted({s.reason for s in states if s.state == SKIPPED}):
                    count = sum(1 for s in states if s.state == SKIPPED and s.reason == reason)
                    # One event per distinct reason: its digest tells them apart.
                    digest = hashlib.sha256(reason.encode()).hexdigest()[:8]
                    revisions = f"-->{states[0].current_revision or '-'}#{digest}"
                    wanted[(ref, INJECTION_SKIPPED, name, revisions)] = f"{count} pod(s): {reason}"
        for key, note in wanted.items():
            if key in self._emitted:
                continue
            ref, reason, policy, revisions = key
            workload = view.workload(ref)
            if self.recorder.record(ref, reason, note, policy, revisions, uid=workload.uid if workload else ""):
                self._emitted.add(key)
        # A condition that ended may come back: it is then recorded again (a repeat).
        self._emitted &= set(wanted)
        owners = set(view.owners()) | set(view.workloads())
        self.recorder.forget(lambda ref, *_: ref in owners)

    # -- what the HTTP endpoints show ------------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        return {"leader": self.elector.is_leader, "identity": self.identity, "holder": self.elector.holder,
                "dryRun": self.config.dry_run, "synced": self.synced, "policyRevision": self.state.policies.revision,
                "pods": snapshot.pod_count, "unevaluatedPods": snapshot.unevaluated,
                "outdatedPods": snapshot.outdated,
                "lastPass": self.last_pass, "lastError": self.last_error,
                "leaseError": self.elector.last_error, "statusError": self.configmap.last_error,
                "policyError": self.holder.last_error, "watches": self.watcher.detail(),
                "policies": {name: s.to_json() for name, s in sorted(self.statuses.items())}}

    def healthy(self) -> bool:
        return self.last_pass is None or time.time() - self.last_pass < STUCK_SECONDS

    def ready(self) -> tuple[bool, str]:
        if not self.synced:
            return False, "watches not synced: " + ", ".join(
                n for n, r in self.watcher.reflectors.items() if not r.synced)
        if self.last_pass is None:
            return False, "no reconcile pass yet"
        return True, "ok"


def _handler(controller: Controller) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = controller.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"reconcile loop stuck\n", "text/plain")
            elif path == "/readyz":
                ok, why = controller.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/status":
                self._send(200, json.dumps(controller.status_json(), indent=2).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes every few seconds: quiet
            pass

    return Handler


def run_once(config: ControllerConfig, *, out: Callable[[str], None] = print, api_client: Any = None,
             hook_factory: HookFactory | None = None) -> int:
    """`--once`: list everything, one pass, print the status and what was (or would be) done."""
    controller = Controller(config, api_client=api_client, hook_factory=hook_factory, out=out)
    list_all(controller.state, controller.api_client)
    if not controller.reconcile():
        out(f"reconcile failed: {controller.last_error}")
        return 1
    mode = "dry run: would record" if config.dry_run else "recorded"
    for reason, workload, policy, revisions in controller.recorder.recorded:
        out(f"{mode} event {reason} on {workload} ({policy} {revisions})")
    for line in [*status.table(controller.statuses).splitlines(), *status.stale_lines(controller.statuses)]:
        out(line)
    return 0


def run(config: ControllerConfig, *, hook_factory: HookFactory | None = None) -> int:
    import signal

    from webhook.kube.client import ClusterError
    from webhook.policy.errors import PolicyLoadError

    try:
        if config.once:
            return run_once(config, hook_factory=hook_factory)
        controller = Controller(config, hook_factory=hook_factory)
    except PolicyLoadError as exc:
        print(f"webhook controller: invalid policies in {config.policies}:\n{exc}", file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(f"webhook controller: {exc}", file=sys.stderr)
        return 1
    try:
        port = controller.serve_http()
    except OSError as exc:
        print(f"webhook controller: cannot serve HTTP on port {config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    controller.start()

    def stop(signum: int, frame: Any) -> None:
        controller._stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("controller started: policies %s (revision %s), HTTP on :%d%s%s", config.policies,
             controller.state.policies.revision, port,
             f", Lease {controller.config.lease_namespace or config.own_namespace}/{config.lease_name}"
             if config.lease_name else ", no leader election", ", dry run" if config.dry_run else "",
             extra={"event": "controller_start"})
    try:
        controller.run()
    finally:
        controller.stop()
    return 0


__all__ = ["Controller", "ControllerConfig", "Snapshot", "run", "run_once", "default_hook_factory"]
