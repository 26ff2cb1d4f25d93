"""An in-process fake of the Kubernetes API endpoints the cluster commands and the
controller use.

Not a Kubernetes API server: plain HTTP on 127.0.0.1 (ephemeral port), an aiohttp
app on its own event loop in a background thread, and an in-memory store
(tests/fake_store.py). It answers the way kube-apiserver does where a client depends on it:

- Pods, ConfigMaps, Namespaces, apps/v1 Deployments, ReplicaSets, StatefulSets and
  DaemonSets, batch/v1 Jobs and CronJobs, coordination.k8s.io/v1 Leases, events.k8s.io/v1
  Events: create (generateName too), get, list (in a namespace or across all; `limit` and
  `continue` paging; `labelSelector`; `fieldSelector` on metadata.name, metadata.namespace
  and a few fields per kind), watch, update (PUT), patch (JSON patch, JSON merge patch,
  strategic merge patch: tests/fake_patch.py), delete (with preconditions), and the
  /status subresource of the kinds that have one. List items carry no kind/apiVersion, as
  on a real server. `dryRun=All` validates and stores nothing.
- resourceVersion on every object and list from one cluster-wide counter; 409 Conflict
  for an update with a stale resourceVersion; metadata.generation on workloads; the Pod
  update rule and a few required fields checked, 422 Invalid otherwise; a created pod gets
  the API server's defaults after admission (imagePullPolicy, terminationMessagePath, a
  port's protocol, restartPolicy, ...: tests/fake_kinds.py).
- Watches (`?watch=true&resourceVersion=RV`): the changes after RV as ADDED / MODIFIED /
  DELETED events, then live ones; without RV (or RV 0) first an ADDED for every object,
  as the real server's "get state and start at most recent". With a selector, an object
  that stops matching is sent as DELETED and one that starts matching as ADDED. BOOKMARK
  events every `bookmark_interval` seconds when `allowWatchBookmarks` is set, the stream
  ended after `timeoutSeconds`. A watch from a version older than the retained history
  (`compact()` forgets every change so far; the newest version stays watchable, as etcd
  keeps the compacted revision) gets a 200 with one ERROR event holding a 410 Expired Status,
  as kube-apiserver answers; a list continue token from before a compaction is a 410 too.
  `drop_watches()` cuts every open watch connection, `watch_delay` delays events.
- Secrets: GET, POST (create), PUT (update, with resourceVersion conflicts and
  immutable `type`), PATCH; `stringData` is folded into `data` as the real server does.
  Mutating/ValidatingWebhookConfigurations: GET, PATCH.
- Errors are `Status` objects (404 NotFound, 409 AlreadyExists/Conflict, 403
  Forbidden, 410 Expired, 415, 422 Invalid).

Tests change objects directly with `put` / `set_labels` / `remove` / `update_status`, which
record watch events like writes over HTTP do.

With `rbac` set, every request is authorized against those rules first (Role rules
scoped to their namespace, ClusterRole rules everywhere; `resourceNames` never
match create or list, as in Kubernetes RBAC; a subresource is `pods/status`), and anything
else is a 403. Every request is recorded in `requests` as (verb, resource, namespace, name).

For failure tests: `fail()` makes the next matching requests answer an error
(a 5xx, a 403) without touching the store; `before_request` runs before each request
is handled (to change the store as a concurrent client would); `after_write`
callbacks run after each successful write; `admission` callbacks see each create and
update over HTTP and may change the object or refuse it with an ApiError (an admission
webhook); `clock_offset` shifts the `Date` header (an API server whose clock differs
from the client's).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.fake_kinds import KINDS, RESOURCE_OF_KIND
from tests.fake_patch import JSON_PATCH, MERGE_PATCH, PatchError, apply_patch, merge_patch
from tests.fake_selectors import SelectorError, field_selector, label_selector
from tests.fake_store import ApiError, Change, ObjectStore, clone, not_found

__all__ = ["ADMISSION", "ApiError", "FakeApiServer", "JSON_PATCH", "MERGE_PATCH", "Rule", "merge_patch",
           "rules_from_manifests"]

ADMISSION = "admissionregistration.k8s.io"
WEBHOOK_CONFIG_KINDS = {"mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
                        "validatingwebhookconfigurations": "ValidatingWebhookConfiguration"}
# Served by the generic handlers (secrets and webhook configurations keep their own).
GENERIC = frozenset(KINDS) - {"secrets", *WEBHOOK_CONFIG_KINDS}
Admission = Callable[[str, str, str, dict[str, Any], "dict[str, Any] | None"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule; `namespace` None for a ClusterRole's rule (bound cluster-wide)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str) -> bool:
        if self.namespace is not None and self.namespace != namespace:
            return False
        return ((group in self.api_groups or "*" in self.api_groups)
                and (resource in self.resources or "*" in self.resources)
                and (verb in self.verbs or "*" in self.verbs)
                and (not self.resource_names or (bool(name) and name in self.resource_names)))


def rules_from_manifests(documents: list[dict[str, Any]], service_account: str,
                         sa_namespace: str) -> list[Rule]:
    """The rules granted to a ServiceAccount by the Roles/ClusterRoles bound to it in `documents`."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in documents if d and d.get("kind") in ("Role", "ClusterRole")}
    rules: list[Rule] = []
    for binding in documents:
        if not binding or binding.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                   and s.get("namespace") == sa_namespace for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        binding_ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = binding_ns if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            continue
        for raw in role.get("rules") or []:
            rules.append(Rule(api_groups=frozenset(raw.get("apiGroups") or []),
                              resources=frozenset(raw.get("resources") or []),
                              verbs=frozenset(raw.get("verbs") or []),
                              resource_names=frozenset(raw.get("resourceNames") or []),
                              namespace=binding_ns))
    return rules



@dataclass
class FakeApiServer:
    rbac: list[Rule] | None = None
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    clock_offset: timedelta = timedelta(0)
    before_request: Callable[[str, str, str, str], None] | None = None
    after_write: list[Callable[[str, str, str, str], None]] = field(default_factory=list)
    # (operation CREATE/UPDATE, resource, namespace, object, old object) -> the object to store
    # (None: unchanged); raising ApiError refuses the request, as an admission webhook would.
    admission: list[Admission] = field(default_factory=list)
    bookmark_interval: float = 1.0
    # How late watches deliver events (an API server under load; a lagging cache).
    watch_delay: float = 0.0

    def __post_init__(self) -> None:
        self.store = ObjectStore()
        self._changed: asyncio.Event | None = None
        self._wake_pending = False
        self._watches: set[Any] = set()   # transports of open watch streams
        self._failures: list[list[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def objects(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """(resource, namespace, name) -> object; "" namespace for cluster-scoped kinds."""
        return self.store.objects

    @property
    def _lock(self) -> threading.Lock:
        return self.store.lock

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"fake API server did not start: {errors}")
        return self

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._loop and self._thread:
            loop = self._loop

            def shutdown() -> None:
                # Open watches end first, so the runner's cleanup does not wait for them.
                for transport in list(self._watches):
                    transport.abort()
                self._watches.clear()
                self._wake_watches()
                loop.stop()
            loop.call_soon_threadsafe(shutdown)
            self._thread.join(10)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": namespace}}],
        }))
        return path

    # -- store access for tests ----------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as is (a test fixture: no validation, status kept), completing
        its server-set metadata and recording the watch event."""
        resource = RESOURCE_OF_KIND[obj["kind"]]
        obj = clone(obj)
        if resource == "secrets":
            _fold_string_data(obj)
        namespace = obj["metadata"].get("namespace", "") if KINDS[resource].namespaced else ""
        if KINDS[resource].generation:
            obj["metadata"].setdefault("generation", 1)
        with self._lock:
            key = (resource, namespace, obj["metadata"]["name"])
            previous = self.objects.get(key)
            self.store.stamp(obj, new=True)
            self.objects[key] = obj
            self.store.record(resource, namespace, "ADDED" if previous is None else "MODIFIED", obj, previous)
        self._wake()
        return clone(obj)

    def put_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.put({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name,
                                                               **(labels or {})}},
                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def set_labels(self, name: str, labels: dict[str, str]) -> None:
        """Replace a namespace's labels (kubectl label --overwrite), recording MODIFIED."""
        with self._lock:
            current = self.objects[("namespaces", "", name)]
            obj = clone(current)
            obj["metadata"]["labels"] = {"kubernetes.io/metadata.name": name, **labels}
            self.store.stamp(obj, new=False)
            self.objects[("namespaces", "", name)] = obj
            self.store.record("namespaces", "", "MODIFIED", obj, current)
        self._wake()

    # The same writes as over HTTP, without HTTP (the simulated controllers use these).

    def create(self, resource: str, obj: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        with self._lock:
            out = self.store.create(resource, namespace or (obj.get("metadata") or {}).get("namespace", ""), obj)
        self._wake()
        return out

    def update(self, resource: str, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        meta = obj["metadata"]
        with self._lock:
            out = self.store.update(resource, meta.get("namespace", ""), meta["name"], obj,
                                    subresource=subresource)
        self._wake()
        return out

    def update_status(self, resource: str, name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write an object's status (as its controller or the kubelet does)."""
        with self._lock:
            current = self.objects.get((resource, namespace, name))
            if current is None:
                raise not_found(resource, name)
            out = self.store.update(resource, namespace, name, {**current, "status": status}, subresource="status")
        self._wake()
        return out

    def delete(self, resource: str, name: str, namespace: str = "") -> dict[str, Any]:
        with self._lock:
            out = self.store.delete(resource, namespace, name)
        self._wake()
        return out

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [clone(obj) for (r, ns, _), obj in sorted(self.objects.items())
                    if r == resource and namespace in (None, ns)]

    def snapshot(self, resource: str) -> list[dict[str, Any]]:
        """The stored objects themselves, sorted, without copies: for readers that never
        change what they get (the store replaces an object on each write, never edits it)."""
        with self._lock:
            return [obj for (r, _, _), obj in sorted(self.objects.items()) if r == resource]

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: a watch from an older
        version is answered 410 Expired."""
        with self._lock:
            self.store.compact()

    @property
    def resource_version(self) -> int:
        """The newest version written (what a list answers now)."""
        with self._lock:
            return self._current_version()

    def drop_watches(self) -> None:
        """Cut every open watch connection (a restarted API server, a load balancer's idle cut)."""
        if self._loop is not None:
            def abort() -> None:
                for transport in list(self._watches):
                    transport.abort()
                self._watches.clear()
                self._wake_watches()   # so each stream's handler sees its cut and ends
            self._loop.call_soon_threadsafe(abort)

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def _wake(self) -> None:
        # One wake-up pending at a time: a burst of writes costs the loop one callback.
        if self._loop is not None and not self._loop.is_closed() and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake_watches)

    def _wake_watches(self) -> None:
        self._wake_pending = False
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((resource, namespace, name))
            return clone(obj) if obj is not None else None

    def remove(self, resource: str, name: str, namespace: str = "") -> None:
        """Delete an object (as `kubectl delete` would), recording DELETED."""
        with self._lock:
            obj = self.objects.pop((resource, namespace, name))
            gone = clone(obj)
            self.store.stamp(gone, new=False)
            self.store.record(resource, namespace, "DELETED", gone, obj)
        self._wake()

    def fail(self, verb: str, resource: str, name: str = "", *, code: int = 500,
             reason: str = "InternalError", message: str = "etcdserver: request timed out",
             times: int = 1) -> None:
        """Answer the next `times` requests for (verb, resource[, name]) with this error."""
        with self._lock:
            self._failures.append([verb, resource, name, ApiError(code, reason, message), times])

    def heal(self) -> None:
        """Drop the failures `fail()` armed that have not fired yet (the outage is over)."""
        with self._lock:
            self._failures.clear()

    def writes(self) -> list[tuple[str, str, str, str]]:
        return [r for r in self.requests if r[0] not in ("get", "list", "watch")]

    def _stamp(self, obj: dict[str, Any], *, new: bool) -> None:
        self.store.stamp(obj, new=new)

    def _current_version(self) -> int:
        return max(self.store.last_version, self.store.history_start)

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = web.json_response(exc.status(), status=exc.code)
        if self.clock_offset:
            response.headers["Date"] = format_datetime(datetime.now(timezone.utc) + self.clock_offset,
                                                       usegmt=True)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = _parse_path(request.path)
        group, namespace, resource, name, subresource = path
        body = await request.read()
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(request.method, request.method.lower())
        if verb == "list" and request.query.get("watch") in ("true", "1"):
            verb = "watch"
        full_resource = f"{resource}/{subresource}" if subresource else resource
        with self._lock:
            self.requests.append((verb, full_resource, namespace or "", name))
        if self.before_request is not None:
            self.before_request(verb, full_resource, namespace or "", name)
        self._authorize(verb, group, full_resource, namespace, name)
        with self._lock:
            for failure in self._failures:
                if failure[4] > 0 and failure[0] == verb and failure[1] == full_resource \
                        and failure[2] in ("", name):
                    failure[4] -= 1
                    raise failure[3]
        if resource in GENERIC and KINDS[resource].group == group:
            info = KINDS[resource]
            if info.namespaced and namespace is None and verb not in ("list", "watch"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not info.namespaced and namespace is not None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if verb == "watch":
                return await self._watch(request, resource, namespace)
            status, obj = self._generic(request, verb, resource, namespace or "", name, subresource, body)
        else:
            with self._lock:
                if resource == "secrets" and group == "" and namespace is not None and not subresource:
                    status, obj = self._secrets(request, verb, namespace, name, body)
                elif group == ADMISSION and resource in WEBHOOK_CONFIG_KINDS and verb in ("get", "patch"):
                    status, obj = self._webhook_config(request, verb, resource, name, body)
                elif resource in KINDS and KINDS[resource].group == group:
                    raise ApiError(405, "MethodNotAllowed",
                                   f"{verb} {full_resource} is not supported by the fake API server")
                else:   # a kind the server does not serve (a CRD not installed)
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb not in ("get", "list"):
            for callback in list(self.after_write):
                callback(verb, full_resource, namespace or "", name)
        return web.json_response(obj, status=status)

    def _generic(self, request: web.Request, verb: str, resource: str, namespace: str, name: str,
                 subresource: str, body: bytes) -> tuple[int, dict[str, Any]]:
        dry_run = request.query.get("dryRun") == "All"
        if verb == "list":
            with self._lock:
                return 200, self._list(request, resource, namespace or None)
        if subresource and (subresource != "status" or not KINDS[resource].status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb == "get":
            with self._lock:
                obj = self.objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return 200, clone(obj)
        if verb == "create":
            if subresource:
                raise ApiError(405, "MethodNotAllowed", f"create {resource}/{subresource} is not supported")
            obj = self._admit("CREATE", resource, namespace, _json_body(body), None)
            with self._lock:
                created = self.store.create(resource, namespace, obj, dry_run=dry_run)
            self._wake()
            return 201, created
        if verb in ("update", "patch"):
            with self._lock:
                current = self.objects.get((resource, namespace, name))
            if current is None:
                raise not_found(resource, name)
            if verb == "update":
                new = _json_body(body)
            else:
                new = _apply_patch(current, body, request.content_type)
                # A patch applies to the version it read: never a conflict unless it names one.
                sent = (new.get("metadata") or {}).get("resourceVersion")
                if sent == current["metadata"].get("resourceVersion"):
                    new["metadata"].pop("resourceVersion", None)
            if not subresource:
                new = self._admit("UPDATE", resource, namespace, new, current)
            with self._lock:
                updated = self.store.update(resource, namespace, name, new, subresource=subresource,
                                            dry_run=dry_run)
            self._wake()
            return 200, updated
        if verb == "delete":
            options = _json_body(body) if body.strip() else {}
            with self._lock:
                gone = self.store.delete(resource, namespace, name, preconditions=options.get("preconditions"),
                                         dry_run=dry_run)
            self._wake()
            if resource == "pods":
                return 200, gone   # the pod's delete answers the pod, as its registry does
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": KINDS[resource].group, "kind": resource,
                                     "uid": gone["metadata"]["uid"]}}
        raise ApiError(405, "MethodNotAllowed", f"{verb} {resource} is not supported by the fake API server")

    def _admit(self, operation: str, resource: str, namespace: str, obj: dict[str, Any],
               old: dict[str, Any] | None) -> dict[str, Any]:
        if self.admission:   # a webhook sees the object whole, its kind included
            obj = {**obj, "kind": KINDS[resource].kind, "apiVersion": KINDS[resource].api_version}
            if KINDS[resource].namespaced:
                obj["metadata"] = {**(obj.get("metadata") or {}), "namespace": namespace}
        for review in self.admission:
            changed = review(operation, resource, namespace, clone(obj), clone(old) if old else None)
            if changed is not None:
                obj = changed
        return obj

    def _selection(self, request: web.Request, resource: str,
                   namespace: str | None) -> Callable[[dict[str, Any]], bool]:
        try:
            labels = label_selector(request.query.get("labelSelector") or "")
            fields = field_selector(request.query.get("fieldSelector") or "", resource)
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None

        def selected(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (namespace is None or meta.get("namespace", "") == namespace) and labels(obj) and fields(obj)
        return selected

    def _list(self, request: web.Request, resource: str, namespace: str | None) -> dict[str, Any]:
        """Sorted by (namespace, name); a continue token carries the list's version and the
        last key sent, so a page neither repeats nor skips what was there."""
        selected = self._selection(request, resource, namespace)
        version, after = self._current_version(), ("", "")
        token = request.query.get("continue") or ""
        if token:
            try:
                version, *last = json.loads(base64.urlsafe_b64decode(token.encode()))
                after = (str(last[0]), str(last[1]))
            except (ValueError, TypeError, IndexError, binascii.Error):
                raise ApiError(400, "BadRequest", "continue key is not valid: incorrect encoded start "
                               "resourceVersion (version meta.k8s.io/v1)") from None
            if int(version) < self.store.history_start:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the continue parameter.")
        try:
            limit = int(request.query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "limit: must be an integer") from None
        items = [obj for (r, ns, name), obj in sorted(self.objects.items())
                 if r == resource and (ns, name) > after and selected(obj)]
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and len(items) > limit:
            items = items[:limit]
            last_meta = items[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                [version, last_meta.get("namespace", ""), last_meta["name"]]).encode()).decode()
        out = []
        for obj in items:  # list items carry no kind/apiVersion on a real server either
            item = clone(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            out.append(item)
        info = KINDS[resource]
        return {"kind": f"{info.kind}List", "apiVersion": info.api_version, "metadata": meta, "items": out}

    def _authorize(self, verb: str, group: str, resource: str, namespace: str | None, name: str) -> None:
        if self.rbac is None:
            return
        if any(rule.allows(verb, group, resource, namespace, name) for rule in self.rbac):
            return
        where = f" in the namespace \"{namespace}\"" if namespace else " at the cluster scope"
        raise ApiError(403, "Forbidden",
                       f"{resource}{'.' + group if group else ''} \"{name}\" is forbidden: User "
                       f"\"system:serviceaccount:fake\" cannot {verb} resource \"{resource}\" in API group "
                       f"\"{group}\"{where}", name=name, kind=resource, group=group)

    def _not_found(self, resource: str, name: str, group: str = "") -> ApiError:
        return ApiError(404, "NotFound", f"{resource}{'.' + group if group else ''} \"{name}\" not found",
                        name=name, kind=resource, group=group)

    def _secrets(self, request: web.Request, verb: str, namespace: str, name: str,
                 body: bytes) -> tuple[int, dict[str, Any]]:
        store_key = ("secrets", namespace, name)
        if verb == "get":
            if store_key not in self.objects:
                raise self._not_found("secrets", name)
            return 200, clone(self.objects[store_key])
        if verb == "create":
            obj = _json_body(body)
            obj_name = (obj.get("metadata") or {}).get("name", "")
            if not obj_name:
                raise ApiError(422, "Invalid", "Secret \"\" is invalid: metadata.name: Required value")
            if ("secrets", namespace, obj_name) in self.objects:
                raise ApiError(409, "AlreadyExists", f"secrets \"{obj_name}\" already exists",
                               name=obj_name, kind="secrets")
            obj = self._prepare_secret(obj, namespace)
            obj["metadata"].pop("resourceVersion", None)
            self._stamp(obj, new=True)
            self.objects[("secrets", namespace, obj_name)] = obj
            return 201, clone(obj)
        if verb in ("update", "patch"):
            current = self.objects.get(store_key)
            if current is None:
                raise self._not_found("secrets", name)
            if verb == "update":
                new = _json_body(body)
                sent_version = (new.get("metadata") or {}).get("resourceVersion")
                if sent_version and sent_version != current["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", f"Operation cannot be fulfilled on secrets \"{name}\": "
                                   "the object has been modified; please apply your changes to the "
                                   "latest version and try again", name=name, kind="secrets")
            else:
                new = _apply_patch(current, body, request.content_type)
            if (new.get("metadata") or {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            new = self._prepare_secret(new, namespace)
            if new.get("type", "Opaque") != current.get("type", "Opaque"):
                raise ApiError(422, "Invalid", f"Secret \"{name}\" is invalid: type: Invalid value: "
                               f"\"{new.get('type')}\": field is immutable", name=name, kind="Secret")
            for server_field in ("uid", "creationTimestamp"):
                new["metadata"][server_field] = current["metadata"][server_field]
            self._stamp(new, new=False)
            self.objects[store_key] = new
            return 200, clone(new)
        raise ApiError(405, "MethodNotAllowed", f"{verb} secrets is not supported by the fake API server")

    @staticmethod
    def _prepare_secret(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        obj = clone(obj)
        obj["kind"], obj["apiVersion"] = "Secret", "v1"
        obj.setdefault("type", "Opaque")
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                           "the namespace sent on the request")
        meta["namespace"] = namespace
        _fold_string_data(obj)
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                raise ApiError(400, "BadRequest", f"illegal base64 data in data[{key!r}]") from None
        if obj["type"] == "kubernetes.io/tls" and not {"tls.crt", "tls.key"} <= set(obj.get("data") or {}):
            raise ApiError(422, "Invalid", f"Secret \"{meta.get('name')}\" is invalid: data[tls.crt]: "
                           "Required value", name=meta.get("name", ""), kind="Secret")
        return obj

    def _webhook_config(self, request: web.Request, verb: str, resource: str, name: str,
                        body: bytes) -> tuple[int, dict[str, Any]]:
        store_key = (resource, "", name)
        current = self.objects.get(store_key)
        if current is None:
            raise self._not_found(resource, name, ADMISSION)
        if verb == "get":
            return 200, clone(current)
        new = _apply_patch(current, body, request.content_type)
        if (new.get("metadata") or {}).get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        for webhook in new.get("webhooks") or []:
            bundle = (webhook.get("clientConfig") or {}).get("caBundle")
            if bundle is not None:
                try:
                    base64.b64decode(bundle, validate=True)
                except (ValueError, TypeError):
                    raise ApiError(400, "BadRequest", "caBundle: illegal base64 data") from None
        self._stamp(new, new=False)
        self.objects[store_key] = new
        return 200, clone(new)

    async def _watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        selected = self._selection(request, resource, namespace)
        raw_version = request.query.get("resourceVersion") or ""
        if raw_version and not raw_version.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version: {raw_version!r}")
        try:
            timeout = float(request.query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds: must be an integer") from None
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        info = KINDS[resource]
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        transport = request.transport
        if transport is not None:
            self._watches.add(transport)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            initial: list[dict[str, Any]] = []
            with self._lock:
                if raw_version in ("", "0"):
                    # No version: the current state as ADDED events, then what follows.
                    initial = [clone(obj) for (r, _, _), obj in sorted(self.objects.items())
                               if r == resource and selected(obj)]
                    since = self._current_version()
                else:
                    since = int(raw_version)
                expired = since < self.store.history_start
                oldest = self.store.history_start
            if expired:
                await send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                     "message": f"too old resource version: {since} ({oldest})",
                                     "reason": "Expired", "code": 410})
                return response
            for obj in initial:
                await send("ADDED", obj)
            loop = asyncio.get_running_loop()
            ends = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while loop.time() < ends and not (transport is not None and transport.is_closing()):
                if self._changed is None:
                    self._changed = asyncio.Event()
                changed = self._changed
                with self._lock:
                    changes = [c for c in self.store.changes_after(since) if c.resource == resource]
                    pending = [(c.version, _visible(c, selected)) for c in changes]
                if pending and self.watch_delay:
                    await asyncio.sleep(self.watch_delay)
                for version, event in pending:
                    if event is not None:
                        await send(*event)
                    since = version
                if bookmarks and loop.time() >= next_bookmark:
                    with self._lock:
                        current = self._current_version()
                    await send("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version,
                                            "metadata": {"resourceVersion": str(max(current, since))}})
                    since = max(current, since)
                    next_bookmark = loop.time() + self.bookmark_interval
                wake = min(ends, next_bookmark if bookmarks else ends) - loop.time()
                try:
                    # At most a second between looks at the connection: a client that went
                    # away leaves no handler behind for long.
                    await asyncio.wait_for(changed.wait(), min(max(wake, 0.001), 1.0))
                except TimeoutError:
                    pass
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went, or drop_watches() cut the connection
        finally:
            if transport is not None:
                self._watches.discard(transport)
        return response


def _visible(change: Change, selected: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """The event a watch with this selection sees for a change (None: none); the object
    is the stored one, to be serialized at once and never changed."""
    now = selected(change.obj)
    before = change.previous is not None and selected(change.previous)
    if change.type == "MODIFIED":
        if now and before:
            return "MODIFIED", change.obj
        if now:
            return "ADDED", change.obj
        return ("DELETED", change.obj) if before else None
    if change.type == "DELETED":
        return ("DELETED", change.obj) if (before or now) else None
    return (change.type, change.obj) if now else None


def _parse_path(path: str) -> tuple[str, str | None, str, str, str]:
    """(group, namespace or None, resource, name, subresource) of an API path:
    /api/v1[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]] and
    /apis/{group}/v1[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace: str | None = None
    # /namespaces/{ns}/{resource}... is namespaced; /namespaces[/{name}[/status]] is the Namespace kind.
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return group, namespace, rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""


def _apply_patch(current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    try:
        return apply_patch(current, body, content_type)
    except PatchError as exc:
        raise ApiError(exc.code, exc.reason, exc.message) from None


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return obj


def _fold_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
