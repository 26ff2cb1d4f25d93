"""Schema pieces shared by every policy kind: metadata, the matcher, naming rules.

Strict means `extra="forbid"` everywhere we own the shape: a typo stops the file at
load instead of silently matching everything or injecting nothing. Kubernetes
structures that we pass through to the pod (resources, probes, securityContext,
volume sources) are kept as mappings and checked by the API server on the pod.
`webhook policies schema` prints the JSON Schema of these models.
"""

from __future__ import annotations

import re
from enum import Enum
from fnmatch import fnmatchcase, translate
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webhook.policy.errors import Location, problem, raise_each


API_VERSION = "runtime.platform.io/v1"
ANNOTATION_PREFIX = "runtime.platform.io"

# RFC 1123 label: Kubernetes' rule for container, volume and port names (max 63).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Policy names appear inside annotation keys (`runtime.platform.io/inject-NAME`),
# whose name part is capped at 63 characters.
PolicyName = Annotated[str, Field(pattern=DNS_LABEL, max_length=48)]
ContainerName = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# The length cap both policy kinds have applied to label and annotation keys.
_MAX_LABEL_KEY = 316
# Kubernetes' rule for a label value (apimachinery IsValidLabelValue).
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_VALUE_RULE = ("a label value is at most 63 characters: letters, digits, '-', '_' and '.', "
                    "beginning and ending with a letter or digit")


def valid_label_value(text: str) -> bool:
    return len(text) <= 63 and _LABEL_VALUE.match(text) is not None


def check_label_value(key: str, value: str) -> None:
    """ValueError naming the label when `value` is not a valid label value."""
    if not valid_label_value(value):
        raise ValueError(f"label {key!r}: {LABEL_VALUE_RULE}, not {value!r}")


def check_label_key(key: str) -> str:
    """A Kubernetes label or annotation key, or ValueError naming it."""
    if len(key) > _MAX_LABEL_KEY or not LABEL_KEY.match(key):
        raise ValueError(f"invalid label/annotation key {key!r}")
    return key


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Workload(str, Enum):
    SERVICE = "Service"          # owned by a ReplicaSet (a Deployment's pods)
    JOB = "Job"
    CRON_JOB = "CronJob"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"
    TRAINING = "Training"        # owned by a training operator's job kind
    POD = "Pod"                  # a bare pod with no controller
    OTHER = "Other"              # owned by a controller we do not know


class Mode(str, Enum):
    ENFORCE = "Enforce"
    SHADOW = "Shadow"            # compute, do not apply; answer with a warning


class OptOut(str, Enum):
    """Whether a pod's author may turn an injection policy off for their pod."""

    ALLOWED = "Allowed"          # the inject annotations and the workload label are honoured
    FORBIDDEN = "Forbidden"      # mandatory runtime: both are ignored (with a warning)


class Metadata(Strict):
    name: PolicyName
    description: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class NamespaceMatch(Strict):
    include: list[str] = Field(default_factory=list, description="glob patterns; empty means all")
    exclude: list[str] = Field(default_factory=list, description="glob patterns, checked after include")

    # Each list's globs as one expression, compiled on first use: every admission asks of every
    # policy. The model is frozen and a reload builds new ones, so the cache cannot go stale.
    @cached_property
    def _include_any(self) -> re.Pattern[str] | None:
        return _any_glob(self.include)

    @cached_property
    def _exclude_any(self) -> re.Pattern[str] | None:
        return _any_glob(self.exclude)

    def includes(self, namespace: str) -> bool:
        """Whether `include` selects `namespace` (an empty one selects every namespace)."""
        pattern = self._include_any
        return pattern is None or pattern.match(namespace) is not None

    def excluded_by(self, namespace: str) -> str | None:
        """The first `exclude` glob that `namespace` matches, or None."""
        pattern = self._exclude_any
        if pattern is None or pattern.match(namespace) is None:
            return None
        return next(p for p in self.exclude if fnmatchcase(namespace, p))

    def selects_nothing(self) -> bool:
        """Every included pattern is also excluded (a lint finding: no namespace can match)."""
        return bool(self.include) and all(any(fnmatchcase(i, e) for e in self.exclude) for i in self.include)


def _any_glob(patterns: list[str]) -> re.Pattern[str] | None:
    """One expression matching what any of `patterns` matches, by fnmatchcase's rules."""
    return re.compile("|".join(translate(p) for p in patterns)) if patterns else None


def _selectable(labels: dict[str, str]) -> dict[str, str]:
    raise_each("matchLabels", [((key,), message) for key, value in labels.items()
                               for message in _selector_problems(key, value)])
    return labels


def _selector_problems(key: str, value: str | None = None) -> list[str]:
    """Each thing wrong with a selector's key and value (both, when both are). A selector
    naming a key or value no pod can carry (a stray space, a typo'd character) would never
    match, silently: refused, as the API server refuses it in a Deployment's selector."""
    found = [problem(check_label_key, key)]
    if value is not None:
        found.append(problem(check_label_value, key, value))
    return [p for p in found if p]


class LabelSelectorRequirement(Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []

    @model_validator(mode="after")
    def _pod_labels_could_match(self) -> LabelSelectorRequirement:
        problems: list[tuple[Location, str]] = [(("key",), p) for p in _selector_problems(self.key)]
        problems += [(("values", index), p) for index, value in enumerate(self.values)
                     if (p := problem(check_label_value, self.key, value))]
        # Same rule as Kubernetes: In/NotIn need values, Exists/DoesNotExist forbid them.
        if self.operator in ("In", "NotIn") and not self.values:
            problems.append(((), f"operator {self.operator} needs at least one value"))
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            problems.append(((), f"operator {self.operator} takes no values"))
        raise_each("matchExpressions", problems)
        return self


class LabelSelector(Strict):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list,
                                                              alias="matchExpressions")

    _labels_could_match = field_validator("match_labels")(_selectable)


# A Kubernetes kind as objects spell it (`kind: Deployment`): CamelCase letters and digits.
KIND_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
# Kinds a `workloads` entry names that are not also profile names; an operator's kind
# (PyTorchJob, Workflow, ...) is accepted as well, see docs/policies.md.
BUILTIN_OWNER_KINDS = ("Deployment", "ReplicaSet", "ReplicationController")
# Kinds of training operators (Kubeflow, Ray) whose pods count as Training.
TRAINING_OWNER_KINDS = frozenset({"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob",
                                  "JAXJob", "TrainJob", "RayJob", "RayCluster"})


def _workload_names(value: list[str] | None) -> list[str] | None:
    raise_each("workloads", [
        ((index,), f"workload {name!r}: give a profile ({', '.join(w.value for w in Workload)}) or the "
                   "owning object's kind as it spells it (Deployment, CronJob, PyTorchJob, ...)")
        for index, name in enumerate(value or ()) if not KIND_NAME.match(name)])
    return value


class MatchExclude(Strict):
    containers: list[ContainerName] = Field(
        default_factory=list,
        description="skip a pod that already has a container of one of these names (in any container list), "
                    "e.g. another mesh's proxy")


class Match(Strict):
    namespaces: NamespaceMatch = NamespaceMatch()
    namespace_selector: LabelSelector | None = Field(
        None, alias="namespaceSelector",
        description="labels of the pod's namespace (the Namespace object's, read by the server from the API); "
                    "must hold together with `namespaces`")
    pod_selector: LabelSelector | None = Field(None, alias="podSelector")
    # min_length: an empty list would read as "none" but match every pod.
    workloads: list[str] | None = Field(
        None, min_length=1,
        description="profiles (Service: a ReplicaSet's pods, i.e. a Deployment's, not the Service object; Job; "
                    "CronJob; StatefulSet; DaemonSet; Training; Pod; Other) or the top owner's own kind "
                    "(Deployment, ReplicaSet, Job, CronJob, PyTorchJob, Workflow, ...); absent means every kind")
    os: list[Literal["linux", "windows"]] | None = Field(
        None, min_length=1, description="pods without spec.os (or a kubernetes.io/os node selector) count as "
                          "linux; absent means any")
    host_network: bool | None = Field(
        None, alias="hostNetwork",
        description="true: only hostNetwork pods; false: only pods in their own network namespace")
    exclude: MatchExclude = MatchExclude()

    _workloads_named = field_validator("workloads")(_workload_names)

    @cached_property
    def _workload_split(self) -> tuple[frozenset[str], frozenset[str]]:
        """`workloads` split into profile names and owner kinds, on first use (see NamespaceMatch)."""
        names = frozenset(self.workloads or ())
        profiles = frozenset(w.value for w in Workload)
        return names & profiles, names - profiles

    def selects_workload(self, profile: Workload, owner_kind: str) -> bool:
        """A profile name (Job, StatefulSet, ... are kinds and profiles alike) selects the pod's
        profile, which the workload label may set; any other name selects the top owner's kind."""
        profiles, kinds = self._workload_split
        return profile.value in profiles or owner_kind in kinds
