"""Which policy exceptions lift which rules for a request.

Exceptions live in policy files only (admin-owned): nothing in the pod or its
annotations can exempt it.
"""

from __future__ import annotations

from datetime import date
from fnmatch import fnmatchcase

from webhook.engine.match import selector_matches
from webhook.engine.pod import PodFacts
from webhook.policy.validation import ValidationException, ValidationPolicy
from webhook.core.request import AdmissionRequest

ALL_RULES = frozenset({"*"})  # sentinel: the whole policy is lifted


def exception_applies(exception: ValidationException, *, facts: PodFacts, request: AdmissionRequest,
                      today: date) -> bool:
    """Namespaces AND podSelector AND who (usernames OR groups); an expired exception never applies."""
    if not exception.active(today):
        return False
    if exception.namespaces and not any(fnmatchcase(facts.namespace, p) for p in exception.namespaces):
        return False
    if exception.pod_selector is not None and not selector_matches(exception.pod_selector, facts.labels):
        return False
    if exception.usernames or exception.groups:
        user = request.user_info
        by_name = any(fnmatchcase(user.username, p) for p in exception.usernames)
        by_group = any(fnmatchcase(g, p) for g in user.groups for p in exception.groups)
        if not (by_name or by_group):
            return False
    return True


def lifted_rules(policy: ValidationPolicy, *, facts: PodFacts, request: AdmissionRequest,
                 today: date) -> frozenset[str]:
    """Rule ids lifted for this request; ALL_RULES when an exception lifts the whole policy."""
    lifted: set[str] = set()
    for exception in policy.spec.exceptions:
        if exception_applies(exception, facts=facts, request=request, today=today):
            if not exception.rules:
                return ALL_RULES
            lifted.update(exception.rules)
    return frozenset(lifted)
