"""Turn the violations of a validation into its answer: a denial message (Enforce), warnings (Warn) and
audit annotations (Audit), each within the sizes the API server and kubectl handle.

A violation reads, in a denial message:

    <policy>/<rule>[<check>]: <path>: <message>

and, as a warning (shorter: the message names its container or field already):

    <policy>/<rule>[<check>]: [<template path>: ]<message>

Order is stable: policies by name, rules in file order, then each rule's own order
(containers in pod order: initContainers, containers, ephemeralContainers).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from webhook.core import decision
from webhook.core.decision import Decision, Violation
# The answer's size limits are the engine's, shared with mutation (engine/bounds.py).
from webhook.engine.bounds import MAX_MESSAGE_CHARS, MAX_WARNING_CHARS, MAX_WARNINGS_TOTAL_CHARS, clip
from webhook.policy.validation import Action

# One violation may not crowd out the others (a very long image name, a CEL message).
MAX_VIOLATION_CHARS = 512
# Audit annotation keys: the API server prefixes `<webhook name>/`, so the key itself
# must hold no '/'; kept to a qualified-name part (63 characters, [-._a-zA-Z0-9]).
MAX_AUDIT_KEY_CHARS = 63
MAX_AUDIT_VALUE_CHARS = 1024
_AUDIT_KEY_BAD = re.compile(r"[^-._a-zA-Z0-9]")


def _where(v: Violation) -> str:
    return f"{v.rule}[{v.check}]" if v.check else v.rule


def violation_text(v: Violation) -> str:
    located = f"{v.path}: {v.message}" if v.path else v.message
    return clip(f"{v.policy}/{_where(v)}: {located}", MAX_VIOLATION_CHARS)


def denial_message(violations: Sequence[Violation]) -> str:
    """'N violations: a; b; c', cut at MAX_MESSAGE_CHARS with '… and K more'."""
    total = len(violations)
    head = f"{total} validation violation{'s' if total != 1 else ''}: "
    parts: list[str] = []
    used = len(head)
    for index, v in enumerate(violations):
        text = violation_text(v)
        left_after = total - index - 1
        # Reserve room for the "… and K more" tail unless this is the last one.
        reserve = len(f"; … and {left_after} more") if left_after else 0
        cost = (2 if parts else 0) + len(text)
        if used + cost + reserve > MAX_MESSAGE_CHARS:
            parts.append(f"… and {total - index} more")
            break
        parts.append(text)
        used += cost
    return head + "; ".join(parts)


def warning_text(v: Violation, *, scope: str = "") -> str:
    """Short: the field path is left out because every message names its container or
    field; for a controller `scope` names the template (`spec.template`)."""
    located = f"{scope}: {v.message}" if scope else v.message
    return clip(f"{v.policy}/{_where(v)}: {located}", MAX_WARNING_CHARS)


def warnings_for(violations: Sequence[Violation], *, scope: str = "") -> tuple[str, ...]:
    """One short warning per violation, within the total budget."""
    out: list[str] = []
    used = 0
    for index, v in enumerate(violations):
        text = warning_text(v, scope=scope)
        if used + len(text) > MAX_WARNINGS_TOTAL_CHARS - 64:  # 64: room for the tail below
            out.append(f"… and {len(violations) - index} more validation warnings")
            break
        out.append(text)
        used += len(text)
    return tuple(out)


def audit_key(policy: str, rule: str) -> str:
    key = _AUDIT_KEY_BAD.sub("-", f"{policy}.{rule}")
    if len(key) > MAX_AUDIT_KEY_CHARS:
        # Truncate, keeping keys distinct with a short hash of the full key.
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        key = key[: MAX_AUDIT_KEY_CHARS - 9].rstrip("-._") + "-" + digest
    return key


def audit_annotations_for(violations: Iterable[Violation]) -> dict[str, str]:
    """`<policy>.<rule>` -> 'N violations: <check>: <path>: <message>; ...' (short)."""
    grouped: dict[str, list[Violation]] = {}
    for v in violations:
        grouped.setdefault(audit_key(v.policy, v.rule), []).append(v)
    out: dict[str, str] = {}
    for key, group in grouped.items():
        items = []
        for v in group:
            located = f"{v.path}: {v.message}" if v.path else v.message
            items.append(f"[{v.check}] {located}" if v.check else located)
        head = f"{len(group)} violation{'s' if len(group) != 1 else ''}: "
        out[key] = clip(head + "; ".join(items), MAX_AUDIT_VALUE_CHARS)
    return out


def build_decision(violations: Sequence[Violation], *, applied: tuple[str, ...],
                   scope: str = "") -> Decision:
    """`scope` is the template path of a controller ("" for a pod), named in warnings."""
    by_action: dict[str, list[Violation]] = {a.value: [] for a in Action}
    for v in violations:
        by_action[v.action].append(v)
    warnings = warnings_for(by_action[Action.WARN.value], scope=scope)
    audit = audit_annotations_for(by_action[Action.AUDIT.value])
    enforced = by_action[Action.ENFORCE.value]
    if enforced:
        return decision.denied(denial_message(enforced), warnings=warnings, audit_annotations=audit,
                               applied_policies=applied, violations=tuple(violations))
    return decision.allowed(warnings=warnings, audit_annotations=audit, applied_policies=applied,
                            violations=tuple(violations))
