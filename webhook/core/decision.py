"""What the engine decides about one admission request, independent of the wire format.

Every answer is built through the constructors below (allowed, denied, patched,
errored), in the style of controller-runtime's response.go, so the invariants live
in one place: a patch is never empty, and an error always carries its code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Violation:
    """One breach of a validation rule; the wire carries it as text (message, warning or
    audit annotation), this structured form is for the decision log and metrics."""

    policy: str
    rule: str          # the rule's id within the policy (its name, or its kind)
    action: str        # Enforce | Warn | Audit
    path: str          # field path in the object, e.g. spec.template.spec.containers[app].image
    message: str
    check: str = ""    # sub-check, e.g. the Pod Security check id
    container: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    patch: JsonPatch | None = None
    warnings: tuple[str, ...] = ()
    code: int | None = None
    message: str | None = None
    reason: str | None = None
    audit_annotations: dict[str, str] = field(default_factory=dict)
    # What the engine did, for the decision log and metrics; never sent on the wire.
    applied_policies: tuple[str, ...] = ()
    shadow_policies: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()


def allowed(*, warnings: tuple[str, ...] = (), audit_annotations: dict[str, str] | None = None,
            applied_policies: tuple[str, ...] = (), violations: tuple[Violation, ...] = ()) -> Decision:
    return Decision(allowed=True, warnings=warnings, audit_annotations=audit_annotations or {},
                    applied_policies=applied_policies, violations=violations)


def patched(patch: JsonPatch, *, warnings: tuple[str, ...] = (),
            applied_policies: tuple[str, ...] = (), shadow_policies: tuple[str, ...] = ()) -> Decision:
    # An empty patch is sent as no patch at all: the API server treats a present
    # patch as a mutation, and reinvocation logic relies on "nothing changed".
    return Decision(allowed=True, patch=patch or None, warnings=warnings,
                    applied_policies=applied_policies, shadow_policies=shadow_policies)


def denied(message: str, *, code: int = 403, reason: str = "Forbidden",
           warnings: tuple[str, ...] = (), audit_annotations: dict[str, str] | None = None,
           applied_policies: tuple[str, ...] = (), violations: tuple[Violation, ...] = ()) -> Decision:
    return Decision(allowed=False, code=code, message=message, reason=reason, warnings=warnings,
                    audit_annotations=audit_annotations or {}, applied_policies=applied_policies,
                    violations=violations)


def errored(message: str, *, allow: bool, code: int = 500) -> Decision:
    """An internal failure; `allow` comes from the configured failure policy."""
    return Decision(allowed=allow, code=code, message=message, reason="InternalError")
