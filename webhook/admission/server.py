"""HTTP transport: routes, body limits, JSON errors. Thin by design: parse, decide, answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestPayloadError

from webhook.core import decision as decisions
from webhook.runtime import metrics
from webhook.admission.connections import head_arrived
from webhook.core.decision import Decision
from webhook.engine import mutate, validate
from webhook.engine.bounds import DeadlineExceeded
from webhook.admission.memo import DEFAULT_MAX_ENTRIES, DecisionMemo, FieldPath, compact
from webhook.engine.namespaces import NamespaceLabelsUnavailable
from webhook.core.jsonvalue import as_dict, dicts_in
from webhook.runtime.logs import LIST_SHOWN_MAX, cut_items, cut_message, shown
from webhook.kube.namespace_cache import PENDING_WAIT_SECONDS, NamespaceCache
from webhook.runtime.policy_holder import PolicyHolder
from webhook.policy.loader import PolicySet
from webhook.admission.review import (MAX_REVIEW_DEPTH, envelope_json, nests_deeper_than, read_envelope,
                                      response_fields)
from webhook.core.request import BadReview, operation_of, request_uid
from webhook.core.request import AdmissionRequest
from webhook.runtime.tls import ServingCertificate

log = logging.getLogger(__name__)

# etcd stores objects of at most 1.5 MiB and the API server refuses request bodies
# over 3 MiB; a review carries the object and, on UPDATE, the oldObject, in JSON,
# which is larger than etcd's protobuf. 8 MiB admits every real review and stops a
# runaway body before it is buffered.
MAX_BODY_BYTES = 8 * 1024 * 1024
# The API server's own deadline is the `timeout` query parameter (default 10s, max 30s).
DEFAULT_DEADLINE_SECONDS = 10.0
MAX_DEADLINE_SECONDS = 30.0
# How much earlier than the deadline we answer (capped at a tenth of it).
DEADLINE_MARGIN_SECONDS = 0.5
# Requests a worker holds at once while their bodies arrive before it sheds new ones
# with 429. Answers take about a millisecond, so hundreds waiting means clients are
# stalling or the worker cannot keep up; either way, queueing more only converts them
# to timeouts. A request whose body has all arrived holds no slot and is never shed:
# it is decided at once, without waiting, so it queues nothing (slow senders cannot
# turn prompt requests away).
DEFAULT_MAX_INFLIGHT = 256
# A body still arriving this long after its head gets 408 and frees its slot. The API
# server writes the body with the head, so this is ample even for 8 MiB; the client's
# `timeout` cannot raise it (else 256 slow senders hold every slot for 30 s, again and again).
BODY_TIMEOUT_SECONDS = 5.0
# Per-request counts and latencies are added to the Prometheus metrics this often (and
# before every scrape of this worker), not one locked update per metric per request.
METRICS_FOLD_SECONDS = 1.0
# Answers larger than this go to TLS one piece at a time. asyncio encrypts each write
# whole into the connection's outgoing memory buffer, and that buffer keeps its largest
# size for the connection's life: a 94 KB answer (a 50-container mutation) left about
# 125 KB on every keep-alive connection that ever carried one (4 MiB of a worker's RSS
# with 32 connections). One piece is one full TLS record, encrypted and sent before
# the next.
TLS_WRITE_PIECE_BYTES = 16 * 1024
# Writes to TLS (the headers count as one) before the event loop gets a turn. A client
# that has gone (reset, or closed while we decided) is seen by asyncio's socket at once,
# by aiohttp only a loop turn later; in between asyncio drops each write and logs a
# warning from the fifth on. A turn after every piece cost a 50-container mutation
# about 15 % more CPU, after every fourth write about 6 %.
WRITES_PER_LOOP_TURN = 4
# Requests that may wait at once for a namespace's labels (see ServerState.namespace_waits).
DEFAULT_MAX_NAMESPACE_WAITS = 32
_TIMEOUT_PARAM = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")

# (request, policies, *, deadline=..., namespace_labels=...) -> Decision; the deadline is a
# time.perf_counter() time, past which the engine raises DeadlineExceeded.
Engine = Callable[..., Decision]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServerState:
    policies: PolicyHolder
    certificate: ServingCertificate | None
    # Failure rule for an unexpected exception in decision logic: with "Fail" the pod
    # is denied (status 500), with "Ignore" it is admitted unchanged (status 500).
    failure_policy: str = "Fail"
    draining: bool = False
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    inflight: int = 0  # requests waiting for the rest of their bodies
    body_timeout: float = BODY_TIMEOUT_SECONDS
    # Identical pods (one rollout's replicas) are decided once; see engine/memo.py.
    memo: DecisionMemo[Answer] = field(default_factory=lambda: answer_memo())  # defined below
    tally: metrics.Tally = field(default_factory=lambda: metrics.Tally(_fold_counts))
    # Namespace labels for policies with a namespaceSelector (running only while one is loaded).
    namespaces: NamespaceCache | None = None
    # Readiness waits for the cache's first sync when the policies at start need it (set by serve).
    wait_for_namespaces: bool = False
    # The cache's memo_epoch() that the memo's entries were decided under.
    memo_epoch: tuple[int, bool] | None = None
    # Requests waiting for a namespace's labels, and how many may (more: the failure rule at once).
    # The API server sends pods of existing namespaces only, so many waiting means a client
    # other than the API server, or a cache far behind; each holds its body (up to 8 MiB).
    namespace_waits: int = 0
    max_namespace_waits: int = DEFAULT_MAX_NAMESPACE_WAITS


@dataclass(frozen=True, eq=False, slots=True)
class Answer:
    """A decision's response, ready for the wire but for the uid; a remembered one answers
    many requests, so it is serialised (and its patch encoded) once."""

    fields_json: bytes  # the AdmissionResponse's fields but the uid, serialised
    # The decision for the log line, without its patch and with only the violations the
    # line shows: the line names what was applied, and a remembered answer is weighed by
    # fields_json alone, so it must not keep the patch twice or a violation per container.
    logged: Decision
    # What the answer adds to the metrics, as plain values (the outcome first; violations
    # as (policy, rule, action) with how many): the metrics tally keeps this (not the
    # answer, which may hold a large patch) until it folds.
    counted: tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[tuple[str, str, str], int], ...]]
    violations: int  # how many the decision found, for the log line

    @property
    def outcome(self) -> str:
        return self.counted[0]


def answer_memo(max_entries: int = DEFAULT_MAX_ENTRIES) -> DecisionMemo[Answer]:
    """A memo of answers, bounded by what their serialised responses hold as well."""
    return DecisionMemo(max_entries=max_entries, weight=lambda answer: len(answer.fields_json))


def _answer(decision: Decision, *, mutating: bool) -> Answer:
    outcome = _outcome(decision)
    violations = decision.violations
    counted = (outcome, decision.applied_policies if decision.patch else (), decision.shadow_policies,
               tuple(Counter((v.policy, v.rule, v.action) for v in violations).items()))
    fields_json = compact(orjson.dumps(response_fields(decision, mutating=mutating)))
    logged = decision
    if decision.patch or len(violations) > LIST_SHOWN_MAX:
        logged = replace(decision, patch=None, violations=violations[:LIST_SHOWN_MAX])
    return Answer(fields_json, logged, counted, len(violations))


STATE = web.AppKey("state", ServerState)


def create_app(state: ServerState, *, mutate_engine: Engine = mutate,
               validate_engine: Engine = validate, serve_metrics: bool = True) -> web.Application:
    """The engines are parameters so that tests can put a failing one behind the real server.
    Without `serve_metrics`, /metrics answers 404 here: create_metrics_app serves it on a port
    of its own, which a NetworkPolicy can restrict."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.cleanup_ctx.append(_fold_metrics)
    # Every error leaves as JSON with a message, never an HTML page or a traceback. Not by
    # a middleware: that wraps every request in one more coroutine (about 7 µs each, 5% of
    # the no-op baseline's cost per request). Handlers catch their own errors, and the
    # catch-all routes below answer other methods and paths.
    routes: list[tuple[str, str, Handler]] = [
        ("/mutate", "POST", _admission_handler("mutate", mutate_engine, mutating=True)),
        ("/validate", "POST", _admission_handler("validate", validate_engine, mutating=False)),
        ("/healthz", "GET", _guarded(_healthz)),
        ("/readyz", "GET", _guarded(_readyz)),
        ("/metrics", "GET", _guarded(_metrics) if serve_metrics else _metrics_elsewhere),
    ]
    for path, method, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD
            allowed = ["GET", "HEAD"]
        else:
            app.router.add_route(method, path, handler)
            allowed = [method]
        app.router.add_route("*", path, _method_not_allowed(allowed))
    app.router.add_route("*", "/{path:.*}", _not_found)
    return app


def create_metrics_app(state: ServerState) -> web.Application:
    """GET /metrics alone, for the plain-HTTP metrics listener (--metrics-port)."""
    app = web.Application(client_max_size=1024)  # GET only: no body is read
    app[STATE] = state
    app.router.add_get("/metrics", _guarded(_metrics))
    app.router.add_route("*", "/metrics", _method_not_allowed(["GET", "HEAD"]))
    app.router.add_route("*", "/{path:.*}", _metrics_port_not_found)
    return app


async def _metrics_elsewhere(request: web.Request) -> web.Response:
    return _error(404, "/metrics is served on the metrics port (--metrics-port), not on this one")


async def _metrics_port_not_found(request: web.Request) -> web.Response:
    return _error(404, f"no such path {request.path}; this port serves only /metrics")


async def _send_in_pieces(request: web.Request, response: web.Response, body: bytes) -> web.StreamResponse:
    """Send `response`, whose body is `body`, in pieces of TLS_WRITE_PIECE_BYTES with the same
    status, headers and Content-Length; aiohttp finds it already sent. Admission answers
    only: they answer a POST (a HEAD would have to go without the body)."""
    pieces = web.StreamResponse(status=response.status, headers=response.headers)
    pieces.content_length = len(body)
    view = memoryview(body)
    try:
        await pieces.prepare(request)
        # Write 1 was the headers, sent by prepare().
        for n, start in enumerate(range(0, len(body), TLS_WRITE_PIECE_BYTES), 2):
            await pieces.write(view[start:start + TLS_WRITE_PIECE_BYTES])
            if n % WRITES_PER_LOOP_TURN == 0:
                await asyncio.sleep(0)
        await pieces.write_eof()
    except ConnectionError:
        pass  # the client left mid-answer; aiohttp closes the connection, as for any answer
    return pieces


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message, "code": status})


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, "internal error; see the server log")


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception:
            return _internal_error(request)

    return guarded


def _method_not_allowed(allowed: list[str]) -> Handler:
    async def refuse(request: web.Request) -> web.Response:
        response = _error(405, f"method {request.method} not allowed; use {', '.join(allowed)}")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    return refuse


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, f"no such path {request.path}; admission endpoints are /mutate and /validate")


# Query strings up to this long are remembered (the API server's is "timeout=10s"): the
# cache then holds at most 64 of them, whatever clients send.
_CACHED_QUERY_MAX = 128


def _deadline(query_string: str) -> float:
    """Seconds from the `timeout` query parameter. The API server sends the same query on
    every call of one webhook, so the parse is remembered by the raw query string."""
    if len(query_string) <= _CACHED_QUERY_MAX:
        return _cached_deadline(query_string)
    return _parse_deadline(query_string)


@functools.lru_cache(maxsize=64)
def _cached_deadline(query_string: str) -> float:
    return _parse_deadline(query_string)


def _parse_deadline(query_string: str) -> float:
    raw = next((v for k, v in urllib.parse.parse_qsl(query_string) if k == "timeout"), "")
    match = _TIMEOUT_PARAM.match(raw)
    if not match:
        return DEFAULT_DEADLINE_SECONDS
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return min(max(value, 0.1), MAX_DEADLINE_SECONDS)


def _admission_handler(endpoint: str, engine: Engine, *, mutating: bool) -> Handler:
    # One coroutine per request, awaiting only the body; the rest is plain calls (every
    # coroutine frame in the chain is paid again each time the request resumes).
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            state = request.app[STATE]
            # The deadline runs from when the request's head was read, not from when the
            # event loop got to this handler: requests read in one turn of the loop wait
            # for each other's decisions, and the API server's clock started before either.
            started = head_arrived(request) or time.perf_counter()
            budget = _deadline(request.query_string)
            # Answer a little before the API server gives up, so that a late answer is
            # still a decision (by the failure rule) rather than a timeout.
            answer_by = started + budget - min(DEADLINE_MARGIN_SECONDS, budget / 10)
            refusal = _refuse_before_reading(request, endpoint)
            if refusal is not None:
                return refusal
            try:
                if request.content.is_eof():  # the whole body already arrived: read without waiting
                    body = await request.read()
                else:
                    if state.inflight >= state.max_inflight and not await _arrives(request.content):
                        # Shed at once: a queue the API server cannot wait for only turns overload
                        # into timeouts. A non-200 answer lets the webhook's failurePolicy decide.
                        metrics.SHED.labels(endpoint=endpoint).inc()
                        response = _error(429, f"overloaded: {state.inflight} requests in flight; retry")
                        response.headers["Retry-After"] = "1"
                        return response
                    # Counted while waiting for the body; deciding does not yield to other requests.
                    state.inflight += 1
                    try:
                        async with asyncio.timeout(min(answer_by, started + state.body_timeout)
                                                   - time.perf_counter()):
                            body = await request.read()
                    finally:
                        state.inflight -= 1
            except web.HTTPRequestEntityTooLarge:
                return _bad(endpoint, 413, f"body exceeds the {MAX_BODY_BYTES} byte limit")
            except TimeoutError:
                return _bad(endpoint, 408, "timed out reading the request body")
            except RequestPayloadError:
                # A body aiohttp could not decode (Content-Encoding gzip or deflate on bytes
                # that are not). The parser is left mid-body, so the connection is closed.
                request.content.feed_eof()  # nothing left for aiohttp to drain after the answer
                response = _bad(endpoint, 400, f"the body is not what its Content-Encoding "
                                f"{shown(request.headers.get('Content-Encoding', ''))!r} says: it could not be decoded")
                response.force_close()
                return response
            response = _admit(body, state, endpoint, engine, mutating, started, answer_by)
            if isinstance(response, _Pending):
                # A namespace created a moment ago (its watch event is on its way), or a cache
                # still syncing: wait briefly, then decide again (by the failure rule if still unknown).
                # A waiting request keeps its body, so only so many wait at once.
                wait = min(PENDING_WAIT_SECONDS, answer_by - time.perf_counter())
                if wait > 0 and state.namespaces is not None and state.namespace_waits < state.max_namespace_waits:
                    state.namespace_waits += 1
                    try:
                        await state.namespaces.wait_known(response.namespace, wait)
                    finally:
                        state.namespace_waits -= 1
                response = _admit(body, state, endpoint, engine, mutating, started, answer_by, may_wait=False)
            assert isinstance(response, web.Response)
        except Exception:  # a bug outside the decision logic (that one has a failure rule)
            return _internal_error(request)
        body = response.body
        if isinstance(body, bytes) and len(body) > TLS_WRITE_PIECE_BYTES:
            return await _send_in_pieces(request, response, body)
        return response

    return handle


# A prompt sender's body may be a TLS record behind its head: before shedding it, wait
# this long for the body to have arrived (it is then decided without a slot).
SHED_GRACE_SECONDS = 0.05


async def _arrives(content: StreamReader) -> bool:
    """Whether the body is all in within SHED_GRACE_SECONDS. Awaited, not read: the bytes
    stay in aiohttp's buffer, whose flow control bounds them, so a body larger than that
    buffer never arrives this way and is shed as before. Only runs while overloaded."""
    try:
        async with asyncio.timeout(SHED_GRACE_SECONDS):
            await content.wait_eof()
    except TimeoutError:
        return False
    return True


# aiohttp decodes these itself (and would pass any other coding through undecoded).
# Its size limit applies to the decoded body.
_CONTENT_ENCODINGS = frozenset({"identity", "gzip", "deflate"})


def _refuse_before_reading(request: web.Request, endpoint: str) -> web.Response | None:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return _bad(endpoint, 413, f"body of {length} bytes exceeds the {MAX_BODY_BYTES} byte limit")
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() not in _CONTENT_ENCODINGS:
        return _bad(endpoint, 415, f"Content-Encoding {shown(encoding)!r} is not supported; "
                    f"send {', '.join(sorted(_CONTENT_ENCODINGS))} (the API server sends none)")
    if request.headers.get("Content-Type") != "application/json" and \
            request.content_type not in ("application/json", "application/octet-stream") and request.body_exists:
        return _bad(endpoint, 415, f"content type {request.content_type!r} is not supported; "
                    "send application/json")
    return None


class _Pending(NamedTuple):
    """The request needs the labels of a namespace the cache may know in a moment."""

    namespace: str


def _admit(body: bytes, state: ServerState, endpoint: str, engine: Engine, mutating: bool, started: float,
           answer_by: float, *, may_wait: bool = True) -> web.Response | _Pending:
    policies = state.policies.current  # one read: the whole request sees one set
    namespaces = state.namespaces
    if namespaces is not None:
        # The memo keys on the request, which holds the namespace's name, not its labels.
        epoch = namespaces.memo_epoch()
        if epoch != state.memo_epoch:
            state.memo.clear()
            state.memo_epoch = epoch
    logged = log.isEnabledFor(logging.INFO)
    # A repeat of a review already decided (a rollout's replica) is answered without parsing
    # it (memo.recall), unless the deadline passed; its decision log line is built from what
    # was stored with the answer (an entry stored without it is not recalled at info).
    if time.perf_counter() <= answer_by:
        recalled = state.memo.recall(endpoint, body, policies)
        if recalled is not None and (recalled.context is not None or not logged):
            answer = recalled.value
            elapsed = time.perf_counter() - started
            state.tally.add((endpoint, recalled.operation, "hit", answer.counted), elapsed)
            if logged:
                _log_decision(endpoint, recalled.context.named(recalled.values), recalled.uid, answer, elapsed,
                              policies.revision)
            return _reply(recalled.api_version, recalled.uid, answer)
    try:
        api_version, raw = read_envelope(body)
        uid = request_uid(raw)
    except BadReview as exc:
        return _bad(endpoint, 400, str(exc))
    memo_result = ""
    parsed: list[AdmissionRequest] = []  # the request once parsed, for the decision log

    def parse() -> AdmissionRequest:
        parsed.append(AdmissionRequest.from_dict(raw))
        return parsed[0]

    def decide(request: AdmissionRequest) -> Decision:
        if namespaces is None:
            return engine(request, policies, deadline=answer_by)
        return engine(request, policies, deadline=answer_by,
                      namespace_labels=namespaces.labels_for(request.namespace))

    def request() -> AdmissionRequest | None:
        """The request, parsed once for everything after the decision: a memo hit was not
        parsed to be answered, and its request parsed before under the same key."""
        if parsed:
            return parsed[0]
        try:
            return parse()
        except BadReview as exc:  # so this is a bug
            log.error("an answered request does not parse: %s", exc, extra={"endpoint": endpoint})
            return None

    subjects: list[Subject | None] = []

    def subject() -> Subject | None:
        """What the decision log line says of the request, built once: kept by the memo with
        an answer it may recall (not recalled at info without), and logged by _record."""
        if not subjects:
            admission = request()
            subjects.append(Subject.of(admission) if admission is not None else None)
        return subjects[0]

    try:
        if time.perf_counter() > answer_by:
            parse()  # a malformed request is still refused as such
            answer = _answer(_failure(state, endpoint, "the request's deadline passed before a decision"),
                             mutating=mutating)
        else:
            # The memo keys on the request as sent; only a miss parses it (a hit's key equals
            # that of a request already parsed) and runs the engine.
            answer, memo_result = state.memo.decide(
                endpoint, raw, policies, lambda: _answer(decide(parse()), mutating=mutating),
                # below info nothing reads what the memo keeps for the log line
                body=body, api_version=api_version, context=subject if logged else lambda: None)
    except BadReview as exc:
        return _bad(endpoint, 400, str(exc))
    except DeadlineExceeded:  # the engine stopped at the deadline: not a bug, no traceback
        log.warning("the request's deadline passed while deciding it", extra={"uid": shown(uid), "endpoint": endpoint})
        answer = _answer(_failure(state, endpoint, "the request's deadline passed before a decision"),
                         mutating=mutating)
    except NamespaceLabelsUnavailable as exc:
        if may_wait and exc.unknown.pending:
            return _Pending(exc.namespace)
        log.warning("%s; failure policy %s", exc, state.failure_policy,
                    extra={"uid": shown(uid), "endpoint": endpoint, "event": "namespace_labels_unknown"})
        answer = _answer(_failure(state, endpoint, str(exc)), mutating=mutating)
    except Exception as exc:
        # Deep nesting stops the code reading the review where it recurses (a RecursionError)
        # or serialises (orjson's TypeError): measured only then, since measuring every body
        # costs more than deciding a large pod (docs/operations.md, "Nesting depth").
        if isinstance(exc, (RecursionError, TypeError)) and nests_deeper_than(body):
            log.warning("refused a review nested more than %d levels deep", MAX_REVIEW_DEPTH,
                        extra={"event": "too_deep", "uid": shown(uid), "endpoint": endpoint})
            answer = _answer(_TOO_DEEP, mutating=mutating)
        else:
            log.exception("decision logic failed", extra={"uid": shown(uid), "endpoint": endpoint})
            answer = _answer(_failure(state, endpoint, "internal error"), mutating=mutating)
    _record(state, endpoint, raw, uid, subject if logged else None, answer, memo_result,
            time.perf_counter() - started, policies.revision)
    return _reply(api_version, uid, answer)


# A content problem, so a denial whatever the failure policy says.
_TOO_DEEP = decisions.denied(f"the review nests objects and arrays more than {MAX_REVIEW_DEPTH} levels deep, "
                             f"too deep to decide; this webhook decides reviews of up to {MAX_REVIEW_DEPTH} "
                             "levels (a Kubernetes object nests fewer than 20)", code=400, reason="BadRequest")


def _reply(api_version: str, uid: str, answer: Answer) -> web.Response:
    body = envelope_json(api_version=api_version, uid=uid, fields_json=answer.fields_json)
    return web.Response(body=body, content_type="application/json")


def _failure(state: ServerState, endpoint: str, what: str) -> Decision:
    allow = state.failure_policy == "Ignore"
    return decisions.errored(f"{what} in the {endpoint} webhook; failure policy {state.failure_policy} "
                             f"{'admits' if allow else 'denies'} the request", allow=allow)


def _record(state: ServerState, endpoint: str, raw: dict[str, Any], uid: str,
            subject: Callable[[], Subject | None] | None, answer: Answer, memo_result: str,
            elapsed: float, revision: str) -> None:
    """Count the request, and log its decision when `subject` (which parses it if needed) is
    given: only at info, since building the line costs more than the engine's small cases."""
    state.tally.add((endpoint, operation_of(raw), memo_result, answer.counted), elapsed)
    logged_as = subject() if subject is not None else None
    if logged_as is not None:
        _log_decision(endpoint, logged_as, uid, answer, elapsed, revision)


def _fold_counts(key: tuple[str, str, str, Any], latencies: list[float]) -> None:
    """Add requests answered alike (one latency each) to every metric they touch."""
    endpoint, operation, memo_result, (outcome, injected, shadowed, violations) = key
    count = len(latencies)
    histogram = metrics.child(metrics.LATENCY, endpoint)
    for seconds in latencies:
        histogram.observe(seconds)
    metrics.child(metrics.REQUESTS, endpoint, operation, outcome).inc(count)
    if memo_result:
        metrics.child(metrics.DECISION_MEMO, endpoint, memo_result).inc(count)
    for name in injected:
        metrics.child(metrics.INJECTIONS, name).inc(count)
    for name in shadowed:
        metrics.child(metrics.SHADOW_INJECTIONS, name).inc(count)
    for labels, found in violations:
        metrics.child(metrics.VIOLATIONS, *labels).inc(count * found)


async def _fold_metrics(app: web.Application) -> AsyncIterator[None]:
    tally = app[STATE].tally

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(METRICS_FOLD_SECONDS)
            tally.fold()

    task = asyncio.create_task(every_interval())
    yield
    task.cancel()
    tally.fold()  # at shutdown, after the last request


# A message about a malformed request may quote it (an apiVersion of megabytes): logged
# and echoed, it is cut to this length.
_BAD_MESSAGE_MAX = 1024


def _bad(endpoint: str, status: int, message: str) -> web.Response:
    metrics.BAD_REQUESTS.labels(endpoint=endpoint).inc()
    if len(message) > _BAD_MESSAGE_MAX:
        message = f"{message[:_BAD_MESSAGE_MAX]}… ({len(message)} characters in all)"
    log.warning("rejected malformed request: %s", message,
                extra={"event": "bad_request", "endpoint": endpoint, "status": status})
    return _error(status, message)


def _outcome(decision: Decision) -> str:
    if decision.code is not None and decision.code >= 500:
        return "error"
    if not decision.allowed:
        return "denied"
    return "patched" if decision.patch else "allowed"


# Where a validation's shape finds the names a log line shows (memo.Recalled.values).
_REQUEST_NAME = ("name",)
_POD_NAME = ("object", "metadata", "name")


class Subject(NamedTuple):
    """What a decision log line says about the request, but for its uid: kept with a remembered
    answer, so that a request recalled without parsing is logged as a parsed one is."""

    operation: str
    namespace: str
    kind: str
    dry_run: bool
    request_name: str
    pod_name: Any  # the object's metadata.name, as sent
    generate_name: Any
    owner: str | None

    @classmethod
    def of(cls, request: AdmissionRequest) -> Subject:
        # Every text here comes from the request: made safe for a log line once, here.
        meta = as_dict((request.object or {}).get("metadata"))
        owner = next((f"{o.get('kind')}/{o.get('name')}" for o in dicts_in(meta.get("ownerReferences"))), None)
        return cls(shown(request.operation), shown(request.namespace), shown(request.kind.kind),
                   request.dry_run, shown(request.name), shown(meta.get("name")),
                   shown(meta.get("generateName")), shown(owner))

    def named(self, values: dict[FieldPath, str]) -> Subject:
        """This subject with the names a recalled body holds where its stored one held others."""
        if not values:
            return self
        request_name, pod_name = values.get(_REQUEST_NAME), values.get(_POD_NAME)
        return self._replace(request_name=self.request_name if request_name is None else shown(request_name),
                             pod_name=self.pod_name if pod_name is None else shown(pod_name))


def _log_decision(endpoint: str, subject: Subject, uid: str, answer: Answer, elapsed: float, revision: str) -> None:
    """One line per decision. Never env values or other pod content: names only."""
    decision, outcome = answer.logged, answer.outcome
    log.info("%s %s %s/%s: %s", endpoint, subject.operation, subject.namespace or "-",
             subject.pod_name or subject.generate_name or subject.request_name or "-", outcome,
             extra={"event": "decision", "endpoint": endpoint, "uid": shown(uid),
                    "namespace": subject.namespace, "podName": subject.pod_name or subject.request_name,
                    "generateName": subject.generate_name, "owner": subject.owner,
                    "operation": subject.operation, "kind": subject.kind,
                    "outcome": outcome, "policies": list(decision.applied_policies),
                    "denyMessage": cut_message(decision.message), "warnings": len(decision.warnings),
                    # Bounded (logs.py): 30,000 privileged containers are 270,000 violations.
                    "violations": cut_items([f"{v.action} {v.policy}/{v.rule}"
                                             f"{'[' + v.check + ']' if v.check else ''} {v.path}"
                                             for v in decision.violations[:LIST_SHOWN_MAX]],
                                            total=answer.violations),
                    "policyRevision": revision, "dryRun": subject.dry_run,
                    "latencyMs": round(elapsed * 1000, 3)})


async def _healthz(_request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    policies = state.policies
    body: dict[str, Any] = {
        "status": "draining" if state.draining else "ok",
        "policyRevision": policies.current.revision,
        "policies": policies.current.policy_count,
        "policyDirectory": str(policies.directory),
        # A bad edit does not fail readiness: failing every replica at once would stop
        # all pod creation. The last good set keeps serving; the error is shown here.
        "lastReloadError": policies.last_error,
        "lastReloadSuccess": policies.last_success,
        "tls": state.certificate is not None,
    }
    if state.certificate is not None:
        body["certificateNotAfter"] = state.certificate.not_after.isoformat()
    ready = not state.draining and state.certificate is not None
    if state.namespaces is not None:
        body["namespaceCache"] = state.namespaces.detail()
        if state.wait_for_namespaces:
            # Only a replica that starts needing the cache waits for it: one already serving
            # when a reload adds a namespaceSelector stays ready (all replicas failing at once
            # would stop all pod creation); its requests wait briefly, then the failure rule.
            if state.namespaces.synced or not state.namespaces.running:
                state.wait_for_namespaces = False
            else:
                ready = False
    return _json(200 if ready else 503, body)


async def _metrics(request: web.Request) -> web.Response:
    request.app[STATE].tally.fold()  # this worker's figures are exact; others' at most a fold interval old
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})
