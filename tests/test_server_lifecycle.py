"""Certificate rotation, start-up refusal, graceful shutdown, and the failure rule."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiserver import ApiServerClient, make_review
from tests.conftest import ROOT, SHIPPED_POLICIES, make_pki
from webhook.pki.certs import generate
from webhook.admission.connections import ConnectionLimits, LimitedSite
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.server import ServerState, create_app
from webhook.runtime.tls import ServingCertificate

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}


def _serial(client: ApiServerClient) -> str:
    return client.peer_certificate()["serialNumber"]


def _wait_for_serial_change(client: ApiServerClient, old: str, timeout: float = 8.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        serial = _serial(client)
        if serial != old:
            return serial
        time.sleep(0.1)
    raise AssertionError("new certificate not served in time")


def test_rotation_in_place_serves_the_new_certificate(start_server, tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    server = start_server(cert_dir=certs)
    before = _serial(server.client)
    generate(certs, service="webhook", namespace="webhook-system", days=30)
    _wait_for_serial_change(server.client, before)
    assert server.client.admit(POD, endpoint="/validate").allowed


def _secret_volume(root: Path, source: Path, version: str) -> None:
    """Lay out files like a Kubernetes Secret volume and swap `..data` atomically."""
    target = root / f"..{version}"
    target.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(source / name, target / name)
    tmp_link = root / "..data_tmp"
    os.symlink(target.name, tmp_link)
    os.replace(tmp_link, root / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)


def test_rotation_through_a_secret_volume_symlink_swap(start_server, tmp_path: Path) -> None:
    issued = make_pki(tmp_path / "issued")
    volume = tmp_path / "volume"
    volume.mkdir()
    _secret_volume(volume, issued, "2026_01")
    server = start_server(cert_dir=volume)
    before = _serial(server.client)
    generate(issued, service="webhook", namespace="webhook-system", days=30)
    _secret_volume(volume, issued, "2026_02")
    after = _wait_for_serial_change(server.client, before)
    assert after != before
    assert server.client.admit(POD, endpoint="/validate").allowed


def test_a_mismatched_pair_is_refused_and_the_old_one_kept(start_server, tmp_path: Path) -> None:
    certs = make_pki(tmp_path / "certs")
    other = shutil.copytree(certs, tmp_path / "other")
    generate(other, service="webhook", namespace="webhook-system", days=30)  # same CA, new pair
    server = start_server(cert_dir=certs)
    before = _serial(server.client)
    shutil.copy(other / "tls.key", certs / "tls.key")  # key of another certificate
    server.wait_for_log(lambda e: e.get("event") == "cert_reload" and e.get("result") == "error")
    assert _serial(server.client) == before
    assert server.client.admit(POD, endpoint="/validate").allowed
    (certs / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")  # half written
    time.sleep(1.5)
    assert _serial(server.client) == before
    shutil.copy(other / "tls.crt", certs / "tls.crt")  # the pair is whole again
    _wait_for_serial_change(server.client, before)


@pytest.mark.process
def test_server_refuses_to_start_without_certificates(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--port", "0",
                             "--cert-dir", str(tmp_path), "--policies", str(SHIPPED_POLICIES)],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 1
    assert "tls.crt not found" in result.stderr
    # The hint is a command that works as given: run it, and the pair is there.
    hint = re.search(r"'(webhook certs generate [^']+)'", result.stderr)
    assert hint, result.stderr
    generated = subprocess.run([sys.executable, "-m", *shlex.split(hint.group(1))],
                               capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "tls.crt").is_file() and (tmp_path / "tls.key").is_file()


def _request_in_flight(server) -> tuple[ssl.SSLSocket, bytes]:
    """A connection holding a request whose head and first 50 body bytes are sent; the rest
    of the body is returned for the test to send."""
    client = server.client
    body = json.dumps(make_review(POD)).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    tls = client.context.wrap_socket(sock, server_hostname=client.server_name)
    tls.sendall(b"POST /validate?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:50])
    return tls, body[50:]


def _finish_and_read_answer(tls: ssl.SSLSocket, rest: bytes) -> dict:
    tls.sendall(rest)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = tls.recv(65536)
        if not chunk:
            break
        reply += chunk
    tls.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def test_sigterm_fails_readiness_then_finishes_in_flight_requests(start_server) -> None:
    server = start_server(args=["--shutdown-delay", "1.5"])
    tls, rest = _request_in_flight(server)   # headers and part of the body sent before SIGTERM
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert server.client.request("GET", "/readyz").status == 503
    assert _finish_and_read_answer(tls, rest)["response"]["allowed"] is True
    assert server.proc.wait(timeout=20) == 0


def test_a_body_still_arriving_when_the_listener_closes_is_read_and_answered(start_server) -> None:
    # An API server's keep-alive connection can bring a request right up to the close:
    # the connection outlives the endpoint's removal. A large pod's body spans many TLS
    # records, so part of it may come after the listener has closed.
    server = start_server(args=["--shutdown-delay", "0.2"])
    tls, rest = _request_in_flight(server)
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:   # until the listener is closed
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the listener did not close")
    time.sleep(0.1)
    started = time.monotonic()
    assert _finish_and_read_answer(tls, rest)["response"]["allowed"] is True
    assert time.monotonic() - started < 2, "answered at once, not at the body deadline"
    assert server.proc.wait(timeout=20) == 0


class _InProcessServer:
    """The real app and TLS stack in a background event loop, with engines (and limits) chosen by the test."""

    def __init__(self, certs: Path, *, limits: ConnectionLimits = ConnectionLimits(), **engines) -> None:
        self.certs = certs
        self.limits = limits
        self.engines = engines
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        async def main() -> None:
            cert = ServingCertificate(self.certs)
            state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=cert,
                                failure_policy=self.engines.pop("failure_policy", "Fail"),
                                max_inflight=self.engines.pop("max_inflight", 256),
                                body_timeout=self.engines.pop("body_timeout", 5.0))
            self.runner = web.AppRunner(create_app(state, **self.engines), handle_signals=False)
            await self.runner.setup()
            site = LimitedSite(self.runner, "127.0.0.1", 0, ssl_context=cert.listening_context, limits=self.limits)
            await site.start()
            self.port = self.runner.addresses[0][1]
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def __enter__(self) -> ApiServerClient:
        self.thread.start()
        assert self.ready.wait(10)
        return ApiServerClient(self.port, self.certs / "ca.crt")

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _boom(request, policies, **_options):
    raise RuntimeError("engine bug")


@pytest.mark.parametrize(("failure_policy", "allowed"), [("Fail", False), ("Ignore", True)])
def test_engine_exception_answers_500_by_the_failure_rule(pki: Path, failure_policy: str, allowed: bool) -> None:
    with _InProcessServer(pki, mutate_engine=_boom, failure_policy=failure_policy) as client:
        result = client.admit(POD)  # still an AdmissionReview the API server accepts
        assert result.allowed is allowed
        assert result.response["status"]["code"] == 500
        assert failure_policy in result.response["status"]["message"]
        assert "Traceback" not in result.response["status"]["message"]
        assert "patch" not in result.response
        assert client.admit(POD, endpoint="/validate").allowed  # the next request succeeds


@pytest.mark.process
def test_options_come_from_environment_variables_and_bad_policies_refuse_start(tmp_path: Path, pki: Path) -> None:
    (tmp_path / "broken.yaml").write_text(
        "apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: x}\n"
        "spec:\n  inject:\n    sidecarz: []\n")
    env = {**os.environ, "WEBHOOK_POLICIES": str(tmp_path), "WEBHOOK_CERT_DIR": str(pki), "WEBHOOK_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "webhook", "serve"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=30)
    assert result.returncode == 1
    assert f"{tmp_path / 'broken.yaml'}:6: x/spec.inject.sidecarz: unknown field" in result.stderr


def _park(client: ApiServerClient, body: bytes, path: str = "/validate") -> ssl.SSLSocket:
    """A request stalled mid-body: headers and 10 bytes sent."""
    sock = socket.create_connection(("127.0.0.1", client.port), timeout=10)
    tls = client.context.wrap_socket(sock, server_hostname=client.server_name)
    tls.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
    return tls


def test_overload_is_shed_at_once_with_429(pki: Path) -> None:
    body = json.dumps(make_review(POD)).encode()
    with _InProcessServer(pki, max_inflight=2) as client:
        parked = [_park(client, body) for _ in range(2)]  # two requests hold their slots
        time.sleep(0.3)
        started = time.monotonic()
        third = _park(client, body)  # a third that would have to wait for its body too
        assert third.recv(1000).startswith(b"HTTP/1.1 429")
        assert time.monotonic() - started < 1.0
        third.close()
        for tls in parked:  # the parked requests still complete
            tls.sendall(body[10:])
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
            tls.close()
        assert client.admit(POD, endpoint="/validate").allowed


@pytest.mark.slow
def test_slow_bodies_neither_turn_prompt_requests_away_nor_keep_their_slots(pki: Path) -> None:
    body = json.dumps(make_review(POD)).encode()
    with _InProcessServer(pki, max_inflight=2, body_timeout=0.8) as client:
        started = time.monotonic()
        # The requester picks `timeout`; it does not extend the body's deadline.
        parked = [_park(client, body, "/validate?timeout=30s") for _ in range(2)]
        time.sleep(0.3)
        # Meanwhile a request sent whole is decided at once, not shed, also when its body
        # comes a TLS record after its head (as a client may write them).
        assert client.admit(POD, endpoint="/validate").allowed
        split = _park(client, body)
        time.sleep(0.02)
        split.sendall(body[10:])
        assert split.recv(100).startswith(b"HTTP/1.1 200")
        split.close()
        for tls in parked:  # each slot is freed at the body deadline
            assert tls.recv(100).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 2.0
            tls.close()
        late = _park(client, body)  # and can be taken again
        time.sleep(0.1)
        late.sendall(body[10:])
        assert late.recv(100).startswith(b"HTTP/1.1 200")
        late.close()


def test_a_bug_outside_the_engine_answers_json_500_and_the_next_request_succeeds(
        pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.admission.server as server_module
    real = server_module.envelope_json
    calls = {"n": 0}

    def fails_once(**kwargs: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transport bug")
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "envelope_json", fails_once)
    with _InProcessServer(pki) as client:
        raw = client.request("POST", "/mutate?timeout=10s", json.dumps(make_review(POD)).encode(),
                             headers={"Content-Type": "application/json"})
        assert raw.status == 500
        assert raw.json() == {"error": "internal error; see the server log", "code": 500}
        assert client.admit(POD).allowed
