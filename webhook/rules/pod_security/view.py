"""The pod as the Pod Security checks see it: metadata, spec, and every container once,
with the helpers both levels share.

Containers come from the package's one walker (`webhook.rules.containers`): a
container entry that is not an object is checked as an empty container, so it fails
every restricted check that needs a field set. A missing, null or wrongly-typed field
counts as unset (`webhook.core.jsonvalue`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from webhook.core.finding import Finding
from webhook.core.jsonvalue import as_dict, as_list, as_str
from webhook.rules.containers import iter_containers


def q(value: str) -> str:
    """Double-quote a value the way upstream's %q / joinQuote do (close enough)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def list_key(name: Any, index: int) -> str:
    """List element selector for paths: the element's name if it has one, else its index."""
    return name if isinstance(name, str) and name else str(index)


# A named tuple built with the plain tuple constructor, like the walker's ContainerRef:
# one is made for every container of every pod checked.
class ContainerView(NamedTuple):
    name: str   # "" when the entry has no usable name
    path: str   # e.g. "spec.containers[app]"
    label: str  # e.g. 'container "app"', used in messages
    raw: Mapping[str, Any]
    # The securityContext, read once: a dozen checks look at it for every container.
    sc: Mapping[str, Any]


@dataclass(frozen=True)
class PodView:
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]
    containers: tuple[ContainerView, ...]

    @property
    def psc(self) -> Mapping[str, Any]:
        return as_dict(self.spec.get("securityContext"))

    @property
    def is_windows(self) -> bool:
        return as_dict(self.spec.get("os")).get("name") == "windows"

    @property
    def in_user_namespace(self) -> bool:
        # Only an explicit false opts in; unset means host user namespace.
        return self.spec.get("hostUsers") is False


_new_view = tuple.__new__


def make_pod(metadata: Any, spec: Any) -> PodView:
    spec_map = as_dict(spec)
    containers = tuple(
        # A nameless entry is labelled by its list position without "spec.", as upstream does.
        _new_view(ContainerView, (c.name, c.path, f"container {q(c.name)}" if c.name else c.path[5:], c.raw,
                                  as_dict(c.raw.get("securityContext"))))
        for c in iter_containers(spec_map))
    return PodView(metadata=as_dict(metadata), spec=spec_map, containers=containers)


def volumes(pod: PodView) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield (path, quoted name, volume) for each entry of spec.volumes."""
    for i, raw in enumerate(as_list(pod.spec.get("volumes"))):
        v = as_dict(raw)
        name = v.get("name")
        yield f"spec.volumes[{list_key(name, i)}]", q(list_key(name, i)), v


def added_capabilities(c: ContainerView) -> list[str]:
    caps = as_dict(c.sc.get("capabilities"))
    return [cap for cap in as_list(caps.get("add")) if isinstance(cap, str)]


def unmasked_proc_mounts(pod: PodView, check: str) -> Iterator[Finding]:
    # Only an unset procMount or "Default" is allowed.
    for c in pod.containers:
        proc_mount = c.sc.get("procMount")
        if isinstance(proc_mount, str) and proc_mount != "Default":
            yield Finding(
                check,
                f"{c.path}.securityContext.procMount",
                f"procMount: {c.label} must not set securityContext.procMount to {q(proc_mount)}",
                c.name,
            )


SECCOMP_ALLOWED: Final = frozenset({"RuntimeDefault", "Localhost"})


def seccomp_type(sc: Mapping[str, Any]) -> str | None:
    """Seccomp profile type: None if no profile is set, "" if it has no type."""
    profile = sc.get("seccompProfile")
    return as_str(as_dict(profile).get("type")) if isinstance(profile, dict) else None


def seccomp_bad_msg(who: str, value: str) -> str:
    return f"seccompProfile: {who} must not set securityContext.seccompProfile.type to {q(value)}"
