"""Request bodies and policy directories for the benchmark.

Everything here is deterministic: the same run builds the same bytes, so the
webhook and the baseline are driven with identical requests.

- `corpus_pods()`: the real-world pods of `tests/data/corpus/*.yaml`, with the
  admission namespace from each file's `# namespace:` header.
- `synthetic_pod(n)`: a Deployment-style pod with `n` realistic containers.
- `large_pod()`: a ~200 KiB pod (big env lists and a last-applied annotation, the
  way large pods look in practice); the injected patch stays small.
- `review(pod, namespace)`: the AdmissionReview the API server would send.
- `mixed_bodies()`: the main mix; `mixed_bodies(never_seen=True)`: the same pods, each
  with a label that the load generator makes unique per request (see `UID_TOKEN`).
- `write_bodies(path, bodies)`: one compact JSON body per line, the format
  `bench/bodies.lua` (wrk) and `bench/pyload.py` read.
- `scaling_policy_dir(n, dest)`: the shipped injection policies plus trivial
  label-injecting ones, `n` InjectionPolicies in all.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "tests" / "data" / "corpus"
SHIPPED_POLICIES = ROOT / "policies"

LARGE_POD_BYTES = 200 * 1024
# Request uids are this token and 12 digits. The load generators (bodies.lua, pyload.py)
# put a number of their own, new for each request, wherever the token appears: in the
# uid, as an API server gives every review its own, and in the never-seen mix also in
# the label NEVER_SEEN_LABEL, so that no two requests carry the same pod.
UID_TOKEN = "6b1a0a3e-bench-4000-8000-"
UID_DIGITS = 12
NEVER_SEEN_LABEL = "bench.example.com/pod"
_NAMESPACE_HEADER = re.compile(r"^# namespace: *(\S+) *$", re.MULTILINE)


# --- pods -------------------------------------------------------------------------------------

def corpus_pods() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, namespace, pod) for every pod in the test corpus, sorted by file name."""
    out = []
    for path in sorted(CORPUS_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        header = _NAMESPACE_HEADER.search(text)
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == "Pod":
                out.append((path.stem, header.group(1) if header else "default", doc))
    return out


def _container(i: int) -> dict[str, Any]:
    """An app container as Deployments commonly write them: ports, env, probes, limits."""
    name = f"app-{i}" if i else "app"
    return {
        "name": name,
        "image": f"registry.example.com/team/{name}:1.{i}.0",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": f"http-{i}"[:15], "containerPort": 8080 + i, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "HTTP_PORT", "value": str(8080 + i)},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080 + i}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080 + i}, "periodSeconds": 10},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "config", "mountPath": f"/etc/{name}", "readOnly": True}],
    }


def synthetic_pod(containers: int, *, app: str | None = None) -> dict[str, Any]:
    """A ReplicaSet-owned pod (workload kind Service) with `containers` app containers."""
    app = app or f"synthetic-{containers}c"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{app}-7d4b9c8f5d-",
            "labels": {"app": app, "app.kubernetes.io/name": app, "pod-template-hash": "7d4b9c8f5d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-7d4b9c8f5d",
                                 "uid": "0c6f2b8e-3f7a-4c35-9d7e-5a1b2c3d4e5f", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "serviceAccountName": app,
            "containers": [_container(i) for i in range(containers)],
            "volumes": [{"name": "config", "configMap": {"name": f"{app}-config"}}],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }


def large_pod(target_bytes: int = LARGE_POD_BYTES) -> dict[str, Any]:
    """A pod whose AdmissionReview is about `target_bytes` long.

    The bulk is what makes real pods big: long env lists (generated config) and a
    `kubectl.kubernetes.io/last-applied-configuration` annotation. The policies
    inject the same few items as into a small pod, so a patch built from what is
    injected stays small however big the pod is.
    """
    pod = synthetic_pod(4, app="large")
    containers = pod["spec"]["containers"]
    template = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "large"},
                "spec": {"template": {"spec": {"containers": containers}}}}
    k = 0
    while True:
        pod["metadata"]["annotations"] = {
            "kubectl.kubernetes.io/last-applied-configuration": orjson.dumps(template).decode()}
        size = len(orjson.dumps(review(pod, "default")))
        if size >= target_bytes:
            return pod
        for _ in range(max(1, (target_bytes - size) // 400)):
            containers[k % len(containers)]["env"].append(
                {"name": f"FEATURE_FLAG_{k:05d}",
                 "value": f"service-{k % 97}.namespace-{k % 13}.svc.cluster.local:{8000 + k % 1000}"})
            k += 1


# --- reviews ----------------------------------------------------------------------------------

def with_label(pod: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """A copy of `pod` with one more label (the pod itself is left as it is)."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), dict) else {}
    return {**pod, "metadata": {**metadata, "labels": {**labels, key: value}}}


def review(pod: dict[str, Any], namespace: str, *, index: int = 0, never_seen: bool = False) -> dict[str, Any]:
    """The AdmissionReview (admission.k8s.io/v1) for creating `pod` in `namespace`;
    with `never_seen`, the pod carries the uid's token as the label NEVER_SEEN_LABEL."""
    uid = f"{UID_TOKEN}{index:0{UID_DIGITS}d}"
    if never_seen:
        pod = with_label(pod, NEVER_SEEN_LABEL, uid)
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": (pod.get("metadata") or {}).get("name", ""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "5d0c8e2a-1b3f-4a5c-9e7d-2f4b6a8c0e1d",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def body(pod: dict[str, Any], namespace: str = "default", *, index: int = 0, never_seen: bool = False) -> bytes:
    return orjson.dumps(review(pod, namespace, index=index, never_seen=never_seen))


def mixed_bodies(*, never_seen: bool = False) -> list[tuple[str, bytes]]:
    """The main corpus: every corpus pod, synthetic pods of 1, 10 and 50 containers,
    and the ~200 KiB pod, each once, in a fixed order.

    As the load generators send it, the mix repeats its pods under new request uids,
    as a rollout's replicas reach mutating admission. With `never_seen` each pod also
    carries a label the load generators make unique per request: every request is a
    pod the webhook has not seen before (a new workload's first pod)."""
    pods = [(name, ns, pod) for name, ns, pod in corpus_pods()]
    pods += [(f"synthetic-{n}c", "default", synthetic_pod(n)) for n in (1, 10, 50)]
    pods.append(("synthetic-200KiB", "default", large_pod()))
    return [(name, body(pod, ns, index=i, never_seen=never_seen)) for i, (name, ns, pod) in enumerate(pods)]


def write_bodies(path: Path, bodies: list[bytes]) -> Path:
    """One body per line; orjson output never contains a raw newline."""
    assert all(b"\n" not in b for b in bodies)
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


# --- policies ---------------------------------------------------------------------------------

def shipped_injection_files() -> list[Path]:
    """The shipped policy files that hold only InjectionPolicy documents, in load order."""
    out = []
    for path in sorted(SHIPPED_POLICIES.glob("*.y*ml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        if docs and all(isinstance(d, dict) and d.get("kind") == "InjectionPolicy" for d in docs):
            out.append(path)
    return out


def scaling_policy_dir(n: int, dest: Path) -> Path:
    """A policy directory with `n` InjectionPolicies and no ValidationPolicy.

    The first min(n, shipped) are the shipped injection policy files (the identity
    one first); the rest are trivial policies that each add one label, with a
    distinct name and a distinct namespace pattern next to `default`, so every one
    of them matches the benchmark's pods (namespace `default`) and does its work.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shipped = sorted(shipped_injection_files(), key=lambda p: (p.name != "inject-identity.yaml", p.name))
    for path in shipped[:n]:
        shutil.copy(path, dest / path.name)
    docs = []
    for i in range(n - min(n, len(shipped))):
        docs.append({
            "apiVersion": "runtime.platform.io/v1",
            "kind": "InjectionPolicy",
            "metadata": {"name": f"bench-label-{i:03d}", "description": "benchmark: one label"},
            "spec": {
                "priority": 200 + i,
                "match": {"namespaces": {"include": ["default", f"bench-team-{i:03d}-*"]}},
                "inject": {"labels": {f"bench.example.com/policy-{i:03d}": "applied"}},
            },
        })
    if docs:
        (dest / "zz-bench-labels.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False),
                                                    encoding="utf-8")
    return dest
