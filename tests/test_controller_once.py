"""`webhook controller --once` (and `--dry-run`) as a process against the fake API server:
one pass, what it did or would do printed, exit 0; run again, nothing done twice."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.controller_cluster import AGENT, Cluster, agent
from tests.fake_apiserver import FakeApiServer

pytestmark = pytest.mark.process
UPDATE = "{strategy: Restart, maxConcurrent: 2}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with FakeApiServer() as fake:
        fake.put_namespace("webhook-system")
        cluster = Cluster(fake, agent("1", UPDATE), tmp_path)
        for name in ("a", "b", "c"):
            cluster.deploy("Deployment", name)
        cluster.workloads.settle()
        cluster.fake.requests.clear()
        cluster.set_policies(agent("2", UPDATE))   # the webhook serves the new policies from here on
        yield cluster
        cluster.close()


def controller(cluster: Cluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "agent.yaml").write_text(AGENT.format(version="2", update=UPDATE, port="9000"))
    kubeconfig = cluster.fake.write_kubeconfig(tmp_path / "kubeconfig")
    return subprocess.run([sys.executable, "-m", "webhook", "controller", "--once", "--policies", str(policies),
                           "--kubeconfig", str(kubeconfig), "--log-level", "warning", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_once_with_dry_run_prints_what_it_would_do_and_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    done = controller(cluster, tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    would = [line.split(" (")[0] for line in done.stdout.splitlines() if line.endswith(": dry-run")]
    assert would == ["restart Deployment/shop/a", "restart Deployment/shop/b"]
    assert cluster.fake.writes() == []


def test_once_restarts_prints_it_and_a_second_run_restarts_nothing_twice(cluster: Cluster, tmp_path: Path) -> None:
    first = controller(cluster, tmp_path)
    assert first.returncode == 0, first.stderr
    assert [line.split(" (")[0] for line in first.stdout.splitlines() if line.endswith(": applied")] == [
        "restart Deployment/shop/a", "restart Deployment/shop/b"]
    restarts = [w for w in cluster.fake.writes() if w[1] == "deployments"]
    assert restarts == [("patch", "deployments", "shop", "a"), ("patch", "deployments", "shop", "b")]
    # A cron job running --once every few minutes: a and b still rolling, so c waits; nothing twice.
    second = controller(cluster, tmp_path)
    assert second.returncode == 0, second.stderr
    assert [w for w in cluster.fake.writes() if w[1] == "deployments"] == restarts
    cluster.workloads.settle()
    third = controller(cluster, tmp_path)
    assert [line.split(" (")[0] for line in third.stdout.splitlines() if line.endswith(": applied")] == [
        "restart Deployment/shop/c"]
