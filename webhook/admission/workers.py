"""Several worker processes on one port (SO_REUSEPORT), kept alive by a supervisor.

One Python process serves one core; the kernel spreads new connections across
the workers' listening sockets. Each worker loads and watches policies and
certificates itself, so a reload needs no coordination. The supervisor serves
nothing: it restarts a worker that dies, forwards SIGTERM, and exits when the
workers have drained.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from webhook.runtime import metrics

log = logging.getLogger(__name__)

# A worker that dies sooner than this after starting is crash-looping; back off.
_MIN_HEALTHY_SECONDS = 5.0
_MAX_BACKOFF_SECONDS = 10.0


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask, capped by the container's CPU
    quota (os.cpu_count() reports the node's CPUs, not the container's limit)."""
    count = len(os.sched_getaffinity(0))
    quota = _cpu_quota(cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cpu_quota(cgroup: Path) -> float | None:
    """The CPU limit in CPUs, from cgroup v2's cpu.max or cgroup v1's CFS files (nodes
    still on v1 would otherwise get a worker per node CPU); None when unlimited."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us   # -1: no limit
    except (OSError, ValueError):
        return None


def _worker_main(config: object, log_level: str, log_format: str) -> None:
    import asyncio

    from webhook.runtime import logs
    from webhook.admission.serve import serve

    logs.configure(level=log_level, fmt=log_format)
    asyncio.run(serve(config))  # type: ignore[arg-type]


def supervise(config: object, *, workers: int, log_level: str, log_format: str) -> int:
    """Run `workers` copies of the server; returns the exit code for the supervisor."""
    from webhook.admission.serve import ServeConfig
    assert isinstance(config, ServeConfig)
    created_metrics_dir = None
    if not os.environ.get(metrics.MULTIPROC_ENV):
        created_metrics_dir = os.environ[metrics.MULTIPROC_ENV] = tempfile.mkdtemp(prefix="webhook-metrics-")
    else:
        # A given directory holds this process's pre-start values and maybe an earlier run's.
        metrics.clear_multiproc_dir()
    # Bind (without listening) to learn the port when asked for any free one, and to
    # hold it: workers bind the same port with SO_REUSEPORT.
    reserve = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind((config.host, config.port))
    port = reserve.getsockname()[1]
    config = dataclasses.replace(config, port=port, reuse_port=True)
    # The metrics port is held the same way, so that one in use stops the start here with
    # one clear error rather than a crash loop of workers.
    metrics_reserve = None
    if config.metrics_port:
        from webhook.admission.serve import metrics_port_error
        metrics_reserve = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        metrics_reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            metrics_reserve.bind((config.host, config.metrics_port))
        except OSError as exc:
            metrics_reserve.close()
            reserve.close()
            if created_metrics_dir is not None:
                shutil.rmtree(created_metrics_dir, ignore_errors=True)
            raise metrics_port_error(config.host, config.metrics_port, exc) from exc
    context = multiprocessing.get_context("spawn")

    def start() -> BaseProcess:
        process = context.Process(target=_worker_main, args=(config, log_level, log_format),
                                  name="webhook-worker", daemon=False)
        process.start()
        return process

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in running:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signum)

    running: list[BaseProcess] = [start() for _ in range(workers)]
    started = {p.pid: time.monotonic() for p in running}
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("supervising %d workers on https://%s:%d", workers, config.host, port,
             extra={"event": "supervisor", "port": port, "workers": workers})
    failed = False
    backoff = 0.0
    while running:
        ready = wait([p.sentinel for p in running], timeout=0.5)
        for process in [p for p in running if p.sentinel in ready]:
            process.join()
            running.remove(process)
            metrics.worker_exited(process.pid or 0)
            if stopping:
                # A worker still starting up when the signal came dies of it: a clean stop too.
                if process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                    failed = True
                    log.error("worker %s exited with %s while stopping", process.pid, process.exitcode)
                continue
            lived = time.monotonic() - started.pop(process.pid, time.monotonic())
            backoff = 0.0 if lived >= _MIN_HEALTHY_SECONDS else min(max(backoff * 2, 0.5), _MAX_BACKOFF_SECONDS)
            log.error("worker %s exited with %s after %.1fs; restarting in %.1fs", process.pid,
                      process.exitcode, lived, backoff,
                      extra={"event": "worker_exit", "pid": process.pid, "exitcode": process.exitcode})
            time.sleep(backoff)
            if not stopping:
                replacement = start()
                started[replacement.pid] = time.monotonic()
                running.append(replacement)
    reserve.close()
    if metrics_reserve is not None:
        metrics_reserve.close()
    if created_metrics_dir is not None:
        shutil.rmtree(created_metrics_dir, ignore_errors=True)
    log.info("all workers stopped", extra={"event": "stopped"})
    return 1 if failed else 0
