"""Structural rules the API server enforces on a pod.

- Before any policy runs, at both endpoints: container lists must hold only objects
  (`malformed_denial`; the rule is `webhook.rules.containers`'s).
- On the injected result (`pod_problems`), so that a policy mistake is a clear denial
  here rather than an opaque API server error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from webhook.core.jsonvalue import dicts_in
from webhook.rules.containers import malformed_containers

# Entries named in a denial: the first few say what is wrong; a pod may hold a thousand.
_SHOWN_MALFORMED = 3


def malformed_denial(spec: Mapping[str, Any], *, prefix: str = "") -> str | None:
    """The denial for a spec whose container lists hold something other than objects, or
    None. `prefix` places the paths in the request's object (`spec.template.`)."""
    found = malformed_containers(spec)
    if not found:
        return None
    shown = "; ".join(prefix + line for line in found[:_SHOWN_MALFORMED])
    more = f"; and {len(found) - _SHOWN_MALFORMED} more" if len(found) > _SHOWN_MALFORMED else ""
    return f"malformed pod: {shown}{more} (every container must be a JSON object)"


def _text(value: Any) -> str | None:
    """A name or path as a hashable key; JSON of the wrong type counts as absent."""
    return value if isinstance(value, str) else None


def _repeated(keys: list[str | None]) -> dict[str | None, int]:
    """Keys that occur more than once, with their counts; cheap when there are none."""
    if len(set(keys)) == len(keys):
        return {}
    return {k: n for k, n in Counter(keys).items() if n > 1}


def pod_problems(spec: Any) -> set[str]:
    """Every breach of the rules below, as short messages (a set, to compare before/after).
    Env var names are not checked here: injected ones are validated at policy load, and
    walking every env list twice per admission costs more than the rest of injection."""
    if not isinstance(spec, dict):
        return set()
    problems: set[str] = set()
    init, containers = dicts_in(spec.get("initContainers")), dicts_in(spec.get("containers"))
    ephemeral = dicts_in(spec.get("ephemeralContainers"))
    # Names must be unique across all three lists.
    names = [_text(c.get("name")) for c in (*init, *containers, *ephemeral)]
    problems.update(f"container name {n!r} is used {k} times" for n, k in _repeated(names).items())
    volume_list = [_text(v.get("name")) for v in dicts_in(spec.get("volumes"))]
    problems.update(f"volume name {n!r} is used {k} times" for n, k in _repeated(volume_list).items())
    volumes = set(volume_list)
    for where, group in (("spec.initContainers", init), ("spec.containers", containers)):
        for container in group:
            # Every container of every pod passes here: a plain loop, messages only on a breach.
            mounts = container.get("volumeMounts")
            if isinstance(mounts, list) and mounts:
                paths = []
                for mount in mounts:
                    if isinstance(mount, dict):
                        name, path = mount.get("name"), mount.get("mountPath")
                        if (name if isinstance(name, str) else None) not in volumes:
                            problems.add(f"{where}[{container.get('name')}] mounts volume {name!r}, "
                                         "which the pod does not define")
                        paths.append(path if isinstance(path, str) else None)  # as _text reads it
                problems.update(f"{where}[{container.get('name')}] mounts {p!r} {k} times"
                                for p, k in _repeated(paths).items())
            if where == "spec.containers" and "restartPolicy" in container:
                problems.add(f"{where}[{container.get('name')}] sets restartPolicy, which only init containers may set")
    return problems
