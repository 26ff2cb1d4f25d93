"""/validate through a real `webhook serve` over TLS, with a client that checks every
answer the way kube-apiserver does (a validating response never carries a patch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ServerProcess
from tests.test_validate_helpers import RESTRICTED_SC, container, controller, good_container, pod


def _admit(server: ServerProcess, obj: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    result = server.client.admit(obj, endpoint="/validate", **kwargs)
    assert result.patch is None
    return result.response


def test_privileged_pod_is_denied_naming_the_rule(server: ServerProcess) -> None:
    response = _admit(server, pod(container("app", securityContext={"privileged": True})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403 and response["status"]["reason"] == "Forbidden"
    assert ("pod-security-baseline/podSecurity[privileged]: spec.containers[app].securityContext.privileged: "
            in response["status"]["message"])


def test_restricted_breach_is_allowed_with_warnings(server: ServerProcess) -> None:
    obj = pod(container("app", resources={"requests": {"cpu": "100m", "memory": "64Mi"},
                                          "limits": {"memory": "128Mi"}}))
    response = _admit(server, obj)
    assert response["allowed"] is True and "status" not in response
    warnings = response["warnings"]
    assert any(w.startswith("pod-security-restricted/podSecurity[runAsNonRoot]: ") for w in warnings)
    assert any(w.startswith("pod-security-restricted/podSecurity[allowPrivilegeEscalation]: ") for w in warnings)
    assert all(len(w) <= 256 for w in warnings)
    assert "auditAnnotations" not in response


def test_deployment_with_a_privileged_template_is_denied_naming_the_template(server: ServerProcess) -> None:
    template = pod(good_container(securityContext={**RESTRICTED_SC, "privileged": True}), labels={"app": "web"})
    response = _admit(server, controller("Deployment", template), kind="Deployment")
    assert response["allowed"] is False
    assert ("pod-security-baseline/podSecurity[privileged]: "
            "spec.template.spec.containers[app].securityContext.privileged: " in response["status"]["message"])


def test_cronjob_template_path_and_clean_controllers(server: ServerProcess) -> None:
    bad = pod(good_container(), hostNetwork=True)
    response = _admit(server, controller("CronJob", bad), kind="CronJob")
    assert response["allowed"] is False
    assert "spec.jobTemplate.spec.template.spec.hostNetwork" in response["status"]["message"]
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"):
        response = _admit(server, controller(kind, pod(good_container())), kind=kind)
        assert response["allowed"] is True and not response.get("warnings"), (kind, response)


def test_audit_annotations_for_latest_images(server: ServerProcess) -> None:
    response = _admit(server, pod(good_container(image="nginx:latest")))
    assert response["allowed"] is True
    assert response["auditAnnotations"] == {
        "image-tags.images": '1 violation: [latestTag] spec.containers[app].image: container "app" image '
                             '"nginx:latest" uses the latest tag; pin a version tag or a digest'}


def test_v1beta1_review_is_answered_in_kind(server: ServerProcess) -> None:
    result = server.client.admit(pod(container("app", securityContext={"privileged": True})),
                                 endpoint="/validate", api_version="admission.k8s.io/v1beta1")
    assert result.review["apiVersion"] == "admission.k8s.io/v1beta1" and result.allowed is False


def test_ephemeral_container_debug_is_checked(server: ServerProcess) -> None:
    running = pod(good_container())
    debug = pod(good_container(), ephemeralContainers=[
        {"name": "debugger", "image": "busybox", "securityContext": {"privileged": True}}])
    response = _admit(server, debug, operation="UPDATE", sub_resource="ephemeralcontainers", old_object=running)
    assert response["allowed"] is False
    assert "spec.ephemeralContainers[debugger].securityContext.privileged" in response["status"]["message"]


def test_delete_and_status_updates_are_allowed(server: ServerProcess) -> None:
    privileged = pod(container("app", securityContext={"privileged": True}))
    assert _admit(server, None, operation="DELETE", old_object=privileged)["allowed"] is True
    assert _admit(server, privileged, operation="UPDATE", sub_resource="status",
                  old_object=privileged)["allowed"] is True


def test_decision_log_names_the_validation_policies(server: ServerProcess) -> None:
    _admit(server, pod(container("app", securityContext={"privileged": True}), name="logged-pod"))
    entry = server.wait_for_log(lambda e: e.get("event") == "decision" and e.get("podName") == "logged-pod")
    assert entry["outcome"] == "denied" and "pod-security-baseline" in entry["policies"]


CEL_POLICY = """apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata:
  name: cel-limits
spec:
  action: Enforce
  rules:
    - cel:
        expression: "object.spec.containers.all(c, has(c.resources.limits))"
        message: every container needs limits
"""


def test_cel_runtime_error_is_a_violation_with_its_message(start_server: Any, tmp_path: Path) -> None:
    (tmp_path / "validation-cel.yaml").write_text(CEL_POLICY)
    server = start_server(policies=tmp_path)
    response = _admit(server, pod(container("app")))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "1 validation violation: cel-limits/cel[evaluationError]: every container needs limits "
        "(CEL evaluation error: no such key: resources)")
    limited = pod(container("app", resources={"limits": {"memory": "1Gi"}}))
    assert _admit(server, limited)["allowed"] is True


def test_cel_syntax_error_stops_the_load_naming_file_and_policy(start_server: Any, tmp_path: Path) -> None:
    bad = CEL_POLICY.replace("has(c.resources.limits))", "has(c.resources.limits)")
    (tmp_path / "validation-cel.yaml").write_text(bad)
    result = subprocess.run([sys.executable, "-m", "webhook", "policies", "check", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert f"{tmp_path / 'validation-cel.yaml'}:9: cel-limits/spec.rules[0].cel.expression: " in result.stderr
    assert "invalid CEL" in result.stderr
    with pytest.raises(RuntimeError, match=r"validation-cel\.yaml:9: cel-limits/spec\.rules\[0\]\.cel\.expression"):
        start_server(policies=tmp_path)


def test_a_malformed_container_entry_is_denied_not_skipped(server: ServerProcess) -> None:
    # Fails closed: no rule can read an entry that is not an object, so it must not pass them all.
    obj = pod(good_container("app"), labels={"app": "web"})
    obj["spec"]["initContainers"] = [None]
    response = _admit(server, obj)
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"] == ("malformed pod: spec.initContainers[0] is a JSON null, not a container "
                                              "object (every container must be a JSON object)")
