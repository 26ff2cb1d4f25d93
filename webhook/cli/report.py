"""`webhook report`: running pods that are stale or would be denied, read from the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.engine.staleness import STALE, UNKNOWN, WOULD_DENY, pod_states
from webhook.kube.client import Kube
from webhook.policy.loader import PolicySet


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


def report(api_client: Any, policies: PolicySet, *, namespace: str | None = None) -> Report:
    """Running pods (all namespaces when `namespace` is None) that are stale or would be denied."""
    from webhook.engine.namespaces import LabelsUnknown, needs_namespace_labels

    kube = Kube(api_client)
    findings: list[Finding] = []
    count = 0
    pods = list(kube.list_pods(namespace))
    # Read after the pods, so that every listed pod's namespace is there (unless deleted since).
    labels = kube.namespace_labels(namespace) if needs_namespace_labels(policies) else {}
    gone = LabelsUnknown("the namespace was not found")
    for item in pods:
        if (item.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        count += 1
        pod_namespace = str((item.get("metadata") or {}).get("namespace") or "default")
        findings.extend(pod_findings(item, policies, namespace_labels=labels.get(pod_namespace, gone)))
    findings.sort(key=lambda f: (f.namespace, f.pod, f.status != STALE))
    return Report(pods=count, findings=findings, policy_revision=policies.revision)


def pod_findings(item: dict[str, Any], policies: PolicySet, *, namespace_labels: Any = None) -> list[Finding]:
    """What is wrong with one pod as the API server lists it: stale for a policy (what the
    policies render for it now differs from what it has), would be denied.
    `namespace_labels`: its namespace's labels (engine.namespaces.NamespaceLabels), for
    policies with a namespaceSelector; a pod whose namespace's labels are unknown to
    such a policy is reported as `unknown`."""
    from webhook.core.request import make_request
    from webhook.engine.ledger import ledger_of
    from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabelsUnavailable
    from webhook.engine.validate import validate

    pod = {**item, "apiVersion": "v1", "kind": "Pod"}
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
    labels = NOT_GIVEN if namespace_labels is None else namespace_labels
    try:
        standing = pod_states(pod, policies, namespace=namespace, namespace_labels=labels)
        decision = validate(make_request(pod, namespace=namespace), policies, namespace_labels=labels)
    except NamespaceLabelsUnavailable as exc:
        return [Finding(namespace, name, UNKNOWN, str(exc), [])]
    out: list[Finding] = []
    stale = [(policy, s) for policy, s in standing.policies.items() if s.state == STALE]
    order = {p.name: i for i, p in enumerate(policies.injectors)}
    stale.sort(key=lambda ps: (order.get(ps[0], len(order)), ps[0]))
    if stale:
        items = []
        for policy, s in stale:
            entry: dict[str, Any] = {"policy": policy, "reason": s.reason}
            if s.pod_revision:
                entry["podRevision"] = s.pod_revision
            if s.current_revision:
                entry["currentRevision"] = s.current_revision
            if s.in_place:
                entry["inPlace"] = dict(s.in_place)
            items.append(entry)
        out.append(Finding(namespace, name, STALE, "; ".join(f"{p} {s.detail}" for p, s in stale), items))

    denials: list[dict[str, Any]] = []
    if standing.denial:
        # Injection itself would refuse this pod now (a conflict with a policy), so the
        # comparison above could not see past the refusing one.
        refusing = next((p for p, s in standing.policies.items() if s.reason.startswith("denied:")), "")
        denials.append({"policy": refusing, "rule": "injection", "check": "", "path": "",
                        "message": standing.denial,
                        "detail": f"injection{f' ({refusing})' if refusing else ''}: {standing.denial}"})
    if not decision.allowed:
        # A container that a policy's older revision injected is no longer what the policy
        # renders, so the reserved-name rule refuses it: that is the staleness above, not
        # a denial of its own. (Admission never takes the ledger's word; a report may.)
        ledger = ledger_of(metadata.get("annotations") or {})
        outdated = {c for r in ledger.policies if r.name in {p for p, _ in stale} for c in r.containers}
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
