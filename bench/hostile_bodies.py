"""The request bodies of bench/hostile.py: issue 17's observed cases, rebuilt.

Where the issue gives only a count and a size, containers are `{"name": "cN",
"image": "r..."}` with the image name padded to reach the size.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BODY_LIMIT = 8 * 1024 * 1024   # the server's; every case's body is under it


KINDS = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments")}


def review(obj: dict[str, Any], *, kind: str = "Pod", operation: str = "CREATE",
           old: dict[str, Any] | None = None, uid: str = "0b4b1a5e-0000-4000-8000-00000000a017") -> dict[str, Any]:
    group, version, resource = KINDS[kind]
    request: dict[str, Any] = {
        "uid": uid, "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": "default", "operation": operation,
        "userInfo": {"username": "mallory", "groups": ["system:authenticated"]}, "object": obj}
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def pod(containers: list[dict[str, Any]], *, labels: dict[str, str] | None = None,
        volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if volumes is not None:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": labels if labels is not None else {"app": "web"}},
            "spec": spec}


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def containers(n: int, *, total_bytes: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """`n` containers; with `total_bytes`, each image name is padded so that the list's
    JSON is about that long (the issue gives its cases by container count and size)."""
    def one(i: int, pad: int) -> dict[str, Any]:
        return {"name": f"c{i}", "image": "r" + "a" * pad, **(copy.deepcopy(fields) if fields else {})}
    pad = 30
    if total_bytes:
        bare = len(encode([one(i, 0) for i in range(n)]))
        pad = max(0, round((total_bytes - bare) / n))
    return [one(i, pad) for i in range(n)]


def normal_review() -> bytes:
    return encode(review(pod([{"name": "app", "image": "registry.example.com/web:1.0",
                               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                             "limits": {"memory": "128Mi"}}}])))


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def label_600() -> bytes:
    return encode(review(pod(containers(600), labels={"app": "a" * 100_000})))


def pod_44k() -> bytes:
    return encode(review(pod(containers(44_000, total_bytes=int(7.9 * MIB) - 400))))


def deployment_40k() -> bytes:
    template = pod(containers(40_000, total_bytes=int(7.2 * MIB) - 600))
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": template["metadata"], "spec": template["spec"]}}}
    return encode(review(deployment, kind="Deployment"))


def pod_200k() -> bytes:
    return encode(review(pod(containers(200_000, total_bytes=int(6.6 * MIB) - 400))))


def quantity_review(i: int, digits: int) -> bytes:
    """A pod whose memory request and limit are two distinct quantity strings of about
    `digits` characters each: the parser's cache is keyed by the raw text."""
    request, limit = (str(2 * i + k + 1) + "0" * digits + "Mi" for k in (0, 1))
    return encode(review(pod([{"name": "app", "image": "registry.example.com/web:1.0",
                               "resources": {"requests": {"cpu": "100m", "memory": request},
                                             "limits": {"memory": limit}}}])))


def deep_update() -> bytes:
    """An UPDATE whose object and oldObject are equal, the body nested about 990 deep. Spliced
    in as text: Python's own JSON encoder would hit its recursion limit."""
    obj = pod([{"name": "app", "image": "registry.example.com/web:1.0"}])
    obj["spec"]["x"] = "NESTED"
    depth = 990 - 5   # envelope, request, object, spec, x
    deep = '{"a":' * depth + '"x"' + "}" * depth
    return encode(review(obj, operation="UPDATE", old=obj)).replace(b'"NESTED"', deep.encode())


def deep_patch() -> bytes:
    """A second pass of /mutate over a pod whose injected volumes were moved ahead of its own
    volume, which is nested 300 deep: the answer replaces the whole volume list, carrying
    that content into the patch. The first pass runs the engine here, as the API server's
    first call would have."""
    sys.path.insert(0, str(ROOT))
    import jsonpatch

    from webhook.engine.inject import inject
    from webhook.policy.loader import load_policy_dir

    first = pod([{"name": "app", "image": "registry.example.com/web:1.0"}],
                volumes=[{"name": "data", "emptyDir": {}, "x": nested(300)}])
    result = inject(first, namespace="default", policies=load_policy_dir(ROOT / "policies"))
    second = jsonpatch.apply_patch(first, result.patch)
    volumes = second["spec"]["volumes"]
    second["spec"]["volumes"] = [v for v in volumes if v["name"] != "data"] + [v for v in volumes
                                                                                if v["name"] == "data"]
    return encode(review(second))


def privileged_30k() -> bytes:
    return encode(review(pod(containers(30_000, total_bytes=int(2.7 * 1000 * 1000) - 400,
                                        securityContext={"privileged": True}))))


def uid_3mb() -> bytes:
    return encode(review(pod([{"name": "app", "image": "registry.example.com/web:1.0"}]), uid="u" * 3_000_000))
