"""What the planner decides and the actuator carries out: plain records, one per write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from webhook.controller.model import WorkloadRef


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Restart:
    """Set the pod template's restartedAt (as `kubectl rollout restart` does) and record the
    policy revisions the workload is restarted for."""
    ref: WorkloadRef
    revisions: Mapping[str, str]                 # policy -> the revision the new pods get
    previous: Mapping[str, str] = field(default_factory=dict)   # policy -> the pods' revision now

    def __post_init__(self) -> None:
        object.__setattr__(self, "revisions", _frozen(self.revisions))
        object.__setattr__(self, "previous", _frozen(self.previous))

    def describe(self) -> str:
        changes = ", ".join(f"{p} {self.previous.get(p) or '-'} -> {r}" for p, r in sorted(self.revisions.items()))
        return f"restart {self.ref} ({changes})"


@dataclass(frozen=True)
class UpdateInPlace:
    """Patch one running pod's injected container images and its ledger's revision for one policy."""
    ref: WorkloadRef                  # the pod's top owner (events go there)
    namespace: str
    pod: str
    uid: str
    policy: str
    revision: str
    previous: str
    images: Mapping[str, str]         # injected container -> new image

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", _frozen(self.images))

    def describe(self) -> str:
        images = ", ".join(f"{c}={i}" for c, i in sorted(self.images.items()))
        return (f"update pod {self.namespace}/{self.pod} of {self.ref} in place "
                f"({self.policy} {self.previous or '-'} -> {self.revision}: {images})")


Action = Restart | UpdateInPlace
