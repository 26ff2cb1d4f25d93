"""What the offline commands print: the JSON shapes CI jobs parse (docs/cli.md), YAML a
person can read, and `explain` naming the exception that lifts a policy."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_policies
from tests.test_cli import POD, PRIVILEGED, webhook, write


@pytest.mark.process
def test_validate_json_has_the_documented_shape(tmp_path: Path) -> None:
    result = webhook("validate", "-o", "json", "-f", str(write(tmp_path / "two.yaml", PRIVILEGED, POD)))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["apiVersion"] == "cli.runtime.platform.io/v1" and report["kind"] == "ValidationReport"
    assert report["allowed"] is False
    assert report["summary"] == {"documents": 2, "allowed": 1, "denied": 1}
    root, web = report["documents"]
    assert {k: root[k] for k in ("source", "apiVersion", "kind", "name", "namespace", "allowed")} == {
        "source": f"{tmp_path / 'two.yaml'}:1", "apiVersion": "apps/v1", "kind": "Deployment", "name": "root",
        "namespace": "default", "allowed": False}
    assert [(c["scope"], c["kind"], c["allowed"]) for c in root["checks"]] == [
        ("object", "Deployment", False), ("podTemplate", "Pod", False)]
    privileged = next(v for v in root["checks"][0]["violations"] if v["check"] == "privileged")
    assert privileged == {
        "policy": "pod-security-baseline", "rule": "podSecurity", "check": "privileged", "action": "Enforce",
        "path": "spec.template.spec.containers[app].securityContext.privileged",
        "message": 'privileged: container "app" must not set securityContext.privileged=true',
        "container": "app", "injectedBy": None}
    assert "privileged" in root["checks"][0]["message"]
    assert web["allowed"] is True and web["injectionDenial"] is None
    # The proxy's violations are the policy's doing, and JSON says which one injected it.
    by_injection = [v for v in web["checks"][0]["violations"] if v["injectedBy"]]
    assert all(v["injectedBy"] in ("identity", "traffic-proxy", "log-shipper") for v in by_injection)


@pytest.mark.process
def test_explain_json_has_the_documented_shape(tmp_path: Path) -> None:
    result = webhook("explain", "-o", "json", "-f", str(write(tmp_path / "pod.yaml", POD)), "-n", "kube-system")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "ExplainReport"
    (doc,) = report["documents"]
    assert doc["workload"] == {"kind": "Pod", "name": "web", "profile": "Pod", "os": "linux"}
    states = {p["policy"]: p["state"] for p in doc["injection"]["policies"]}
    assert states == {"identity": "not applied", "traffic-proxy": "not applied", "log-shipper": "not applied"}
    baseline = next(v for v in doc["validation"] if v["policy"] == "pod-security-baseline")
    assert baseline["checked"] is False and "kube-system" in baseline["reason"]
    assert doc["outcomes"] == [{"scope": "object", "allowed": True, "violations": 0}]


@pytest.mark.process
def test_explain_names_the_exception_that_lifts_a_policy(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    path = policies / "validation-pod-security-baseline.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["spec"]["exceptions"] = [
        {"reason": "unrelated team", "namespaces": ["other"]},
        {"reason": "legacy agent until it is rebuilt", "expires": "2999-01-01", "namespaces": ["legacy"]},
        {"reason": "debug containers", "namespaces": ["legacy"], "rules": ["podSecurity"]}]
    path.write_text(yaml.safe_dump(policy))
    manifest = write(tmp_path / "root.yaml", PRIVILEGED)
    text = webhook("explain", "-f", str(manifest), "-n", "legacy", "--policies", str(policies))
    assert text.returncode == 0, text.stderr
    assert ("pod-security-baseline     not checked: lifted by spec.exceptions[1] (legacy agent until it is "
            "rebuilt, until 2999-01-01); spec.exceptions[2] (debug containers)") in text.stdout
    as_json = json.loads(webhook("explain", "-o", "json", "-f", str(manifest), "-n", "legacy",
                                 "--policies", str(policies)).stdout)
    baseline = next(v for v in as_json["documents"][0]["validation"] if v["policy"] == "pod-security-baseline")
    assert baseline["liftedRules"] == ["*"] and baseline["checked"] is False
    assert [e["index"] for e in baseline["exceptions"]] == [1, 2]
    assert baseline["exceptions"][1]["rules"] == ["podSecurity"]


@pytest.mark.process
def test_mutate_yaml_has_no_anchors_and_an_unfolded_ledger(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    # One value injected in two places is one Python object: PyYAML would write &id001 / *id001.
    (policies / "inject-shared.yaml").write_text(textwrap.dedent("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: shared}
        spec:
          priority: 60
          inject:
            env: [{name: TRACE_ENDPOINT, value: "http://collector:4317"}]
            sidecars:
              - name: tracer
                image: registry.example.com/tracer:1.0
                command: ["/bin/sh", "-c", "echo starting\\nexec tracer --endpoint=$(TRACE_ENDPOINT)\\n"]
    """))
    pod = {**POD, "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"},
                                          {"name": "worker", "image": "registry.example.com/worker:1.0"}]}}
    result = webhook("mutate", "-f", str(write(tmp_path / "pod.yaml", pod)), "--policies", str(policies))
    assert result.returncode == 0, result.stderr
    assert "&id" not in result.stdout and "*id" not in result.stdout
    ledger_lines = [line for line in result.stdout.splitlines() if "runtime.platform.io/status:" in line]
    assert len(ledger_lines) == 1
    ledger = yaml.safe_load(ledger_lines[0].strip())["runtime.platform.io/status"]
    assert {p["name"] for p in json.loads(ledger)["policies"]} >= {"identity", "shared"}
    assert "- |\n" in result.stdout and "      exec tracer --endpoint=$(TRACE_ENDPOINT)\n" in result.stdout
    assert yaml.safe_load(result.stdout)["spec"]["initContainers"][-1]["command"][2] == \
        "echo starting\nexec tracer --endpoint=$(TRACE_ENDPOINT)\n"


def _documented(heading: str) -> dict:
    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    return json.loads(text.split(heading, 1)[1].split("```json\n", 1)[1].split("```", 1)[0])


def _same_keys(documented: dict, actual: dict, where: str) -> None:
    """The documented example and the real output have the same fields, level by level."""
    assert set(documented) - {"..."} == set(actual), where
    for key, value in documented.items():
        if isinstance(value, dict) and isinstance(actual.get(key), dict):
            _same_keys(value, actual[key], f"{where}.{key}")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and actual.get(key):
            _same_keys(value[0], actual[key][0], f"{where}.{key}[0]")


@pytest.mark.process
def test_docs_cli_shows_the_json_shapes_as_they_are(tmp_path: Path) -> None:
    manifest = str(write(tmp_path / "two.yaml", PRIVILEGED, POD))
    validate = json.loads(webhook("validate", "-o", "json", "-f", manifest).stdout)
    _same_keys(_documented("### `validate -o json`"), validate, "validate")
    explain = json.loads(webhook("explain", "-o", "json", "-f", manifest).stdout)
    _same_keys(_documented("### `explain -o json`"), explain, "explain")
