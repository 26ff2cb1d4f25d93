"""What the controller reads from one object's raw JSON: its controlling owner, whether a
label selector selects it, a pod's readiness and its failing injected containers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.core.jsonvalue import as_dict, dicts_in

# Container waiting reasons that mean it keeps failing.
FAILING_REASONS = frozenset({"CrashLoopBackOff", "RunContainerError", "CreateContainerError", "ImagePullBackOff",
                      "ErrImagePull"})


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (raw) against labels; an empty or malformed one selects nothing,
    as a workload's controller would own no pod with it."""
    match = as_dict(selector.get("matchLabels"))
    expressions = dicts_in(selector.get("matchExpressions"))
    if not match and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expression in expressions:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = isinstance(key, str) and key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def controller_of(metadata: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """(kind, apiVersion, name, uid) of the controlling ownerReference (the API server lets
    only one be `controller: true`)."""
    for ref in dicts_in(metadata.get("ownerReferences")):
        if ref.get("controller") is True:
            return (str(ref.get("kind") or ""), str(ref.get("apiVersion") or ""), str(ref.get("name") or ""),
                    str(ref.get("uid") or ""))
    return None


def pod_ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in dicts_in(status.get("conditions")))


def failing_containers(status: Mapping[str, Any], injected: set[str]) -> frozenset[str]:
    """Injected containers that keep failing: waiting in CrashLoopBackOff (or an image or
    start error), or terminated with an error and restarted at least once already."""
    if not injected:
        return frozenset()
    out = set()
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in dicts_in(status.get(key)):
            name = container.get("name")
            if name not in injected:
                continue
            state = as_dict(container.get("state"))
            waiting, terminated = as_dict(state.get("waiting")), as_dict(state.get("terminated"))
            if waiting.get("reason") in FAILING_REASONS:
                out.add(str(name))
            elif terminated and terminated.get("exitCode") not in (0, None) and _int(container.get("restartCount")) > 0:
                out.add(str(name))
    return frozenset(out)
