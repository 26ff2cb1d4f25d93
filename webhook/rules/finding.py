"""What a validation rule reports: one offending field, independent of any policy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    check: str          # sub-check within the rule, e.g. "privileged", "latestTag"; "" when the rule has one
    path: str           # field path relative to the pod, e.g. "spec.containers[app].image"
    message: str        # short, human; names the container when there is one
    container: str = ""  # container name, "" for pod-level fields
