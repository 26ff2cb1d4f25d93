"""The baseline level of the Pod Security Standards: upstream's ``Level: baseline``
checks (kubernetes/pod-security-admission, ``policy/check_*.go``), one function each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from webhook.core.finding import Finding
from webhook.core.jsonvalue import as_dict, as_int, as_list, as_str
from webhook.rules.pod_security.view import (
    SECCOMP_ALLOWED,
    PodView,
    added_capabilities,
    list_key,
    q,
    seccomp_bad_msg,
    seccomp_type,
    unmasked_proc_mounts,
    volumes,
)

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


def _windows_host_process(pod: PodView) -> Iterator[Finding]:
    # check_windowsHostProcess.go: hostProcess=true is forbidden at pod and container level.
    msg = "hostProcess: {} must not set securityContext.windowsOptions.hostProcess=true"
    if as_dict(pod.psc.get("windowsOptions")).get("hostProcess") is True:
        yield Finding(
            "windowsHostProcess", "spec.securityContext.windowsOptions.hostProcess", msg.format("pod")
        )
    for c in pod.containers:
        if as_dict(c.sc.get("windowsOptions")).get("hostProcess") is True:
            yield Finding(
                "windowsHostProcess", f"{c.path}.securityContext.windowsOptions.hostProcess", msg.format(c.label), c.name,
            )


def _host_namespaces(pod: PodView) -> Iterator[Finding]:
    # check_hostNamespaces.go
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.spec.get(field) is True:
            yield Finding("hostNamespaces", f"spec.{field}", f"host namespaces: {field}=true")


def _privileged(pod: PodView) -> Iterator[Finding]:
    # check_privileged.go
    for c in pod.containers:
        if c.sc.get("privileged") is True:
            yield Finding(
                "privileged",
                f"{c.path}.securityContext.privileged",
                f"privileged: {c.label} must not set securityContext.privileged=true",
                c.name,
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


def _capabilities_baseline(pod: PodView) -> Iterator[Finding]:
    for c in pod.containers:
        bad = sorted({cap for cap in added_capabilities(c) if cap not in _BASELINE_CAPABILITIES})
        if bad:
            yield Finding(
                "capabilities_baseline",
                f"{c.path}.securityContext.capabilities.add",
                f"non-default capabilities: {c.label} must not include "
                f"{', '.join(map(q, bad))} in securityContext.capabilities.add",
                c.name,
            )


def _host_path_volumes(pod: PodView) -> Iterator[Finding]:
    # check_hostPathVolumes.go
    for path, name, v in volumes(pod):
        if v.get("hostPath") is not None:
            yield Finding("hostPathVolumes", f"{path}.hostPath", f"hostPath volumes: volume {name}")


def _host_ports(pod: PodView) -> Iterator[Finding]:
    # check_hostPorts.go: any non-zero hostPort is forbidden.
    for c in pod.containers:
        for i, port in enumerate(as_list(c.raw.get("ports"))):
            host_port = as_int(as_dict(port).get("hostPort"))
            if host_port:
                yield Finding(
                    "hostPorts",
                    f"{c.path}.ports[{i}].hostPort",
                    f"hostPort: {c.label} uses hostPort {host_port}",
                    c.name,
                )


_APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_annotation_allowed(profile: str) -> bool:
    return profile in ("", "runtime/default") or profile.startswith("localhost/")


def _app_armor_profile(pod: PodView) -> Iterator[Finding]:
    # check_appArmorProfile.go: the legacy per-container annotations (every key with
    # the prefix, even for a container that does not exist) and the
    # securityContext.appArmorProfile field (only "Unconfined" is forbidden).
    annotations = as_dict(pod.metadata.get("annotations"))
    for key in sorted(k for k in annotations if isinstance(k, str)):
        value = as_str(annotations[key])
        if key.startswith(_APPARMOR_ANNOTATION_PREFIX) and not _apparmor_annotation_allowed(value):
            yield Finding(
                "appArmorProfile",
                f"metadata.annotations[{key}]",
                f"forbidden AppArmor profile: annotation {key}={q(value)}",
            )
    msg = 'forbidden AppArmor profile: {} must not set AppArmor profile type to "Unconfined"'
    if as_dict(pod.psc.get("appArmorProfile")).get("type") == "Unconfined":
        yield Finding("appArmorProfile", "spec.securityContext.appArmorProfile.type", msg.format("pod"))
    for c in pod.containers:
        if as_dict(c.sc.get("appArmorProfile")).get("type") == "Unconfined":
            yield Finding(
                "appArmorProfile", f"{c.path}.securityContext.appArmorProfile.type", msg.format(c.label), c.name,
            )


# check_seLinuxOptions.go, v1.31+ list (container_engine_t added in 1.31).
_SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})


def _selinux_violations(opts_raw: Any, base_path: str, who: str, container: str = "") -> Iterator[Finding]:
    if not isinstance(opts_raw, dict):
        return
    opts = as_dict(opts_raw)
    se_type = as_str(opts.get("type"))
    if se_type not in _SELINUX_TYPES:
        yield Finding(
            "seLinuxOptions",
            f"{base_path}.type",
            f"seLinuxOptions: {who} must not set securityContext.seLinuxOptions.type to {q(se_type)}",
            container,
        )
    for field in ("user", "role"):
        if as_str(opts.get(field)):
            yield Finding(
                "seLinuxOptions",
                f"{base_path}.{field}",
                f"seLinuxOptions: {who} must not set securityContext.seLinuxOptions.{field}",
                container,
            )


def _se_linux_options(pod: PodView) -> Iterator[Finding]:
    yield from _selinux_violations(pod.psc.get("seLinuxOptions"), "spec.securityContext.seLinuxOptions", "pod")
    for c in pod.containers:
        yield from _selinux_violations(c.sc.get("seLinuxOptions"), f"{c.path}.securityContext.seLinuxOptions", c.label,
                                       c.name)


def _proc_mount(pod: PodView) -> Iterator[Finding]:
    # check_procMount.go (baseline, 1.35+): pods in a user namespace may unmask /proc,
    # because root in the container is not root on the host.
    if pod.in_user_namespace:
        return
    yield from unmasked_proc_mounts(pod, "procMount")


def _seccomp_profile_baseline(pod: PodView) -> Iterator[Finding]:
    # check_seccompProfile_baseline.go (1.19+): only the fields are checked; the
    # legacy seccomp annotations apply only to policy versions before 1.19.
    pod_type = seccomp_type(pod.psc)
    if pod_type is not None and pod_type not in SECCOMP_ALLOWED:
        yield Finding(
            "seccompProfile_baseline", "spec.securityContext.seccompProfile.type", seccomp_bad_msg("pod", pod_type)
        )
    for c in pod.containers:
        c_type = seccomp_type(c.sc)
        if c_type is not None and c_type not in SECCOMP_ALLOWED:
            yield Finding(
                "seccompProfile_baseline",
                f"{c.path}.securityContext.seccompProfile.type",
                seccomp_bad_msg(c.label, c_type), c.name,
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


def _sysctls(pod: PodView) -> Iterator[Finding]:
    for i, raw in enumerate(as_list(pod.psc.get("sysctls"))):
        name = as_str(as_dict(raw).get("name"))
        if name not in _SAFE_SYSCTLS:
            yield Finding(
                "sysctls",
                f"spec.securityContext.sysctls[{list_key(name, i)}].name",
                f"forbidden sysctls: {q(name)}",
            )


_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")


_LIFECYCLE_HANDLERS: Final = ("postStart", "preStop")


_HANDLER_ACTIONS: Final = ("httpGet", "tcpSocket")


def _host_probes_and_host_lifecycle(pod: PodView) -> Iterator[Finding]:
    # check_hostProbesAndHostLifecycle.go (1.34+): probes and lifecycle hooks must not
    # target an explicit host (SSRF from the kubelet); any non-empty host is forbidden.
    for c in pod.containers:
        # Only the handlers a container has: most have none or one (this runs per container).
        lifecycle = as_dict(c.raw.get("lifecycle"))
        handlers = [(p, h) for p in _PROBES if isinstance(h := c.raw.get(p), dict)]
        handlers += [(f"lifecycle.{p}", h) for p in _LIFECYCLE_HANDLERS if isinstance(h := lifecycle.get(p), dict)]
        for handler_path, handler in handlers:
            for action in _HANDLER_ACTIONS:
                host = as_str(as_dict(handler.get(action)).get("host"))
                if host:
                    yield Finding(
                        "hostProbesAndHostLifecycle",
                        f"{c.path}.{handler_path}.{action}.host",
                        f"probe or lifecycle host: {c.label} uses probe or lifecycle host {q(host)}",
                        c.name,
                    )


BASELINE: Final[Mapping[str, Callable[[PodView], Iterator[Finding]]]] = MappingProxyType({
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
})
