"""An injection policy's `spec.update` stanza: how running workloads are brought up to it.

Admission changes a pod only when it is created; the controller (`webhook controller`)
reads this stanza to decide whether and how pods admitted under an older revision of the
policy are replaced or updated in place. It never changes what is injected, so it is left
out of the policy's revision (an edit here marks no pod stale).
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field, StrictBool, StrictInt, model_validator

from webhook.policy.common import NamespaceMatch, Strict


class UpdateStrategy(str, Enum):
    MANUAL = "Manual"        # status and events only: someone restarts the workloads
    RESTART = "Restart"      # the workload's own rolling update (kubectl rollout restart)
    IN_PLACE = "InPlace"     # patch the injected containers' images in the running pods


class UpdateFallback(str, Enum):
    """What InPlace does for a pod whose difference is more than injected images."""

    RESTART = "Restart"
    MANUAL = "Manual"


# The controller checks the gate once a reconcile pass: a shorter deadline would halt a
# rollout before a single new pod could start.
MIN_PROGRESS_DEADLINE = 30


class Update(Strict):
    strategy: UpdateStrategy = Field(
        UpdateStrategy.MANUAL,
        description="Manual: report stale workloads only; Restart: set the pod template's "
                    "kubectl.kubernetes.io/restartedAt on the owning Deployment, StatefulSet or DaemonSet; "
                    "InPlace: when only injected containers' images differ, patch them in the running pods")
    fallback: UpdateFallback = Field(
        UpdateFallback.RESTART,
        description="InPlace only: what to do with a workload whose pods differ in more than injected images")
    max_concurrent: StrictInt = Field(
        1, alias="maxConcurrent", ge=1,
        description="workloads rolling out for this policy at once, cluster-wide")
    paused: StrictBool = Field(False, description="start no new restart or in-place update; status keeps counting")
    namespaces: NamespaceMatch = Field(
        default_factory=NamespaceMatch,
        description="the namespaces whose workloads are updated (a canary set); the rest stay stale and "
                    "reported until this is widened")
    progress_deadline_seconds: StrictInt = Field(
        600, alias="progressDeadlineSeconds", ge=MIN_PROGRESS_DEADLINE,
        description="a restarted workload must finish its rollout within this; otherwise (or when its "
                    "injected containers crash-loop) the policy's rollout halts")

    @model_validator(mode="after")
    def _fallback_needs_in_place(self) -> Update:
        # Only InPlace ever falls back: a fallback given elsewhere would silently do nothing.
        if "fallback" in self.model_fields_set and self.strategy is not UpdateStrategy.IN_PLACE:
            raise ValueError(f"fallback applies to strategy InPlace only (strategy is {self.strategy.value})")
        return self

    @property
    def acts(self) -> bool:
        """Whether the controller changes anything for this policy (not Manual, not paused)."""
        return self.strategy is not UpdateStrategy.MANUAL and not self.paused

    def selects_namespace(self, namespace: str) -> bool:
        return self.namespaces.includes(namespace) and self.namespaces.excluded_by(namespace) is None
