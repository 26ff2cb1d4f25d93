"""Facts about a pod that policies match on and templates read.

Pods arrive as untrusted JSON: every accessor tolerates missing or wrongly typed
fields, treating them as absent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.core.jsonvalue import as_dict, as_list, as_str, dicts_in, str_map
from webhook.rules.containers import CONTAINER_FIELDS
from webhook.policy.common import ANNOTATION_PREFIX, TRAINING_OWNER_KINDS, Workload

WORKLOAD_LABEL = f"{ANNOTATION_PREFIX}/workload"
OS_LABEL = "kubernetes.io/os"
# The CronJob controller names each Job `<cronjob>-<scheduled time in minutes since
# the epoch>` (8 digits today); a Job's pods carry only the Job as owner, so this
# name shape is how a CronJob's pods are told apart from a plain Job's. Times before
# mid-2017 (25,000,000 minutes) are not accepted, so that a date suffix such as
# `migrate-20240115` (about 20 million) stays a Job.
_CRONJOB_JOB_NAME = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>\d{8,10})$")
_CRONJOB_MIN_MINUTES = 25_000_000


# Kinds whose pods count as long-running services (profile Service).
_SERVICE_OWNER_KINDS = frozenset({"ReplicaSet", "ReplicationController"})
_PROFILE_OF_KIND = {"StatefulSet": Workload.STATEFUL_SET, "DaemonSet": Workload.DAEMON_SET}


class Owner(NamedTuple):
    """The workload that owns a pod, as far as its ownerReferences tell without API calls.
    A named tuple: one is made for every request, and a frozen dataclass costs more to make."""

    kind: str            # the top owner's own kind: Deployment, CronJob, PyTorchJob, Pod (none)...
    name: str
    profile: Workload    # the profile that kind belongs to (never from a label)


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    generate_name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str
    workload_kind: Workload     # the profile; the runtime.platform.io/workload label may set it
    workload_name: str
    os: str                     # "linux" unless the pod says or is pinned to "windows"
    host_network: bool
    owner_kind: str = "Pod"     # the top owner's kind (see Owner)
    owner_profile: Workload = Workload.POD
    container_names: frozenset[str] = frozenset()  # init, app and ephemeral containers
    # The namespace's labels (not the pod's: the author cannot set them), or why unknown.
    namespace_labels: NamespaceLabels = NOT_GIVEN

    def from_owners(self) -> PodFacts:
        """These facts with the profile taken from the ownerReferences alone: what a policy
        that its pods cannot opt out of (optOut: Forbidden) matches on, so that no label the
        pod's author writes moves the pod into another profile."""
        if self.workload_kind is self.owner_profile:
            return self
        return dataclasses.replace(self, workload_kind=self.owner_profile)


def controller_owner(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    owners = dicts_in(metadata.get("ownerReferences"))
    return next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)


def owner_of(metadata: Mapping[str, Any], labels: Mapping[str, str]) -> Owner:
    """The pod's top owner. A pod names only its direct owner; two controllers' naming
    conventions reach one level further (see docs/policies.md for their limits)."""
    owner = controller_owner(metadata)
    if not owner:
        # A generateName that is not a string names nothing (the API server refuses it);
        # spelling it out with str() made a 65-bit integer read differently on each pass.
        name = as_str(metadata.get("name") or as_str(metadata.get("generateName")).rstrip("-"))
        return Owner("Pod", name, Workload.POD)
    kind, name = as_str(owner.get("kind")), as_str(owner.get("name"))
    if kind in _SERVICE_OWNER_KINDS:
        # The Deployment controller names each ReplicaSet `<deployment>-<pod-template-hash>`
        # and labels its pods with that hash.
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return Owner("Deployment", name[: -len(template_hash) - 1], Workload.SERVICE)
        return Owner(kind, name, Workload.SERVICE)
    if kind == "Job":
        cron = _CRONJOB_JOB_NAME.match(name)
        if cron and int(cron.group("minutes")) >= _CRONJOB_MIN_MINUTES:
            return Owner("CronJob", cron.group("cronjob"), Workload.CRON_JOB)
        return Owner("Job", name, Workload.JOB)
    if kind in TRAINING_OWNER_KINDS:
        return Owner(kind, name, Workload.TRAINING)
    return Owner(kind, name, _PROFILE_OF_KIND.get(kind, Workload.OTHER))


def workload_of(metadata: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[Workload, str]:
    """(profile, name) of the workload that owns the pod; a valid workload label sets the profile."""
    owner = owner_of(metadata, labels)
    return label_profile(labels) or owner.profile, owner.name


def label_profile(labels: Mapping[str, str]) -> Workload | None:
    """The profile the runtime.platform.io/workload label names, when it names one."""
    override = labels.get(WORKLOAD_LABEL)
    return Workload(override) if override in Workload._value2member_map_ else None


def container_names(spec: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(as_str(c.get("name")) for key in CONTAINER_FIELDS
                     for c in dicts_in(spec.get(key)))


def pod_facts(pod: Mapping[str, Any], *, namespace: str, namespace_labels: NamespaceLabels = NOT_GIVEN,
              names: frozenset[str] | None = None) -> PodFacts:
    """`names`: the pod's container names (`container_names`), when the caller has them."""
    metadata = as_dict(pod.get("metadata"))
    spec = as_dict(pod.get("spec"))
    labels = str_map(metadata.get("labels"))
    owner = owner_of(metadata, labels)
    profile = label_profile(labels)
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
        workload_kind=profile or owner.profile,
        workload_name=owner.name,
        os=os_name,
        host_network=spec.get("hostNetwork") is True,
        owner_kind=owner.kind,
        owner_profile=owner.profile,
        container_names=container_names(spec) if names is None else names,
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
