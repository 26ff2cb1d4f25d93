"""Tolerant accessors for untrusted JSON (pods arrive as whatever a client sent): a
value of the wrong type reads as absent instead of raising."""

from __future__ import annotations

from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def dicts_in(value: Any) -> list[dict[str, Any]]:
    """The mapping entries of a list (containers, volumes, mounts); others are skipped."""
    return [item for item in as_list(value) if isinstance(item, dict)]


def str_map(value: Any) -> dict[str, str]:
    """String keys to string values only, as labels and annotations must be."""
    return {k: v for k, v in as_dict(value).items() if isinstance(k, str) and isinstance(v, str)}
