"""The kinds the fake API server stores, and the validation kube-apiserver applies to them
where a controller depends on it: the Pod update rule, immutable selectors, required fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KindInfo:
    group: str
    kind: str
    namespaced: bool = True
    status: bool = False        # has a /status subresource; the main resource ignores status
    generation: bool = False    # metadata.generation counts spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"


# resource -> what it is. Secrets and webhook configurations keep their own handlers.
KINDS: dict[str, KindInfo] = {
    "namespaces": KindInfo("", "Namespace", namespaced=False, status=True),
    # Pods count generation too since Kubernetes 1.33 (KEP-5067), and the kubelet reports
    # the one it acts on in status.observedGeneration.
    "pods": KindInfo("", "Pod", status=True, generation=True),
    "configmaps": KindInfo("", "ConfigMap"),
    "secrets": KindInfo("", "Secret"),
    "deployments": KindInfo("apps", "Deployment", status=True, generation=True),
    "replicasets": KindInfo("apps", "ReplicaSet", status=True, generation=True),
    "statefulsets": KindInfo("apps", "StatefulSet", status=True, generation=True),
    "daemonsets": KindInfo("apps", "DaemonSet", status=True, generation=True),
    "jobs": KindInfo("batch", "Job", status=True, generation=True),
    "cronjobs": KindInfo("batch", "CronJob", status=True, generation=True),
    "leases": KindInfo("coordination.k8s.io", "Lease"),
    "events": KindInfo("events.k8s.io", "Event"),
    "mutatingwebhookconfigurations": KindInfo("admissionregistration.k8s.io", "MutatingWebhookConfiguration",
                                              namespaced=False),
    "validatingwebhookconfigurations": KindInfo("admissionregistration.k8s.io",
                                                "ValidatingWebhookConfiguration", namespaced=False),
}
RESOURCE_OF_KIND = {info.kind: resource for resource, info in KINDS.items()}
WORKLOADS = ("deployments", "replicasets", "statefulsets", "daemonsets")

# The Pod update rule (k8s.io/kubernetes pkg/apis/core/validation ValidatePodUpdate; documented at
# https://kubernetes.io/docs/concepts/workloads/pods/#pod-update-and-replacement): a pod's spec
# is immutable except the images of its containers and init containers, activeDeadlineSeconds
# (set when unset, or lowered, never raised or unset), tolerations (additions only), and
# terminationGracePeriodSeconds (only to 1 from a negative value).
POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)")


def invalid(kind: str, name: str, problems: list[str]) -> str:
    """The message of a 422 Invalid, as kube-apiserver words it."""
    return f"{kind} \"{name}\" is invalid: " + ("[" + ", ".join(problems) + "]" if len(problems) > 1
                                                  else problems[0])


def pod_update_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why kube-apiserver refuses this pod update (empty: allowed)."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    problems: list[str] = []
    deadline_old, deadline_new = old_spec.get("activeDeadlineSeconds"), new_spec.get("activeDeadlineSeconds")
    if deadline_new != deadline_old:
        if deadline_new is None or deadline_new <= 0 or (deadline_old is not None and deadline_new > deadline_old):
            problems.append(f"spec.activeDeadlineSeconds: Invalid value: {deadline_new}: must be less than or "
                            "equal to previous value" if deadline_new is not None else
                            "spec.activeDeadlineSeconds: Invalid value: \"null\": must not update "
                            "from a positive integer to nil value")
    tolerations_old = old_spec.get("tolerations") or []
    tolerations_new = new_spec.get("tolerations") or []
    if any(t not in tolerations_new for t in tolerations_old):
        problems.append("spec.tolerations: Forbidden: existing toleration can not be modified except its "
                        "tolerationSeconds")
    # Everything else must be equal once the mutable fields are taken from the new spec.
    comparable = dict(old_spec)
    for key in ("activeDeadlineSeconds", "tolerations"):
        if key in new_spec:
            comparable[key] = new_spec[key]
        else:
            comparable.pop(key, None)
    grace_old, grace_new = old_spec.get("terminationGracePeriodSeconds"), new_spec.get("terminationGracePeriodSeconds")
    if grace_old is not None and grace_old < 0 and grace_new == 1:
        comparable["terminationGracePeriodSeconds"] = 1
    for key in ("containers", "initContainers"):
        old_list, new_list = old_spec.get(key) or [], new_spec.get(key) or []
        if key in old_spec and len(old_list) == len(new_list):
            comparable[key] = [{**o, "image": n.get("image")} if isinstance(o, dict) and isinstance(n, dict) else o
                               for o, n in zip(old_list, new_list)]
    for key in ("containers", "initContainers"):
        for i, container in enumerate(new_spec.get(key) or []):
            if isinstance(container, dict) and not container.get("image"):
                problems.append(f"spec.{key}[{i}].image: Required value")
    if comparable != new_spec:
        problems.append("spec: Forbidden: " + POD_UPDATE_MESSAGE)
    return problems


def apply_defaults(resource: str, obj: dict[str, Any]) -> None:
    """The defaults kube-apiserver sets on a created pod (k8s.io/kubernetes
    pkg/apis/core/v1/defaults.go), after mutating admission, so on what a webhook injected
    too: a controller comparing a running pod with a render must expect them."""
    if resource != "pods":
        return
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                       ("schedulerName", "default-scheduler"), ("terminationGracePeriodSeconds", 30),
                       ("securityContext", {}), ("enableServiceLinks", True)):
        spec.setdefault(key, value)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image") or "")
            tag = image.rsplit("/", 1)[-1].partition("@")[0]
            latest = ":" not in tag or tag.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest and "@" not in image else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def create_problems(resource: str, obj: dict[str, Any]) -> list[str]:
    """The required fields kube-apiserver checks on create (a small subset: what a test may get wrong)."""
    problems: list[str] = []
    spec = obj.get("spec") or {}
    if resource == "pods":
        containers = spec.get("containers") or []
        if not containers:
            problems.append("spec.containers: Required value")
        names = [c.get("name") for key in ("initContainers", "containers") for c in spec.get(key) or []]
        for i, container in enumerate(containers):
            if not container.get("name"):
                problems.append(f"spec.containers[{i}].name: Required value")
            if not container.get("image"):
                problems.append(f"spec.containers[{i}].image: Required value")
        duplicates = sorted({n for n in names if names.count(n) > 1 and n})
        problems += [f"spec.containers: Duplicate value: {n!r}" for n in duplicates]
    elif resource in WORKLOADS:
        problems += _selector_problems(spec)
    return problems


def workload_update_problems(resource: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if resource not in WORKLOADS:
        return []
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    problems = _selector_problems(new_spec)
    if old_spec.get("selector") != new_spec.get("selector"):
        problems.append("spec.selector: Invalid value: field is immutable")
    if resource == "statefulsets":
        for key in ("serviceName", "podManagementPolicy", "volumeClaimTemplates"):
            if old_spec.get(key) != new_spec.get(key):
                problems.append("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', "
                                "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' "
                                "and 'minReadySeconds' are forbidden")
                break
    return problems


def _selector_problems(spec: dict[str, Any]) -> list[str]:
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        return ["spec.selector: Required value"]
    if any(labels.get(k) != v for k, v in selector.items()):
        return ["spec.template.metadata.labels: Invalid value: "
                f"{labels!r}: `selector` does not match template `labels`"]
    return []
