"""`webhook report`: running pods that are stale or would be denied, read from the cluster."""

from __future__ import annotations

from typing import Any

from webhook.policy.loader import PolicySet
from webhook.engine.staleness import STALE, Finding, Report, pod_findings
from webhook.kube.client import Kube


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
