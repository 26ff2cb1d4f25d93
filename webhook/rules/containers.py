"""The one walk over a pod spec's containers, and its rule for malformed entries.

Every rule, Pod Security included, names containers and paths the same way:
`spec.<field>[<name or index>]`, in upstream's visiting order (init, regular, ephemeral).

Malformed entries fail closed. A container entry that is not a JSON object, or a
container field that is neither absent, null nor a list, can hide a container from
every check; the API server never sends one (it decodes pods into typed structs), but
anything in the cluster can call the webhook, and the offline commands read files.
So:

- the engine denies such a pod at both endpoints before any policy runs
  (`malformed_containers` says what is wrong; `webhook.engine.pod_rules` words the denial);
- the walker never skips an entry: a non-object one is walked as an empty, nameless
  container (`malformed=True`), so a rule called on its own still checks it and reports
  whatever an empty container breaks (no image, no securityContext, ...). A field that
  is not a list has no entries to walk; only `malformed_containers` reports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

from webhook.core.jsonvalue import json_type

ContainerType = Literal["initContainers", "sidecars", "containers", "ephemeralContainers"]
# Same visiting order as the Pod Security checks (and upstream): init, regular, ephemeral.
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
# What a malformed entry reads as: read-only, so no rule can write into a shared value.
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# A named tuple, built with the plain tuple constructor: every rule walks every container,
# and a named tuple is the cheapest record to build (see docs/performance.md).
class ContainerRef(NamedTuple):
    field: str              # initContainers | containers | ephemeralContainers
    type: ContainerType     # as `field`, except native sidecars, which are "sidecars"
    name: str               # "" when the entry has no usable name
    path: str               # e.g. "spec.containers[app]"
    raw: Mapping[str, Any]  # the entry; empty for a malformed one
    malformed: bool         # the entry is not a JSON object

    @property
    def label(self) -> str:
        return f'container "{self.name}"' if self.name else self.path


_new_ref = tuple.__new__


def iter_containers(spec: Mapping[str, Any]) -> Iterator[ContainerRef]:
    """Every entry of the container lists, a malformed one as an empty container."""
    for field in CONTAINER_FIELDS:
        entries = spec.get(field)
        if not isinstance(entries, list):
            continue
        for index, raw in enumerate(entries):
            if not isinstance(raw, dict):
                yield _new_ref(ContainerRef, (field, field, "", f"spec.{field}[{index}]", _EMPTY, True))
                continue
            name = raw.get("name")
            if not isinstance(name, str):
                name = ""
            kind: ContainerType = field  # type: ignore[assignment]
            # A native sidecar is an init container with restartPolicy Always (GA in 1.33):
            # it runs for the pod's lifetime, so rules treat it as its own type.
            if field == "initContainers" and raw.get("restartPolicy") == "Always":
                kind = "sidecars"
            yield _new_ref(ContainerRef, (field, kind, name, f"spec.{field}[{name or index}]", raw, False))


def malformed_containers(spec: Mapping[str, Any]) -> list[str]:
    """What is malformed in the container lists, one line per field or entry (path and
    the JSON type found); empty for a well-formed spec."""
    # Every admission passes here: a plain scan first, the messages only on a find.
    for field in CONTAINER_FIELDS:
        entries = spec.get(field)
        if isinstance(entries, list):
            for raw in entries:
                if not isinstance(raw, dict):
                    return _describe_malformed(spec)
        elif entries is not None:
            return _describe_malformed(spec)
    return []


def _describe_malformed(spec: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for field in CONTAINER_FIELDS:
        entries = spec.get(field)
        if entries is None:
            continue
        if not isinstance(entries, list):
            found.append(f"spec.{field} is a JSON {json_type(entries)}, not a list of containers")
            continue
        for index, raw in enumerate(entries):
            if not isinstance(raw, dict):
                found.append(f"spec.{field}[{index}] is a JSON {json_type(raw)}, not a container object")
    return found
