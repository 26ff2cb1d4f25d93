"""Bodies and clients that try to break the server: malformed envelopes, bodies their
Content-Encoding does not describe, deep nesting, a request queued behind a heavy one,
one address holding many connections, reviews that would make huge log lines.

Each is answered with a 4xx (or a review with a 4xx code) and a message, never a 5xx or
a traceback, and the server goes on serving others."""

from __future__ import annotations

import gzip
import json
import re
import socket
import ssl
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import ApiServerClient, RawResponse, make_review, verify_response
from tests.conftest import ServerProcess
from tests.test_server_lifecycle import POD, _InProcessServer
from webhook.engine import validate
from webhook.runtime.logs import LINE_MAX, LIST_SHOWN_MAX
from webhook.admission.review import MAX_REVIEW_DEPTH

JSON = {"Content-Type": "application/json"}


def _post(server: ServerProcess, endpoint: str, body: bytes, **headers: str) -> RawResponse:
    return server.client.request("POST", f"{endpoint}?timeout=10s", body, headers={**JSON, **headers})


def _no_tracebacks(server: ServerProcess) -> None:
    text = server.log_file.read_text()
    assert "Traceback" not in text and "Unhandled exception" not in text, text[-3000:]


@pytest.mark.parametrize("body", [
    b'{"apiVersion": []}', b'{"apiVersion": {}}', b'{"apiVersion": 1}',
    b'{"apiVersion": "admission.k8s.io/v1", "kind": ["AdmissionReview"], "request": {"uid": "u"}}',
    b'{"apiVersion": "admission.k8s.io/v1", "kind": {}, "request": {"uid": "u"}}',
])
def test_an_envelope_of_the_wrong_types_is_a_400_naming_the_field(server: ServerProcess, body: bytes) -> None:
    for endpoint in ("/mutate", "/validate"):
        response = _post(server, endpoint, body)
        assert response.status == 400, response.body
        error = response.json()["error"]
        assert re.match(r"unsupported (apiVersion|kind) \(a JSON (array|object|number)\)", error), error
    _no_tracebacks(server)


def test_a_body_its_content_encoding_does_not_describe_is_a_400(server: ServerProcess) -> None:
    body = json.dumps(make_review(POD)).encode()
    for encoding in ("gzip", "deflate"):
        response = _post(server, "/mutate", body, **{"Content-Encoding": encoding})
        assert response.status == 400, response.body
        assert response.json()["error"] == (f"the body is not what its Content-Encoding '{encoding}' says: "
                                            "it could not be decoded")
        assert response.headers.get("connection") == "close"
    response = _post(server, "/mutate", body, **{"Content-Encoding": "x-snappy"})
    assert response.status == 415 and "x-snappy" in response.json()["error"]
    # Bodies that are what they say are decoded and decided.
    review = make_review(POD)
    for encoded, encoding in ((gzip.compress(json.dumps(review).encode()), "gzip"),
                              (zlib.compress(json.dumps(review).encode()), "deflate")):
        raw = _post(server, "/validate", encoded, **{"Content-Encoding": encoding})
        assert verify_response(review, raw, mutating=False).allowed
    _no_tracebacks(server)


def test_a_compressed_body_is_held_to_the_body_limit_once_decoded(server: ServerProcess) -> None:
    squeezed = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    bomb = b"".join(squeezed.compress(b" " * (1 << 20)) for _ in range(64)) + squeezed.flush()
    assert len(bomb) < 100_000
    response = _post(server, "/mutate", bomb, **{"Content-Encoding": "gzip"})
    assert response.status == 413
    assert server.client.admit(POD).allowed


def _nested(depth: int) -> str:
    """JSON text of `depth` nested objects around a string (built as text: json.dumps
    recurses and would stop before the depths tried here)."""
    return '{"a":' * depth + '"x"' + "}" * depth


def _with_deep_field(review: dict[str, Any], depth: int, *paths: tuple[str, ...]) -> bytes:
    """`review` as JSON with a value `depth` objects deep at each of `paths`."""
    for path in paths:
        target = review
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = "\0DEEP\0"
    return json.dumps(review).encode().replace(b'"\\u0000DEEP\\u0000"', _nested(depth).encode())


def test_a_review_too_deep_to_decide_is_denied_with_a_4xx_code(server: ServerProcess) -> None:
    # An UPDATE whose object and oldObject are equal and nested about 990 deep: comparing
    # the two recursed past Python's limit (a 500 by the failure rule).
    update = make_review(json.loads(json.dumps(POD)), operation="UPDATE", old_object=json.loads(json.dumps(POD)))
    body = _with_deep_field(update, 990, ("request", "object", "spec", "x"), ("request", "oldObject", "spec", "x"))
    for _ in range(2):  # twice: a refusal is not remembered as a decision
        raw = _post(server, "/validate", body)
        assert raw.status == 200, raw.body[:300]
        response = raw.json()["response"]
        assert response["allowed"] is False and "patch" not in response
        assert response["status"]["code"] == 400
        assert f"more than {MAX_REVIEW_DEPTH} levels deep" in response["status"]["message"]
    _no_tracebacks(server)
    assert any(e.get("event") == "too_deep" for e in server.log_lines())


def test_a_review_at_the_depth_limit_is_decided(server: ServerProcess) -> None:
    # review{ request{ object{ spec{ x: 96 levels }}}}: 100 in all, in both objects.
    review = make_review(json.loads(json.dumps(POD)), operation="UPDATE", old_object=json.loads(json.dumps(POD)))
    body = _with_deep_field(review, MAX_REVIEW_DEPTH - 4, ("request", "object", "spec", "x"),
                            ("request", "oldObject", "spec", "x"))
    result = verify_response(review, _post(server, "/validate", body), mutating=False)
    assert result.allowed and result.response.get("status", {}).get("code") is None


def _fails_as_deep_nesting_does(error: Exception):
    def engine(request, policies, **_kwargs):
        raise error
    return engine


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded in comparison"),
                                   TypeError("Recursion limit reached")])
def test_a_decision_stopped_by_deep_nesting_is_a_4xx_only_when_the_review_is_that_deep(
        pki: Path, error: Exception) -> None:
    # The engine or the answer's serialiser stopped by nesting (orjson's error for a patch
    # copying pod content 300 deep is this TypeError): denied with code 400 when the review
    # nests past the limit; a bug (the same error from a shallow review) stays a 500.
    deep = make_review(json.loads(json.dumps(POD)))
    body = _with_deep_field(deep, MAX_REVIEW_DEPTH, ("request", "object", "spec", "x"))
    with _InProcessServer(pki, mutate_engine=_fails_as_deep_nesting_does(error)) as client:
        raw = client.request("POST", "/mutate?timeout=10s", body, headers=JSON)
        status = verify_response(deep, raw, mutating=True).response["status"]
        assert status["code"] == 400 and f"more than {MAX_REVIEW_DEPTH} levels deep" in status["message"]
        shallow = client.admit(POD)
        assert shallow.response["status"]["code"] == 500 and not shallow.allowed


def _slow_validate(request, policies, **kwargs):  # kwargs: whatever else the server passes
    time.sleep(1.0)  # holds the event loop, as a heavy review does
    # A decision that took its time but finished: the engine's own deadline checks (which
    # would stop this one too) are tested in test_bounds.py and test_server_bounds.py.
    kwargs.pop("deadline", None)
    return validate(request, policies, **kwargs)


def _tls(client: ApiServerClient, source: str = "127.0.0.1") -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", client.port), timeout=10, source_address=(source, 0))
    return client.context.wrap_socket(sock, server_hostname=client.server_name)


def _answer(tls: ssl.SSLSocket) -> dict[str, Any]:
    reply = b""
    while not reply.endswith(b"}}"):
        chunk = tls.recv(65536)
        assert chunk, reply
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)["response"]


def _request(review: dict[str, Any], path: str) -> bytes:
    body = json.dumps(review).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.slow
def test_a_deadline_runs_from_when_the_head_was_read_not_from_when_the_loop_got_to_it(pki: Path) -> None:
    # Two reviews read in the same turn of the event loop, each held a second by a slow
    # decision, with a 1 s deadline: whichever is decided second has spent its deadline
    # waiting for the first, so it is answered by the failure rule at once. (Timed from
    # when its handler started, it would have been decided as if it had just arrived.)
    def pod(n: int) -> dict[str, Any]:  # different pods: a remembered decision would not be slow
        return {**POD, "metadata": {"name": "p", "labels": {"n": str(n)}}}

    with _InProcessServer(pki, validate_engine=_slow_validate) as client:
        blocker, first, second = (_tls(client) for _ in range(3))
        blocker.sendall(_request(make_review(pod(0)), "/validate?timeout=10s"))
        time.sleep(0.3)  # the blocker's decision holds the loop: the next two wait in the kernel
        for n, tls in enumerate((first, second), 1):
            tls.sendall(_request(make_review(pod(n)), "/validate?timeout=1s"))
        assert _answer(blocker)["allowed"]
        answers = [_answer(first), _answer(second)]
        late = [a for a in answers if a.get("status", {}).get("code") == 500]
        assert len(late) == 1, answers
        assert "deadline passed" in late[0]["status"]["message"]
        assert late[0]["allowed"] is False  # the failure policy is Fail


def _status_on(tls: ssl.SSLSocket) -> int | None:
    """The status of a request sent on `tls`, or None when the server closed it instead."""
    try:
        tls.sendall(_request(make_review(POD), "/validate?timeout=10s"))
        reply = tls.recv(65536)
    except (ConnectionError, ssl.SSLError):
        return None
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


def _connect_or_none(client: ApiServerClient, source: str) -> ssl.SSLSocket | None:
    try:
        return _tls(client, source)
    except (ConnectionError, ssl.SSLError):
        return None  # closed before the handshake ended


def test_one_address_over_its_connection_limit_does_not_stop_another_being_served(start_server) -> None:
    server = start_server(args=["--max-connections-per-client", "3"])
    client = server.client
    held = [_tls(client, "127.0.0.1") for _ in range(3)]
    for tls in held:
        assert _status_on(tls) == 200  # answered, so each is counted
    refused = _connect_or_none(client, "127.0.0.1")
    assert refused is None or _status_on(refused) is None
    others = [_tls(client, "127.0.0.2") for _ in range(2)]  # and the metrics scrape below
    for tls in others:
        assert _status_on(tls) == 200
    assert all(_status_on(tls) == 200 for tls in held)  # the held ones still work
    held.pop().close()
    time.sleep(0.3)
    freed = _tls(client, "127.0.0.1")
    assert _status_on(freed) == 200  # a slot of that address was freed
    metrics = _tls(client, "127.0.0.2")
    metrics.sendall(b"GET /metrics HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n")
    text = b""
    while chunk := metrics.recv(65536):
        text += chunk
    assert b'webhook_dropped_connections_total{reason="client_limit"} 1.0' in text


@pytest.mark.process
def test_the_per_client_limit_is_read_from_the_environment_and_checked(tmp_path: Path, pki: Path) -> None:
    import os
    import subprocess
    import sys
    env = {**os.environ, "WEBHOOK_MAX_CONNECTIONS_PER_CLIENT": "0"}
    done = subprocess.run([sys.executable, "-m", "webhook", "serve", "--cert-dir", str(pki)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "WEBHOOK_MAX_CONNECTIONS_PER_CLIENT: '0' is not a whole number of at least 1" in done.stderr


def _privileged_pod(containers: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": f"c{i}", "image": "example.com/app:1",
                                     "securityContext": {"privileged": True}} for i in range(containers)]}}


def test_a_decision_log_line_stays_bounded_and_says_what_it_left_out(server: ServerProcess) -> None:
    review = make_review(_privileged_pod(900))  # under the bound on containers per pod
    review["request"]["uid"] = "u" * 3_000_000
    raw = _post(server, "/validate", json.dumps(review).encode())
    response = verify_response(review, raw, mutating=False).response  # the uid echoes whole
    assert response["allowed"] is False
    line = server.wait_for_log(lambda e: e.get("event") == "decision" and e.get("uid", "").startswith("uuu"))
    text = next(t for t in server.log_file.read_text().splitlines() if '"uid":"uuu' in t)
    assert len(text.encode()) < LINE_MAX
    assert line["uid"] == "u" * 253 + "…"
    violations = line["violations"]
    assert len(violations) == LIST_SHOWN_MAX + 1
    assert re.fullmatch(r"… \d+ more", violations[-1]) and int(violations[-1].split()[1]) >= 900 - LIST_SHOWN_MAX
    assert all(len(v) < 500 for v in violations)


def test_a_decision_log_line_cuts_long_names_in_violations(server: ServerProcess) -> None:
    pod = _privileged_pod(2)
    pod["spec"]["containers"][0]["name"] = "n" * 50_000
    review = make_review(pod)
    raw = _post(server, "/validate", json.dumps(review).encode())
    assert raw.status == 200
    line = server.wait_for_log(lambda e: e.get("event") == "decision" and e.get("uid") == review["request"]["uid"])
    assert line["violations"] and all(len(v) <= 401 for v in line["violations"])
    assert len(line["denyMessage"]) < 2200


def test_requests_are_served_while_a_client_holds_its_limit_of_idle_connections(start_server) -> None:
    # The report's case scaled down: one address holds every connection it may, idle; the
    # API server (another address) is still served, on a new connection each time.
    server = start_server(args=["--max-connections-per-client", "20"])
    idle = [_tls(server.client, "127.0.0.1") for _ in range(20)]
    extra = [_connect_or_none(server.client, "127.0.0.1") for _ in range(5)]
    done = threading.Event()
    statuses: list[int | None] = []

    def api_server() -> None:
        for _ in range(5):
            statuses.append(_status_on(_tls(server.client, "127.0.0.2")))
        done.set()

    threading.Thread(target=api_server, daemon=True).start()
    assert done.wait(30)
    assert statuses == [200] * 5
    assert all(tls is None or _status_on(tls) is None for tls in extra)
    for tls in idle:
        tls.close()


def test_a_remembered_answer_keeps_no_more_than_its_log_line_shows() -> None:
    # The memo weighs an answer by its serialised response; the violations it keeps for the
    # log line (one per container per check) must not outweigh that many times over.
    from webhook.core import decision as decisions
    from webhook.admission.server import _answer

    found = tuple(decisions.Violation("baseline", "podSecurity", "Enforce", f"spec.containers[c{i}]", "privileged")
                  for i in range(5000))
    answer = _answer(decisions.denied("privileged containers", violations=found), mutating=False)
    assert len(answer.logged.violations) == LIST_SHOWN_MAX and answer.violations == 5000
    assert answer.counted[3] == ((("baseline", "podSecurity", "Enforce"), 5000),)
