"""Injection: apply the matching policies to a pod's containers, volumes and metadata.

`inject()` is a pure function of (pod, namespace, policy set). It rewrites only the
sections injection owns (init containers, containers, volumes, labels,
annotations), copying what it changes and sharing everything else, and returns
the patch from the original pod to the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.engine import patch as jp
from webhook.engine.bounds import DEFAULT_LIMITS, Limits, check_deadline, too_many_containers
from webhook.engine.conflicts import ConflictNotes, same_item, shown_name
from webhook.engine.ledger import LEDGER_ANNOTATION, Ledger, LedgerError, PolicyRecord, parse_ledger
from webhook.engine.ports import port_clashes
from webhook.engine.applies import INJECT_ANNOTATION, ignored_choices, opted_out_of_all, skip_reason
from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.engine.pod import PodFacts, pod_facts
from webhook.core.jsonvalue import as_dict, as_str, dicts_in, str_map
from webhook.engine.pod_rules import pod_problems
from webhook.engine.rendered import (MEASURE_POD_FROM_BYTES, OP_OVERHEAD_BYTES, Budget, Refused, field_sizes,
                                     may_grow, object_size, render, size_of, too_large)
from webhook.policy.common import LABEL_VALUE_RULE, Mode, OptOut, valid_label_value
from webhook.policy.compiled import CompiledInjection, ContainerField, Item
from webhook.policy.injection import MissingRequirement, OnConflict
from webhook.policy.loader import PolicySet
from webhook.policy.template import TemplateContext, quoted


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


class _Deny(Exception):
    pass


class _SkipPolicy(Exception):
    pass


@dataclass
class _Sections:
    """The parts of the pod injection rewrites; lists and maps are copies, elements shared."""

    init: list[dict[str, Any]]
    containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    labels: dict[str, Any]
    annotations: dict[str, Any]
    ephemeral_names: frozenset[str]
    # The pod's own init and app container names, after _strip. A name that a Replace
    # removes is then injected, and injected_names is consulted first, so these need no update.
    init_names: frozenset[str] = frozenset()
    container_names: frozenset[str] = frozenset()
    injected_init: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    injected_names: dict[str, str] = field(default_factory=dict)     # container -> policy
    injected_volumes: dict[str, str] = field(default_factory=dict)   # volume -> policy
    # Container -> how many env vars earlier policies put at the front of its env: the next
    # policy's go after them, so the injected ones keep the policies' order.
    env_front: dict[str, int] = field(default_factory=dict)
    # What the pod kept against a policy (onConflict: Keep), for the pod's author to hear.
    notes: ConflictNotes = field(default_factory=ConflictNotes)

    def copy(self) -> _Sections:
        return _Sections(list(self.init), list(self.containers), list(self.volumes), dict(self.labels),
                         dict(self.annotations), self.ephemeral_names, self.init_names, self.container_names,
                         list(self.injected_init),
                         dict(self.injected_names), dict(self.injected_volumes), dict(self.env_front),
                         self.notes.copy())

    def start_order(self) -> list[dict[str, Any]]:
        """The init containers as the pod will hold them: injected ones first, in their order."""
        return [c for _, c in sorted(self.injected_init, key=lambda rc: rc[0])] + self.init


def _name(obj: dict[str, Any]) -> str:
    return as_str(obj.get("name"))


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
    annotations = str_map(metadata.get("annotations"))
    warnings = _unread_choices(annotations, policies)
    if opted_out_of_all(annotations, policies.injectors):
        return InjectionResult(patch=[], pod=pod, warnings=warnings, outcomes=[
            PolicyOutcome(p.name, False, f"pod opted out ({INJECT_ANNOTATION}: \"false\")")
            for p in policies.injectors])

    all_names = [_name(c) for key in ("initContainers", "containers", "ephemeralContainers")
                 for c in dicts_in(spec.get(key))]
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
    sections = _strip(_Sections(
        init=dicts_in(spec.get("initContainers")), containers=dicts_in(spec.get("containers")),
        volumes=dicts_in(spec.get("volumes")),
        labels=dict(as_dict(metadata.get("labels"))), annotations=dict(as_dict(metadata.get("annotations"))),
        ephemeral_names=frozenset(_name(c) for c in dicts_in(spec.get("ephemeralContainers")))), previous)
    kept_resources = _kept_resources(spec, previous, policies)
    sections.init_names = frozenset(_name(c) for c in sections.init)
    sections.container_names = frozenset(_name(c) for c in sections.containers)

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
            _apply(policy, trial, record, policy_ctx, policies.init_order, budget, kept_resources=kept_resources,
                   kept=kept)
        except (_Deny, Refused) as exc:
            if policy.mode is Mode.SHADOW:
                warnings.append(f"shadow policy {policy.name} would deny this pod: {exc}")
                outcomes.append(PolicyOutcome(policy.name, True, f"would deny: {exc}", shadow=True))
                continue
            return InjectionResult(patch=[], pod=pod, warnings=warnings, denial=str(exc),
                                   outcomes=[*outcomes, PolicyOutcome(policy.name, False, f"denied: {exc}")])
        except _SkipPolicy as exc:
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
    if not sections.containers and dicts_in(spec.get("containers")):
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
    """Raise _SkipPolicy (or _Deny) when a policy in `requires` did not apply to the pod.

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
            raise _Deny(f"policy {policy.name} requires policy {name}, which did not apply to this pod: {why}")
        raise _SkipPolicy(f"requires policy {name}, which did not apply: {why}")


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
    current = {_name(c): c for key in ("initContainers", "containers") for c in dicts_in(spec.get(key))}
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


def _strip(sections: _Sections, ledger: Ledger) -> _Sections:
    """Remove what the ledger says earlier passes added, so rendering starts from the user's pod."""
    if not ledger.policies:
        return sections
    containers = {n for p in ledger.policies for n in p.containers}
    volumes = {n for p in ledger.policies for n in p.volumes}
    # An env var that the first policy to inject it put in place of the pod's own (Replace)
    # stays where it is: this pass replaces it again in that place, where the pod's later
    # vars may reference it. Any other env var the ledger names is removed.
    first_in_place: dict[str, dict[str, bool]] = {}   # container -> env name -> replaced in place
    mounts: dict[str, set[str]] = {}
    for record in ledger.policies:
        replaced = {(c.get("container"), c.get("name")) for c in record.conflicts
                    if c.get("kind") == "env" and c.get("resolution") == OnConflict.REPLACE.value}
        for container, names in record.env.items():
            owners = first_in_place.setdefault(container, {})
            for n in names:
                owners.setdefault(n, (container, n) in replaced)
        for container, paths in record.mounts.items():
            mounts.setdefault(container, set()).update(paths)
    env = {container: {n for n, in_place in owners.items() if not in_place}
           for container, owners in first_in_place.items()}

    def strip_container(c: dict[str, Any]) -> dict[str, Any]:
        name = _name(c)
        if name not in env and name not in mounts:
            return c
        c = dict(c)
        for key, drop, ident in (("env", env.get(name), "name"), ("volumeMounts", mounts.get(name), "mountPath")):
            if drop and isinstance(c.get(key), list):
                kept = [e for e in c[key] if not (isinstance(e, dict) and isinstance(e.get(ident), str)
                                                  and e[ident] in drop)]
                if kept:
                    c[key] = kept
                else:
                    del c[key]
        return c

    sections.init = [strip_container(c) for c in sections.init if _name(c) not in containers]
    sections.containers = [strip_container(c) for c in sections.containers if _name(c) not in containers]
    sections.volumes = [v for v in sections.volumes if _name(v) not in volumes]
    for record in ledger.policies:
        for key in record.labels:
            sections.labels.pop(key, None)
        for key in record.annotations:
            sections.annotations.pop(key, None)
    return sections


def _conflict(item: Item, what: str, record: PolicyRecord, *, policy: str, theirs: str,
              container: str = "", values: tuple[Any, Any] | None = None, notes: ConflictNotes | None = None) -> bool:
    """Resolve a clash with the pod's own item; True means inject ours (after removing theirs).

    `values` is (ours, the pod's), when known: a pod item equal to ours is no clash worth
    a denial, and a different one the pod keeps is told to its author (`notes`)."""
    where = f" in container {container!r}" if container else ""
    resolution = item.on_conflict
    same = values is not None and same_item(what, *values)
    if resolution is OnConflict.DENY and same:
        resolution = OnConflict.KEEP   # the pod already holds exactly what we would inject
    if resolution is OnConflict.DENY:
        raise _Deny(f"policy {policy} injects {what} {item.name!r}{where}, but the pod already defines "
                    f"{theirs}; rename the pod's {what} or ask the platform team to change the policy's "
                    "onConflict")
    if resolution is OnConflict.SKIP:
        raise _SkipPolicy(f"the pod already defines {what} {item.name!r}{where}")
    entry = {"kind": what, "name": item.name, "resolution": resolution.value}
    if container:
        entry["container"] = container
    record.conflicts.append(entry)
    if resolution is OnConflict.KEEP and not same and values is not None and notes is not None:
        notes.kept(policy=policy, what=what, name=item.name, container=container, ours=values[0], theirs=values[1])
    return resolution is OnConflict.REPLACE


def _shared_volume(volumes: list[Any], ours: dict[str, Any]) -> bool:
    """Whether the pod already holds exactly `ours`, injected by an earlier policy."""
    return ours in volumes


def _apply(policy: CompiledInjection, s: _Sections, record: PolicyRecord, ctx: TemplateContext,
           init_order: Mapping[str, int], budget: Budget, *,
           kept_resources: Mapping[tuple[str, str], dict[str, Any]], kept: list[str]) -> None:
    classic = {id(i) for i in policy.classic_sidecars}
    for item in (*policy.init_containers, *policy.classic_sidecars):
        owner = s.injected_names.get(item.name)
        if owner is not None:
            # Two policies inject the same name: the earlier one (by priority) wins.
            record.conflicts.append({"kind": "container", "name": item.name, "resolution": "Keep",
                                     "with": f"policy {owner}"})
            continue
        container = item.value if item.renderer is None else \
            render(item, ctx, policy=policy.name, what=f"container {item.name!r}")
        where = ("spec.initContainers" if item.name in s.init_names else
                 "spec.containers" if item.name in s.container_names else
                 "spec.ephemeralContainers" if item.name in s.ephemeral_names else "")
        if where:
            theirs = next((c for c in (*s.init, *s.containers) if _name(c) == item.name), None)
            if not _conflict(item, "container", record, policy=policy.name,
                             theirs=f"container {item.name!r} in {where}", notes=s.notes,
                             values=None if theirs is None else (container, theirs)):
                continue
            s.init = [c for c in s.init if _name(c) != item.name]
            s.containers = [c for c in s.containers if _name(c) != item.name]
        resources = kept_resources.get((policy.name, item.name))
        if resources is not None and resources != container.get("resources"):
            container = {**container, "resources": resources}
            kept.append(item.name)
        if budget.measure:
            budget.add(size_of(item, container))
        s.injected_names[item.name] = policy.name
        record.containers.append(item.name)
        if id(item) in classic:
            s.containers.append(container)
        else:
            s.injected_init.append((init_order.get(item.name, len(init_order)), container))

    for item in policy.volumes:
        owner = s.injected_volumes.get(item.name)
        volume = item.value if item.renderer is None else \
            render(item, ctx, policy=policy.name, what=f"volume {item.name!r}")
        if owner is not None:
            if _shared_volume(s.volumes, volume):
                # Defined alike by an earlier policy: one volume both policies use, no conflict.
                record.volumes.append(item.name)
            else:
                record.conflicts.append({"kind": "volume", "name": item.name, "resolution": "Keep",
                                         "with": f"policy {owner}"})
            continue
        theirs = next((v for v in s.volumes if _name(v) == item.name), None)
        if theirs is not None:
            if not _conflict(item, "volume", record, policy=policy.name,
                             theirs=f"volume {item.name!r} in spec.volumes", notes=s.notes,
                             values=(volume, theirs)):
                continue
            s.volumes = [v for v in s.volumes if _name(v) != item.name]
        if budget.measure:
            budget.add(size_of(item, volume))
        s.volumes.append(volume)
        s.injected_volumes[item.name] = policy.name
        record.volumes.append(item.name)

    if record.containers:
        _check_ports(policy, s, record.containers)

    if policy.container_fields:
        # Rendered once per pod, not once per container: a template reads only the pod. The
        # containers share the values, as they share an untemplated item's (nothing writes them).
        rendered = {id(i): i.value if i.renderer is None else render(i, ctx, policy=policy.name,
                                                                        what=f"{f.kind} {i.name!r}")
                    for f in policy.container_fields for i in f.items}
        sizes = field_sizes(policy, rendered, budget.limits) if budget.measure else None
        s.init = [_inject_into(c, policy, record, rendered, init=True, s=s, budget=budget, sizes=sizes)
                  for c in s.init]
        s.containers = [_inject_into(c, policy, record, rendered, init=False, s=s, budget=budget, sizes=sizes)
                        for c in s.containers]

    if record.containers and s.notes.mounts_kept_against(policy.name):
        s.notes.readers(policy.name, [c for c in (*s.containers, *(c for _, c in s.injected_init))
                                      if s.injected_names.get(_name(c)) == policy.name])

    for target, pairs, added in ((s.labels, policy.labels, record.labels),
                                 (s.annotations, policy.annotations, record.annotations)):
        for item in pairs:
            kind = "label" if target is s.labels else "annotation"
            key = item.key
            value = item.value if item.renderer is None else render(item, ctx, policy=policy.name,
                                                                    what=f"{kind} {item.key!r}")
            if target is s.labels and item.renderer is not None and not valid_label_value(value):
                # A rendered value (a long workload name, an annotation's text) that the API
                # server would refuse: say which policy and label, not an opaque API error.
                # A literal one was checked at load.
                raise _Deny(f"policy {policy.name} sets label {key!r} to {quoted(value)}, which is not a valid "
                            f"label value ({LABEL_VALUE_RULE}); ask the platform team to change the policy")
            if key in target:
                if target[key] != value:
                    kind = "label" if target is s.labels else "annotation"
                    record.conflicts.append({"kind": kind, "name": key, "resolution": "Keep"})
                    if (ctx.labels if target is s.labels else ctx.annotations).get(key) == target[key]:
                        # the pod's own value (the context holds the pod as authored), not an earlier policy's
                        s.notes.kept(policy=policy.name, what=kind, name=key, container="", ours=value,
                                     theirs=target[key])
                continue
            if budget.measure:
                budget.add(len(key) + len(value) + OP_OVERHEAD_BYTES)
            target[key] = value
            added.append(key)


def _check_ports(policy: CompiledInjection, s: _Sections, injected: list[str]) -> None:
    """Deny (or skip the policy, per the port's onConflict) when a container the policy
    injected declares a port another container running beside it declares too."""
    declaring = policy.port_containers.intersection(injected)
    if not declaring:
        return   # ports are plain numbers in a policy (no templates): none declared, none to clash
    clashes = port_clashes(s.start_order(), s.containers, declaring)
    if not clashes:
        return
    for clash in clashes:
        if (clash.ours, clash.port, clash.protocol, clash.host) in policy.skipping_ports:
            raise _SkipPolicy(f"container {shown_name(clash.theirs)} already declares {clash.describe()}, "
                              f"which its container {clash.ours!r} declares")
    clash = clashes[0]
    owner = s.injected_names.get(clash.theirs)
    where = ("injected by this policy too" if owner == policy.name else f"injected by policy {owner}" if owner
             else "spec.initContainers" if clash.theirs in s.init_names else "spec.containers")
    place = "on the node" if clash.host else "in the pod's network"
    raise _Deny(f"policy {policy.name} injects container {clash.ours!r} with {clash.describe()}, but container "
                f"{shown_name(clash.theirs)} ({where}) declares the same {clash.describe().rsplit(' ', 1)[0]}; "
                f"only one of them can listen on it {place}: change the pod's port, or ask the platform team "
                "to set onConflict: Skip on the policy's port")


def _inject_into(container: dict[str, Any], policy: CompiledInjection, record: PolicyRecord,
                 rendered: dict[int, Any], *, init: bool, s: _Sections, budget: Budget,
                 sizes: dict[int, int] | None) -> dict[str, Any]:
    name = _name(container)
    if name in s.injected_names:
        return container  # our own containers declare their own env and mounts
    updated = None
    for field_ in policy.container_fields:
        targeted = field_.items if field_.everywhere and not init else \
            [i for i in field_.items if i.targets(name, init=init)]
        if not targeted:
            continue
        env = field_.field_name == "env"
        front = s.env_front.get(name, 0) if env else None
        merged, added, inserted = _merge(container.get(field_.field_name), targeted, field_, record, policy,
                                         rendered, name, front, s.notes)
        if added:
            if sizes is not None:
                budget.add(sizes[id(field_)] if len(added) == len(field_.items)
                           else sum(sizes[id(i)] for i in targeted if i.name in added))
            if updated is None:
                updated = dict(container)
            updated[field_.field_name] = merged
            added_to: dict[str, list[str]] = getattr(record, field_.record)
            added_to.setdefault(name, []).extend(added)
            if inserted:
                s.env_front[name] = s.env_front.get(name, 0) + inserted
    return container if updated is None else updated


def _merge(current: Any, items: tuple[Item, ...] | list[Item], field_: ContainerField, record: PolicyRecord,
           policy: CompiledInjection, rendered: dict[int, Any], container: str,
           front: int | None, notes: ConflictNotes) -> tuple[list[Any], list[str], int]:
    """Add `items` to a container's env or mounts, resolving clashes with what it holds.

    With `front` (env), new vars are inserted at that index, after the ones earlier policies
    injected and before the container's own: Kubernetes expands `$(VAR)` in an env value only
    from the vars defined before it, so the pod's env may then reference the injected ones.
    A var that replaces the pod's own takes its place, where the pod's later vars expect it.
    Without `front` (mounts, whose order means nothing), they are appended. Returns the new
    list, the names added, and how many were inserted at `front`.
    """
    merged = dicts_in(current)
    key = field_.key
    present = {value for e in merged if isinstance(value := e.get(key), str)}  # one pass, not one per item
    added: list[str] = []
    fresh: list[Any] = []
    for item in items:
        value = rendered[id(item)]
        if item.name in present:
            theirs = next((e for e in merged if e.get(key) == item.name), None)
            if not _conflict(item, field_.kind, record, policy=policy.name, theirs=field_.theirs.format(item.name),
                             container=container, values=None if theirs is None else (value, theirs), notes=notes):
                continue
            if front is None:
                merged = [e for e in merged if e.get(key) != item.name]
                merged.append(value)
            else:
                merged = _replace_in_place(merged, key, item.name, value)
        elif front is None:
            merged.append(value)
        else:
            fresh.append(value)
        present.add(item.name)
        added.append(item.name)
    if fresh:
        merged[front:front] = fresh
    return merged, added, len(fresh)


def _replace_in_place(entries: list[dict[str, Any]], key: str, name: str, value: Any) -> list[dict[str, Any]]:
    """`entries` with the first one named `name` replaced by `value` and any later ones dropped."""
    out: list[dict[str, Any]] = []
    done = False
    for e in entries:
        if e.get(key) != name:
            out.append(e)
        elif not done:
            out.append(value)
            done = True
    return out


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


def _patch(pod: dict[str, Any], metadata: dict[str, Any], spec: dict[str, Any], s: _Sections,
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
