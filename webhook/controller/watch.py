"""List + watch of pods and their owners into the ClusterState, one thread a resource.

The synchronous `kubernetes` client in threads, as kube/namespace_cache.py does: each
watch blocks on its own socket, the cache's lock is held only to store a reduced record,
and the engine's evaluation of a pod (pure CPU) runs in the thread that received it. An
asyncio client would add a dependency and buy nothing here.

Each resource follows client-go's reflector in small:
- list in pages (`limit`), remember the list's resourceVersion, drop from the cache what
  the list no longer has (deleted while nobody watched), then watch from that version with
  bookmarks; every event and bookmark moves the version on, so a watch that ends (the
  server's timeout, an idle read, a dropped connection) resumes exactly where it stopped
  and no event is lost or applied twice;
- a 410 Gone (the version fell out of the API server's window, or a list `continue` token
  expired) lists again at once: the list's answer is the truth, whatever was missed;
- any other failure is retried from the same version with exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.controller import metrics
from webhook.controller.state import ClusterState, Key
from webhook.kube.client import ApiCallError
from webhook.kube.watching import (CONNECT_TIMEOUT_SECONDS, WATCH_TIMEOUT_SECONDS, Gone, WatchEnded, describe,
                                    is_idle_timeout, watch_lines)

log = logging.getLogger(__name__)

LIST_PAGE = 500
# Silent this long (no event, no bookmark), a watch is presumed dead and resumed.
# kube-apiserver sends a bookmark about every minute to watchers that ask for them.
WATCH_IDLE_SECONDS = 90.0
LIST_TIMEOUT_SECONDS = 60.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0

# resource -> (API class in kubernetes.client, its cluster-wide list method)
LISTERS: dict[str, tuple[str, str]] = {
    "namespaces": ("CoreV1Api", "list_namespace"),
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "replicasets": ("AppsV1Api", "list_replica_set_for_all_namespaces"),
    "deployments": ("AppsV1Api", "list_deployment_for_all_namespaces"),
    "statefulsets": ("AppsV1Api", "list_stateful_set_for_all_namespaces"),
    "daemonsets": ("AppsV1Api", "list_daemon_set_for_all_namespaces"),
    "jobs": ("BatchV1Api", "list_job_for_all_namespaces"),
}
NAMESPACED_LISTERS: dict[str, str] = {
    "pods": "list_namespaced_pod", "replicasets": "list_namespaced_replica_set",
    "deployments": "list_namespaced_deployment", "statefulsets": "list_namespaced_stateful_set",
    "daemonsets": "list_namespaced_daemon_set", "jobs": "list_namespaced_job",
}
# Owners first, so that most pods find their owner already known.
OWNER_RESOURCES = ("replicasets", "deployments", "statefulsets", "daemonsets", "jobs")


def api_for(api_client: Any, resource: str) -> Callable[..., Any]:
    from kubernetes import client
    cls_name, method = LISTERS[resource]
    return getattr(getattr(client, cls_name)(api_client), method)


def list_into(state: ClusterState, api_client: Any, resource: str, *, namespace: str | None = None,
              stop: threading.Event | None = None) -> str:
    """List a resource in pages into the cache, dropping what the list no longer has;
    returns the list's resourceVersion. A 410 (an expired continue token) raises Gone."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    if namespace is None or resource == "namespaces":
        method = api_for(api_client, resource)
        args: tuple[Any, ...] = ()
    else:
        cls_name = LISTERS[resource][0]
        method = getattr(getattr(client, cls_name)(api_client), NAMESPACED_LISTERS[resource])
        args = (namespace,)
    before = {k for k in state.keys(resource) if namespace is None or k[0] == namespace}
    seen: set[Key] = set()
    token: str | None = None
    version = ""
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE}
        if token:
            kwargs["_continue"] = token
        try:
            response = method(*args, _preload_content=False, _request_timeout=LIST_TIMEOUT_SECONDS, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from None
            where = f" in namespace {namespace}" if namespace and resource != "namespaces" else ""
            raise ApiCallError(describe(f"list {resource}{where}", exc), exc.status) from None
        page = orjson.loads(response.data)
        del response
        for item in page.get("items") or ():
            metadata = item.get("metadata") or {}
            seen.add((str(metadata.get("namespace") or ""), str(metadata.get("name") or "")))
            state.upsert(resource, item)
        metadata = page.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        token = metadata.get("continue")
        del page
        if not token or (stop is not None and stop.is_set()):
            break
    state.forget(resource, before - seen)
    if resource == "namespaces":
        state.labels_synced()
    return version


@dataclass
class Reflector:
    """One resource's list + watch, in a thread of its own."""
    resource: str
    state: ClusterState
    client_factory: Callable[[], Any]
    idle_timeout: float = WATCH_IDLE_SECONDS
    watch_timeout: int = WATCH_TIMEOUT_SECONDS
    backoff_initial: float = BACKOFF_INITIAL_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    resource_version: str | None = None
    synced: bool = False
    last_error: str | None = None
    lists: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _relist: threading.Event = field(default_factory=threading.Event)
    _relist_some: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: Any = None
    _synced_event: threading.Event = field(default_factory=threading.Event)
    _backoff: float = BACKOFF_INITIAL_SECONDS
    _namespaces: set[str] = field(default_factory=set)   # to list again, one by one
    _namespaces_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.resource}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def relist(self) -> None:
        """List again soon (new policies, new namespace labels: pods need evaluating again)."""
        self._relist.set()
        self._interrupt()

    def relist_namespaces(self, namespaces: set[str]) -> None:
        """List again the objects in these namespaces only (their pods need evaluating with
        new namespace labels), then resume watching where the watch was."""
        with self._namespaces_lock:
            self._namespaces |= namespaces
        self._relist_some.set()
        self._interrupt()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced_event.wait(timeout)

    def _interrupt(self) -> None:
        response = self._response
        if response is not None:
            try:
                # Shut the socket down: the blocked read returns at once (urllib3 >= 2.3).
                # close() alone waits for the read, up to the idle timeout.
                raw = getattr(response, "response", response)
                shutdown = getattr(raw, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                response.close()
            except Exception:  # noqa: BLE001 - closing from another thread may race its own close
                pass

    def _run(self) -> None:
        self._backoff = self.backoff_initial
        api_client: Any = None
        reason = "initial"
        while not self._stop.is_set():
            try:
                if api_client is None:
                    api_client = self.client_factory()
                if self._relist.is_set():
                    self._relist.clear()
                    self.resource_version, reason = None, "requested"
                if self._relist_some.is_set() and self.resource_version is not None:
                    # The lists answer at least as new as the watch's version; resuming from
                    # it replays what came between in order, so each object ends as it is.
                    self._relist_some.clear()
                    with self._namespaces_lock:
                        namespaces, self._namespaces = self._namespaces, set()
                    for namespace in sorted(namespaces):
                        list_into(self.state, api_client, self.resource, namespace=namespace, stop=self._stop)
                        metrics.LISTS.labels(resource=self.resource, reason="namespace_labels").inc()
                if self.resource_version is None:
                    self.resource_version = list_into(self.state, api_client, self.resource, stop=self._stop)
                    self.lists += 1
                    metrics.LISTS.labels(resource=self.resource, reason=reason).inc()
                    self.synced, self.last_error = True, None
                    self._synced_event.set()
                    self._backoff = self.backoff_initial
                self._watch(api_client)
            except Gone:
                log.info("%s watch expired (410 Gone); listing again", self.resource,
                         extra={"event": "controller_watch", "resource": self.resource})
                self.resource_version, reason = None, "expired"
            except WatchEnded:
                self._backoff = self.backoff_initial
            except Exception as exc:  # noqa: BLE001 - every failure is retried; the reason is kept
                if self._stop.is_set():
                    break
                if self._relist.is_set() or self._relist_some.is_set():
                    continue      # interrupted on purpose
                if getattr(exc, "status", None) == 410:
                    # A watch refused outright with 410 (not as an ERROR event): list again.
                    self.resource_version, reason = None, "expired"
                    continue
                self.last_error = describe(self.resource, exc)
                metrics.WATCH_ERRORS.labels(resource=self.resource).inc()
                log.warning("%s watch: %s; retrying in %.1fs", self.resource, self.last_error, self._backoff,
                            extra={"event": "controller_watch", "resource": self.resource})
                if self.resource_version is None and self.synced:
                    reason = "after_error"
                self._stop.wait(self._backoff * random.uniform(0.8, 1.2))
                self._backoff = min(self._backoff * 2, self.backoff_max)

    def _watch(self, api_client: Any) -> None:
        response = api_for(api_client, self.resource)(
            watch=True, resource_version=self.resource_version, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout, _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, self.idle_timeout))
        self._response = response
        # Connected: the API server answers again, so the next failure starts a fresh backoff.
        self._backoff = self.backoff_initial
        try:
            for line in watch_lines(response):
                if self._stop.is_set() or self._relist.is_set() or self._relist_some.is_set():
                    return
                if line:
                    started = time.thread_time()   # this thread's CPU: parse, evaluate, store
                    kind = self._apply(orjson.loads(line))
                    if kind != "BOOKMARK":
                        metrics.EVENT_CPU.labels(resource=self.resource).observe(time.thread_time() - started)
        except Exception as exc:  # noqa: BLE001
            if (self._stop.is_set() or self._relist.is_set() or self._relist_some.is_set()
                    or is_idle_timeout(exc)):
                raise WatchEnded() from None
            raise
        finally:
            self._response = None
            try:
                response.release_conn()
            except Exception:  # noqa: BLE001 - already closed
                pass
        raise WatchEnded()

    def _apply(self, event: dict[str, Any]) -> str:
        kind = str(event.get("type"))
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        if kind in ("ADDED", "MODIFIED"):
            self.state.upsert(self.resource, obj)
        elif kind == "DELETED":
            self.state.delete(self.resource, obj)
        elif kind != "BOOKMARK":
            raise RuntimeError(f"unexpected watch event type {kind!r}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        return kind


class Watcher:
    """The reflectors the controller needs: owners, pods, and namespaces when a policy
    selects namespaces by label."""

    def __init__(self, state: ClusterState, client_factory: Callable[[], Any], **options: Any) -> None:
        self.state = state
        self._factory = client_factory
        self._options = options
        self.reflectors: dict[str, Reflector] = {}

    def start(self) -> None:
        for resource in ("namespaces", *OWNER_RESOURCES, "pods"):
            if resource == "namespaces" and not self.state.needs_labels:
                continue
            self._start(resource)

    def _start(self, resource: str) -> None:
        reflector = Reflector(resource, self.state, self._factory, **self._options)
        self.reflectors[resource] = reflector
        reflector.start()

    def policies_changed(self) -> None:
        """Evaluate every pod again: start following namespaces if a policy now needs them."""
        if self.state.needs_labels and "namespaces" not in self.reflectors:
            self._start("namespaces")
        pods = self.reflectors.get("pods")
        if pods is not None:
            pods.relist()

    def relist_pods_in(self, namespaces: set[str]) -> None:
        pods = self.reflectors.get("pods")
        if pods is not None:
            pods.relist_namespaces(namespaces)

    def stop(self) -> None:
        for reflector in self.reflectors.values():
            reflector._stop.set()
            reflector._interrupt()
        for reflector in self.reflectors.values():
            reflector.stop()

    @property
    def synced(self) -> bool:
        return bool(self.reflectors) and all(r.synced for r in self.reflectors.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.wait_synced(max(0.0, deadline - time.monotonic())) for r in list(self.reflectors.values()))

    def detail(self) -> dict[str, Any]:
        return {name: {"synced": r.synced, "resourceVersion": r.resource_version, "lists": r.lists,
                       "lastError": r.last_error} for name, r in self.reflectors.items()}


def list_all(state: ClusterState, api_client: Any, *, namespace: str | None = None) -> None:
    """One list of everything the controller follows (`--once`, `webhook status`)."""
    if state.needs_labels:
        list_into(state, api_client, "namespaces")
    for resource in (*OWNER_RESOURCES, "pods"):
        list_into(state, api_client, resource, namespace=namespace)
