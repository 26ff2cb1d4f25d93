"""PolicyTest's matching rule for `expect.pod` (docs/testing.md), table-driven, and the
rules a run follows, through the real CLI: which policies, which namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, copy_policies
from tests.test_cli import POD, webhook
from webhook.cli.policytest import subset_mismatch

ENV = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
       {"name": "SERVICE_NAME", "value": "default.shop"}, {"name": "IDENTITY_CERT_DIR", "value": "/var/run/identity"}]


@pytest.mark.parametrize(("expected", "actual", "exact", "failure"), [
    # One item of eight is enough to state; order does not matter.
    ([{"name": "SERVICE_NAME", "value": "default.shop"}], ENV, False, None),
    ([{"name": "IDENTITY_CERT_DIR"}, {"name": "POD_NAME"}], ENV, False, None),
    ([{"name": "SERVICE_NAME", "value": "other"}], ENV, False,
     ".env: no item matches {'name': 'SERVICE_NAME', 'value': 'other'}; the item named 'SERVICE_NAME' differs "
     "at .env[1].value: expected 'other', got 'default.shop'"),
    ([{"name": "MISSING"}], ENV, False, ".env: no item matches {'name': 'MISSING'}; no item is named 'MISSING'"),
    # Each expected item needs an item of its own: two expectations cannot share one.
    ([{"name": "POD_NAME"}, {"name": "POD_NAME"}], ENV, False,
     ".env: no item matches {'name': 'POD_NAME'}; the item named 'POD_NAME' is matched by another expected item"),
    (["a", "a"], ["a", "b"], False, ".env: no item matches 'a'; every item it matches is matched by another "
                                    "expected item"),
    # The matching is not greedy: {} could take "x"'s item, and must not.
    ([{}, {"name": "x"}], [{"name": "x"}, {"name": "y"}], False, None),
    ([], ENV, False, None),
    # exact: the same items in the same order.
    ([{"name": "SERVICE_NAME"}], ENV, True, ".env: expected a list of 1, got 3 (exact: true)"),
    ([{"name": "SERVICE_NAME"}, {"name": "POD_NAME"}, {}], ENV, True,
     ".env[0].name: expected 'SERVICE_NAME', got 'POD_NAME'"),
    ([{"name": "POD_NAME"}, {}, {"value": "/var/run/identity"}], ENV, True, None),
    ("x", ENV, False, ".env: expected 'x', got " + repr(ENV)),
    ([{"name": "POD_NAME"}], {"name": "POD_NAME"}, False, ".env: expected a list, got {'name': 'POD_NAME'}"),
])
def test_expected_lists_are_subsets_unless_exact(expected: Any, actual: Any, exact: bool,
                                                 failure: str | None) -> None:
    assert subset_mismatch({"env": expected}, {"env": actual, "other": 1}, exact=exact) == failure


def _suite(root: Path, *cases: dict[str, Any], policies: str | None = None) -> Path:
    spec: dict[str, Any] = {"cases": list(cases)}
    if policies is not None:
        spec["policies"] = policies
    root.mkdir(parents=True, exist_ok=True)
    (root / "t.yaml").write_text(yaml.safe_dump({"apiVersion": "runtime.platform.io/v1", "kind": "PolicyTest",
                                                 "metadata": {"name": "t"}, "spec": spec}))
    return root


@pytest.mark.process
def test_a_test_about_one_env_var_states_only_that_one(tmp_path: Path) -> None:
    case = {"name": "service name", "namespace": "shop", "object": POD,
            "expect": {"allowed": True, "pod": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "SERVICE_NAME", "value": "default.shop"}]}]}}}}
    result = webhook("test", str(_suite(tmp_path, case)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["PASS t/service name", "1 passed, 0 failed"]


@pytest.mark.process
def test_the_policies_flag_wins_over_spec_policies_with_a_note(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    copy_policies(bare, ROOT / "policies")
    for path in bare.glob("inject-*.yaml"):
        path.unlink()   # validation only: nothing is injected
    case = {"name": "identity injected", "object": POD,
            "expect": {"allowed": True, "pod": {"spec": {"initContainers": [{"name": "identity-init"}]}}}}
    suite = _suite(tmp_path / "suite", case, policies=str(ROOT / "policies"))
    own = webhook("test", str(suite))
    assert own.returncode == 0 and own.stderr == "", own.stdout + own.stderr
    flagged = webhook("test", str(suite), "--policies", str(bare))
    assert flagged.returncode == 1 and "FAIL t/identity injected" in flagged.stdout
    assert flagged.stderr == (f"note: {suite / 't.yaml'}:1: --policies {bare} replaces the test's "
                              f"spec.policies ({ROOT / 'policies'})\n")
    # Without spec.policies the flag is simply the policies; WEBHOOK_POLICIES only a default.
    plain = _suite(tmp_path / "plain", case)
    assert webhook("test", str(plain), "--policies", str(bare)).returncode == 1
    assert webhook("test", str(plain), env={"WEBHOOK_POLICIES": str(bare)}).returncode == 1
    assert webhook("test", str(_suite(tmp_path / "own", case, policies=str(ROOT / "policies"))),
                   env={"WEBHOOK_POLICIES": str(bare)}).returncode == 0


@pytest.mark.process
def test_a_case_takes_the_objects_namespace_and_refuses_a_contradicting_one(tmp_path: Path) -> None:
    system_pod = {**POD, "metadata": {**POD["metadata"], "namespace": "kube-system"}}
    # kube-system is excluded from injection: a case expecting the ledger annotation fails
    # there, as it would not in "default" (what a case without namespace used to mean).
    injected = {"name": "own namespace", "object": system_pod,
                "expect": {"allowed": True, "pod": {"metadata": {"annotations": {}}}}}
    result = webhook("test", str(_suite(tmp_path / "own", injected)))
    assert "FAIL t/own namespace" in result.stdout and ".metadata.annotations: missing" in result.stdout
    contradicting = {**injected, "namespace": "shop"}
    refused = webhook("test", str(_suite(tmp_path / "both", contradicting)))
    assert refused.returncode == 2
    assert ("case 'own namespace': namespace 'shop' contradicts the object's own namespace 'kube-system'"
            in refused.stderr)


def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = text.split("```yaml\n")[1:]
    return [b.split("```")[0] for b in blocks if b.startswith("apiVersion: runtime.platform.io/v1\nkind: PolicyTest\n"
                                                               "metadata: {name:")]


def test_the_testing_doc_has_its_examples() -> None:
    assert len(_doc_examples()) == 3


@pytest.mark.process
@pytest.mark.parametrize("index", range(3))
def test_the_examples_in_docs_testing_pass(tmp_path: Path, index: int) -> None:
    example = _doc_examples()[index]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    result = webhook("test", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    cases = yaml.safe_load(example)["spec"]["cases"]
    assert result.stdout.count("PASS ") == len(cases)
