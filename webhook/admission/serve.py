"""Run the server: load policies and certificates, serve, watch for changes, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from webhook.runtime import heap
from webhook.runtime import metrics
from webhook.admission.connections import ConnectionLimits, LimitedSite
from webhook.engine import mutate, validate
from webhook.engine.bounds import Limits
from webhook.admission.memo import DEFAULT_MAX_ENTRIES
from webhook.runtime.filewatch import watch
from webhook.kube.namespace_cache import NamespaceCache, client_factory, needs_namespace_labels
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.server import STATE, ServerState, answer_memo, create_app, create_metrics_app
from webhook.runtime.tls import ServingCertificate

log = logging.getLogger(__name__)

# Certificates and policies are polled this often; an edit takes effect within ~2 polls.
WATCH_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class ServeConfig:
    host: str = "0.0.0.0"
    port: int = 8443
    # Plain HTTP, /metrics only, so that a NetworkPolicy can restrict it; 0: /metrics is
    # served on `port` with the admission endpoints.
    metrics_port: int = 0
    policies: Path = Path("policies")
    cert_dir: Path = Path("certs")
    failure_policy: str = "Fail"
    # After SIGTERM, /readyz fails for this long before the listener closes, so that
    # endpoints controllers stop routing new requests here first.
    shutdown_delay: float = 5.0
    # In-flight requests get this long to finish once the listener closes.
    shutdown_timeout: float = 30.0
    # Decisions remembered per worker (engine/memo.py); 0 turns the memo off.
    decision_memo: int = DEFAULT_MAX_ENTRIES
    # Set by the supervisor: several workers listen on the same port.
    reuse_port: bool = False
    # Idle and head timeouts, head size, connection cap per worker (connections.py).
    connections: ConnectionLimits = ConnectionLimits()
    # For the namespace label cache; None: in-cluster, else $KUBECONFIG, else ~/.kube/config.
    kubeconfig: Path | None = None
    # Containers per pod, object size after injection, values copied from the pod (engine/bounds.py).
    limits: Limits = Limits()


class ListenError(Exception):
    """A port could not be bound; the message names which and why."""


def metrics_port_error(host: str, port: int, exc: OSError) -> ListenError:
    return ListenError(f"cannot listen on {host}:{port} (--metrics-port): {exc.strerror or exc}")


async def _start_metrics(state: ServerState, config: ServeConfig) -> web.AppRunner:
    runner = web.AppRunner(create_metrics_app(state), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    # Connection limits as on the webhook port: a scraper-only port is still reachable by
    # whatever the NetworkPolicy admits.
    site = LimitedSite(runner, config.host, config.metrics_port, ssl_context=None,
                       limits=config.connections, reuse_port=config.reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise metrics_port_error(config.host, config.metrics_port, exc) from exc
    log.info("serving /metrics on http://%s:%d", config.host, config.metrics_port,
             extra={"event": "metrics_listening", "port": config.metrics_port})
    return runner


async def _watch_policies(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    holder = state.policies

    def reload_and_settle() -> None:
        if holder.reload():
            heap.settle(refreeze=True)

    async def reload() -> None:
        await asyncio.to_thread(reload_and_settle)
        if state.namespaces is not None:
            state.namespaces.ensure(holder.current)   # a reload may add or drop namespaceSelectors

    task = asyncio.create_task(watch(holder.fingerprint, reload, interval=WATCH_INTERVAL_SECONDS,
                                     name="policies", initial=holder.loaded_fingerprint))
    yield
    task.cancel()
    if state.namespaces is not None:
        state.namespaces.stop()


async def _watch_certificate(app: web.Application) -> AsyncIterator[None]:
    certificate = app[STATE].certificate
    assert certificate is not None

    async def reload() -> None:
        result = await asyncio.to_thread(certificate.reload)
        metrics.CERT_RELOADS.labels(result=result).inc()
        metrics.CERT_NOT_AFTER.set(certificate.not_after.timestamp())

    task = asyncio.create_task(watch(certificate.current_fingerprint, reload,
                                     interval=WATCH_INTERVAL_SECONDS, name="certificate",
                                     initial=certificate.fingerprint))
    yield
    task.cancel()


async def serve(config: ServeConfig) -> None:
    """Raises PolicyLoadError or CertificateError before listening if either is unusable."""
    holder = PolicyHolder.load(config.policies)
    certificate = ServingCertificate(config.cert_dir)
    metrics.CERT_NOT_AFTER.set(certificate.not_after.timestamp())
    state = ServerState(policies=holder, certificate=certificate,
                        failure_policy=config.failure_policy,
                        memo=answer_memo(config.decision_memo),
                        namespaces=NamespaceCache(client_factory(config.kubeconfig)),
                        wait_for_namespaces=needs_namespace_labels(holder.current))
    assert state.namespaces is not None
    state.namespaces.ensure(holder.current)
    app = create_app(state, mutate_engine=functools.partial(mutate, limits=config.limits),
                     validate_engine=functools.partial(validate, limits=config.limits),
                     serve_metrics=not config.metrics_port)
    if not heap.tune_allocator():
        log.info("not glibc: allocator left as it is")
    if not heap.limit_tls_read_buffer():
        log.info("asyncio has no TLS read buffer setting: left as it is")
    heap.settle()
    app.cleanup_ctx.append(_watch_policies)
    app.cleanup_ctx.append(_watch_certificate)

    # No access log: the connections (LimitedSite's) are made without one.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout)
    await runner.setup()
    metrics_runner = await _start_metrics(state, config) if config.metrics_port else None
    site = LimitedSite(runner, config.host, config.port, ssl_context=certificate.listening_context,
                       limits=config.connections, reuse_port=config.reuse_port or None)
    await site.start()
    port = runner.addresses[0][1]
    log.info("listening on https://%s:%d (policies revision %s, %d policies, certificate "
             "expires %s)", config.host, port, holder.current.revision,
             holder.current.policy_count, certificate.not_after.isoformat(),
             extra={"event": "listening", "port": port})

    stop = asyncio.Event()
    delay = {"value": config.shutdown_delay}
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if signum == signal.SIGINT:
            delay["value"] = 0.0  # an interactive Ctrl-C needs no endpoint propagation delay
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()

    state.draining = True
    log.info("shutting down: readiness failing, draining for %.1fs", delay["value"],
             extra={"event": "shutdown"})
    await asyncio.sleep(delay["value"])
    await runner.cleanup()  # stops listening, then waits for in-flight requests
    if metrics_runner is not None:
        await metrics_runner.cleanup()  # last: scrapes see the drain to its end
    log.info("stopped", extra={"event": "stopped"})
