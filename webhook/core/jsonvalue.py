"""Tolerant accessors for untrusted JSON (pods arrive as whatever a client sent): a
value of the wrong type reads as absent instead of raising.

The one set of them: the engine, the rules (Pod Security included) and the Kubernetes
client read pods and namespaces through these. Where absence is not a safe reading
(a container entry that is not an object), the caller decides explicitly; see
`webhook.rules.containers`.
"""

from __future__ import annotations

from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int | None:
    """An integer, or None; a JSON true is not the number 1 (bool is an int in Python)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def dicts_in(value: Any) -> list[dict[str, Any]]:
    """The mapping entries of a list (volumes, mounts, ports); others are skipped. On a
    container list only after the engine has denied malformed ones (`webhook.rules.containers`),
    where it then skips nothing."""
    return [item for item in as_list(value) if isinstance(item, dict)]


def str_map(value: Any) -> dict[str, str]:
    """String keys to string values only, as labels and annotations must be."""
    return {k: v for k, v in as_dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value, for messages: object, array, string, ..."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
