"""A client that calls the webhook the way kube-apiserver does, and checks answers as it does.

It verifies the serving certificate against the caBundle with the service's DNS
name (`<service>.<namespace>.svc`), sends `?timeout=10s`, a random uid, and applies
the API server's response checks (admission/plugin/webhook/request.VerifyAdmissionResponse).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch

SERVICE_NAME = "webhook.webhook-system.svc"


class ApiServerRejects(AssertionError):
    """The API server would reject this webhook response."""


class _Connection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, server_name: str,
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        # http.client writes a request's head and body separately: without this, Nagle's
        # algorithm holds the body until the server's delayed ACK, 40 ms on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class AdmissionResult:
    review: dict[str, Any]
    response: dict[str, Any]
    patch: list[dict[str, Any]] | None

    @property
    def allowed(self) -> bool:
        return bool(self.response["allowed"])

    def patched(self, obj: dict[str, Any]) -> dict[str, Any]:
        return jsonpatch.apply_patch(obj, self.patch or [], in_place=False)


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, *,
             headers: dict[str, str] | None = None) -> RawResponse:
    """One request and its whole response on `conn`, which stays open."""
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


class ApiServerClient:
    def __init__(self, port: int, ca_file: Path, *, host: str = "127.0.0.1",
                 server_name: str = SERVICE_NAME) -> None:
        self.port, self.host, self.server_name = port, host, server_name
        self.context = client_context(ca_file)

    def connection(self, timeout: float = 15.0) -> http.client.HTTPSConnection:
        """A connection of its own, kept alive across requests until closed."""
        return _Connection(self.host, self.port, context=self.context, server_name=self.server_name,
                           timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, *,
                headers: dict[str, str] | None = None, timeout: float = 15.0) -> RawResponse:
        conn = self.connection(timeout)
        try:
            return exchange(conn, method, path, body, headers=headers)
        finally:
            conn.close()

    def peer_certificate(self) -> dict[str, Any]:
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            with self.context.wrap_socket(sock, server_hostname=self.server_name) as tls:
                return tls.getpeercert()  # type: ignore[return-value]

    def admit(self, obj: dict[str, Any] | None, *, endpoint: str = "/mutate", operation: str = "CREATE",
              namespace: str = "default", api_version: str = "admission.k8s.io/v1",
              old_object: dict[str, Any] | None = None, sub_resource: str | None = None,
              kind: str = "Pod", user: str = "alice", dry_run: bool = False) -> AdmissionResult:
        review = make_review(obj, operation=operation, namespace=namespace, api_version=api_version,
                             old_object=old_object, sub_resource=sub_resource, kind=kind, user=user,
                             dry_run=dry_run)
        raw = self.request("POST", f"{endpoint}?timeout=10s", json.dumps(review).encode(),
                           headers={"Content-Type": "application/json", "Accept": "application/json"})
        return verify_response(review, raw, mutating=endpoint.startswith("/mutate"))


_RESOURCES = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
              "ReplicaSet": ("apps", "v1", "replicasets"), "StatefulSet": ("apps", "v1", "statefulsets"),
              "DaemonSet": ("apps", "v1", "daemonsets"), "Job": ("batch", "v1", "jobs"),
              "CronJob": ("batch", "v1", "cronjobs")}


def make_review(obj: dict[str, Any] | None, *, operation: str = "CREATE", namespace: str = "default",
                api_version: str = "admission.k8s.io/v1", old_object: dict[str, Any] | None = None,
                sub_resource: str | None = None, kind: str = "Pod", user: str = "alice",
                dry_run: bool = False) -> dict[str, Any]:
    group, version, resource = _RESOURCES[kind]
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "uid": "1", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old_object,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    name = (obj or {}).get("metadata", {}).get("name")
    if name:
        request["name"] = name
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def verify_response(review: dict[str, Any], raw: RawResponse, *, mutating: bool) -> AdmissionResult:
    """The API server's checks on a webhook answer; raises ApiServerRejects on any breach."""
    if raw.status != 200:
        raise ApiServerRejects(f"HTTP {raw.status}: {raw.body[:300]!r}")
    try:
        body = json.loads(raw.body)
    except ValueError as exc:
        raise ApiServerRejects(f"response is not JSON: {exc}") from None
    if body.get("apiVersion") != review["apiVersion"] or body.get("kind") != "AdmissionReview":
        raise ApiServerRejects(f"expected webhook response of {review['apiVersion']}, "
                               f"Kind=AdmissionReview, got {body.get('apiVersion')}, Kind={body.get('kind')}")
    response = body.get("response")
    if not isinstance(response, dict):
        raise ApiServerRejects("webhook response was absent")
    if response.get("uid") != review["request"]["uid"]:
        raise ApiServerRejects(f"expected response.uid={review['request']['uid']!r}, got {response.get('uid')!r}")
    if not isinstance(response.get("allowed"), bool):
        raise ApiServerRejects("response.allowed missing or not a boolean")
    has_patch = "patch" in response and response["patch"] not in (None, "")
    has_type = response.get("patchType") not in (None, "")
    patch = None
    if mutating:
        if has_patch and not has_type:
            raise ApiServerRejects("webhook returned response.patch but not response.patchType")
        if has_type and not has_patch:
            # v1 tolerates this, but it means the webhook claims a change it did not send
            raise ApiServerRejects("webhook returned response.patchType but not response.patch")
        if has_type and response["patchType"] != "JSONPatch":
            raise ApiServerRejects(f"webhook returned invalid response.patchType of {response['patchType']!r}")
        if has_patch:
            patch = json.loads(base64.b64decode(response["patch"], validate=True))
            if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
                raise ApiServerRejects("patch is not a JSON array of operations")
            jsonpatch.JsonPatch(patch)  # parses every operation
    elif has_patch or has_type:
        raise ApiServerRejects("validating webhook may not return response.patch")
    for warning in response.get("warnings") or []:
        if not isinstance(warning, str):
            raise ApiServerRejects("warnings must be strings")
    return AdmissionResult(review=body, response=response, patch=patch)
