"""Golden answers of the server: every input's review through `/mutate` and `/validate` of
a real `webhook serve` over TLS, recorded as one JSON line per request.

A line holds the case, a digest of the request body (so a changed input shows as such),
the HTTP status, and the response body as JSON (`response`). A JSON patch is unreadable
in base64, so the patch value is replaced by `<patch>` and the patch itself given beside
it (`patch`). The server writes compact JSON, so the exact bytes follow from the line
(`body_of`, checked for every line when it is recorded); a body that is not compact JSON
as Python writes it is kept as text (`body`).

Each request is sent three times: the decision memo answers repeats from the second one on,
and its answers must be byte-identical to the engine's.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonpatch

from tests.apiserver import ApiServerClient, RawResponse, exchange, make_review, verify_response
from tests.golden.cases import PodInput, RawRequest

ENDPOINTS = ("/mutate", "/validate")
PATCH_PLACEHOLDER = "<patch>"
# The memo answers a pod's second repeat from memory, so three sends cover both paths.
SENDS = 3


@dataclass(frozen=True)
class Answer:
    case: str
    endpoint: str
    request: str          # sha256 of the request body, first 16 hex digits
    status: int
    content_type: str
    body: bytes

    def line(self) -> str:
        """The golden line, from which `body_of` gives back the exact bytes (checked here)."""
        record: dict[str, Any] = {"case": self.case, "request": self.request, "status": self.status,
                                  "contentType": self.content_type}
        record |= _readable_body(self.body)
        line = json.dumps(record, ensure_ascii=False)
        if body_of(json.loads(line)) != self.body:
            # Not compact JSON as Python writes it: keep the text as it came.
            record = {k: v for k, v in record.items() if k not in ("response", "patch")}
            record["body"] = self.body.decode("utf-8")
            line = json.dumps(record, ensure_ascii=False)
        assert body_of(json.loads(line)) == self.body, f"{self.case}: the golden line loses bytes"
        return line


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _readable_body(body: bytes) -> dict[str, Any]:
    """`response`: the body as JSON, its base64 patch (if any) replaced by `<patch>` and given
    decoded as `patch`; base64 is one-to-one, so nothing is lost."""
    try:
        review = json.loads(body)
    except ValueError:
        return {"body": body.decode("utf-8")}
    response = review.get("response") if isinstance(review, dict) else None
    patch = response.get("patch") if isinstance(response, dict) else None
    if not isinstance(patch, str):
        return {"response": review}
    decoded = base64.b64decode(patch, validate=True)
    review = {**review, "response": {**response, "patch": PATCH_PLACEHOLDER}}
    return {"response": review, "patch": json.loads(decoded)}


def body_of(record: dict[str, Any]) -> bytes:
    """The response body a golden record stands for."""
    if "body" in record:
        return record["body"].encode("utf-8")
    review = record["response"]
    if "patch" in record:
        encoded = base64.b64encode(_compact(record["patch"])).decode("ascii")
        review = {**review, "response": {**review["response"], "patch": encoded}}
    return _compact(review)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def review_body(pod: dict[str, Any], *, case: str, namespace: str) -> bytes:
    """A CREATE review as the API server sends it, with a uid fixed by the case's name (so that
    the echoed uid, and the whole answer, is the same on every run)."""
    review = make_review(pod, namespace=namespace)
    review["request"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"golden:{case}"))
    return json.dumps(review).encode()


class Recorder:
    """Sends requests over one kept-alive TLS connection and records the answers."""

    def __init__(self, client: ApiServerClient) -> None:
        self._client = client
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def send(self, case: str, endpoint: str, body: bytes, *, content_type: str = "application/json",
             method: str = "POST") -> Answer:
        answers = [self._send_once(case, endpoint, body, content_type, method) for _ in range(SENDS)]
        varying = [a for a in answers[1:] if a != answers[0]]
        if varying:
            raise AssertionError(f"{case} {endpoint}: the answer varies between identical requests:\n"
                                 f"{answers[0].line()}\n{varying[0].line()}")
        return answers[0]

    def _send_once(self, case: str, endpoint: str, body: bytes, content_type: str, method: str) -> Answer:
        if self._conn is None:
            self._conn = self._client.connection()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            raw = exchange(self._conn, method, f"{endpoint}?timeout=10s", body, headers=headers)
        except (http.client.HTTPException, OSError):
            # The server closed the connection (it may after an error answer): once more on a new one.
            self._conn.close()
            self._conn = self._client.connection()
            raw = exchange(self._conn, method, f"{endpoint}?timeout=10s", body, headers=headers)
        if raw.headers.get("connection", "").lower() == "close":
            self._conn.close()
            self._conn = None
        return Answer(case, endpoint, _digest(body), raw.status, raw.headers.get("content-type", ""), raw.body)


def record_pod(recorder: Recorder, pod: PodInput) -> Iterator[Answer]:
    """The API server's order: mutate, reinvoke on the mutated pod, validate the final pod;
    and validate the pod as submitted (what a namespace without injection would send)."""
    body = review_body(pod.pod, case=pod.name, namespace=pod.namespace)
    mutated = recorder.send(pod.name, "/mutate", body)
    yield mutated
    final = pod.pod
    if mutated.status == 200:
        result = verify_response(json.loads(body), _raw(mutated), mutating=True)
        final = jsonpatch.apply_patch(pod.pod, result.patch or [], in_place=False)
    again = f"{pod.name}#reinvoked"
    yield recorder.send(again, "/mutate", review_body(final, case=again, namespace=pod.namespace))
    yield recorder.send(pod.name, "/validate", review_body(final, case=pod.name, namespace=pod.namespace))
    submitted = f"{pod.name}#submitted"
    yield recorder.send(submitted, "/validate", review_body(pod.pod, case=submitted, namespace=pod.namespace))


def _raw(answer: Answer) -> RawResponse:
    return RawResponse(answer.status, {"content-type": answer.content_type}, answer.body)


def record_all(client: ApiServerClient, pods: Iterable[PodInput], checked: Iterable[PodInput],
               requests: Iterable[RawRequest]) -> dict[str, list[str]]:
    """endpoint -> golden lines, in input order: `pods` through the whole admission path,
    `checked` (fixtures of validation rules) only through `/validate` as they are."""
    lines: dict[str, list[str]] = {endpoint: [] for endpoint in ENDPOINTS}
    recorder = Recorder(client)
    try:
        for pod in pods:
            for answer in record_pod(recorder, pod):
                lines[answer.endpoint].append(answer.line())
        for pod in checked:
            body = review_body(pod.pod, case=pod.name, namespace=pod.namespace)
            lines["/validate"].append(recorder.send(pod.name, "/validate", body).line())
        for request in requests:
            answer = recorder.send(request.name, request.endpoint, request.body,
                                   content_type=request.content_type, method=request.method)
            lines[answer.endpoint].append(answer.line())
    finally:
        recorder.close()
    return lines
