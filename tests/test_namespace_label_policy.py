"""The ValidatingAdmissionPolicy that guards the webhook's namespace opt-out labels.

The API server evaluates it with Kubernetes CEL (cel-go); here the project's own CEL
library evaluates the same expressions, variables first and in order, against real
namespace objects as the API server passes them (oldObject null on CREATE). Both
raise on a missing key, so an unguarded access shows up here as an error; with
failurePolicy Fail an error would deny, so no case may raise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.rules.cel import CelError, Variables, compile_expression, evaluate

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "manifests" / "base"
POLICY_NAME = "runtime-platform-namespace-labels"
PARAMS_NAME = "namespace-label-admins"
PREFIX = "runtime.platform.io/"


def _policy_documents() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((BASE / "namespace-label-policy.yaml").read_text())
    return {d["kind"]: d for d in docs if d}


DOCS = _policy_documents()
POLICY, BINDING = DOCS["ValidatingAdmissionPolicy"]["spec"], DOCS["ValidatingAdmissionPolicyBinding"]["spec"]


def _shipped_admin_groups() -> str:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    generator = next(g for g in kustomization["configMapGenerator"] if g["name"] == PARAMS_NAME)
    assert generator["options"]["disableNameSuffixHash"] is True  # the binding names it as written
    [literal] = generator["literals"]
    key, _, value = literal.partition("=")
    assert key == "groups"
    return value


def _evaluate_variable(source: str, variables: Variables) -> Any:
    try:
        return compile_expression(source).execute(variables.context)
    except Exception as exc:
        raise CelError(f"{source!r}: {exc}") from None


def _allowed(new: dict[str, Any], old: dict[str, Any] | None, *, groups: list[str] | None,
             params: dict[str, Any] | None = None, username: str = "alice") -> bool:
    """The policy's verdict for one request, as the API server evaluates it."""
    user: dict[str, Any] = {"username": username}
    if groups is not None:  # an absent list, as from a client certificate without groups
        user["groups"] = groups
    if params is None:
        params = {"data": {"groups": _shipped_admin_groups()}}
    request = {"operation": "CREATE" if old is None else "UPDATE", "userInfo": user,
               "kind": {"group": "", "version": "v1", "kind": "Namespace"}}
    bound: dict[str, Any] = {}
    for variable in POLICY["variables"]:
        context = Variables({"object": new, "oldObject": old, "request": request, "params": params,
                             "variables": dict(bound)})
        bound[variable["name"]] = _evaluate_variable(variable["expression"], context)
    context = Variables({"object": new, "oldObject": old, "request": request, "params": params,
                         "variables": bound})
    return all(evaluate(v["expression"], context) for v in POLICY["validations"])


def namespace(labels: dict[str, str] | None, name: str = "team-a") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": "6f1c", "resourceVersion": "41"}
    if labels is not None:
        metadata["labels"] = {"kubernetes.io/metadata.name": name, **labels}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}


OFF = {"runtime.platform.io/validation": "disabled"}
TEAM = ["system:authenticated", "oidc:team-a"]
ADMIN = ["system:authenticated", "platform-admins"]
# The server's account and the install Job's: neither ever labels a namespace, so
# neither is excepted.
WEBHOOK_SA = ["system:serviceaccounts", "system:serviceaccounts:webhook-system", "system:authenticated"]

# (case, new labels, old labels or None for CREATE, the user's groups, allowed)
CASES: list[tuple[str, dict[str, str] | None, dict[str, str] | None | str, list[str] | None, bool]] = [
    ("create-unlabelled", {}, "create", TEAM, True),
    ("create-without-labels-map", None, "create", TEAM, True),
    ("create-opted-out", OFF, "create", TEAM, False),
    ("create-opted-out-by-admin", OFF, "create", ADMIN, True),
    ("add-validation-off", OFF, {}, TEAM, False),
    ("add-injection-off", {"runtime.platform.io/injection": "disabled"}, {}, TEAM, False),
    ("add-any-prefixed-key", {"runtime.platform.io/future": "x"}, {}, TEAM, False),
    ("add-to-namespace-without-labels-map", OFF, None, TEAM, False),
    ("change-value", {"runtime.platform.io/validation": "enabled"}, OFF, TEAM, False),
    ("remove-label", {}, OFF, TEAM, False),
    ("remove-labels-map", None, OFF, TEAM, False),
    ("swap-key-same-count", {"runtime.platform.io/injection": "disabled"}, OFF, TEAM, False),
    ("other-labels-changed", {**OFF, "team": "b"}, {**OFF, "team": "a"}, TEAM, True),
    ("other-label-added", {"team": "a"}, {}, TEAM, True),
    ("unchanged-opted-out-reapplied", OFF, OFF, TEAM, True),
    ("lookalike-keys-are-not-protected", {"x.runtime.platform.io/validation": "disabled",
                                          "runtime.platform.io.evil/v": "1"}, {}, TEAM, True),
    ("admin-adds", OFF, {}, ADMIN, True),
    ("admin-changes", {"runtime.platform.io/validation": "enabled"}, OFF, ADMIN, True),
    ("admin-removes", {}, OFF, ADMIN, True),
    ("similar-group-name-is-not-admin", OFF, {}, ["platform-admins-readonly", "platform"], False),
    ("no-groups-at-all", OFF, {}, None, False),
    ("no-groups-unchanged", OFF, OFF, None, True),
    ("webhook-service-account", OFF, {}, WEBHOOK_SA, False),
    ("install-job-service-account-removes", {}, OFF, WEBHOOK_SA, False),
]


@pytest.mark.parametrize(("case", "new", "old", "groups", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_only_admins_add_change_or_remove_the_webhooks_namespace_labels(
        case: str, new: dict[str, str] | None, old: dict[str, str] | None | str, groups: list[str] | None,
        allowed: bool) -> None:
    old_object = None if old == "create" else namespace(old)  # type: ignore[arg-type]
    assert _allowed(namespace(new), old_object, groups=groups) is allowed


@pytest.mark.parametrize(("configured", "groups", "allowed"), [
    ("sre-leads, platform-admins ,security", ["oidc:x", "platform-admins"], True),  # spaces trimmed
    ("sre-leads,platform-admins", ["sre-leads"], True),
    ("sre-leads,", ["oidc:x"], False),
    ("", ["oidc:x"], False),
    ("", [""], False),  # an empty entry names no group
])
def test_the_admin_groups_are_a_comma_separated_list(configured: str, groups: list[str], allowed: bool) -> None:
    params = {"data": {"groups": configured}}
    assert _allowed(namespace(OFF), namespace({}), groups=groups, params=params) is allowed


@pytest.mark.parametrize("params", [{}, {"data": {}}, {"data": {"other": "platform-admins"}}],
                         ids=["no-data", "empty-data", "no-groups-key"])
def test_a_configmap_without_groups_excepts_nobody_and_does_not_raise(params: dict[str, Any]) -> None:
    assert _allowed(namespace(OFF), namespace({}), groups=ADMIN, params=params) is False
    assert _allowed(namespace({"team": "a"}), namespace({}), groups=TEAM, params=params) is True


def test_the_policy_is_bound_to_its_configmap_and_fails_closed() -> None:
    assert DOCS["ValidatingAdmissionPolicy"]["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert POLICY["failurePolicy"] == "Fail"
    assert POLICY["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    [rule] = POLICY["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["namespaces"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert BINDING["policyName"] == DOCS["ValidatingAdmissionPolicy"]["metadata"]["name"] == POLICY_NAME
    assert "Deny" in BINDING["validationActions"]
    assert BINDING["paramRef"] == {"name": PARAMS_NAME, "namespace": "webhook-system",
                                   "parameterNotFoundAction": "Deny"}
    assert _shipped_admin_groups() == "platform-admins"


def test_every_label_the_webhooks_select_on_is_protected() -> None:
    """The webhook configurations' opt-out labels all carry the prefix the policy guards."""
    keys = set()
    for name in ("mutatingwebhookconfiguration.yaml", "validatingwebhookconfiguration.yaml"):
        for hook in yaml.safe_load((BASE / name).read_text())["webhooks"]:
            keys |= {e["key"] for e in hook["namespaceSelector"]["matchExpressions"]}
    opt_outs = keys - {"kubernetes.io/metadata.name"}  # set by the API server, immutable
    assert opt_outs and all(k.startswith(PREFIX) for k in opt_outs)
    guarded = {v["name"]: v["expression"] for v in POLICY["variables"]}
    assert f"startsWith('{PREFIX}')" in guarded["newProtected"] and f"startsWith('{PREFIX}')" in guarded["oldProtected"]


def _documented_overlay() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if PARAMS_NAME in b and "behavior: merge" in b)


@pytest.mark.process
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) is not installed")
def test_the_documented_overlay_sets_the_groups_and_policies_stay_cluster_scoped(tmp_path: Path) -> None:
    overlay = tmp_path / "platform"
    overlay.mkdir()
    # kustomize takes only relative paths: reach the repository's overlay from here.
    target = os.path.relpath(ROOT / "manifests" / "overlays" / "self-managed", overlay)
    text = _documented_overlay().replace("../manifests/overlays/self-managed", target)
    assert target in text
    (overlay / "kustomization.yaml").write_text(text)
    built = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == PARAMS_NAME)
    assert configmap["metadata"]["namespace"] == "webhook-system"
    assert configmap["data"]["groups"] != _shipped_admin_groups()
    for doc in docs:
        if doc["kind"].startswith("ValidatingAdmissionPolicy"):
            assert "namespace" not in doc["metadata"], doc["kind"]
