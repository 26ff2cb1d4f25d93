"""`webhook test DIR|FILE`: policy test cases, run through the same admission as the server.

The format, the matching rules and the choice of policies are documented in
docs/testing.md (whose examples a test runs). In short: `expect.pod` is a subset of
the admitted object; mappings match key by key; a list in it matches when each
expected item matches a different item of the admitted list, in any order, unless
`exact: true` asks for the same items in the same order.

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
    exact: bool = Field(False, description="lists in `pod` must hold the same items in the same order")
    message_contains: list[str] = Field(default_factory=list, alias="messageContains")
    warnings_contain: list[str] = Field(default_factory=list, alias="warningsContain")
    warnings: int | None = None
    pod: dict[str, Any] | None = None


class Case(Strict):
    name: str
    namespace: str | None = None   # default: the object's own, else "default"
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


def subset_mismatch(expected: Any, actual: Any, path: str = "", *, exact: bool = False) -> str | None:
    """Where `actual` does not contain `expected`, or None.

    Mappings match key by key (`actual` may hold more keys). A list matches when each
    expected item matches a different actual item, in any order (`actual` may hold
    more); with `exact`, the lists must have the same length and match item by item.
    Anything else must be equal."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path or '.'}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            found = subset_mismatch(value, actual[key], f"{path}.{key}", exact=exact)
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path or '.'}: expected a list, got {actual!r}"
        if exact:
            if len(actual) != len(expected):
                return f"{path}: expected a list of {len(expected)}, got {len(actual)} (exact: true)"
            for index, (e, a) in enumerate(zip(expected, actual)):
                found = subset_mismatch(e, a, f"{path}[{index}]", exact=True)
                if found:
                    return found
            return None
        return _unmatched_item(expected, actual, path)
    return None if expected == actual else f"{path or '.'}: expected {expected!r}, got {actual!r}"


def _unmatched_item(expected: list[Any], actual: list[Any], path: str) -> str | None:
    """Pairs each expected item with a different actual item it is a subset of (a
    bipartite matching, so that the order of the expected items never matters)."""
    fits = [[j for j, a in enumerate(actual) if subset_mismatch(e, a) is None] for e in expected]
    owner: dict[int, int] = {}   # actual index -> expected index

    def place(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i, item in enumerate(expected):
        if not place(i, set()):
            return f"{path}: no item matches {item!r}{_closest(item, actual, path)}"
    return None


def _closest(item: Any, actual: list[Any], path: str) -> str:
    """What a reader looks at next: how the actual item of the same name differs."""
    if isinstance(item, dict) and "name" in item:
        for index, candidate in enumerate(actual):
            if isinstance(candidate, dict) and candidate.get("name") == item["name"]:
                why = subset_mismatch(item, candidate, f"{path}[{index}]")
                return f"; the item named {item['name']!r} differs at {why}" if why else \
                    f"; the item named {item['name']!r} is matched by another expected item"
        return f"; no item is named {item['name']!r}"
    if any(subset_mismatch(item, a) is None for a in actual):
        return "; every item it matches is matched by another expected item"
    return ""


def _namespace(case: Case, obj: dict[str, Any], where: str) -> str:
    """The case's namespace: refused, as kubectl does, when it contradicts the object's own."""
    metadata = obj.get("metadata")
    own = metadata.get("namespace") if isinstance(metadata, dict) else None
    if case.namespace and own and own != case.namespace:
        raise InputError(f"{where}: case {case.name!r}: namespace {case.namespace!r} contradicts the object's "
                         f"own namespace {own!r}; give one of them")
    return case.namespace or (own if isinstance(own, str) and own else "default")


def _run_case(case: Case, obj: dict[str, Any], policies: PolicySet, where: str) -> list[str]:
    try:
        result = admit(Document(where, obj), policies=policies, namespace=_namespace(case, obj, where),
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
        found = subset_mismatch(expect.pod, result.mutated, exact=expect.exact)
        if found:
            failures.append(f"admitted object differs at {found}")
    return failures


def run_tests(directory: Path, *, default_policies: Path, out: TextIO, policies: Path | None = None,
              err: TextIO | None = None) -> int:
    """Run every PolicyTest under `directory`; exit status 1 if any case fails.

    The policies: `policies` (the --policies flag) when given, replacing a test's own
    `spec.policies` with a note on `err`; else the test's `spec.policies`; else
    `default_policies`."""
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
                raise InputError("\n".join(f"{doc.where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                           for e in exc.errors())) from None
            policy_dir = _policy_dir(test, path, doc.where, default=default_policies, flag=policies, err=err)
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


def _policy_dir(test: PolicyTest, path: Path, where: str, *, default: Path, flag: Path | None,
                err: TextIO | None) -> Path:
    own = (path.parent / test.spec.policies).resolve() if test.spec.policies else None
    if flag is None:
        return own or default
    if own is not None and own != flag.resolve() and err is not None:
        # The flag wins: running a suite against a candidate policy set is what it is for.
        err.write(f"note: {where}: --policies {flag} replaces the test's spec.policies ({test.spec.policies})\n")
    return flag
