"""The injected pod as a whole, through the running server over TLS: port clashes,
requirements between policies, warnings for what the pod keeps, and resources a later
admission plugin set, kept on reinvocation."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

from tests.conftest import ServerProcess, copy_policies
from tests.engine_helpers import names
from webhook.engine.ledger import LEDGER_ANNOTATION

DEPLOYMENT_POD = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"generateName": "checkout-6b7f9-", "labels": {"app": "checkout",
                                                                               "pod-template-hash": "6b7f9"},
                               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                    "name": "checkout-6b7f9", "uid": "u", "controller": True}]},
                  "spec": {"containers": [{"name": "app", "image": "registry.example.com/checkout:1"}]}}


def with_app(**fields: object) -> dict:
    given = copy.deepcopy(DEPLOYMENT_POD)
    given["spec"]["containers"][0].update(fields)
    return given


def test_an_app_port_the_proxy_declares_is_denied_naming_both_containers(server: ServerProcess) -> None:
    result = server.client.admit(with_app(ports=[{"name": "status", "containerPort": 15021}]), namespace="shop")
    assert not result.allowed and result.patch is None
    status = result.response["status"]
    assert status["code"] == 403
    assert ("policy traffic-proxy injects container 'traffic-proxy' with port 15021/TCP, but container 'app' "
            "(spec.containers) declares the same port") in status["message"]


def test_a_kept_env_var_is_a_warning_naming_both_values(server: ServerProcess) -> None:
    result = server.client.admit(with_app(env=[{"name": "SERVICE_NAME", "value": "checkout-v2"}]), namespace="shop")
    assert result.allowed and result.patch
    assert result.response["warnings"] == [
        "container 'app' keeps its own env var SERVICE_NAME=\"checkout-v2\"; policy identity sets \"default.shop\""]


def test_opting_out_of_identity_leaves_out_the_policies_that_require_it(tmp_path: Path, start_server) -> None:
    policies = copy_policies(tmp_path / "policies")
    identity = policies / "inject-identity.yaml"
    identity.write_text(identity.read_text().replace("optOut: Forbidden", "optOut: Allowed"))
    server = start_server(policies=policies)
    given = copy.deepcopy(DEPLOYMENT_POD)
    given["metadata"]["annotations"] = {"runtime.platform.io/inject-identity": "false"}
    given["spec"]["volumes"] = [{"name": "identity-certs", "secret": {"secretName": "mine"}}]
    result = server.client.admit(given, namespace="shop")
    assert result.allowed
    patched = result.patched(given)
    assert "initContainers" not in patched["spec"] and patched["spec"]["volumes"] == given["spec"]["volumes"]
    status = json.loads(patched["metadata"]["annotations"][LEDGER_ANNOTATION])
    assert [s["policy"] for s in status["skipped"]] == ["traffic-proxy", "log-shipper"]
    again = server.client.admit(patched, namespace="shop")
    assert again.allowed and again.patch is None


def test_reinvocation_keeps_resources_a_later_plugin_set_on_the_proxy(server: ServerProcess) -> None:
    first = server.client.admit(DEPLOYMENT_POD, namespace="shop")
    patched = first.patched(DEPLOYMENT_POD)
    proxy = next(c for c in patched["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 15021}
    proxy["resources"] = {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"memory": "300Mi"}}
    again = server.client.admit(patched, namespace="shop")
    assert again.allowed and again.patch is None


POLICIES = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: mesh-base}
spec:
  priority: 40
  optIn: true
  inject:
    labels: {mesh: enrolled}
---
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: mesh-agent}
spec:
  priority: 50
  requires: [mesh-base]
  onMissingRequirement: Deny
  inject:
    sidecars:
      - name: mesh-agent
        image: registry.example.com/mesh-agent:1
        ports: [{containerPort: 9901, onConflict: Skip}]
"""


def test_purpose_written_requirements_and_port_skips(tmp_path: Path, start_server) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "inject-mesh.yaml").write_text(textwrap.dedent(POLICIES))
    server = start_server(policies=policies)
    denied = server.client.admit(DEPLOYMENT_POD, namespace="shop")
    assert not denied.allowed
    assert denied.response["status"]["message"] == (
        "policy mesh-agent requires policy mesh-base, which did not apply to this pod: opt-in policy; pod is not "
        "annotated runtime.platform.io/inject-mesh-base: \"true\"")
    enrolled = copy.deepcopy(DEPLOYMENT_POD)
    enrolled["metadata"]["annotations"] = {"runtime.platform.io/inject-mesh-base": "true"}
    result = server.client.admit(enrolled, namespace="shop")
    assert result.allowed
    assert "mesh-agent" in names(result.patched(enrolled)["spec"]["initContainers"])
    enrolled["spec"]["containers"][0]["ports"] = [{"containerPort": 9901}]
    skipped = server.client.admit(enrolled, namespace="shop")
    assert skipped.allowed
    patched = skipped.patched(enrolled)
    assert "mesh-agent" not in names(patched["spec"]["initContainers"])
    assert patched["metadata"]["labels"]["mesh"] == "enrolled"
    status = json.loads(patched["metadata"]["annotations"][LEDGER_ANNOTATION])
    assert status["skipped"] == [{"policy": "mesh-agent", "reason": "container 'app' already declares port "
                                  "9901/TCP, which its container 'mesh-agent' declares"}]
