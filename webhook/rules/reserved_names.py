"""Reserved names: a pod's own container or volume must not take the name of one that an
injection policy adds (with onConflict: Deny, which would deny the pod at creation).

Which names are reserved for a pod, and whether a holder of one is the injected item
itself, is the caller's to say (`webhook.engine.reserved`): this module
only reports. A controller's pod template is never mutated, so there a reserved
name is always the user's own (`verify` is None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.jsonvalue import as_list, as_str
from webhook.rules.containers import ContainerRef, iter_containers
from webhook.core.finding import Finding

__all__ = ["ReservedName", "Verify", "check_reserved_names"]

ItemKind = Literal["container", "volume"]
# (what, the list it sits in, the entry) -> None when it is the injected item, else why not.
Verify = Callable[[ItemKind, str, Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class ReservedName:
    owner: str                # the injection policy that adds it; "" for a name the rule lists


def check_reserved_names(spec: Mapping[str, Any], *, containers: Mapping[str, ReservedName],
                         volumes: Mapping[str, ReservedName] | None = None,
                         verify: Verify | None = None, refs: Iterable[ContainerRef] | None = None) -> list[Finding]:
    """`refs`: the spec's containers, when the caller has already walked them."""
    findings: list[Finding] = []
    for c in iter_containers(spec) if refs is None else refs:
        owner = containers.get(c.name)
        if owner is not None:
            why = "" if verify is None else verify("container", c.field, c.raw)
            if why is not None:
                findings.append(Finding("reservedName", f"{c.path}.name",
                                        _message("container", c.name, owner, why), c.name))
    for index, raw in enumerate(as_list(spec.get("volumes"))):
        name = as_str(raw.get("name")) if isinstance(raw, dict) else ""
        owner = (volumes or {}).get(name) if name else None
        if owner is not None and isinstance(raw, dict):
            why = "" if verify is None else verify("volume", "volumes", raw)
            if why is not None:
                findings.append(Finding("reservedVolumeName", f"spec.volumes[{index}].name",
                                        _message("volume", name, owner, why)))
    return findings


def _message(what: ItemKind, name: str, owner: ReservedName, why: str) -> str:
    by = f'injection policy "{owner.owner}"' if owner.owner else "the platform"
    rename = "rename this container" if what == "container" else "rename this volume and its mounts"
    return f'{what} name "{name}" is reserved for the {what} that {by} injects; {rename}' + \
        (f" ({why})" if why else "")
