"""The names reserved in one pod, and whether each holder of one is what injection put there.

A name is reserved for a pod only when an injection policy that applies to that pod
(its match, the pod's opt-outs as far as the policy allows them, Enforce mode)
injects a container or volume of that name with onConflict: Deny. A pod's container
of such a name passes only when it is what an applying policy renders for this pod:
the ledger annotation is the pod's to write, so it vouches for nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.engine.applies import skip_reason
from webhook.engine.inject import template_context
from webhook.engine.ledger import LEDGER_ANNOTATION, ledger_of
from webhook.engine.pod import PodFacts
from webhook.engine.validation.target import Target
from webhook.jsonvalue import as_list, as_str
from webhook.policy.common import Mode, OptOut
from webhook.policy.compiled import CompiledInjection, Item
from webhook.policy.injection import OnConflict
from webhook.policy.loader import PolicySet
from webhook.policy.template import TemplateContext
from webhook.rules.containers import iter_containers
from webhook.rules.reserved_names import ItemKind, ReservedName, Verify, check_reserved_names
from webhook.rules.finding import Finding

# What a container runs: compared exactly, present or absent, whatever the policy sets.
_RUNS = ("image", "command", "args", "workingDir", "restartPolicy")
# Adjusted by other admission plugins (a vertical pod autoscaler's webhook, LimitRanger).
_ADJUSTED = frozenset({"resources"})
# Stands for the pod's name in the second rendering of `_name_free`; no name holds it.
_NAME_PROBE = "\x00name"


@dataclass(frozen=True)
class _Summary:
    """What every request would otherwise work out again from the policy set."""

    containers: frozenset[str]    # injected with onConflict: Deny, by any policy
    volumes: frozenset[str]
    ledger_matters: bool          # see _ledger_matters


# Policy set revision (a digest of its files) -> its summary; a handful of sets at most
# live at once (the serving one, the one a reload replaces).
_SUMMARIES: dict[str, _Summary] = {}


def _summary(policies: PolicySet) -> _Summary:
    summary = _SUMMARIES.get(policies.revision)
    if summary is None:
        injectors = policies.injectors
        summary = _Summary(
            frozenset(i.name for p in injectors for i in (*p.init_containers, *p.classic_sidecars)
                      if i.on_conflict is OnConflict.DENY),
            frozenset(i.name for p in injectors for i in p.volumes if i.on_conflict is OnConflict.DENY),
            _ledger_matters(policies))
        if len(_SUMMARIES) >= 8:
            _SUMMARIES.clear()
        _SUMMARIES[policies.revision] = summary
    return summary


def check(target: Target, policies: PolicySet, *, extra: list[str], from_injection: bool) -> list[Finding]:
    spec = target.spec
    summary = _summary(policies)
    present = {c.name for c in iter_containers(spec)}
    present_volumes = {as_str(v.get("name")) for v in as_list(spec.get("volumes")) if isinstance(v, dict)}
    if present.isdisjoint(extra) and (not from_injection or (present.isdisjoint(summary.containers)
                                                             and present_volumes.isdisjoint(summary.volumes))):
        return []   # the common case: no name to look into
    facts = _authored_facts(target, policies)
    applying = [p for p in policies.injectors if p.mode is Mode.ENFORCE and skip_reason(p, facts) is None]
    containers: dict[str, ReservedName] = {}
    volumes: dict[str, ReservedName] = {}
    if from_injection:
        for policy in applying:
            for item in (*policy.init_containers, *policy.classic_sidecars):
                if item.on_conflict is OnConflict.DENY:
                    containers.setdefault(item.name, ReservedName(policy.name))
            for item in policy.volumes:
                if item.on_conflict is OnConflict.DENY:
                    volumes.setdefault(item.name, ReservedName(policy.name))
    for name in extra:
        containers.setdefault(name, ReservedName(""))
    verify = None if target.is_template else _verifier(applying, facts)
    return check_reserved_names(spec, containers=containers, volumes=volumes, verify=verify)


def _ledger_matters(policies: PolicySet) -> bool:
    """Whether what the ledger says was injected can change a policy's match or rendering:
    only when a policy injects labels or annotations (read by templates and podSelectors) or
    excludes pods by a container name that a policy injects."""
    injected = {i.name for p in policies.injectors for i in (*p.init_containers, *p.classic_sidecars)}
    return any(p.labels or p.annotations or not injected.isdisjoint(p.match.exclude.containers)
               for p in policies.injectors)


def _authored_facts(target: Target, policies: PolicySet) -> PodFacts:
    """The facts injection matched and rendered with: the pod less the labels, annotations and
    containers its ledger says injection added. Injection strips the same keys before matching
    (engine.inject._strip), so a ledger the pod's author wrote changes both sides alike."""
    facts = target.facts
    if target.is_template or LEDGER_ANNOTATION not in facts.annotations:
        return facts
    if not _summary(policies).ledger_matters:
        return facts
    ledger = ledger_of(facts.annotations)
    labels = {k for r in ledger.policies for k in r.labels}
    annotations = {k for r in ledger.policies for k in r.annotations} | {LEDGER_ANNOTATION}
    containers = {c for r in ledger.policies for c in r.containers}
    return dataclasses.replace(
        facts, labels={k: v for k, v in facts.labels.items() if k not in labels},
        annotations={k: v for k, v in facts.annotations.items() if k not in annotations},
        container_names=facts.container_names - containers)


def _verifier(applying: list[CompiledInjection], facts: PodFacts) -> Verify:
    bare = facts.owner_kind == "Pod"
    contexts: dict[OptOut, tuple[TemplateContext, TemplateContext]] = {}

    def context(opt_out: OptOut) -> tuple[TemplateContext, TemplateContext]:
        if opt_out not in contexts:
            contexts[opt_out] = _name_free(template_context(
                facts.from_owners() if opt_out is OptOut.FORBIDDEN else facts), bare=bare)
        return contexts[opt_out]

    def verify(what: ItemKind, field: str, raw: Mapping[str, Any]) -> str | None:
        name = as_str(raw.get("name"))
        reasons: list[str] = []
        for policy in applying:
            if what == "volume":
                candidates = [(i, "volumes") for i in policy.volumes]
            else:
                candidates = [(i, "initContainers") for i in policy.init_containers] + \
                             [(i, "containers") for i in policy.classic_sidecars]
            for item, where in candidates:
                if item.name != name:
                    continue
                why = _differs(item, where, field, raw, context(policy.opt_out), what)
                if why is None:
                    return None
                reasons.append(f"not what policy {policy.name} injects: {why}")
        return "; ".join(reasons) or "no injection policy that applies to this pod injects it"
    return verify


def _name_free(ctx: TemplateContext, *, bare: bool) -> tuple[TemplateContext, TemplateContext]:
    """Two renderings that differ exactly where a template reads the pod's name (`podName`, or
    `workload.name` of a bare pod). The API server names a generateName pod only after the
    mutating webhooks ran, and the decision memo keys /validate without the name, so what
    depends on it is not compared."""
    first = dataclasses.replace(ctx, pod_name="", workload_name="" if bare else ctx.workload_name)
    second = dataclasses.replace(ctx, pod_name=_NAME_PROBE, workload_name=_NAME_PROBE if bare else ctx.workload_name)
    return first, second


def _differs(item: Item, where: str, field: str, raw: Mapping[str, Any],
             contexts: tuple[TemplateContext, TemplateContext], what: ItemKind) -> str | None:
    if field != where:
        return f"it is in {field}, not {where}"
    expected = item.render(contexts[0])
    why = _compare(expected, expected, raw, what)
    if why is None or item.renderer is None:
        return why
    # Only when the pod's own name made a difference is the second rendering needed.
    return _compare(expected, item.render(contexts[1]), raw, what)


def _compare(expected: Mapping[str, Any], probe: Mapping[str, Any], raw: Mapping[str, Any],
             what: ItemKind) -> str | None:
    if what == "container":
        for key in _RUNS:
            if not _matches(expected.get(key), probe.get(key), raw.get(key), exact=True):
                return f"its {key} is {_short(raw.get(key))}, not {_short(expected.get(key))}"
    for key, value in expected.items():
        if key in _ADJUSTED or key in _RUNS:
            continue
        if not _matches(value, probe.get(key), raw.get(key), exact=False):
            return f"its {key} differs"
    return None


def _matches(expected: Any, probe: Any, actual: Any, *, exact: bool) -> bool:
    """`actual` is `expected` (`exact`) or holds it (`_conforms`), except where the two
    renderings differ, which is what was read from the pod's name."""
    if expected == actual:   # the common case, compared in C
        return True
    if expected == probe:
        return expected == actual if exact else _conforms(expected, actual)
    if isinstance(expected, dict) and isinstance(probe, dict):
        return isinstance(actual, dict) and (not exact or actual.keys() == expected.keys()) and \
            all(_matches(v, probe.get(k), actual.get(k), exact=exact) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(probe, list) and len(expected) == len(probe):
        if not isinstance(actual, list):
            return False
        if exact:
            return len(actual) == len(expected) and \
                all(_matches(e, p, a, exact=True) for e, p, a in zip(expected, probe, actual))
        return all(any(_matches(e, p, a, exact=False) for a in actual) for e, p in zip(expected, probe))
    return True   # a value taken from the pod's name


def _conforms(expected: Any, actual: Any) -> bool:
    """`actual` holds `expected`, allowing what the API server's defaulting and other
    admission plugins add: extra keys in a mapping (a probe's timeoutSeconds, a secret
    volume's defaultMode, a fieldRef's apiVersion), extra entries in a list (env vars
    another webhook appends)."""
    if expected == actual:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(_conforms(v, actual.get(k)) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and all(any(_conforms(e, a) for a in actual) for e in expected)
    return expected == actual


def _short(value: Any) -> str:
    """A value for a message: the pod's side is the pod author's, so it is cut."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
