"""The sections of a pod that injection rewrites (init containers, containers, volumes,
labels, annotations), and how one InjectionPolicy's items go into them: conflicts with
the pod's own items, env and mount merging, native and classic sidecars, ports.

`webhook.engine.inject` drives it, one policy at a time, on a copy of the sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.jsonvalue import as_str, dicts_in
from webhook.engine.conflicts import ConflictNotes, same_item, shown_name
from webhook.engine.ledger import Ledger, PolicyRecord
from webhook.engine.ports import port_clashes
from webhook.engine.rendered import OP_OVERHEAD_BYTES, Budget, field_sizes, render, size_of
from webhook.policy.common import LABEL_VALUE_RULE, valid_label_value
from webhook.policy.compiled import CompiledInjection, ContainerField, Item
from webhook.policy.injection import OnConflict
from webhook.policy.template import TemplateContext, quoted


class Deny(Exception):
    pass


class SkipPolicy(Exception):
    pass


@dataclass
class Sections:
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

    def copy(self) -> Sections:
        return Sections(list(self.init), list(self.containers), list(self.volumes), dict(self.labels),
                         dict(self.annotations), self.ephemeral_names, self.init_names, self.container_names,
                         list(self.injected_init),
                         dict(self.injected_names), dict(self.injected_volumes), dict(self.env_front),
                         self.notes.copy())

    def start_order(self) -> list[dict[str, Any]]:
        """The init containers as the pod will hold them: injected ones first, in their order."""
        return [c for _, c in sorted(self.injected_init, key=lambda rc: rc[0])] + self.init


def name_of(obj: dict[str, Any]) -> str:
    return as_str(obj.get("name"))


def strip_ledger(sections: Sections, ledger: Ledger) -> Sections:
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
        name = name_of(c)
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

    sections.init = [strip_container(c) for c in sections.init if name_of(c) not in containers]
    sections.containers = [strip_container(c) for c in sections.containers if name_of(c) not in containers]
    sections.volumes = [v for v in sections.volumes if name_of(v) not in volumes]
    for record in ledger.policies:
        for key in record.labels:
            sections.labels.pop(key, None)
        for key in record.annotations:
            sections.annotations.pop(key, None)
    return sections


def resolve_conflict(item: Item, what: str, record: PolicyRecord, *, policy: str, theirs: str,
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
        raise Deny(f"policy {policy} injects {what} {item.name!r}{where}, but the pod already defines "
                    f"{theirs}; rename the pod's {what} or ask the platform team to change the policy's "
                    "onConflict")
    if resolution is OnConflict.SKIP:
        raise SkipPolicy(f"the pod already defines {what} {item.name!r}{where}")
    entry = {"kind": what, "name": item.name, "resolution": resolution.value}
    if container:
        entry["container"] = container
    record.conflicts.append(entry)
    if resolution is OnConflict.KEEP and not same and values is not None and notes is not None:
        notes.kept(policy=policy, what=what, name=item.name, container=container, ours=values[0], theirs=values[1])
    return resolution is OnConflict.REPLACE


def apply_policy(policy: CompiledInjection, s: Sections, record: PolicyRecord, ctx: TemplateContext,
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
            theirs = next((c for c in (*s.init, *s.containers) if name_of(c) == item.name), None)
            if not resolve_conflict(item, "container", record, policy=policy.name,
                             theirs=f"container {item.name!r} in {where}", notes=s.notes,
                             values=None if theirs is None else (container, theirs)):
                continue
            s.init = [c for c in s.init if name_of(c) != item.name]
            s.containers = [c for c in s.containers if name_of(c) != item.name]
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
            if volume in s.volumes:
                # Defined alike by an earlier policy: one volume both policies use, no conflict.
                record.volumes.append(item.name)
            else:
                record.conflicts.append({"kind": "volume", "name": item.name, "resolution": "Keep",
                                         "with": f"policy {owner}"})
            continue
        theirs = next((v for v in s.volumes if name_of(v) == item.name), None)
        if theirs is not None:
            if not resolve_conflict(item, "volume", record, policy=policy.name,
                             theirs=f"volume {item.name!r} in spec.volumes", notes=s.notes,
                             values=(volume, theirs)):
                continue
            s.volumes = [v for v in s.volumes if name_of(v) != item.name]
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
                                      if s.injected_names.get(name_of(c)) == policy.name])

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
                raise Deny(f"policy {policy.name} sets label {key!r} to {quoted(value)}, which is not a valid "
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


def _check_ports(policy: CompiledInjection, s: Sections, injected: list[str]) -> None:
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
            raise SkipPolicy(f"container {shown_name(clash.theirs)} already declares {clash.describe()}, "
                              f"which its container {clash.ours!r} declares")
    clash = clashes[0]
    owner = s.injected_names.get(clash.theirs)
    where = ("injected by this policy too" if owner == policy.name else f"injected by policy {owner}" if owner
             else "spec.initContainers" if clash.theirs in s.init_names else "spec.containers")
    place = "on the node" if clash.host else "in the pod's network"
    raise Deny(f"policy {policy.name} injects container {clash.ours!r} with {clash.describe()}, but container "
                f"{shown_name(clash.theirs)} ({where}) declares the same {clash.describe().rsplit(' ', 1)[0]}; "
                f"only one of them can listen on it {place}: change the pod's port, or ask the platform team "
                "to set onConflict: Skip on the policy's port")


def _inject_into(container: dict[str, Any], policy: CompiledInjection, record: PolicyRecord,
                 rendered: dict[int, Any], *, init: bool, s: Sections, budget: Budget,
                 sizes: dict[int, int] | None) -> dict[str, Any]:
    name = name_of(container)
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
            if not resolve_conflict(item, field_.kind, record, policy=policy.name, theirs=field_.theirs.format(item.name),
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
