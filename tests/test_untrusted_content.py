"""What a request's content may and may not reach: metrics labels, log lines, error bodies.

A client inside the cluster network can send anything to the webhook, and a mutating
webhook sees a pod before the API server validates its names."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.apiserver import make_review
from tests.test_inject_shipped import pod


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(server, endpoint: str, review: dict):
    return server.client.request("POST", f"{endpoint}?timeout=10s", json.dumps(review).encode(),
                                 headers={"Content-Type": "application/json"})


def test_an_operation_outside_the_api_is_counted_as_unknown(start_server) -> None:
    server = start_server()
    for operation in ("EVIL-1-" + "x" * 5000, "EVIL-2", ["CREATE"], "create"):
        review = make_review(pod(name="p"))
        review["request"]["operation"] = operation
        assert _post(server, "/validate", review).status in (200, 400)
    text = server.client.request("GET", "/metrics").body.decode()
    assert "EVIL" not in text and 'operation="create"' not in text
    assert 'webhook_requests_total{endpoint="validate",operation="unknown",outcome="allowed"}' in text


def test_a_name_cannot_forge_a_text_log_line(start_server) -> None:
    server = start_server(args=["--log-format", "text", "--port", str(_free_port())])
    forged = "INFO webhook.admission.server: mutate CREATE kube-system/forged-pod: allowed"
    generated = pod(name="x")
    del generated["metadata"]["name"]
    generated["metadata"]["generateName"] = f"x\n2026-11-30 20:30:00,000 {forged}\r\u2028"
    assert _post(server, "/mutate", make_review(generated)).status == 200
    server.stop()
    lines = server.log_file.read_text().splitlines()
    decision = next(line for line in lines if "mutate CREATE default/x" in line)
    assert "\\n2026-11-30 20:30:00,000 INFO" in decision
    assert not any(line.startswith("2026-11-30 20:30:00,000") for line in lines)


def test_long_or_odd_names_make_bounded_lines_that_are_still_written(start_server) -> None:
    server = start_server()
    long_name = pod(name="x")
    del long_name["metadata"]["name"]
    long_name["metadata"]["generateName"] = "g" * 3_000_000
    nested: object = "deep"
    for _ in range(300):   # deeper than the JSON logger serialises
        nested = [nested]
    odd = pod(name="x")
    del odd["metadata"]["name"]
    odd["metadata"]["generateName"] = nested
    for obj in (long_name, odd):
        review = make_review(obj)
        assert _post(server, "/mutate", review).status == 200
        line = server.wait_for_log(lambda e, uid=review["request"]["uid"]: e.get("uid") == uid)
        assert line["event"] == "decision"
    text = server.log_file.read_text()
    assert max(len(line) for line in text.splitlines()) < 20_000
    assert "Logging error" not in text


def test_an_error_body_quotes_the_request_within_bounds(start_server) -> None:
    server = start_server()
    review = make_review(pod(name="x"))
    review["apiVersion"] = "v" * 4_000_000
    response = _post(server, "/mutate", review)
    assert response.status == 400
    assert len(response.body) < 2_000
    assert response.json()["error"].startswith("unsupported apiVersion 'vvv")
    assert "… (4000000 characters): expected one of admission.k8s.io/v1" in response.json()["error"]
