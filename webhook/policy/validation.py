"""The ValidationPolicy schema: which checks a matching pod must pass, and what a breach does.

    spec:
      action: Enforce            # Enforce denies | Warn allows with warnings | Audit allows and records
      match: {...}               # the same matcher as InjectionPolicy
      rules:
        - podSecurity: {level: baseline}
        - name: no-latest        # optional id; required when a rule kind repeats
          images: {forbidLatest: true}
      exceptions:
        - reason: legacy agent, ticket OPS-12
          namespaces: [monitoring]
          expires: 2026-06-30

The rules themselves (one model per kind, compiled at load) are in
`webhook.policy.rule_kinds`. See docs/validation.md.
"""

from __future__ import annotations

from datetime import date
from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from webhook.policy.common import LabelSelector, Match, Metadata, Strict
from webhook.policy.rule_kinds import Rule

__all__ = ["Action", "ValidationException", "ValidationPolicy", "ValidationSpec", "expired_exceptions"]


class Action(str, Enum):
    ENFORCE = "Enforce"   # deny the request, listing every violation
    WARN = "Warn"         # admit, one AdmissionResponse warning per violation
    AUDIT = "Audit"       # admit, record in auditAnnotations (the API server's audit log)


# --- exceptions ----------------------------------------------------------------

class ValidationException(Strict):
    """Lifts the policy (or some of its rules) for the requests it selects.

    Every selector given must match (namespaces AND podSelector AND users); within
    a list any entry matches. At least one selector is required.
    """

    reason: str = Field(min_length=1, description="why; shown in reviews and audit logs")
    expires: date | None = Field(None, description="last day the exception applies (UTC)")
    namespaces: list[str] = Field(default_factory=list, description="glob patterns")
    pod_selector: LabelSelector | None = Field(None, alias="podSelector")
    usernames: list[str] = Field(default_factory=list, description="request user names, glob patterns")
    groups: list[str] = Field(default_factory=list, description="request user groups, glob patterns")
    rules: list[str] = Field(default_factory=list, description="rule ids it lifts; empty means all")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reason must not be blank")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> ValidationException:
        # An empty podSelector ({}) matches every pod, so alone it selects nothing either.
        selector = self.pod_selector
        narrows_pods = selector is not None and bool(selector.match_labels or selector.match_expressions)
        if not (self.namespaces or narrows_pods or self.usernames or self.groups):
            # An exception with no selector would silently switch the policy off.
            raise ValueError("an exception needs at least one of namespaces, podSelector, usernames, groups "
                             "(an empty podSelector matches every pod)")
        return self

    def active(self, today: date) -> bool:
        return self.expires is None or today <= self.expires


# --- the document --------------------------------------------------------------

class ValidationSpec(Strict):
    action: Action
    match: Match = Match()
    rules: list[Rule] = Field(min_length=1)
    exceptions: list[ValidationException] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> ValidationSpec:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids must be unique; give repeated rule kinds a distinct 'name': "
                             f"{', '.join(dupes)}")
        for index, exception in enumerate(self.exceptions):
            unknown = sorted(set(exception.rules) - set(ids))
            if unknown:
                raise ValueError(f"exceptions[{index}].rules names unknown rule ids {unknown}; "
                                 f"this policy's rules are {ids}")
        return self


class ValidationPolicy(Strict):
    api_version: Literal["runtime.platform.io/v1"] = Field(alias="apiVersion")
    kind: Literal["ValidationPolicy"]
    metadata: Metadata
    spec: ValidationSpec


def expired_exceptions(policy: ValidationPolicy, today: date) -> list[str]:
    """One message per exception past its `expires` date, for the loader to log as a warning.

    An expired exception stays valid YAML (a load must not start failing on a date)
    but no longer applies; the warning tells the admin to remove or renew it.
    """
    return [f"policy {policy.metadata.name}: exceptions[{i}] ({e.reason!r}) expired on "
            f"{e.expires.isoformat()} and no longer applies"
            for i, e in enumerate(policy.spec.exceptions)
            if e.expires is not None and not e.active(today)]
