"""The controller's writes: a workload's restart and a pod's in-place image update.

Each write is idempotent and checked against the object as the API server has it now, not
as the (possibly lagging) watch showed it: the object is read first, a change already
made (by this leader or a previous one) is not made again, and the patch carries the
resourceVersion read (a pod's patch tests each value it replaces), so a concurrent writer
(an old leader that has not noticed it lost the lease) makes it a 409 Conflict (422 for
the pod) instead of a second restart. A restart is the strategic merge patch `kubectl
rollout restart` sends, plus the record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from webhook.controller import metrics
from webhook.controller.actions import Action, Restart, UpdateInPlace
from webhook.controller.health import RecordEntry, format_record, format_time, parse_record
from webhook.controller.model import (DAEMONSET, DEPLOYMENT, RESTARTED_AT_ANNOTATION, ROLLOUT_RECORD_ANNOTATION,
                                      RUNTIME_RESTARTED, RUNTIME_UPDATED_IN_PLACE, STATEFULSET, WorkloadRef)
from webhook.engine.ledger import LEDGER_ANNOTATION, LedgerError, parse_ledger
from webhook.engine.staleness import in_place_ops
from webhook.kube.client import ApiCallError, Kube

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# The generated client's method names per restartable kind.
_APPS_NAME = {DEPLOYMENT: "deployment", STATEFULSET: "stateful_set", DAEMONSET: "daemon_set"}

Result = Literal["applied", "dry-run", "already", "conflict", "gone", "failed"]
# (workload or bare pod, event reason, note, policy, (old revision, new revision))
Notify = Callable[[WorkloadRef, str, str, str, tuple[str, str]], None]


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: Result
    detail: str = ""

    def describe(self) -> str:
        return f"{self.action.describe()}: {self.result}{f' ({self.detail})' if self.detail else ''}"


class Actuator:
    def __init__(self, api_client: Any, *, dry_run: bool = False, log: logging.Logger | None = None,
                 notify: Notify | None = None) -> None:
        self.dry_run = dry_run
        self.log = log or logging.getLogger("webhook.controller")
        self.notify = notify
        self._kube: Kube | None = None
        self._apps: Any = None
        self._core: Any = None
        if api_client is not None:
            from kubernetes import client
            self._kube = Kube(api_client)
            self._apps, self._core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)

    def apply(self, action: Action, now: datetime) -> Outcome:
        if self.dry_run:
            outcome = Outcome(action, "dry-run")
        else:
            try:
                outcome = self._restart(action, now) if isinstance(action, Restart) else self._in_place(action)
            except ApiCallError as exc:
                # A pod's patch whose test of a replaced value failed met a pod changed since it
                # was read: a conflict like a workload's 409, tried again on a later pass.
                raced = exc.status == 409 or (exc.status == 422 and "testing value failed" in str(exc))
                result: Result = "conflict" if raced else "gone" if exc.status == 404 else "failed"
                outcome = Outcome(action, result, str(exc))
        metrics.ROLLOUT_ACTIONS.labels(action="restart" if isinstance(action, Restart) else "in_place",
                                       result=outcome.result).inc()
        level = logging.WARNING if outcome.result == "failed" else logging.INFO
        self.log.log(level, "%s", outcome.describe(),
                     extra={"action": type(action).__name__, "result": outcome.result, "workload": str(action.ref)})
        if outcome.result == "applied" and self.notify is not None:
            self._tell(action)
        return outcome

    # -- restart ----------------------------------------------------------------------------------

    def _restart(self, action: Restart, now: datetime) -> Outcome:
        ref = action.ref
        kind = _APPS_NAME.get(ref.kind)
        if kind is None:
            return Outcome(action, "failed", f"{ref.kind} is not restartable")
        obj = self._call(f"get {ref}", getattr(self._apps, f"read_namespaced_{kind}"), ref.name, ref.namespace)
        spec = _dict(obj.get("spec"))
        annotations = _dict(_dict(_dict(spec.get("template")).get("metadata")).get("annotations"))
        record = parse_record(annotations.get(ROLLOUT_RECORD_ANNOTATION))
        if all(p in record and record[p].revision == r for p, r in action.revisions.items()):
            return Outcome(action, "already", "the record shows it restarted for these revisions")
        record.update({p: RecordEntry(r, now) for p, r in action.revisions.items()})
        body = {"metadata": {"resourceVersion": _dict(obj.get("metadata")).get("resourceVersion")},
                "spec": {"template": {"metadata": {"annotations": {
                    RESTARTED_AT_ANNOTATION: format_time(now),
                    ROLLOUT_RECORD_ANNOTATION: format_record(record)}}}}}
        self._call(f"patch {ref}", getattr(self._apps, f"patch_namespaced_{kind}"), ref.name, ref.namespace, body,
                   _content_type=STRATEGIC_MERGE)
        return Outcome(action, "applied")

    # -- in place ---------------------------------------------------------------------------------

    def _in_place(self, action: UpdateInPlace) -> Outcome:
        where = f"pod {action.namespace}/{action.pod}"
        pod = self._call(f"get {where}", self._core.read_namespaced_pod, action.pod, action.namespace)
        meta = _dict(pod.get("metadata"))
        if meta.get("uid") != action.uid:
            return Outcome(action, "gone", "the pod was replaced")
        annotations = _dict(meta.get("annotations"))
        try:
            ledger = parse_ledger(str(annotations.get(LEDGER_ANNOTATION) or ""))
        except LedgerError as exc:
            return Outcome(action, "failed", f"unreadable ledger: {exc}")
        record = ledger.record(action.policy)
        if record is None:
            return Outcome(action, "failed", f"the ledger has no record of {action.policy}")
        if record.revision == action.revision:
            return Outcome(action, "already", "the ledger shows this revision")
        # Only containers the ledger says this policy injected (never an app's own image), each
        # replacement guarded by a test of what it replaces.
        try:
            ops = in_place_ops(pod, action.policy, action.images, action.revision)
        except (ValueError, LedgerError) as exc:
            return Outcome(action, "failed", str(exc))
        self._call(f"patch {where}", self._core.patch_namespaced_pod, action.pod, action.namespace, ops,
                   _content_type=JSON_PATCH)
        return Outcome(action, "applied")

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._kube is None:
            raise ApiCallError(f"{what}: no API client", None)
        return self._kube.call(what, method, *args, **kwargs)

    def _tell(self, action: Action) -> None:
        assert self.notify is not None
        if isinstance(action, Restart):
            for policy, revision in sorted(action.revisions.items()):
                self.notify(action.ref, RUNTIME_RESTARTED,
                            f"restarted for policy {policy} revision {revision} "
                            f"(pods had {action.previous.get(policy) or 'none'})",
                            policy, (action.previous.get(policy, ""), revision))
        else:
            self.notify(action.ref, RUNTIME_UPDATED_IN_PLACE,
                        f"updated {', '.join(sorted(action.images))} in place for policy {action.policy} revision "
                        f"{action.revision} (pods had {action.previous or 'none'})",
                        action.policy, (action.previous, action.revision))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}

