"""The injection ledger: annotation `runtime.platform.io/status`, JSON describing what
each applied policy added. It makes injection idempotent: on reinvocation the
engine strips what the ledger says it added and renders again, so a second pass
adds nothing when nothing changed. Its content is deterministic (no timestamps)
for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.policy.common import ANNOTATION_PREFIX

LEDGER_ANNOTATION = f"{ANNOTATION_PREFIX}/status"
LEDGER_VERSION = 1


@dataclass
class PolicyRecord:
    name: str
    revision: str
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    env: dict[str, list[str]] = field(default_factory=dict)       # container -> env names
    mounts: dict[str, list[str]] = field(default_factory=dict)    # container -> mount paths
    labels: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "revision": self.revision}
        for key in ("containers", "volumes", "env", "mounts", "labels", "annotations"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.conflicts:
            # A canonical order: conflicts carried over from an earlier pass (Replace)
            # must not reorder the annotation, or reinvocation would change it.
            out["conflicts"] = sorted(self.conflicts, key=lambda c: sorted(c.items()))
        return out


@dataclass
class Ledger:
    policies: list[PolicyRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def record(self, name: str) -> PolicyRecord | None:
        return next((p for p in self.policies if p.name == name), None)

    def container_owners(self) -> dict[str, str]:
        """Injected container name -> the policy that injected it."""
        return {c: record.name for record in self.policies for c in record.containers}

    def dumps(self) -> str:
        doc: dict[str, Any] = {"version": LEDGER_VERSION, "policies": [p.to_json() for p in self.policies]}
        if self.skipped:
            doc["skipped"] = self.skipped
        return orjson.dumps(doc).decode()


class LedgerError(ValueError):
    pass


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LedgerError("expected a list of strings")
    return value


def _str_list_map(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise LedgerError("expected a mapping")
    return {str(k): _str_list(v) for k, v in value.items()}


def parse_ledger(text: str) -> Ledger:
    """Parse the annotation; raises LedgerError when it is not a ledger we wrote."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LedgerError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != LEDGER_VERSION:
        raise LedgerError(f"expected an object with version {LEDGER_VERSION}")
    policies = doc.get("policies", [])
    if not isinstance(policies, list):
        raise LedgerError("policies must be a list")
    records = []
    for raw in policies:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise LedgerError("policy entry without a name")
        conflicts = raw.get("conflicts", [])
        if not isinstance(conflicts, list) or not all(isinstance(c, dict) for c in conflicts):
            raise LedgerError("conflicts must be a list of objects")
        records.append(PolicyRecord(
            name=raw["name"], revision=str(raw.get("revision", "")),
            containers=_str_list(raw.get("containers", [])), volumes=_str_list(raw.get("volumes", [])),
            env=_str_list_map(raw.get("env", {})), mounts=_str_list_map(raw.get("mounts", {})),
            labels=_str_list(raw.get("labels", [])), annotations=_str_list(raw.get("annotations", [])),
            conflicts=[{str(k): str(v) for k, v in c.items()} for c in conflicts]))
    return Ledger(policies=records)


def ledger_of(annotations: Mapping[str, Any]) -> Ledger:
    """The ledger a pod's annotations carry; empty when absent or unreadable (an
    unreadable ledger vouches for nothing)."""
    text = annotations.get(LEDGER_ANNOTATION)
    if not isinstance(text, str):
        return Ledger()
    try:
        return parse_ledger(text)
    except LedgerError:
        return Ledger()
