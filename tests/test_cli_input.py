"""The offline commands read input as kubectl does: every -f, directories (-R), stdin,
a namespace mismatch refused; and usage errors exit 2. Each test runs the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_policies
from tests.test_cli import POD, PRIVILEGED, webhook, write

SHOP_POD = {**POD, "metadata": {"name": "shop-web", "namespace": "shop", "labels": {"app": "web"}}}


@pytest.mark.process
def test_every_f_is_read_and_a_denial_in_any_file_fails_the_run(tmp_path: Path) -> None:
    denied, ok = write(tmp_path / "denied.yaml", PRIVILEGED), write(tmp_path / "ok.yaml", POD)
    for order in ((denied, ok), (ok, denied)):
        result = webhook("validate", "-f", str(order[0]), "-f", str(order[1]))
        assert result.returncode == 1, result.stdout
        assert "Deployment/root (Deployment, namespace default): denied" in result.stdout
        assert "Pod/web (Pod, namespace default): allowed" in result.stdout
        assert result.stdout.endswith("2 documents: 1 allowed, 1 denied\n")


@pytest.mark.process
def test_a_directory_is_read_in_name_order_and_recursively_with_R(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", {**POD, "metadata": {"name": "b"}})
    (tmp_path / "a.json").write_text(json.dumps({**POD, "metadata": {"name": "a"}}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.yml", {**POD, "metadata": {"name": "c"}})
    (tmp_path / ".hidden.yaml").write_text("kind: [broken")
    flat = webhook("validate", "-f", str(tmp_path))
    assert flat.returncode == 0, flat.stderr
    assert [line.split(" ")[0] for line in flat.stdout.splitlines() if line.startswith("Pod/")] == ["Pod/a", "Pod/b"]
    assert flat.stdout.endswith("2 documents: 2 allowed, 0 denied\n")
    deep = webhook("mutate", "-f", str(tmp_path), "-R", "-o", "json")
    assert deep.returncode == 0, deep.stderr
    assert [item["metadata"]["name"] for item in json.loads(deep.stdout)["items"]] == ["a", "b", "c"]


@pytest.mark.process
def test_an_empty_directory_is_a_usage_error_that_mentions_R(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "pod.yaml", POD)
    result = webhook("validate", "-f", str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path}: no .yaml, .yml, .json files in the directory (subdirectories are read with -R)" \
        in result.stderr


@pytest.mark.process
def test_stdin_with_files_and_only_once(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.yaml", POD)
    result = webhook("validate", "-f", str(ok), "-f", "-", "-o", "json", stdin=yaml.safe_dump(PRIVILEGED))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [d["source"] for d in report["documents"]] == [f"{ok}:1", "<stdin>:1"]
    twice = webhook("validate", "-f", "-", "-f", "-", stdin=yaml.safe_dump(POD))
    assert twice.returncode == 2 and "standard input can be read only once" in twice.stderr


@pytest.mark.process
@pytest.mark.parametrize("command", ["mutate", "validate", "explain"])
def test_a_namespace_that_contradicts_the_object_is_refused_as_kubectl_does(tmp_path: Path, command: str) -> None:
    manifest = write(tmp_path / "pod.yaml", SHOP_POD)
    refused = webhook(command, "-f", str(manifest), "-n", "sandbox")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f'webhook {command}: {manifest}:1: Pod/shop-web: the namespace from the provided object "shop" does not '
        "match the namespace \"sandbox\". You must pass '--namespace=shop' to perform this operation.")
    agreeing = webhook(command, "-f", str(manifest), "-n", "shop")
    assert agreeing.returncode == 0, agreeing.stderr


@pytest.mark.process
def test_usage_errors_exit_2_and_invalid_policies_exit_1(tmp_path: Path) -> None:
    # Usage errors: nothing could be checked. 1 is kept for what a check found.
    (tmp_path / "one.yaml").write_text("kind: ValidationPolicy\n")
    for argv in (["policies", "check", str(tmp_path / "one.yaml")],
                 ["policies", "check", str(tmp_path / "missing")],
                 ["validate", "-f", str(tmp_path / "missing.yaml")],
                 ["validate", "-o", "xml", "-f", str(tmp_path / "one.yaml")],
                 ["validate", "-f", str(write(tmp_path / "p.yaml", POD)), "--policies", str(tmp_path / "nope")],
                 ["report", "--policies", str(tmp_path / "nope")],
                 ["test", str(tmp_path / "no-tests")],
                 ["completion", "fish"]):
        result = webhook(*argv)
        assert result.returncode == 2, (argv, result.stderr)
    bad = copy_policies(tmp_path / "policies")
    (bad / "broken.yaml").write_text("apiVersion: runtime.platform.io/v1\nkind: ValidationPolicy\n"
                                     "metadata: {name: broken}\nspec: {action: Sometimes}\n")
    invalid = webhook("policies", "check", str(bad))
    assert invalid.returncode == 1 and "broken.yaml:4: broken/spec.action" in invalid.stderr


@pytest.mark.process
def test_a_policy_in_a_subdirectory_is_reported_by_check_and_refused_by_the_server(
        tmp_path: Path, ) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "team-a").mkdir()
    (policies / "team-a" / "extra.yaml").write_text(
        "# a team's policy\napiVersion: runtime.platform.io/v1\nkind: ValidationPolicy\n"
        "metadata: {name: extra}\nspec: {rules: []}\n")
    message = (f"{policies / 'team-a' / 'extra.yaml'}:3: kind ValidationPolicy in a subdirectory is not read: "
               f"policies are read from the top level of {policies} only; move the file there")
    check = webhook("policies", "check", str(policies))
    assert check.returncode == 1 and message in check.stderr
    serve = webhook("serve", "--policies", str(policies), "--workers", "1", "--cert-dir", str(tmp_path))
    assert serve.returncode == 1 and message in serve.stderr
    # Policy tests and their fixtures (policies/tests/ in the shipped set) are not policies.
    assert (policies / "tests").is_dir()
    (policies / "team-a" / "extra.yaml").unlink()
    assert webhook("policies", "check", str(policies)).returncode == 0


def test_hidden_folders_of_a_mounted_configmap_are_not_subdirectories(tmp_path: Path) -> None:
    from webhook.policy.loader import load_policy_dir, watched_files
    from webhook.runtime.policy_holder import PolicyHolder

    policies = copy_policies(tmp_path / "policies")
    # A ConfigMap volume keeps the real files in a timestamped hidden folder.
    hidden = policies / "..2026_12_07_10_00_00.123"
    copy_policies(hidden)
    assert load_policy_dir(policies).policy_count == 8
    holder = PolicyHolder.load(policies)
    before = holder.fingerprint()
    (policies / "later").mkdir()
    (policies / "later" / "p.yml").write_text("apiVersion: runtime.platform.io/v1\nkind: 'InjectionPolicy'\n")
    # The watcher sees the new file, so the reload reports it instead of missing it.
    assert policies / "later" / "p.yml" in watched_files(policies) and holder.fingerprint() != before
    assert not holder.reload() and "p.yml:2: kind InjectionPolicy in a subdirectory" in (holder.last_error or "")


@pytest.mark.process
def test_outside_the_repository_the_error_says_where_it_looked_for_policies(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pod = write(tmp_path / "pod.yaml", POD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
    result = subprocess.run([sys.executable, "-m", "webhook", "validate", "-f", str(pod)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"webhook validate: policies: policy directory not found (looked for "
                             f"{tmp_path / 'policies'}); give the policy directory with --policies DIR "
                             "(or WEBHOOK_POLICIES)\n")


def test_a_policy_directory_with_a_large_tree_below_is_reported_not_crawled(tmp_path: Path) -> None:
    from webhook.policy.errors import PolicyLoadError
    from webhook.policy.loader import MAX_SUBDIRECTORIES, load_policy_dir

    policies = copy_policies(tmp_path / "policies")
    for index in range(MAX_SUBDIRECTORIES + 1):
        (policies / "tree" / f"d{index:03}").mkdir(parents=True)
    with pytest.raises(PolicyLoadError) as info:
        load_policy_dir(policies)
    assert [str(e) for e in info.value.errors] == [
        f"{policies}: more than {MAX_SUBDIRECTORIES} subdirectories: policies are read from the top level of the "
        "policy directory only; give the directory that holds the policy files"]
