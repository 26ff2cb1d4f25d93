"""The ValidationPolicy schema through the real loader: strictness, load errors with file,
line, policy and field, CEL compiled at load, exceptions and their expiry, JSON Schema."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from webhook.policy.errors import PolicyLoadError
from webhook.policy.loader import load_policy_dir, load_policy_sources
from webhook.policy.model import DOCUMENT_KINDS, json_schema
from webhook.policy.validation import ValidationPolicy, expired_exceptions

ROOT = Path(__file__).resolve().parent.parent
HEADER = """apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata:
  name: checks
spec:
  action: Enforce
"""


def _errors(text: str, name: str = "team/validation.yaml") -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_sources({name: text.encode()})
    return [str(e) for e in info.value.errors]


def test_registered_kind_and_loads() -> None:
    assert DOCUMENT_KINDS["ValidationPolicy"] is ValidationPolicy
    policies = load_policy_sources({"v.yaml": (HEADER + "  rules:\n    - podSecurity: {level: baseline}\n").encode()})
    assert [p.metadata.name for p in policies.validation] == ["checks"]
    assert isinstance(policies.validation[0], ValidationPolicy)


def test_cel_syntax_error_is_a_load_error_naming_file_line_and_policy() -> None:
    text = HEADER + """  rules:
    - podSecurity: {level: baseline}
    - cel:
        expression: "object.spec.containers.all(c, "
        message: every container needs limits
"""
    [error] = _errors(text)
    assert error.startswith("team/validation.yaml:10: checks/spec.rules[1].cel.expression: ")
    assert "invalid CEL: 1:31: Syntax error" in error


@pytest.mark.parametrize(("rules", "fragment"), [
    ("    - cel: {expression: '1 +', message: m}\n", "invalid CEL"),
    ("    - cel: {expression: '  ', message: m}\n", "expression is empty"),
    ("    - cel: {expression: 'true', message: ''}\n", "at least 1 character"),
    ("    - cel: {expression: 'true'}\n", "message: Field required"),
    ("    - podSecurity: {level: strict}\n", "'baseline' or 'restricted'"),
    ("    - podSecurity: {level: baseline, exempt: [sysctl]}\n", "unknown Pod Security check ids"),
    ("    - podSecurity: {level: baseline, exmept: [sysctls]}\n", "exmept: unknown field"),
    ("    - {}\n", "a rule needs exactly one of"),
    ("    - {hostNetwork: {}, hostPID: {}}\n", "found hostNetwork, hostPID"),
    ("    - {hostNetork: {}}\n", "hostNetork: unknown field"),
    ("    - images: {}\n", "needs allowedRegistries, forbidLatest or requireDigest"),
    ("    - images: {allowedRegistries: ['https://ghcr.io']}\n", "invalid allowed registry"),
    ("    - resources: {}\n", "a resources rule needs"),
    ("    - resources: {maximum: {cpu: lots}}\n", "invalid quantity"),
    ("    - resources: {maxLimitRequestRatio: {cpu: 0}}\n", "greater than zero"),
    ("    - resources: {containers: {requests: ['Bad Name']}}\n", "invalid resource name"),
    ("    - requiredLabels: [{key: app, pattern: '(['}]\n", "invalid regular expression"),
    ("    - requiredLabels: [{key: 'bad key!'}]\n", "invalid label/annotation key"),
    ("    - requiredLabels: []\n", "at least 1 item"),
    ("    - hostPorts: {allowed: ['90-80']}\n", "invalid port or range"),
    ("    - hostPorts: {allowed: [http]}\n", "invalid port or range"),
    # YAML's true is not a number (pydantic's lax int read it as 1).
    ("    - hostPorts: {allowed: [true]}\n", "allowed[0]"),
    ("    - resources: {maximum: {cpu: true}}\n", "maximum.cpu"),
    ("    - hostPath: {allowed: [{pathPrefix: var/log}]}\n", "should match pattern"),
    ("    - reservedContainerNames: {names: [Bad_Name]}\n", "invalid container name"),
    ("    - {cel: {expression: 'true', message: a}}\n    - {cel: {expression: 'true', message: b}}\n",
     "rule ids must be unique"),
    ("", "rules: Field required"),
    ("    - {name: Bad, privileged: {}}\n", "should match pattern"),
])
def test_rule_errors(rules: str, fragment: str) -> None:
    text = HEADER + ("  rules:\n" + rules if rules else "")
    errors = _errors(text)
    assert any(fragment in e for e in errors), errors
    assert all(e.startswith("team/validation.yaml:") and " checks/" in e for e in errors), errors


def test_action_is_required_and_strict() -> None:
    text = HEADER.replace("  action: Enforce\n", "  action: Deny\n") + "  rules:\n    - privileged: {}\n"
    assert any("'Enforce', 'Warn' or 'Audit'" in e for e in _errors(text))
    text = HEADER.replace("  action: Enforce\n", "") + "  rules:\n    - privileged: {}\n"
    assert any("spec.action: Field required" in e for e in _errors(text))


def test_named_rules_may_repeat_a_kind() -> None:
    text = HEADER + """  rules:
    - {name: one, cel: {expression: 'true', message: a}}
    - {name: two, cel: {expression: 'true', message: b}}
    - cel: {expression: 'true', message: c}
"""
    policy = load_policy_sources({"v.yaml": text.encode()}).validation[0]
    assert isinstance(policy, ValidationPolicy)
    assert [r.id for r in policy.spec.rules] == ["one", "two", "cel"]


EXCEPTIONS = HEADER + """  rules:
    - {name: net, hostNetwork: {}}
    - privileged: {}
  exceptions:
"""


@pytest.mark.parametrize(("exception", "fragment"), [
    ("    - {namespaces: [a]}\n", "reason: Field required"),
    ("    - {reason: '  ', namespaces: [a]}\n", "reason must not be blank"),
    ("    - {reason: why}\n", "needs at least one of namespaces, podSelector, usernames, groups"),
    ("    - {reason: why, podSelector: {}}\n", "needs at least one of namespaces, podSelector, usernames, groups"),
    ("    - {reason: why, podSelector: {matchLabels: {}}, rules: [net]}\n", "an empty podSelector matches every pod"),
    ("    - {reason: why, namespaces: [a], rules: [hostNetwork]}\n", "unknown rule ids ['hostNetwork']"),
    ("    - {reason: why, namespaces: [a], expires: 'next week'}\n", "valid date"),
    # Quoted: an unquoted 2026-02-30 is a YAML timestamp that PyYAML itself fails to build.
    ("    - {reason: why, namespaces: [a], expires: '2026-02-30'}\n", "date"),
    ("    - {reason: why, namespace: [a]}\n", "namespace: unknown field"),
])
def test_exception_errors(exception: str, fragment: str) -> None:
    errors = _errors(EXCEPTIONS + exception)
    assert any(fragment in e for e in errors), errors


def test_expired_exceptions_are_reported_for_the_loader() -> None:
    text = EXCEPTIONS + """    - {reason: legacy agent, namespaces: [legacy], expires: 2026-01-31}
    - {reason: forever, usernames: [admin]}
    - {reason: still valid, groups: [ops], expires: 2026-06-01, rules: [net]}
"""
    policy = load_policy_sources({"v.yaml": text.encode()}).validation[0]
    assert isinstance(policy, ValidationPolicy)
    assert expired_exceptions(policy, date(2026, 1, 31)) == []          # the expiry day still applies
    assert expired_exceptions(policy, date(2026, 6, 1)) == [
        "policy checks: exceptions[0] ('legacy agent') expired on 2026-01-31 and no longer applies"]
    assert len(expired_exceptions(policy, date(2026, 6, 2))) == 2


def test_bare_flag_rules_read_as_empty_bodies() -> None:
    text = HEADER + "  rules:\n    - hostNetwork:\n    - privileged:\n    - reservedContainerNames:\n"
    policy = load_policy_sources({"v.yaml": text.encode()}).validation[0]
    assert isinstance(policy, ValidationPolicy)
    assert [r.kind for r in policy.spec.rules] == ["hostNetwork", "privileged", "reservedContainerNames"]


def test_json_schema_covers_both_kinds_with_a_discriminator() -> None:
    schema = json_schema()
    assert set(schema["discriminator"]["mapping"]) == {"InjectionPolicy", "ValidationPolicy"}
    rule = schema["$defs"]["Rule"]
    assert {"required": ["podSecurity"]} in rule["oneOf"] and {"required": ["cel"]} in rule["oneOf"]
    assert rule["additionalProperties"] is False
    exception = schema["$defs"]["ValidationException"]
    assert exception["properties"]["expires"]["anyOf"][0] == {"format": "date", "type": "string"}


def test_shipped_policies_load() -> None:
    policies = load_policy_dir(ROOT / "policies")
    by_name = {p.metadata.name: p for p in policies.validation if isinstance(p, ValidationPolicy)}
    assert by_name["pod-security-baseline"].spec.action.value == "Enforce"
    assert by_name["pod-security-restricted"].spec.action.value == "Warn"
    assert by_name["image-tags"].spec.action.value == "Audit"
    assert by_name["resource-limits"].spec.action.value == "Audit"
    for policy in by_name.values():
        assert {"kube-system", "webhook-system"} <= set(policy.spec.match.namespaces.exclude)
