"""A policy's namespace globs, compiled once per list, select exactly what fnmatchcase
selects glob by glob; the first matching exclude glob is the one named."""

from __future__ import annotations

from fnmatch import fnmatchcase
from itertools import product

import pytest

from webhook.policy.common import Match, NamespaceMatch, Workload

GLOBS = [["kube-system"], ["kube-*", "webhook-system"], ["team-?", "[a-c]*"], ["a.b", "x|y"], ["*"],
         ["pay-[!0-9]*", "pay-1*"], ["(x)", "^y$"], []]
NAMESPACES = ["kube-system", "kube-node-lease", "default", "team-a", "team-ab", "b", "a.b", "axb", "x|y", "x",
              "pay-1", "pay-x", "pay-", "(x)", "^y$", "y", "", "KUBE-SYSTEM"]


@pytest.mark.parametrize(("globs", "namespace"), list(product(GLOBS, NAMESPACES)))
def test_compiled_globs_match_as_fnmatchcase(globs: list[str], namespace: str) -> None:
    first = next((g for g in globs if fnmatchcase(namespace, g)), None)
    match = NamespaceMatch(include=globs, exclude=globs)
    assert match.excluded_by(namespace) == first
    assert match.includes(namespace) == (not globs or first is not None)


def test_workloads_select_a_profile_or_an_owner_kind() -> None:
    match = Match(workloads=["Service", "PyTorchJob", "Job"])
    assert match.selects_workload(Workload.SERVICE, "Deployment")
    assert match.selects_workload(Workload.TRAINING, "PyTorchJob")
    assert match.selects_workload(Workload.JOB, "Job")
    assert not match.selects_workload(Workload.TRAINING, "RayJob")
    assert not match.selects_workload(Workload.CRON_JOB, "Deployment")   # Deployment is no entry here
    assert match == Match(workloads=["Service", "PyTorchJob", "Job"])    # the cache is not part of equality
