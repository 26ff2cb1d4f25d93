"""Resource rules: required requests/limits per container type, maxima, limit/request ratio."""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from webhook.core.jsonvalue import as_dict
from webhook.rules.containers import ContainerRef, ContainerType, iter_containers
from webhook.core.finding import Finding
from webhook.rules.quantity import parse_quantity

__all__ = ["Requirement", "check_resources", "resource_path"]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# A pod may hold any quantity Kubernetes accepts, e.g. "1e10000000": Python's default
# context (Emax 999999) raises Overflow on those, so arithmetic and display use this one.
_WIDE = decimal.Context(prec=34, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
# Beyond this many digits a value is shown as 1E+30, not spelt out.
_SPELT_OUT_DIGITS = 24


@dataclass(frozen=True)
class Requirement:
    requests: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()


def resource_path(base: str, kind: str, name: str) -> str:
    """`spec.containers[app].resources.limits.cpu`; names with '/' or '.' go in brackets."""
    return f"{base}.resources.{kind}.{name}" if _PLAIN_KEY.match(name) else f"{base}.resources.{kind}[{name}]"


def _fmt(value: Decimal) -> str:
    shown = value.normalize(_WIDE)
    if shown.adjusted() <= _SPELT_OUT_DIGITS and shown == shown.to_integral_value(context=_WIDE):
        return format(shown, "f")
    return str(shown)


def check_resources(spec: Mapping[str, Any], *, required: Mapping[ContainerType, Requirement],
                    maximum: Mapping[str, Decimal], max_ratio: Mapping[str, Decimal]) -> list[Finding]:
    """Findings per container in container order. Ephemeral containers are skipped:
    the API forbids resources on them."""
    findings: list[Finding] = []
    no_requirement = Requirement()
    for c in iter_containers(spec):
        if c.type == "ephemeralContainers":
            continue
        resources = as_dict(c.raw.get("resources"))
        declared_requests = _by_name(as_dict(resources.get("requests")))
        declared_limits = _by_name(as_dict(resources.get("limits")))
        requests = _quantities(c, "requests", declared_requests, findings)
        limits = _quantities(c, "limits", declared_limits, findings)
        need = required.get(c.type, no_requirement)
        for name in need.requests:
            # The API server defaults a missing request to the limit, so a limit satisfies it.
            if name not in declared_requests and name not in declared_limits:
                findings.append(Finding("requests", resource_path(c.path, "requests", name),
                                        f"{c.label} has no {name} request", c.name))
        for name in need.limits:
            if name not in declared_limits:
                findings.append(Finding("limits", resource_path(c.path, "limits", name),
                                        f"{c.label} has no {name} limit", c.name))
        if maximum and (requests or limits):
            findings.extend(_maxima(c.path, c.label, c.name, requests, limits, maximum))
        if max_ratio and requests and limits:
            findings.extend(_ratios(c.path, c.label, c.name, requests, limits, max_ratio))
    return findings


def _by_name(declared: dict[Any, Any]) -> Mapping[str, Any]:
    # JSON keys are strings already; a YAML pod (offline commands) may have others.
    return declared if all(k.__class__ is str for k in declared) else {str(k): v for k, v in declared.items()}


def _quantities(c: ContainerRef, kind: str, declared: Mapping[str, Any],
                findings: list[Finding]) -> dict[str, Decimal]:
    """The valid quantities of `declared`; each invalid one adds a finding."""
    parsed: dict[str, Decimal] = {}
    for name, raw in declared.items():
        try:
            parsed[name] = parse_quantity(raw)
        except ValueError:
            findings.append(Finding("invalidQuantity", resource_path(c.path, kind, name),
                                    f"{c.label} {kind[:-1]} {name}={raw!r} is not a valid quantity", c.name))
    return parsed


def _maxima(path: str, label: str, name: str, requests: Mapping[str, Decimal],
            limits: Mapping[str, Decimal], maximum: Mapping[str, Decimal]) -> Iterable[Finding]:
    for resource, cap in maximum.items():
        for kind, values in (("requests", requests), ("limits", limits)):
            value = values.get(resource)
            if value is not None and value > cap:
                yield Finding("maximum", resource_path(path, kind, resource),
                              f"{label} {kind[:-1]} {resource}={_fmt(value)} exceeds the maximum "
                              f"{_fmt(cap)}", name)


def _ratios(path: str, label: str, name: str, requests: Mapping[str, Decimal],
            limits: Mapping[str, Decimal], max_ratio: Mapping[str, Decimal]) -> Iterable[Finding]:
    for resource, cap in max_ratio.items():
        limit, request = limits.get(resource), requests.get(resource)
        if limit is None or request is None:
            continue  # a missing request defaults to the limit: ratio 1
        if request <= 0:
            if limit > 0:
                yield Finding("limitRequestRatio", resource_path(path, "limits", resource),
                              f"{label} {resource} request is 0, so its limit/request ratio is "
                              f"unbounded (maximum {_fmt(cap)})", name)
            continue
        ratio = _WIDE.divide(limit, request)
        if ratio > cap:
            yield Finding("limitRequestRatio", resource_path(path, "limits", resource),
                          f"{label} {resource} limit/request ratio {float(ratio):.3g} "
                          f"exceeds {_fmt(cap)}", name)
