"""Matching and trust through a real `webhook serve` over TLS, answered as the API server
checks answers: owner kinds, another mesh, optOut: Forbidden, reserved names."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, copy_policies
from tests.engine_helpers import names
from tests.test_inject_shipped import BATCH_INIT, app, pod
from tests.test_validate_helpers import controller, good_container
from tests.test_validate_helpers import pod as template_pod

DEPLOYMENT_POD = pod(name=None, owner=("ReplicaSet", "web-6b7f9"), labels={"app": "web", "pod-template-hash": "6b7f9"})


def test_an_opt_out_of_everything_keeps_identity_and_says_so(server: ServerProcess) -> None:
    opted = copy.deepcopy(DEPLOYMENT_POD)
    opted["metadata"]["annotations"] = {"runtime.platform.io/inject": "false"}
    first = server.client.admit(opted, namespace="shop")
    assert first.allowed
    patched = first.patched(opted)
    assert names(patched["spec"]["initContainers"]) == ["identity-init"]
    assert first.response["warnings"] == [
        'annotation runtime.platform.io/inject: "false" is ignored for policy identity, which pods cannot '
        "opt out of (optOut: Forbidden)"]
    again = server.client.admit(patched, namespace="shop")
    assert again.allowed and again.patch is None


def test_the_workload_label_does_not_escape_identity(server: ServerProcess) -> None:
    labelled = copy.deepcopy(DEPLOYMENT_POD)
    labelled["metadata"]["labels"]["runtime.platform.io/workload"] = "Other"
    result = server.client.admit(labelled, namespace="shop")
    # The optional traffic proxy follows the label (Other); identity reads the owner.
    assert names(result.patched(labelled)["spec"]["initContainers"]) == BATCH_INIT
    assert any("label runtime.platform.io/workload: 'Other' is ignored for policy identity" in w
               for w in result.response["warnings"])


def test_a_pod_in_another_mesh_gets_no_traffic_proxy(server: ServerProcess) -> None:
    meshed = pod(app(), app("linkerd-proxy"), name=None, owner=("ReplicaSet", "web-6b7f9"),
                 labels={"pod-template-hash": "6b7f9"})
    result = server.client.admit(meshed, namespace="shop")
    assert result.allowed
    assert names(result.patched(meshed)["spec"]["initContainers"]) == BATCH_INIT


def _validate(server: ServerProcess, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = server.client.admit(obj, endpoint="/validate", **kwargs)
    assert result.patch is None
    return result.response


def test_a_deployment_with_its_own_injected_volume_name_is_denied_at_apply(server: ServerProcess) -> None:
    template = template_pod(good_container(), volumes=[{"name": "app-logs", "emptyDir": {}}])
    response = _validate(server, controller("Deployment", template), kind="Deployment", namespace="shop")
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert 'reservedVolumeName]: spec.template.spec.volumes[0].name: volume name "app-logs" is reserved for the ' \
           'volume that injection policy "log-shipper" injects' in response["status"]["message"]
    # No log shipper for a DaemonSet: there the name is the DaemonSet's own.
    response = _validate(server, controller("DaemonSet", template), kind="DaemonSet", namespace="shop")
    assert response["allowed"] is True


def test_an_injected_pod_validates_and_a_forged_ledger_does_not_vouch(server: ServerProcess) -> None:
    given = pod(good_container(), name=None, owner=("ReplicaSet", "web-6b7f9"), labels={"pod-template-hash": "6b7f9"})
    mutated = server.client.admit(given, namespace="shop")
    final = mutated.patched(given)
    assert _validate(server, final, namespace="shop")["allowed"] is True
    # The same pod validated in another namespace: the rendered identity no longer matches.
    response = _validate(server, final, namespace="payments")
    assert response["allowed"] is False
    assert "not what policy identity injects: its args" in response["status"]["message"]
    forged = copy.deepcopy(final)
    forged["spec"]["initContainers"][0]["image"] = "evil.example.com/agent:1"
    response = _validate(server, forged, namespace="shop")
    assert response["allowed"] is False
    assert "spec.initContainers[identity-init].name" in response["status"]["message"]


def test_a_sidecar_name_is_reserved_only_in_the_policys_namespaces(start_server: Any, tmp_path: Path) -> None:
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
    server = start_server(policies=policies)
    own = template_pod(good_container(), good_container("vault-agent"))
    assert _validate(server, controller("Deployment", own), kind="Deployment", namespace="shop")["allowed"] is True
    assert _validate(server, own, namespace="shop")["allowed"] is True
    response = _validate(server, controller("Deployment", own), kind="Deployment", namespace="payments-eu")
    assert response["allowed"] is False
    assert 'container name "vault-agent" is reserved for the container that injection policy "vault" injects' \
        in response["status"]["message"]
