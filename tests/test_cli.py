"""The command line: offline mutate / validate / explain, policy tests, checks, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonpatch
import pytest
import yaml

from tests.conftest import ROOT, copy_policies
from webhook.cli import main as cli

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"}]}}
PRIVILEGED = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root"},
              "spec": {"selector": {"matchLabels": {"app": "root"}},
                       "template": {"metadata": {"labels": {"app": "root"}},
                                    "spec": {"containers": [{"name": "app", "image": "x.io/a:1",
                                                             "securityContext": {"privileged": True}}]}}}}


def webhook(*args: str, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                          cwd=ROOT, input=stdin, timeout=60, env={**clean, **(env or {})})


def write(path: Path, *docs: dict) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.process
def test_mutate_outputs_yaml_json_patch_and_diff(tmp_path: Path) -> None:
    manifest = write(tmp_path / "pod.yaml", POD)
    as_yaml = yaml.safe_load(webhook("mutate", "-f", str(manifest)).stdout)
    as_json = json.loads(webhook("mutate", "-f", str(manifest), "-o", "json").stdout)
    assert as_yaml == as_json
    assert [c["name"] for c in as_json["spec"]["initContainers"]] == ["identity-init", "traffic-proxy", "log-shipper"]
    patch = json.loads(webhook("mutate", "-f", str(manifest), "-o", "patch").stdout)
    assert jsonpatch.apply_patch(POD, patch) == as_json
    diff = webhook("mutate", "-f", str(manifest), "-o", "diff").stdout
    assert diff.startswith("--- Pod/web (submitted)") and "+  - name: identity-init" in diff


@pytest.mark.process
def test_mutate_renders_controllers_and_reads_stdin() -> None:
    result = webhook("mutate", "-f", "-", "-o", "json", stdin=json.dumps(PRIVILEGED))
    assert result.returncode == 0, result.stderr
    template = json.loads(result.stdout)["spec"]["template"]
    assert "ownerReferences" not in template["metadata"] and "generateName" not in template["metadata"]
    assert template["metadata"]["labels"] == {"app": "root"}
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env["SERVICE_DISPLAY_NAME"] == "root" and env["SERVICE_NAME"] == "default.default"


@pytest.mark.process
def test_validate_exit_codes_and_messages(tmp_path: Path) -> None:
    bad = webhook("validate", "-f", str(write(tmp_path / "bad.yaml", PRIVILEGED)))
    assert bad.returncode == 1
    assert "DENY  pod-security-baseline/podSecurity[privileged] spec.template.spec.containers[app]" in bad.stdout
    good = webhook("validate", "-f", str(write(tmp_path / "good.yaml", POD)))
    assert good.returncode == 0, good.stdout
    assert "WARN" in good.stdout and "DENY" not in good.stdout


@pytest.mark.process
def test_validate_names_the_policy_that_injected_a_violating_container(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "inject-sloppy.yaml").write_text(textwrap.dedent("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: sloppy}
        spec:
          priority: 50
          inject:
            sidecars: [{name: sloppy-agent, image: "agent.io/agent:1"}]
    """))
    result = webhook("validate", "-f", str(write(tmp_path / "pod.yaml", POD)), "--policies", str(policies))
    assert "only because policy sloppy injected container 'sloppy-agent'" in result.stdout


@pytest.mark.process
def test_explain_says_why_each_policy_applied_or_not(tmp_path: Path) -> None:
    job_pod = {**POD, "metadata": {"name": "j", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "u", "controller": True}]}}
    out = webhook("explain", "-f", str(write(tmp_path / "p.yaml", job_pod))).stdout
    assert "workload Job/nightly" in out
    assert "traffic-proxy  not applied: workload Job is not in" in out
    assert "identity       applied:" in out
    out = webhook("explain", "-f", str(write(tmp_path / "p.yaml", POD)), "-n", "kube-system").stdout
    assert "namespace 'kube-system' is excluded by 'kube-system'" in out


@pytest.mark.process
def test_shipped_policy_tests_pass() -> None:
    result = webhook("test", "policies/tests")
    assert result.returncode == 0, result.stdout
    assert ", 0 failed" in result.stdout and result.stdout.count("PASS ") >= 10


@pytest.mark.process
def test_a_failing_policy_test_reports_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "apiVersion": "runtime.platform.io/v1", "kind": "PolicyTest", "metadata": {"name": "t"},
        "spec": {"policies": str(ROOT / "policies"), "cases": [
            {"name": "wrong expectation", "object": POD,
             "expect": {"allowed": True, "exact": True,
                        "pod": {"spec": {"initContainers": [{"name": "identity-init"}]}}}},
            {"name": "right", "object": POD, "expect": {"allowed": True}}]}}))
    result = webhook("test", str(tmp_path))
    assert result.returncode == 1
    assert "FAIL t/wrong expectation" in result.stdout and "expected a list of 1, got 3 (exact: true)" in result.stdout
    assert "PASS t/right" in result.stdout and "1 passed, 1 failed" in result.stdout


@pytest.mark.process
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = webhook("mutate")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    missing = webhook("validate", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and f"{tmp_path / 'nope.yaml'}: no such file" in missing.stderr
    (tmp_path / "broken.yaml").write_text("kind: Pod\nmetadata: {name: [x\n")
    broken = webhook("mutate", "-f", str(tmp_path / "broken.yaml"))
    assert broken.returncode == 2 and f"{tmp_path / 'broken.yaml'}:3: invalid YAML" in broken.stderr


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("WEBHOOK_FAILURE_POLICY", "ignore", "'ignore' is not one of Fail, Ignore"),
    ("WEBHOOK_LOG_LEVEL", "verbose", "'verbose' is not one of debug, info, warning, error"),
    ("WEBHOOK_LOG_FORMAT", "JSON", "'JSON' is not one of json, text"),
    ("WEBHOOK_PORT", "abc", "'abc' is not a whole number"),
    ("WEBHOOK_PORT", "70000", "'70000' is not a port (0 to 65535)"),
    ("WEBHOOK_WORKERS", "two", "'two' is not a whole number"),
    ("WEBHOOK_DECISION_MEMO", "-1", "'-1' is negative"),
    ("WEBHOOK_SHUTDOWN_DELAY", "5s", "'5s' is not a number of seconds"),
    ("WEBHOOK_SHUTDOWN_DELAY", "nan", "'nan' is not a finite number of seconds >= 0"),
])
@pytest.mark.process
def test_a_bad_environment_value_stops_the_start_naming_the_variable(
        tmp_path: Path, variable: str, value: str, reason: str) -> None:
    # With no certificates, a start that got past the options would fail for that instead.
    result = webhook("serve", "--cert-dir", str(tmp_path), env={variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"webhook: environment variable {variable}: {reason} (see 'webhook --help')"


@pytest.mark.process
@pytest.mark.parametrize(("variable", "default"), [("WEBHOOK_POLICIES", " (./policies)"),
                                                 ("WEBHOOK_CERT_DIR", " (./certs)"), ("WEBHOOK_HOST", " (0.0.0.0)"),
                                                 ("WEBHOOK_WORKERS", "")])
def test_an_empty_environment_value_stops_the_start_naming_the_variable(
        tmp_path: Path, variable: str, default: str) -> None:
    # WEBHOOK_POLICIES= served the working directory: Path("") is ".".
    flags = [] if variable == "WEBHOOK_CERT_DIR" else ["--cert-dir", str(tmp_path)]
    result = webhook("serve", *flags, env={variable: ""})
    assert result.returncode == 2, result.stderr
    assert f"environment variable {variable} is empty; unset it to use the default{default}" in result.stderr


@pytest.mark.process
def test_policies_check_on_a_file_or_a_missing_path_says_which(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("kind: ValidationPolicy\n")
    given_file = webhook("policies", "check", str(tmp_path / "one.yaml"))
    # A usage error (2), as for every argument that cannot be checked; 1 means invalid policies.
    assert given_file.returncode == 2
    assert f"{tmp_path / 'one.yaml'}: not a directory; give the directory that holds the policy files" \
        in given_file.stderr
    missing = webhook("policies", "check", str(tmp_path / "nope"))
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: policy directory not found (looked for " \
        f"{tmp_path / 'nope'})" in missing.stderr


@pytest.mark.process
def test_an_empty_policies_variable_reads_as_unset_in_the_offline_tools(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                                       "spec: {containers: [{name: app, image: a:1}]}\n")
    result = webhook("mutate", "-f", str(tmp_path / "pod.yaml"), env={"WEBHOOK_POLICIES": ""})
    assert result.returncode == 0 and "identity-init" in result.stdout, result.stderr


@pytest.mark.process
def test_flags_win_over_the_environment_and_other_commands_ignore_serve_variables(tmp_path: Path) -> None:
    given = webhook("serve", "--port", "0", "--cert-dir", str(tmp_path), env={"WEBHOOK_PORT": "abc"})
    assert given.returncode == 1 and "tls.crt not found" in given.stderr
    check = webhook("policies", "check", "policies", env={"WEBHOOK_PORT": "abc", "WEBHOOK_WORKERS": "x"})
    assert check.returncode == 0, check.stderr
    for flags in (["--port", "70000"], ["--port", "-1"], ["--workers", "-2"], ["--shutdown-delay", "inf"]):
        refused = webhook("serve", *flags)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith(f"webhook serve: argument {flags[0]}: '{flags[1]}'")


def test_serve_options_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli._build_parser()
    for name in [n for n in os.environ if n.startswith("WEBHOOK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WEBHOOK_FAILURE_POLICY", "Ignore")
    monkeypatch.setenv("WEBHOOK_SHUTDOWN_DELAY", "0.5")
    monkeypatch.setenv("WEBHOOK_CERT_DIR", "/etc/webhook/tls")
    args = parser.parse_args(["serve", "--port", "9443"])
    cli.serve_settings(parser, args)
    assert (args.failure_policy, args.shutdown_delay, args.cert_dir) == ("Ignore", 0.5, Path("/etc/webhook/tls"))
    assert (args.port, args.workers, args.decision_memo, args.log_level) == (9443, 0, 512, "info")


@pytest.mark.process
def test_an_empty_policy_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a policy")
    check = webhook("policies", "check", str(tmp_path))
    assert check.returncode == 1
    assert f"{tmp_path}: no policies in .yaml or .yml files; an empty policy set is refused" in check.stderr
    serve = webhook("serve", "--policies", str(tmp_path), "--cert-dir", str(tmp_path / "certs"))
    assert serve.returncode == 1 and "refusing to start: invalid policies" in serve.stderr


@pytest.mark.process
def test_policies_check_lists_errors_with_lines_and_warns(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    assert webhook("policies", "check", str(policies)).returncode == 0
    (policies / "bad.yaml").write_text("apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\n"
                                       "metadata: {name: bad}\nspec:\n  inject: {}\n  match:\n"
                                       "    namespaces: {include: [a], exclude: [a]}\n    workloadz: []\n")
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 1
    assert f"{policies / 'bad.yaml'}:8: bad/spec.match.workloadz: unknown field" in result.stderr
    (policies / "bad.yaml").write_text("apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\n"
                                       "metadata: {name: bad}\nspec:\n  inject: {}\n  match:\n"
                                       "    namespaces: {include: [a], exclude: [a]}\n")
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 0
    assert "policy bad can never match: every included namespace pattern ['a'] is also excluded" in result.stderr
    assert "identity-certs" not in result.stderr   # one volume two policies share alike: no warning


@pytest.mark.process
def test_schema_is_committed_and_current() -> None:
    printed = json.loads(webhook("policies", "schema").stdout)
    committed = json.loads((ROOT / "docs" / "policy.schema.json").read_text())
    assert printed == committed, "run `make schema` to refresh docs/policy.schema.json"
    assert {"InjectionPolicy", "ValidationPolicy"} <= set(json.dumps(printed).split('"'))


@pytest.mark.process
def test_serve_help_gives_each_options_default_and_variable() -> None:
    # The README's table, from the command itself: what an operator has at hand.
    text = " ".join(webhook("serve", "--help").stdout.split())
    for default, variable in (("0.0.0.0", "HOST"), ("8443", "PORT"), ("./policies", "POLICIES"),
                              ("./certs", "CERT_DIR"), ("info", "LOG_LEVEL"), ("json", "LOG_FORMAT"),
                              ("Fail", "FAILURE_POLICY"), ("512", "DECISION_MEMO"), ("5", "SHUTDOWN_DELAY")):
        assert f"(default {default}; env WEBHOOK_{variable})" in text, (variable, text)
    assert "(default: the CPUs available)" in text and "env WEBHOOK_WORKERS" in text
