"""Every upstream Pod Security fixture (tests/data/pod-security/v1.37, see PROVENANCE.md)
through the validation engine, via a ValidationPolicy with `podSecurity`, at both
levels: each `pass` pod is allowed, each `fail` pod denied with its check named.
The same pods also go through as a Deployment's and a CronJob's pod template."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_validate_helpers import controller, policy, policy_set, run

DATA_DIR = Path(__file__).parent / "data" / "pod-security" / "v1.37"
LEVELS = ("baseline", "restricted")
# Fixture file prefix -> the check it exercises (restricted replaces three baseline checks).
PREFIX_TO_CHECK = {
    "allowprivilegeescalation": "allowPrivilegeEscalation", "apparmorprofile": "appArmorProfile",
    "capabilities_baseline": "capabilities_baseline", "capabilities_restricted": "capabilities_restricted",
    "hostnamespaces": "hostNamespaces", "hostpathvolumes": "hostPathVolumes", "hostports": "hostPorts",
    "hostprobesandhostlifecycle": "hostProbesAndHostLifecycle", "privileged": "privileged",
    "procmount": "procMount", "procmount_restricted": "procMount_restricted",
    "restrictedvolumes": "restrictedVolumes", "runasnonroot": "runAsNonRoot", "runasuser": "runAsUser",
    "seccompprofile_baseline": "seccompProfile_baseline",
    "seccompprofile_restricted": "seccompProfile_restricted", "selinuxoptions": "seLinuxOptions",
    "sysctls": "sysctls", "windowshostprocess": "windowsHostProcess",
}
REPLACED_AT_RESTRICTED = {"capabilities_baseline": "capabilities_restricted",
                          "seccompProfile_baseline": "seccompProfile_restricted",
                          "procMount": "procMount_restricted"}
POLICIES = {level: policy_set(policy(f"pss-{level}", [{"podSecurity": {"level": level}}]))
            for level in LEVELS}


def _fixtures(outcome: str) -> list[Any]:
    return [pytest.param(level, path, id=f"{level}/{outcome}/{path.name}")
            for level in LEVELS for path in sorted((DATA_DIR / level / outcome).glob("*.yaml"))]


def _expected_check(level: str, path: Path) -> str:
    check = PREFIX_TO_CHECK[re.sub(r"\d+$", "", path.stem)]
    return REPLACED_AT_RESTRICTED.get(check, check) if level == "restricted" else check


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_all_148_fixtures_are_present() -> None:
    assert len(_fixtures("pass")) + len(_fixtures("fail")) == 148


@pytest.mark.parametrize(("level", "path"), _fixtures("pass"))
def test_pass_fixture_is_allowed(level: str, path: Path) -> None:
    decision = run(POLICIES[level], _load(path))
    assert decision.allowed, decision.message
    assert decision.violations == () and decision.message is None
    assert decision.applied_policies == (f"pss-{level}",)


@pytest.mark.parametrize(("level", "path"), _fixtures("fail"))
def test_fail_fixture_is_denied_naming_the_check(level: str, path: Path) -> None:
    check = _expected_check(level, path)
    decision = run(POLICIES[level], _load(path))
    assert not decision.allowed and decision.code == 403
    assert check in {v.check for v in decision.violations}
    assert f"pss-{level}/podSecurity[{check}]: " in (decision.message or "")


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
@pytest.mark.parametrize(("level", "path"), _fixtures("fail"))
def test_fail_fixture_as_pod_template_is_denied_at_the_template_path(kind: str, level: str, path: Path) -> None:
    check = _expected_check(level, path)
    decision = run(POLICIES[level], controller(kind, _load(path)), kind=kind)
    assert not decision.allowed
    prefix = "spec.template." if kind == "Deployment" else "spec.jobTemplate.spec.template."
    named = [v for v in decision.violations if v.check == check]
    assert named and all(v.path.startswith(prefix) for v in named)
    assert f"podSecurity[{check}]: {prefix}" in (decision.message or "")


@pytest.mark.parametrize(("level", "path"), _fixtures("pass"))
def test_pass_fixture_as_pod_template_is_allowed(level: str, path: Path) -> None:
    decision = run(POLICIES[level], controller("Deployment", _load(path)), kind="Deployment")
    assert decision.allowed, decision.message
