"""Facts about a pod that policies match on and templates read.

Pods arrive as untrusted JSON: every accessor tolerates missing or wrongly typed
fields, treating them as absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.jsonvalue import as_dict, as_list, as_str, dicts_in, str_map
from webhook.policy.common import ANNOTATION_PREFIX, Workload

WORKLOAD_LABEL = f"{ANNOTATION_PREFIX}/workload"
OS_LABEL = "kubernetes.io/os"
# Kinds of training operators (Kubeflow, Ray) whose pods count as Training.
TRAINING_OWNER_KINDS = frozenset({"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob",
                                  "JAXJob", "TrainJob", "RayJob", "RayCluster"})
# The CronJob controller names each Job `<cronjob>-<scheduled time in minutes since
# the epoch>` (8 digits today); a Job's pods carry only the Job as owner, so this
# name shape is how a CronJob's pods are told apart from a plain Job's. Times before
# mid-2017 (25,000,000 minutes) are not accepted, so that a date suffix such as
# `migrate-20240115` (about 20 million) stays a Job.
_CRONJOB_JOB_NAME = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>\d{8,10})$")
_CRONJOB_MIN_MINUTES = 25_000_000


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    generate_name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str
    workload_kind: Workload
    workload_name: str
    os: str                     # "linux" unless the pod says or is pinned to "windows"
    host_network: bool
    # The namespace's labels (not the pod's: the author cannot set them), or why unknown.
    namespace_labels: NamespaceLabels = NOT_GIVEN


def controller_owner(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    owners = dicts_in(metadata.get("ownerReferences"))
    return next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)


def workload_of(metadata: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[Workload, str]:
    """(kind, name) of the workload that owns the pod."""
    owner = controller_owner(metadata)
    kind = as_str(owner.get("kind")) if owner else ""
    name = as_str(owner.get("name")) if owner else ""
    if not owner:
        detected = Workload.POD
        # A generateName that is not a string names nothing (the API server refuses it);
        # spelling it out with str() made a 65-bit integer read differently on each pass.
        name = as_str(metadata.get("name") or as_str(metadata.get("generateName")).rstrip("-"))
    elif kind == "ReplicaSet":
        detected = Workload.SERVICE
        template_hash = labels.get("pod-template-hash")
        if template_hash and name.endswith(f"-{template_hash}"):
            name = name[: -len(template_hash) - 1]  # the Deployment's name
    elif kind == "Job":
        cron = _CRONJOB_JOB_NAME.match(name)
        if cron and int(cron.group("minutes")) >= _CRONJOB_MIN_MINUTES:
            detected, name = Workload.CRON_JOB, cron.group("cronjob")
        else:
            detected = Workload.JOB
    elif kind == "StatefulSet":
        detected = Workload.STATEFUL_SET
    elif kind == "DaemonSet":
        detected = Workload.DAEMON_SET
    elif kind in TRAINING_OWNER_KINDS:
        detected = Workload.TRAINING
    else:
        detected = Workload.OTHER
    override = labels.get(WORKLOAD_LABEL)
    if override in Workload._value2member_map_:
        detected = Workload(override)
    return detected, name


def pod_facts(pod: Mapping[str, Any], *, namespace: str, namespace_labels: NamespaceLabels = NOT_GIVEN) -> PodFacts:
    metadata = as_dict(pod.get("metadata"))
    spec = as_dict(pod.get("spec"))
    labels = str_map(metadata.get("labels"))
    kind, workload_name = workload_of(metadata, labels)
    os_name = pod_os(spec)
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return PodFacts(
        # The object's namespace may be absent on CREATE; the request's is authoritative.
        namespace=namespace or as_str(metadata.get("namespace")),
        name=as_str(metadata.get("name")),
        generate_name=as_str(metadata.get("generateName")),
        labels=labels,
        annotations=str_map(metadata.get("annotations")),
        service_account=service_account if isinstance(service_account, str) else "default",
        workload_kind=kind,
        workload_name=workload_name,
        os=os_name,
        host_network=spec.get("hostNetwork") is True,
        namespace_labels=namespace_labels,
    )


def pod_os(spec: Mapping[str, Any]) -> str:
    """`spec.os.name` when set; otherwise what the pod's scheduling pins it to. Many
    Windows pods say so only through `nodeSelector` or a required node affinity on
    `kubernetes.io/os`, as the Kubernetes Windows guide shows."""
    declared = as_dict(spec.get("os")).get("name")
    if declared in ("linux", "windows"):
        return declared
    if as_dict(spec.get("nodeSelector")).get(OS_LABEL) == "windows":
        return "windows"
    required = as_dict(as_dict(as_dict(spec.get("affinity")).get("nodeAffinity"))
                       .get("requiredDuringSchedulingIgnoredDuringExecution"))
    terms = dicts_in(required.get("nodeSelectorTerms"))
    # Pinned to Windows only if every alternative term requires it.
    if terms and all(_requires_windows(t) for t in terms):
        return "windows"
    return "linux"


def _requires_windows(term: Mapping[str, Any]) -> bool:
    for expr in as_list(term.get("matchExpressions")):
        if (isinstance(expr, dict) and expr.get("key") == OS_LABEL and expr.get("operator") == "In"
                and as_list(expr.get("values")) == ["windows"]):
            return True
    return False
