"""Load-time checks of `requires` between injection policies.

A policy is applied only after the policies it requires have been decided for the pod,
in the one order injection runs (priority, then name): a requirement must therefore
be an injection policy that runs earlier. A cycle can never hold that way; it is
reported as a cycle, which says more than an order error would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from webhook.policy.errors import PolicyError
from webhook.policy.injection import InjectionPolicy

FIELD = "spec.requires"


def _cycle(start: str, edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A path start -> ... -> start through `edges`, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for target in edges.get(name, ()):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def requirement_errors(injection: Sequence[InjectionPolicy], validation_names: set[str],
                       sources: Mapping[str, str]) -> list[PolicyError]:
    """Every unknown, cyclic or late requirement; `injection` is in run order."""
    errors: list[PolicyError] = []
    position = {p.metadata.name: i for i, p in enumerate(injection)}
    edges = {p.metadata.name: list(p.spec.requires) for p in injection}
    in_cycle: set[str] = set()
    for policy in injection:
        name = policy.metadata.name

        def error(message: str) -> None:
            errors.append(PolicyError(sources.get(name, "?"), None, message, policy=name, field=FIELD))

        for required in policy.spec.requires:
            if required == name:
                error("a policy cannot require itself")
            elif required in validation_names:
                error(f"{required!r} is a ValidationPolicy; requires names injection policies")
            elif required not in position:
                error(f"{required!r}: no injection policy has that name")
        cycle = None if name in in_cycle else _cycle(name, edges)
        if cycle is not None and len(cycle) > 2:
            in_cycle.update(cycle)
            error(f"requirements form a cycle: {' -> '.join(cycle)}")
            continue
        for required in policy.spec.requires:
            if required in position and required != name and name not in in_cycle \
                    and position[required] > position[name]:
                other = injection[position[required]]
                error(f"requires {required!r}, which runs after it (priority {other.spec.priority} against "
                      f"{policy.spec.priority}; equal priorities run in name order): give {required} "
                      "the lower priority")
    return errors
