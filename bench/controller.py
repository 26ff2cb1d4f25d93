"""Issue 19's figures for the lifecycle controller (`make bench-controller`): 10,000 pods
across 1,000 Deployments in the fake API server, which runs in a child process so that
the CPU and memory measured here are the controller's alone.

- the first full evaluation after start: CPU to list and evaluate every pod and owner;
- after a policy change (a sidecar image bump): CPU to list the pods again and evaluate
  each with the new policies (every pod then stale, `in_place` set);
- one pod event: CPU of the watch thread to parse, evaluate and store one pod MODIFIED
  (the controller's own histogram, per-thread CPU), over EVENTS status changes;
- the controller's peak RSS.

Targets (issue 19): <= 10 s CPU for each full evaluation, <= 2 ms CPU per pod event,
<= 200 MiB RSS. Prints one JSON object; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as a script: import `bench`, `tests` and `webhook` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

ROOT = Path(__file__).resolve().parent.parent
NS_COUNT = 20
TARGETS = {"first_evaluation_cpu_s": 10.0, "policy_change_cpu_s": 10.0, "pod_event_cpu_ms": 2.0, "rss_mib": 200.0}
SHIPPER_IMAGE = "registry.platform.internal/runtime/log-shipper:3.1.0"


# -- the child: a fake API server full of pods ---------------------------------------------------

def serve(workloads: int, replicas: int) -> None:
    """Fill a fake API server with `workloads` Deployments of `replicas` admitted pods each
    (ReplicaSets, status and all), print its kubeconfig path, and serve until stdin closes;
    a line `touch N` on stdin modifies N pods' status (pod events for the watch)."""
    from tests.fake_apiserver import FakeApiServer
    from tests.fake_workloads import FakeWorkloads
    from webhook.policy.loader import load_policy_dir

    policies = load_policy_dir(ROOT / "policies")
    server = FakeApiServer(bookmark_interval=30.0).start()
    for n in range(NS_COUNT):
        server.put_namespace(f"team-{n}")
    simulated = FakeWorkloads(server, policies)
    # One Deployment per namespace through the simulated controllers (pods admitted by the
    # engine, with real ledgers); the rest are copies of those with their own names and uids.
    for n in range(NS_COUNT):
        server.create("deployments", _deployment(f"team-{n}", "app-0", replicas))
    simulated.settle()
    per_namespace = {n: {r: [o for o in server.list(r, f"team-{n}")] for r in ("deployments", "replicasets", "pods")}
                     for n in range(NS_COUNT)}
    count = 0
    for index in range(1, workloads // NS_COUNT + (1 if workloads % NS_COUNT else 0)):
        for n in range(NS_COUNT):
            if index * NS_COUNT + n >= workloads:
                break
            name = f"app-{index}"
            objects = per_namespace[n]
            # The workload's name is everywhere (labels, selectors, owners, and what the
            # policies rendered from it: the log shipper's --workload), and so are the uids
            # that tie each pod to its ReplicaSet and that to its Deployment.
            text = json.dumps(objects).replace("app-0", name)
            for kind in ("deployments", "replicasets", "pods"):
                for original in objects[kind]:
                    uid = original["metadata"]["uid"]
                    text = text.replace(uid, f"{uid[:-8]}{count:08d}")
                    count += 1
            copies = json.loads(text)
            for kind in ("deployments", "replicasets", "pods"):
                for obj in copies[kind]:
                    obj["apiVersion"], obj["kind"] = _api(kind)
                    server.put(obj)
    print(json.dumps({"kubeconfig": str(server.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")),
                      "pods": len(server.list("pods"))}), flush=True)
    pods = [(p["metadata"]["name"], p["metadata"]["namespace"]) for p in server.list("pods")]
    step = 0
    for line in sys.stdin:
        if line.startswith("touch "):
            for i in range(int(line.split()[1])):
                name, namespace = pods[(step + i) % len(pods)]
                current = server.get("pods", name, namespace)
                if current is not None:
                    status = dict(current.get("status") or {})
                    status["conditions"] = [*(status.get("conditions") or [])][:4] + [
                        {"type": "BenchTouched", "status": "True", "reason": str(step + i)}]
                    server.update_status("pods", name, namespace, status)
            step += int(line.split()[1])
            print("touched", flush=True)
    server.stop()


def _api(resource_name: str) -> tuple[str, str]:
    return {"deployments": ("apps/v1", "Deployment"), "replicasets": ("apps/v1", "ReplicaSet"),
            "pods": ("v1", "Pod")}[resource_name]


def _deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"serviceAccountName": "app", "containers": [
                                      {"name": "app", "image": "registry.platform.internal/app:1",
                                       "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                                     "limits": {"memory": "64Mi"}}}]}}}}


# -- the parent: the controller, measured -----------------------------------------------------------

def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(workloads: int, replicas: int, events: int) -> dict[str, Any]:
    from prometheus_client import REGISTRY

    from webhook.controller.state import ClusterState
    from webhook.controller.watch import Watcher, list_all
    from webhook.kube.client import load_api_client
    from webhook.policy.loader import load_policy_dir

    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(workloads),
                              str(replicas)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        started = json.loads(child.stdout.readline())
        kubeconfig = Path(started["kubeconfig"])
        policies = load_policy_dir(ROOT / "policies")
        work = Path(tempfile.mkdtemp())
        shutil.copytree(ROOT / "policies", work / "policies")
        bumped_file = work / "policies" / "inject-log-shipper.yaml"
        bumped_file.write_text(bumped_file.read_text().replace(SHIPPER_IMAGE, SHIPPER_IMAGE.replace("3.1.0", "3.2.0")))
        bumped = load_policy_dir(work / "policies")

        print(f"fake API server ready: {started['pods']} pods", file=sys.stderr, flush=True)
        api = load_api_client(kubeconfig)
        state = ClusterState(policies)
        cpu = time.process_time()
        list_all(state, api)
        first = time.process_time() - cpu
        view = state.snapshot()
        evaluated = view.pod_count
        resolved = sum(1 for ref in view.owners() if ref.kind == "Deployment")
        current = sum(1 for p in view.pods() if p.policies and all(s.state == "current" for s in p.policies.values()))

        cpu = time.process_time()
        state.set_policies(bumped)
        list_all(state, api)
        change = time.process_time() - cpu
        # One reconcile pass's status over every pod (what each pass costs once anything changed).
        from webhook.controller import status as policy_status
        cpu = time.process_time()
        state.set_policies(bumped)   # a new epoch: the snapshot is built again
        view = state.snapshot()
        policy_status.compute(view, bumped, {})
        status_pass = time.process_time() - cpu
        state.set_policies(bumped)
        list_all(state, api)
        view = state.snapshot()
        stale = sum(1 for p in view.pods() if p.policies.get("log-shipper") and
                    p.policies["log-shipper"].state == "stale" and p.policies["log-shipper"].in_place)

        # Pod events through a live watch; the watch thread's own CPU per event.
        watcher = Watcher(state, lambda: load_api_client(kubeconfig))
        watcher.start()
        assert watcher.wait_synced(300)
        def sample(suffix: str) -> float:
            return REGISTRY.get_sample_value(f"webhook_controller_watch_event_cpu_seconds_{suffix}",
                                             {"resource": "pods"}) or 0.0

        list_sum, list_count = sample("sum"), sample("count")
        child.stdin.write(f"touch {events}\n")
        child.stdin.flush()
        child.stdout.readline()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sample("count") - list_count >= events:
                break
            time.sleep(0.1)
        total, count = sample("sum") - list_sum, sample("count") - list_count
        watcher.stop()
        figures = {
            "pods": started["pods"], "workloads": workloads, "deployments_resolved": resolved,
            "evaluated": evaluated, "current_after_start": current,
            "stale_in_place_after_change": stale,
            "first_evaluation_cpu_s": round(first, 2), "policy_change_cpu_s": round(change, 2),
            "pod_event_cpu_ms": round(1000 * total / count, 3) if count else None, "pod_events": int(count),
            "status_pass_cpu_ms": round(1000 * status_pass, 1),
            "rss_mib": round(_rss_mib(), 1),
        }
        figures["targets_met"] = all(figures[k] is not None and figures[k] <= v for k, v in TARGETS.items())
        return figures
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("WORKLOADS", "REPLICAS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    figures = measure(args.workloads, args.replicas, args.events)
    print(json.dumps(figures, indent=2))
    return 0 if figures["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
