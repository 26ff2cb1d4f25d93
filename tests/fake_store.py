"""The fake API server's store: objects, one cluster-wide resourceVersion counter (as etcd's
revision), the change history watches replay, and the write semantics of kube-apiserver's
generic registry that a controller depends on.

- Every write takes the next version; a list's resourceVersion is the newest written.
- update: a stale metadata.resourceVersion is a 409 Conflict; one that changes nothing
  writes nothing (same resourceVersion, no watch event), as the real server skips no-op
  updates. The main resource ignores `status` and the /status subresource everything but
  `status`, for kinds with a status subresource. metadata.generation starts at 1 and
  counts spec changes of workloads.
- Pods: the Pod update rule (fake_kinds.pod_update_problems), 422 Invalid otherwise.
- Creates in a namespace that does not exist are a 404; generateName gets a suffix from a
  counter (deterministic, unlike the real server's random one).
- Deletes take effect at once (no kubelet to wait for) and may carry preconditions.

Every method here is called with `lock` held.
"""

from __future__ import annotations

import bisect
import itertools
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tests.fake_kinds import KINDS, apply_defaults, create_problems, invalid, pod_update_problems, workload_update_problems


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, name: str = "", kind: str = "",
                 group: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = {"name": name, "group": group, "kind": kind} if name or kind else None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = {k: v for k, v in self.details.items() if v}
        return out


@dataclass(frozen=True)
class Change:
    """One recorded write, as a watch replays it; `previous` is the object before (for a
    watch with a selector, an object leaving the selection is a DELETED)."""

    version: int
    resource: str
    namespace: str
    type: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None


# A new object's status, as the real server serializes its zero value (non-omitempty fields).
EMPTY_STATUS: dict[str, dict[str, Any]] = {
    "pods": {"phase": "Pending", "qosClass": "BestEffort"},
    "replicasets": {"replicas": 0},
    "statefulsets": {"replicas": 0, "availableReplicas": 0},
    "daemonsets": {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
                   "numberReady": 0},
}


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (faster than copy.deepcopy for it)."""
    return json.loads(json.dumps(obj))


def not_found(resource: str, name: str) -> ApiError:
    group = KINDS[resource].group if resource in KINDS else ""
    return ApiError(404, "NotFound", f"{resource}{'.' + group if group else ''} \"{name}\" not found",
                    name=name, kind=resource, group=group)


def conflict(resource: str, name: str) -> ApiError:
    group = KINDS[resource].group if resource in KINDS else ""
    return ApiError(409, "Conflict", f"Operation cannot be fulfilled on {resource}{'.' + group if group else ''} "
                    f"\"{name}\": the object has been modified; please apply your changes to the latest "
                    "version and try again", name=name, kind=resource, group=group)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.changes: list[Change] = []
        self._change_versions: list[int] = []
        self.history_start = 0            # a watch from a version below this gets 410 Expired
        self.last_version = 0
        self._versions = itertools.count(1000)
        self._suffixes = itertools.count(1)

    # -- versions and history ----------------------------------------------------------------

    def next_version(self) -> int:
        self.last_version = next(self._versions)
        return self.last_version

    def stamp(self, obj: dict[str, Any], *, new: bool) -> None:
        meta = obj.setdefault("metadata", {})
        if new:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(self.next_version())

    def record(self, resource: str, namespace: str, kind: str, obj: dict[str, Any],
               previous: dict[str, Any] | None = None) -> None:
        version = int(obj["metadata"]["resourceVersion"])
        # Stored objects are never changed in place (a write stores a new one), so the
        # history may share them.
        self.changes.append(Change(version, resource, namespace, kind, obj, previous))
        self._change_versions.append(version)

    def changes_after(self, version: int) -> list[Change]:
        return self.changes[bisect.bisect_right(self._change_versions, version):]

    def compact(self) -> None:
        # Every change so far is forgotten; a watch from the newest version needs none of
        # them, so it may still resume (etcd keeps the compacted revision itself).
        self.history_start = self.last_version
        self.changes.clear()
        self._change_versions.clear()

    # -- writes -------------------------------------------------------------------------------

    def create(self, resource: str, namespace: str, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        info = KINDS[resource]
        obj = clone(obj)
        obj["kind"], obj["apiVersion"] = info.kind, info.api_version
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                               "the namespace sent on the request")
            meta["namespace"] = namespace
            if ("namespaces", "", namespace) not in self.objects:
                raise not_found("namespaces", namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{_suffix(next(self._suffixes))}"
        name = meta.get("name") or ""
        if not name:
            raise ApiError(422, "Invalid", invalid(info.kind, "", ["metadata.name: Required value: name or "
                                                                   "generateName is required"]), kind=info.kind)
        apply_defaults(resource, obj)
        problems = create_problems(resource, obj)
        if problems:
            raise ApiError(422, "Invalid", invalid(info.kind, name, problems), name=name, kind=info.kind)
        key = (resource, namespace if info.namespaced else "", name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f"{resource}{'.' + info.group if info.group else ''} \"{name}\" "
                           "already exists", name=name, kind=resource, group=info.group)
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_field, None)
        if info.generation:
            meta["generation"] = 1
        if info.status and resource != "namespaces":
            obj["status"] = clone(EMPTY_STATUS.get(resource, {}))
        if dry_run:
            return obj
        self.stamp(obj, new=True)
        self.objects[key] = obj
        self.record(resource, key[1], "ADDED", obj)
        return clone(obj)

    def update(self, resource: str, namespace: str, name: str, new: dict[str, Any], *,
               subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        info = KINDS[resource]
        key = (resource, namespace if info.namespaced else "", name)
        current = self.objects.get(key)
        if current is None:
            raise not_found(resource, name)
        new = clone(new)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        sent = meta.get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        new["kind"], new["apiVersion"] = info.kind, info.api_version
        if subresource == "status":
            # The status subresource writes status only.
            new = {**clone(current), "status": new.get("status") or {}}
        elif subresource:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({subresource})")
        elif info.status:
            new["status"] = clone(current.get("status") or {})
        if meta.get("namespace", current["metadata"].get("namespace")) != current["metadata"].get("namespace"):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                           "namespace sent on the request")
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {resource} \"{name}\": Precondition "
                           f"failed: UID in precondition: {meta['uid']}, UID in object meta: "
                           f"{current['metadata']['uid']}", name=name, kind=resource)
        problems: list[str] = []
        if resource == "pods" and not subresource:
            problems += pod_update_problems(current, new)
        elif info.generation and not subresource:
            problems += workload_update_problems(resource, current, new)
        if problems:
            raise ApiError(422, "Invalid", invalid(info.kind, name, problems), name=name, kind=info.kind)
        for server_field in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
            if server_field in current["metadata"]:
                new["metadata"][server_field] = current["metadata"][server_field]
        if info.generation and (new.get("spec") != current.get("spec")):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current or dry_run:
            return clone(new)    # a no-op update writes nothing
        self.stamp(new, new=False)
        self.objects[key] = new
        self.record(resource, key[1], "MODIFIED", new, current)
        return clone(new)

    def delete(self, resource: str, namespace: str, name: str, *, preconditions: dict[str, Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        info = KINDS[resource]
        key = (resource, namespace if info.namespaced else "", name)
        current = self.objects.get(key)
        if current is None:
            raise not_found(resource, name)
        wanted = preconditions or {}
        if wanted.get("resourceVersion") and wanted["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {resource} \"{name}\": Precondition "
                           "failed: ResourceVersion in precondition: "
                           f"{wanted['resourceVersion']}, ResourceVersion in object meta: "
                           f"{current['metadata']['resourceVersion']}", name=name, kind=resource)
        if wanted.get("uid") and wanted["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on {resource} \"{name}\": Precondition "
                           f"failed: UID in precondition: {wanted['uid']}, UID in object meta: "
                           f"{current['metadata']['uid']}", name=name, kind=resource)
        if dry_run:
            return clone(current)
        del self.objects[key]
        gone = clone(current)
        self.stamp(gone, new=False)
        self.record(resource, key[1], "DELETED", gone, current)
        return gone


def _suffix(number: int) -> str:
    """Five characters from the alphabet the real server draws generateName suffixes from."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = (number * 7919 + 104729) % len(alphabet) ** 5   # spread consecutive numbers apart
    out = ""
    for _ in range(5):
        number, digit = divmod(number, len(alphabet))
        out += alphabet[digit]
    return out
