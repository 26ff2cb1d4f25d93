"""The inputs the golden answers are recorded for: the pod corpus, the upstream Pod Security
fixtures, a few malformed requests, and the CLI invocations on the example inputs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(__file__).resolve().parent
CORPUS_DIR = ROOT / "tests" / "data" / "corpus"
PSS_DIR = ROOT / "tests" / "data" / "pod-security" / "v1.37"
INPUTS_DIR = GOLDEN_DIR / "inputs"
SHIPPED_POLICIES = ROOT / "policies"


@dataclass(frozen=True)
class PodInput:
    name: str            # the case name in the golden files
    path: Path           # the file it came from
    namespace: str       # the admission request's namespace
    pod: dict[str, Any]


def _namespace(text: str) -> str:
    # The corpus states the request's namespace in a comment (controllers send pods without one).
    found = re.search(r"^# namespace: *(\S+) *$", text, re.MULTILINE)
    return found.group(1) if found else "default"


def _load(path: Path, name: str) -> PodInput:
    text = path.read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) != 1:
        raise ValueError(f"{path}: expected one pod, found {len(docs)} documents")
    return PodInput(name, path, _namespace(text), docs[0])


def corpus_pods() -> list[PodInput]:
    return [_load(p, f"corpus/{p.stem}") for p in sorted(CORPUS_DIR.glob("*.yaml"))]


def pod_security_pods() -> list[PodInput]:
    return [_load(p, f"pss/{p.relative_to(PSS_DIR).with_suffix('').as_posix()}")
            for p in sorted(PSS_DIR.glob("*/*/*.yaml"))]


# --- requests that are not a pod's review: each must get its 4xx (or its answer) unchanged ---

@dataclass(frozen=True)
class RawRequest:
    name: str
    endpoint: str
    body: bytes
    content_type: str = "application/json"
    method: str = "POST"


_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"}]}}


def _review(request: dict[str, Any], api_version: str = "admission.k8s.io/v1") -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": "AdmissionReview", "request": request}).encode()


_BASE = {"uid": "00000000-0000-4000-8000-000000000001", "kind": {"group": "", "version": "v1", "kind": "Pod"},
         "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default",
         "operation": "CREATE", "userInfo": {"username": "alice"}}


def raw_requests() -> list[RawRequest]:
    """Malformed or unusual requests, at both endpoints."""
    cases = [
        ("not-json", b"{not json", "application/json"),
        ("empty-body", b"", "application/json"),
        ("json-array", b"[]", "application/json"),
        ("not-a-review", b'{"apiVersion":"v1","kind":"Pod"}', "application/json"),
        ("no-request", b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', "application/json"),
        ("unknown-api-version", _review({**_BASE, "object": _POD}, "admission.k8s.io/v2"), "application/json"),
        ("no-uid", _review({k: v for k, v in _BASE.items() if k != "uid"} | {"object": _POD}), "application/json"),
        ("object-not-a-mapping", _review({**_BASE, "object": ["a"]}), "application/json"),
        ("wrong-content-type", _review({**_BASE, "object": _POD}), "text/plain"),
        ("v1beta1", _review({**_BASE, "object": _POD}, "admission.k8s.io/v1beta1"), "application/json"),
        ("delete", _review({**_BASE, "operation": "DELETE", "name": "web-1", "object": None,
                            "oldObject": {**_POD, "metadata": {"name": "web-1"}}}), "application/json"),
        ("update", _review({**_BASE, "operation": "UPDATE", "name": "web-1",
                            "object": {**_POD, "metadata": {"name": "web-1", "labels": {"app": "web"}}},
                            "oldObject": {**_POD, "metadata": {"name": "web-1"}}}), "application/json"),
        ("not-a-pod", _review({**_BASE, "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                               "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                               "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}}),
         "application/json"),
    ]
    return [RawRequest(f"request/{name}", endpoint, body, content_type)
            for endpoint in ("/mutate", "/validate") for name, body, content_type in cases]


# --- the offline CLI ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]      # after `webhook`; paths relative to the project root


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def cli_invocations() -> list[Invocation]:
    out = [Invocation(("policies", "check", "policies")),
           Invocation(("test", "policies/tests"))]
    readme_pod = _rel(INPUTS_DIR / "pod-web.yaml")
    out += [Invocation(("mutate", "-f", readme_pod, "-o", fmt)) for fmt in ("yaml", "json", "patch", "diff")]
    examples = sorted(INPUTS_DIR.glob("*.yaml"))
    for path in examples:
        for command in ("validate", "explain"):
            out.append(Invocation((command, "-f", _rel(path))))
        if path.name != "pod-web.yaml":
            out.append(Invocation(("mutate", "-f", _rel(path), "-o", "diff")))
    # The corpus's patches are pinned at /mutate (the same engine): here only the reports.
    for pod in corpus_pods():
        rel = _rel(pod.path)
        out.append(Invocation(("validate", "-f", rel, "-n", pod.namespace)))
        out.append(Invocation(("explain", "-f", rel, "-n", pod.namespace)))
    # usage errors and unreadable input: exit 2, one line naming the problem
    out += [Invocation(("mutate", "-f", "tests/golden/inputs/no-such-file.yaml")),
            Invocation(("validate", "-f", readme_pod, "--namespace-labels", "no-equals-sign"))]
    return out
