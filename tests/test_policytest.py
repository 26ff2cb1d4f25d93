"""`webhook test DIR` on the layouts its docstring describes: fixtures beside the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_cli import POD, webhook

# Every test here runs the CLI in a process of its own.
pytestmark = pytest.mark.process


def _test_doc(**case: object) -> dict:
    return {"apiVersion": "runtime.platform.io/v1", "kind": "PolicyTest", "metadata": {"name": "t"},
            "spec": {"policies": str(ROOT / "policies"),
                     "cases": [{"name": "web", "expect": {"allowed": True}, **case}]}}


def _layout(root: Path, test: dict) -> Path:
    """A test file with the pod it names through objectFile in pods/ next to it."""
    (root / "pods").mkdir(parents=True)
    (root / "pods" / "web.yaml").write_text(yaml.safe_dump(POD))
    (root / "t.yaml").write_text(yaml.safe_dump(test))
    return root


def test_object_files_beside_the_tests_are_not_run_as_tests(tmp_path: Path) -> None:
    tests = _layout(tmp_path / "tests", _test_doc(objectFile="pods/web.yaml"))
    result = webhook("test", str(tests))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["PASS t/web", "1 passed, 0 failed"]


def test_a_broken_test_beside_fixtures_still_stops_the_run(tmp_path: Path) -> None:
    broken = _test_doc(objectFile="pods/web.yaml")
    broken["spec"]["cases"][0]["expect"] = {"allowd": True}
    tests = _layout(tmp_path / "typo", broken)
    result = webhook("test", str(tests))
    assert result.returncode == 2 and "t.yaml:1: spec.cases.0.expect" in result.stderr, result.stderr

    kindless = _test_doc(objectFile="pods/web.yaml")
    del kindless["kind"]  # no kind is not "another kind": still read as a test
    tests = _layout(tmp_path / "kindless", kindless)
    result = webhook("test", str(tests))
    assert result.returncode == 2 and "t.yaml:1: kind: Field required" in result.stderr, result.stderr


def test_a_directory_without_tests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(POD))
    result = webhook("test", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"webhook test: {tmp_path}: no PolicyTest documents"
