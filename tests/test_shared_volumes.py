"""A volume several policies define alike is one volume they share, not a conflict; one name
with different definitions is still a conflict, in the lint and in the pod's ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.engine_helpers import SHIPPED, policies_from_yaml, run
from webhook.engine.ledger import LEDGER_ANNOTATION
from webhook.policy.lint import lint

POLICY = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: %s}
spec:
  priority: %d
  inject:
    volumes:
      - name: certs
        source: %s
    volumeMounts:
      - {name: certs, mountPath: /certs/%s}
"""
MEMORY = "{emptyDir: {medium: Memory}}"
DISK = "{emptyDir: {}}"
TEMPLATED = "{configMap: {name: '{{ namespace }}-certs'}}"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "app", "image": "a"}]}}


def ledger(pod: dict[str, Any]) -> dict[str, Any]:
    records = json.loads(pod["metadata"]["annotations"][LEDGER_ANNOTATION])["policies"]
    return {r["name"]: r for r in records}


# (case, first policy's source, second policy's source, shared)
CASES = [
    ("alike", MEMORY, MEMORY, True),
    ("alike with templates", TEMPLATED, TEMPLATED, True),
    ("different", MEMORY, DISK, False),
]


@pytest.mark.parametrize(("first", "second", "shared"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_volume_defined_alike_is_shared_and_a_different_one_conflicts(first: str, second: str,
                                                                        shared: bool) -> None:
    policies = policies_from_yaml(POLICY % ("a", 10, first, "a"), POLICY % ("b", 20, second, "b"))
    result = run(POD, namespace="shop", policies=policies)
    volumes = result.pod["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["certs"]          # added once, the first policy's
    records = ledger(result.pod)
    assert records["a"]["volumes"] == ["certs"] and "conflicts" not in records["a"]
    warnings = [w for w in lint(policies) if "'certs'" in w]
    if shared:
        assert records["b"]["volumes"] == ["certs"] and "conflicts" not in records["b"]
        assert warnings == []
    else:
        assert volumes[0]["emptyDir"] == {"medium": "Memory"}
        assert "volumes" not in records["b"]
        assert records["b"]["conflicts"] == [
            {"kind": "volume", "name": "certs", "resolution": "Keep", "with": "policy a"}]
        assert warnings == ["volume 'certs' is injected by 2 policies with different definitions (a, b); "
                            "the first by priority wins"]


def test_alike_templates_read_from_different_contexts_are_still_warned() -> None:
    # A mandatory policy's templates read the workload from the pod's owner, another's
    # from the pod: the same text may render two volumes.
    source = "{configMap: {name: '{{ workload.name }}-certs'}}"
    mandatory = (POLICY % ("a", 10, source, "a")).replace("  priority: 10\n", "  priority: 10\n  optOut: Forbidden\n")
    policies = policies_from_yaml(mandatory, POLICY % ("b", 20, source, "b"))
    assert [w for w in lint(policies) if "'certs'" in w] == [
        "volume 'certs' is injected by 2 policies with different definitions (a, b); the first by priority wins"]


def test_the_shipped_identity_volume_is_shared_without_a_warning() -> None:
    assert not [w for w in lint(SHIPPED) if "identity-certs" in w]
    pod = {**POD, "metadata": {"name": "web", "labels": {"app": "web"}}}
    records = ledger(run(pod, policies=SHIPPED).pod)
    assert records["traffic-proxy"]["volumes"] == ["identity-certs"]
    assert not any("conflicts" in r for r in records.values())
