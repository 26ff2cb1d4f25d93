"""The InjectionPolicy schema: what gets added to matching pods."""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from itertools import combinations
from typing import Any, Literal

from pydantic import (Field, ModelWrapValidatorHandler, StrictInt, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from webhook.policy.common import (
    ANNOTATION_PREFIX,
    ContainerName,
    Match,
    Metadata,
    Mode,
    OptOut,
    PolicyName,
    Strict,
    check_label_key,
    check_label_value,
)
from webhook.policy.errors import Location, problem, raise_each
from webhook.policy.template import TemplateError, compile_template, has_template


class OnConflict(str, Enum):
    """What to do when the pod already has an item of the same name (or mount path)."""

    KEEP = "Keep"          # keep the pod's own item, inject the rest of the policy
    REPLACE = "Replace"    # replace the pod's item with the policy's
    SKIP = "Skip"          # do not apply this policy to the pod at all
    DENY = "Deny"          # deny the pod, naming both sides


# One `{{ ... }}` placeholder, to name every bad one of a value (compile_template stops at the first).
_PLACEHOLDERS = re.compile(r"\{\{.*?\}\}")


def _no_template(value: str, what: str) -> str:
    """An env var's name and a mount's path identify it in the ledger and in conflicts,
    before any rendering: a template there would not be found again on reinvocation (a
    second copy of the var, or a pod denied for mounting one path twice)."""
    if has_template(value):
        raise ValueError(f"{what} cannot hold a template ({value!r}); "
                         "template the value, subPath or the volume source instead")
    return value


class PortConflict(str, Enum):
    """What to do when another container of the pod declares the same port: containers
    share the pod's network namespace, so only one of them can listen on it."""

    SKIP = "Skip"          # do not apply this policy to the pod at all
    DENY = "Deny"          # deny the pod, naming both containers and the port


class MissingRequirement(str, Enum):
    """What to do when a policy named in `requires` did not apply to the pod."""

    SKIP = "Skip"          # do not apply this policy either
    DENY = "Deny"          # deny the pod, saying which requirement did not apply and why


class ContainerPort(Strict):
    """Kubernetes' ContainerPort, plus what a clash with another container's port does."""

    name: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=15,
                             description="an IANA service name: at most 15 characters, with a letter")
    container_port: StrictInt = Field(alias="containerPort", ge=1, le=65535)
    host_port: StrictInt | None = Field(None, alias="hostPort", ge=1, le=65535)
    host_ip: str | None = Field(None, alias="hostIP")
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    on_conflict: PortConflict = Field(PortConflict.DENY, alias="onConflict",
                                      description="another container of the pod declares this port "
                                                  "(or host port) with the same protocol")

    @field_validator("host_ip")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"hostIP {value!r} is not an IP address") from None
        return value

    @field_validator("name")
    @classmethod
    def _has_a_letter(cls, value: str | None) -> str | None:
        # Kubernetes' IANA_SVC_NAME rule: a probe naming a port by a number-only name
        # would read it as a number, so the API server refuses such a name.
        if value is not None and (not any(c.isalpha() for c in value) or "--" in value):
            raise ValueError(f"port name {value!r} needs a letter and no '--' (an IANA service name)")
        return value


class Target(Strict):
    """Which of the pod's own containers an env var or mount goes to."""

    containers: list[str] | None = Field(None, description="names; absent means every app container")
    include_init_containers: bool = Field(False, alias="includeInitContainers")


class InjectedContainer(Strict):
    name: ContainerName
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(None, alias="imagePullPolicy")
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = Field(None, alias="workingDir")
    env: list[dict[str, Any]] | None = None
    ports: list[ContainerPort] | None = None
    resources: dict[str, Any] | None = None
    security_context: dict[str, Any] | None = Field(None, alias="securityContext")
    readiness_probe: dict[str, Any] | None = Field(None, alias="readinessProbe")
    liveness_probe: dict[str, Any] | None = Field(None, alias="livenessProbe")
    startup_probe: dict[str, Any] | None = Field(None, alias="startupProbe")
    volume_mounts: list[dict[str, Any]] | None = Field(None, alias="volumeMounts")
    termination_message_policy: str | None = Field(None, alias="terminationMessagePolicy")
    on_conflict: OnConflict = Field(OnConflict.DENY, alias="onConflict")
    before: list[str] = Field(default_factory=list, description="injected init containers this one runs before")
    after: list[str] = Field(default_factory=list, description="injected init containers this one runs after")

    @field_validator("env")
    @classmethod
    def _env_values_are_strings(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        # The rest of a container passes through to the API server, but a YAML `value: 8080`
        # or `value: true` is the common slip there, and the API server refuses every pod
        # that gets it: "cannot unmarshal number into ... of type string".
        for index, entry in enumerate(value or ()):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"env[{index}] needs a name")
            if entry.get("value") is not None and not isinstance(entry["value"], str):
                raise ValueError(f"env var {name!r}: value must be a string; quote it "
                                 f"({entry['value']!r} in YAML is not a string)")
        return value

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, value: list[ContainerPort] | None) -> list[ContainerPort] | None:
        seen: set[tuple[int, str]] = set()
        for port in value or ():
            key = (port.container_port, port.protocol or "TCP")
            if key in seen:
                raise ValueError(f"port {key[0]}/{key[1]} is declared twice")
            seen.add(key)
        return value

    def to_container(self) -> dict[str, Any]:
        """The Kubernetes container object, without our own policy-only fields."""
        return self.model_dump(by_alias=True, exclude_none=True,
                               exclude={"on_conflict": True, "before": True, "after": True, "native": True,
                                        "ports": {"__all__": {"on_conflict"}}})


class Sidecar(InjectedContainer):
    native: bool = Field(True, description="an init container with restartPolicy: Always (the default)")

    @model_validator(mode="after")
    def _classic_runs_after_init(self) -> Sidecar:
        # A classic sidecar is an app container: it starts after every init container and
        # native sidecar, so `before` one of them cannot hold (it was silently ignored).
        if not self.native and self.before:
            raise ValueError(f"sidecar {self.name!r} has native: false, so it starts after every init "
                             f"container and native sidecar; before: {self.before} cannot hold")
        return self


class EnvVar(Target):
    name: str = Field(min_length=1, pattern=r"^[^=]+$")
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, alias="valueFrom")
    on_conflict: OnConflict = Field(OnConflict.KEEP, alias="onConflict")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("exactly one of value and valueFrom is required")
        return self

    @field_validator("name")
    @classmethod
    def _fixed_name(cls, value: str) -> str:
        return _no_template(value, "an env var's name")

    def to_env(self) -> dict[str, Any]:
        if self.value_from is not None:
            return {"name": self.name, "valueFrom": self.value_from}
        return {"name": self.name, "value": self.value}


class Volume(Strict):
    name: ContainerName
    source: dict[str, Any] = Field(description="the volume source, e.g. {emptyDir: {medium: Memory}}")
    on_conflict: OnConflict = Field(OnConflict.DENY, alias="onConflict")

    @field_validator("source")
    @classmethod
    def _one_source(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) != 1:
            raise ValueError("a volume needs exactly one source, e.g. {emptyDir: {}}")
        return value

    def to_volume(self) -> dict[str, Any]:
        return {"name": self.name, **self.source}


class VolumeMount(Target):
    name: ContainerName = Field(description="the volume to mount")
    mount_path: str = Field(alias="mountPath", pattern=r"^/")
    read_only: bool = Field(False, alias="readOnly")
    sub_path: str | None = Field(None, alias="subPath")
    on_conflict: OnConflict = Field(OnConflict.KEEP, alias="onConflict")

    @field_validator("mount_path")
    @classmethod
    def _fixed_path(cls, value: str) -> str:
        return _no_template(value, "a mountPath")

    def to_mount(self) -> dict[str, Any]:
        mount: dict[str, Any] = {"name": self.name, "mountPath": self.mount_path}
        if self.read_only:
            mount["readOnly"] = True
        if self.sub_path:
            mount["subPath"] = self.sub_path
        return mount


class Inject(Strict):
    init_containers: list[InjectedContainer] = Field(default_factory=list, alias="initContainers")
    sidecars: list[Sidecar] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    volume_mounts: list[VolumeMount] = Field(default_factory=list, alias="volumeMounts")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels", "annotations")
    @classmethod
    def _valid_keys(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        problems: list[tuple[Location, str]] = []
        for key, text in value.items():
            found = problem(check_label_key, key)
            if found is None and key.startswith(f"{ANNOTATION_PREFIX}/status"):
                found = f"{key!r} is reserved for the injection ledger"
            # The API server refuses a pod with a bad label value: every matching pod would
            # fail. A template's value is checked once rendered, at admission.
            if found is None and info.field_name == "labels" and not has_template(text):
                found = problem(check_label_value, key, text)
            if found:
                problems.append(((key,), found))
        raise_each("inject", problems)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _templates_compile(cls, data: Any, handler: ModelWrapValidatorHandler[Inject]) -> Inject:
        # Each bad template at its own place, all of them, beside the other errors of the
        # section: a policy with three typos is fixed in one go.
        problems = [(loc, message) for loc, text in _strings_at(data, ()) if has_template(text)
                    for message in _template_problems(text)]
        try:
            model = handler(data)
        except ValidationError as exc:
            raise_each("inject", [(tuple(e["loc"]), e["msg"]) for e in exc.errors()] + problems,
                       types=[e["type"] for e in exc.errors()])
            raise
        raise_each("inject", problems)
        return model

    @model_validator(mode="after")
    def _unique_names(self) -> Inject:
        for what, names in (("container", [c.name for c in (*self.init_containers, *self.sidecars)]),
                            ("volume", [v.name for v in self.volumes])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} name(s): {', '.join(dupes)}")
        # Sidecars run side by side for the pod's life: two declaring one port could never
        # both listen on it, and every pod the policy applies to would be denied.
        declared: dict[tuple[int, str, bool], str] = {}
        for sidecar in self.sidecars:
            for port in sidecar.ports or ():
                for number, host in ((port.container_port, False), (port.host_port, True)):
                    key = (number, port.protocol or "TCP", host)
                    if number is None:
                        continue
                    if key in declared and declared[key] != sidecar.name:
                        raise ValueError(f"{'host port' if host else 'port'} {number}/{key[1]} is declared by "
                                         f"sidecars {declared[key]!r} and {sidecar.name!r}, which run side by side")
                    declared[key] = sidecar.name
        # One env var name (or mount path) may be given twice only for different containers:
        # otherwise the second would silently lose to the first, or, with onConflict Deny,
        # deny every pod for a clash the pod did not make.
        for what, targets in (("env var", [(e.name, e) for e in self.env]),
                              ("mount path", [(m.mount_path, m) for m in self.volume_mounts])):
            for (name, first), (other, second) in combinations(targets, 2):
                if name == other and _overlap(first, second):
                    raise ValueError(f"{what} {name!r} is injected twice into the same containers; "
                                     "give each entry its own containers")
        return self


def _overlap(a: Target, b: Target) -> bool:
    """Whether two targets can name the same container (an absent list names every one)."""
    return a.containers is None or b.containers is None or not set(a.containers).isdisjoint(b.containers)


class InjectionSpec(Strict):
    priority: StrictInt = Field(100, description="lower runs first; ties are broken by policy name")
    mode: Mode = Mode.ENFORCE
    opt_in: bool = Field(False, alias="optIn",
                         description="apply only to pods annotated runtime.platform.io/inject-NAME: 'true'")
    opt_out: OptOut = Field(
        OptOut.ALLOWED, alias="optOut",
        description="Forbidden: the pod's opt-out annotations are ignored (with a warning) and its workload "
                    "kind comes from its ownerReferences, never from the runtime.platform.io/workload label")
    match: Match = Match()
    requires: list[PolicyName] = Field(
        default_factory=list,
        description="injection policies that must have applied to the pod for this one to apply; each "
                    "must run before this one (a lower priority, or the same priority and an earlier name)")
    on_missing_requirement: MissingRequirement = Field(
        MissingRequirement.SKIP, alias="onMissingRequirement",
        description="Skip: a policy whose requirement did not apply is not applied either; Deny: deny the pod")
    inject: Inject

    @field_validator("requires")
    @classmethod
    def _listed_once(cls, value: list[str]) -> list[str]:
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} listed more than once")
        return value

    @model_validator(mode="after")
    def _opt_in_is_optional(self) -> InjectionSpec:
        if self.opt_in and self.opt_out is OptOut.FORBIDDEN:
            raise ValueError("optIn: true lets each pod choose the policy, so optOut: Forbidden cannot hold; "
                             "drop one of them")
        return self


class InjectionPolicy(Strict):
    api_version: Literal["runtime.platform.io/v1"] = Field(alias="apiVersion")
    kind: Literal["InjectionPolicy"]
    metadata: Metadata
    spec: InjectionSpec


def _template_problems(text: str) -> list[str]:
    """Why `text` does not compile: each bad placeholder when there are several."""
    try:
        compile_template(text)
    except TemplateError as exc:
        each = [str(e) for e in map(_template_error, _PLACEHOLDERS.findall(text)) if e is not None]
        return each if len(each) > 1 else [str(exc)]
    return []


def _template_error(text: str) -> TemplateError | None:
    try:
        compile_template(text)
    except TemplateError as exc:
        return exc
    return None


def _strings_at(value: Any, loc: Location) -> list[tuple[Location, str]]:
    """Every string in a dumped model, with where it is (a pydantic location)."""
    if isinstance(value, str):
        return [(loc, value)]
    if isinstance(value, dict):
        return [found for key, v in value.items() for found in _strings_at(v, (*loc, key))]
    if isinstance(value, list):
        return [found for index, v in enumerate(value) for found in _strings_at(v, (*loc, index))]
    return []


