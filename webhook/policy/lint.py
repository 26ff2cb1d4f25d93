"""Warnings about a policy set that loads but is probably not what its authors meant."""

from __future__ import annotations

from collections import defaultdict
from difflib import get_close_matches
from typing import Any

from webhook.policy.common import (BUILTIN_OWNER_KINDS, TRAINING_OWNER_KINDS, LabelSelector, Match, Mode,
                                   NamespaceMatch, OptOut, Workload)
from webhook.policy.injection import InjectionPolicy
from webhook.policy.loader import PolicySet
from webhook.policy.update import Update, UpdateStrategy


def lint(policy_set: PolicySet) -> list[str]:
    warnings = list(policy_set.warnings)
    for kind, owners in (("container", _injected(policy_set, "containers")),
                         ("volume", _injected(policy_set, "volumes"))):
        for name, definitions in sorted(owners.items()):
            policies = [policy for policy, _ in definitions]
            if len(policies) < 2:
                continue
            if kind == "volume" and all(value == definitions[0][1] for _, value in definitions):
                continue   # one volume shared on purpose: the engine adds it once, no conflict
            different = " with different definitions" if kind == "volume" else ""
            warnings.append(f"{kind} {name!r} is injected by {len(policies)} policies{different} "
                            f"({', '.join(policies)}); the first by priority wins")
    warnings += _shared_ports(policy_set)
    for policy in policy_set.injection:
        for field in author_steered(policy):
            warnings.append(f"{policy_set.sources.get(policy.metadata.name, '?')}: policy {policy.metadata.name} "
                            f"has optOut: Forbidden but matches on {field}, which the pod's author writes: "
                            "a pod can still leave it that way")
        for reason in update_warnings(policy):
            warnings.append(f"{policy_set.sources.get(policy.metadata.name, '?')}: policy {policy.metadata.name}: "
                            f"{reason}")
    matches = [(p.metadata.name, p.spec.match) for p in policy_set.injection]
    matches += [(p.metadata.name, p.spec.match) for p in policy_set.validation]
    for name, match in matches:
        source = policy_set.sources.get(name, "?")
        for reason in never_matches(match):
            warnings.append(f"{source}: policy {name} can never match: {reason}")
        for entry, known in unknown_kinds(match):
            warnings.append(f"{source}: policy {name}: workload {entry!r} is neither a profile nor a built-in "
                            f"kind, so it matches only pods owned by an operator's {entry}; did you mean {known!r}?")
    return warnings


def update_warnings(policy: InjectionPolicy) -> list[str]:
    """`spec.update` settings that cannot do what they seem to say."""
    update, spec = policy.spec.update, policy.spec
    out: list[str] = []
    if update.strategy is UpdateStrategy.MANUAL:
        given = sorted(update.model_fields_set - {"strategy"})
        if given:
            out.append(f"update.{', update.'.join(_alias(f) for f in given)} has no effect with strategy Manual "
                       "(the controller only reports)")
        return out
    if spec.mode is Mode.SHADOW:
        out.append(f"update.strategy {update.strategy.value} on a Shadow policy: it injects nothing, so no pod "
                   "is ever brought up to it")
    canary = update.namespaces
    if canary.selects_nothing():
        out.append(f"update.namespaces selects no namespace: every included pattern {canary.include} is "
                   "also excluded")
    elif _disjoint(canary, spec.match.namespaces):
        out.append(f"update.namespaces {canary.include} selects none of the namespaces the policy matches "
                   f"({spec.match.namespaces.include}): nothing would ever be updated")
    if update.strategy is UpdateStrategy.IN_PLACE and not (spec.inject.sidecars or spec.inject.init_containers):
        out.append(f"update.strategy InPlace on a policy that injects no container: every change is handled by "
                   f"its fallback ({update.fallback.value})")
    return out


def _alias(field: str) -> str:
    return Update.model_fields[field].alias or field


def _disjoint(canary: NamespaceMatch, matched: NamespaceMatch) -> bool:
    """Whether two include lists of literal names (no globs) share no namespace."""
    literal = [p for p in (*canary.include, *matched.include) if not any(c in p for c in "*?[")]
    return (bool(canary.include) and bool(matched.include)
            and len(literal) == len(canary.include) + len(matched.include)
            and not set(canary.include) & set(matched.include))


def author_steered(policy: InjectionPolicy) -> list[str]:
    """The parts of a mandatory policy's match that the pod's author decides."""
    if policy.spec.opt_out is not OptOut.FORBIDDEN:
        return []
    match = policy.spec.match
    return [field for field, used in (("podSelector (the pod's labels)", match.pod_selector is not None),
                                      ("exclude.containers (the pod's container names)",
                                       bool(match.exclude.containers))) if used]


def unknown_kinds(match: Match) -> list[tuple[str, str]]:
    """`workloads` entries that look like a misspelt profile or built-in kind, with the likely
    intent. An operator's kind (PyTorchJob, Workflow) is valid, so a typo would silently
    match nothing."""
    known = [w.value for w in Workload] + list(BUILTIN_OWNER_KINDS) + sorted(TRAINING_OWNER_KINDS)
    out = []
    for entry in match.workloads or ():
        if entry not in known:
            close = get_close_matches(entry, known, n=1, cutoff=0.75) or \
                [k for k in known if k.lower() == entry.lower()]
            if close:
                out.append((entry, close[0]))
    return out


def _injected(policy_set: PolicySet, what: str) -> dict[str, list[tuple[str, Any]]]:
    """Each injected name -> (policy, its definition) for every policy injecting it.
    Definitions alike as written render alike for a pod, except that a mandatory policy's
    templates read the workload from the pod's owner: that context is part of the
    definition."""
    owners: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for policy in policy_set.injectors:
        items = (*policy.init_containers, *policy.classic_sidecars) if what == "containers" else policy.volumes
        for item in items:
            from_owner = item.renderer is not None and policy.opt_out is OptOut.FORBIDDEN
            owners[item.name].append((policy.name, (item.value, from_owner)))
    return owners


def never_matches(match: Match) -> list[str]:
    """Contradictions in a matcher that no pod can satisfy."""
    reasons = []
    if match.namespaces.selects_nothing():
        reasons.append(f"every included namespace pattern {match.namespaces.include} is also excluded")
    if match.pod_selector is not None:
        reasons += _contradictions(match.pod_selector, "label")
    if match.namespace_selector is not None:
        reasons += _contradictions(match.namespace_selector, "namespace label")
    return sorted(set(reasons))


def _contradictions(selector: LabelSelector, what: str) -> list[str]:
    """Requirements of one label selector that no set of labels satisfies."""
    reasons = []
    required: dict[str, set[str] | None] = {k: {v} for k, v in selector.match_labels.items()}
    for req in selector.match_expressions:
        allowed = required.get(req.key, "absent")
        if req.operator == "DoesNotExist" and req.key in required:
            reasons.append(f"{what} {req.key!r} is both required and required absent")
        elif req.operator == "In":
            values = set(req.values)
            if isinstance(allowed, set):
                values &= allowed
            if not values:
                reasons.append(f"{what} {req.key!r} can take no value that every requirement allows")
            required[req.key] = values
        elif req.operator == "Exists":
            required.setdefault(req.key, None)
    absent = {r.key for r in selector.match_expressions if r.operator == "DoesNotExist"}
    for req in selector.match_expressions:
        if req.operator in ("Exists", "In") and req.key in absent:
            reasons.append(f"{what} {req.key!r} must both exist and not exist")
    return reasons


def _shared_ports(policy_set: PolicySet) -> list[str]:
    """Sidecars of different policies declaring one port: both run for the pod's life, so
    a pod both policies apply to is denied (or the later policy skipped) at admission."""
    seen: dict[tuple[int, str, bool], tuple[str, str]] = {}
    warnings: list[str] = []
    for policy in policy_set.injection:
        for sidecar in policy.spec.inject.sidecars:
            for port in sidecar.ports or ():
                for number, host in ((port.container_port, False), (port.host_port, True)):
                    if number is None:
                        continue
                    key = (number, port.protocol or "TCP", host)
                    first = seen.setdefault(key, (policy.metadata.name, sidecar.name))
                    if first[0] != policy.metadata.name:
                        warnings.append(f"{'host port' if host else 'port'} {number}/{key[1]} is declared by "
                                        f"sidecar {first[1]!r} (policy {first[0]}) and sidecar {sidecar.name!r} "
                                        f"(policy {policy.metadata.name}): a pod both apply to is denied, or "
                                        "the later policy skipped (onConflict: Skip on its port)")
    return warnings
