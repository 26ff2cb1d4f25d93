"""The real-world corpus through both webhooks, in the API server's order: mutate, then
validate the patched pod. Expected outcomes are stated per manifest, and every denial
must name the Pod Security checks that the manifest really breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ServerProcess

CORPUS = Path(__file__).parent / "data" / "corpus"
# manifest -> the baseline checks it breaks (denied by the shipped Enforce policy)
DENIED = {
    "daemonset-node-exporter": {"hostNamespaces", "hostPathVolumes", "hostPorts"},
    "pod-existing-env-and-mounts": {"hostPathVolumes"},
    "pod-hostnetwork": {"capabilities_baseline", "hostNamespaces"},
    "statefulset-cassandra": {"capabilities_baseline"},
}
MANIFESTS = sorted(CORPUS.glob("*.yaml"))


def _namespace(text: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("# namespace:")), "default")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_corpus_pod_is_allowed_or_denied_as_expected(server: ServerProcess, path: Path) -> None:
    text = path.read_text()
    pod, namespace = yaml.safe_load(text), _namespace(text)
    mutated = server.client.admit(pod, namespace=namespace)
    assert mutated.allowed
    final = mutated.patched(pod)
    result = server.client.admit(final, namespace=namespace, endpoint="/validate")
    expected = DENIED.get(path.stem)
    if expected is None:
        assert result.allowed, result.response.get("status")
        # injection itself never causes a violation: no warning names an injected container
        for warning in result.response.get("warnings", []):
            assert not any(name in warning for name in ('"identity-init"', '"traffic-proxy"', '"log-shipper"'))
        return
    assert not result.allowed
    message = result.response["status"]["message"]
    assert "pod-security-baseline/podSecurity" in message
    named = {check for check in expected if f"[{check}]" in message}
    assert named == expected, message
