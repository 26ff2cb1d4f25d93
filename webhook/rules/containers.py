"""Walk a pod spec's containers tolerantly: garbage entries are skipped, never raised on.

Shared by the declarative rules so that every rule names containers and paths the
same way as the Pod Security checks: `spec.<field>[<name or index>]`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, NamedTuple

from webhook.core.jsonvalue import as_list, as_str

ContainerType = Literal["initContainers", "sidecars", "containers", "ephemeralContainers"]
# Same visiting order as the Pod Security checks (and upstream): init, regular, ephemeral.
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")


# A named tuple, built with the plain tuple constructor: every rule walks every container,
# and a frozen dataclass's __init__ cost about 0.8 µs per container (a named tuple's
# own __new__ half of that).
class ContainerRef(NamedTuple):
    field: str              # initContainers | containers | ephemeralContainers
    type: ContainerType     # as `field`, except native sidecars, which are "sidecars"
    name: str               # "" when the entry has no usable name
    path: str               # e.g. "spec.containers[app]"
    raw: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f'container "{self.name}"' if self.name else self.path


_new_ref = tuple.__new__


def iter_containers(spec: Mapping[str, Any]) -> Iterator[ContainerRef]:
    """Every container entry that is a mapping; other entries are treated as absent."""
    for field in CONTAINER_FIELDS:
        for index, raw in enumerate(as_list(spec.get(field))):
            if not isinstance(raw, dict):
                continue
            name = as_str(raw.get("name"))
            kind: ContainerType = field  # type: ignore[assignment]
            # A native sidecar is an init container with restartPolicy Always (GA in 1.33):
            # it runs for the pod's lifetime, so rules treat it as its own type.
            if field == "initContainers" and raw.get("restartPolicy") == "Always":
                kind = "sidecars"
            yield _new_ref(ContainerRef, (field, kind, name, f"spec.{field}[{name or index}]", raw))


def container_of(path: str) -> str:
    """The container name in a path such as `spec.containers[app].image`, or ""."""
    for field in CONTAINER_FIELDS:
        prefix = f"spec.{field}["
        if path.startswith(prefix):
            end = path.find("]", len(prefix))
            if end > 0:
                key = path[len(prefix):end]
                return "" if key.isdigit() else key
    return ""
