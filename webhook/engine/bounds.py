"""Bounds on the work and the answer of one admission request.

A pod's author is untrusted, and anything in the cluster can reach the Service: a
request must not cost more memory or time than a real pod does, whatever it holds.

- A pod (or a controller's pod template) with more containers than `max_containers`
  is denied before it is evaluated.
- At mutation, the size of what injection adds is estimated as it is added; a pod
  that would grow past `max_object_bytes` is denied before the patch is serialised.
- Values a template copies from the pod are bounded (`max_copied_value`; a label's
  by what Kubernetes allows a label value), see webhook/policy/template.py.
- The engine checks the request's deadline as it goes (`check_deadline`): a heavy
  request ends in `DeadlineExceeded`, which the server answers by its failure rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.policy.template import DEFAULT_MAX_COPIED_VALUE
from webhook.rules.containers import CONTAINER_FIELDS

# Far above any real pod (a few containers; service meshes and log agents add a handful),
# far below what makes one request costly: every rule and every injected env var or
# mount is work per container.
DEFAULT_MAX_CONTAINERS = 1000
# The API server's default limit on a write request's body (MaxRequestBodyBytes in
# k8s.io/apiserver/pkg/server/config.go): twice etcd's default 1.5 MiB request limit,
# because the JSON it accepts shrinks to protobuf in etcd. A pod larger than this in
# JSON is one no client could have sent the API server; etcd refuses to store most.
DEFAULT_MAX_OBJECT_BYTES = 3 * 1024 * 1024
# Warnings the API server passes on: it may cut one over 256 characters and drops them
# past 4096 characters from all webhooks together; keep room for the others.
MAX_WARNING_CHARS = 256
MAX_WARNINGS_TOTAL_CHARS = 3072
# A denial message is shown by kubectl and kept in the audit log.
MAX_MESSAGE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request bounds, set by `webhook serve` options; the defaults everywhere else."""

    max_containers: int = DEFAULT_MAX_CONTAINERS
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    max_copied_value: int = DEFAULT_MAX_COPIED_VALUE


DEFAULT_LIMITS = Limits()


class DeadlineExceeded(Exception):
    """The request's deadline passed while the engine was deciding it."""


def check_deadline(deadline: float | None) -> None:
    """Raise DeadlineExceeded once `time.perf_counter()` is past `deadline` (None: no deadline)."""
    if deadline is not None and time.perf_counter() > deadline:
        raise DeadlineExceeded("the request's deadline passed before a decision")


def container_count(spec: Mapping[str, Any]) -> int:
    """Entries in the pod spec's container lists, of all kinds (counted as sent: the
    parsed JSON's list lengths, before anything is built from them)."""
    count = 0
    for key in CONTAINER_FIELDS:
        value = spec.get(key)
        if value.__class__ is list:
            count += len(value)
    return count


def too_many_containers(spec: Mapping[str, Any], limits: Limits, *, where: str = "the pod") -> str | None:
    """The denial for a spec over `limits.max_containers`, or None."""
    count = container_count(spec)
    if count <= limits.max_containers:
        return None
    return (f"{where} has {count} containers (initContainers, containers and ephemeralContainers "
            f"together); this webhook admits at most {limits.max_containers} per pod")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def bounded_warnings(warnings: Iterable[str]) -> tuple[str, ...]:
    """Each warning cut to MAX_WARNING_CHARS, and no more than MAX_WARNINGS_TOTAL_CHARS in
    all (the last one then says how many were left out)."""
    out: list[str] = []
    used = 0
    items = list(warnings)
    for index, text in enumerate(items):
        text = clip(text, MAX_WARNING_CHARS)
        if used + len(text) > MAX_WARNINGS_TOTAL_CHARS - 64:  # 64: room for the tail
            out.append(f"… and {len(items) - index} more warnings")
            break
        out.append(text)
        used += len(text)
    return tuple(out)

