"""The Namespace API calls of the namespace label cache, with the synchronous `kubernetes`
client: the paged list, the watch stream, what an event holds, and failures as one line.
`webhook.kube.namespace_cache` keeps the state and the thread."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from webhook.core.jsonvalue import as_dict, as_str, str_map

# Namespaces per list page: a cluster's namespaces fit in a few pages.
LIST_PAGE = 500
# The API server ends a watch after this; the cache resumes from its resourceVersion.
# (kube-apiserver picks 30-60 minutes when the client names none; shorter is cheap.)
WATCH_TIMEOUT_SECONDS = 300
CONNECT_TIMEOUT_SECONDS = 5.0
LIST_TIMEOUT_SECONDS = 30.0


class Gone(Exception):
    """410: the resourceVersion is older than the API server still keeps; relist."""


class WatchEnded(Exception):
    """The watch stream stopped without an error event (timeout, idle, dropped)."""


def list_labels(core: Any) -> tuple[dict[str, Mapping[str, str]], str | None]:
    """Every Namespace's labels (paged), and the list's resourceVersion to watch from."""
    labels: dict[str, Mapping[str, str]] = {}
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE}
        if token:
            kwargs["_continue"] = token
        response = core.list_namespace(_preload_content=False, _request_timeout=LIST_TIMEOUT_SECONDS, **kwargs)
        page = json.loads(response.data)
        for item in page.get("items") or []:
            name, item_labels = name_and_labels(item)
            if name:
                labels[name] = item_labels
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            break
    return labels, str(metadata.get("resourceVersion") or "") or None


def open_watch(core: Any, resource_version: str | None, *, idle_timeout: float) -> Any:
    """A watch of Namespaces from `resource_version`, with bookmarks; read it with `watch_lines`."""
    return core.list_namespace(watch=True, resource_version=resource_version,
                               allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_SECONDS,
                               _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_SECONDS, idle_timeout))


def name_and_labels(obj: Mapping[str, Any]) -> tuple[str, Mapping[str, str]]:
    metadata = as_dict(obj.get("metadata"))
    return as_str(metadata.get("name")), MappingProxyType(str_map(metadata.get("labels")))


def watch_lines(response: Any) -> Iterator[str]:
    from kubernetes.watch.watch import iter_resp_lines
    return iter_resp_lines(response)


def is_idle_timeout(exc: BaseException) -> bool:
    from urllib3.exceptions import ProtocolError, ReadTimeoutError
    if isinstance(exc, ReadTimeoutError):
        return True
    return isinstance(exc, ProtocolError) and any(isinstance(a, ReadTimeoutError) or "timed out" in str(a)
                                                  for a in exc.args)


def describe(exc: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    from webhook.kube.client import ClusterError
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or b"{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"namespaces: {exc.status} {exc.reason}{': ' + message if message else ''}"
    if isinstance(exc, MaxRetryError):
        return f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, ClusterError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def client_factory(kubeconfig: Path | None) -> Callable[[], Any]:
    """In-cluster config, else `kubeconfig`, else $KUBECONFIG or ~/.kube/config."""
    def make() -> Any:
        from webhook.kube.client import load_api_client
        return load_api_client(kubeconfig)
    return make
