"""Injection through the running server, as the API server would call it."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.test_inject_shipped import IDENTITY_ENV, SERVICE_INIT, app, pod
from tests.engine_helpers import env_names, names

DEPLOYMENT_POD = pod(name=None, owner=("ReplicaSet", "web-6b7f9"), labels={"app": "web", "pod-template-hash": "6b7f9"})


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_deployment_pod_is_injected_and_reinvocation_adds_nothing(server: ServerProcess, api_version: str) -> None:
    first = server.client.admit(DEPLOYMENT_POD, namespace="shop", api_version=api_version)
    assert first.allowed and first.response["patchType"] == "JSONPatch"
    patched = first.patched(DEPLOYMENT_POD)
    assert names(patched["spec"]["initContainers"]) == SERVICE_INIT
    assert env_names(patched["spec"]["containers"][0]) == IDENTITY_ENV
    second = server.client.admit(patched, namespace="shop", api_version=api_version)
    assert second.allowed and second.patch is None
    assert "patchType" not in second.response


def test_own_env_referencing_the_identity_vars_comes_after_them(server: ServerProcess) -> None:
    """The pod's `$(POD_NAME)` references expand only if the injected vars come first."""
    from tests.engine_helpers import runtime_env
    from tests.test_inject_shipped import PEER_ENV
    given = pod(app(env=PEER_ENV), name=None, owner=("ReplicaSet", "web-6b7f9"),
                labels={"app": "web", "pod-template-hash": "6b7f9"})
    first = server.client.admit(given, namespace="shop")
    assert first.allowed
    assert [op["path"] for op in first.patch if op["path"].startswith("/spec/containers/0/env")] == \
        [f"/spec/containers/0/env/{i}" for i in range(len(IDENTITY_ENV))]
    patched = first.patched(given)
    container = patched["spec"]["containers"][0]
    assert env_names(container) == IDENTITY_ENV + [e["name"] for e in PEER_ENV]
    assert runtime_env(container)["PEER_ID"] == "<metadata.name>.<metadata.namespace>"
    again = server.client.admit(patched, namespace="shop")
    assert again.allowed and again.patch is None


def test_conflicting_user_container_is_denied_with_a_message(server: ServerProcess) -> None:
    result = server.client.admit(pod(app(), app("traffic-proxy")))
    assert not result.allowed
    assert result.response["status"]["code"] == 403
    assert "traffic-proxy" in result.response["status"]["message"]


@pytest.mark.parametrize(("operation", "sub_resource"), [("UPDATE", None), ("DELETE", None),
                                                          ("CREATE", "binding"), ("CONNECT", "exec")])
def test_only_pod_create_is_mutated(server: ServerProcess, operation: str, sub_resource: str | None) -> None:
    result = server.client.admit(DEPLOYMENT_POD, operation=operation, sub_resource=sub_resource,
                                 old_object=DEPLOYMENT_POD if operation == "UPDATE" else None)
    assert result.allowed and result.patch is None


def test_dry_run_gets_the_same_patch(server: ServerProcess) -> None:
    normal = server.client.admit(DEPLOYMENT_POD)
    dry = server.client.admit(DEPLOYMENT_POD, dry_run=True)
    assert dry.patch == normal.patch


def test_excluded_namespace_is_left_alone(server: ServerProcess) -> None:
    assert server.client.admit(DEPLOYMENT_POD, namespace="kube-system").patch is None


def test_injection_metrics_by_policy(server: ServerProcess) -> None:
    server.client.admit(DEPLOYMENT_POD)
    text = server.client.request("GET", "/metrics").body.decode()
    assert 'webhook_injections_total{policy="identity"}' in text
    assert 'webhook_requests_total{endpoint="mutate",operation="CREATE",outcome="patched"}' in text


from tests.engine_helpers import run  # noqa: E402
from tests.test_inject_shipped import CASES  # noqa: E402


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_server_answers_the_engine_cases_exactly(server: ServerProcess, case: tuple) -> None:
    given = case[1]
    expected = run(given)
    result = server.client.admit(given)
    assert result.allowed
    assert result.patched(given) == expected.pod


def test_a_pod_larger_than_the_tls_read_buffer_gets_the_engines_patch(server: ServerProcess) -> None:
    # The server reads TLS in steps of TLS_READ_BUFFER_BYTES (webhook/heap.py); this body takes several.
    import orjson

    from webhook.runtime.heap import TLS_READ_BUFFER_BYTES
    big = pod(app())
    big["metadata"]["annotations"] = {f"example.com/note-{i}": "x" * 1000 for i in range(300)}
    assert len(orjson.dumps(big)) > 4 * TLS_READ_BUFFER_BYTES
    expected = run(big)
    result = server.client.admit(big)
    assert result.allowed and result.patched(big) == expected.pod


def test_a_malformed_container_entry_is_denied_not_skipped(server: ServerProcess) -> None:
    # Injecting around an entry that is not a container would hide it from every check.
    given = pod(name=None, owner=("ReplicaSet", "web-6b7f9"), labels={"app": "web", "pod-template-hash": "6b7f9"})
    given["spec"]["containers"].append("nginx")
    result = server.client.admit(given, namespace="shop")
    assert not result.allowed and result.patch is None
    status = result.response["status"]
    assert status["code"] == 403
    assert status["message"].startswith("malformed pod: spec.containers[1] is a JSON string, not a container object")
