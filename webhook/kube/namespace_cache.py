"""Namespace labels for `match.namespaceSelector`: a list + watch cache of the cluster's
Namespaces, kept by a thread with the (synchronous) `kubernetes` client.

An AdmissionReview names the pod's namespace but carries none of its labels, so a
server whose policies select namespaces by label keeps them itself. The cache runs
only while a loaded policy has a namespaceSelector (a reload that adds the first one
starts it, one that removes the last stops it); each worker process keeps its own.

How it follows the API (client-go's reflector, in small):

- list every Namespace (paged), remember the list's resourceVersion, then watch from
  it with bookmarks; each event moves the resourceVersion on, so a watch that ends
  (the server's timeout, an idle read, a dropped connection) resumes where it stopped;
- a 410 Gone (the version fell out of the API server's watch window) relists at once;
- any other failure is retried with exponential backoff and jitter.

What the engine gets for a namespace is its labels, or why they are unknown
(`LabelsUnknown`), never an empty set standing in for "unknown":

- before the first list completes: unknown, pending (worth a brief wait);
- a namespace the cache has not seen: unknown, pending. The NamespaceLifecycle
  admission plugin refuses pods in namespaces that do not exist, so such a pod's
  namespace was created a moment ago and its watch event is on its way;
- when the cache has been unable to reach the API server for MAX_STALE_SECONDS:
  unknown, not pending. Labels rarely change, and a watch reconnects every few
  minutes anyway, so a short outage keeps serving the labels last seen.

The API calls themselves (paged list, watch, error text) are in `namespace_api`.

State is written by the watch thread only; the event loop reads it (single dict
reads and attribute reads, atomic under the GIL). `generation` changes whenever what
a lookup would answer may have changed, so the server can empty its decision memo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from webhook.engine.namespaces import LabelsUnknown, NamespaceLabels, needs_namespace_labels
from webhook.kube.namespace_api import client_factory, list_labels, name_and_labels, open_watch
from webhook.kube.watching import Gone, WatchEnded, describe, is_idle_timeout, watch_lines
from webhook.runtime.metrics import NAMESPACE_CACHE_ERRORS as ERRORS
from webhook.runtime.metrics import NAMESPACE_CACHE_LISTS as LISTS
from webhook.runtime.metrics import NAMESPACE_CACHE_NAMESPACES as NAMESPACES
from webhook.runtime.metrics import NAMESPACE_CACHE_STATE as STATE
from webhook.policy.loader import PolicySet

__all__ = ["PENDING_WAIT_SECONDS", "NamespaceCache", "client_factory", "needs_namespace_labels"]

log = logging.getLogger(__name__)

# A watch that has sent nothing (no event, no bookmark) for this long is presumed dead
# and resumed. kube-apiserver sends a bookmark about every minute to watchers that ask.
WATCH_IDLE_SECONDS = 90.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# Out of touch with the API server this long, the cache answers "unknown" (and the
# failure rule decides): its labels may be that much out of date.
MAX_STALE_SECONDS = 30.0
# How long a request for a namespace the cache does not know yet waits for it.
PENDING_WAIT_SECONDS = 2.0

STATES = ("off", "syncing", "synced", "stale")


class NamespaceCache:
    def __init__(self, client_factory: Callable[[], Any], *, max_stale: float = MAX_STALE_SECONDS,
                 backoff_max: float = BACKOFF_MAX_SECONDS, idle_timeout: float = WATCH_IDLE_SECONDS) -> None:
        """`client_factory()` returns a kubernetes ApiClient; called in the thread, so that
        a configuration that cannot be loaded is a cache error like any other."""
        self._client_factory = client_factory
        self.max_stale = max_stale
        self.backoff_max = backoff_max
        self.idle_timeout = idle_timeout
        self._labels: dict[str, Mapping[str, str]] = {}
        self.resource_version: str | None = None
        self.synced = False
        self.running = False
        self.generation = 0
        self.last_error: str | None = None
        self.last_sync: float | None = None      # wall clock of the last completed list
        self._out_of_touch_since: float | None = None   # monotonic
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._response: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._set_state_metric()

    # -- what the engine reads -----------------------------------------------------------

    @property
    def stale(self) -> bool:
        since = self._out_of_touch_since
        return self.synced and since is not None and time.monotonic() - since > self.max_stale

    @property
    def state(self) -> str:
        if not self.running:
            return "off"
        if not self.synced:
            return "syncing"
        return "stale" if self.stale else "synced"

    def labels_for(self, namespace: str) -> NamespaceLabels:
        if not self.running:
            return LabelsUnknown("the namespace label cache is not running", pending=True)
        if not self.synced:
            why = f": {self.last_error}" if self.last_error else ""
            return LabelsUnknown(f"the namespace label cache has not synced yet{why}", pending=True)
        if self.stale:
            return LabelsUnknown(f"the namespace label cache lost the API server "
                                 f"{time.monotonic() - (self._out_of_touch_since or 0):.0f}s ago: {self.last_error}")
        labels = self._labels.get(namespace)
        if labels is None:
            return LabelsUnknown("the namespace is not in the namespace label cache", pending=True)
        return labels

    def memo_epoch(self) -> tuple[int, bool]:
        """Changes whenever a lookup's answer may have: the decision memo empties on it."""
        return self.generation, self.stale

    def detail(self) -> dict[str, Any]:
        """For /readyz."""
        out: dict[str, Any] = {"state": self.state}
        if self.running:
            out.update(namespaces=len(self._labels), resourceVersion=self.resource_version,
                       lastError=self.last_error,
                       lastSync=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_sync))
                       if self.last_sync else None)
        return out

    async def wait_known(self, namespace: str, timeout: float) -> None:
        """Return once `namespace`'s labels are no longer pending, or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.labels_for(namespace)
            left = deadline - time.monotonic()
            if not (isinstance(found, LabelsUnknown) and found.pending) or left <= 0:
                return
            if self._changed is None or not self.running:
                # Not started yet: a reload that adds the first namespaceSelector swaps the
                # policies in before it starts the cache.
                await asyncio.sleep(min(0.05, left))
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return

    # -- lifecycle -----------------------------------------------------------------------

    def ensure(self, policies: PolicySet) -> None:
        """Run while `policies` need namespace labels; call on the event loop."""
        needed = needs_namespace_labels(policies)
        if needed and not self.running:
            self.start()
        elif not needed and self.running:
            self.stop()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop = threading.Event()
        self._labels, self.resource_version, self.synced = {}, None, False
        self._out_of_touch_since, self.last_error = None, None
        self.running = True
        self._bump()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="namespace-cache",
                                        daemon=True)
        self._thread.start()
        log.info("namespace label cache starting: a policy matches namespaces by label",
                 extra={"event": "namespace_cache", "state": "syncing"})

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.close()   # unblocks the thread's read
            except Exception:  # noqa: BLE001 - closing from another thread may race its own close
                pass
        self._bump()
        log.info("namespace label cache stopped: no policy matches namespaces by label",
                 extra={"event": "namespace_cache", "state": "off"})

    # -- the thread ------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        backoff = BACKOFF_INITIAL_SECONDS
        core: Any = None
        list_reason = "initial"
        while not stop.is_set():
            try:
                if core is None:
                    from kubernetes import client
                    core = client.CoreV1Api(self._client_factory())
                if self.resource_version is None:
                    self._list(core, stop)
                    LISTS.labels(reason=list_reason).inc()
                self._watch(core, stop)
            except Gone:
                list_reason = "expired"
                self.resource_version = None
                log.info("namespace watch expired (410 Gone); listing again", extra={"event": "namespace_cache"})
                continue
            except WatchEnded:
                backoff = BACKOFF_INITIAL_SECONDS
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is retried; the reason is kept
                if stop.is_set():
                    break
                if getattr(exc, "status", None) == 410:   # an expired list `continue` token, or
                    list_reason = "expired"               # a watch refused outright
                    self.resource_version = None
                    continue
                self._failed(describe("namespaces", exc))
                if self.resource_version is None and self.synced:
                    list_reason = "after_error"
                stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.backoff_max)
                continue

    def _list(self, core: Any, stop: threading.Event) -> None:
        labels, version = list_labels(core)
        if stop.is_set():
            return
        changed = labels != self._labels
        self._labels = labels
        self.resource_version = version
        first = not self.synced
        self.synced = True
        self.last_sync = time.time()
        self._in_touch()
        NAMESPACES.set(len(labels))
        if changed or first:
            self._bump()
        if first:
            log.info("namespace label cache synced: %d namespaces", len(labels),
                     extra={"event": "namespace_cache", "state": "synced"})

    def _watch(self, core: Any, stop: threading.Event) -> None:
        response = open_watch(core, self.resource_version, idle_timeout=self.idle_timeout)
        self._response = response
        self._in_touch()
        try:
            for line in watch_lines(response):
                if stop.is_set():
                    return
                if line:
                    self._apply(json.loads(line))
        except Exception as exc:  # noqa: BLE001
            if is_idle_timeout(exc):
                raise WatchEnded() from None
            raise
        finally:
            self._response = None
            response.release_conn()
        raise WatchEnded()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            name, labels = name_and_labels(obj)
            if name and self._labels.get(name) != labels:
                self._labels[name] = labels
                self._bump()
        elif kind == "DELETED":
            name, _ = name_and_labels(obj)
            if self._labels.pop(name, None) is not None:
                self._bump()
        elif kind != "BOOKMARK":
            raise RuntimeError(f"unexpected watch event type {kind!r}")
        if version:
            self.resource_version = str(version)
        NAMESPACES.set(len(self._labels))

    def _in_touch(self) -> None:
        was_stale = self.stale
        self._out_of_touch_since = None
        if was_stale:
            log.info("namespace label cache back in touch with the API server",
                     extra={"event": "namespace_cache", "state": "synced"})
            self._bump()
        self.last_error = None

    def _failed(self, reason: str) -> None:
        ERRORS.inc()
        was_stale = self.stale
        if self._out_of_touch_since is None:
            self._out_of_touch_since = time.monotonic()
        self.last_error = reason
        log.warning("namespace label cache: %s", reason, extra={"event": "namespace_cache", "state": self.state})
        if self.stale != was_stale:
            self._bump()
        else:
            self._set_state_metric()

    def _bump(self) -> None:
        """Something a lookup answers changed: tell the memo and any request waiting."""
        self.generation += 1
        self._set_state_metric()
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass  # the loop is closed: the server is stopping

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = asyncio.Event()
            changed.set()

    def _set_state_metric(self) -> None:
        current = self.state
        for state in STATES:
            STATE.labels(state=state).set(1 if state == current else 0)
