"""Connection limits: what one worker lets clients hold open, and for how long.

aiohttp's defaults suit browsers, not an API server: an idle connection is kept for
3630 s, a request head may hold 128 headers of 8190 bytes (about 1 MiB, buffered until
it is complete), no deadline covers a head that arrives a byte at a time (only that
idle timer), and connections are not counted. 300 connections each sending 800 KB of
an unfinished head took a worker from 55 to 546 MiB for an hour; the 429 shedding never
saw them, since no request had begun. So each connection here is a RequestHandler that
also times and measures the head it is receiving and is counted against a cap, served
by a site that passes the TLS handshake timeout aiohttp's TCPSite does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from webhook.runtime import metrics
from webhook.runtime.logs import shown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    # An idle connection (after the handshake or after an answer) is closed after this
    # long. The API server's webhook client is Go's http.Transport (client-go), which
    # keeps idle connections 90 s. Closing ours later means it always closes first: a
    # POST it starts on a connection we are closing at that moment is not retried (it
    # is not idempotent) and the admission call fails by the failurePolicy.
    idle_seconds: float = 120.0
    # From the first byte of a request head to its end. The API server writes the head
    # (with the body) at once; a head still incomplete after this is dropped.
    head_seconds: float = 5.0
    # The API server sends a handful of small headers (Host, Content-Type, Accept,
    # Accept-Encoding, Content-Length, User-Agent, perhaps traceparent or an
    # Authorization token of 1-2 KB): well under 1 KiB. A head larger than this, still
    # incomplete, is answered 431 and closed; so at most this much waits per connection.
    max_head_bytes: int = 16 * 1024
    # Headers in one head (aiohttp answers more with 400). aiohttp's own cap is per field
    # (8190 bytes), kept so that a long bearer token fits.
    max_headers: int = 32
    # Connections past the TLS handshake, per worker; more are closed at once. At most
    # 256 requests wait for a body (server.py), plus the API servers' idle pools (client-go
    # keeps 25 per host). A connection holds asyncio's 32 KiB TLS read buffer (heap.py),
    # OpenSSL's buffers, the handler and at most max_head_bytes of head: estimated (not
    # measured) at under 100 KiB, so 1024 of them fit the pod's 256 MiB limit.
    max_connections: int = 1024
    # Connections from one peer address, per worker; more from it are closed at once, so
    # one client (a pod flooding the Service) cannot hold the slots the API servers need.
    # A quarter of max_connections: the API servers' pools are far smaller (see
    # docs/operations.md for sizing behind a proxy that makes every API server one address),
    # and one client past max_inflight requests at once could not be served in time anyway.
    max_connections_per_client: int = 256
    # client-go gives up on a TLS handshake after 10 s; asyncio would wait 60 s.
    handshake_seconds: float = 10.0


_TOO_LARGE_BODY = b'{"error": "request head too large", "code": 431}'
_HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
                   b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))


class LimitedSite(web.BaseSite):
    """A TLS (or plain) TCP listener whose connections are _Connection, counted in `open`
    and, by peer address, in `per_client`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: SSLContext | None,
                 limits: ConnectionLimits = ConnectionLimits(), reuse_port: bool | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self.limits = limits
        self.open = 0
        self.per_client: dict[str, int] = {}  # peer address -> connections it holds open

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None
        self._server = await loop.create_server(
            lambda: _Connection(manager, self, loop=loop), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.limits.handshake_seconds if self._ssl_context else None)


# Heads whose arrival a connection remembers until their handlers ask; more are only
# there when a client pipelines requests, and the oldest are forgotten (their handlers
# then time from when they start).
_ARRIVALS_KEPT = 8


def head_arrived(request: BaseRequest) -> float | None:
    """When (time.perf_counter) the head of `request` was read from its connection, if known."""
    protocol = request.protocol
    if protocol.__class__ is not _Connection:
        return None
    return protocol._arrivals.pop(request.content, None)  # type: ignore[union-attr]


class _Connection(RequestHandler):
    __slots__ = ("_site", "_counted", "_head_bytes", "_head_timer", "_body", "_arrivals", "_peer")

    def __init__(self, manager: web.Server, site: LimitedSite, *, loop: asyncio.AbstractEventLoop) -> None:
        limits = site.limits
        super().__init__(manager, loop=loop, access_log=None, keepalive_timeout=limits.idle_seconds,
                         max_headers=limits.max_headers)
        self._site = site
        self._counted = False
        self._head_bytes = 0  # of the head being received, when it is incomplete
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: Any = None  # the last request's body (a StreamReader) while it arrives
        self._arrivals: dict[Any, float] = {}  # a request's body (its StreamReader) -> when its head was read
        self._peer: str | None = None  # the client's address, counted in the site's per_client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self._site
        if site.open >= site.limits.max_connections:
            metrics.CONNECTIONS_DROPPED.labels(reason="limit").inc()
            transport.abort()  # not close(): no TLS goodbye to wait for, nothing kept
            return
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if address is not None:
            held = site.per_client.get(address, 0)
            if held >= site.limits.max_connections_per_client:
                metrics.CONNECTIONS_DROPPED.labels(reason="client_limit").inc()
                transport.abort()
                return
            site.per_client[address] = held + 1
            self._peer = address
        site.open += 1
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            site = self._site
            site.open -= 1
            if self._peer is not None:
                held = site.per_client[self._peer] - 1
                if held:
                    site.per_client[self._peer] = held
                else:
                    del site.per_client[self._peer]  # only addresses holding connections stay
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        body = self._body
        in_body = body is not None and not body.is_eof()
        if self._force_close or self._close:
            # Shutting down, the runner marks every connection closing and then waits for
            # its handler, and aiohttp drops whatever arrives meanwhile, the rest of a body
            # included: a request in flight on a keep-alive connection got a 408 at its body
            # deadline instead of its answer. Its body is still read while its handler may
            # read it and the transport is open (a real force_close drops the transport).
            if in_body and body.exception() is None and self.transport is not None:
                flags = self._force_close, self._close
                self._force_close = self._close = False
                try:
                    super().data_received(data)
                finally:
                    self._force_close, self._close = flags
            return
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:
            # A head completed, perhaps after the end of the previous body (a pipelined
            # request): from here on its body is what arrives.
            self._head_bytes = 0
            self._stop_head_timer()
            self._body = self._messages[-1][1] if self._messages else None
            arrived, arrivals = time.perf_counter(), self._arrivals
            for _message, payload in self._messages:
                if payload.__class__ is StreamReader:  # not the shared empty body of a GET
                    arrivals.setdefault(payload, arrived)
            while len(arrivals) > _ARRIVALS_KEPT:
                del arrivals[next(iter(arrivals))]
            return
        if in_body:
            return  # a body: the handler's own deadline covers it
        # Between requests, so these bytes are (part of) a head: aiohttp's parser buffers
        # them until it is complete, and only its idle timer (reset by nothing) ends a wait.
        self._head_bytes += len(data)
        if self._head_bytes > self._site.limits.max_head_bytes:
            metrics.CONNECTIONS_DROPPED.labels(reason="head_too_large").inc()
            self._stop_head_timer()
            if self.transport is not None:
                self.transport.write(_HEAD_TOO_LARGE)
            self.force_close()
        elif self._head_timer is None and self._head_bytes:
            self._head_timer = self._loop.call_later(self._site.limits.head_seconds, self._head_timed_out)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (a bad request line, too many headers) is the
        client's fault: one warning line, no traceback (an unauthenticated client must not
        fill the error log), and the JSON error body every other 4xx has. Server errors
        keep aiohttp's handling."""
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        text = shown(message or str(exc) or "malformed request")
        log.warning("rejected malformed HTTP request: %s", text,
                    extra={"event": "bad_request", "endpoint": "http", "status": status})
        response = web.json_response({"error": f"malformed HTTP request: {text}", "code": status}, status=status)
        response.force_close()
        return response

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        metrics.CONNECTIONS_DROPPED.labels(reason="head_timeout").inc()
        if self.transport is not None:
            self.transport.abort()  # a client this slow would not read an answer either
