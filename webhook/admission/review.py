"""AdmissionReview wire format (admission.k8s.io v1 and v1beta1): the envelope around a
request, and the response. The request inside the envelope is read by core/request.py,
which the engine shares: it sees an `AdmissionRequest` and returns a `Decision`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
import pybase64

from webhook.core.decision import Decision
from webhook.core.jsonvalue import json_type
from webhook.core.request import AdmissionRequest, BadReview

API_V1 = "admission.k8s.io/v1"
API_V1BETA1 = "admission.k8s.io/v1beta1"
# The API server answers in the version it sent, and rejects a response of any other.
SUPPORTED_API_VERSIONS = frozenset({API_V1, API_V1BETA1})



class ParsedReview(NamedTuple):
    api_version: str
    request: AdmissionRequest


def read_envelope(body: bytes) -> tuple[str, dict[str, Any]]:
    """A request body's apiVersion and its `request` as sent, raising BadReview with a message
    a human can act on. `AdmissionRequest.from_dict` checks the request itself."""
    if not body:
        raise BadReview("empty body: expected an AdmissionReview JSON object")
    try:
        # orjson refuses nesting deeper than 1024 levels instead of recursing without bound.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadReview(f"expected a JSON object, got a JSON {json_type(doc)}")
    api_version = doc.get("apiVersion")
    # Checked as a string first: a JSON array or object is unhashable, so cannot be
    # looked up in a set.
    if api_version.__class__ is not str or api_version not in SUPPORTED_API_VERSIONS:
        raise BadReview(f"unsupported apiVersion {_quoted(api_version)}: expected one of "
                        f"{', '.join(sorted(SUPPORTED_API_VERSIONS))}")
    kind = doc.get("kind")
    if kind.__class__ is not str or kind != "AdmissionReview":
        raise BadReview(f"unsupported kind {_quoted(kind)}: expected 'AdmissionReview'")
    raw_request = doc.get("request")
    if not isinstance(raw_request, dict):
        raise BadReview("missing 'request' object in AdmissionReview")
    return api_version, raw_request


def parse_review(body: bytes) -> ParsedReview:
    """Parse a request body, raising BadReview with a message a human can act on."""
    api_version, raw_request = read_envelope(body)
    return ParsedReview(api_version=api_version, request=AdmissionRequest.from_dict(raw_request))


def build_response(*, api_version: str, uid: str, decision: Decision, mutating: bool) -> dict[str, Any]:
    return envelope(api_version=api_version, uid=uid, fields=response_fields(decision, mutating=mutating))


def response_fields(decision: Decision, *, mutating: bool) -> dict[str, Any]:
    """The AdmissionResponse without its uid: the same for every request the decision answers,
    so a remembered decision is serialised (and its patch encoded) once."""
    response: dict[str, Any] = {"allowed": decision.allowed}
    if decision.patch:
        if not mutating:
            # The API server rejects a validating webhook's response that carries a patch.
            raise ValueError("a validating decision cannot carry a patch")
        response["patchType"] = "JSONPatch"
        response["patch"] = pybase64.b64encode_as_string(orjson.dumps(decision.patch))
    if decision.code is not None or decision.message:
        status: dict[str, Any] = {}
        if decision.code is not None:
            status["code"] = decision.code
        if decision.message:
            status["message"] = decision.message
        if decision.reason:
            status["reason"] = decision.reason
        response["status"] = status
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    if decision.audit_annotations:
        response["auditAnnotations"] = dict(decision.audit_annotations)
    return response


def envelope(*, api_version: str, uid: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answering request `uid`, in the version it came in."""
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": {"uid": uid, **fields}}


def envelope_json(*, api_version: str, uid: str, fields_json: bytes) -> bytes:
    """`envelope` serialised, around fields already serialised (`orjson.dumps(fields)`): a
    remembered answer's patch is then not copied through the serialiser on every request."""
    return b"".join((b'{"apiVersion":', orjson.dumps(api_version), b',"kind":"AdmissionReview","response":{"uid":',
                     orjson.dumps(uid), b",", fields_json[1:], b"}"))


# A message quotes at most this much of a value the client sent.
_QUOTED_MAX = 64


def _quoted(value: Any) -> str:
    """A value from the body for a message: a string quoted (and cut), another value by its JSON type."""
    if value.__class__ is not str:
        return "missing" if value is None else f"(a JSON {json_type(value)})"
    if len(value) > _QUOTED_MAX:
        return f"{value[:_QUOTED_MAX]!r}… ({len(value)} characters)"
    return repr(value)


# Reviews nesting objects and arrays up to this deep are always decided: the code
# reading them has room (orjson serialises 255 levels, a patch may copy pod content;
# Python compares about 1000, an UPDATE compares object and oldObject). A deeper one
# whose decision reaches one of those limits is denied instead of failing. Kubernetes
# objects nest about 16 levels at most (a CronJob's pod template's affinity terms), and
# the API server decodes into typed structs before admission, so only a client calling
# the webhook directly can send deeper.
MAX_REVIEW_DEPTH = 100
# What a depth check keeps of a body: brackets (braces read as brackets, since only
# their nesting counts) and, for the exact check, the quotes that say which brackets
# are inside strings.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"{}[]"))
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'{}[]"'))


def nests_deeper_than(body: bytes, limit: int = MAX_REVIEW_DEPTH) -> bool:
    """Whether the JSON text `body` (already known to be valid) nests objects and arrays
    more than `limit` levels deep. Works on the bytes with C-speed translations and
    replacements; most bodies hold too few brackets to nest that deep and are passed
    after one translation."""
    if len(body.translate(None, _NOT_BRACKETS)) <= 2 * limit:
        return False  # brackets in strings included: an upper bound
    if b"\\" in body:  # escaped quotes and backslashes are string content
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Strings without brackets vanish as "" pairs; two adjacent quotes are either such a
    # string or an empty gap between two strings, and dropping either keeps the rest right.
    marks = body.translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in marks:  # strings holding brackets: keep what lies between strings
        marks = b"".join(marks.split(b'"')[::2])
    for _ in range(limit):  # each pass removes the innermost level
        if not marks:
            return False
        marks = marks.replace(b"[]", b"")
    return bool(marks)
