"""Injection: apply the matching policies to a pod's containers, volumes and metadata.

`inject()` is a pure function of (pod, namespace, policy set). It rewrites only the
sections injection owns (init containers, containers, volumes, labels,
annotations), copying what it changes and sharing everything else, and returns
the patch from the original pod to the result. This module decides which policies
apply, in what order, and what the result is; `webhook.engine.sections` puts one
policy's items into the pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.jsonvalue import as_dict, dicts_in, str_map
from webhook.engine import patch as jp
from webhook.engine.applies import INJECT_ANNOTATION, ignored_choices, opted_out_of_all, skip_reason
from webhook.engine.bounds import DEFAULT_LIMITS, Limits, check_deadline, too_many_containers
from webhook.engine.ledger import LEDGER_ANNOTATION, Ledger, LedgerError, PolicyRecord, parse_ledger
from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.engine.pod import PodFacts, pod_facts
from webhook.engine.pod_rules import malformed_denial, pod_problems
from webhook.engine.rendered import MEASURE_POD_FROM_BYTES, Budget, Refused, may_grow, object_size, too_large
from webhook.engine.sections import Deny, Sections, SkipPolicy, apply_policy, name_of, strip_ledger
from webhook.policy.common import Mode, OptOut
from webhook.policy.compiled import CompiledInjection
from webhook.policy.injection import MissingRequirement, OnConflict
from webhook.policy.loader import PolicySet
from webhook.policy.template import TemplateContext
from webhook.rules.containers import CONTAINER_FIELDS


@dataclass
class PolicyOutcome:
    policy: str
    applied: bool
    why: str = ""                # why it did not apply (or what it would have done)
    shadow: bool = False
    record: PolicyRecord | None = None  # what it added, when applied
    kept: tuple[str, ...] = ()          # injected containers whose resources another plugin set

    @property
    def reason(self) -> str:
        """Why it did not apply, or what it changed (summarised only when asked: `explain`)."""
        if self.record is not None and not self.why:
            summary = _summary(self.record) or "nothing to add"
            if self.kept:
                summary += (f"; kept the resources another admission plugin set on {', '.join(self.kept)} "
                            "(policy revision unchanged)")
            return summary
        return self.why


@dataclass
class InjectionResult:
    patch: list[dict[str, Any]]
    pod: dict[str, Any]                          # the pod after the patch
    warnings: list[str] = field(default_factory=list)
    denial: str | None = None
    outcomes: list[PolicyOutcome] = field(default_factory=list)

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(o.policy for o in self.outcomes if o.applied and not o.shadow)

    @property
    def shadowed(self) -> tuple[str, ...]:
        return tuple(o.policy for o in self.outcomes if o.applied and o.shadow)


def inject(pod: dict[str, Any], *, namespace: str, policies: PolicySet, limits: Limits = DEFAULT_LIMITS,
           deadline: float | None = None, namespace_labels: NamespaceLabels = NOT_GIVEN) -> InjectionResult:
    """`deadline`: a `time.perf_counter()` time past which DeadlineExceeded is raised (None: none).
    Raises NamespaceLabelsUnavailable when a policy's namespaceSelector needs labels
    that `namespace_labels` does not know."""
    metadata = as_dict(pod.get("metadata"))
    spec = as_dict(pod.get("spec"))
    too_many = too_many_containers(spec, limits)
    if too_many:  # before anything is built from the pod
        return InjectionResult(patch=[], pod=pod, denial=too_many, outcomes=[
            PolicyOutcome(p.name, False, "the pod has too many containers") for p in policies.injectors])
    malformed = malformed_denial(spec)
    if malformed:  # fails closed: injecting around an entry that is not a container hides it
        return InjectionResult(patch=[], pod=pod, denial=malformed, outcomes=[
            PolicyOutcome(p.name, False, "the pod is malformed") for p in policies.injectors])
    annotations = str_map(metadata.get("annotations"))
    warnings = _unread_choices(annotations, policies)
    if opted_out_of_all(annotations, policies.injectors):
        return InjectionResult(patch=[], pod=pod, warnings=warnings, outcomes=[
            PolicyOutcome(p.name, False, f"pod opted out ({INJECT_ANNOTATION}: \"false\")")
            for p in policies.injectors])

    # From here on every container list is a list of objects, or absent (the denial above):
    # read as they stand, with no filter.
    init, containers, ephemeral = (spec.get(key) or [] for key in CONTAINER_FIELDS)
    all_names = [name_of(c) for group in (init, containers, ephemeral) for c in group]
    if len(set(all_names)) != len(all_names):
        # The API server rejects such a pod whatever we do, and the ledger, keyed by
        # container name, could not describe our additions to it.
        return InjectionResult(patch=[], pod=pod, warnings=[
            "not injecting: the pod repeats a container name (the API server will reject it)"],
            outcomes=[PolicyOutcome(p.name, False, "pod repeats a container name")
                      for p in policies.injectors])

    previous = Ledger()
    if LEDGER_ANNOTATION in annotations:
        try:
            previous = parse_ledger(annotations[LEDGER_ANNOTATION])
        except LedgerError as exc:
            warnings.append(f"ignoring unreadable {LEDGER_ANNOTATION} annotation ({exc}); injecting afresh")
    sections = strip_ledger(Sections(
        init=list(init), containers=list(containers), volumes=dicts_in(spec.get("volumes")),
        labels=dict(as_dict(metadata.get("labels"))), annotations=dict(as_dict(metadata.get("annotations"))),
        ephemeral_names=frozenset(name_of(c) for c in ephemeral)), previous)
    kept_resources = _kept_resources(spec, previous, policies)
    sections.init_names = frozenset(name_of(c) for c in sections.init)
    sections.container_names = frozenset(name_of(c) for c in sections.containers)

    # Match and render against the pod as its author wrote it: what earlier passes
    # added (labels, annotations) must not change which policies apply, or a second
    # pass would differ from the first.
    facts = pod_facts({"metadata": {**metadata, "labels": sections.labels, "annotations": sections.annotations},
                       "spec": {**spec, "initContainers": sections.init, "containers": sections.containers}},
                      namespace=namespace, namespace_labels=namespace_labels,
                      names=sections.init_names | sections.container_names | sections.ephemeral_names)
    ctx = template_context(facts, max_copied_value=limits.max_copied_value)
    owner_ctx: TemplateContext | None = None   # for mandatory policies; made when one applies
    ledger = Ledger()
    outcomes: list[PolicyOutcome] = []
    budget = Budget(limits, deadline, measure=may_grow(
        policies.injectors, len(sections.init) + len(sections.containers), limits))
    for policy in policies.injectors:
        check_deadline(deadline)
        budget.rollback()  # what a policy not applied would have added
        reason = skip_reason(policy, facts)
        if reason:
            outcomes.append(PolicyOutcome(policy.name, False, reason))
            continue
        warnings += ignored_choices(policy, facts)
        # A mandatory policy's templates read the workload from the owner, as its match does.
        policy_ctx = ctx
        if policy.opt_out is OptOut.FORBIDDEN:
            if owner_ctx is None:
                owners = facts.from_owners()
                owner_ctx = ctx if owners is facts else \
                    template_context(owners, max_copied_value=limits.max_copied_value)
            policy_ctx = owner_ctx
        trial = sections.copy()
        record = PolicyRecord(name=policy.name, revision=policy.revision)
        kept: list[str] = []
        try:
            _check_requirements(policy, outcomes)
            apply_policy(policy, trial, record, policy_ctx, policies.init_order, budget, kept_resources=kept_resources,
                   kept=kept)
        except (Deny, Refused) as exc:
            if policy.mode is Mode.SHADOW:
                warnings.append(f"shadow policy {policy.name} would deny this pod: {exc}")
                outcomes.append(PolicyOutcome(policy.name, True, f"would deny: {exc}", shadow=True))
                continue
            return InjectionResult(patch=[], pod=pod, warnings=warnings, denial=str(exc),
                                   outcomes=[*outcomes, PolicyOutcome(policy.name, False, f"denied: {exc}")])
        except SkipPolicy as exc:
            if policy.mode is Mode.SHADOW:
                # A Shadow policy changes nothing in the pod, its ledger included.
                outcomes.append(PolicyOutcome(policy.name, False, f"would skip itself: {exc}", shadow=True))
                continue
            ledger.skipped.append({"policy": policy.name, "reason": str(exc)})
            outcomes.append(PolicyOutcome(policy.name, False, f"skipped: {exc}"))
            continue
        if policy.mode is Mode.SHADOW:
            summary = _summary(record)
            if summary:
                warnings.append(f"shadow policy {policy.name} would add {summary}")
            outcomes.append(PolicyOutcome(policy.name, True, summary or "nothing to add", shadow=True))
            continue
        _carry_replacements(record, previous.record(policy.name))
        budget.commit()
        sections = trial
        ledger.policies.append(record)
        outcomes.append(PolicyOutcome(policy.name, True, record=record, kept=tuple(kept)))

    new_init = sections.start_order()
    if ledger.policies or ledger.skipped:
        sections.annotations[LEDGER_ANNOTATION] = ledger.dumps()
        size = budget.committed + len(sections.annotations[LEDGER_ANNOTATION])
        if size >= MEASURE_POD_FROM_BYTES and (size := size + object_size(pod)) > budget.limit:
            # the pod after injection, estimated before the patch is built
            return InjectionResult(patch=[], pod=pod, warnings=warnings, outcomes=outcomes,
                                   denial=too_large(size, budget.limit, what="after injection the pod would be"))
    else:
        sections.annotations.pop(LEDGER_ANNOTATION, None)

    new_spec = {**spec, "containers": sections.containers}
    if new_init or "initContainers" in spec:
        new_spec["initContainers"] = new_init
    if sections.volumes or "volumes" in spec:
        new_spec["volumes"] = sections.volumes
    problems = pod_problems(new_spec)
    if not sections.containers and containers:
        # A Replace moved the pod's only app container into initContainers (a native sidecar
        # of the same name): the API server requires at least one container.
        problems.add("spec.containers would be left empty (a policy replaced the pod's last app container)")
    if problems:  # only problems injection introduced count; the pod's own are the API server's
        problems -= pod_problems(spec)
    if problems:
        return InjectionResult(patch=[], pod=pod, warnings=warnings, outcomes=outcomes,
                               denial="injection would make the pod invalid: " + "; ".join(sorted(problems)))
    warnings += sections.notes.warnings()

    ops = _patch(pod, metadata, spec, sections, new_init)
    new_metadata = dict(metadata)
    for key, value in (("labels", sections.labels), ("annotations", sections.annotations)):
        if value or isinstance(metadata.get(key), dict):
            new_metadata[key] = value
    return InjectionResult(patch=ops, pod={**pod, "metadata": new_metadata, "spec": new_spec},
                           warnings=warnings, outcomes=outcomes)


def _unread_choices(annotations: Mapping[str, str], policies: PolicySet) -> list[str]:
    """A warning for each inject annotation the engine does not act on: a value other than
    "true" or "false" ("False", "no": the pod is injected), or a policy name no injection
    policy has (a typo). kubectl shows the pod's author, who would otherwise find out from
    the sidecars that came anyway."""
    warnings: list[str] = []
    for key, value in annotations.items():
        if key == INJECT_ANNOTATION:
            policy = None
        elif key.startswith(INJECT_ANNOTATION + "-"):
            policy = key[len(INJECT_ANNOTATION) + 1:]
        else:
            continue
        if value not in ("true", "false"):
            warnings.append(f"annotation {key}: {value!r} is ignored; it takes \"true\" or \"false\"")
        elif policy is not None and not any(p.name == policy for p in policies.injectors):
            warnings.append(f"annotation {key} is ignored: no injection policy is named {policy!r}")
    return warnings


def _check_requirements(policy: CompiledInjection, outcomes: list[PolicyOutcome]) -> None:
    """Raise SkipPolicy (or Deny) when a policy in `requires` did not apply to the pod.

    A required policy runs earlier (the loader checks it), so its outcome is known. For a
    Shadow policy a Shadow requirement counts as applied: both would, once enforced."""
    shadow = policy.mode is Mode.SHADOW
    by_name = {o.policy: o for o in outcomes}
    for name in policy.requires:
        outcome = by_name.get(name)
        if outcome is not None and outcome.applied and (shadow or not outcome.shadow):
            continue
        why = ("it is in Shadow mode, so it adds nothing" if outcome is not None and outcome.applied
               else outcome.why.removeprefix("skipped: ") if outcome is not None else "it did not run")
        if policy.on_missing_requirement is MissingRequirement.DENY:
            raise Deny(f"policy {policy.name} requires policy {name}, which did not apply to this pod: {why}")
        raise SkipPolicy(f"requires policy {name}, which did not apply: {why}")


def _kept_resources(spec: dict[str, Any], previous: Ledger,
                    policies: PolicySet) -> dict[tuple[str, str], dict[str, Any]]:
    """(policy, container) -> the resources an injected container holds now, for each one
    the previous pass's ledger says that policy injected at the revision it serves today.

    Admission plugins that run after this webhook (a vertical pod autoscaler's) may set
    an injected container's resources; on reinvocation, re-rendering the container would
    undo that. Only resources are kept: the ledger is an annotation the pod's author can
    write, and resources are what such plugins set and what cannot turn a sidecar into
    another program (validation still checks them)."""
    if not previous.policies:
        return {}
    revisions = {p.name: p.revision for p in policies.injectors}
    current = {name_of(c): c for key in ("initContainers", "containers") for c in dicts_in(spec.get(key))}
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for record in previous.policies:
        if revisions.get(record.name) != record.revision:
            continue
        for name in record.containers:
            resources = as_dict(current.get(name)).get("resources")
            if isinstance(resources, dict):
                kept[(record.name, name)] = resources
    return kept


def template_context(facts: PodFacts, *, max_copied_value: int = DEFAULT_LIMITS.max_copied_value,
                     pod_name: str | None = None, workload_name: str | None = None) -> TemplateContext:
    """What templates read of the pod; `pod_name` and `workload_name` stand in for the pod's own."""
    return TemplateContext(namespace=facts.namespace, pod_name=facts.name if pod_name is None else pod_name,
                           service_account_name=facts.service_account, workload_kind=facts.workload_kind.value,
                           workload_name=facts.workload_name if workload_name is None else workload_name,
                           labels=facts.labels, annotations=facts.annotations, max_copied_value=max_copied_value)


def _carry_replacements(record: PolicyRecord, previous: PolicyRecord | None) -> None:
    """A Replace removed the user's item on an earlier pass, so this pass cannot see the
    clash again; keep its record so the ledger, and the pod, stay the same. Not for env
    vars: a replaced one keeps its place (see _strip), so each pass meets the clash again,
    and a var the policy no longer injects must not keep a record of it."""
    if previous is None:
        return
    for entry in previous.conflicts:
        if entry.get("resolution") == OnConflict.REPLACE.value and entry.get("kind") != "env" \
                and entry not in record.conflicts:
            record.conflicts.append(entry)


def _summary(record: PolicyRecord) -> str:
    parts = []
    if record.containers:
        parts.append(f"containers {', '.join(record.containers)}")
    if record.volumes:
        parts.append(f"volumes {', '.join(record.volumes)}")
    env = sorted({n for names in record.env.values() for n in names})
    if env:
        parts.append(f"env {', '.join(env)} to {len(record.env)} container(s)")
    mounts = sorted({p for paths in record.mounts.values() for p in paths})
    if mounts:
        parts.append(f"mounts {', '.join(mounts)}")
    if record.labels or record.annotations:
        parts.append(f"{len(record.labels)} label(s), {len(record.annotations)} annotation(s)")
    return "; ".join(parts)


def _patch(pod: dict[str, Any], metadata: dict[str, Any], spec: dict[str, Any], s: Sections,
           new_init: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    if not isinstance(pod.get("metadata"), dict):
        meta_value = {k: v for k, v in (("labels", s.labels), ("annotations", s.annotations)) if v}
        if meta_value:
            ops.append({"op": "add", "path": "/metadata", "value": meta_value})
    else:
        ops += jp.map_ops("/metadata/labels", metadata.get("labels") if isinstance(metadata.get("labels"), dict)
                          else None, s.labels)
        ops += jp.map_ops("/metadata/annotations", metadata.get("annotations")
                          if isinstance(metadata.get("annotations"), dict) else None, s.annotations)
    if not isinstance(pod.get("spec"), dict):
        return ops  # nothing to inject into; the API server rejects a pod without spec anyway
    init_old = spec.get("initContainers") if isinstance(spec.get("initContainers"), list) else None
    ops += jp.container_list_ops("/spec/initContainers", init_old, new_init)
    containers_old = spec.get("containers") if isinstance(spec.get("containers"), list) else None
    ops += jp.container_list_ops("/spec/containers", containers_old, s.containers)
    volumes_old = spec.get("volumes") if isinstance(spec.get("volumes"), list) else None
    ops += jp.list_ops("/spec/volumes", volumes_old, s.volumes)
    return ops
