"""Access to the API server on the `kubernetes` client: loading a configuration, raw JSON
calls, and error text a human can act on.

Calls read responses with `_preload_content=False` and parse them here, and writes are
JSON patches (plain lists, which the client passes through untouched), so no object makes
a round trip through the client's generated models and fields they do not know survive.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import yaml

REQUEST_TIMEOUT = 30.0
_PAGE = 500
MUTATING, VALIDATING = "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"


class ClusterError(RuntimeError):
    """A failure to report as one line: no configuration, an API error, an unusable object."""


class ApiCallError(ClusterError):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


# -- connecting ---------------------------------------------------------------------------

def load_api_client(kubeconfig: Path | None = None) -> Any:
    """An ApiClient for `kubeconfig` if given; else in-cluster when KUBERNETES_SERVICE_HOST is
    set (a pod's service account), else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                    client_configuration=configuration, persist_config=False)
    except yaml.YAMLError as exc:
        # The kubernetes client lets a YAML error in a kubeconfig through as it is.
        # Its mark names the file read, also when it came from $KUBECONFIG.
        mark = getattr(exc, "problem_mark", None)
        where = f"kubeconfig {mark.name}:{mark.line + 1}" if mark \
            else f"kubeconfig {kubeconfig}" if kubeconfig else "kubeconfig"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ClusterError(f"no usable cluster configuration ({where}): invalid YAML: {one_line(reason)}") \
            from None
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        where = "in-cluster" if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") \
            else f"kubeconfig {kubeconfig}" if kubeconfig else "kubeconfig"
        raise ClusterError(f"no usable cluster configuration ({where}): {one_line(str(exc))}") from None
    return client.ApiClient(configuration)


def one_line(text: str) -> str:
    return " ".join(text.split())


class Kube:
    """The few calls used, as raw JSON in and out, with errors turned into ApiCallError."""

    def __init__(self, api_client: Any, *, timeout: float = REQUEST_TIMEOUT) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.host = api_client.configuration.host
        self.timeout = timeout
        self._server_date: tuple[datetime, float] | None = None   # (Date header, monotonic clock then)

    def call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Any generated client method, raw JSON out, errors as ApiCallError (also for callers
        with calls of their own, such as the controller's writes)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError, MaxRetryError

        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            body = response.data
            self._note_date(response.headers)
        except ApiException as exc:
            self._note_date(exc.headers)
            raise ApiCallError(f"{what}: {_api_error_text(exc)}", exc.status) from None
        except MaxRetryError as exc:
            raise ApiCallError(f"{what}: cannot reach the API server at {self.host}: "
                               f"{_connection_reason(exc.reason)}", None) from None
        except (HTTPError, OSError) as exc:
            raise ApiCallError(f"{what}: cannot reach the API server at {self.host}: "
                               f"{_connection_reason(exc)}", None) from None
        try:
            obj = json.loads(body)
        except ValueError:
            raise ApiCallError(f"{what}: the API server answered with something other than JSON", None) from None
        if not isinstance(obj, dict):
            raise ApiCallError(f"{what}: unexpected answer from the API server", None)
        return obj

    def _note_date(self, headers: Any) -> None:
        try:
            value = headers.get("Date") if headers is not None else None
            date = parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError, AttributeError):
            return
        if date is not None and date.tzinfo is not None:
            self._server_date = (date.astimezone(timezone.utc), time.monotonic())

    def server_now(self) -> datetime | None:
        """The API server's time, from the Date header of its last answer; None without one."""
        if self._server_date is None:
            return None
        date, seen = self._server_date
        return date + timedelta(seconds=time.monotonic() - seen)

    # Secrets
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.call(f"get Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)
        except ApiCallError as exc:
            if exc.status == 404:
                return None
            raise

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(f"create Secret {namespace}/{name}", self.core.create_namespaced_secret,
                          namespace, body)

    def patch_secret(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call(f"patch Secret {namespace}/{name}", self.core.patch_namespaced_secret,
                          name, namespace, ops)

    # Webhook configurations (JSON patch: a list body is sent as application/json-patch+json)
    def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any]:
        read = (self.admission.read_mutating_webhook_configuration if kind == MUTATING
                else self.admission.read_validating_webhook_configuration)
        return self.call(f"get {kind} {name}", read, name)

    def patch_webhook_configuration(self, kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        patch = (self.admission.patch_mutating_webhook_configuration if kind == MUTATING
                 else self.admission.patch_validating_webhook_configuration)
        return self.call(f"patch {kind} {name}", patch, name, ops)

    # Pods
    def list_pods(self, namespace: str | None) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": _PAGE}
            if token:
                paging["_continue"] = token
            if namespace:
                page = self.call(f"list pods in namespace {namespace}", self.core.list_namespaced_pod,
                                  namespace, **paging)
            else:
                page = self.call("list pods in all namespaces", self.core.list_pod_for_all_namespaces, **paging)
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    # Namespaces
    def namespace_labels(self, namespace: str | None) -> dict[str, dict[str, str]]:
        """Name -> labels of one namespace (get) or of all (list)."""
        if namespace:
            items = [self.call(f"get namespace {namespace}", self.core.read_namespace, namespace)]
        else:
            items, token = [], None
            while True:
                paging: dict[str, Any] = {"limit": _PAGE, **({"_continue": token} if token else {})}
                page = self.call("list namespaces", self.core.list_namespace, **paging)
                items += [i for i in page.get("items") or [] if isinstance(i, dict)]
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        out: dict[str, dict[str, str]] = {}
        for item in items:
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            labels = metadata.get("labels") if isinstance(metadata.get("labels"), dict) else {}
            out[str(metadata.get("name") or "")] = {str(k): str(v) for k, v in labels.items()}
        return out


def _api_error_text(exc: Any) -> str:
    """`403 Forbidden: <the Status message>` from an ApiException."""
    message = ""
    try:
        status = json.loads(exc.body) if exc.body else {}
        if isinstance(status, dict):
            message = str(status.get("message") or "")
    except (ValueError, TypeError):
        message = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    text = f"{exc.status} {exc.reason}" if exc.status else str(exc.reason or "request failed")
    return one_line(f"{text}: {message}" if message else text)


def _connection_reason(reason: Any) -> str:
    text = one_line(str(reason))
    # urllib3 prefixes the connection: "HTTPConnection(host=..., port=...): Failed to ..." (or its repr)
    return re.sub(r"^(<[^>]*>|\w+\([^)]*\)):\s*", "", text) or type(reason).__name__
