"""Several workers on one port: shared metrics, restart of a killed worker, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time

from tests.test_inject_shipped import pod


def _children(pid: int) -> set[int]:
    children = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        text = open(f"/proc/{pid}/task/{task}/children").read().split()
        children.update(int(c) for c in text)
    return children


def _workers(server) -> set[int]:
    """The supervisor's worker processes (spawn also starts a resource tracker)."""
    pids = set()
    for child in _children(server.proc.pid):
        try:
            cmdline = open(f"/proc/{child}/cmdline", "rb").read()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmdline or b"spawn_main" in cmdline:
            if b"resource_tracker" not in cmdline:
                pids.add(child)
    return pids


def _wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _requests_total(server) -> float:
    text = server.client.request("GET", "/metrics").body.decode()
    return sum(float(v) for v in re.findall(r'^webhook_requests_total\{endpoint="mutate"[^}]*\} (\S+)$', text, re.M))


def test_two_workers_share_the_port_and_metrics_add_up(start_server) -> None:
    server = start_server(args=["--workers", "2"])
    _wait_for(lambda: len(_workers(server)) == 2)
    before = _requests_total(server)
    for _ in range(40):  # new connection each time: the kernel spreads them over both workers
        assert server.client.admit(pod()).allowed
    # each worker folds its counts into the shared files within a second
    _wait_for(lambda: _requests_total(server) - before >= 40)
    time.sleep(1.5)  # and no more than that arrives: each request counted once
    assert _requests_total(server) - before == 40


def test_a_killed_worker_is_restarted_and_service_continues(start_server) -> None:
    server = start_server(args=["--workers", "2"])
    workers = _wait_for(lambda: (w := _workers(server)) and len(w) == 2 and w)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    replaced = _wait_for(lambda: (w := _workers(server)) and len(w) == 2 and victim not in w and w)
    assert victim not in replaced
    server.wait_for_log(lambda e: e.get("event") == "worker_exit" and e.get("pid") == victim)
    _wait_for(lambda: all(server.client.admit(pod()).allowed for _ in range(10)))


def test_sigterm_stops_every_worker_and_exits_zero(start_server) -> None:
    server = start_server(args=["--workers", "2"])
    workers = _wait_for(lambda: (w := _workers(server)) and len(w) == 2 and w)
    assert server.client.admit(pod()).allowed
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
