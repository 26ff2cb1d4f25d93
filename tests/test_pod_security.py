"""Tests for webhook.rules.pod_security (Pod Security Standards v1.37).

The conformance part runs every upstream fixture in tests/data/pod-security/v1.37
(kubernetes/pod-security-admission test/testdata, see PROVENANCE.md there). The
unit tests cover behaviour the fixtures do not: exemptions, ephemeral
containers, odd input, the AppArmor field, user namespaces and Windows pods.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.core.finding import Finding
from webhook.rules.pod_security import (
    ALL_CHECKS,
    BASELINE_CHECKS,
    RESTRICTED_CHECKS,
    RESTRICTED_OVERRIDES,
    check_pod_spec,
    effective_checks,
)

DATA_DIR = Path(__file__).parent / "data" / "pod-security" / "v1.37"
LEVELS = ("baseline", "restricted")

# Fixture file name prefix -> upstream check id that the fixture exercises.
PREFIX_TO_CHECK: dict[str, str] = {
    "allowprivilegeescalation": "allowPrivilegeEscalation",
    "apparmorprofile": "appArmorProfile",
    "capabilities_baseline": "capabilities_baseline",
    "capabilities_restricted": "capabilities_restricted",
    "hostnamespaces": "hostNamespaces",
    "hostpathvolumes": "hostPathVolumes",
    "hostports": "hostPorts",
    "hostprobesandhostlifecycle": "hostProbesAndHostLifecycle",
    "privileged": "privileged",
    "procmount": "procMount",
    "procmount_restricted": "procMount_restricted",
    "restrictedvolumes": "restrictedVolumes",
    "runasnonroot": "runAsNonRoot",
    "runasuser": "runAsUser",
    "seccompprofile_baseline": "seccompProfile_baseline",
    "seccompprofile_restricted": "seccompProfile_restricted",
    "selinuxoptions": "seLinuxOptions",
    "sysctls": "sysctls",
    "windowshostprocess": "windowsHostProcess",
}
# Prefixes of the "known good" pods, which exist only as pass fixtures.
BASE_PREFIXES = frozenset({"base", "base_linux", "base_windows"})

# At restricted level, upstream replaces these baseline checks with a stricter
# restricted check. Spelled out here on purpose, rather than imported from the module.
REPLACED_AT_RESTRICTED: dict[str, str] = {
    "capabilities_baseline": "capabilities_restricted",
    "seccompProfile_baseline": "seccompProfile_restricted",
    "procMount": "procMount_restricted",
}

# Number of files per <level>/<outcome> in the fixture tree (see PROVENANCE.md).
EXPECTED_COUNTS = {
    ("baseline", "fail"): 34,
    ("baseline", "pass"): 15,
    ("restricted", "fail"): 76,
    ("restricted", "pass"): 23,
}


def _fixture_paths(level: str, outcome: str) -> list[Path]:
    return sorted((DATA_DIR / level / outcome).glob("*.yaml"))


def _prefix(path: Path) -> str:
    return re.sub(r"\d+$", "", path.stem)


def _load_pod(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (metadata, spec) of the pod that a fixture describes."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("metadata") or {}, doc.get("spec") or {}
    spec = doc.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    if isinstance(template, dict):  # Deployment, StatefulSet, DaemonSet, Job, ReplicaSet, ...
        return template.get("metadata") or {}, template.get("spec") or {}
    pytest.fail(f"{path}: unsupported fixture kind {kind!r}")


def _expected_check(level: str, path: Path) -> str:
    check = PREFIX_TO_CHECK[_prefix(path)]
    return REPLACED_AT_RESTRICTED.get(check, check) if level == "restricted" else check


def _params(outcome: str) -> list[Any]:
    return [
        pytest.param(level, path, id=f"{level}/{outcome}/{path.name}")
        for level in LEVELS
        for path in _fixture_paths(level, outcome)
    ]


def _checks(violations: list[Finding]) -> set[str]:
    return {v.check for v in violations}


# ---------------------------------------------------------------------------
# Conformance: upstream fixtures
# ---------------------------------------------------------------------------


def test_fixture_tree_is_complete() -> None:
    # Guards against running against a partial copy, which would pass vacuously.
    counts = {key: len(_fixture_paths(*key)) for key in EXPECTED_COUNTS}
    assert counts == EXPECTED_COUNTS


def test_every_fixture_prefix_is_mapped() -> None:
    for level in LEVELS:
        for path in _fixture_paths(level, "fail"):
            assert _prefix(path) in PREFIX_TO_CHECK, path
        for path in _fixture_paths(level, "pass"):
            assert _prefix(path) in PREFIX_TO_CHECK or _prefix(path) in BASE_PREFIXES, path


def test_fail_fixtures_cover_every_check() -> None:
    covered = {
        _expected_check(level, path) for level in LEVELS for path in _fixture_paths(level, "fail")
    }
    assert covered == set(ALL_CHECKS)


@pytest.mark.parametrize(("level", "path"), _params("pass"))
def test_pass_fixture_is_allowed(level: str, path: Path) -> None:
    metadata, spec = _load_pod(path)
    assert check_pod_spec(metadata, spec, level=level) == []


@pytest.mark.parametrize(("level", "path"), _params("fail"))
def test_fail_fixture_is_rejected_by_its_check(level: str, path: Path) -> None:
    metadata, spec = _load_pod(path)
    violations = check_pod_spec(metadata, spec, level=level)
    assert violations, "expected at least one violation"
    assert _expected_check(level, path) in _checks(violations)
    assert all(isinstance(v, Finding) and v.path and v.message for v in violations)


@pytest.mark.parametrize("path", _fixture_paths("restricted", "pass"), ids=lambda p: p.name)
def test_restricted_pass_fixture_also_passes_baseline(path: Path) -> None:
    metadata, spec = _load_pod(path)
    assert check_pod_spec(metadata, spec, level="baseline") == []


@pytest.mark.parametrize("path", _fixture_paths("baseline", "fail"), ids=lambda p: p.name)
def test_baseline_fail_fixture_also_fails_restricted(path: Path) -> None:
    metadata, spec = _load_pod(path)
    assert check_pod_spec(metadata, spec, level="restricted")


# ---------------------------------------------------------------------------
# Helpers for the unit tests
# ---------------------------------------------------------------------------

RESTRICTED_SC: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted_pod(**spec_overrides: Any) -> dict[str, Any]:
    """A minimal spec that passes the restricted level."""
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "x", "securityContext": copy.deepcopy(RESTRICTED_SC)}],
    }
    spec.update(spec_overrides)
    return spec


def test_restricted_pod_helper_is_clean() -> None:
    assert check_pod_spec({}, restricted_pod(), level="restricted") == []


# ---------------------------------------------------------------------------
# API: levels, exemptions, check lists
# ---------------------------------------------------------------------------


def test_check_id_tables() -> None:
    assert ALL_CHECKS == BASELINE_CHECKS + RESTRICTED_CHECKS
    assert len(set(ALL_CHECKS)) == len(ALL_CHECKS)
    assert dict(RESTRICTED_OVERRIDES) == {v: k for k, v in REPLACED_AT_RESTRICTED.items()}
    assert effective_checks("baseline") == BASELINE_CHECKS
    restricted = effective_checks("restricted")
    assert set(restricted) == set(ALL_CHECKS) - set(REPLACED_AT_RESTRICTED)


def test_exemption_skips_only_that_check() -> None:
    spec = {"hostNetwork": True, "containers": [{"name": "app", "securityContext": {"privileged": True}}]}
    assert _checks(check_pod_spec({}, spec, level="baseline")) == {"hostNamespaces", "privileged"}
    exempted = check_pod_spec({}, spec, level="baseline", exempt=frozenset({"hostNamespaces"}))
    assert _checks(exempted) == {"privileged"}


def test_exempting_restricted_override_falls_back_to_baseline_check() -> None:
    spec = restricted_pod()
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_RAW"]
    assert _checks(check_pod_spec({}, spec, level="restricted")) == {"capabilities_restricted"}
    # Exempting the restricted check must not make restricted weaker than baseline.
    relaxed = check_pod_spec({}, spec, level="restricted", exempt=frozenset({"capabilities_restricted"}))
    assert _checks(relaxed) == {"capabilities_baseline"}
    both = frozenset({"capabilities_restricted", "capabilities_baseline"})
    assert check_pod_spec({}, spec, level="restricted", exempt=both) == []


@pytest.mark.parametrize("level", ["privileged", "Restricted", "", "latest"])
def test_unknown_level_is_rejected(level: str) -> None:
    with pytest.raises(ValueError):
        check_pod_spec({}, {}, level=level)


def test_unknown_or_malformed_exempt_is_rejected() -> None:
    with pytest.raises(ValueError, match="runAsNonroot"):
        check_pod_spec({}, {}, level="restricted", exempt=frozenset({"runAsNonroot"}))
    with pytest.raises(ValueError):
        check_pod_spec({}, {}, level="baseline", exempt="sysctls")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Containers of every kind are checked, and paths use container names
# ---------------------------------------------------------------------------


def test_ephemeral_containers_are_checked() -> None:
    spec = restricted_pod(
        ephemeralContainers=[{"name": "debugger", "image": "x", "securityContext": {"privileged": True}}]
    )
    baseline = check_pod_spec({}, spec, level="baseline")
    assert baseline == [
        Finding(
            check="privileged",
            path="spec.ephemeralContainers[debugger].securityContext.privileged",
            message='privileged: container "debugger" must not set securityContext.privileged=true',
            container="debugger",
        )
    ]
    restricted = check_pod_spec({}, spec, level="restricted")
    paths = {(v.check, v.path) for v in restricted}
    debugger = "spec.ephemeralContainers[debugger].securityContext"
    assert ("allowPrivilegeEscalation", f"{debugger}.allowPrivilegeEscalation") in paths
    assert ("capabilities_restricted", f"{debugger}.capabilities.drop") in paths


def test_init_containers_are_checked_and_paths_name_the_container() -> None:
    spec = restricted_pod(securityContext={"seccompProfile": {"type": "RuntimeDefault"}})
    spec["initContainers"] = [{"name": "setup", "securityContext": copy.deepcopy(RESTRICTED_SC)}]
    violations = check_pod_spec({}, spec, level="restricted")
    assert [(v.check, v.path) for v in violations] == [
        # upstream visiting order: initContainers, containers, ephemeralContainers
        ("runAsNonRoot", "spec.initContainers[setup].securityContext.runAsNonRoot"),
        ("runAsNonRoot", "spec.containers[app].securityContext.runAsNonRoot"),
    ]
    assert violations[1].message == (
        'runAsNonRoot != true: pod or container "app" must set securityContext.runAsNonRoot=true'
    )


def test_results_are_deterministic_and_in_check_order() -> None:
    spec = {
        "hostPID": True,
        "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
        "containers": [
            {"name": "b", "securityContext": {"privileged": True}, "ports": [{"containerPort": 80, "hostPort": 80}]},
            {"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}},
        ],
    }
    first = check_pod_spec({}, copy.deepcopy(spec), level="restricted")
    assert first == check_pod_spec({}, copy.deepcopy(spec), level="restricted")
    order = effective_checks("restricted")
    indexes = [order.index(v.check) for v in first]
    assert indexes == sorted(indexes)
    cap = next(v for v in first if v.check == "capabilities_restricted" and v.path.endswith(".add"))
    assert '"NET_ADMIN", "SYS_ADMIN"' in cap.message  # sorted, like upstream


def test_input_is_not_mutated() -> None:
    metadata = {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}}
    spec = restricted_pod(hostIPC=True, volumes=[{"name": "v", "hostPath": {"path": "/"}}])
    before = copy.deepcopy((metadata, spec))
    assert check_pod_spec(metadata, spec, level="restricted")
    assert (metadata, spec) == before


def test_violation_is_frozen() -> None:
    v = Finding("privileged", "spec.containers[a].securityContext.privileged", "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.check = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Odd input must never raise
# ---------------------------------------------------------------------------


def test_garbage_from_the_brief_does_not_raise() -> None:
    spec = {"containers": "x", "securityContext": 5}
    for level in LEVELS:
        assert check_pod_spec({}, spec, level=level) == []


GARBAGE_SPECS: list[Any] = [
    None,
    5,
    "spec",
    [],
    {"containers": None, "initContainers": 7, "ephemeralContainers": {"a": 1}},
    {"containers": [None, 5, "x", [], {"name": None}, {"name": 3, "securityContext": "sc"}]},
    {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": "ALL", "drop": 5}}}]},
    {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": [None, 5, "NET_RAW"], "drop": [None]}}}]},
    {"containers": [{"name": "c", "ports": "p"}, {"name": "d", "ports": [None, 5, {"hostPort": "80"}, {}]}]},
    {"containers": [{"name": "c", "livenessProbe": 5, "readinessProbe": {"httpGet": "x"}, "lifecycle": [1]}]},
    {"containers": [{"securityContext": {"seccompProfile": 5, "seLinuxOptions": [], "windowsOptions": 1}}]},
    {"containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": 5}, "seLinuxOptions": {"user": 1}}}]},
    {"securityContext": {"sysctls": "s"}},
    {"securityContext": {"sysctls": [None, 3, {"name": 7}, {}]}},
    {"securityContext": {"runAsNonRoot": "yes", "runAsUser": "0", "seccompProfile": "RuntimeDefault"}},
    {"volumes": "v"},
    {"volumes": [None, 1, {"name": 5, "hostPath": "x"}, {"name": "n", 7: {}}]},
    {"os": 5, "hostUsers": "false", "hostNetwork": "true"},
    {"os": {"name": None}, "hostUsers": None},
]
GARBAGE_METADATA: list[Any] = [
    None,
    5,
    {"annotations": 5},
    {"annotations": None},
    {"annotations": {5: 5, None: "x", "container.apparmor.security.beta.kubernetes.io/c": None}},
    {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": ["unconfined"]}},
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("spec", GARBAGE_SPECS, ids=lambda s: repr(s)[:60])
def test_garbage_spec_does_not_raise(level: str, spec: Any) -> None:
    result = check_pod_spec({}, spec, level=level)
    assert isinstance(result, list)
    assert all(isinstance(v, Finding) for v in result)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("metadata", GARBAGE_METADATA, ids=lambda m: repr(m)[:60])
def test_garbage_metadata_does_not_raise(level: str, metadata: Any) -> None:
    assert isinstance(check_pod_spec(metadata, restricted_pod(), level=level), list)


def test_wrong_types_count_as_unset() -> None:
    # A JSON bool is not a uid: runAsUser=false must not be read as runAsUser=0.
    spec = restricted_pod()
    spec["containers"][0]["securityContext"]["runAsUser"] = False
    assert check_pod_spec({}, spec, level="restricted") == []
    # Non-mapping container entries are still checked as (empty) containers.
    garbage = restricted_pod(containers=[5])
    assert {"allowPrivilegeEscalation", "capabilities_restricted"} <= _checks(
        check_pod_spec({}, garbage, level="restricted")
    )
    assert any(v.path.startswith("spec.containers[0]") for v in check_pod_spec({}, garbage, level="restricted"))


def test_unknown_volume_source_is_restricted_but_sourceless_volume_is_not() -> None:
    spec = restricted_pod(volumes=[{"name": "implicit-emptydir"}, {"name": "odd", "fancyNewVolume": {}}])
    violations = check_pod_spec({}, spec, level="restricted")
    assert [(v.check, v.path) for v in violations] == [("restrictedVolumes", "spec.volumes[odd].fancyNewVolume")]


# ---------------------------------------------------------------------------
# Semantics not covered by the fixtures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["pod", "container"])
def test_apparmor_profile_field_unconfined_is_forbidden(where: str) -> None:
    spec = restricted_pod()
    target = spec["securityContext"] if where == "pod" else spec["containers"][0]["securityContext"]
    for allowed in ({"type": "RuntimeDefault"}, {"type": "Localhost", "localhostProfile": "p"}):
        target["appArmorProfile"] = allowed
        assert check_pod_spec({}, spec, level="baseline") == []
    target["appArmorProfile"] = {"type": "Unconfined"}
    violations = check_pod_spec({}, spec, level="baseline")
    assert _checks(violations) == {"appArmorProfile"}
    assert violations[0].path.endswith("securityContext.appArmorProfile.type")


def test_apparmor_annotations() -> None:
    prefix = "container.apparmor.security.beta.kubernetes.io/"
    ok = {prefix + "a": "runtime/default", prefix + "b": "localhost/p", prefix + "c": "", "other": "unconfined"}
    assert check_pod_spec({"annotations": ok}, restricted_pod(), level="baseline") == []
    bad = {prefix + "ghost": "unconfined", prefix + "app": "bogus"}
    violations = check_pod_spec({"annotations": bad}, restricted_pod(), level="baseline")
    # Every prefixed key counts, even one naming no container (upstream behaviour).
    assert [v.path for v in violations] == [
        f"metadata.annotations[{prefix}app]",
        f"metadata.annotations[{prefix}ghost]",
    ]


def test_selinux_container_engine_t_is_allowed() -> None:
    spec = restricted_pod()
    spec["containers"][0]["securityContext"]["seLinuxOptions"] = {"type": "container_engine_t", "level": "s0:c1"}
    assert check_pod_spec({}, spec, level="baseline") == []
    spec["containers"][0]["securityContext"]["seLinuxOptions"] = {"type": "spc_t", "user": "u", "role": "r"}
    paths = [v.path for v in check_pod_spec({}, spec, level="baseline")]
    assert paths == [
        "spec.containers[app].securityContext.seLinuxOptions.type",
        "spec.containers[app].securityContext.seLinuxOptions.user",
        "spec.containers[app].securityContext.seLinuxOptions.role",
    ]


def test_seccomp_legacy_annotations_are_not_checked() -> None:
    # Upstream checks the alpha annotations only for policy versions < 1.19.
    metadata = {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}
    assert check_pod_spec(metadata, restricted_pod(), level="restricted") == []


def test_user_namespace_pods_relax_run_as_and_baseline_proc_mount() -> None:
    pod_sc = {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}
    spec = restricted_pod(hostUsers=False, securityContext=pod_sc)
    spec["containers"][0]["securityContext"]["procMount"] = "Unmasked"
    assert check_pod_spec({}, spec, level="baseline") == []
    # restricted still forbids unmasked /proc, but not root inside the user namespace
    assert _checks(check_pod_spec({}, spec, level="restricted")) == {"procMount_restricted"}
    spec["hostUsers"] = True
    assert _checks(check_pod_spec({}, spec, level="restricted")) == {
        "runAsNonRoot",
        "runAsUser",
        "procMount_restricted",
    }


def test_windows_pods_skip_linux_only_restricted_checks() -> None:
    spec = {"os": {"name": "windows"}, "containers": [{"name": "app"}]}
    assert _checks(check_pod_spec({}, spec, level="restricted")) == {"runAsNonRoot"}
    spec["os"] = {"name": "linux"}
    assert _checks(check_pod_spec({}, spec, level="restricted")) == {
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile_restricted",
        "capabilities_restricted",
    }


def test_restricted_volume_allowlist() -> None:
    allowed = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ]
    spec = restricted_pod(volumes=[{"name": f"v{i}", src: {}} for i, src in enumerate(allowed)])
    assert check_pod_spec({}, spec, level="restricted") == []


@pytest.mark.parametrize(
    ("sysctl", "allowed"),
    [
        ("net.ipv4.tcp_slow_start_after_idle", True),  # added in 1.37
        ("net.ipv4.tcp_notsent_lowat", True),  # added in 1.37
        ("net.ipv4.tcp_rmem", True),  # 1.32
        ("net.ipv4.ip_local_reserved_ports", True),  # 1.27
        ("kernel.shm_rmid_forced", True),
        ("net.core.somaxconn", False),
        ("kernel.msgmax", False),
    ],
)
def test_sysctl_safe_set(sysctl: str, allowed: bool) -> None:
    spec = restricted_pod()
    spec["securityContext"]["sysctls"] = [{"name": sysctl, "value": "1"}]
    violations = check_pod_spec({}, spec, level="baseline")
    assert (violations == []) is allowed


def test_host_probe_and_lifecycle_hosts() -> None:
    spec = restricted_pod()
    container = spec["containers"][0]
    container["startupProbe"] = {"grpc": {"port": 9000}}
    container["lifecycle"] = {"preStop": {"httpGet": {"port": 80, "host": ""}}}
    assert check_pod_spec({}, spec, level="baseline") == []
    container["lifecycle"]["preStop"] = {"tcpSocket": {"port": 80, "host": "10.0.0.1"}}
    violations = check_pod_spec({}, spec, level="baseline")
    assert [v.path for v in violations] == ["spec.containers[app].lifecycle.preStop.tcpSocket.host"]
