"""Kubernetes Pod Security Standards (PSS), policy version v1.37, as pure Python.

This package re-implements the ``baseline`` and ``restricted`` levels of the
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
this package never raises on odd pod input. A real API server decodes objects
into typed structs before admission, so wrongly-typed values cannot reach a
webhook in practice. Two exceptions fail closed: any non-null volume source
counts as "set", and a container entry that is not an object is checked as an
empty container (the rule of `webhook.rules.containers`; the engine denies such a
pod before any check runs).

Layout: `baseline` and `restricted` hold each level's checks, `view` the pod as the
checks read it; this module the check lists and the public functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

from webhook.core.finding import Finding
from webhook.rules.pod_security.baseline import BASELINE, BASELINE_CHECKS
from webhook.rules.pod_security.restricted import RESTRICTED, RESTRICTED_CHECKS, RESTRICTED_OVERRIDES
from webhook.rules.pod_security.view import PodView, make_pod

__all__ = [
    "ALL_CHECKS",
    "BASELINE_CHECKS",
    "PSS_VERSION",
    "RESTRICTED_CHECKS",
    "RESTRICTED_OVERRIDES",
    "PodSecurityEvaluator",
    "check_pod_spec",
    "effective_checks",
]

PSS_VERSION: Final[str] = "v1.37"

ALL_CHECKS: Final[tuple[str, ...]] = BASELINE_CHECKS + RESTRICTED_CHECKS

_LEVELS: Final = frozenset({"baseline", "restricted"})

_CHECKS: Final[Mapping[str, Callable[[PodView], Iterator[Finding]]]] = MappingProxyType({**BASELINE, **RESTRICTED})
if tuple(_CHECKS) != ALL_CHECKS:  # pragma: no cover - guards edits to the tables
    raise RuntimeError("every check id needs exactly one implementation, in ALL_CHECKS order")


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
        self._pod = make_pod(metadata, spec)
        self._results: dict[str, list[Finding]] = {}

    def check(self, *, level: str, exempt: frozenset[str] = frozenset()) -> list[Finding]:
        violations: list[Finding] = []
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
) -> list[Finding]:
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
