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


def expand(value: str, defined: dict[str, str], missing: set[str] | None = None) -> str:
    """Kubernetes' `$(VAR)` expansion of an env value (the kubelet's third_party expansion
    package): `$$` is a literal `$`; `$(NAME)` is NAME's value when defined, else left as is
    (and NAME added to `missing`)."""
    out, i, n = [], 0, len(value)
    while i < n:
        if value[i] != "$" or i + 1 == n:
            out.append(value[i])
            i += 1
        elif value[i + 1] == "$":
            out.append("$")
            i += 2
        elif value[i + 1] == "(" and (close := value.find(")", i + 2)) != -1:
            name = value[i + 2:close]
            if name in defined:
                out.append(defined[name])
            else:
                out.append(f"$({name})")
                if missing is not None:
                    missing.add(name)
            i = close + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def runtime_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet gives a container, in order: each `value` expanded with
    the vars defined before it; a `valueFrom` stands for `<fieldPath>` (or `<valueFrom>`)."""
    defined: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            defined[entry["name"]] = expand(entry["value"], defined)
        else:
            field_ref = entry.get("valueFrom", {}).get("fieldRef", {})
            defined[entry["name"]] = f"<{field_ref.get('fieldPath', 'valueFrom')}>"
    return defined


def unexpanded(container: dict[str, Any]) -> dict[str, set[str]]:
    """For each env var with a `value`, the `$(NAME)` references the kubelet leaves unexpanded."""
    defined: dict[str, str] = {}
    out: dict[str, set[str]] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            missing: set[str] = set()
            defined[entry["name"]] = expand(entry["value"], defined, missing)
            out[entry["name"]] = missing
        else:
            defined[entry["name"]] = "<valueFrom>"
    return out
