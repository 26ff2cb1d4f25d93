"""Decision memo: pods stamped from one template get their decision computed once.

A Deployment rollout or a Job burst sends the webhook many pods that are the same
object. At mutating admission they are byte for byte identical: the API server
gives a `generateName` pod its name and uid only after the mutating webhooks. At
validating admission they differ only in server-set metadata (name, uid,
creationTimestamp, managedFields) that no validation rule reads.

A decision is a pure function of what each key below holds, plus the policy set
(the memo empties whenever a different set serves) and, for validation, today's
date (exceptions expire by date). Anything outside that stays uncached:

- /validate is not memoised while the serving set has CEL rules, which may read any
  field of the object or the request;
- objects whose JSON exceeds `max_object_bytes` are not memoised: hashing them would
  cost about what the decision does, and keeping few large entries keeps memory flat.

Keys are BLAKE2b-128 digests of the deciding inputs, so an entry costs its decision
and 16 bytes, however large the pod.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar
from datetime import date, datetime, timezone
from hashlib import blake2b

import orjson

from webhook.engine.mutate import is_pod_create
from webhook.policy.loader import PolicySet
from webhook.review import AdmissionRequest

DEFAULT_MAX_ENTRIES = 512
DEFAULT_MAX_OBJECT_BYTES = 64 * 1024
# Set by the API server after mutating admission, and different for every pod of a rollout.
SERVER_SET_METADATA = frozenset({"name", "uid", "creationTimestamp", "resourceVersion", "generation",
                                 "managedFields", "selfLink"})

T = TypeVar("T")


class _TooLarge(Exception):
    pass


def _json(value: object, limit: int) -> bytes:
    data = orjson.dumps(value)
    if len(data) > limit:
        raise _TooLarge
    return data


def _without_server_set_metadata(obj: dict[str, object] | None) -> object:
    if not isinstance(obj, dict):
        return obj
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or SERVER_SET_METADATA.isdisjoint(metadata):
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k not in SERVER_SET_METADATA}}


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def mutate_key(request: AdmissionRequest, limit: int) -> list[bytes] | None:
    """What `mutate` reads: the namespace and the pod (only pod CREATE is injected)."""
    if not is_pod_create(request):
        return None  # answered without evaluation anyway
    return [b"mutate", request.namespace.encode(), _json(request.object, limit)]


def validate_key(request: AdmissionRequest, limit: int) -> list[bytes] | None:
    """What `validate` reads, except for CEL rules: the request's kind, operation, namespace
    and user (exceptions name users and groups), the object and oldObject without their
    server-set metadata, and today's date."""
    if request.object is None:
        return None
    user = request.user_info
    return [b"validate", utc_today().isoformat().encode(),
            "\0".join((request.operation, request.sub_resource, request.kind.group, request.kind.kind,
                       request.resource.group, request.resource.resource, request.namespace,
                       user.username, *user.groups)).encode(),
            _json(_without_server_set_metadata(request.object), limit),
            _json(_without_server_set_metadata(request.old_object), limit)]


KEYS: dict[str, Callable[[AdmissionRequest, int], list[bytes] | None]] = {
    "mutate": mutate_key, "validate": validate_key}


def _has_cel(policies: PolicySet) -> bool:
    return any(rule.kind == "cel" for policy in policies.validation for rule in policy.spec.rules)


class DecisionMemo(Generic[T]):
    """A bounded LRU of decisions for the serving policy set (one per worker process).

    What it keeps per decision is the caller's: the server keeps the decision with its
    response already serialised."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_object_bytes = max_object_bytes
        self._entries: OrderedDict[bytes, T] = OrderedDict()
        self._policies: PolicySet | None = None
        self._memoise_validate = False

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, endpoint: str, request: AdmissionRequest, policies: PolicySet,
               compute: Callable[[], T], *, body_size: int = 0) -> tuple[T, str]:
        """`compute()`'s result, remembered for requests with the same deciding inputs, and
        "hit", "miss" or "skip" (not memoisable). An exception from `compute` is not remembered.
        `body_size`, the request body's length when known, skips objects too large at once."""
        if policies is not self._policies:
            self._entries.clear()
            self._policies = policies
            self._memoise_validate = not _has_cel(policies)
        key = None if body_size > self.max_object_bytes else self._key(endpoint, request)
        if key is None:
            return compute(), "skip"
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found, "hit"
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value, "miss"

    def _key(self, endpoint: str, request: AdmissionRequest) -> bytes | None:
        if self.max_entries <= 0 or (endpoint == "validate" and not self._memoise_validate):
            return None
        key_of = KEYS.get(endpoint)
        if key_of is None:
            return None
        try:
            parts = key_of(request, self.max_object_bytes)
        except (_TooLarge, TypeError, orjson.JSONEncodeError):
            return None  # too large to be worth it, or not plain JSON (e.g. a 65-bit integer)
        if parts is None:
            return None
        # Length-prefixed, so that no two different inputs concatenate alike.
        return blake2b(b"".join(len(part).to_bytes(8, "little") + part for part in parts),
                       digest_size=16).digest()
