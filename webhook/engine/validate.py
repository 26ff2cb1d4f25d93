"""Validation: checks the final pod (or a controller's pod template) against the
ValidationPolicy documents, and answers deny / warn / audit.

What is evaluated, per request:

- CREATE and UPDATE of Pods and of Deployments, ReplicaSets, StatefulSets,
  DaemonSets, Jobs, CronJobs (and ReplicationControllers), through their pod template.
- An UPDATE that leaves the evaluated part unchanged (a pod's spec; a template's
  labels, annotations and spec) is admitted without evaluation: it cannot make the
  pod less safe, and re-checking would block scaling, finalizers and controllers'
  metadata edits on objects admitted under older policies (Pod Security admission
  skips such pod updates too).
- The `pods/ephemeralcontainers` subresource (kubectl debug) runs podSecurity rules on the
  whole pod, and the container rules (images, privileged, hostPorts, hostPath mounts,
  reserved names) on the ephemeral containers it adds: a debug container runs inside the
  pod, so an image allowlist or a `privileged` rule must hold for it too, while what the
  pod already had (admitted earlier, maybe under older policies) does not block debugging.
- The `pods/resize` subresource (in-place resize) runs resources rules on the containers
  it resizes: it changes nothing but container resources, and left unchecked it would
  lift any `maximum` or `maxLimitRequestRatio` the pod was admitted under.
- Everything else (DELETE, CONNECT, other subresources such as status or binding,
  other kinds) is admitted untouched.
- A pod (or pod template) with more containers than the limit, or with a container
  entry that is not an object (webhook/rules/containers.py), is denied before any rule
  runs, and the request's deadline is checked before each policy and each rule
  (engine/bounds.py).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from webhook.core import decision
from webhook.core.decision import Decision, Violation
from webhook.engine.bounds import DEFAULT_LIMITS, Limits, check_deadline, too_many_containers
from webhook.engine.match import mismatch
from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.engine.pod_rules import malformed_denial
from webhook.engine.policy_exceptions import ALL_RULES, lifted_rules
from webhook.engine.violations import build_decision
from webhook.engine.rule_runner import RuleEnv, run_rule
from webhook.engine.target import POD, Target, target_of
from webhook.policy.loader import PolicySet
from webhook.core.request import AdmissionRequest
from webhook.rules.containers import iter_containers

VALIDATED_OPERATIONS = frozenset({"CREATE", "UPDATE"})
EPHEMERAL_CONTAINERS = "ephemeralcontainers"
# Pod subresources that change the pod spec, and the rule kinds each is checked against.
POD_SUBRESOURCE_RULES: dict[str, frozenset[str]] = {
    # kubectl debug adds containers; rules other than podSecurity see only the added ones.
    EPHEMERAL_CONTAINERS: frozenset({"podSecurity", "images", "privileged", "hostPorts", "hostPath",
                                     "reservedContainerNames"}),
    "resize": frozenset({"resources"}),  # in-place resize changes only container resources
}


def validate(request: AdmissionRequest, policies: PolicySet, *, today: date | None = None,
             limits: Limits = DEFAULT_LIMITS, deadline: float | None = None,
             namespace_labels: NamespaceLabels = NOT_GIVEN) -> Decision:
    """`today` (UTC) decides which exceptions have expired; a parameter so tests can pin it.
    `deadline`: a `time.perf_counter()` time; past it, DeadlineExceeded (engine/bounds.py).
    Raises NamespaceLabelsUnavailable when a namespaceSelector needs unknown labels."""
    if request.operation not in VALIDATED_OPERATIONS or request.object is None:
        return decision.allowed()
    only_kinds: frozenset[str] | None = None  # for a pod subresource, the rule kinds that apply
    if request.sub_resource:
        is_pod = (request.resource.group, request.resource.resource) == ("", "pods") or \
            (request.kind.group, request.kind.kind) == POD
        only_kinds = POD_SUBRESOURCE_RULES.get(request.sub_resource) if is_pod else None
        if only_kinds is None:
            return decision.allowed()
    target = target_of(request, request.object, namespace_labels=namespace_labels)
    if target is None:
        return decision.allowed()
    old_target = target_of(request, request.old_object) if request.operation == "UPDATE" else None
    if old_target is not None and only_kinds is None and \
            old_target.evaluated_view() == target.evaluated_view():
        return decision.allowed()
    # Counted on the parsed JSON, before any rule builds anything from it; after the check
    # above, so that an object admitted before (under a higher limit) can still be updated.
    too_many = too_many_containers(target.spec, limits, where="the pod template" if target.is_template else "the pod")
    if too_many:
        return decision.denied(too_many)
    # Fails closed: a container entry no rule can read would otherwise pass every rule.
    malformed = malformed_denial(target.spec, prefix=target.prefix)
    if malformed:
        return decision.denied(malformed)

    # A subresource request is judged by the containers it adds or changes (podSecurity aside).
    touched = _touched_containers(target, old_target) if only_kinds is not None else None
    today = today or datetime.now(timezone.utc).date()
    env = RuleEnv(request=request, target=target, old_target=old_target, policies=policies)
    violations: list[Violation] = []
    applied: list[str] = []
    for policy in policies.validation:  # sorted by name at load: a stable message order
        check_deadline(deadline)
        if mismatch(policy.spec.match, target.facts) is not None:
            continue
        lifted = lifted_rules(policy, facts=target.facts, request=request, today=today)
        if lifted == ALL_RULES:
            continue
        rules = [r for r in policy.spec.rules if r.id not in lifted
                 and (only_kinds is None or r.kind in only_kinds)]
        if not rules:
            continue
        applied.append(policy.metadata.name)
        action = policy.spec.action.value
        for rule in rules:
            check_deadline(deadline)
            for finding in run_rule(rule, env):
                if touched is not None and rule.kind != "podSecurity" and finding.container not in touched:
                    continue  # what the pod had before does not block debugging or resizing
                violations.append(Violation(
                    policy=policy.metadata.name, rule=rule.id, action=action,
                    path=target.path(finding.path), message=finding.message,
                    check=finding.check, container=finding.container))
    return build_decision(violations, applied=tuple(applied), scope=target.path(""))


def _touched_containers(target: Target, old_target: Target | None) -> frozenset[str]:
    """Names of the containers (of any kind) that are new or differ from the old pod's: the
    debug containers kubectl debug adds, the containers a resize resizes. Names are unique
    across a pod's containers."""
    def entries(t: Target | None) -> dict[str, object]:
        if t is None:
            return {}
        return {c.name: c.raw for c in iter_containers(t.spec)}
    old = entries(old_target)
    # "" is no name (the API server requires one): it must not let pod-level findings through.
    return frozenset(name for name, c in entries(target).items() if name and old.get(name) != c)
