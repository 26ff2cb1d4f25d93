"""An InjectionPolicy prepared once at load for the request path.

Pydantic models are the schema; on every admission the engine needs plain
Kubernetes dicts, and re-dumping models per request would be the slowest part of
the hot path. Items that hold templates are marked, so only they are rendered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.policy.common import Match, Mode, OptOut
from webhook.policy.injection import Inject, InjectionPolicy, MissingRequirement, OnConflict, PortConflict, Target
from webhook.policy.template import TemplateContext, compile_template, has_template


@dataclass(frozen=True)
class Item:
    """One injected object (container, env var, volume, mount) as the pod will hold it."""

    name: str
    value: dict[str, Any]
    renderer: Callable[[TemplateContext], Any] | None   # None: no templates, use value as is
    on_conflict: OnConflict
    containers: frozenset[str] | None = None     # env / mounts: target names, None = all
    include_init_containers: bool = False
    # The value's top-level fields, each with its renderer (None: no templates), so a check
    # can render and compare one field at a time instead of the whole item.
    fields: tuple[tuple[str, Any, Callable[[TemplateContext], Any] | None], ...] = ()

    def render(self, ctx: TemplateContext) -> dict[str, Any]:
        return self.renderer(ctx) if self.renderer is not None else self.value

    def targets(self, container_name: str, *, init: bool) -> bool:
        if init and not self.include_init_containers:
            return False
        return self.containers is None or container_name in self.containers


@dataclass(frozen=True)
class MetadataItem:
    """A label or annotation a policy sets; its value may be a template."""

    key: str
    value: str
    renderer: Callable[[TemplateContext], Any] | None

    def render(self, ctx: TemplateContext) -> str:
        return self.renderer(ctx) if self.renderer is not None else self.value


@dataclass(frozen=True, slots=True)
class ContainerField:
    """A policy's env vars or mounts, and where in a container they go."""

    items: tuple[Item, ...]
    everywhere: bool   # every item targets every app container: no choice per container
    field_name: str    # the container's list: env or volumeMounts
    key: str           # what identifies an entry of that list
    kind: str          # for conflict records and messages
    theirs: str        # how the pod's clashing entry is described
    record: str        # the PolicyRecord attribute listing what was added: env or mounts


@dataclass(frozen=True)
class CompiledInjection:
    name: str
    revision: str
    priority: int
    mode: Mode
    opt_in: bool
    opt_out: OptOut
    match: Match
    init_containers: tuple[Item, ...]        # init containers then native sidecars, in order
    classic_sidecars: tuple[Item, ...]
    volumes: tuple[Item, ...]
    labels: tuple[MetadataItem, ...]
    annotations: tuple[MetadataItem, ...]
    container_fields: tuple[ContainerField, ...]  # env vars and mounts, the ones the policy has
    requires: tuple[str, ...] = ()                # policies that must have applied first
    on_missing_requirement: MissingRequirement = MissingRequirement.SKIP
    # (container, port, protocol, is a host port) of the injected ports whose clash skips
    # the policy rather than denying the pod (onConflict: Skip on the port)
    skipping_ports: frozenset[tuple[str, int, str, bool]] = frozenset()
    port_containers: frozenset[str] = frozenset()   # the injected containers that declare ports


# Where in a container the kubelet expands `$(VAR)` (and reads `$$` as `$`): templates
# there escape the pod values they substitute. A mapping descends into keys, a list's
# entries share their list's entry, True marks the strings to escape.
Expansion = Mapping[str, "Expansion"] | bool
CONTAINER_EXPANSION: Expansion = {"command": True, "args": True, "env": {"value": True},
                                  "volumeMounts": {"subPathExpr": True}}
ENV_EXPANSION: Expansion = {"value": True}


def renderer_for(value: Any, expansion: Expansion = False) -> Callable[[TemplateContext], Any] | None:
    """A function rebuilding `value` with its templates filled in, copying only the
    parts that hold templates; None when there are none. `expansion` says which of its
    strings the kubelet expands (see CONTAINER_EXPANSION)."""
    if isinstance(value, str):
        return compile_template(value, expanded=expansion is True) if has_template(value) else None
    if isinstance(value, dict):
        keyed = {k: r for k, v in value.items()
                 if (r := renderer_for(v, expansion.get(k, False) if isinstance(expansion, Mapping)
                                       else expansion)) is not None}
        if not keyed:
            return None

        def render_dict(ctx: TemplateContext) -> dict[str, Any]:
            out = dict(value)
            for key, render in keyed.items():
                out[key] = render(ctx)
            return out
        return render_dict
    if isinstance(value, list):
        indexed = {i: r for i, v in enumerate(value) if (r := renderer_for(v, expansion)) is not None}
        if not indexed:
            return None

        def render_list(ctx: TemplateContext) -> list[Any]:
            out = list(value)
            for index, render in indexed.items():
                out[index] = render(ctx)
            return out
        return render_list
    return None


def _item(name: str, value: dict[str, Any], on_conflict: OnConflict, target: Target | None = None, *,
          expansion: Expansion = False) -> Item:
    return Item(name=name, value=value, renderer=renderer_for(value, expansion), on_conflict=on_conflict,
                containers=frozenset(target.containers) if target and target.containers is not None else None,
                include_init_containers=bool(target and target.include_init_containers),
                fields=tuple((key, field, renderer_for(field, expansion.get(key, False)
                                                       if isinstance(expansion, Mapping) else expansion))
                             for key, field in value.items()))


def _container_field(items: tuple[Item, ...], field_name: str, key: str, kind: str, theirs: str,
                     record: str) -> ContainerField:
    return ContainerField(items, all(i.containers is None for i in items), field_name, key, kind, theirs, record)


def _container_fields(inject: Inject) -> tuple[ContainerField, ...]:
    env = _container_field(tuple(_item(e.name, e.to_env(), e.on_conflict, e, expansion=ENV_EXPANSION)
                                 for e in inject.env),
                           "env", "name", "env", "env var {!r}", "env")
    mounts = _container_field(tuple(_item(m.mount_path, m.to_mount(), m.on_conflict, m)
                                    for m in inject.volume_mounts),
                              "volumeMounts", "mountPath", "mount", "a mount at {!r}", "mounts")
    return tuple(f for f in (env, mounts) if f.items)


def compile_injection(policy: InjectionPolicy) -> CompiledInjection:
    inject = policy.spec.inject
    init_items = [_item(c.name, c.to_container(), c.on_conflict, expansion=CONTAINER_EXPANSION)
                  for c in inject.init_containers]
    for sidecar in inject.sidecars:
        if sidecar.native:
            # Native sidecar (GA in 1.33): an init container that keeps running, starts
            # before the app, and does not keep a Job from completing.
            init_items.append(_item(sidecar.name, {**sidecar.to_container(), "restartPolicy": "Always"},
                                    sidecar.on_conflict, expansion=CONTAINER_EXPANSION))
    return CompiledInjection(
        name=policy.metadata.name,
        # Defaults left out: a field the schema gains (requires, a port's onConflict) leaves
        # the policies that do not use it at their revision, so an upgrade neither marks every
        # injected pod stale nor drops what later admission plugins set on its containers.
        # `update` says how running pods catch up, not what they get: an edit there (pausing
        # a rollout, widening its canary) must not mark every pod stale.
        revision=hashlib.sha256(policy.model_dump_json(by_alias=True, exclude_defaults=True,
                                                       exclude={"spec": {"update"}}).encode())
        .hexdigest()[:12],
        priority=policy.spec.priority,
        mode=policy.spec.mode,
        opt_in=policy.spec.opt_in,
        opt_out=policy.spec.opt_out,
        match=policy.spec.match,
        init_containers=tuple(init_items),
        classic_sidecars=tuple(_item(s.name, s.to_container(), s.on_conflict, expansion=CONTAINER_EXPANSION)
                               for s in inject.sidecars if not s.native),
        volumes=tuple(_item(v.name, v.to_volume(), v.on_conflict) for v in inject.volumes),
        labels=tuple(MetadataItem(k, v, renderer_for(v)) for k, v in inject.labels.items()),
        annotations=tuple(MetadataItem(k, v, renderer_for(v)) for k, v in inject.annotations.items()),
        container_fields=_container_fields(inject),
        requires=tuple(policy.spec.requires),
        on_missing_requirement=policy.spec.on_missing_requirement,
        skipping_ports=frozenset((c.name, number, p.protocol or "TCP", host)
                                 for c in (*inject.init_containers, *inject.sidecars) for p in c.ports or ()
                                 if p.on_conflict is PortConflict.SKIP
                                 for number, host in ((p.container_port, False), (p.host_port, True))
                                 if number is not None),
        port_containers=frozenset(c.name for c in (*inject.init_containers, *inject.sidecars) if c.ports),
    )
