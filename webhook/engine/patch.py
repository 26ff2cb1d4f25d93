"""RFC 6902 operations built from what changed in the few places injection touches.

Never a diff of whole objects: each helper compares one list or map that the
engine rewrote, and element identity short-circuits the comparison of everything
it left alone. Operations only add or remove inside parents known to exist, which
is what evanphx/json-patch (used by the API server) requires.
"""

from __future__ import annotations

from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """JSON pointer escaping (RFC 6901): `~` first, then `/`."""
    return token.replace("~", "~0").replace("/", "~1")


def list_ops(path: str, old: list[Any] | None, new: list[Any]) -> list[Op]:
    """`add .../-` for elements appended; `add .../0`, `.../1`... for elements inserted at the
    front, then `replace .../N` for the few old elements changed in place (env vars); a
    replacement of the whole list otherwise."""
    if old is None:
        return [{"op": "add", "path": path, "value": new}] if new else []
    if new == old:
        return []
    n_old = len(old)
    if len(new) > n_old and new[:n_old] == old:
        end = f"{path}/-"  # one string shared by the operations
        return [{"op": "add", "path": end, "value": v} for v in new[n_old:]]
    front = len(new) - n_old
    if front < 0:
        return [{"op": "replace", "path": path, "value": new}]
    if n_old == 0 or new[front:] == old:
        changed: list[int] = []
    else:
        # Elements left alone are shared, so `is` settles most comparisons.
        changed = [i for i, (o, n) in enumerate(zip(old, new[front:])) if o is not n and o != n]
        if 2 * len(changed) > n_old and n_old > 1:
            return [{"op": "replace", "path": path, "value": new}]
    ops = [{"op": "add", "path": f"{path}/{i}", "value": v} for i, v in enumerate(new[:front])]
    ops.extend({"op": "replace", "path": f"{path}/{front + i}", "value": new[front + i]} for i in changed)
    return ops


def map_ops(path: str, old: dict[str, Any] | None, new: dict[str, Any]) -> list[Op]:
    if old is None:
        return [{"op": "add", "path": path, "value": new}] if new else []
    ops: list[Op] = []
    for key, value in new.items():
        if key not in old:
            ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
        elif old[key] != value:
            ops.append({"op": "replace", "path": f"{path}/{escape(key)}", "value": value})
    ops.extend({"op": "remove", "path": f"{path}/{escape(key)}"} for key in old if key not in new)
    return ops


def container_list_ops(path: str, old: list[Any] | None, new: list[dict[str, Any]]) -> list[Op]:
    """Per-field operations for the containers that kept their place (injection added env
    or mounts), `add .../-` for containers appended after them, a list operation otherwise."""
    if old is None or len(new) < len(old) or any(
            not isinstance(o, dict) or o.get("name") != n.get("name") for o, n in zip(old, new)):
        return list_ops(path, old, new)
    ops: list[Op] = []
    for index, (before, after) in enumerate(zip(old, new)):
        if before is not after:
            ops.extend(_field_ops(f"{path}/{index}", before, after))
    end = f"{path}/-"
    ops.extend({"op": "add", "path": end, "value": v} for v in new[len(old):])
    return ops


_ABSENT = object()


def _field_ops(base: str, before: dict[str, Any], after: dict[str, Any]) -> list[Op]:
    ops: list[Op] = []
    for key, value in after.items():
        old = before.get(key, _ABSENT)
        if old is value:
            continue  # what injection left alone is shared, not copied: no need to compare it
        if old is _ABSENT:
            ops.append({"op": "add", "path": f"{base}/{escape(key)}", "value": value})
        elif old != value:
            if isinstance(value, list) and isinstance(old, list):
                ops.extend(list_ops(f"{base}/{escape(key)}", old, value))
            else:
                ops.append({"op": "replace", "path": f"{base}/{escape(key)}", "value": value})
    if not before.keys() <= after.keys():
        ops.extend({"op": "remove", "path": f"{base}/{escape(key)}"} for key in before if key not in after)
    return ops
