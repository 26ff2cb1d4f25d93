"""The injection issue's "done when", over a corpus of real-world pods.

Every pod in `tests/data/corpus/` (see its PROVENANCE.md) goes through the running
server (`webhook serve` on the shipped policies, over TLS) with the client that
checks answers the way kube-apiserver does. For each one:

- the answer passes the API server's response checks and admits the pod;
- the patch applies with Python's jsonpatch and is a list of small operations;
- the patched pod validates against the Kubernetes OpenAPI schema (strict about
  unknown fields) of 1.33, where native sidecars went GA, and of the newest
  version kubernetes-validate ships;
- the patched pod keeps the pod rules the API server enforces (names, volumes,
  mounts, restartPolicy, ...);
- `identity-init` is the first init container wherever the identity policy
  applies, and absent elsewhere;
- sending the patched pod again (API server reinvocation) yields no patch.

Then all the patches are applied once more with evanphx/json-patch, the Go library
the API server applies them with (`tests/tools/evanphx`), and the results must be
byte-equal to Python's after canonical JSON. That test is skipped only when the
Go toolchain or the library is not installed.

Each corpus file starts with comment lines; `# namespace: NAME` there is the
namespace of the admission request (controllers send pods without one).
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.apiserver import AdmissionResult
from tests.conftest import SHIPPED_POLICIES, ServerProcess
from tests.engine_helpers import unexpanded

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "data" / "corpus"
EVANPHX_SRC = HERE / "tools" / "evanphx"
# The Go import path of the v4 API (k8s.io/apiserver's mutating dispatcher uses it).
EVANPHX_IMPORT = "github.com/evanphx/json-patch"
# GOPATH of Debian's golang-github-evanphx-json-patch-dev (and its dependencies).
DEBIAN_GOPATH = "/usr/share/gocode"
INSTALL_HINT = "apt-get install golang-go golang-github-evanphx-json-patch-dev"

# Native sidecars (init containers with restartPolicy: Always) are GA from 1.33, the
# oldest API the injected pods must be accepted by; also check the newest schema.
MIN_SCHEMA_VERSION = "1.33"
SCHEMA_VERSIONS = tuple(dict.fromkeys((MIN_SCHEMA_VERSION, kubernetes_validate.latest_version())))

IDENTITY_POLICY = "identity"
IDENTITY_INIT = "identity-init"
OPT_OUT_ANNOTATION = "runtime.platform.io/inject"

# RFC 1123 label: container, volume and port names (port names also: 15 chars, a letter).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Security context fields the API server forbids when spec.os.name is windows.
LINUX_ONLY_CONTAINER_FIELDS = ("seLinuxOptions", "seccompProfile", "appArmorProfile", "capabilities",
                               "readOnlyRootFilesystem", "privileged", "allowPrivilegeEscalation",
                               "procMount", "runAsUser", "runAsGroup")
# Init containers that are not sidecars run to completion: the API server refuses these on them.
SIDECAR_ONLY_FIELDS = ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle")


# --- the corpus -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusPod:
    name: str            # file stem, the test id
    namespace: str       # admission request namespace, from the `# namespace:` header
    pod: dict[str, Any]


def _load_corpus() -> list[CorpusPod]:
    cases = []
    for path in sorted(CORPUS_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        header = re.search(r"^# namespace: *(\S+) *$", text, re.MULTILINE)
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert len(docs) == 1, f"{path.name}: one pod per file"
        cases.append(CorpusPod(path.stem, header.group(1) if header else "default", docs[0]))
    return cases


CORPUS = _load_corpus()


def corpus_params() -> list[Any]:
    return [pytest.param(case, id=case.name) for case in CORPUS]


def test_corpus_is_a_realistic_size() -> None:
    assert 25 <= len(CORPUS) <= 45, len(CORPUS)
    assert all(case.pod.get("kind") == "Pod" and case.pod.get("apiVersion") == "v1" for case in CORPUS)


# --- what the shipped identity policy should select ------------------------------------------

def _shipped_policy(name: str) -> dict[str, Any]:
    for path in sorted(SHIPPED_POLICIES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "InjectionPolicy" \
                    and doc.get("metadata", {}).get("name") == name:
                return doc
    raise AssertionError(f"no shipped InjectionPolicy named {name!r} in {SHIPPED_POLICIES}")


def is_windows(pod: dict[str, Any]) -> bool:
    """A Windows pod: spec.os says so, or (as written before spec.os existed) its node selector."""
    spec = pod.get("spec") or {}
    return ((spec.get("os") or {}).get("name") == "windows"
            or (spec.get("nodeSelector") or {}).get("kubernetes.io/os") == "windows")


def identity_applies(case: CorpusPod) -> bool:
    """Linux pods in namespaces the identity policy does not exclude, unless opted out where
    the policy lets pods opt out (`optOut: Forbidden` ignores the annotations)."""
    spec = _shipped_policy(IDENTITY_POLICY)["spec"]
    excluded = spec["match"]["namespaces"].get("exclude", [])
    annotations = (case.pod.get("metadata") or {}).get("annotations") or {}
    opted_out = spec.get("optOut", "Allowed") == "Allowed" and (
        annotations.get(OPT_OUT_ANNOTATION) == "false"
        or annotations.get(f"{OPT_OUT_ANNOTATION}-{IDENTITY_POLICY}") == "false")
    return (not is_windows(case.pod) and not opted_out
            and not any(fnmatchcase(case.namespace, pattern) for pattern in excluded))


# --- checks ------------------------------------------------------------------------------------

def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_breach(pod: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "<root>"
        return f"Kubernetes {exc.version} schema: {where}: {exc.message}"
    return None


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def pod_rule_breaches(pod: dict[str, Any], *, original: dict[str, Any] | None = None) -> list[str]:
    """Breaches of the structural rules the API server applies to a pod on create.

    With `original`, duplicate env names are only a breach when the patch added them.
    """
    spec = pod.get("spec") or {}
    init, app = _items(spec.get("initContainers")), _items(spec.get("containers"))
    ephemeral = _items(spec.get("ephemeralContainers"))
    groups = {"initContainers": init, "containers": app, "ephemeralContainers": ephemeral}
    out: list[str] = []

    names = Counter(c.get("name") for c in (*init, *app, *ephemeral))
    out += [f"container name {n!r} used {k} times across init/containers/ephemeral"
            for n, k in names.items() if k > 1]
    out += [f"container name {n!r} is not an RFC 1123 label"
            for n in names if not (isinstance(n, str) and DNS1123_LABEL.match(n))]

    volumes = Counter(v.get("name") for v in _items(spec.get("volumes")))
    out += [f"volume name {n!r} used {k} times" for n, k in volumes.items() if k > 1]
    out += [f"volume name {n!r} is not an RFC 1123 label"
            for n in volumes if not (isinstance(n, str) and DNS1123_LABEL.match(n))]

    original_env: dict[str, Counter] = {}
    if original is not None:
        ospec = original.get("spec") or {}
        for c in (*_items(ospec.get("initContainers")), *_items(ospec.get("containers"))):
            original_env[c.get("name")] = Counter(e.get("name") for e in _items(c.get("env")))

    windows = (spec.get("os") or {}).get("name") == "windows"
    for group, containers in groups.items():
        for c in containers:
            where = f"spec.{group}[{c.get('name')}]"
            mounts = _items(c.get("volumeMounts"))
            out += [f"{where} mounts volume {m.get('name')!r}, which the pod does not define"
                    for m in mounts if m.get("name") not in volumes]
            out += [f"{where} mounts {p!r} {k} times"
                    for p, k in Counter(m.get("mountPath") for m in mounts).items() if k > 1]
            port_names = Counter(p.get("name") for p in _items(c.get("ports")) if p.get("name"))
            out += [f"{where} port name {n!r} used {k} times" for n, k in port_names.items() if k > 1]
            env = Counter(e.get("name") for e in _items(c.get("env")))
            before = original_env.get(c.get("name"), Counter())
            out += [f"{where} env {n!r} appears {k} times (was {before[n]})"
                    for n, k in env.items() if k > 1 and k > before[n]]
            if "restartPolicy" in c:
                if group != "initContainers":
                    out.append(f"{where} sets restartPolicy, which only init containers may set")
                elif c["restartPolicy"] != "Always":
                    out.append(f"{where} restartPolicy must be Always, not {c['restartPolicy']!r}")
            if group == "initContainers" and c.get("restartPolicy") != "Always":
                out += [f"{where} is not a sidecar and may not set {f}" for f in SIDECAR_ONLY_FIELDS if f in c]
            if windows:
                sc = c.get("securityContext") or {}
                out += [f"{where} sets securityContext.{f}, forbidden in a Windows pod"
                        for f in LINUX_ONLY_CONTAINER_FIELDS if f in sc]
    return out


# --- one admission per corpus pod, shared by the tests below ---------------------------------

@dataclass
class Admission:
    case: CorpusPod
    result: AdmissionResult
    raw_patch: bytes | None      # the patch bytes exactly as the server sent them

    @property
    def patched(self) -> dict[str, Any]:
        return self.result.patched(self.case.pod)


@pytest.fixture(scope="module")
def admit(server: ServerProcess) -> Callable[[CorpusPod], Admission]:
    """Sends each corpus pod through the server once per module (the API server's client)."""
    cache: dict[str, Admission] = {}

    def first_pass(case: CorpusPod) -> Admission:
        if case.name not in cache:
            result = server.client.admit(case.pod, namespace=case.namespace)
            raw = result.response.get("patch")
            cache[case.name] = Admission(case, result, base64.b64decode(raw) if raw else None)
        return cache[case.name]

    return first_pass


def _admitted(admit: Callable[[CorpusPod], Admission], case: CorpusPod) -> Admission:
    admission = admit(case)
    assert admission.result.allowed, \
        f"{case.name} denied: {json.dumps(admission.result.response.get('status'))}"
    return admission


# --- per-pod tests -----------------------------------------------------------------------------

@pytest.mark.slow  # each pod against the OpenAPI schemas of two Kubernetes versions
@pytest.mark.parametrize("case", corpus_params())
def test_corpus_pod_itself_is_valid(case: CorpusPod) -> None:
    """Sanity for the corpus: failures after injection are then the injection's."""
    breaches = [b for v in SCHEMA_VERSIONS if (b := schema_breach(case.pod, v))]
    breaches += pod_rule_breaches(case.pod)
    assert not breaches, "\n".join(breaches)


@pytest.mark.parametrize("case", corpus_params())
def test_answer_is_accepted_and_patch_applies(admit: Callable[[CorpusPod], Admission],
                                              case: CorpusPod) -> None:
    admission = _admitted(admit, case)   # admit() already ran the API server's response checks
    patch = admission.result.patch or []
    patched = jsonpatch.apply_patch(case.pod, patch, in_place=False)
    assert patched["metadata"].get("name") == (case.pod.get("metadata") or {}).get("name")
    # Computed operations, not a whole-object or whole-section replacement.
    assert not [op for op in patch if op.get("path") == ""], "patch replaces the whole pod"
    assert not [op for op in patch if op.get("op") == "replace" and op.get("path") in ("/spec", "/metadata")]
    if identity_applies(case):
        assert patch, f"{case.name}: the identity policy applies but the answer has no patch"


@pytest.mark.parametrize("case", corpus_params())
def test_patched_pod_matches_openapi_schema(admit: Callable[[CorpusPod], Admission], case: CorpusPod) -> None:
    patched = _admitted(admit, case).patched
    breaches = [b for v in SCHEMA_VERSIONS if (b := schema_breach(patched, v))]
    assert not breaches, "\n".join(breaches)


@pytest.mark.parametrize("case", corpus_params())
def test_patched_pod_keeps_pod_rules(admit: Callable[[CorpusPod], Admission], case: CorpusPod) -> None:
    patched = _admitted(admit, case).patched
    breaches = pod_rule_breaches(patched, original=case.pod)
    assert not breaches, "\n".join(breaches)


@pytest.mark.parametrize("case", corpus_params())
def test_identity_init_runs_first(admit: Callable[[CorpusPod], Admission], case: CorpusPod) -> None:
    patched = _admitted(admit, case).patched
    init = [c.get("name") for c in _items((patched.get("spec") or {}).get("initContainers"))]
    if identity_applies(case):
        assert init and init[0] == IDENTITY_INIT, f"init containers in order: {init}"
        assert init.count(IDENTITY_INIT) == 1, f"init containers in order: {init}"
    else:
        assert IDENTITY_INIT not in init, \
            f"{IDENTITY_INIT} injected into a pod the identity policy must skip: {init}"


@pytest.mark.parametrize("case", corpus_params())
def test_own_env_references_to_injected_vars_expand(admit: Callable[[CorpusPod], Admission],
                                                    case: CorpusPod) -> None:
    """The kubelet expands `$(VAR)` in an env value only from the vars defined before it: a
    reference the pod's own env makes must expand after injection if it did before, or if
    it names a var the injection defines in that container."""
    patched = _admitted(admit, case).patched
    groups = ("initContainers", "containers")
    original = {c.get("name"): c for key in groups for c in _items((case.pod.get("spec") or {}).get(key))}
    failures = []
    for c in (c for key in groups for c in _items((patched.get("spec") or {}).get(key))):
        if c.get("name") not in original:
            continue  # an injected container
        own = original[c.get("name")]
        before = unexpanded(own)
        injected = {e.get("name") for e in _items(c.get("env"))} - {e.get("name") for e in _items(own.get("env"))}
        for name, missing in unexpanded(c).items():
            broken = missing - (before[name] - injected) if name in before else set()
            if broken:
                failures.append(f"{c.get('name')}: env {name} leaves {sorted(broken)} unexpanded")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", corpus_params())
def test_second_pass_adds_nothing(server: ServerProcess, admit: Callable[[CorpusPod], Admission],
                                  case: CorpusPod) -> None:
    """reinvocationPolicy: IfNeeded sends the already-mutated pod again."""
    patched = _admitted(admit, case).patched
    again = server.client.admit(patched, namespace=case.namespace)
    assert again.allowed, json.dumps(again.response.get("status"))
    assert again.patch is None, f"second pass patched again: {json.dumps(again.patch, indent=1)[:3000]}"


# --- the same patches through evanphx/json-patch ----------------------------------------------

def _gopath_with_library() -> str | None:
    candidates = [p for p in os.environ.get("GOPATH", "").split(os.pathsep) if p] + [DEBIAN_GOPATH]
    for gopath in candidates:
        if (Path(gopath) / "src" / EVANPHX_IMPORT / "patch.go").is_file():
            return gopath
    return None


@pytest.fixture(scope="session")
def evanphx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Go program, compiled once per session into a temporary directory."""
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"Go toolchain not installed (`go` not on PATH); {INSTALL_HINT}")
    gopath = _gopath_with_library()
    if gopath is None:
        pytest.skip(f"Go library {EVANPHX_IMPORT} not found under GOPATH or {DEBIAN_GOPATH}; {INSTALL_HINT}")
    out = tmp_path_factory.mktemp("evanphx")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": gopath, "GOFLAGS": "", "CGO_ENABLED": "0",
           "GOCACHE": str(out / "gocache"), "GOTOOLCHAIN": "local"}
    build = subprocess.run([go, "build", "-o", str(out / "evanphx"), "."], cwd=EVANPHX_SRC, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"go build failed:\n{build.stdout}{build.stderr}"
    yield out / "evanphx"


def run_evanphx(binary: Path, inputs: list[tuple[str, bytes, bytes]]) -> dict[str, dict[str, Any]]:
    """Applies each (id, doc JSON, patch JSON) with evanphx; returns id -> {"result"| "error"}."""
    stream = b"".join(b'{"id":%s,"doc":%s,"patch":%s}\n' % (json.dumps(i).encode(), doc, patch)
                      for i, doc, patch in inputs)
    proc = subprocess.run([str(binary)], input=stream, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(inputs), proc.stdout.decode()[:2000]
    return {a["id"]: a for a in answers}


def test_evanphx_tool_applies_and_reports_errors(evanphx: Path) -> None:
    doc = b'{"metadata":{"annotations":{"a~b":"1"}}}'
    out = run_evanphx(evanphx, [
        ("escapes", doc, b'[{"op":"add","path":"/metadata/annotations/x~1y~0z","value":"<&>"},'
                         b'{"op":"remove","path":"/metadata/annotations/a~0b"}]'),
        ("no-parent", doc, b'[{"op":"add","path":"/spec/containers/0","value":{}}]'),
        ("not-a-patch", doc, b'{"op":"add"}'),
    ])
    assert json.loads(canonical(out["escapes"]["result"])) == {"metadata": {"annotations": {"x/y~z": "<&>"}}}
    assert "error" in out["no-parent"] and "error" in out["not-a-patch"]


def test_patches_apply_identically_with_evanphx(evanphx: Path, admit: Callable[[CorpusPod], Admission]) -> None:
    started = time.monotonic()
    admissions = [_admitted(admit, case) for case in CORPUS]
    patched = [a for a in admissions if a.raw_patch is not None]
    assert len(patched) >= len(CORPUS) // 2, "most corpus pods should be injected"
    # The document as the API server holds it (what the review carried) and the
    # patch bytes exactly as the server sent them.
    inputs = [(a.case.name, json.dumps(a.case.pod).encode(), a.raw_patch) for a in patched]
    answers = run_evanphx(evanphx, inputs)

    failures = []
    for a in patched:
        answer = answers[a.case.name]
        if "error" in answer:
            failures.append(f"{a.case.name}: evanphx refused the patch: {answer['error']}")
            continue
        go, py = canonical(answer["result"]), canonical(a.patched)
        if go != py:
            diff = difflib.unified_diff(
                json.dumps(a.patched, indent=1, sort_keys=True).splitlines(),
                json.dumps(answer["result"], indent=1, sort_keys=True).splitlines(),
                "python-jsonpatch", "evanphx", lineterm="", n=2)
            failures.append(f"{a.case.name}: results differ:\n" + "\n".join(list(diff)[:60]))
    assert not failures, "\n\n".join(failures)
    print(f"evanphx: {len(patched)} patches applied and compared in {time.monotonic() - started:.2f}s")
