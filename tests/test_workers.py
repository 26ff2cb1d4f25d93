"""Several workers on one port: shared metrics, restart of a killed worker, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHIPPED_POLICIES, copy_policies
from tests.test_inject_shipped import pod
from tests.test_policy_reload import EXTRA


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


def _gauge_lines(server, name: str) -> dict[str, float]:
    """`{labels: value}` of one gauge on /metrics, zero values left out (a revision no
    longer served is set to 0, not removed)."""
    text = server.client.request("GET", "/metrics").body.decode()
    found = {labels: float(value) for labels, value in
             re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)}
    return {labels: value for labels, value in found.items() if value}


def _stale_gauge_file(directory: Path, pid: int) -> None:
    """A live gauge left behind by a process that died without being marked dead
    (a container restart that keeps its emptyDir, say)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    stale = MmapedDict(str(directory / f"gauge_livemax_{pid}.db"))
    stale.write_value(mmap_key("webhook_policy_set_info", "webhook_policy_set_info",
                               ["revision"], ["leftover"], "Gauge"), 1.0, 0.0)
    stale.close()


def _serving(directory: Path, revision: str) -> int:
    """How many processes' metric files say they serve `revision`."""
    from prometheus_client.mmap_dict import MmapedDict

    count = 0
    for path in directory.glob("gauge_live*_*.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if "webhook_policy_set_info" in key and f'"{revision}"' in key and value == 1:
                count += 1
    return count


def test_metrics_in_a_given_multiproc_dir_count_only_live_workers(
        start_server, tmp_path: Path, monkeypatch) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    _stale_gauge_file(metrics_dir, 4_000_000)  # above any pid_max: never a live process
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    policies = copy_policies(tmp_path / "policies")
    server = start_server(policies=policies, args=["--workers", "2"])
    _wait_for(lambda: len(_workers(server)) == 2)
    revision = server.client.request("GET", "/readyz").json()["policyRevision"]
    # The supervisor's pre-start check loads the policies too; it serves nothing, so
    # it must not count as a worker serving them, and the leftover file is gone.
    # An info metric: 1 with both workers serving the revision, not the worker count.
    _wait_for(lambda: _serving(metrics_dir, revision) == 2)
    assert _gauge_lines(server, "webhook_policy_set_info") == {f'{{revision="{revision}"}}': 1.0}

    edited = time.time()
    (policies / "extra.yaml").write_text(EXTRA % "one")
    # Both workers move to the new revision; no stale revision stays beside it.
    info = _wait_for(lambda: (i := _gauge_lines(server, "webhook_policy_set_info"))
                     and revision not in next(iter(i)) and len(i) == 1 and i)
    new_revision = server.client.request("GET", "/readyz").json()["policyRevision"]
    _wait_for(lambda: _serving(metrics_dir, new_revision) == 2)
    assert _gauge_lines(server, "webhook_policy_set_info") == {f'{{revision="{new_revision}"}}': 1.0} == info
    last_success = _wait_for(lambda: _gauge_lines(
        server, "webhook_policy_last_reload_success_timestamp_seconds").get("", 0) >= edited)
    assert last_success

    assert server.stop() == 0
    # Counters may stay (they were real); no process's live gauges outlive it.
    assert sorted(p.name for p in metrics_dir.glob("gauge_live*.db")) == []


@pytest.mark.process
def test_a_missing_multiproc_dir_is_one_clear_line(tmp_path: Path, pki: Path) -> None:
    missing = tmp_path / "no-such-dir"
    for workers in ("2", "1"):
        proc = subprocess.run(
            [sys.executable, "-m", "webhook", "serve", "--port", "0", "--cert-dir", str(pki),
             "--policies", str(SHIPPED_POLICIES), "--workers", workers],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing)}, cwd=ROOT,
            capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "PROMETHEUS_MULTIPROC_DIR" in proc.stderr and str(missing) in proc.stderr
        assert not missing.exists()


def test_a_single_worker_leaves_no_live_gauges_in_a_given_multiproc_dir(
        start_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    server = start_server(args=["--workers", "1"])
    assert _gauge_lines(server, "webhook_policy_set_info")
    assert list(tmp_path.glob("gauge_live*.db"))
    assert server.stop() == 0
    assert list(tmp_path.glob("gauge_live*.db")) == []


def test_the_default_worker_count_follows_the_containers_cpu_limit(tmp_path: Path) -> None:
    from webhook.admission.workers import available_cpus

    visible = len(os.sched_getaffinity(0))
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    v2.mkdir()
    (v1 / "cpu").mkdir(parents=True)
    none.mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")           # half a CPU: one worker
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1, one CPU
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v2) == 1 and available_cpus(v1) == 1
    assert available_cpus(none) == visible
    (v2 / "cpu.max").write_text("max 100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(v2) == available_cpus(v1) == visible


def test_every_info_metric_reads_one_whatever_the_number_of_workers() -> None:
    from webhook.runtime import metrics

    infos = [m for m in vars(metrics).values() if isinstance(m, metrics.Gauge) and m._name.endswith("_info")]
    assert infos
    for gauge in infos:   # a sum would read the number of workers
        assert gauge._multiprocess_mode in ("max", "livemax", "mostrecent", "livemostrecent"), gauge._name
