"""Decision memo: pods stamped from one template get their decision computed once.

A Deployment rollout or a Job burst sends the webhook many pods that are the same
object. At mutating admission they are byte for byte identical: the API server
gives a `generateName` pod its name and uid only after the mutating webhooks. At
validating admission they differ only in server-set metadata (name, uid,
creationTimestamp, managedFields) that no validation rule reads. The reviews differ
in their own uid, and at validation in the request's name.

A key is made from the review as sent, before it is parsed: a hit skips parsing as
well as deciding. So a key holds every field of the request except those few, which
it leaves out only when they are well-formed; a remembered answer then stands for a
request that passed every check. At mutation the key is the request body itself
with the uid cut out (`body_key`), when that cut can be made exactly; otherwise, and
at validation, it is the parsed `request` less the fields above, serialised again.

A mutation whose body begins as the API server writes a review, compact, with kind,
apiVersion and the request's uid (`_HEADS`), can be recalled without parsing it at
all (`recall`): its uid and apiVersion are read from that beginning, and the rest of
the body is the key. Only entries whose body was shown,
when stored, to parse with that very member as the request's uid and that apiVersion
(a later duplicate would win in a parser) answer such a recall.

A validation is recalled without parsing by its body's shape (`_Shape`): where, in a
body of that length, the values of the fields a key leaves out lie (the request's
uid and name, the pod's name, uid, creation time and managed fields' times). A body
of the same length whose bytes outside those places are the same, and whose bytes
inside them are plain text, parses as the stored one did but for those values.

A decision is a pure function of what each key below holds, plus the policy set
(the memo empties whenever a different set serves) and, for validation, today's
date (exceptions expire by date). Anything outside that stays uncached:

- /validate is not memoised while the serving set has CEL rules, which may read any
  field of the object or the request;
- objects whose JSON exceeds `max_object_bytes` are not memoised when their key must
  be serialised again: that would cost about what the decision does. A body key costs
  a copy and a hash, a fifth of what deciding a large pod does, so bodies up to
  `max_body_key_bytes` are memoised at mutation, and at validation by their shape.

A key is its inputs serialised as one JSON array, compared whole: two
different inputs never share an entry (a digest would be cheaper to keep but costs
several times more to compute than the dict's own hash). The memo is bounded both by
entries and by the bytes its keys and values hold (a value's size is the caller's
`weight`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any, Generic, NamedTuple, TypeVar

import re

import orjson

from webhook.engine.mutate import pod_create
from webhook.core.jsonvalue import as_dict
from webhook.policy.loader import PolicySet
from webhook.admission.review import SUPPORTED_API_VERSIONS
from webhook.core.request import BadReview, operation_of, request_uid

DEFAULT_MAX_ENTRIES = 512
DEFAULT_MAX_OBJECT_BYTES = 64 * 1024
DEFAULT_MAX_BODY_KEY_BYTES = 256 * 1024
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# Set by the API server after mutating admission, and different for every pod of a rollout.
SERVER_SET_METADATA = frozenset({"name", "uid", "creationTimestamp", "resourceVersion", "generation",
                                 "managedFields", "selfLink"})

T = TypeVar("T")


def _without_server_set_metadata(obj: dict[str, Any] | None) -> object:
    if obj.__class__ is not dict:
        return obj
    metadata = obj.get("metadata")
    if metadata.__class__ is not dict or SERVER_SET_METADATA.isdisjoint(metadata):
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k not in SERVER_SET_METADATA}}


def compact(data: bytes) -> bytes:
    """`data` in an allocation of its own length. orjson's output keeps its working buffer
    (a 6 KB answer held 64 KB; a small one 4 KB), so what a cache keeps of it is copied:
    otherwise the memo's byte bound would understate its memory up to tenfold."""
    return bytes(memoryview(data))


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


# The request's own fields that differ for each request about the same pod and that no
# decision reads. They are left out of a key only when well-formed (otherwise there is
# no key, and parsing the request refuses it): a remembered answer then also stands for
# the checks the request passed when it was parsed.
_UNKEYED_MUTATE = ("uid",)
_UNKEYED_VALIDATE = ("uid", "name", "object", "oldObject")


def _rest(raw: dict[str, Any], unkeyed: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        request_uid(raw)
    except BadReview:
        return None
    name = raw.get("name")
    if name is not None and name.__class__ is not str:  # as AdmissionRequest.from_dict reads it
        return None
    return {k: v for k, v in raw.items() if k not in unkeyed}


# Characters that JSON never escapes (a UUID's are among them).
_PLAIN_UID = re.compile(r"[0-9A-Za-z._-]{1,128}")
# How the uid's member reads in compact JSON (Go's encoding/json, i.e. the API server)
# and in JSON with spaces after colons (Python's json.dumps).
_UID_MEMBERS = (b'"uid":"', b'"uid": "')


def body_key(body: bytes, uid: str) -> bytes | None:
    """A mutation key: the request body with the review's uid cut out, or None when the cut
    cannot be shown exact.

    The cut removes the first `"uid":"<uid>"` (or `"uid": "<uid>"`) and marks its place
    with a NUL byte. A strict parser (orjson) refuses raw NUL and control bytes, so two
    bodies share a key only if they are the same bytes around that member, which may
    differ in its value and in the one space after the colon. It is exact:
    - the quote after `uid` follows 'd' and the value's closing quote follows a uid
      character, neither a backslash, so both are real quotes; the one after `uid`
      cannot open a string, since that string would close at the value's opening quote
      and be followed by the uid (not ',', ':', ']' or '}'), which is not JSON; so it
      closes a key, the ':' is outside any string, and the value is a member value: a
      string token of its own, as the uid holds nothing JSON escapes;
    - a different plain uid there is then the same document but for that value. If that
      member is the review's uid, the two differ only in the uid; if it is not, both
      reviews keep the same uid elsewhere, so the two uids are equal and the bodies too.
    The memo tests build 768 adversarial reviews (escaped and duplicated uids, look-alike
    members, both spacings); a review's random and byte-level search checked several
    hundred thousand pairs sharing a key and found none that differed beyond the uid."""
    if _PLAIN_UID.fullmatch(uid) is None:
        return None
    value = uid.encode() + b'"'
    for member in _UID_MEMBERS:
        at = body.find(member + value)
        if at >= 0:
            return b"".join((b"mutate\0", body[:at], b"\0", body[at + len(member) + len(value):]))
    return None


# How a compact review begins: as the API server writes it (Go's encoding/json: kind,
# apiVersion, then the request, whose first member is its uid), or apiVersion first.
_HEADS = tuple((head.encode(), version) for version in sorted(SUPPORTED_API_VERSIONS) for head in (
    f'{{"kind":"AdmissionReview","apiVersion":"{version}","request":{{"uid":"',
    f'{{"apiVersion":"{version}","kind":"AdmissionReview","request":{{"uid":"'))
_PLAIN_UID_BYTES = re.compile(_PLAIN_UID.pattern.encode())  # the same, on the body's bytes


def leading_uid(body: bytes) -> tuple[str, str, int] | None:
    """The apiVersion and the uid a body begins with (one of `_HEADS`, then a plain uid and
    its closing quote), and where the uid starts; None otherwise. Read without parsing: a
    later duplicate member may override either (`_recallable` is the check)."""
    for head, version in _HEADS:
        if body.startswith(head):
            start = len(head)
            end = body.find(b'"', start, start + 129)
            if end < 0 or _PLAIN_UID_BYTES.fullmatch(body, start, end) is None:
                return None
            return version, body[start:end].decode("ascii"), start
    return None


def _recallable(body: bytes, uid: str) -> bool:
    """Whether every body that differs from `body` only in the uid it begins with parses as
    `body` does but for the request's uid, which is that one; `uid` is `body`'s request
    uid as parsed. Such bodies have the same tokens but for the value of one plain string,
    so the request's uid is, for all of them, either that string or one fixed later
    member (a parser keeps the last duplicate). Two of them rule out the second: `body`,
    whose uid must be the one it begins with, and the same body with another uid, which
    must parse with that uid (and the apiVersion and kind it begins with)."""
    lead = leading_uid(body)
    if lead is None or lead[1] != uid:
        return False
    version, uid, start = lead
    other = "x" if uid[0] != "x" else "y"
    try:
        doc = orjson.loads(b"".join((body[:start], other.encode(), body[start + 1:])))
    except orjson.JSONDecodeError:
        return False
    request = doc.get("request") if doc.__class__ is dict else None
    return request.__class__ is dict and request.get("uid") == other + uid[1:] \
        and doc.get("apiVersion") == version and doc.get("kind") == "AdmissionReview"


def _pod_create(raw: dict[str, Any]) -> bool:
    """Only pod CREATE is injected; anything else is answered without evaluation anyway."""
    resource = as_dict(raw.get("resource"))
    return pod_create(raw.get("operation"), raw.get("subResource"), resource.get("group"),
                      resource.get("resource"), raw.get("object"))


def mutate_key(raw: dict[str, Any], _today: date) -> list[Any] | None:
    """The request as sent but for its uid: `mutate` reads the namespace and the pod, and the
    rest of the request is the same for every pod of a rollout (one controller creates them)."""
    if not _pod_create(raw):
        return None
    rest = _rest(raw, _UNKEYED_MUTATE)
    return None if rest is None else ["mutate", rest]


def validate_key(raw: dict[str, Any], today: date) -> list[Any] | None:
    """The request as sent but for its uid and name, the object and oldObject without their
    server-set metadata, and today's date. `validate` reads, except for CEL rules, the
    request's kind, operation, namespace and user (exceptions name users and groups), the
    objects, and the date."""
    obj = raw.get("object")
    if obj is None:
        return None
    rest = _rest(raw, _UNKEYED_VALIDATE)
    if rest is None:
        return None
    return ["validate", today, rest, _without_server_set_metadata(obj),
            _without_server_set_metadata(raw.get("oldObject"))]


# --- recalling a validation by its body's shape ------------------------------------------

# Printable ASCII but the quote and the backslash: a string's content that neither ends the
# string early nor holds an escape, so replacing it with other such content leaves every
# other token of the body as it was. (Names, uids and timestamps are written so.)
_PLAIN_TEXT = re.compile(rb'[\x20\x21\x23-\x5b\x5d-\x7e]+')
# A review with more places than this is not shaped: its key would cost more than it saves.
_MAX_SHAPE_SPANS = 16
# Shapes kept per body length: replicas share one; other pods of that length are rare.
_SHAPES_PER_LENGTH = 4
# A shape keeps the request's uid when no place of it holds the uid (one holding what JSON
# escapes), and shapes outlive their entries, unweighed: a review whose uid is longer than
# this and not cut out is not shaped, so that what shapes keep stays small (under 2 KB each,
# at most `_SHAPES_PER_LENGTH` for each of `max_entries` lengths). The API server's uids are
# UUIDs, always cut out.
_MAX_UNCUT_UID = 128


# Where a field lies in the request: member names and list indexes. The last is the member
# whose value it is.
FieldPath = tuple[str | int, ...]
_UID: FieldPath = ("uid",)


def _replica_fields(raw: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    """(path in the request, value) of the string fields in which a rollout's replicas differ
    at validating admission. `validate_key` leaves each of them out."""
    fields: list[tuple[FieldPath, str]] = [
        ((member,), value) for member in ("uid", "name") if (value := raw.get(member)).__class__ is str]
    obj = raw.get("object")
    metadata = obj.get("metadata") if obj.__class__ is dict else None
    if metadata.__class__ is dict:
        fields += [(("object", "metadata", member), value) for member in ("name", "uid", "creationTimestamp")
                   if (value := metadata.get(member)).__class__ is str]
        managed = metadata.get("managedFields")
        if managed.__class__ is list:
            fields += [(("object", "metadata", "managedFields", i, "time"), entry["time"])
                       for i, entry in enumerate(managed)
                       if entry.__class__ is dict and entry.get("time").__class__ is str]
    return fields


def _landed(body: bytes, spans: tuple[tuple[int, int], ...],
            fields: list[tuple[FieldPath, str]]) -> dict[int, FieldPath]:
    """Which spans of `body` hold exactly the value of one of `fields`, and that field's path:
    each span replaced by a marker unlike any of their values, the body parsed, and the
    markers looked for at the fields' paths. Empty if that body does not parse."""
    values = {value for _, value in fields}  # each span holds one of them
    pieces: list[bytes] = []
    markers: dict[str, int] = {}
    at = 0
    for i, (start, end) in enumerate(spans):
        marker = f"~{i}~"
        while marker in values:
            marker += "~"
        pieces += (body[at:start], marker.encode())
        markers[marker] = i
        at = end
    pieces.append(body[at:])
    try:
        request = orjson.loads(b"".join(pieces))["request"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    landed: dict[int, FieldPath] = {}
    for path, _ in fields:
        held: Any = request
        try:
            for step in path:
                held = held[step]
        except (KeyError, IndexError, TypeError):
            continue
        if held.__class__ is str and held in markers:
            landed[markers[held]] = path
    return landed


class _Shape:
    """Where the values that replicas differ in lie in a validation body of one length.

    `of` parsed the stored body with a marker in each span: a marker cannot stand outside a
    string, and each was found whole as the value of a field that `validate_key` leaves out,
    so each span is the whole content of that value's string. Plain text (`_PLAIN_TEXT`)
    neither ends a string nor escapes, so a body of the same length that equals the stored
    one outside the spans and holds plain text inside each is read token for token as the
    stored one: it parses as the stored one but for those values, and has its key and
    decision. Its uid is what its place at the request's uid holds, or else (`uid`) the
    stored one's; its apiVersion is the stored one's. Every entry made with a shape was stored by a body
    with that very shape (`tag` begins its key), so those hold for whichever it finds."""

    __slots__ = ("spans", "paths", "uid", "api_version", "operation", "tag")

    def __init__(self, length: int, spans: tuple[tuple[int, int], ...], paths: tuple[FieldPath, ...],
                 uid: str, api_version: str, operation: str) -> None:
        self.spans = spans
        self.paths = paths  # the field each span holds
        self.uid = uid if _UID not in paths else ""  # the request's uid when no place holds it
        self.api_version = api_version
        self.operation = operation
        # Begins every key made with this shape. It holds all of the shape, not only its
        # spans: an entry answers with the apiVersion, uid and names of the shape that finds
        # it, and bodies whose spans lie alike may differ in those (a uid not cut, escaped;
        # an apiVersion or member order that moves no span).
        self.tag = b"validate\0%s\0" % orjson.dumps([length, spans, paths, self.uid, api_version, operation])

    @classmethod
    def of(cls, body: bytes, api_version: str, raw: dict[str, Any]) -> _Shape | None:
        """The shape of `body`, whose request parsed as `raw`, or None when no place could be
        shown to hold only a field its key may leave out."""
        fields = _replica_fields(raw)
        found: set[tuple[int, int]] = set()
        for member, value in {(path[-1], value) for path, value in fields}:  # managed times repeat
            text = value.encode()
            if not _PLAIN_TEXT.fullmatch(text):
                continue
            needle = b'"%s":"%s"' % (str(member).encode(), text)
            at = body.find(needle)
            while at >= 0 and len(found) <= _MAX_SHAPE_SPANS:
                start = at + len(needle) - len(text) - 1
                found.add((start, start + len(text)))
                at = body.find(needle, at + 1)
        if not found or len(found) > _MAX_SHAPE_SPANS:
            return None
        spans = tuple(sorted(found))
        # Kept: the spans that hold a field's whole value. Others matched elsewhere too (a
        # container named as its pod) or a member that a later duplicate overrides.
        landed = _landed(body, spans, fields)
        kept = [i for i in range(len(spans)) if i in landed]
        if not kept:
            return None
        paths = tuple(landed[i] for i in kept)
        if _UID not in paths and len(raw["uid"]) > _MAX_UNCUT_UID:
            return None  # the shape would keep it, unweighed
        return cls(len(body), tuple(spans[i] for i in kept), paths, raw["uid"], api_version, operation_of(raw))

    def key(self, body: bytes, day: bytes) -> bytes | None:
        """The key of a body of this shape, or None when one of its places holds other than
        plain text. `day` (today, ISO) is part of it: exceptions expire by date."""
        pieces, at = [self.tag, day], 0
        for start, end in self.spans:
            if _PLAIN_TEXT.fullmatch(body, start, end) is None:
                return None
            pieces.append(body[at:start])
            at = end
        pieces.append(body[at:])
        return b"\0".join(pieces)

    def values(self, body: bytes) -> dict[FieldPath, str]:
        """What each place of `body` holds, by the path of its field."""
        return {path: body[start:end].decode("ascii") for path, (start, end) in zip(self.paths, self.spans)}


KEYS: dict[str, Callable[[dict[str, Any], date], list[Any] | None]] = {
    "mutate": mutate_key, "validate": validate_key}


def _has_cel(policies: PolicySet) -> bool:
    return any(rule.kind == "cel" for policy in policies.validation for rule in policy.spec.rules)


class _Entry(NamedTuple, Generic[T]):
    value: T
    size: int  # its weight in bytes, key included
    recallable: bool | None  # whether `recall` may answer with it; None: to be seen on its first repeat
    context: Any  # the caller's, for a recall


class Recalled(NamedTuple, Generic[T]):
    """What `DecisionMemo.recall` found for a body."""

    value: T
    api_version: str  # to answer in
    uid: str  # to echo
    operation: str
    context: Any  # the caller's, from `decide`
    values: dict[FieldPath, str]  # what the places a validation's shape cuts hold, by path


class DecisionMemo(Generic[T]):
    """A bounded LRU of decisions for the serving policy set (one per worker process).

    What it keeps per decision is the caller's: the server keeps the decision with its
    response already serialised."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
                 max_bytes: int = DEFAULT_MAX_BYTES, weight: Callable[[T], int] = lambda _value: 0,
                 max_body_key_bytes: int = DEFAULT_MAX_BODY_KEY_BYTES) -> None:
        self.max_entries = max_entries
        self.max_object_bytes = max_object_bytes
        self.max_body_key_bytes = max_body_key_bytes
        self.max_bytes = max_bytes
        self._weight = weight
        self._entries: OrderedDict[bytes, _Entry[T]] = OrderedDict()
        self._bytes = 0
        self._policies: PolicySet | None = None
        self._memoise_validate = False
        # body length -> the shapes of validations stored with one (most recent first). A
        # shape may outlive its entries (a recall then finds nothing); lengths are dropped
        # oldest first once there are more than entries.
        self._shapes: dict[int, list[_Shape]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every decision: an input outside the keys changed (namespace labels)."""
        self._entries.clear()
        self._shapes.clear()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """What the entries weigh: their keys' lengths and the caller's weights."""
        return self._bytes

    def decide(self, endpoint: str, raw_request: dict[str, Any], policies: PolicySet,
               compute: Callable[[], T], *, body: bytes | None = None, api_version: str | None = None,
               context: Callable[[], Any] = lambda: None) -> tuple[T, str]:
        """`compute()`'s result, remembered for requests with the same deciding inputs, and
        "hit", "miss" or "skip" (not memoisable). `raw_request` is the review's `request` as
        sent; `compute` parses it (refusing a malformed one by raising) and decides. An
        exception from `compute` is not remembered. `body`, the request body that
        `raw_request` was read from, when known: it keys mutations (`body_key`) and skips
        objects too large at once. With `body` and its review's `api_version`, a validation
        is also stored for `recall` by its body's shape. What `recall` needs is made on an
        entry's first repeat (a miss, perhaps of a pod never seen again, does not pay for
        it): a mutation's body is checked (`_recallable`), a validation's shape stored.
        Bodies too large for a key are shaped at once. `context()` is then kept with what
        `recall` may answer: what the caller needs of a recalled request besides its uid
        (the names for a log line)."""
        if policies is not self._policies:
            self._entries.clear()
            self._shapes.clear()
            self._bytes = 0
            self._policies = policies
            self._memoise_validate = not _has_cel(policies)
        today = utc_today()
        key = self._key(endpoint, raw_request, today, body)
        # Stored by its body's shape as well, for `recall` (which a too large body can use too).
        shaped = endpoint == "validate" and body is not None and api_version is not None \
            and self._memoise_validate and self.max_entries > 0 and len(body) <= self.max_body_key_bytes
        if key is None and not shaped:
            return compute(), "skip"
        if key is not None and (found := self._entries.get(key)) is not None:
            self._entries.move_to_end(key)
            if found.recallable is None and body is not None:
                self._first_repeat(endpoint, key, found, body, api_version, raw_request, today, context)
            return found.value, "hit"
        value = compute()
        if utc_today() != today:
            return value, "skip"  # decided on another day than its key says (midnight UTC)
        if key is None:
            stored = shaped and body is not None and api_version is not None \
                and self._store_by_shape(body, api_version, raw_request, today, value, context)
            return value, "miss" if stored else "skip"
        # None: to be made recallable on its first repeat (body keys and shapeable validations).
        later = shaped or (endpoint == "mutate" and key.startswith(b"mutate\0") and body is not None)
        self._store(key, value, None if later else False, None)
        return value, "miss"

    def _first_repeat(self, endpoint: str, key: bytes, found: _Entry[T], body: bytes, api_version: str | None,
                      raw_request: dict[str, Any], today: date, context: Callable[[], Any]) -> None:
        """Make an entry recallable on its first repeat: a mutation's body checked, a
        validation's shape stored (its own entry then stays as it is)."""
        if endpoint == "mutate":
            recallable = _recallable(body, raw_request.get("uid"))
            self._entries[key] = found._replace(recallable=recallable, context=context() if recallable else None)
            return
        self._entries[key] = found._replace(recallable=False)
        if api_version is not None:
            self._store_by_shape(body, api_version, raw_request, today, found.value, context)

    def _store_by_shape(self, body: bytes, api_version: str, raw_request: dict[str, Any], today: date,
                        value: T, context: Callable[[], Any]) -> bool:
        shape = _Shape.of(body, api_version, raw_request)
        key = shape.key(body, today.isoformat().encode()) if shape is not None else None
        if shape is None or key is None:
            return False
        shapes = self._shapes.setdefault(len(body), [])
        if all(known.tag != shape.tag for known in shapes):
            shapes.insert(0, shape)
            del shapes[_SHAPES_PER_LENGTH:]
            if len(self._shapes) > self.max_entries:
                del self._shapes[next(iter(self._shapes))]
        self._store(key, value, True, context())
        return True

    def _store(self, key: bytes, value: T, recallable: bool | None, context: Any) -> None:
        size = len(key) + self._weight(value)
        self._entries[compact(key)] = _Entry(value, size, recallable, context)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1].size

    def recall(self, endpoint: str, body: bytes, policies: PolicySet) -> Recalled[T] | None:
        """A remembered value for `body`, found without parsing `body`; None when it must go
        through `decide`. The request it was decided for parsed as this body does but for
        fields its key leaves out: the same checks passed, the same decision.

        A mutation's value was stored for a body that differs from this one at most in the
        uid it begins with (`body_key` cuts the first `"uid":"<uid>"`, and no such member
        comes before the one `leading_uid` reads) and that `_recallable` vouched for. A
        validation's, for a body of this length that differs from it at most inside the
        places of one of the shapes stored for that length (`_Shape`)."""
        if policies is not self._policies or self.max_entries <= 0 or len(body) > self.max_body_key_bytes:
            return None
        if endpoint == "validate":
            return self._recall_validation(body)
        lead = leading_uid(body)
        if lead is None:
            return None
        version, uid, _ = lead
        key = body_key(body, uid)
        found = self._entries.get(key) if key is not None else None
        if found is None or not found.recallable:
            return None
        self._entries.move_to_end(key)
        # Only pod CREATE is remembered at mutation (`_pod_create`); the rest of the body is
        # the stored one's, so are its names.
        return Recalled(found.value, version, uid, "CREATE", found.context, {})

    def _recall_validation(self, body: bytes) -> Recalled[T] | None:
        shapes = self._shapes.get(len(body))  # only while validations are memoised
        if not shapes:
            return None
        day = utc_today().isoformat().encode()
        for shape in shapes:
            key = shape.key(body, day)
            found = self._entries.get(key) if key is not None else None
            if found is not None:
                self._entries.move_to_end(key)
                values = shape.values(body)
                return Recalled(found.value, shape.api_version, values.get(_UID, shape.uid), shape.operation,
                                found.context, values)
        return None

    def _key(self, endpoint: str, raw_request: dict[str, Any], today: date, body: bytes | None) -> bytes | None:
        if self.max_entries <= 0 or (endpoint == "validate" and not self._memoise_validate):
            return None
        if body is not None:
            if endpoint == "mutate" and len(body) <= self.max_body_key_bytes and _pod_create(raw_request):
                uid = raw_request.get("uid")
                key = body_key(body, uid) if uid.__class__ is str else None
                if key is not None:
                    return key
            if len(body) > self.max_object_bytes:
                return None
        key_of = KEYS.get(endpoint)
        if key_of is None:
            return None
        inputs = key_of(raw_request, today)
        if inputs is None:
            return None
        try:
            # One JSON array: self-delimiting, so no two different inputs serialise alike.
            data = orjson.dumps(inputs)
        except (TypeError, orjson.JSONEncodeError):
            return None  # not plain JSON (e.g. a 65-bit integer): decide it every time
        if len(data) > self.max_object_bytes:
            return None  # hashing and keeping it would cost about what deciding does
        return data
