"""Builders shared by the validation tests (this module holds no tests itself).

Policies go through the real loader (`load_policy_sources`), so every test also
exercises the schema; requests are real AdmissionRequest models, as the server
parses them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import date
from typing import Any

import yaml

from webhook.core.decision import Decision
from webhook.engine.validate import validate
from webhook.policy.loader import PolicySet, load_policy_sources
from webhook.core.request import AdmissionRequest

TODAY = date(2026, 6, 1)

KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("", "pods"), "Deployment": ("apps", "deployments"), "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"), "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"), "ConfigMap": ("", "configmaps"),
    "ReplicationController": ("", "replicationcontrollers"),
}
TEMPLATE_PATHS = {"Deployment": "spec.template", "ReplicaSet": "spec.template",
                  "StatefulSet": "spec.template", "DaemonSet": "spec.template", "Job": "spec.template",
                  "CronJob": "spec.jobTemplate.spec.template", "ReplicationController": "spec.template"}


def policy(name: str, rules: Sequence[dict[str, Any]], *, action: str = "Enforce",
           match: dict[str, Any] | None = None, exceptions: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action, "rules": list(rules)}
    if match is not None:
        spec["match"] = match
    if exceptions:
        spec["exceptions"] = list(exceptions)
    return {"apiVersion": "runtime.platform.io/v1", "kind": "ValidationPolicy",
            "metadata": {"name": name}, "spec": spec}


def policy_set(*docs: dict[str, Any], extra_files: dict[str, str] | None = None) -> PolicySet:
    files = {"validation.yaml": yaml.safe_dump_all(docs, sort_keys=False).encode()}
    for name, text in (extra_files or {}).items():
        files[name] = text.encode()
    return load_policy_sources(files)


def container(name: str = "app", image: str = "registry.example.com/app:1.0", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **fields}


def pod(*containers: dict[str, Any], labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, name: str | None = "web", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": list(containers) or [container()], **spec}}


RESTRICTED_SC = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                 "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def good_container(name: str = "app", **fields: Any) -> dict[str, Any]:
    """Passes restricted, pinned image, requests and limits."""
    base = container(name, securityContext=copy.deepcopy(RESTRICTED_SC),
                     resources={"requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"cpu": "1", "memory": "128Mi"}})
    base.update(fields)
    return base


def controller(kind: str, template_pod: dict[str, Any], *, name: str = "web") -> dict[str, Any]:
    """Wrap a pod's metadata/spec as the pod template of a controller of `kind`."""
    template = {"metadata": template_pod.get("metadata", {}), "spec": template_pod["spec"]}
    group = KINDS[kind][0]
    api_version = f"{group}/v1" if group else "v1"
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"template": template}
        if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            spec["replicas"] = 2
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def request(obj: dict[str, Any] | None, *, kind: str = "Pod", operation: str = "CREATE",
            namespace: str = "default", sub_resource: str = "", old: dict[str, Any] | None = None,
            user: str = "alice", groups: Sequence[str] = ("system:authenticated",)) -> AdmissionRequest:
    group, resource = KINDS[kind]
    return AdmissionRequest.from_dict({
        "uid": "0b4b1a5e-0000-4000-8000-000000000001",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "subResource": sub_resource, "namespace": namespace, "operation": operation,
        "userInfo": {"username": user, "uid": "1", "groups": list(groups)},
        "object": obj, "oldObject": old,
    })


def run(policies: PolicySet, obj: dict[str, Any] | None, **kwargs: Any) -> Decision:
    today = kwargs.pop("today", TODAY)
    return validate(request(obj, **kwargs), policies, today=today)


def checks(decision: Decision) -> list[tuple[str, str, str]]:
    """(rule, check, path) of every violation, in decision order."""
    return [(v.rule, v.check, v.path) for v in decision.violations]
