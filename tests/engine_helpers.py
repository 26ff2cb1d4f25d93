"""Helpers for engine tests: run injection, check the patch applies and is a fixed point."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import jsonpatch

from webhook.engine.inject import InjectionResult, inject
from webhook.policy.loader import PolicySet, load_policy_dir, load_policy_sources

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = load_policy_dir(ROOT / "policies")


def policies_from_yaml(*documents: str) -> PolicySet:
    return load_policy_sources({f"p{i}.yaml": textwrap.dedent(d).encode() for i, d in enumerate(documents)})


def run(pod: dict[str, Any], *, namespace: str = "default", policies: PolicySet = SHIPPED) -> InjectionResult:
    """Inject, apply the patch strictly, and check that a second pass adds nothing."""
    original = copy.deepcopy(pod)
    result = inject(pod, namespace=namespace, policies=policies)
    assert pod == original, "the engine must not modify its input"
    if result.denial:
        assert result.patch == []
        return result
    patched = jsonpatch.apply_patch(pod, result.patch, in_place=False)
    assert patched == result.pod, "the patch must produce exactly the pod the engine describes"
    again = inject(patched, namespace=namespace, policies=policies)
    assert again.denial is None and again.patch == [], f"second pass is not a no-op: {again.patch}"
    return result


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def mount_paths(container: dict[str, Any]) -> list[str]:
    return [m["mountPath"] for m in container.get("volumeMounts", [])]
