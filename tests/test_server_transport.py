"""The server over a real TLS socket: AdmissionReview in and out, health, bad input."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from tests.apiserver import ApiServerClient, exchange, make_review, verify_response
from tests.conftest import ServerProcess
from tests.engine_helpers import env_names, names
from tests.test_inject_shipped import app, pod
from webhook.admission.server import TLS_WRITE_PIECE_BYTES

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "web-", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"}]}}


def _valid_request_succeeds(server: ServerProcess) -> None:
    result = server.client.admit(POD, endpoint="/validate")
    assert result.allowed


def test_healthz_over_verified_tls(server: ServerProcess) -> None:
    raw = server.client.request("GET", "/healthz")
    assert raw.status == 200 and raw.json() == {"status": "ok"}


def test_readyz_reports_revision_and_no_error(server: ServerProcess) -> None:
    body = server.client.request("GET", "/readyz").json()
    assert body["status"] == "ok"
    assert len(body["policyRevision"]) == 12
    assert body["lastReloadError"] is None
    assert body["tls"] is True


def test_certificate_names_other_than_the_service_are_refused(server: ServerProcess) -> None:
    wrong = ApiServerClient(server.port, server.cert_dir / "ca.crt", server_name="other.webhook-system.svc")
    with pytest.raises(ssl.SSLCertVerificationError):
        wrong.request("GET", "/healthz")


def test_tls_below_1_2_is_refused(server: ServerProcess) -> None:
    context = ssl.create_default_context(cafile=str(server.cert_dir / "ca.crt"))
    with pytest.warns(DeprecationWarning):  # old versions are deprecated in Python too
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            context.wrap_socket(sock, server_hostname="webhook.webhook-system.svc")


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_review_is_answered_in_its_own_version(server: ServerProcess, endpoint: str, api_version: str) -> None:
    # verify_response applies the API server's checks: version, kind, uid, patch rules
    result = server.client.admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                  "spec": {"containers": []}},
                                 endpoint=endpoint, api_version=api_version, operation="DELETE")
    assert result.review["apiVersion"] == api_version
    assert result.allowed
    assert "patch" not in result.response and "patchType" not in result.response


def test_metrics_count_requests(server: ServerProcess) -> None:
    server.client.admit(POD, endpoint="/validate")
    text = server.client.request("GET", "/metrics").body.decode()
    assert 'webhook_requests_total{endpoint="validate",operation="CREATE",outcome="allowed"}' in text
    assert "webhook_request_duration_seconds_bucket" in text
    assert "webhook_certificate_expiry_timestamp_seconds" in text


def _review_bytes(**changes) -> bytes:
    review = make_review(POD)
    review.update(changes)
    return json.dumps(review).encode()


def _without_uid() -> bytes:
    review = make_review(POD)
    del review["request"]["uid"]
    return json.dumps(review).encode()


def _request_with(**fields: object) -> bytes:
    review = make_review(POD)
    review["request"].update(fields)
    return json.dumps(review).encode()


BAD_BODIES = {
    "empty": b"",
    "not json": b"hello",
    "truncated json": _review_bytes()[:-20],
    "json array": b"[1, 2, 3]",
    "json scalar": b"42",
    "json string": b'"AdmissionReview"',
    "json null": b"null",
    "missing request": json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
    "request not an object": _review_bytes(request=[1]),
    "missing uid": _without_uid(),
    "uid not a string": _request_with(uid=7),
    "object not an object": _request_with(object=[POD]),
    "oldObject a string": _request_with(oldObject="{}"),
    "kind a string": _request_with(kind="Pod"),
    "resource kind not a string": _request_with(resource={"group": "", "version": "v1", "resource": 1}),
    "namespace a number": _request_with(namespace=3),
    "groups not an array": _request_with(userInfo={"username": "u", "groups": "system:masters"}),
    "dryRun a string": _request_with(dryRun="true"),
    "wrong apiVersion": _review_bytes(apiVersion="admission.k8s.io/v2"),
    "wrong kind": _review_bytes(kind="Pod"),
    "binary garbage": bytes(range(256)) * 16,
    "invalid utf-8": b'{"apiVersion": "\xff\xfe"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
}


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_get_a_4xx_with_a_json_message(server: ServerProcess, endpoint: str, name: str) -> None:
    raw = server.client.request("POST", endpoint, BAD_BODIES[name],
                                headers={"Content-Type": "application/json"})
    assert 400 <= raw.status < 500, raw.body[:200]
    body = raw.json()
    assert body["error"] and "Traceback" not in body["error"]
    _valid_request_succeeds(server)


def test_oversized_body_is_refused_before_it_is_buffered(server: ServerProcess) -> None:
    raw = server.client.request("POST", "/mutate", b"{" + b" " * (9 * 1024 * 1024) + b"}",
                                headers={"Content-Type": "application/json"})
    assert raw.status == 413
    assert "limit" in raw.json()["error"]
    _valid_request_succeeds(server)


def test_oversized_chunked_body_is_refused(server: ServerProcess) -> None:
    def chunks():
        for _ in range(10):
            yield b" " * (1024 * 1024)
    try:
        raw = server.client.request("POST", "/mutate", chunks(),  # type: ignore[arg-type]
                                    headers={"Content-Type": "application/json"})  # chunked
        assert raw.status == 413
    except (ssl.SSLError, ConnectionError):
        pass  # the server answered 413 and closed while the client was still uploading
    server.wait_for_log(lambda e: e.get("event") == "bad_request" and e.get("status") == 413)
    _valid_request_succeeds(server)


def test_unsupported_content_type(server: ServerProcess) -> None:
    raw = server.client.request("POST", "/mutate", _review_bytes(), headers={"Content-Type": "text/plain"})
    assert raw.status == 415 and "application/json" in raw.json()["error"]


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/mutate", 405, "POST"), ("PUT", "/validate", 405, "POST"), ("DELETE", "/mutate", 405, "POST"),
    ("POST", "/healthz", 405, "GET, HEAD"), ("PUT", "/metrics", 405, "GET, HEAD"),
    ("GET", "/nope", 404, None), ("POST", "/mutate/extra", 404, None), ("GET", "/", 404, None),
])
def test_wrong_method_and_unknown_path(server: ServerProcess, method: str, path: str, status: int,
                                       allow: str | None) -> None:
    raw = server.client.request(method, path)
    assert raw.status == status
    assert raw.json()["code"] == status
    if allow:
        assert raw.headers["allow"] == allow
        assert raw.json()["error"] == f"method {method} not allowed; use {allow}"
    else:
        assert raw.json()["error"] == f"no such path {path}; admission endpoints are /mutate and /validate"
    _valid_request_succeeds(server)


def test_head_is_answered_on_the_probes(server: ServerProcess) -> None:
    assert server.client.request("HEAD", "/healthz").status == 200


def _raw_tls_socket(server: ServerProcess) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return server.client.context.wrap_socket(sock, server_hostname=server.client.server_name)


def _pod_of(containers: int) -> dict:
    return pod(*[app(f"c{i}") for i in range(containers)], name=None, labels={"app": "web"})


def test_a_large_answer_arrives_whole_and_the_connection_stays_usable(server: ServerProcess) -> None:
    # Answers over TLS_WRITE_PIECE_BYTES are written in pieces: the Content-Length, the
    # bytes and the next request's framing on the same kept-alive connection must not notice.
    pod = _pod_of(40)
    review = make_review(pod)
    conn = server.client.connection()
    try:
        for _ in range(2):  # evaluated, then remembered
            raw = exchange(conn, "POST", "/mutate?timeout=10s", json.dumps(review).encode(),
                           headers={"Content-Type": "application/json"})
            assert len(raw.body) > 3 * TLS_WRITE_PIECE_BYTES  # several pieces, or this tests nothing
            assert int(raw.headers["content-length"]) == len(raw.body)
            assert raw.headers["content-type"] == "application/json"
            patched = verify_response(review, raw, mutating=True).patched(pod)
            assert names(patched["spec"]["containers"])[:40] == [f"c{i}" for i in range(40)]
            assert all("POD_NAME" in env_names(c) for c in patched["spec"]["containers"][:40])
        health = exchange(conn, "GET", "/healthz")
        assert health.status == 200 and health.json() == {"status": "ok"}
    finally:
        conn.close()


def test_a_client_that_leaves_before_a_large_answer_costs_nothing(server: ServerProcess) -> None:
    # Clients close right after sending: the server finds each connection gone while it
    # writes the answer's pieces. That is neither an error nor a warning per piece written
    # to a dead connection, and the next client is served. The handshakes come first, then
    # all requests at once: while the server decides the first ones, the later requests and
    # their resets (a close with the server's session ticket unread) arrive together, so
    # asyncio's socket sees the reset before aiohttp's handler writes its first byte.
    seen = len(server.log_lines())
    clients = [_raw_tls_socket(server) for _ in range(12)]
    for i, tls in enumerate(clients):
        pod = _pod_of(50)
        pod["metadata"]["labels"]["attempt"] = str(i)  # a new pod each time: decided, not remembered
        body = json.dumps(make_review(pod)).encode()
        tls.sendall(b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        tls.close()
    time.sleep(0.5)
    _valid_request_succeeds(server)
    assert [e for e in server.log_lines()[seen:] if e.get("level") in ("warning", "error", "critical")
            or "Traceback" in str(e)] == []


def test_body_shorter_than_content_length_then_close(server: ServerProcess) -> None:
    tls = _raw_tls_socket(server)
    tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n{\"apiVersion\":")
    tls.close()
    _valid_request_succeeds(server)


def test_stalled_body_times_out_at_the_request_deadline(server: ServerProcess) -> None:
    tls = _raw_tls_socket(server)
    started = time.monotonic()
    tls.sendall(b"POST /mutate?timeout=1s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n{\"apiVersion\":")
    reply = tls.recv(4096)
    elapsed = time.monotonic() - started
    tls.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert elapsed < 5
    _valid_request_succeeds(server)


def test_plain_http_on_the_tls_port_does_not_hurt(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            sock.recv(100)
        except (ConnectionError, socket.timeout):
            pass
    _valid_request_succeeds(server)
