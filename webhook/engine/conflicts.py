"""What the pod kept against a policy, told to the pod's author as admission warnings.

With `onConflict: Keep` the pod's own env var, mount, volume, container, label or
annotation wins over the policy's. That is often a mistake the author cannot see (an
app told `SERVICE_NAME=checkout-v2` while its identity says `checkout`, a log shipper
reading a volume the app never writes), so each such outcome becomes a warning, which
kubectl prints, naming the container, the item and both values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.core.jsonvalue import as_str, dicts_in

# The API server cuts each warning to 256 characters once a request's warnings pass 4 KiB
# (k8s.io/apiserver endpoints/filters/warning.go): short values, and a bounded count.
MAX_VALUE_CHARS = 60
MAX_WARNINGS = 12


def same_item(what: str, ours: Any, theirs: Any) -> bool:
    """Whether the pod's item already is what the policy would inject: no real clash."""
    if what == "mount":
        return isinstance(theirs, dict) and isinstance(ours, dict) and all(
            theirs.get(k) == ours.get(k) for k in ("name", "subPath", "subPathExpr"))
    if what == "volume":
        return isinstance(theirs, dict) and theirs == ours
    if what == "env":
        return theirs == ours or _defaulted_env(theirs) == _defaulted_env(ours)
    return False   # a container is never taken for ours; labels compare their values before


def _defaulted_env(entry: Any) -> Any:
    """An env entry as the API server stores it: a `fieldRef` gets `apiVersion: v1`, so a
    pod from a Deployment holds `{apiVersion: v1, fieldPath: metadata.name}` where a policy
    writes `{fieldPath: metadata.name}`: the same value, no clash."""
    if not isinstance(entry, dict) or not isinstance(entry.get("valueFrom"), dict):
        return entry
    field_ref = entry["valueFrom"].get("fieldRef")
    if not isinstance(field_ref, dict) or "apiVersion" in field_ref:
        return entry
    return {**entry, "valueFrom": {**entry["valueFrom"], "fieldRef": {"apiVersion": "v1", **field_ref}}}


def shown(value: Any) -> str:
    """A value as JSON, cut short; JSON escapes control characters, so a value cannot
    break the warning's line."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if value is not None else "nothing"
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."


def shown_name(name: str) -> str:
    """A name from the pod, quoted and cut: the API server checks names only after
    mutating admission, so one can be as long as the request allows."""
    return repr(name) if len(name) <= 63 else repr(name[:60] + "...")


# valueFrom sources, and the fields that say what each one reads
_SOURCES = {"fieldRef": ("fieldPath",), "resourceFieldRef": ("containerName", "resource"),
            "secretKeyRef": ("name", "key"), "configMapKeyRef": ("name", "key")}


def _env_value(entry: Any) -> str:
    """An env var's value for a warning: its text as JSON, or what its valueFrom reads."""
    if not isinstance(entry, dict):
        return "nothing"
    if "value" in entry or not isinstance(entry.get("valueFrom"), dict):
        return shown(entry.get("value", ""))
    for source, fields in _SOURCES.items():
        ref = entry["valueFrom"].get(source)
        if isinstance(ref, dict):
            read = "/".join(ref[f] for f in fields if isinstance(ref.get(f), str) and ref[f])[:MAX_VALUE_CHARS]
            return f"{source}({orjson.dumps(read).decode()[1:-1]})"   # JSON's escapes, without its quotes
    return f"valueFrom {shown(entry['valueFrom'])}"


def _volume_source(volume: Any) -> Any:
    return {k: v for k, v in volume.items() if k != "name"} if isinstance(volume, dict) else None


@dataclass(frozen=True, slots=True)
class _Kept:
    policy: str
    what: str
    name: str
    container: str
    ours: Any
    theirs: Any


@dataclass
class ConflictNotes:
    entries: list[_Kept] = field(default_factory=list)
    # policy -> volume -> the containers it injected that mount that volume
    mounted_by: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def copy(self) -> ConflictNotes:
        return ConflictNotes(list(self.entries), dict(self.mounted_by))

    def kept(self, *, policy: str, what: str, name: str, container: str, ours: Any, theirs: Any) -> None:
        self.entries.append(_Kept(policy, what, name, container, ours, theirs))

    def mounts_kept_against(self, policy: str) -> bool:
        return any(e.what == "mount" and e.policy == policy for e in self.entries)

    def readers(self, policy: str, containers: Iterable[dict[str, Any]]) -> None:
        """Note which of the policy's own containers mount which volume."""
        volumes: dict[str, list[str]] = {}
        for c in containers:
            for mount in dicts_in(c.get("volumeMounts")):
                volumes.setdefault(as_str(mount.get("name")), []).append(as_str(c.get("name")))
        self.mounted_by[policy] = volumes

    def warnings(self) -> list[str]:
        texts = [self._text(e) for e in self.entries[:MAX_WARNINGS]]
        if len(self.entries) > MAX_WARNINGS:
            texts.append(f"and {len(self.entries) - MAX_WARNINGS} more item(s) the pod kept against a policy; "
                         "the runtime.platform.io/status annotation lists them")
        return texts

    def _text(self, e: _Kept) -> str:
        where = f"container {shown_name(e.container)} keeps its own" if e.container else "the pod keeps its own"
        if e.what == "env":
            return f"{where} env var {e.name}={_env_value(e.theirs)}; policy {e.policy} sets {_env_value(e.ours)}"
        if e.what == "mount":
            ours, theirs = as_str(e.ours.get("name")), as_str(e.theirs.get("name"))
            text = (f"{where} mount at {e.name} (volume {shown_name(theirs)}); policy {e.policy} mounts volume "
                    f"{ours!r} there")
            readers = [r for r in self.mounted_by.get(e.policy, {}).get(ours, ()) if r != e.container]
            if readers and ours != theirs:
                text += f", which {', '.join(repr(r) for r in readers)} reads: it will not see what is written there"
            return text
        if e.what == "volume":
            return (f"{where} volume {e.name!r} {shown(_volume_source(e.theirs))}; policy {e.policy} "
                    f"declares {shown(_volume_source(e.ours))}")
        if e.what == "container":
            return (f"{where} container {e.name!r} (image {shown(e.theirs.get('image'))}); policy {e.policy} "
                    f"injects image {shown(e.ours.get('image'))}")
        return f"{where} {e.what} {e.name}={shown(e.theirs)}; policy {e.policy} sets {shown(e.ours)}"
