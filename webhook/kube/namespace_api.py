"""The Namespace API calls of the namespace label cache, with the synchronous `kubernetes`
client: the paged list, the watch, and what an event holds (the stream itself:
`webhook.kube.watching`).
`webhook.kube.namespace_cache` keeps the state and the thread."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from webhook.core.jsonvalue import as_dict, as_str, str_map
from webhook.kube.watching import CONNECT_TIMEOUT_SECONDS, WATCH_TIMEOUT_SECONDS

# Namespaces per list page: a cluster's namespaces fit in a few pages.
LIST_PAGE = 500
LIST_TIMEOUT_SECONDS = 30.0


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


def client_factory(kubeconfig: Path | None) -> Callable[[], Any]:
    """In-cluster config, else `kubeconfig`, else $KUBECONFIG or ~/.kube/config."""
    def make() -> Any:
        from webhook.kube.client import load_api_client
        return load_api_client(kubeconfig)
    return make
