"""Structural rules the API server enforces on a pod, checked on the injected result so
that a policy mistake is a clear denial here rather than an opaque API server error."""

from __future__ import annotations

from collections import Counter
from typing import Any

from webhook.engine.pod import as_list


def _named(items: Any) -> list[dict[str, Any]]:
    return [i for i in as_list(items) if isinstance(i, dict)]


def _text(value: Any) -> str | None:
    """A name or path as a hashable key; JSON of the wrong type counts as absent."""
    return value if isinstance(value, str) else None


def pod_problems(spec: Any) -> set[str]:
    """Every breach of the rules below, as short messages (a set, to compare before/after)."""
    if not isinstance(spec, dict):
        return set()
    problems: set[str] = set()
    init, containers = _named(spec.get("initContainers")), _named(spec.get("containers"))
    ephemeral = _named(spec.get("ephemeralContainers"))
    # Names must be unique across all three lists.
    names = Counter(_text(c.get("name")) for c in (*init, *containers, *ephemeral))
    problems.update(f"container name {n!r} is used {k} times" for n, k in names.items() if k > 1)
    volumes = Counter(_text(v.get("name")) for v in _named(spec.get("volumes")))
    problems.update(f"volume name {n!r} is used {k} times" for n, k in volumes.items() if k > 1)
    for where, group in (("spec.initContainers", init), ("spec.containers", containers)):
        for container in group:
            cname = container.get("name")
            mounts = _named(container.get("volumeMounts"))
            for mount in mounts:
                if _text(mount.get("name")) not in volumes:
                    problems.add(f"{where}[{cname}] mounts volume {mount.get('name')!r}, which the pod does not define")
            paths = Counter(_text(m.get("mountPath")) for m in mounts)
            problems.update(f"{where}[{cname}] mounts {p!r} {k} times" for p, k in paths.items() if k > 1)
            for env in _named(container.get("env")):
                env_name = env.get("name")
                if not isinstance(env_name, str) or not env_name or "=" in env_name:
                    problems.add(f"{where}[{cname}] has an invalid env var name {env_name!r}")
            if where == "spec.containers" and "restartPolicy" in container:
                problems.add(f"{where}[{cname}] sets restartPolicy, which only init containers may set")
    return problems
