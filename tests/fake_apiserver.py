"""An in-process fake of the few Kubernetes API endpoints the cluster commands use.

Not a Kubernetes API server: plain HTTP on 127.0.0.1 (ephemeral port), an aiohttp
app on its own event loop in a background thread, and an in-memory store. It
answers the way kube-apiserver does for the requests `webhook install-ca` and
`webhook report` make:

- Secrets: GET, POST (create), PUT (update, with resourceVersion conflicts and
  immutable `type`), PATCH (JSON patch and merge patch); `stringData` is folded
  into `data` as the real server does.
- Mutating/ValidatingWebhookConfigurations: GET, PATCH.
- Pods: GET list in a namespace and across all namespaces, with `limit` and
  `continue` paging. List items carry no kind/apiVersion, as on a real server.
- Namespaces: GET one, list (paged; the list's resourceVersion is the store's).
- Watches of namespaces and of pods (in one namespace or all), `?watch=true&
  resourceVersion=RV`: the changes after RV as ADDED / MODIFIED / DELETED events, then
  live ones, BOOKMARK events every `bookmark_interval` seconds when
  `allowWatchBookmarks` is set, the stream ended after `timeoutSeconds`. A watch from a
  version older than the retained history (`compact()` forgets it) gets a 200 with one
  ERROR event holding a 410 Expired Status, as kube-apiserver answers;
  `drop_watches()` cuts every open watch connection, `watch_delay` delays events.
  Tests change watched objects with `put` / `set_labels` / `remove`, which record the
  events (writes over HTTP to other kinds record none).
- Errors are `Status` objects (404 NotFound, 409 AlreadyExists/Conflict, 403
  Forbidden, 415, 422 Invalid).

With `rbac` set, every request is authorized against those rules first (Role rules
scoped to their namespace, ClusterRole rules everywhere; `resourceNames` never
match create or list, as in Kubernetes RBAC), and anything else is a 403. Every
request is recorded in `requests` as (verb, resource, namespace, name).

For failure tests: `fail()` makes the next matching requests answer an error
(a 5xx, a 403) without touching the store; `before_request` runs before each request
is handled (to change the store as a concurrent client would); `after_write`
callbacks run after each successful write; `clock_offset` shifts the `Date` header
(an API server whose clock differs from the client's).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from aiohttp import web

ADMISSION = "admissionregistration.k8s.io"
WEBHOOK_CONFIG_KINDS = {"mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
                        "validatingwebhookconfigurations": "ValidatingWebhookConfiguration"}
JSON_PATCH = "application/json-patch+json"
# Resources whose changes are recorded for watches: resource -> kind.
WATCHED = {"namespaces": "Namespace", "pods": "Pod"}
MERGE_PATCH = "application/merge-patch+json"


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


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, name: str = "", kind: str = "",
                 group: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = {"name": name, "group": group, "kind": kind} if name or kind else None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = {k: v for k, v in self.details.items() if v}
        return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class FakeApiServer:
    rbac: list[Rule] | None = None
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    clock_offset: timedelta = timedelta(0)
    before_request: Callable[[str, str, str, str], None] | None = None
    after_write: list[Callable[[str, str, str, str], None]] = field(default_factory=list)
    bookmark_interval: float = 1.0
    # How late watches deliver events (an API server under load; a lagging cache).
    watch_delay: float = 0.0

    def __post_init__(self) -> None:
        # Changes to watched kinds as a watch replays them:
        # (resourceVersion, resource, namespace, type, object).
        self._events: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self._history_start = 0       # a watch from a version below this gets 410 Expired
        self._changed: asyncio.Event | None = None
        self._watches: set[Any] = set()   # transports of open watch streams
        self._failures: list[list[Any]] = []
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

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
            self._loop.call_soon_threadsafe(self._loop.stop)
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
        """Store an object as is (a test fixture), completing its server-set metadata."""
        resource = {"Secret": "secrets", "Pod": "pods", "Namespace": "namespaces",
                    **{v: k for k, v in WEBHOOK_CONFIG_KINDS.items()}}[obj["kind"]]
        obj = copy.deepcopy(obj)
        if resource == "secrets":
            _fold_string_data(obj)
        namespace = obj["metadata"].get("namespace", "") if resource in ("secrets", "pods") else ""
        with self._lock:
            key = (resource, namespace, obj["metadata"]["name"])
            existed = key in self.objects
            self._stamp(obj, new=True)
            self.objects[key] = obj
            if resource in WATCHED:
                self._event(resource, namespace, "MODIFIED" if existed else "ADDED", obj)
        return copy.deepcopy(obj)

    def put_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.put({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name,
                                                               **(labels or {})}},
                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def set_labels(self, name: str, labels: dict[str, str]) -> None:
        """Replace a namespace's labels (kubectl label --overwrite), recording MODIFIED."""
        with self._lock:
            obj = self.objects[("namespaces", "", name)]
            obj["metadata"]["labels"] = {"kubernetes.io/metadata.name": name, **labels}
            self._stamp(obj, new=False)
            self._event("namespaces", "", "MODIFIED", obj)

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: a watch from an older
        version is answered 410 Expired."""
        with self._lock:
            self._history_start = int(next(self._versions))
            self._events.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection (a restarted API server, a load balancer's idle cut)."""
        if self._loop is not None:
            def abort() -> None:
                for transport in list(self._watches):
                    transport.abort()
            self._loop.call_soon_threadsafe(abort)

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def _event(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        """Record a change of a watched kind (under the lock) and wake the watches."""
        self._events.append((int(obj["metadata"]["resourceVersion"]), resource, namespace, kind,
                             copy.deepcopy(obj)))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_watches)

    def _wake_watches(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()
    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def remove(self, resource: str, name: str, namespace: str = "") -> None:
        """Delete an object (as `kubectl delete` would)."""
        with self._lock:
            obj = self.objects.pop((resource, namespace, name))
            if resource in WATCHED:
                obj = copy.deepcopy(obj)
                self._stamp(obj, new=False)
                self._event(resource, namespace, "DELETED", obj)

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
        return [r for r in self.requests if r[0] not in ("get", "list")]

    def _stamp(self, obj: dict[str, Any], *, new: bool) -> None:
        meta = obj.setdefault("metadata", {})
        if new:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta["resourceVersion"] = str(next(self._versions))

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

    async def _dispatch(self, request: web.Request) -> web.Response:
        parts = [p for p in request.path.split("/") if p]
        body = await request.read()
        # /api/v1/namespaces/{ns}/{resource}[/{name}], /api/v1/{resource}[/{name}],
        # /apis/{group}/v1/{resource}[/{name}]
        if parts[:2] == ["api", "v1"] and len(parts) in (5, 6) and parts[2] == "namespaces":
            group, namespace, resource, name = "", parts[3], parts[4], parts[5] if len(parts) == 6 else ""
        elif parts[:2] == ["api", "v1"] and len(parts) in (3, 4):
            group, namespace, resource, name = "", None, parts[2], parts[3] if len(parts) == 4 else ""
        elif len(parts) in (4, 5) and parts[0] == "apis" and parts[2] == "v1":
            group, namespace, resource, name = parts[1], None, parts[3], parts[4] if len(parts) == 5 else ""
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(request.method, request.method.lower())
        if verb == "list" and request.query.get("watch") in ("true", "1"):
            verb = "watch"
        with self._lock:
            self.requests.append((verb, resource, namespace or "", name))
        if self.before_request is not None:
            self.before_request(verb, resource, namespace or "", name)
        self._authorize(verb, group, resource, namespace, name)
        with self._lock:
            for failure in self._failures:
                if failure[4] > 0 and failure[0] == verb and failure[1] == resource and failure[2] in ("", name):
                    failure[4] -= 1
                    raise failure[3]
        key = (group, resource)
        if group == "" and resource in WATCHED and verb == "watch":
            return await self._watch(request, resource, namespace)
        with self._lock:
            if key == ("", "namespaces") and namespace is None and verb in ("get", "list"):
                result = self._namespaces(request, verb, name)
            elif key == ("", "secrets") and namespace is not None:
                result = self._secrets(request, verb, namespace, name, body)
            elif key == ("", "pods") and verb == "list":
                result = self._list_pods(request, namespace)
            elif group == ADMISSION and resource in WEBHOOK_CONFIG_KINDS and verb in ("get", "patch"):
                result = self._webhook_config(request, verb, resource, name, body)
            else:
                raise ApiError(405 if name or verb == "list" else 404, "MethodNotAllowed" if name else "NotFound",
                               f"{verb} {resource} is not supported by the fake API server")
        status, obj = result
        if verb not in ("get", "list"):
            for callback in list(self.after_write):
                callback(verb, resource, namespace or "", name)
        return web.json_response(obj, status=status)

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
            return 200, copy.deepcopy(self.objects[store_key])
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
            return 201, copy.deepcopy(obj)
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
            return 200, copy.deepcopy(new)
        raise ApiError(405, "MethodNotAllowed", f"{verb} secrets is not supported by the fake API server")

    @staticmethod
    def _prepare_secret(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
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
            return 200, copy.deepcopy(current)
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
        return 200, copy.deepcopy(new)

    def _namespaces(self, request: web.Request, verb: str, name: str) -> tuple[int, dict[str, Any]]:
        if verb == "get":
            obj = self.objects.get(("namespaces", "", name))
            if obj is None:
                raise self._not_found("namespaces", name)
            return 200, copy.deepcopy(obj)
        items = [copy.deepcopy(obj) for (resource, _, _), obj in sorted(self.objects.items())
                 if resource == "namespaces"]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0)
        end = start + limit if limit else len(items)
        # The list is as of the newest version written; a watch from it misses nothing.
        meta: dict[str, Any] = {"resourceVersion": str(self._current_version())}
        if end < len(items):
            meta["continue"] = str(end)
        return 200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": meta, "items": items[start:end]}

    def _current_version(self) -> int:
        versions = [int(o["metadata"]["resourceVersion"]) for o in self.objects.values()]
        versions += [e[0] for e in self._events] + [self._history_start]
        return max(versions, default=0)

    async def _watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        raw_version = request.query.get("resourceVersion") or ""
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        transport = request.transport
        if transport is not None:
            self._watches.add(transport)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            with self._lock:
                since = int(raw_version) if raw_version.isdigit() else self._current_version()
                expired = since < self._history_start
                oldest = self._history_start
            if expired:
                await send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                     "message": f"too old resource version: {since} ({oldest})",
                                     "reason": "Expired", "code": 410})
                return response
            loop = asyncio.get_running_loop()
            ends = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while loop.time() < ends:
                if self._changed is None:
                    self._changed = asyncio.Event()
                changed = self._changed
                with self._lock:
                    pending = [(v, k, copy.deepcopy(o)) for v, r, ns, k, o in self._events
                               if v > since and r == resource and namespace in (None, ns)]
                if pending and self.watch_delay:
                    await asyncio.sleep(self.watch_delay)
                for version, kind, obj in pending:
                    await send(kind, obj)
                    since = version
                if bookmarks and loop.time() >= next_bookmark:
                    with self._lock:
                        current = self._current_version()
                    await send("BOOKMARK", {"kind": WATCHED[resource], "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(max(current, since))}})
                    since = max(current, since)
                    next_bookmark = loop.time() + self.bookmark_interval
                wake = min(ends, next_bookmark if bookmarks else ends) - loop.time()
                try:
                    await asyncio.wait_for(changed.wait(), max(wake, 0.001))
                except TimeoutError:
                    pass
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went, or drop_watches() cut the connection
        finally:
            if transport is not None:
                self._watches.discard(transport)
        return response

    def _list_pods(self, request: web.Request, namespace: str | None) -> tuple[int, dict[str, Any]]:
        pods = [copy.deepcopy(obj) for (resource, ns, _), obj in sorted(self.objects.items())
                if resource == "pods" and (namespace is None or ns == namespace)]
        for pod in pods:  # list items carry no kind/apiVersion on a real server either
            pod.pop("kind", None)
            pod.pop("apiVersion", None)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0)
        end = start + limit if limit else len(pods)
        meta: dict[str, Any] = {"resourceVersion": str(next(self._versions))}
        if end < len(pods):
            meta["continue"] = str(end)
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": pods[start:end]}


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return obj


def _apply_patch(current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    try:
        patch = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON patch body: {exc}") from None
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            return jsonpatch.apply_patch(current, patch)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                           f"request: testing value failed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from None
    if content_type == MERGE_PATCH:
        return merge_patch(current, patch)
    raise ApiError(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types include: "
                   f"{JSON_PATCH}, {MERGE_PATCH} (the fake API server does not implement {content_type})")


def _fold_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
