"""The names reserved in one pod, and whether each holder of one is what injection put there.

A name is reserved for a pod only when an injection policy that applies to that pod
(its match, the pod's opt-outs as far as the policy allows them, Enforce mode)
injects a container or volume of that name with onConflict: Deny. A pod's container
of such a name passes only when it is what an applying policy renders for this pod:
the ledger annotation is the pod's to write, so it vouches for nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.engine.applies import skip_reason
from webhook.engine.inject import template_context
from webhook.engine.ledger import LEDGER_ANNOTATION, ledger_of
from webhook.engine.pod import PodFacts
from webhook.engine.target import Target
from webhook.core.jsonvalue import as_list, as_str
from webhook.policy.common import Mode, OptOut
from webhook.policy.compiled import Item
from webhook.policy.injection import OnConflict
from webhook.policy.loader import PolicySet
from webhook.policy.template import TemplateContext, TemplateValueError
from webhook.rules.containers import iter_containers
from webhook.rules.reserved_names import ItemKind, ReservedName, Verify, check_reserved_names
from webhook.core.finding import Finding

# What a container runs: compared exactly, present or absent, whatever the policy sets.
_RUNS = ("image", "command", "args", "workingDir", "restartPolicy")
_RUNS_SET = frozenset(_RUNS)
# Adjusted by other admission plugins (a vertical pod autoscaler's webhook, LimitRanger).
_ADJUSTED = frozenset({"resources"})
# Stands for the pod's name in the second rendering (see _Renderings); no name holds it.
_NAME_PROBE = "\x00name"


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a holder of an item's name is compared with it, worked out once per policy set."""

    static_keys: tuple[str, ...]        # the compared fields without templates ...
    static_values: tuple[Any, ...]      # ... and their values
    exact: frozenset[str]               # which of them are compared exactly (what runs)
    templated: tuple[tuple[str, Callable[[TemplateContext], Any], bool], ...]  # key, renderer, exact
    unset_runs: frozenset[str]          # what runs that the policy leaves unset: must be absent


def _plan(item: Item, what: ItemKind) -> _Plan:
    container = what == "container"
    compared = [(key, value, render) for key, value, render in item.fields
                if not (container and key in _ADJUSTED)]
    static = [(key, value) for key, value, render in compared if render is None]
    return _Plan(
        tuple(key for key, _ in static), tuple(value for _, value in static),
        frozenset(key for key, _ in static if container and key in _RUNS_SET),
        tuple((key, render, container and key in _RUNS_SET) for key, _, render in compared if render is not None),
        frozenset(key for key in _RUNS if key not in item.value) if container else frozenset())


# What injects an item of some name: the index of its policy in `PolicySet.injectors`, the
# item, the list of the pod it goes in, and how a holder is compared with it.
_Candidate = tuple[int, Item, str, _Plan]


@dataclass(frozen=True)
class _Summary:
    """What every request would otherwise work out again from the policy set."""

    containers: frozenset[str]    # injected with onConflict: Deny, by any policy
    volumes: frozenset[str]
    ledger_matters: bool          # see _ledger_matters
    # name -> every item of that name, in the order verify tries them (the policies' priority,
    # then init containers before classic sidecars)
    container_items: Mapping[str, tuple[_Candidate, ...]]
    volume_items: Mapping[str, tuple[_Candidate, ...]]
    # per policy (as in `PolicySet.injectors`): the container and volume names it reserves
    reserves: tuple[tuple[tuple[tuple[str, ReservedName], ...], tuple[tuple[str, ReservedName], ...]], ...]


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
            _ledger_matters(policies),
            _candidates([[(i, "initContainers") for i in p.init_containers] +
                         [(i, "containers") for i in p.classic_sidecars] for p in injectors], "container"),
            _candidates([[(i, "volumes") for i in p.volumes] for p in injectors], "volume"),
            tuple((tuple((i.name, ReservedName(p.name)) for i in (*p.init_containers, *p.classic_sidecars)
                         if i.on_conflict is OnConflict.DENY),
                   tuple((i.name, ReservedName(p.name)) for i in p.volumes if i.on_conflict is OnConflict.DENY))
                  for p in injectors))
        if len(_SUMMARIES) >= 8:
            _SUMMARIES.clear()
        _SUMMARIES[policies.revision] = summary
    return summary


def _candidates(per_policy: list[list[tuple[Item, str]]], what: ItemKind) -> dict[str, tuple[_Candidate, ...]]:
    out: dict[str, list[_Candidate]] = {}
    for index, entries in enumerate(per_policy):
        for item, where in entries:
            out.setdefault(item.name, []).append((index, item, where, _plan(item, what)))
    return {name: tuple(candidates) for name, candidates in out.items()}


def check(target: Target, policies: PolicySet, *, extra: list[str], from_injection: bool) -> list[Finding]:
    spec = target.spec
    summary = _summary(policies)
    refs = list(iter_containers(spec))    # walked once, for the names and for the report
    present = {c.name for c in refs}
    if present.isdisjoint(extra) and (not from_injection or (
            present.isdisjoint(summary.containers) and
            {as_str(v.get("name")) for v in as_list(spec.get("volumes")) if isinstance(v, dict)}
            .isdisjoint(summary.volumes))):
        return []   # the common case: no name to look into
    facts = _authored_facts(target, policies)
    injectors = policies.injectors
    applying = [index for index, p in enumerate(injectors)
                if p.mode is Mode.ENFORCE and skip_reason(p, facts) is None]
    containers: dict[str, ReservedName] = {}
    volumes: dict[str, ReservedName] = {}
    if from_injection:
        for index in applying:
            policy_containers, policy_volumes = summary.reserves[index]
            for name, owner in policy_containers:
                containers.setdefault(name, owner)
            for name, owner in policy_volumes:
                volumes.setdefault(name, owner)
    for name in extra:
        containers.setdefault(name, ReservedName(""))
    verify = None if target.is_template else _verifier(policies, summary, frozenset(applying), facts)
    return check_reserved_names(spec, containers=containers, volumes=volumes, verify=verify, refs=refs)


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
    (engine.sections.strip_ledger), so a ledger the pod's author wrote changes both sides alike."""
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


def _verifier(policies: PolicySet, summary: _Summary, applying: frozenset[int], facts: PodFacts) -> Verify:
    bare = facts.owner_kind == "Pod"
    contexts: dict[OptOut, _Renderings] = {}

    def verify(what: ItemKind, field: str, raw: Mapping[str, Any]) -> str | None:
        name = as_str(raw.get("name"))
        reasons: list[str] = []
        for index, item, where, plan in (summary.volume_items if what == "volume" else summary.container_items).get(
                name, ()):
            if index not in applying:
                continue
            policy = policies.injectors[index]
            renderings = contexts.get(policy.opt_out)
            if renderings is None:
                renderings = contexts[policy.opt_out] = _Renderings(
                    facts.from_owners() if policy.opt_out is OptOut.FORBIDDEN else facts, bare=bare)
            why = _differs(item, plan, where, field, raw, renderings, what)
            if why is None:
                return None
            reasons.append(f"not what policy {policy.name} injects: {why}")
        return "; ".join(reasons) or "no injection policy that applies to this pod injects it"
    return verify


class _Renderings:
    """Two template contexts that differ exactly where a template reads the pod's name
    (`podName`, or `workload.name` of a bare pod). The API server names a generateName pod
    only after the mutating webhooks ran, and the decision memo keys /validate without the
    name, so what depends on it is not compared. The second is built only when needed: a
    holder that matches the first rendering needs no other."""

    def __init__(self, facts: PodFacts, *, bare: bool) -> None:
        self._facts, self._bare = facts, bare
        self.first = self._with_name("")
        self._second: TemplateContext | None = None

    @property
    def second(self) -> TemplateContext:
        if self._second is None:
            self._second = self._with_name(_NAME_PROBE)
        return self._second

    def _with_name(self, name: str) -> TemplateContext:
        facts = self._facts
        return template_context(facts, pod_name=name, workload_name=name if self._bare else facts.workload_name)


def _differs(item: Item, plan: _Plan, where: str, field: str, raw: Mapping[str, Any], renderings: _Renderings,
             what: ItemKind) -> str | None:
    if field != where:
        return f"it is in {field}, not {where}"
    try:
        if _holds(plan, raw, renderings):
            return None
        # Only to say why: render the whole item both ways and compare in order.
        expected = item.render(renderings.first)
        why = _compare(expected, expected, raw, what)
        if why is None or item.renderer is None:
            return why
        # Only when the pod's own name made a difference is the second rendering needed.
        return _compare(expected, item.render(renderings.second), raw, what)
    except TemplateValueError as exc:  # injection would have denied the pod, not injected this
        return f"the policy injects nothing into this pod: {exc}"


def _holds(plan: _Plan, raw: Mapping[str, Any], renderings: _Renderings) -> bool:
    """Whether `_differs` finds nothing, worked out field by field: the fields without
    templates are compared as the policy holds them (all at once when they are equal), a
    templated one is rendered alone, and the second rendering is made only for a field that
    differs under the first. Saying why is left to `_differs`' full comparison, for the
    holders that fail. Raises TemplateValueError as rendering the item would."""
    if tuple(map(raw.get, plan.static_keys)) != plan.static_values:
        for key, value in zip(plan.static_keys, plan.static_values):
            actual = raw.get(key)
            if not (value == actual or (key not in plan.exact and _conforms(value, actual))):
                return False
    for key, render, exact in plan.templated:
        expected = render(renderings.first)
        actual = raw.get(key)
        if not (expected == actual or _matches(expected, render(renderings.second), actual, exact=exact)):
            return False
    # A field that decides what runs must be absent when the policy does not set it.
    return plan.unset_runs.isdisjoint(raw.keys()) or all(raw.get(key) is None for key in plan.unset_runs)


def _compare(expected: Mapping[str, Any], probe: Mapping[str, Any], raw: Mapping[str, Any],
             what: ItemKind) -> str | None:
    container = what == "container"
    if container:
        for key in _RUNS:
            if not _matches(expected.get(key), probe.get(key), raw.get(key), exact=True):
                return f"its {key} is {_short(raw.get(key))}, not {_short(expected.get(key))}"
    for key, value in expected.items():
        if container and (key in _ADJUSTED or key in _RUNS):
            continue   # for a volume every field counts: an image volume's `image` is its source
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
