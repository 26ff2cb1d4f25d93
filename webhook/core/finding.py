"""What a check reports: one offending field of a pod, independent of any policy.

The one finding type of the package. The rules (`webhook.rules`, Pod Security included)
return Findings; the validation step attributes each to its policy and rule as a
`webhook.core.decision.Violation`, which is what the decision carries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    check: str          # sub-check within the rule, e.g. "privileged", "latestTag"; "" when the rule has one
    path: str           # field path relative to the pod, e.g. "spec.containers[app].image"
    message: str        # short, human; names the container when there is one
    container: str = ""  # container name, "" for pod-level fields
