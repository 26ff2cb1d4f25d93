"""The restricted level of the Pod Security Standards: upstream's ``Level: restricted``
checks, which run on top of baseline (see the package's docstring for the overrides and
the Windows and user-namespace carve-outs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from webhook.core.finding import Finding
from webhook.core.jsonvalue import as_dict, as_int, as_list
from webhook.rules.pod_security.view import (
    SECCOMP_ALLOWED,
    PodView,
    added_capabilities,
    q,
    seccomp_bad_msg,
    seccomp_type,
    unmasked_proc_mounts,
    volumes,
)

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


RESTRICTED_OVERRIDES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "capabilities_restricted": "capabilities_baseline",
        "seccompProfile_restricted": "seccompProfile_baseline",
        "procMount_restricted": "procMount",
    }
)
"""restricted check id -> the baseline check id it replaces at restricted level."""


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


def _restricted_volumes(pod: PodView) -> Iterator[Finding]:
    # Fail closed: every non-null source key outside the allowlist is reported,
    # including unknown keys. A volume with no source at all is allowed, because
    # API defaulting turns it into an emptyDir.
    for path, name, v in volumes(pod):
        for key, value in v.items():
            if key == "name" or value is None or key in _RESTRICTED_ALLOWED_VOLUME_SOURCES:
                continue
            yield Finding(
                "restrictedVolumes",
                f"{path}.{key}",
                f"restricted volume types: volume {name} uses restricted volume type {q(str(key))}",
            )


def _allow_privilege_escalation(pod: PodView) -> Iterator[Finding]:
    # check_allowPrivilegeEscalation.go: it must be explicitly false. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    for c in pod.containers:
        if c.sc.get("allowPrivilegeEscalation") is not False:
            yield Finding(
                "allowPrivilegeEscalation",
                f"{c.path}.securityContext.allowPrivilegeEscalation",
                f"allowPrivilegeEscalation != false: {c.label} must set "
                "securityContext.allowPrivilegeEscalation=false", c.name,
            )


def _run_as_non_root(pod: PodView) -> Iterator[Finding]:
    # check_runAsNonRoot.go: true at pod level (inherited) or on every container; an
    # explicit false anywhere is forbidden. Relaxed for user-namespaced pods.
    if pod.in_user_namespace:
        return
    pod_value = pod.psc.get("runAsNonRoot")
    if pod_value is False:
        yield Finding(
            "runAsNonRoot",
            "spec.securityContext.runAsNonRoot",
            "runAsNonRoot != true: pod must not set securityContext.runAsNonRoot=false",
        )
    for c in pod.containers:
        value = c.sc.get("runAsNonRoot")
        if value is False:
            yield Finding(
                "runAsNonRoot",
                f"{c.path}.securityContext.runAsNonRoot",
                f"runAsNonRoot != true: {c.label} must not set securityContext.runAsNonRoot=false",
                c.name,
            )
        elif value is not True and pod_value is not True:
            yield Finding(
                "runAsNonRoot",
                f"{c.path}.securityContext.runAsNonRoot",
                f"runAsNonRoot != true: pod or {c.label} must set securityContext.runAsNonRoot=true",
                c.name,
            )


def _run_as_user(pod: PodView) -> Iterator[Finding]:
    # check_runAsUser.go: an explicit 0 is forbidden. Relaxed for user-namespaced pods.
    if pod.in_user_namespace:
        return
    if as_int(pod.psc.get("runAsUser")) == 0:
        yield Finding("runAsUser", "spec.securityContext.runAsUser", "runAsUser=0: pod must not set runAsUser=0")
    for c in pod.containers:
        if as_int(c.sc.get("runAsUser")) == 0:
            yield Finding(
                "runAsUser",
                f"{c.path}.securityContext.runAsUser",
                f"runAsUser=0: {c.label} must not set runAsUser=0",
                c.name,
            )


def _seccomp_profile_restricted(pod: PodView) -> Iterator[Finding]:
    # check_seccompProfile_restricted.go: a profile of RuntimeDefault or Localhost is required,
    # set at pod level (inherited) or on every container. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    pod_type = seccomp_type(pod.psc)
    pod_ok = pod_type in SECCOMP_ALLOWED
    if pod_type is not None and not pod_ok:
        yield Finding(
            "seccompProfile_restricted", "spec.securityContext.seccompProfile.type", seccomp_bad_msg("pod", pod_type)
        )
    for c in pod.containers:
        c_type = seccomp_type(c.sc)
        if c_type is not None:
            if c_type not in SECCOMP_ALLOWED:
                yield Finding(
                    "seccompProfile_restricted",
                    f"{c.path}.securityContext.seccompProfile.type",
                    seccomp_bad_msg(c.label, c_type), c.name,
                )
        elif not pod_ok:
            yield Finding(
                "seccompProfile_restricted",
                f"{c.path}.securityContext.seccompProfile.type",
                f"seccompProfile: pod or {c.label} must set securityContext.seccompProfile.type "
                'to "RuntimeDefault" or "Localhost"', c.name,
            )


def _capabilities_restricted(pod: PodView) -> Iterator[Finding]:
    # check_capabilities_restricted.go: drop must include "ALL"; add may only contain
    # NET_BIND_SERVICE. Windows pods are exempt (1.25+).
    if pod.is_windows:
        return
    for c in pod.containers:
        caps = as_dict(c.sc.get("capabilities"))
        if "ALL" not in [d for d in as_list(caps.get("drop")) if isinstance(d, str)]:
            yield Finding(
                "capabilities_restricted",
                f"{c.path}.securityContext.capabilities.drop",
                f'unrestricted capabilities: {c.label} must set securityContext.capabilities.drop=["ALL"]', c.name,
            )
        bad = sorted({cap for cap in added_capabilities(c) if cap != "NET_BIND_SERVICE"})
        if bad:
            yield Finding(
                "capabilities_restricted",
                f"{c.path}.securityContext.capabilities.add",
                f"unrestricted capabilities: {c.label} must not include "
                f"{', '.join(map(q, bad))} in securityContext.capabilities.add",
                c.name,
            )


def _proc_mount_restricted(pod: PodView) -> Iterator[Finding]:
    # check_procMount_restricted.go (1.35+): no user-namespace relaxation at restricted.
    yield from unmasked_proc_mounts(pod, "procMount_restricted")


RESTRICTED: Final[Mapping[str, Callable[[PodView], Iterator[Finding]]]] = MappingProxyType({
    "restrictedVolumes": _restricted_volumes,
    "allowPrivilegeEscalation": _allow_privilege_escalation,
    "runAsNonRoot": _run_as_non_root,
    "runAsUser": _run_as_user,
    "seccompProfile_restricted": _seccomp_profile_restricted,
    "capabilities_restricted": _capabilities_restricted,
    "procMount_restricted": _proc_mount_restricted,
})
