"""The rules of a ValidationPolicy: one model per rule kind (the YAML key), and `Rule`, an
entry holding exactly one of them.

Everything a rule needs is compiled here, at load: regexes, quantities, registry
patterns and CEL, so a broken policy stops at `webhook policies check` or reload with
its file and line, and admission never meets a bad pattern. The checks themselves are
in `webhook.rules`; `webhook.engine.rule_runner` runs a Rule with them. See docs/validation.md.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from webhook.policy.common import DNS_LABEL, Strict, check_label_key
from webhook.rules import labels
from webhook.rules.cel import CelError, compile_expression
from webhook.rules.containers import ContainerType
from webhook.rules.host_access import HostPathAllowance
from webhook.rules.image_ref import parse_image, registry_matches
from webhook.rules.pod_security import effective_checks
from webhook.rules.quantity import parse_quantity
from webhook.rules.resources import Requirement

__all__ = ["RULE_KINDS", "Rule"]


# --- rule bodies -------------------------------------------------------------

class PodSecurityRule(Strict):
    level: Literal["baseline", "restricted"]
    exempt: list[str] = Field(default_factory=list,
                              description="Pod Security check ids to skip, e.g. hostPorts, sysctls")

    @model_validator(mode="after")
    def _known_checks(self) -> PodSecurityRule:
        effective_checks(self.level, self.exempt)  # raises ValueError naming unknown check ids
        return self

    @cached_property
    def exempt_checks(self) -> frozenset[str]:
        return frozenset(self.exempt)


class RequiredKey(Strict):
    key: str = Field(description="label or annotation key")
    pattern: str | None = Field(None, description="regular expression the whole value must match")

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        return check_label_key(value)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @cached_property
    def compiled(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern) if self.pattern is not None else None


class ImagesRule(Strict):
    allowed_registries: list[str] = Field(
        default_factory=list, alias="allowedRegistries",
        description="host[:port][/path] prefixes; bare names are docker.io/library/NAME")
    forbid_latest: bool = Field(False, alias="forbidLatest",
                                description="reject ':latest' and references with no tag and no digest")
    require_digest: bool = Field(False, alias="requireDigest", description="every image must carry @sha256:...")

    @field_validator("allowed_registries")
    @classmethod
    def _valid_registries(cls, value: list[str]) -> list[str]:
        probe = parse_image("probe")
        for entry in value:
            registry_matches(probe, entry)  # raises ValueError for a malformed entry
        return value

    @model_validator(mode="after")
    def _checks_something(self) -> ImagesRule:
        if not (self.allowed_registries or self.forbid_latest or self.require_digest):
            raise ValueError("an images rule needs allowedRegistries, forbidLatest or requireDigest")
        return self


_RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _resource_names(value: list[str]) -> list[str]:
    for name in value:
        if not _RESOURCE_NAME.match(name):
            raise ValueError(f"invalid resource name {name!r}")
    return value


class ResourceRequirement(Strict):
    requests: list[str] = Field(default_factory=list, description="resource names, e.g. cpu, memory")
    limits: list[str] = Field(default_factory=list)

    @field_validator("requests", "limits")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _resource_names(value)


class ResourcesRule(Strict):
    containers: ResourceRequirement | None = None
    init_containers: ResourceRequirement | None = Field(None, alias="initContainers")
    sidecars: ResourceRequirement | None = Field(
        None, description="native sidecars: init containers with restartPolicy Always")
    # Strict numbers: YAML's `true` would otherwise read as 1.
    maximum: dict[str, str | StrictInt | StrictFloat] = Field(
        default_factory=dict, description="per resource, the largest request or limit, e.g. {memory: 8Gi}")
    max_limit_request_ratio: dict[str, str | StrictInt | StrictFloat] = Field(
        default_factory=dict, alias="maxLimitRequestRatio", description="per resource, e.g. {cpu: 4}")

    @field_validator("maximum", "max_limit_request_ratio")
    @classmethod
    def _quantities(cls, value: dict[str, str | int | float]) -> dict[str, str | int | float]:
        _resource_names(list(value))
        for name, raw in value.items():
            try:
                parsed = parse_quantity(raw)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if parsed <= 0:
                raise ValueError(f"{name}: must be greater than zero")
        return value

    @model_validator(mode="after")
    def _checks_something(self) -> ResourcesRule:
        if not (self.containers or self.init_containers or self.sidecars or self.maximum
                or self.max_limit_request_ratio):
            raise ValueError("a resources rule needs containers, initContainers, sidecars, maximum "
                             "or maxLimitRequestRatio")
        return self

    @cached_property
    def parsed_maximum(self) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in self.maximum.items()}

    @cached_property
    def parsed_ratio(self) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in self.max_limit_request_ratio.items()}

    @cached_property
    def requirements(self) -> dict[ContainerType, Requirement]:
        """What each container type must declare, as the resources check takes it."""
        return {kind: Requirement(tuple(need.requests), tuple(need.limits))
                for kind, need in (("containers", self.containers), ("initContainers", self.init_containers),
                                   ("sidecars", self.sidecars))
                if need is not None}


class HostFlagRule(Strict):
    """No options: the rule's presence forbids the host feature."""


class HostPathAllowed(Strict):
    path_prefix: str = Field(alias="pathPrefix", pattern=r"^/",
                             description="whole path components: /var/log allows /var/log/app")
    read_only: bool = Field(False, alias="readOnly", description="mounts of such a volume must be readOnly")


class HostPathRule(Strict):
    allowed: list[HostPathAllowed] = Field(default_factory=list, description="empty forbids every hostPath")

    @cached_property
    def allowances(self) -> tuple[HostPathAllowance, ...]:
        return tuple(HostPathAllowance(a.path_prefix, a.read_only) for a in self.allowed)


_PORT_RANGE = re.compile(r"^(\d{1,5})-(\d{1,5})$")


class HostPortsRule(Strict):
    allowed: list[StrictInt | str] = Field(default_factory=list,  # `true` is not port 1
                                           description="ports or inclusive ranges 'LOW-HIGH'; empty forbids all")

    @field_validator("allowed")
    @classmethod
    def _valid_ranges(cls, value: list[int | str]) -> list[int | str]:
        for entry in value:
            low, high = _port_range(entry)
            if not (1 <= low <= high <= 65535):
                raise ValueError(f"invalid port or range {entry!r}: ports are 1-65535, LOW <= HIGH")
        return value

    @cached_property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(_port_range(e) for e in self.allowed)


def _port_range(entry: int | str) -> tuple[int, int]:
    if isinstance(entry, int):
        return entry, entry
    match = _PORT_RANGE.match(entry)
    if match is None:
        if entry.isdigit():
            return int(entry), int(entry)
        raise ValueError(f"invalid port or range {entry!r}: expected a port or 'LOW-HIGH'")
    return int(match.group(1)), int(match.group(2))


class CelRule(Strict):
    expression: str = Field(description="CEL that must evaluate to true; variables object, oldObject, request")
    message: str = Field(min_length=1, max_length=512, description="shown when the expression is false")

    @field_validator("expression")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compile_expression(value)
        except CelError as exc:
            raise ValueError(str(exc)) from None
        return value


class ReservedNamesRule(Strict):
    names: list[str] = Field(default_factory=list, description="extra reserved container names")
    from_injection_policies: bool = Field(
        True, alias="fromInjectionPolicies",
        description="reserve every container and volume name an injection policy adds with onConflict: Deny, "
                    "in the pods that policy applies to")

    @field_validator("names")
    @classmethod
    def _dns_labels(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(DNS_LABEL, name) or len(name) > 63:
                raise ValueError(f"invalid container name {name!r}")
        return value


# --- rules ---------------------------------------------------------------------

# Rule kind (the YAML key) -> model attribute. Order is the documentation order.
RULE_KINDS: dict[str, str] = {
    "podSecurity": "pod_security",
    "requiredLabels": "required_labels",
    "requiredAnnotations": "required_annotations",
    "images": "images",
    "resources": "resources",
    "hostNetwork": "host_network",
    "hostPID": "host_pid",
    "hostIPC": "host_ipc",
    "hostPath": "host_path",
    "hostPorts": "host_ports",
    "privileged": "privileged",
    "cel": "cel",
    "reservedContainerNames": "reserved_container_names",
}

# Kinds whose body has only optional fields, so a bare key means "with defaults".
_OPTIONAL_BODY = frozenset({"hostNetwork", "hostPID", "hostIPC", "hostPath", "hostPorts", "privileged",
                            "reservedContainerNames"})


class Rule(Strict):
    """Exactly one rule kind per entry, plus an optional `name`."""

    model_config = Strict.model_config | {
        "json_schema_extra": {"oneOf": [{"required": [k]} for k in RULE_KINDS]}}

    name: str | None = Field(None, pattern=DNS_LABEL, max_length=40,
                             description="id in messages and audit keys; defaults to the rule kind")
    pod_security: PodSecurityRule | None = Field(None, alias="podSecurity")
    required_labels: list[RequiredKey] | None = Field(None, alias="requiredLabels", min_length=1)
    required_annotations: list[RequiredKey] | None = Field(None, alias="requiredAnnotations", min_length=1)
    images: ImagesRule | None = None
    resources: ResourcesRule | None = None
    host_network: HostFlagRule | None = Field(None, alias="hostNetwork")
    host_pid: HostFlagRule | None = Field(None, alias="hostPID")
    host_ipc: HostFlagRule | None = Field(None, alias="hostIPC")
    host_path: HostPathRule | None = Field(None, alias="hostPath")
    host_ports: HostPortsRule | None = Field(None, alias="hostPorts")
    privileged: HostFlagRule | None = None
    cel: CelRule | None = None
    reserved_container_names: ReservedNamesRule | None = Field(None, alias="reservedContainerNames")

    @model_validator(mode="before")
    @classmethod
    def _bare_keys(cls, data: Any) -> Any:
        # `- hostNetwork:` (YAML null) reads as "on, with defaults", like `- hostNetwork: {}`.
        if isinstance(data, dict):
            return {k: ({} if v is None and k in _OPTIONAL_BODY else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Rule:
        kinds = [k for k, attr in RULE_KINDS.items() if getattr(self, attr) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a rule needs exactly one of {', '.join(RULE_KINDS)}; found {found}")
        return self

    @cached_property
    def kind(self) -> str:
        # Looked up on every admission: computed once (pydantic keeps it out of the fields).
        return next(k for k, attr in RULE_KINDS.items() if getattr(self, attr) is not None)

    @property
    def id(self) -> str:
        return self.name or self.kind

    @cached_property
    def required_keys(self) -> tuple[labels.RequiredKey, ...]:
        """requiredLabels or requiredAnnotations, as the check takes them."""
        keys = self.required_labels or self.required_annotations or ()
        return tuple(labels.RequiredKey(k.key, k.compiled) for k in keys)
