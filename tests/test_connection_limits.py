"""What a client can hold open: stalled heads, idle connections, large heads, too many connections."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.apiserver import ApiServerClient, make_review
from tests.test_server_lifecycle import POD, _InProcessServer
from webhook.admission.connections import ConnectionLimits


def _open(client: ApiServerClient) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", client.port), timeout=5)
    return client.context.wrap_socket(sock, server_hostname=client.server_name)


def _closed_after(tls: ssl.SSLSocket, timeout: float) -> float:
    """Seconds until the server closes `tls` (reading and dropping what it sends); fails after `timeout`."""
    started = time.monotonic()
    tls.settimeout(timeout)
    try:
        while tls.recv(65536):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {timeout}s") from None
    return time.monotonic() - started


def _request_head(path: str = "/validate?timeout=10s", *, length: int, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: webhook.webhook-system.svc:443\r\n"
            f"Content-Type: application/json\r\nAccept: application/json, */*\r\nAccept-Encoding: gzip\r\n"
            f"User-Agent: kube-apiserver-admission\r\nContent-Length: {length}\r\n").encode() + extra + b"\r\n"


def _status(tls: ssl.SSLSocket, request: bytes) -> int | None:
    """The answer's status, read whole, or None if the server closed the connection without one."""
    try:
        tls.sendall(request)
    except OSError:
        pass  # it may close before reading everything
    reply = b""
    tls.settimeout(5)
    try:
        while True:
            head, sep, rest = reply.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if sep and length is not None and len(rest) >= length:
                break
            chunk = tls.recv(65536)
            if not chunk:
                break
            reply += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


def _review() -> bytes:
    return json.dumps(make_review(POD)).encode()


@pytest.mark.slow
def test_a_head_not_finished_in_time_is_dropped_even_while_bytes_trickle(pki: Path) -> None:
    with _InProcessServer(pki, limits=ConnectionLimits(head_seconds=0.5)) as client:
        stalled = _open(client)
        stalled.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        trickling = _open(client)
        started = time.monotonic()
        trickling.sendall(b"POST /mutate HTTP/1.1\r\n")
        trickling.settimeout(0.1)
        while time.monotonic() - started < 3:  # a byte every 0.1 s: the head deadline is not renewed
            try:
                trickling.sendall(b"X")
                if trickling.recv(100) == b"":
                    break
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                break
        assert time.monotonic() - started < 1.5
        assert _closed_after(stalled, 2.0) < 1.0
        assert client.admit(POD, endpoint="/validate").allowed  # a prompt client is served meanwhile


@pytest.mark.slow
def test_idle_connections_are_closed_after_the_idle_bound(pki: Path) -> None:
    with _InProcessServer(pki, limits=ConnectionLimits(idle_seconds=0.8)) as client:
        never_asked = _open(client)
        kept_alive = _open(client)
        body = _review()
        assert _status(kept_alive, _request_head(length=len(body)) + body) == 200
        started = time.monotonic()
        assert 0.5 < _closed_after(kept_alive, 3.0) < 2.0
        assert time.monotonic() - started < 2.0
        assert _closed_after(never_asked, 1.0) < 1.0


@pytest.mark.slow
def test_a_connection_reused_before_the_idle_bound_is_served(pki: Path) -> None:
    with _InProcessServer(pki, limits=ConnectionLimits(idle_seconds=0.8)) as client:
        tls = _open(client)
        body = _review()
        for _ in range(3):
            assert _status(tls, _request_head(length=len(body)) + body) == 200
            time.sleep(0.4)


def test_heads_larger_or_with_more_headers_than_an_api_server_sends_are_refused(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = _review()
    with _InProcessServer(pki) as client:
        # The reviewer's 100 headers of 8,000 bytes: within aiohttp's defaults.
        huge = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 8000) for n in range(100))
        status = _status(_open(client), _request_head(length=len(body), extra=huge) + body)
        assert status is None or 400 <= status < 500, status
        many = b"".join(b"X-Small-%d: 1\r\n" % n for n in range(40))
        status = _status(_open(client), _request_head(length=len(body), extra=many) + body)
        assert status is None or 400 <= status < 500, status
        # A request line aiohttp cannot parse: a JSON 400 and one warning, no traceback.
        tls = _open(client)
        tls.sendall(b"POST /mutate\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
        tls.settimeout(5)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        head, _, answer = reply.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"application/json" in head, reply[:300]
        assert json.loads(answer)["code"] == 400
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert not any(r.exc_info for r in caplog.records if r.name.startswith("aiohttp"))
        # What an API server may add: a trace header and a long bearer token.
        usual = (b"Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                 b"Authorization: Bearer " + b"t" * 2000 + b"\r\n")
        assert _status(_open(client), _request_head(length=len(body), extra=usual) + body) == 200


def test_connections_beyond_the_cap_are_closed_at_once_and_earlier_ones_work(pki: Path) -> None:
    body = _review()
    request = _request_head(length=len(body)) + body
    with _InProcessServer(pki, limits=ConnectionLimits(max_connections=3)) as client:
        earlier = [_open(client) for _ in range(3)]
        for tls in earlier:  # answered, so the server has counted each
            assert _status(tls, request) == 200
        try:
            refused = _open(client)
        except (ConnectionError, ssl.SSLError):
            pass  # closed before the client saw the handshake end
        else:
            assert _closed_after(refused, 1.0) < 0.5
        for tls in earlier:
            assert _status(tls, request) == 200
        earlier.pop().close()
        time.sleep(0.2)
        assert client.admit(POD, endpoint="/validate").allowed  # a slot was freed


@pytest.mark.slow
def test_a_pipelined_request_whose_head_follows_a_body_is_read_as_a_request(pki: Path) -> None:
    # The second request's head arrives in the same read as the end of the first body;
    # its own body (over the head limit) must be read as a body, and the connection
    # then kept: not answered 431, not dropped by the head timer.
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"] = {"pad": "x" * 40_000}
    body = json.dumps(make_review(pod)).encode()
    limits = ConnectionLimits(head_seconds=0.5, max_head_bytes=16 * 1024)
    with _InProcessServer(pki, limits=limits) as client:
        tls = _open(client)
        tls.sendall(_request_head(length=len(body)) + body[:1000])
        time.sleep(0.2)
        tls.sendall(body[1000:] + _request_head(length=len(body)) + body[:100])
        time.sleep(0.2)
        tls.sendall(body[100:])
        reply = b""
        tls.settimeout(5)
        while reply.count(b"HTTP/1.1 ") < 2 or not reply.endswith(b"}"):
            chunk = tls.recv(65536)
            assert chunk, reply[-200:]
            reply += chunk
        assert [reply[i:i + 12] for i in range(len(reply)) if reply.startswith(b"HTTP/1.1 ", i)] \
            == [b"HTTP/1.1 200", b"HTTP/1.1 200"]
        time.sleep(1.0)  # past the head deadline: the idle connection is still served
        assert _status(tls, _request_head(length=len(body)) + body) == 200
