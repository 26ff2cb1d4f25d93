"""The admission request as the engine sees it: `AdmissionRequest`, read from the `request`
of an AdmissionReview (`from_dict`) or built around an object (`make_request`, for the
command line and the staleness analysis). The envelope around it and the response are
the admission server's (admission/review.py); the engine imports only this.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from webhook.core.jsonvalue import as_str, json_type


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer; the caller returns a 4xx."""


def _texts(raw: dict[str, Any], keys: tuple[str, ...], where: str) -> list[str]:
    """The string fields `keys` of `raw` ("" when absent or null), in one pass per section."""
    out = []
    for key in keys:
        value = raw.get(key)
        if value.__class__ is str:
            out.append(value)
        elif value is None:
            out.append("")
        else:
            raise BadReview(f"invalid request: {where}{key}: expected a string, got a JSON {json_type(value)}")
    return out


def request_uid(raw: dict[str, Any]) -> str:
    """The uid of a review's `request` (as sent), which every answer must echo."""
    uid = raw.get("uid")
    if uid.__class__ is not str or not uid:
        raise BadReview("invalid request: request.uid: expected a non-empty string")
    return uid


# The operations an API server sends; metrics label anything else "unknown", so a
# client cannot add a series per request (or a megabyte label) to every scrape.
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def operation_of(raw: dict[str, Any]) -> str:
    """A review's `request.operation` for metrics: "unknown" unless one of OPERATIONS."""
    operation = raw.get("operation")
    return operation if operation.__class__ is str and operation in OPERATIONS else "unknown"


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value.__class__ is dict:
        return value
    if value is None:
        return {}
    raise BadReview(f"invalid request: request.{key}: expected an object, got a JSON {json_type(value)}")


def _object(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is not None and value.__class__ is not dict:
        raise BadReview(f"invalid request: request.{key}: expected an object or null, "
                        f"got a JSON {json_type(value)}")
    return value


_GVK = ("group", "version", "kind")
_GVR = ("group", "version", "resource")
_USER = ("username", "uid")
_REQUEST = ("subResource", "name", "namespace", "operation")


# Named tuples, read by hand: this runs on every request, where a model validator cost
# more than the whole answer for a small pod, and even a frozen dataclass's __init__
# shows in profiles. Unknown fields are ignored: newer API servers add fields, and
# rejecting them would break admission on every cluster upgrade.
class GroupVersionKind(NamedTuple):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(NamedTuple):
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(NamedTuple):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class AdmissionRequest(NamedTuple):
    uid: str
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: str = ""
    user_info: UserInfo = UserInfo()
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AdmissionRequest:
        """Read the `request` of an AdmissionReview (JSON names), raising BadReview on a wrong shape."""
        uid = request_uid(raw)
        dry_run = raw.get("dryRun")
        if dry_run is None:
            dry_run = False
        elif dry_run.__class__ is not bool:
            raise BadReview(f"invalid request: request.dryRun: expected a boolean, got a JSON {json_type(dry_run)}")
        user = _section(raw, "userInfo")
        groups = user.get("groups")
        if groups is None:
            groups = ()
        elif groups.__class__ is not list or not all(g.__class__ is str for g in groups):
            raise BadReview("invalid request: request.userInfo.groups: expected an array of strings")
        sub_resource, name, namespace, operation = _texts(raw, _REQUEST, "request.")
        return cls(uid, GroupVersionKind(*_texts(_section(raw, "kind"), _GVK, "request.kind.")),
                   GroupVersionResource(*_texts(_section(raw, "resource"), _GVR, "request.resource.")),
                   sub_resource, name, namespace, operation,
                   UserInfo(*_texts(user, _USER, "request.userInfo."), tuple(groups)),
                   _object(raw, "object"), _object(raw, "oldObject"), dry_run)

    def to_json(self) -> dict[str, Any]:
        """The request as the API server sent it (JSON names), without object and oldObject."""
        return {
            "uid": self.uid,
            "kind": {"group": self.kind.group, "version": self.kind.version, "kind": self.kind.kind},
            "resource": {"group": self.resource.group, "version": self.resource.version,
                         "resource": self.resource.resource},
            "subResource": self.sub_resource, "name": self.name, "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": {"username": self.user_info.username, "uid": self.user_info.uid,
                         "groups": list(self.user_info.groups)},
            "dryRun": self.dry_run,
        }


def object_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(group, kind) from an object's own apiVersion and kind."""
    group = as_str(obj.get("apiVersion")).rpartition("/")[0]
    return group, as_str(obj.get("kind"))


def make_request(obj: dict[str, Any], *, namespace: str, operation: str = "CREATE",
                 username: str = "offline", groups: tuple[str, ...] = ()) -> AdmissionRequest:
    """A request around `obj` as the API server would send it (with a fresh uid), to decide
    an object outside admission."""
    group, kind = object_kind(obj)
    resource = kind.lower() + "s" if kind else ""
    return AdmissionRequest.from_dict({
        "uid": str(uuid.uuid4()), "operation": operation, "namespace": namespace,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "userInfo": {"username": username, "groups": list(groups)},
        "object": obj,
    })

