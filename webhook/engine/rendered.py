"""What injection adds, checked as it is added: rendered values, and the answer's size.

A policy's template copies values from the pod (labels, annotations, names) into what
it injects. Those values are the pod author's, unchecked by the API server until after
mutating admission, so each one is checked when rendered (webhook/policy/template.py),
quantities rendered from a template must parse and keep request <= limit, and the
bytes injection adds are counted against the object size bound as they are added, so
a pod that would grow too large is denied before its patch is built or serialised.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.engine.bounds import DeadlineExceeded, Limits
from webhook.policy.compiled import CompiledInjection, Item, MetadataItem
from webhook.policy.template import TemplateContext, TemplateValueError, has_template, quoted, references, source_of
from webhook.rules.quantity import parse_quantity

# JSON a patch operation adds around its value: {"op":"add","path":"/spec/containers/12/env/-","value":}
OP_OVERHEAD_BYTES = 64
# Below this much added, the pod's own size is not measured (serialising every pod to
# measure it would cost more than several steps of injection): the answer is small
# anyway, and a pod the API server sent is within its write limit.
MEASURE_POD_FROM_BYTES = 64 * 1024


class Refused(Exception):
    """Injection would produce a value or a pod the API server refuses: a denial with this message."""


class Budget:
    """Bytes injection has added to the pod so far, against the object size bound, and the
    request's deadline. A policy's additions are pending until it is applied. Measured only
    when the pod could grow by MEASURE_POD_FROM_BYTES (`measure`): a few containers cannot."""

    __slots__ = ("limits", "limit", "deadline", "measure", "committed", "pending")

    def __init__(self, limits: Limits, deadline: float | None, *, measure: bool) -> None:
        self.limits = limits
        self.limit = limits.max_object_bytes
        self.deadline = deadline
        self.measure = measure
        self.committed = 0
        self.pending = 0

    def add(self, size: int) -> None:
        """Count `size` more bytes; Refused past the bound, DeadlineExceeded past the deadline.
        Called per injected item and per container injected into, so it is the engine's clock."""
        self.pending += size
        if self.committed + self.pending > self.limit:
            raise Refused(too_large(self.committed + self.pending, self.limit, what="injection would add"))
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise DeadlineExceeded("the request's deadline passed before a decision")

    def commit(self) -> None:
        self.committed += self.pending
        self.pending = 0

    def rollback(self) -> None:
        self.pending = 0


def too_large(size: int, limit: int, *, what: str) -> str:
    return (f"{what} about {size} bytes, over the {limit} byte limit on an object this webhook admits "
            "(the API server refuses larger ones); fewer containers, or smaller values for the policies "
            "to copy, would fit")


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value)) + OP_OVERHEAD_BYTES


def _placeholders(value: Any) -> int:
    if isinstance(value, str):
        return value.count("{{")
    if isinstance(value, dict):
        return sum(_placeholders(v) for v in value.values())
    if isinstance(value, list):
        return sum(_placeholders(v) for v in value)
    return 0


@dataclass(frozen=True, slots=True)
class _PolicySizes:
    """What a policy can add to a pod, worked out once per policy."""

    policy: CompiledInjection    # kept, so that its id is not reused while this entry stands
    copied: int                  # the max_copied_value the bounds below assume
    items: dict[int, int]        # JSON size of each env var and mount as written; each field's sum
    fixed: int                   # at most this much added once per pod (containers, volumes, metadata)
    per_container: int           # and at most this much per container (env vars, mounts)


# By id of the policy; the policies are the policy set's, compiled at load. Emptied when
# full (after many reloads).
_SIZES: dict[int, _PolicySizes] = {}
_SIZES_MAX = 256


def _sizes(policy: CompiledInjection, copied: int) -> _PolicySizes:
    cached = _SIZES.get(id(policy))
    if cached is not None and cached.policy is policy and cached.copied == copied:
        return cached
    # A placeholder renders a literal from the template's own text or a value from the pod:
    # at most `copied` characters, or 63 for a label; twice that where `$` is doubled.
    per_placeholder = 2 * max(copied, 63)

    def bound(value: Any) -> int:
        return _json_size(value) + per_placeholder * _placeholders(value)

    items: dict[int, int] = {}
    per_container = 0
    for field_ in policy.container_fields:
        for item in field_.items:
            items[id(item)] = _json_size(item.value)
            per_container += bound(item.value)
        items[id(field_)] = sum(items[id(i)] for i in field_.items)
    fixed = sum(bound(i.value) for i in (*policy.init_containers, *policy.classic_sidecars, *policy.volumes))
    fixed += sum(len(m.key) + bound(m.value) for m in (*policy.labels, *policy.annotations))
    if len(_SIZES) >= _SIZES_MAX:
        _SIZES.clear()
    _SIZES[id(policy)] = sizes = _PolicySizes(policy, copied, items, fixed, per_container)
    return sizes


# Per policy set (its tuple of injectors): (the tuple, copied, fixed, per container).
_TOTALS: dict[int, tuple[tuple[CompiledInjection, ...], int, int, int]] = {}


def may_grow(policies: tuple[CompiledInjection, ...], containers: int, limits: Limits) -> bool:
    """Whether these policies could add MEASURE_POD_FROM_BYTES to a pod of `containers`
    containers: only then are the additions measured (`Budget.measure`)."""
    copied = limits.max_copied_value
    totals = _TOTALS.get(id(policies))
    if totals is None or totals[0] is not policies or totals[1] != copied:
        fixed = per_container = 0
        for policy in policies:
            sizes = _sizes(policy, copied)
            fixed += sizes.fixed
            per_container += sizes.per_container
        if len(_TOTALS) >= _SIZES_MAX:
            _TOTALS.clear()
        _TOTALS[id(policies)] = totals = (policies, copied, fixed, per_container)
    return totals[2] + totals[3] * containers >= MEASURE_POD_FROM_BYTES


def size_of(item: Item | MetadataItem, value: Any) -> int:
    """JSON bytes `value`, the rendered `item`, adds to the pod, with its patch operation."""
    return _json_size(value)


def field_sizes(policy: CompiledInjection, rendered: Mapping[int, Any], limits: Limits) -> dict[int, int]:
    """Sizes (as `size_of`) of the policy's env vars and mounts rendered for this pod, by id
    of the item, and by id of each ContainerField the sum of its items'. Only what a
    template rendered is measured per pod; the rest once per policy."""
    sizes = _sizes(policy, limits.max_copied_value).items
    templated = [i for f in policy.container_fields for i in f.items if rendered[id(i)] is not i.value]
    if not templated:
        return sizes
    sizes = dict(sizes)
    for item in templated:
        sizes[id(item)] = _json_size(rendered[id(item)])
    for field_ in policy.container_fields:
        sizes[id(field_)] = sum(sizes[id(i)] for i in field_.items)
    return sizes


def object_size(obj: Mapping[str, Any]) -> int:
    """JSON bytes of the pod as it came; 0 for what JSON cannot hold (offline YAML)."""
    try:
        return len(orjson.dumps(obj))
    except (TypeError, orjson.JSONEncodeError):
        return 0


def render(item: Item | MetadataItem, ctx: TemplateContext, *, policy: str, what: str) -> Any:
    """`item`, which holds templates, rendered for this pod, its pod values and its rendered
    quantities checked; Refused naming the policy, the field and the pod field otherwise.
    An item without templates needs none of this: it is used as it stands."""
    try:
        value = item.render(ctx)
    except TemplateValueError as exc:
        fields = ", ".join(_fields_using(item.value, exc.ref)) or "a template"
        raise Refused(f"policy {policy}: {what} {fields}: {exc}") from None
    if value.__class__ is dict and (value.get("resources") is not item.value.get("resources")  # type: ignore[union-attr]
                                    or value.get("emptyDir") is not item.value.get("emptyDir")):  # type: ignore[union-attr]
        problem = _quantity_problem(item.value, value)  # type: ignore[arg-type]
        if problem:
            raise Refused(f"policy {policy}: {what}: {problem}")
    return value


def _fields_using(value: Any, ref: tuple[str, str], path: str = "") -> Iterator[str]:
    """Paths in `value` (an item as the policy wrote it) of the templates that read `ref`."""
    if isinstance(value, str):
        if has_template(value) and ref in references(value):
            yield path or "value"
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _fields_using(sub, ref, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _fields_using(sub, ref, f"{path}[{index}]")


def _quantity_problem(template: dict[str, Any], value: dict[str, Any]) -> str | None:
    """What is wrong with the quantities a template rendered in a container's resources or an
    emptyDir's sizeLimit; None when fine. A rendered part is a new object (the renderer
    copies only what holds templates), so parts without templates cost an identity check."""
    resources, before = value.get("resources"), template.get("resources")
    if isinstance(resources, dict) and resources is not before and isinstance(before, dict):
        parsed: dict[str, dict[str, Any]] = {}
        for section in ("requests", "limits"):
            entries = resources.get(section)
            if not isinstance(entries, dict):
                continue
            for name, text in entries.items():
                problem = _parse(text, _template_at(before, section, name), f"resources.{section}.{name}")
                if isinstance(problem, str):
                    return problem
                parsed.setdefault(section, {})[name] = problem
        for name, request in parsed.get("requests", {}).items():
            limit = parsed.get("limits", {}).get(name)
            if limit is not None and request > limit:
                sources = _from(_template_at(before, "requests", name)) or _from(_template_at(before, "limits", name))
                return (f"resources.requests.{name} ({quoted(str(resources['requests'][name]))}) is over "
                        f"resources.limits.{name} ({quoted(str(resources['limits'][name]))}){sources}; "
                        "the API server refuses a request above its limit")
    empty_dir, before_dir = value.get("emptyDir"), template.get("emptyDir")
    if isinstance(empty_dir, dict) and empty_dir is not before_dir and isinstance(before_dir, dict) \
            and "sizeLimit" in empty_dir:
        problem = _parse(empty_dir["sizeLimit"], before_dir.get("sizeLimit"), "emptyDir.sizeLimit")
        if isinstance(problem, str):
            return problem
    return None


def _template_at(resources: dict[str, Any], section: str, name: str) -> Any:
    entries = resources.get(section)
    return entries.get(name) if isinstance(entries, dict) else None


def _parse(text: Any, template: Any, field: str) -> Any:
    """The quantity's value, or a message (str) saying why it is none."""
    try:
        return parse_quantity(text)
    except ValueError:
        shown = quoted(text) if isinstance(text, str) else repr(text)
        return f"{field} rendered to {shown}{_from(template)}, which is not a quantity"


def _from(template: Any) -> str:
    """ ', from pod annotation 'x' (...)' for the pod fields a template string reads."""
    if not isinstance(template, str):
        return ""
    refs = references(template)
    return f", from {' or '.join(source_of(r) for r in refs)}" if refs else ""
