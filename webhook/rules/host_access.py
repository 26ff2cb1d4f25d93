"""Host access rules, each usable on its own: host namespaces, privileged
containers, host ports and hostPath volumes (with allowed path prefixes)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.jsonvalue import as_dict, as_list, as_str
from webhook.rules.containers import iter_containers
from webhook.core.finding import Finding

__all__ = ["HostPathAllowance", "check_host_namespace", "check_host_paths", "check_host_ports",
           "check_privileged"]

HostNamespace = Literal["hostNetwork", "hostPID", "hostIPC"]
_NAMESPACE_WORDS = {"hostNetwork": "the host's network", "hostPID": "the host's process IDs",
                    "hostIPC": "the host's IPC namespace"}


def check_host_namespace(spec: Mapping[str, Any], field: HostNamespace) -> list[Finding]:
    if spec.get(field) is True:
        return [Finding(field, f"spec.{field}", f"pod must not use {_NAMESPACE_WORDS[field]} ({field}: true)")]
    return []


def check_privileged(spec: Mapping[str, Any]) -> list[Finding]:
    return [Finding("privileged", f"{c.path}.securityContext.privileged",
                    f"{c.label} must not be privileged", c.name)
            for c in iter_containers(spec)
            if as_dict(c.raw.get("securityContext")).get("privileged") is True]


def check_host_ports(spec: Mapping[str, Any], *, allowed: Sequence[tuple[int, int]] = ()) -> list[Finding]:
    """Every non-zero hostPort outside the allowed inclusive ranges.

    With hostNetwork every containerPort is a host port: the API server defaults an unset
    hostPort to it in a pod, but not in a controller's pod template, whose pods would
    then all be denied after the controller was admitted; so it is read that way here."""
    findings: list[Finding] = []
    host_network = spec.get("hostNetwork") is True
    for c in iter_containers(spec):
        for index, port in enumerate(as_list(c.raw.get("ports"))):
            host_port = as_dict(port).get("hostPort")
            if host_network and host_port in (None, 0):
                host_port = as_dict(port).get("containerPort")
            if not isinstance(host_port, int) or isinstance(host_port, bool) or host_port == 0:
                continue
            if any(low <= host_port <= high for low, high in allowed):
                continue
            name = as_str(as_dict(port).get("name"))
            findings.append(Finding("hostPort", f"{c.path}.ports[{name or index}].hostPort",
                                    f"{c.label} must not use host port {host_port}", c.name))
    return findings


@dataclass(frozen=True)
class HostPathAllowance:
    path_prefix: str        # whole path components: /var/log allows /var/log/app, not /var/logs
    read_only: bool = False  # every mount of such a volume must be readOnly


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _allowance_for(path: str, allowed: Sequence[HostPathAllowance]) -> HostPathAllowance | None:
    """The allowance with the longest prefix holding `path`, so that the most specific entry
    decides whatever the list order (`/var/log` writable, `/var/log/audit` read-only); among
    equal prefixes a read-only one wins. None when no prefix holds it."""
    if not path.startswith("/"):
        return None
    matching = [a for a in allowed if _under(path, a.path_prefix)]
    if not matching:
        return None
    return max(matching, key=lambda a: (len(a.path_prefix.rstrip("/")), a.read_only))


def check_host_paths(spec: Mapping[str, Any], *,
                     allowed: Sequence[HostPathAllowance] = ()) -> list[Finding]:
    """hostPath volumes outside the allowed prefixes, and writable mounts of read-only ones."""
    findings: list[Finding] = []
    for index, volume in enumerate(as_list(spec.get("volumes"))):
        volume = as_dict(volume)
        if "hostPath" not in volume or volume.get("hostPath") is None:
            continue
        name = as_str(volume.get("name"))
        raw_path = as_str(as_dict(volume.get("hostPath")).get("path"))
        # Normalise so that /var/log/../../etc cannot pass as /var/log. normpath keeps a
        # leading "//" (POSIX leaves its meaning to the system; on Linux it is "/").
        path = posixpath.normpath(raw_path) if raw_path else ""
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        vpath = f"spec.volumes[{name or index}].hostPath"
        allowance = _allowance_for(path, allowed)
        if allowance is None:
            findings.append(Finding("hostPath", vpath, f'volume "{name or index}" must not mount host path '
                                    f'"{raw_path}"' + (" (not under an allowed prefix)" if allowed else "")))
            continue
        if allowance.read_only and name:
            for c in iter_containers(spec):
                for m_index, mount in enumerate(as_list(c.raw.get("volumeMounts"))):
                    mount = as_dict(mount)
                    if mount.get("name") == name and mount.get("readOnly") is not True:
                        findings.append(Finding(
                            "hostPathReadOnly", f"{c.path}.volumeMounts[{m_index}].readOnly",
                            f'{c.label} must mount host path volume "{name}" read-only', c.name))
    return findings
