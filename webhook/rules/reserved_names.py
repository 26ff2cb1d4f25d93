"""Reserved container names: a pod's own container must not take the name of a
container that an injection policy adds.

A container of a reserved name counts as the injected one (and passes) when the
injection ledger lists it (the caller reads the ledger and passes `injected`), or
when its image is exactly the image the policy injects. A controller's pod
template is never mutated, so there a reserved name is always the user's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.rules.containers import iter_containers
from webhook.rules.finding import Finding

__all__ = ["ReservedName", "check_reserved_names"]


@dataclass(frozen=True)
class ReservedName:
    owner: str                # the injection policy that adds it; "" for a name the rule lists
    image: str | None = None  # the injected image when it is fixed (not templated)


def check_reserved_names(spec: Mapping[str, Any], *, reserved: Mapping[str, ReservedName],
                         injected: frozenset[str] = frozenset(), is_template: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    for c in iter_containers(spec):
        owner = reserved.get(c.name)
        if owner is None:
            continue
        if not is_template:
            if c.name in injected:
                continue
            if owner.image is not None and c.raw.get("image") == owner.image:
                continue
        by = f'injection policy "{owner.owner}"' if owner.owner else "the platform"
        findings.append(Finding("reservedName", f"{c.path}.name",
                                f'container name "{c.name}" is reserved for the container that {by} '
                                "injects; rename this container", c.name))
    return findings
