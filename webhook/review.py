"""AdmissionReview wire types (admission.k8s.io v1 and v1beta1): parse requests, build responses.

This is the only module that knows the JSON shape of an AdmissionReview; the engine
sees an `AdmissionRequest` and returns a `Decision`.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webhook.decision import Decision

API_V1 = "admission.k8s.io/v1"
API_V1BETA1 = "admission.k8s.io/v1beta1"
# The API server answers in the version it sent, and rejects a response of any other.
SUPPORTED_API_VERSIONS = frozenset({API_V1, API_V1BETA1})


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer; the caller returns a 4xx."""


class _Wire(BaseModel):
    # Unknown fields are ignored: newer API servers add fields, and rejecting them
    # would break admission on every cluster upgrade.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class GroupVersionKind(_Wire):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(_Wire):
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(_Wire):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class AdmissionRequest(_Wire):
    uid: str = Field(min_length=1)
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = Field("", alias="subResource")
    name: str = ""
    namespace: str = ""
    operation: str = ""
    user_info: UserInfo = Field(UserInfo(), alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(None, alias="oldObject")
    dry_run: bool = Field(False, alias="dryRun")


class ParsedReview(_Wire):
    api_version: str
    request: AdmissionRequest


def parse_review(body: bytes) -> ParsedReview:
    """Parse a request body, raising BadReview with a message a human can act on."""
    if not body:
        raise BadReview("empty body: expected an AdmissionReview JSON object")
    try:
        # orjson refuses nesting deeper than 1024 levels instead of recursing without bound.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadReview(f"expected a JSON object, got a JSON {_json_type(doc)}")
    api_version = doc.get("apiVersion")
    if api_version not in SUPPORTED_API_VERSIONS:
        raise BadReview(f"unsupported apiVersion {api_version!r}: expected one of "
                        f"{', '.join(sorted(SUPPORTED_API_VERSIONS))}")
    if doc.get("kind") != "AdmissionReview":
        raise BadReview(f"unsupported kind {doc.get('kind')!r}: expected 'AdmissionReview'")
    raw_request = doc.get("request")
    if not isinstance(raw_request, dict):
        raise BadReview("missing 'request' object in AdmissionReview")
    try:
        request = AdmissionRequest.model_validate(raw_request)
    except ValidationError as exc:
        raise BadReview("invalid request: " + _summarise(exc)) from None
    return ParsedReview(api_version=api_version, request=request)


def build_response(*, api_version: str, uid: str, decision: Decision, mutating: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        if not mutating:
            # The API server rejects a validating webhook's response that carries a patch.
            raise ValueError("a validating decision cannot carry a patch")
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(decision.patch)).decode("ascii")
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
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"request.{loc}: {err['msg']}")
    return "; ".join(parts)
