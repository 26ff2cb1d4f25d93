"""`webhook test DIR`: policy test cases, run through the same admission as the server.

A test file holds `PolicyTest` documents:

    apiVersion: runtime.platform.io/v1
    kind: PolicyTest
    metadata: {name: service-pods}
    spec:
      policies: ..                 # optional, relative to this file; default: --policies
      cases:
        - name: a Deployment pod gets the whole runtime
          namespace: shop          # default: default
          namespaceLabels: {team: payments}   # for namespaceSelector policies
          user: {username: alice, groups: [dev]}
          object: {kind: Pod, ...} # or objectFile: pods/web.yaml (relative to this file)
          expect:
            allowed: true
            messageContains: [privileged]     # substrings of the denial message
            warningsContain: [runAsNonRoot]   # substrings, each in some warning
            warnings: 0                       # exact number of warnings
            pod: {spec: {initContainers: [{name: identity-init}, ...]}}

`expect.pod` is a subset of the admitted object: mappings match key by key, lists
must have the same length and match element by element.

Given a directory, every *.yaml/*.yml file under it is read, and documents that
declare another kind (the pods an objectFile names, a policy directory for
`spec.policies`) are not tests. A document of kind PolicyTest, or of no kind at
all, must be a valid test: an error in it stops the run (exit 2). A file given
by name is read as tests whatever its documents' kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field, ValidationError

from webhook.engine.namespaces import NamespaceLabelsUnavailable
from webhook.cli.offline import Document, InputError, NamespaceLabelSource, admit, read_documents
from webhook.policy.common import Strict
from webhook.policy.errors import PolicyLoadError
from webhook.policy.loader import PolicySet, load_policy_dir


class User(Strict):
    username: str = "tester"
    groups: list[str] = []


class Expect(Strict):
    allowed: bool
    message_contains: list[str] = Field(default_factory=list, alias="messageContains")
    warnings_contain: list[str] = Field(default_factory=list, alias="warningsContain")
    warnings: int | None = None
    pod: dict[str, Any] | None = None


class Case(Strict):
    name: str
    namespace: str = "default"
    namespace_labels: dict[str, str] | None = Field(None, alias="namespaceLabels")
    user: User = User()
    object: dict[str, Any] | None = None
    object_file: str | None = Field(None, alias="objectFile")
    expect: Expect


class TestSpec(Strict):
    policies: str | None = None
    cases: list[Case] = Field(min_length=1)


class PolicyTest(Strict):
    api_version: str = Field(alias="apiVersion", pattern=r"^runtime\.platform\.io/v1$")
    kind: str = Field(pattern=r"^PolicyTest$")
    metadata: dict[str, Any]
    spec: TestSpec


@dataclass
class CaseResult:
    name: str
    failures: list[str]


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where `actual` does not contain `expected`, or None."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path or '.'}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            found = subset_mismatch(value, actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            got = len(actual) if isinstance(actual, list) else actual
            return f"{path}: expected a list of {len(expected)}, got {got}"
        for index, (e, a) in enumerate(zip(expected, actual)):
            found = subset_mismatch(e, a, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"


def _run_case(case: Case, obj: dict[str, Any], policies: PolicySet, where: str) -> list[str]:
    try:
        result = admit(Document(where, obj), policies=policies, namespace=case.namespace,
                       username=case.user.username, groups=tuple(case.user.groups),
                       namespace_labels=NamespaceLabelSource(given=case.namespace_labels,
                                                             missing="give the case namespaceLabels"))
    except NamespaceLabelsUnavailable as exc:
        return [f"a policy has a namespaceSelector, and {exc}"]
    failures = list(result.checks)
    messages = [d.message or "" for _, d in result.validations if not d.allowed]
    if result.injection and result.injection.denial:
        messages.append(result.injection.denial)
    warnings = [w for _, d in result.validations for w in d.warnings]
    warnings += list(result.injection.warnings) if result.injection else []
    allowed = not result.denied
    expect = case.expect
    if allowed != expect.allowed:
        failures.append(f"expected {'allowed' if expect.allowed else 'denied'}, got "
                        f"{'allowed' if allowed else 'denied: ' + '; '.join(messages)}")
    for text in expect.message_contains:
        if not any(text in m for m in messages):
            failures.append(f"no denial message contains {text!r}")
    for text in expect.warnings_contain:
        if not any(text in w for w in warnings):
            failures.append(f"no warning contains {text!r} (warnings: {warnings})")
    if expect.warnings is not None and len(warnings) != expect.warnings:
        failures.append(f"expected {expect.warnings} warning(s), got {len(warnings)}: {warnings}")
    if expect.pod is not None:
        found = subset_mismatch(expect.pod, result.mutated)
        if found:
            failures.append(f"admitted object differs at {found}")
    return failures


def run_tests(directory: Path, *, default_policies: Path, out: TextIO) -> int:
    """Run every PolicyTest under `directory`; exit status 1 if any case fails."""
    scanning = directory.is_dir()
    files = sorted(p for p in directory.rglob("*.y*ml") if p.suffix in (".yaml", ".yml")) \
        if scanning else [directory]
    if not files:
        raise InputError(f"{directory}: no test files")
    passed = failed = tests = 0
    cache: dict[Path, PolicySet] = {}
    for path in files:
        for doc in read_documents(str(path)):
            # Fixtures live beside the tests; only another declared kind marks one, so a
            # test with a mistyped apiVersion or a missing kind is still reported.
            if scanning and doc.obj.get("kind", "PolicyTest") != "PolicyTest":
                continue
            tests += 1
            try:
                test = PolicyTest.model_validate(doc.obj)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise InputError(f"{doc.where}: {loc}: {first['msg']}") from None
            policy_dir = (path.parent / test.spec.policies).resolve() if test.spec.policies else default_policies
            if policy_dir not in cache:
                try:
                    cache[policy_dir] = load_policy_dir(policy_dir)
                except PolicyLoadError as exc:
                    raise InputError(f"{doc.where}: policies in {policy_dir} do not load:\n{exc}") from None
            for case in test.spec.cases:
                label = f"{test.metadata.get('name', path.stem)}/{case.name}"
                if (case.object is None) == (case.object_file is None):
                    raise InputError(f"{doc.where}: case {case.name!r}: give exactly one of object, objectFile")
                obj = case.object if case.object is not None else \
                    read_documents(str(path.parent / str(case.object_file)))[0].obj
                failures = _run_case(case, obj, cache[policy_dir], doc.where)
                if failures:
                    failed += 1
                    out.write(f"FAIL {label}\n" + "".join(f"     {f}\n" for f in failures))
                else:
                    passed += 1
                    out.write(f"PASS {label}\n")
    if not tests:
        raise InputError(f"{directory}: no PolicyTest documents")
    out.write(f"{passed} passed, {failed} failed\n")
    return 1 if failed else 0
