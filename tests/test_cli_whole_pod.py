"""The offline tools on the injected pod as a whole: `mutate` and `explain` report port
clashes, requirements and what the pod keeps; `policies check` knows the new fields."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import copy_policies
from tests.test_cli import webhook, write

pytestmark = pytest.mark.process   # every test runs the command line in a process

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "checkout"},
              "spec": {"selector": {"matchLabels": {"app": "checkout"}},
                       "template": {"metadata": {"labels": {"app": "checkout"}},
                                    "spec": {"containers": [{"name": "app", "image": "registry.example.com/c:1"}]}}}}


def deployment(annotations: dict[str, str] | None = None, **container: object) -> dict:
    template = {"metadata": {"labels": {"app": "checkout"}, **({"annotations": annotations} if annotations else {})},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/c:1", **container}]}}
    return {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "template": template}}


def test_mutate_denies_a_port_clash_and_warns_of_a_kept_env_var(tmp_path: Path) -> None:
    clash = webhook("mutate", "-f", str(write(tmp_path / "a.yaml", deployment(ports=[{"containerPort": 15006}]))))
    assert clash.returncode == 1
    assert ("denied: Deployment/checkout" in clash.stderr and "container 'traffic-proxy' with port 15006/TCP"
            in clash.stderr and "container 'app' (spec.containers)" in clash.stderr)
    kept = webhook("mutate", "-f", str(write(tmp_path / "b.yaml",
                                             deployment(env=[{"name": "SERVICE_NAME", "value": "checkout-v2"}]))))
    assert kept.returncode == 0
    assert ("warning: Deployment/checkout: container 'app' keeps its own env var SERVICE_NAME=\"checkout-v2\"; "
            "policy identity sets \"default.default\"") in kept.stderr


def test_explain_says_why_a_dependent_policy_was_skipped_and_what_the_pod_kept(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    identity = policies / "inject-identity.yaml"
    identity.write_text(identity.read_text().replace("optOut: Forbidden", "optOut: Allowed"))
    opted_out = deployment({"runtime.platform.io/inject-identity": "false"})
    out = webhook("explain", "-f", str(write(tmp_path / "a.yaml", opted_out)), "--policies", str(policies)).stdout
    assert ("traffic-proxy  not applied: skipped: requires policy identity, which did not apply: pod opted out "
            "(runtime.platform.io/inject-identity: \"false\")") in out
    assert "log-shipper    not applied: skipped: requires policy identity" in out
    kept = deployment(env=[{"name": "SERVICE_NAME", "value": "checkout-v2"}])
    out = webhook("explain", "-f", str(write(tmp_path / "b.yaml", kept))).stdout
    assert "identity: conflict on env SERVICE_NAME in container app: Keep" in out
    assert "    warning: container 'app' keeps its own env var SERVICE_NAME=\"checkout-v2\"" in out


def test_policies_check_reports_bad_requirements_with_the_file(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "inject-agent.yaml").write_text(textwrap.dedent("""\
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: agent}
        spec:
          priority: 5
          requires: [identity, tracing]
          inject:
            sidecars: [{name: agent, image: a:1, ports: [{containerPort: 15021, onConflict: Skip}]}]
        """))
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 1
    source = policies / "inject-agent.yaml"
    assert f"{source}: agent/spec.requires: 'tracing': no injection policy has that name" in result.stderr
    assert (f"{source}: agent/spec.requires: requires 'identity', which runs after it (priority 10 against 5"
            in result.stderr)
    (policies / "inject-agent.yaml").write_text(textwrap.dedent("""\
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: agent}
        spec:
          priority: 50
          requires: [identity]
          inject:
            sidecars: [{name: agent, image: a:1, ports: [{containerPort: 15021, onConflict: Skip}]}]
        """))
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 0, result.stderr
    assert ("port 15021/TCP is declared by sidecar 'traffic-proxy' (policy traffic-proxy) and sidecar 'agent' "
            "(policy agent)") in result.stderr


def test_explain_says_when_resources_another_plugin_set_are_kept(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1"}]}}
    mutated = webhook("mutate", "-f", str(write(tmp_path / "pod.yaml", pod)), "-o", "json")
    assert mutated.returncode == 0, mutated.stderr
    injected = json.loads(mutated.stdout)
    proxy = next(c for c in injected["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    proxy["resources"] = {"requests": {"cpu": "400m", "memory": "300Mi"}, "limits": {"memory": "600Mi"}}
    again = webhook("mutate", "-f", str(write(tmp_path / "again.yaml", injected)), "-o", "patch")
    assert again.returncode == 0 and json.loads(again.stdout) == []
    out = webhook("explain", "-f", str(tmp_path / "again.yaml")).stdout
    assert ("traffic-proxy  applied: containers traffic-proxy; volumes identity-certs; kept the resources "
            "another admission plugin set "
            "on traffic-proxy (policy revision unchanged)") in out
