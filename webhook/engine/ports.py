"""Port clashes in an injected pod.

Every container of a pod shares its network namespace, so two containers that run at
the same time cannot listen on the same port and protocol (the second fails to bind,
often only as a crash loop long after admission); two host ports clash on the node.
The API server accepts the first, and refuses the second without saying that a webhook
added one of them: injection checks the containers it adds against the rest.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from webhook.core.jsonvalue import as_list, as_str

# An empty host IP, like these, binds every address of the node.
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
_FOREVER = float("inf")


@dataclass(frozen=True, slots=True)
class PortClash:
    ours: str          # an injected container
    theirs: str        # the other container
    port: int
    protocol: str
    host: bool         # a hostPort clash on the node, not a containerPort one in the pod

    def describe(self) -> str:
        return f"{'host port' if self.host else 'port'} {self.port}/{self.protocol}"


# (number, protocol, is a host port, host IP): what a container declares, in a tuple for speed
_Port = tuple[int, str, bool, str]


def _ports(container: dict[str, Any]) -> list[_Port]:
    """The ports a container declares; malformed entries are the API server's to refuse."""
    out: list[_Port] = []
    for entry in as_list(container.get("ports")):
        if not isinstance(entry, dict):
            continue
        protocol = as_str(entry.get("protocol")) or "TCP"
        number = entry.get("containerPort")
        if type(number) is int and number > 0:   # not bool, which is an int too
            out.append((number, protocol, False, ""))
        host = entry.get("hostPort")
        if type(host) is int and host > 0:
            out.append((host, protocol, True, as_str(entry.get("hostIP"))))
    return out


def _same(a: _Port, b: _Port) -> bool:
    if a[:3] != b[:3]:
        return False
    return not a[2] or a[3] in _ANY_ADDRESS or b[3] in _ANY_ADDRESS or a[3] == b[3]


def _lifetime(step: int, everyone: list[dict[str, Any]], init_count: int) -> tuple[int, float]:
    """(first step, step after the last) of the container at `step`. Init containers run
    one per step; a native sidecar (restartPolicy: Always) keeps running from its step
    on, as app containers do from after the last init container."""
    if step >= init_count:
        return init_count, _FOREVER
    if everyone[step].get("restartPolicy") == "Always":
        return step, _FOREVER
    return step, step + 1


def port_clashes(init: list[dict[str, Any]], containers: list[dict[str, Any]],
                 injected: Collection[str]) -> list[PortClash]:
    """Clashes between a port of a container named in `injected` and a port of another
    container running at the same time. `init` is in start order."""
    everyone = [*init, *containers]
    ours = {i: _ports(c) for i, c in enumerate(everyone) if c.get("ports") and as_str(c.get("name")) in injected}
    wanted = {p[:3] for ports in ours.values() for p in ports}
    if not wanted:
        return []   # the common case: what was injected declares no port
    clashes: list[PortClash] = []
    for j, container in enumerate(everyone):
        if not container.get("ports"):
            continue
        candidates = [p for p in (ours[j] if j in ours else _ports(container)) if p[:3] in wanted]
        for i, declared in ours.items() if candidates else ():
            if j == i or (j in ours and j < i):
                continue   # a pair of injected containers is reported once
            start, end = _lifetime(i, everyone, len(init))
            other_start, other_end = _lifetime(j, everyone, len(init))
            if start >= other_end or other_start >= end:
                continue   # never running at the same time
            clashes += [PortClash(as_str(everyone[i].get("name")), as_str(container.get("name")), mine[0], mine[1],
                                  mine[2]) for mine in declared if any(_same(mine, other) for other in candidates)]
    return clashes
