"""Matching and trust through the offline commands (`mutate`, `validate`, `explain`, `policies
check`), on the shipped policies unless a test adds its own."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_policies
from tests.test_cli import POD, webhook, write

# Every test here runs the CLI in a process of its own.
pytestmark = pytest.mark.process


def deployment(*containers: dict[str, Any], name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": list(containers), **spec}}}}


APP = {"name": "app", "image": "registry.example.com/web:1.0"}


def test_explain_names_the_owner_kind_and_its_profile(tmp_path: Path) -> None:
    out = webhook("explain", "-f", str(write(tmp_path / "d.yaml", deployment(APP)))).stdout
    assert "Deployment/web (namespace default, workload Deployment/web (profile Service), os linux)" in out
    daemon = deployment(APP)
    daemon["kind"] = "DaemonSet"
    out = webhook("explain", "-f", str(write(tmp_path / "ds.yaml", daemon))).stdout
    assert "workload DaemonSet/web, os linux" in out
    assert "traffic-proxy  not applied: workload DaemonSet is not in ['Service', 'StatefulSet', 'Pod']" in out


def test_a_policy_on_native_kinds_applies_offline(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "inject-deploy.yaml").write_text(textwrap.dedent("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: deploy-only}
        spec:
          match: {workloads: [Deployment, CronJob]}
          inject:
            labels: {deployed: "yes"}
    """))
    result = webhook("mutate", "-f", str(write(tmp_path / "d.yaml", deployment(APP))), "-o", "json",
                     "--policies", str(policies))
    assert json.loads(result.stdout)["spec"]["template"]["metadata"]["labels"]["deployed"] == "yes"
    sts = deployment(APP)
    sts["kind"] = "StatefulSet"
    out = webhook("explain", "-f", str(write(tmp_path / "s.yaml", sts)), "--policies", str(policies)).stdout
    assert "deploy-only    not applied: workload StatefulSet is not in ['Deployment', 'CronJob']" in out


def test_explain_says_another_mesh_keeps_the_traffic_proxy_out(tmp_path: Path) -> None:
    meshed = {**POD, "spec": {"containers": [APP, {"name": "istio-proxy", "image": "istio/proxyv2:1.22"}]}}
    out = webhook("explain", "-f", str(write(tmp_path / "p.yaml", meshed))).stdout
    assert "traffic-proxy  not applied: pod already has container 'istio-proxy' (match.exclude.containers)" in out
    assert "identity       applied:" in out
    mutated = json.loads(webhook("mutate", "-f", str(tmp_path / "p.yaml"), "-o", "json").stdout)
    assert [c["name"] for c in mutated["spec"]["initContainers"]] == ["identity-init", "log-shipper"]


def test_explain_shows_an_opt_out_that_identity_ignores(tmp_path: Path) -> None:
    opted = {**POD, "metadata": {**POD["metadata"], "annotations": {"runtime.platform.io/inject": "false"}}}
    result = webhook("explain", "-f", str(write(tmp_path / "p.yaml", opted)))
    assert result.returncode == 0
    assert "identity       applied:" in result.stdout
    assert 'traffic-proxy  not applied: pod opted out (runtime.platform.io/inject: "false")' in result.stdout
    assert ('warning: annotation runtime.platform.io/inject: "false" is ignored for policy identity, which pods '
            "cannot opt out of (optOut: Forbidden)") in result.stdout
    mutate = webhook("mutate", "-f", str(tmp_path / "p.yaml"), "-o", "json")
    assert "is ignored for policy identity" in mutate.stderr


def test_identity_comes_from_the_namespace_and_service_account(tmp_path: Path) -> None:
    pod = {**POD, "metadata": {"name": "web", "labels": {"app": "payments-api"}},
           "spec": {**POD["spec"], "serviceAccountName": "checkout"}}
    mutated = json.loads(webhook("mutate", "-f", str(write(tmp_path / "p.yaml", pod)), "-n", "shop",
                                 "-o", "json").stdout)
    init = mutated["spec"]["initContainers"][0]
    assert init["args"] == ["fetch", "--cert-dir=/var/run/identity", "--namespace=shop",
                            "--service-account=checkout", "--display-name=payments-api"]
    env = {e["name"]: e.get("value") for e in mutated["spec"]["containers"][0]["env"]}
    assert env["SERVICE_NAME"] == "checkout.shop" and env["SERVICE_DISPLAY_NAME"] == "payments-api"


def test_reserved_names_only_where_the_policy_injects(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "inject-vault.yaml").write_text(textwrap.dedent("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: vault}
        spec:
          priority: 40
          match: {namespaces: {include: [payments-*]}}
          inject:
            sidecars: [{name: vault-agent, image: "registry.example.com/vault:1.15"}]
    """))
    own = write(tmp_path / "d.yaml", deployment(APP, {"name": "vault-agent", "image": "hashicorp/vault:1.15"}))
    shop = webhook("validate", "-f", str(own), "-n", "shop", "--policies", str(policies))
    assert shop.returncode == 0, shop.stdout
    payments = webhook("validate", "-f", str(own), "-n", "payments-eu", "--policies", str(policies))
    assert payments.returncode == 1 and "vault-agent" in payments.stdout


def test_a_deployment_with_its_own_app_logs_volume_is_denied_at_apply(tmp_path: Path) -> None:
    own = deployment({**APP, "volumeMounts": [{"name": "app-logs", "mountPath": "/logs"}]},
                     volumes=[{"name": "app-logs", "emptyDir": {}}])
    policies = copy_policies(tmp_path / "policies")
    # The Deployment object itself, as kubectl apply submits it: only validation runs on it.
    from webhook.engine.validate import validate
    from webhook.core.request import make_request
    from webhook.policy.loader import load_policy_dir
    decision = validate(make_request(own, namespace="shop"), load_policy_dir(policies))
    assert not decision.allowed
    assert "reserved-container-names/reservedContainerNames[reservedVolumeName]: spec.template.spec.volumes[0].name" \
        in (decision.message or "")
    # A DaemonSet gets no log shipper, so there the name is its own.
    own["kind"] = "DaemonSet"
    assert webhook("validate", "-f", str(write(tmp_path / "ds.yaml", own)), "-n", "shop").returncode == 0


def test_policies_check_knows_the_new_fields(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    bad = policies / "bad.yaml"
    bad.write_text("apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: bad}\nspec:\n"
                   "  optOut: Never\n  inject: {}\n  match:\n    workloads: [deployment]\n"
                   "    exclude: {containers: [Istio]}\n")
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 1
    assert f"{bad}:5: bad/spec.optOut:" in result.stderr
    assert f"{bad}:8: bad/spec.match.workloads[0]: " in result.stderr and "'deployment'" in result.stderr
    assert f"{bad}:9: bad/spec.match.exclude.containers[0]:" in result.stderr
    bad.write_text("apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: bad}\nspec:\n"
                   "  optOut: Forbidden\n  inject: {}\n  match:\n    workloads: [Deploymnet]\n")
    result = webhook("policies", "check", str(policies))
    assert result.returncode == 0
    assert "did you mean 'Deployment'?" in result.stderr
