"""Port clashes in an injected pod.

Every container of a pod shares its network namespace, so two containers that run at
the same time cannot listen on the same port and protocol (the second fails to bind,
often only as a crash loop long after admission); two host ports clash on the node.
The API server checks neither the first nor, for a webhook's additions, in time to
name who added what: injection checks the containers it adds against the rest.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from webhook.jsonvalue import as_str, dicts_in

# An empty host IP, like these, binds every address of the node.
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class PortClash:
    ours: str          # an injected container
    theirs: str        # the other container
    port: int
    protocol: str
    host: bool         # a hostPort clash on the node, not a containerPort one in the pod

    def describe(self) -> str:
        return f"{'host port' if self.host else 'port'} {self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class _Port:
    port: int
    protocol: str
    host: bool
    host_ip: str


def _ports(container: dict[str, Any]) -> Iterator[_Port]:
    """The ports a container declares; malformed entries are the API server's to refuse."""
    for entry in dicts_in(container.get("ports")):
        protocol = as_str(entry.get("protocol")) or "TCP"
        number = entry.get("containerPort")
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            yield _Port(number, protocol, False, "")
        host = entry.get("hostPort")
        if isinstance(host, int) and not isinstance(host, bool) and host > 0:
            yield _Port(host, protocol, True, as_str(entry.get("hostIP")))


def _same(a: _Port, b: _Port) -> bool:
    if (a.port, a.protocol, a.host) != (b.port, b.protocol, b.host):
        return False
    return not a.host or a.host_ip in _ANY_ADDRESS or b.host_ip in _ANY_ADDRESS or a.host_ip == b.host_ip


def _lifetimes(init: list[dict[str, Any]], containers: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """(name, first step, step after the last) of each container, in start order. Init
    containers run one per step; a native sidecar (restartPolicy: Always) keeps running
    from its step on, as app containers do from after the last init container."""
    out: list[tuple[str, int, float]] = []
    for step, c in enumerate(init):
        out.append((as_str(c.get("name")), step, float("inf") if c.get("restartPolicy") == "Always" else step + 1))
    out += [(as_str(c.get("name")), len(init), float("inf")) for c in containers]
    return out


def port_clashes(init: list[dict[str, Any]], containers: list[dict[str, Any]],
                 injected: Collection[str]) -> list[PortClash]:
    """Clashes between a port of a container named in `injected` and a port of another
    container running at the same time. `init` is in start order."""
    lifetimes = _lifetimes(init, containers)
    declared = [list(_ports(c)) for c in (*init, *containers)]
    clashes: list[PortClash] = []
    for i, (ours, start, end) in enumerate(lifetimes):
        if ours not in injected or not declared[i]:
            continue
        for j, (theirs, other_start, other_end) in enumerate(lifetimes):
            if j == i or (theirs in injected and j < i) or not declared[j]:
                continue   # a pair of injected containers is reported once
            if start >= other_end or other_start >= end:
                continue   # never running at the same time
            for mine in declared[i]:
                if any(_same(mine, other) for other in declared[j]):
                    clashes.append(PortClash(ours, theirs, mine.port, mine.protocol, mine.host))
    return clashes
