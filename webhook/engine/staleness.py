"""What is wrong with a running pod as the API server lists it: a stale ledger, or a spec
the current policies would deny. Shared by `webhook report` and the controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.policy.loader import PolicySet

STALE, WOULD_DENY, UNKNOWN = "stale", "would-deny", "unknown"


@dataclass
class Finding:
    namespace: str
    pod: str
    status: str                 # stale | would-deny | unknown (namespace labels)
    detail: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        key = "policies" if self.status == STALE else "violations"
        return {"namespace": self.namespace, "pod": self.pod, "status": self.status,
                "detail": self.detail, key: self.items}


@dataclass


class Report:
    pods: int                   # running pods examined
    findings: list[Finding]
    policy_revision: str


def pod_findings(item: dict[str, Any], policies: PolicySet, *, namespace_labels: Any = None) -> list[Finding]:
    """What is wrong with one pod as the API server lists it: a stale ledger, would-deny.
    `namespace_labels`: its namespace's labels (engine.namespaces.NamespaceLabels), for
    policies with a namespaceSelector; a pod whose namespace's labels are unknown to
    such a policy is reported as `unknown`."""
    from webhook.engine.inject import inject
    from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabelsUnavailable
    from webhook.engine.ledger import LEDGER_ANNOTATION, LedgerError, parse_ledger
    from webhook.engine.validate import validate
    from webhook.cli.offline import make_request

    # List items carry no kind/apiVersion; the engine tells pods from controllers by them.
    pod = {**item, "apiVersion": "v1", "kind": "Pod"}
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
    out: list[Finding] = []

    stale: list[dict[str, Any]] = []
    ledger = None
    current = {p.name: p.revision for p in policies.injectors}
    raw_ledger = (metadata.get("annotations") or {}).get(LEDGER_ANNOTATION)
    recorded: set[str] = set()
    if raw_ledger is not None:
        try:
            ledger = parse_ledger(raw_ledger)
        except LedgerError as exc:
            stale.append({"policy": "", "reason": "unreadable-ledger",
                          "detail": f"unreadable {LEDGER_ANNOTATION} annotation: {exc}"})
            ledger = None
        for record in ledger.policies if ledger else []:
            recorded.add(record.name)
            if record.name not in current:
                stale.append({"policy": record.name, "reason": "removed", "podRevision": record.revision,
                              "detail": f"{record.name} is no longer in the policy set"})
            elif record.revision != current[record.name]:
                stale.append({"policy": record.name, "reason": "revision", "podRevision": record.revision,
                              "currentRevision": current[record.name],
                              "detail": f"{record.name} revision {record.revision or '?'} "
                                        f"(current {current[record.name]})"})
    labels = NOT_GIVEN if namespace_labels is None else namespace_labels
    try:
        result = inject(pod, namespace=namespace, policies=policies, namespace_labels=labels)
        decision = validate(make_request(pod, namespace=namespace), policies, namespace_labels=labels)
    except NamespaceLabelsUnavailable as exc:
        return [Finding(namespace, name, UNKNOWN, str(exc), [])]
    for outcome in result.outcomes:
        if outcome.applied and not outcome.shadow and outcome.policy not in recorded:
            stale.append({"policy": outcome.policy, "reason": "missing",
                          "currentRevision": current.get(outcome.policy, ""),
                          "detail": f"{outcome.policy} would apply but is not injected"})
    if stale:
        out.append(Finding(namespace, name, STALE, "; ".join(s["detail"] for s in stale),
                           [{k: v for k, v in s.items() if k != "detail"} for s in stale]))

    denials: list[dict[str, Any]] = []
    if result.denial:
        # Injection itself would refuse this pod now (a conflict with a policy), so the
        # check for missing policies above could not see past the refusing one.
        refusing = next((o.policy for o in result.outcomes if not o.applied and o.reason.startswith("denied:")), "")
        denials.append({"policy": refusing, "rule": "injection", "check": "", "path": "",
                        "message": result.denial,
                        "detail": f"injection{f' ({refusing})' if refusing else ''}: {result.denial}"})
    if not decision.allowed:
        # A container that a policy's older revision injected is no longer what the policy
        # renders, so the reserved-name rule refuses it: that is the staleness above, not
        # a denial of its own. (Admission never takes the ledger's word; a report may.)
        outdated = {c for r in (ledger.policies if ledger else []) if r.name in
                    {s["policy"] for s in stale if s["reason"] in ("revision", "removed")} for c in r.containers}
        enforced = [v for v in decision.violations if v.action == "Enforce"]
        kept = [v for v in enforced if not (v.check == "reservedName" and v.container in outdated)]
        denials += [{"policy": v.policy, "rule": v.rule, "check": v.check, "path": v.path, "message": v.message,
                     "detail": f"{v.policy}/{v.rule}{f'[{v.check}]' if v.check else ''} {v.path}: {v.message}"}
                    for v in kept]
        if not enforced:
            denials.append({"policy": "", "rule": "", "check": "", "path": "",
                            "message": decision.message or "denied", "detail": decision.message or "denied"})
    if denials:
        out.append(Finding(namespace, name, WOULD_DENY, one_line("; ".join(d["detail"] for d in denials)),
                           [{k: v for k, v in d.items() if k != "detail"} for d in denials]))
    return out


def one_line(text: str) -> str:
    return " ".join(text.split())
