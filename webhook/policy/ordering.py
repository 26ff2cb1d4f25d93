"""The start order of injected init containers and native sidecars across all policies.

Default order: policy priority, then policy name, then position in the policy.
`before:`/`after:` on a container add edges; a cycle or an edge to a container no
policy injects is a load error.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from webhook.policy.errors import PolicyError
from webhook.policy.injection import InjectedContainer, InjectionPolicy


def ordered_init_containers(policy: InjectionPolicy) -> list[InjectedContainer]:
    """The containers a policy places among init containers (native sidecars included)."""
    inject = policy.spec.inject
    return [*inject.init_containers, *(s for s in inject.sidecars if s.native)]


def init_container_order(policies: list[InjectionPolicy], sources: Mapping[str, str],
                         errors: list[PolicyError]) -> dict[str, int]:
    """Rank of each injected init container; appends to `errors` on cycles or unknown names."""
    default_rank: dict[str, tuple[int, str, int]] = {}
    owner: dict[str, str] = {}
    for policy in policies:
        for index, container in enumerate(ordered_init_containers(policy)):
            # The same name from two policies is resolved at admission (conflict rules);
            # for ordering, the first policy in priority order decides.
            if container.name not in default_rank:
                default_rank[container.name] = (policy.spec.priority, policy.metadata.name, index)
                owner[container.name] = policy.metadata.name
    edges: dict[str, set[str]] = {name: set() for name in default_rank}
    for policy in policies:
        for container in ordered_init_containers(policy):
            for field, targets in (("before", container.before), ("after", container.after)):
                for target in targets:
                    if target not in default_rank:
                        errors.append(PolicyError(
                            sources.get(policy.metadata.name, "?"), None,
                            f"{container.name}.{field} names {target!r}, which no policy injects "
                            "as an init container or native sidecar",
                            policy=policy.metadata.name, field=f"spec.inject.{field}"))
                        continue
                    first, then = (container.name, target) if field == "before" else (target, container.name)
                    edges[first].add(then)
    for policy in policies:
        for sidecar in policy.spec.inject.sidecars:
            # A classic sidecar's `after` always holds (app containers start after every init
            # container); only a name nothing injects is worth an error, as for the others.
            for target in sidecar.after if not sidecar.native else ():
                if target not in default_rank:
                    errors.append(PolicyError(
                        sources.get(policy.metadata.name, "?"), None,
                        f"{sidecar.name}.after names {target!r}, which no policy injects "
                        "as an init container or native sidecar",
                        policy=policy.metadata.name, field="spec.inject.after"))
    indegree = {name: 0 for name in default_rank}
    for targets in edges.values():
        for target in targets:
            indegree[target] += 1
    ready = [(default_rank[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: dict[str, int] = {}
    while ready:
        _, name = heapq.heappop(ready)
        order[name] = len(order)
        for target in edges[name]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, (default_rank[target], target))
    stuck = sorted(n for n in default_rank if n not in order)
    if stuck:
        policies_involved = sorted({owner[n] for n in stuck})
        errors.append(PolicyError(
            ", ".join(sorted({sources.get(p, "?") for p in policies_involved})), None,
            f"before/after ordering has a cycle among: {', '.join(stuck)}",
            policy=",".join(policies_involved)))
    return order
