"""Run one ValidationPolicy rule against a target: the bridge from the policy schema to
the policy-agnostic checks in `webhook.rules`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from webhook.engine import reserved
from webhook.engine.target import Target
from webhook.policy.loader import PolicySet
from webhook.policy.rule_kinds import RULE_KINDS, Rule
from webhook.core.request import AdmissionRequest
from webhook.rules import cel
from webhook.core.finding import Finding
from webhook.rules.host_access import (
    check_host_namespace,
    check_host_paths,
    check_host_ports,
    check_privileged,
)
from webhook.rules.images import check_images
from webhook.rules.labels import check_required_keys
from webhook.rules.pod_security import PodSecurityEvaluator
from webhook.rules.resources import check_resources


class RuleEnv:
    """Per-request inputs shared by every rule; the costly ones are built on first use."""

    def __init__(self, *, request: AdmissionRequest, target: Target, old_target: Target | None,
                 policies: PolicySet) -> None:
        self.request, self.target, self.old_target, self.policies = request, target, old_target, policies
        self._cel: cel.Variables | None = None
        self._pod_security: PodSecurityEvaluator | None = None

    @property
    def pod_security(self) -> PodSecurityEvaluator:
        if self._pod_security is None:
            self._pod_security = PodSecurityEvaluator(self.target.metadata, self.target.spec)
        return self._pod_security

    @property
    def cel_variables(self) -> cel.Variables:
        if self._cel is None:
            # Kubernetes ValidatingAdmissionPolicy names: object, oldObject, request.
            self._cel = cel.Variables({
                "object": self.target.as_pod(),
                "oldObject": self.old_target.as_pod() if self.old_target is not None else None,
                "request": self.request.to_json(),
            })
        return self._cel


def _pod_security(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.pod_security
    assert body is not None
    return env.pod_security.check(level=body.level, exempt=body.exempt_checks)


def _required(field: str) -> Callable[[Rule, RuleEnv], list[Finding]]:
    def run(rule: Rule, env: RuleEnv) -> list[Finding]:
        return check_required_keys(env.target.metadata, field=field,  # type: ignore[arg-type]
                                   required=rule.required_keys)
    return run


def _images(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.images
    assert body is not None
    return check_images(env.target.spec, allowed_registries=body.allowed_registries,
                        forbid_latest=body.forbid_latest, require_digest=body.require_digest)


def _resources(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.resources
    assert body is not None
    return check_resources(env.target.spec, required=body.requirements, maximum=body.parsed_maximum,
                           max_ratio=body.parsed_ratio)


def _host_path(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.host_path
    assert body is not None
    return check_host_paths(env.target.spec, allowed=body.allowances)


def _host_ports(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.host_ports
    assert body is not None
    return check_host_ports(env.target.spec, allowed=body.ranges)


def _cel(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.cel
    assert body is not None
    try:
        if cel.evaluate(body.expression, env.cel_variables):
            return []
        return [Finding("", "", body.message)]
    except cel.CelError as exc:
        # An expression that cannot be evaluated on this object is a violation: failing
        # open would let any object that trips the expression through.
        return [Finding("evaluationError", "", f"{body.message} (CEL evaluation error: {exc})")]


def _reserved_names(rule: Rule, env: RuleEnv) -> list[Finding]:
    body = rule.reserved_container_names
    assert body is not None
    return reserved.check(env.target, env.policies, extra=body.names, from_injection=body.from_injection_policies)


_RUNNERS: Mapping[str, Callable[[Rule, RuleEnv], list[Finding]]] = {
    "podSecurity": _pod_security,
    "requiredLabels": _required("labels"),
    "requiredAnnotations": _required("annotations"),
    "images": _images,
    "resources": _resources,
    "hostNetwork": lambda rule, env: check_host_namespace(env.target.spec, "hostNetwork"),
    "hostPID": lambda rule, env: check_host_namespace(env.target.spec, "hostPID"),
    "hostIPC": lambda rule, env: check_host_namespace(env.target.spec, "hostIPC"),
    "hostPath": _host_path,
    "hostPorts": _host_ports,
    "privileged": lambda rule, env: check_privileged(env.target.spec),
    "cel": _cel,
    "reservedContainerNames": _reserved_names,
}

if set(_RUNNERS) != set(RULE_KINDS):  # pragma: no cover - guards edits to the schema
    raise RuntimeError("every rule kind in the schema needs a runner here")


def run_rule(rule: Rule, env: RuleEnv) -> list[Finding]:
    return _RUNNERS[rule.kind](rule, env)
