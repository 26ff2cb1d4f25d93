"""The reconcile loop's `plan_and_act` hook: plan on the watched view, tell of halts, carry
out the actions, and say each policy's rollout state."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from webhook.controller.actuator import Actuator, Outcome
from webhook.controller.model import (RUNTIME_ROLLOUT_HALTED, ClusterView, HookContext, PlanAndAct, RolloutState,
                                      WorkloadRef)
from webhook.controller.planner import Memory, plan
from webhook.policy.loader import PolicySet


# A write the API server refused (an admission policy, RBAC) rarely succeeds a second later:
# tried again after this, so a refusal costs one request a minute, not one a pass.
RETRY_REFUSED_SECONDS = 60


class Rollout:
    """One per process. Each outcome (done, would be done, refused) is said through the
    context's `say` (printed by --once, logged otherwise); `outcomes` keeps the last pass's."""

    def __init__(self, ctx: HookContext) -> None:
        self.log: logging.Logger = ctx.log if isinstance(ctx.log, logging.Logger) \
            else logging.getLogger("webhook.controller")
        self.recorder = ctx.recorder
        self.say = ctx.say
        self.memory = Memory()
        self.actuator = Actuator(ctx.api_client, dry_run=ctx.dry_run, log=self.log, notify=self._notify)
        self.outcomes: list[Outcome] = []
        self._told: set[tuple[str, str, WorkloadRef]] = set()
        self._decided: set[str] = set()   # a dry run's decisions of the last pass

    def __call__(self, view: ClusterView, policies: PolicySet, now: float) -> Mapping[str, RolloutState]:
        moment = datetime.fromtimestamp(now, timezone.utc)
        result = plan(view, policies, self.memory, moment)
        self._told &= {(h.policy, h.revision, h.ref) for h in result.halts}   # a lifted halt may recur
        for halt in result.halts:
            # Told once per halt (the recorder keeps one event per workload, policy revision and
            # reason, but would count every pass of a long halt as a repeat).
            key = (halt.policy, halt.revision, halt.ref)
            if key in self._told:
                continue
            self._told.add(key)
            self._notify(halt.ref, RUNTIME_ROLLOUT_HALTED,
                         f"rollout of policy {halt.policy} revision {halt.revision} halted: {halt.reason}",
                         halt.policy, ("", halt.revision))
        actions = list(result.actions)
        if self.actuator.dry_run:
            # Nothing changes in a dry run, so each pass would decide the same again: each
            # decision is told once, while it stands, not once a second.
            described = {a.describe(): a for a in actions}
            actions = [a for d, a in described.items() if d not in self._decided]
            self._decided = set(described)
        self.outcomes = [self.actuator.apply(action, moment) for action in actions]
        for outcome in self.outcomes:
            self.say(outcome.describe())
            if outcome.result == "failed":
                self.memory.refused[outcome.action.ref] = (moment + timedelta(seconds=RETRY_REFUSED_SECONDS),
                                                           outcome.detail)
        return result.rollouts

    def _notify(self, ref: WorkloadRef, reason: str, note: str, policy: str, revisions: tuple[str, str]) -> None:
        if self.recorder is None or self.actuator.dry_run:
            return
        try:
            self.recorder.record(ref, reason, note, policy, revisions)
        except Exception:   # noqa: BLE001 - an event lost must not stop a rollout
            self.log.exception("recording event %s on %s failed", reason, ref)


def rollout_hook(ctx: HookContext) -> PlanAndAct:
    return Rollout(ctx)

