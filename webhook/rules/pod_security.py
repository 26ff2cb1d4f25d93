"""Kubernetes Pod Security Standards (PSS), policy version v1.37, as pure Python.

This module re-implements the ``baseline`` and ``restricted`` levels of the
upstream Pod Security admission checks (kubernetes/pod-security-admission,
``policy/check_*.go``) on plain dicts, i.e. a Pod's ``metadata`` and ``spec``
as parsed from JSON. It does no I/O and keeps no state.

Upstream behaviour this module copies:

* Check ids are the upstream ids (``runAsNonRoot``, ``capabilities_restricted``,
  ...), so the results line up with PSA audit annotations and the docs.
* The ``restricted`` level runs every baseline check plus the restricted checks,
  except that three restricted checks *override* (replace) their baseline
  counterpart, as upstream does. The restricted version is a strict superset,
  apart from the Windows / user-namespace carve-outs below. The pairs are:
  ``capabilities_restricted`` replaces ``capabilities_baseline``,
  ``seccompProfile_restricted`` replaces ``seccompProfile_baseline``, and
  ``procMount_restricted`` replaces ``procMount``. If the overriding check is
  exempted, the baseline check runs again, so an exemption never makes
  ``restricted`` weaker than ``baseline``. Upstream has no per-check
  exemptions, so this part is our own.
* Pods with ``spec.os.name == "windows"`` skip ``allowPrivilegeEscalation``,
  ``capabilities_restricted`` and ``seccompProfile_restricted`` (upstream
  >= v1.25). API validation forbids those Linux-only fields on Windows pods.
* Pods with ``spec.hostUsers == false``, which run in a user namespace, skip
  ``runAsNonRoot``, ``runAsUser`` and the baseline ``procMount`` check. This
  relaxation became unconditional when the UserNamespacesPodSecurityStandards
  gate was removed. ``procMount_restricted`` is never relaxed.

Robustness: a missing, ``None`` or wrongly-typed field counts as *unset*, and
this module never raises on odd pod input. A real API server decodes objects
into typed structs before admission, so wrongly-typed values cannot reach a
webhook in practice. Two exceptions fail closed: any non-null volume source
counts as "set", and a container entry that is not a mapping is checked as an
empty container.
"""

from __future__ import annotations

from functools import lru_cache

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "ALL_CHECKS",
    "BASELINE_CHECKS",
    "PSS_VERSION",
    "RESTRICTED_CHECKS",
    "RESTRICTED_OVERRIDES",
    "PssViolation",
    "check_pod_spec",
    "effective_checks",
]

PSS_VERSION: Final[str] = "v1.37"

BASELINE_CHECKS: Final[tuple[str, ...]] = (
    "windowsHostProcess",
    "hostNamespaces",
    "privileged",
    "capabilities_baseline",
    "hostPathVolumes",
    "hostPorts",
    "appArmorProfile",
    "seLinuxOptions",
    "procMount",
    "seccompProfile_baseline",
    "sysctls",
    "hostProbesAndHostLifecycle",
)
"""Checks of the baseline level (upstream ``Level: baseline``)."""

RESTRICTED_CHECKS: Final[tuple[str, ...]] = (
    "restrictedVolumes",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile_restricted",
    "capabilities_restricted",
    "procMount_restricted",
)
"""Checks defined only at the restricted level (upstream ``Level: restricted``).

``level="restricted"`` evaluates these *and* the baseline checks; see
:func:`effective_checks` for the exact list.
"""

ALL_CHECKS: Final[tuple[str, ...]] = BASELINE_CHECKS + RESTRICTED_CHECKS

RESTRICTED_OVERRIDES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "capabilities_restricted": "capabilities_baseline",
        "seccompProfile_restricted": "seccompProfile_baseline",
        "procMount_restricted": "procMount",
    }
)
"""restricted check id -> the baseline check id it replaces at restricted level."""

_LEVELS: Final = frozenset({"baseline", "restricted"})


@dataclass(frozen=True)
class PssViolation:
    """One forbidden field value found in a pod."""

    check: str
    """Upstream check id, e.g. ``"runAsNonRoot"``."""
    path: str
    """Field path, e.g. ``"spec.containers[app].securityContext.runAsNonRoot"``."""
    message: str
    """Short human-readable reason, in the style of upstream's forbiddenReason/Detail."""


# --------------------------------------------------------------------------
# Tolerant accessors: odd input is treated as "unset" instead of raising.
# --------------------------------------------------------------------------

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# Parsed JSON holds only dicts; checking concrete types is much faster than the
# Mapping ABC on this hot path.
_MAP_TYPES: Final = (dict, MappingProxyType)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, _MAP_TYPES) else _EMPTY


def _is_map(value: Any) -> bool:
    # Mirrors a non-nil pointer to a struct in the Go types.
    return isinstance(value, _MAP_TYPES)


def _list(value: Any) -> Sequence[Any]:
    # str is a Sequence too, but never a valid list field.
    return value if isinstance(value, (list, tuple)) else ()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    # bool is a subclass of int in Python; a JSON true is not a number.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _q(value: str) -> str:
    """Double-quote a value the way upstream's %q / joinQuote do (close enough)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(name: Any, index: int) -> str:
    """List element selector for paths: the element's name if it has one, else its index."""
    return name if isinstance(name, str) and name else str(index)


# --------------------------------------------------------------------------
# Normalised view of a pod.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Container:
    path: str  # e.g. "spec.containers[app]"
    label: str  # e.g. 'container "app"', used in messages
    raw: Mapping[str, Any]
    # The securityContext, read once: a dozen checks look at it for every container.
    sc: Mapping[str, Any]


@dataclass(frozen=True)
class _Pod:
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]
    containers: tuple[_Container, ...]

    @property
    def psc(self) -> Mapping[str, Any]:
        return _map(self.spec.get("securityContext"))

    @property
    def is_windows(self) -> bool:
        return _map(self.spec.get("os")).get("name") == "windows"

    @property
    def in_user_namespace(self) -> bool:
        # Only an explicit false opts in; unset means host user namespace.
        return self.spec.get("hostUsers") is False


_CONTAINER_FIELDS: Final = ("initContainers", "containers", "ephemeralContainers")


def _collect_containers(spec: Mapping[str, Any]) -> tuple[_Container, ...]:
    # Same visiting order as upstream visitContainers: init, regular, ephemeral.
    out: list[_Container] = []
    for field in _CONTAINER_FIELDS:
        for i, raw in enumerate(_list(spec.get(field))):
            # A non-mapping entry becomes an empty container: it still gets
            # checked, so garbage cannot slip past the restricted checks.
            c = _map(raw)
            name = c.get("name")
            label = f"container {_q(name)}" if isinstance(name, str) and name else f"{field}[{i}]"
            out.append(_Container(path=f"spec.{field}[{_key(name, i)}]", label=label, raw=c,
                                  sc=_map(c.get("securityContext"))))
    return tuple(out)


def _make_pod(metadata: Any, spec: Any) -> _Pod:
    spec_map = _map(spec)
    return _Pod(metadata=_map(metadata), spec=spec_map, containers=_collect_containers(spec_map))


# --------------------------------------------------------------------------
# Baseline checks
# --------------------------------------------------------------------------

_Check = Callable[[_Pod], Iterator[PssViolation]]


def _windows_host_process(pod: _Pod) -> Iterator[PssViolation]:
    # check_windowsHostProcess.go: hostProcess=true is forbidden at pod and container level.
    msg = "hostProcess: {} must not set securityContext.windowsOptions.hostProcess=true"
    if _map(pod.psc.get("windowsOptions")).get("hostProcess") is True:
        yield PssViolation(
            "windowsHostProcess", "spec.securityContext.windowsOptions.hostProcess", msg.format("pod")
        )
    for c in pod.containers:
        if _map(c.sc.get("windowsOptions")).get("hostProcess") is True:
            yield PssViolation(
                "windowsHostProcess", f"{c.path}.securityContext.windowsOptions.hostProcess", msg.format(c.label)
            )


def _host_namespaces(pod: _Pod) -> Iterator[PssViolation]:
    # check_hostNamespaces.go
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.spec.get(field) is True:
            yield PssViolation("hostNamespaces", f"spec.{field}", f"host namespaces: {field}=true")


def _privileged(pod: _Pod) -> Iterator[PssViolation]:
    # check_privileged.go
    for c in pod.containers:
        if c.sc.get("privileged") is True:
            yield PssViolation(
                "privileged",
                f"{c.path}.securityContext.privileged",
                f"privileged: {c.label} must not set securityContext.privileged=true",
            )


# Docker's default capability set; check_capabilities_baseline.go. Case-sensitive, no CAP_ prefix.
_BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def _added_capabilities(c: _Container) -> list[str]:
    caps = _map(c.sc.get("capabilities"))
    return [cap for cap in _list(caps.get("add")) if isinstance(cap, str)]


def _capabilities_baseline(pod: _Pod) -> Iterator[PssViolation]:
    for c in pod.containers:
        bad = sorted({cap for cap in _added_capabilities(c) if cap not in _BASELINE_CAPABILITIES})
        if bad:
            yield PssViolation(
                "capabilities_baseline",
                f"{c.path}.securityContext.capabilities.add",
                f"non-default capabilities: {c.label} must not include "
                f"{', '.join(map(_q, bad))} in securityContext.capabilities.add",
            )


def _volumes(pod: _Pod) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield (path, quoted name, volume) for each entry of spec.volumes."""
    for i, raw in enumerate(_list(pod.spec.get("volumes"))):
        v = _map(raw)
        name = v.get("name")
        yield f"spec.volumes[{_key(name, i)}]", _q(_key(name, i)), v


def _host_path_volumes(pod: _Pod) -> Iterator[PssViolation]:
    # check_hostPathVolumes.go
    for path, name, v in _volumes(pod):
        if v.get("hostPath") is not None:
            yield PssViolation("hostPathVolumes", f"{path}.hostPath", f"hostPath volumes: volume {name}")


def _host_ports(pod: _Pod) -> Iterator[PssViolation]:
    # check_hostPorts.go: any non-zero hostPort is forbidden.
    for c in pod.containers:
        for i, port in enumerate(_list(c.raw.get("ports"))):
            host_port = _int(_map(port).get("hostPort"))
            if host_port:
                yield PssViolation(
                    "hostPorts",
                    f"{c.path}.ports[{i}].hostPort",
                    f"hostPort: {c.label} uses hostPort {host_port}",
                )


_APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_annotation_allowed(profile: str) -> bool:
    return profile in ("", "runtime/default") or profile.startswith("localhost/")


def _app_armor_profile(pod: _Pod) -> Iterator[PssViolation]:
    # check_appArmorProfile.go: the legacy per-container annotations (every key with
    # the prefix, even for a container that does not exist) and the
    # securityContext.appArmorProfile field (only "Unconfined" is forbidden).
    annotations = _map(pod.metadata.get("annotations"))
    for key in sorted(k for k in annotations if isinstance(k, str)):
        value = _str(annotations[key])
        if key.startswith(_APPARMOR_ANNOTATION_PREFIX) and not _apparmor_annotation_allowed(value):
            yield PssViolation(
                "appArmorProfile",
                f"metadata.annotations[{key}]",
                f"forbidden AppArmor profile: annotation {key}={_q(value)}",
            )
    msg = 'forbidden AppArmor profile: {} must not set AppArmor profile type to "Unconfined"'
    if _map(pod.psc.get("appArmorProfile")).get("type") == "Unconfined":
        yield PssViolation("appArmorProfile", "spec.securityContext.appArmorProfile.type", msg.format("pod"))
    for c in pod.containers:
        if _map(c.sc.get("appArmorProfile")).get("type") == "Unconfined":
            yield PssViolation(
                "appArmorProfile", f"{c.path}.securityContext.appArmorProfile.type", msg.format(c.label)
            )


# check_seLinuxOptions.go, v1.31+ list (container_engine_t added in 1.31).
_SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})


def _selinux_violations(opts_raw: Any, base_path: str, who: str) -> Iterator[PssViolation]:
    if not _is_map(opts_raw):
        return
    opts = _map(opts_raw)
    se_type = _str(opts.get("type"))
    if se_type not in _SELINUX_TYPES:
        yield PssViolation(
            "seLinuxOptions",
            f"{base_path}.type",
            f"seLinuxOptions: {who} must not set securityContext.seLinuxOptions.type to {_q(se_type)}",
        )
    for field in ("user", "role"):
        if _str(opts.get(field)):
            yield PssViolation(
                "seLinuxOptions",
                f"{base_path}.{field}",
                f"seLinuxOptions: {who} must not set securityContext.seLinuxOptions.{field}",
            )


def _se_linux_options(pod: _Pod) -> Iterator[PssViolation]:
    yield from _selinux_violations(pod.psc.get("seLinuxOptions"), "spec.securityContext.seLinuxOptions", "pod")
    for c in pod.containers:
        yield from _selinux_violations(c.sc.get("seLinuxOptions"), f"{c.path}.securityContext.seLinuxOptions", c.label)


def _unmasked_proc_mounts(pod: _Pod, check: str) -> Iterator[PssViolation]:
    # Only an unset procMount or "Default" is allowed.
    for c in pod.containers:
        proc_mount = c.sc.get("procMount")
        if isinstance(proc_mount, str) and proc_mount != "Default":
            yield PssViolation(
                check,
                f"{c.path}.securityContext.procMount",
                f"procMount: {c.label} must not set securityContext.procMount to {_q(proc_mount)}",
            )


def _proc_mount(pod: _Pod) -> Iterator[PssViolation]:
    # check_procMount.go (baseline, 1.35+): pods in a user namespace may unmask /proc,
    # because root in the container is not root on the host.
    if pod.in_user_namespace:
        return
    yield from _unmasked_proc_mounts(pod, "procMount")


_SECCOMP_ALLOWED: Final = frozenset({"RuntimeDefault", "Localhost"})


def _seccomp_type(sc: Mapping[str, Any]) -> str | None:
    """Seccomp profile type: None if no profile is set, "" if it has no type."""
    profile = sc.get("seccompProfile")
    return _str(_map(profile).get("type")) if _is_map(profile) else None


def _seccomp_bad_msg(who: str, value: str) -> str:
    return f"seccompProfile: {who} must not set securityContext.seccompProfile.type to {_q(value)}"


def _seccomp_profile_baseline(pod: _Pod) -> Iterator[PssViolation]:
    # check_seccompProfile_baseline.go (1.19+): only the fields are checked; the
    # legacy seccomp annotations apply only to policy versions before 1.19.
    pod_type = _seccomp_type(pod.psc)
    if pod_type is not None and pod_type not in _SECCOMP_ALLOWED:
        yield PssViolation(
            "seccompProfile_baseline", "spec.securityContext.seccompProfile.type", _seccomp_bad_msg("pod", pod_type)
        )
    for c in pod.containers:
        c_type = _seccomp_type(c.sc)
        if c_type is not None and c_type not in _SECCOMP_ALLOWED:
            yield PssViolation(
                "seccompProfile_baseline",
                f"{c.path}.securityContext.seccompProfile.type",
                _seccomp_bad_msg(c.label, c_type),
            )


# check_sysctls.go: the "safe" namespaced sysctls allowed as of policy v1.37.
_SAFE_SYSCTLS: Final = frozenset(
    {
        # 1.0
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        # 1.27
        "net.ipv4.ip_local_reserved_ports",
        # 1.29
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        # 1.32
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        # 1.37 (kubernetes/kubernetes#138389)
        "net.ipv4.tcp_slow_start_after_idle",
        "net.ipv4.tcp_notsent_lowat",
    }
)


def _sysctls(pod: _Pod) -> Iterator[PssViolation]:
    for i, raw in enumerate(_list(pod.psc.get("sysctls"))):
        name = _str(_map(raw).get("name"))
        if name not in _SAFE_SYSCTLS:
            yield PssViolation(
                "sysctls",
                f"spec.securityContext.sysctls[{_key(name, i)}].name",
                f"forbidden sysctls: {_q(name)}",
            )


_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_LIFECYCLE_HANDLERS: Final = ("postStart", "preStop")
_HANDLER_ACTIONS: Final = ("httpGet", "tcpSocket")


def _host_probes_and_host_lifecycle(pod: _Pod) -> Iterator[PssViolation]:
    # check_hostProbesAndHostLifecycle.go (1.34+): probes and lifecycle hooks must not
    # target an explicit host (SSRF from the kubelet); any non-empty host is forbidden.
    for c in pod.containers:
        # Only the handlers a container has: most have none or one (this runs per container).
        lifecycle = _map(c.raw.get("lifecycle"))
        handlers = [(p, h) for p in _PROBES if _is_map(h := c.raw.get(p))]
        handlers += [(f"lifecycle.{p}", h) for p in _LIFECYCLE_HANDLERS if _is_map(h := lifecycle.get(p))]
        for handler_path, handler in handlers:
            for action in _HANDLER_ACTIONS:
                host = _str(_map(handler.get(action)).get("host"))
                if host:
                    yield PssViolation(
                        "hostProbesAndHostLifecycle",
                        f"{c.path}.{handler_path}.{action}.host",
                        f"probe or lifecycle host: {c.label} uses probe or lifecycle host {_q(host)}",
                    )


# --------------------------------------------------------------------------
# Restricted checks
# --------------------------------------------------------------------------

# check_restrictedVolumes.go: the volume sources allowed at restricted ("image" since 1.33).
_RESTRICTED_ALLOWED_VOLUME_SOURCES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def _restricted_volumes(pod: _Pod) -> Iterator[PssViolation]:
    # Fail closed: every non-null source key outside the allowlist is reported,
    # including unknown keys. A volume with no source at all is allowed, because
    # API defaulting turns it into an emptyDir.
    for path, name, v in _volumes(pod):
        for key, value in v.items():
            if key == "name" or value is None or key in _RESTRICTED_ALLOWED_VOLUME_SOURCES:
                continue
            yield PssViolation(
                "restrictedVolumes",
                f"{path}.{key}",
                f"restricted volume types: volume {name} uses restricted volume type {_q(str(key))}",
            )


def _allow_privilege_escalation(pod: _Pod) -> Iterator[PssViolation]:
    # check_allowPrivilegeEscalation.go: it must be explicitly false. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    for c in pod.containers:
        if c.sc.get("allowPrivilegeEscalation") is not False:
            yield PssViolation(
                "allowPrivilegeEscalation",
                f"{c.path}.securityContext.allowPrivilegeEscalation",
                f"allowPrivilegeEscalation != false: {c.label} must set "
                "securityContext.allowPrivilegeEscalation=false",
            )


def _run_as_non_root(pod: _Pod) -> Iterator[PssViolation]:
    # check_runAsNonRoot.go: true at pod level (inherited) or on every container; an
    # explicit false anywhere is forbidden. Relaxed for user-namespaced pods.
    if pod.in_user_namespace:
        return
    pod_value = pod.psc.get("runAsNonRoot")
    if pod_value is False:
        yield PssViolation(
            "runAsNonRoot",
            "spec.securityContext.runAsNonRoot",
            "runAsNonRoot != true: pod must not set securityContext.runAsNonRoot=false",
        )
    for c in pod.containers:
        value = c.sc.get("runAsNonRoot")
        if value is False:
            yield PssViolation(
                "runAsNonRoot",
                f"{c.path}.securityContext.runAsNonRoot",
                f"runAsNonRoot != true: {c.label} must not set securityContext.runAsNonRoot=false",
            )
        elif value is not True and pod_value is not True:
            yield PssViolation(
                "runAsNonRoot",
                f"{c.path}.securityContext.runAsNonRoot",
                f"runAsNonRoot != true: pod or {c.label} must set securityContext.runAsNonRoot=true",
            )


def _run_as_user(pod: _Pod) -> Iterator[PssViolation]:
    # check_runAsUser.go: an explicit 0 is forbidden. Relaxed for user-namespaced pods.
    if pod.in_user_namespace:
        return
    if _int(pod.psc.get("runAsUser")) == 0:
        yield PssViolation("runAsUser", "spec.securityContext.runAsUser", "runAsUser=0: pod must not set runAsUser=0")
    for c in pod.containers:
        if _int(c.sc.get("runAsUser")) == 0:
            yield PssViolation(
                "runAsUser",
                f"{c.path}.securityContext.runAsUser",
                f"runAsUser=0: {c.label} must not set runAsUser=0",
            )


def _seccomp_profile_restricted(pod: _Pod) -> Iterator[PssViolation]:
    # check_seccompProfile_restricted.go: a profile of RuntimeDefault or Localhost is required,
    # set at pod level (inherited) or on every container. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    pod_type = _seccomp_type(pod.psc)
    pod_ok = pod_type in _SECCOMP_ALLOWED
    if pod_type is not None and not pod_ok:
        yield PssViolation(
            "seccompProfile_restricted", "spec.securityContext.seccompProfile.type", _seccomp_bad_msg("pod", pod_type)
        )
    for c in pod.containers:
        c_type = _seccomp_type(c.sc)
        if c_type is not None:
            if c_type not in _SECCOMP_ALLOWED:
                yield PssViolation(
                    "seccompProfile_restricted",
                    f"{c.path}.securityContext.seccompProfile.type",
                    _seccomp_bad_msg(c.label, c_type),
                )
        elif not pod_ok:
            yield PssViolation(
                "seccompProfile_restricted",
                f"{c.path}.securityContext.seccompProfile.type",
                f"seccompProfile: pod or {c.label} must set securityContext.seccompProfile.type "
                'to "RuntimeDefault" or "Localhost"',
            )


def _capabilities_restricted(pod: _Pod) -> Iterator[PssViolation]:
    # check_capabilities_restricted.go: drop must include "ALL"; add may only contain
    # NET_BIND_SERVICE. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    for c in pod.containers:
        caps = _map(c.sc.get("capabilities"))
        if "ALL" not in [d for d in _list(caps.get("drop")) if isinstance(d, str)]:
            yield PssViolation(
                "capabilities_restricted",
                f"{c.path}.securityContext.capabilities.drop",
                f'unrestricted capabilities: {c.label} must set securityContext.capabilities.drop=["ALL"]',
            )
        bad = sorted({cap for cap in _added_capabilities(c) if cap != "NET_BIND_SERVICE"})
        if bad:
            yield PssViolation(
                "capabilities_restricted",
                f"{c.path}.securityContext.capabilities.add",
                f"unrestricted capabilities: {c.label} must not include "
                f"{', '.join(map(_q, bad))} in securityContext.capabilities.add",
            )


def _proc_mount_restricted(pod: _Pod) -> Iterator[PssViolation]:
    # check_procMount_restricted.go (1.35+): no user-namespace relaxation at restricted.
    yield from _unmasked_proc_mounts(pod, "procMount_restricted")


_CHECKS: Final[Mapping[str, _Check]] = MappingProxyType(
    {
        "windowsHostProcess": _windows_host_process,
        "hostNamespaces": _host_namespaces,
        "privileged": _privileged,
        "capabilities_baseline": _capabilities_baseline,
        "hostPathVolumes": _host_path_volumes,
        "hostPorts": _host_ports,
        "appArmorProfile": _app_armor_profile,
        "seLinuxOptions": _se_linux_options,
        "procMount": _proc_mount,
        "seccompProfile_baseline": _seccomp_profile_baseline,
        "sysctls": _sysctls,
        "hostProbesAndHostLifecycle": _host_probes_and_host_lifecycle,
        "restrictedVolumes": _restricted_volumes,
        "allowPrivilegeEscalation": _allow_privilege_escalation,
        "runAsNonRoot": _run_as_non_root,
        "runAsUser": _run_as_user,
        "seccompProfile_restricted": _seccomp_profile_restricted,
        "capabilities_restricted": _capabilities_restricted,
        "procMount_restricted": _proc_mount_restricted,
    }
)
if tuple(_CHECKS) != ALL_CHECKS:  # pragma: no cover - guards edits to the tables above
    raise RuntimeError("every check id needs exactly one implementation, in ALL_CHECKS order")


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def effective_checks(level: str, exempt: Iterable[str] = frozenset()) -> tuple[str, ...]:
    """Return the check ids that `check_pod_spec` runs for `level`, in order.

    Raises ValueError for an unknown level or an unknown check id in `exempt`.
    A silent typo would leave a check enforced that the caller meant to skip.
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}; expected 'baseline' or 'restricted'")
    if isinstance(exempt, str):
        # frozenset("sysctls") would be a set of letters.
        raise ValueError("exempt must be a collection of check ids, not a single string")
    skip = frozenset(exempt)
    unknown = skip.difference(ALL_CHECKS)
    if unknown:
        raise ValueError(f"unknown Pod Security check ids in exempt: {sorted(map(str, unknown))}")

    if level == "baseline":
        candidates = BASELINE_CHECKS
    else:
        # An active (non-exempt) restricted check replaces the baseline check it
        # overrides, as upstream does. An exempt one does not.
        replaced = {base for over, base in RESTRICTED_OVERRIDES.items() if over not in skip}
        candidates = tuple(c for c in ALL_CHECKS if c not in replaced)
    return tuple(c for c in candidates if c not in skip)


class PodSecurityEvaluator:
    """One pod's checks, each run at most once: a baseline and a restricted policy on
    the same request share the checks they have in common."""

    def __init__(self, metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        self._pod = _make_pod(metadata, spec)
        self._results: dict[str, list[PssViolation]] = {}

    def check(self, *, level: str, exempt: frozenset[str] = frozenset()) -> list[PssViolation]:
        violations: list[PssViolation] = []
        for check_id in _effective_checks_cached(level, frozenset(exempt)):
            found = self._results.get(check_id)
            if found is None:
                found = self._results[check_id] = list(_CHECKS[check_id](self._pod))
            violations.extend(found)
        return violations


@lru_cache(maxsize=256)
def _effective_checks_cached(level: str, exempt: frozenset[str]) -> tuple[str, ...]:
    return effective_checks(level, exempt)


def check_pod_spec(
    metadata: Mapping[str, Any],
    spec: Mapping[str, Any],
    *,
    level: str,
    exempt: frozenset[str] = frozenset(),
) -> list[PssViolation]:
    """Evaluate a pod against the Pod Security Standards `level` ("baseline" or "restricted").

    `metadata` and `spec` are the pod's ``metadata`` and ``spec`` as plain dicts. For a
    workload such as a Deployment, pass its pod template's metadata and spec. The
    result is empty when the pod is allowed. Otherwise it holds one violation per
    offending field, ordered by check (`effective_checks` order), then pod-level
    before container-level fields, then initContainers, containers, ephemeralContainers.
    """
    if isinstance(exempt, str):
        effective_checks(level, exempt)  # raises the clear error for a bare string
    return PodSecurityEvaluator(metadata, spec).check(level=level, exempt=frozenset(exempt))
