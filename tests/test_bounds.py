"""Bounded work per request, in the engine (no HTTP): containers per pod, the size of what
injection adds, values copied from the pod into injected fields, quantities rendered from
templates, and the request's deadline."""

from __future__ import annotations

import gc
import time
from typing import Any

import orjson
import pytest

from tests.engine_helpers import SHIPPED, policies_from_yaml, run
from webhook.engine import mutate, validate
from webhook.engine.bounds import DEFAULT_LIMITS, DeadlineExceeded, Limits
from webhook.engine.inject import inject
from webhook.policy.loader import PolicySet
from webhook.admission.review import response_fields
from webhook.core.request import AdmissionRequest

_GVR = {"Pod": ("", "pods"), "Deployment": ("apps", "deployments"), "CronJob": ("batch", "cronjobs")}


def _request(obj: dict[str, Any], *, kind: str = "Pod", operation: str = "CREATE",
             old: dict[str, Any] | None = None) -> AdmissionRequest:
    group, resource = _GVR[kind]
    return AdmissionRequest.from_dict({
        "uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "namespace": "default", "operation": operation, "object": obj, "oldObject": old})


def _containers(n: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i}", "image": "registry.example.com/app:1.0"} for i in range(n)]


def _pod(spec: dict[str, Any], *, labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": labels or {"app": "web"},
                         "annotations": annotations or {}},
            "spec": spec}


def _template(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": spec}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "web"},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}


# --- containers per pod -------------------------------------------------------------------------

FIVE = Limits(max_containers=5)
SPLITS = [  # (initContainers, containers, ephemeralContainers): every kind counts
    (0, 6, 0), (2, 4, 0), (1, 1, 4), (3, 3, 0),
]


@pytest.mark.parametrize("split", SPLITS, ids=[f"{i}i-{c}c-{e}e" for i, c, e in SPLITS])
@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_more_containers_than_the_limit_is_denied_before_evaluation(split: tuple[int, int, int],
                                                                    kind: str) -> None:
    init, app, ephemeral = split
    spec = {"initContainers": _containers(init, "i"), "containers": _containers(app),
            "ephemeralContainers": _containers(ephemeral, "e")}
    obj = _pod(spec) if kind == "Pod" else _template(spec, kind)
    checks = [validate(_request(obj, kind=kind), SHIPPED, limits=FIVE)]
    if kind == "Pod":
        checks.append(mutate(_request(obj), SHIPPED, limits=FIVE))
    for decision in checks:
        assert not decision.allowed and decision.code == 403
        assert decision.message is not None and "has 6 containers" in decision.message
        assert "at most 5" in decision.message
        assert decision.patch is None and not decision.violations  # no rule ran
    if kind != "Pod":
        assert "pod template" in checks[0].message


@pytest.mark.parametrize("kind", ["Pod", "Deployment"])
def test_the_limit_itself_is_admitted(kind: str) -> None:
    spec = {"initContainers": _containers(2, "i"), "containers": _containers(3)}
    obj = _pod(spec) if kind == "Pod" else _template(spec, kind)
    assert "containers" not in (validate(_request(obj, kind=kind), SHIPPED, limits=FIVE).message or "")
    if kind == "Pod":
        assert mutate(_request(obj), SHIPPED, limits=FIVE).patch


def test_the_default_limit_is_far_above_real_pods_and_stops_huge_ones() -> None:
    assert DEFAULT_LIMITS.max_containers == 1000
    huge = _pod({"containers": _containers(200_000)})
    started = time.process_time()
    for decision in (mutate(_request(huge), SHIPPED), validate(_request(huge), SHIPPED)):
        assert not decision.allowed and "has 200000 containers" in (decision.message or "")
    assert time.process_time() - started < 0.5  # counted, not evaluated
    result = run(_pod({"containers": _containers(60)}))  # a large real pod is injected as ever
    assert result.denial is None and result.applied == ("identity", "traffic-proxy", "log-shipper")


def test_an_update_leaving_an_over_limit_object_unchanged_is_still_admitted() -> None:
    """An object admitted before (under a higher limit) must still take metadata edits,
    such as a finalizer's removal, or it could never be deleted."""
    old = _pod({"containers": _containers(8)})
    new = {**old, "metadata": {**old["metadata"], "finalizers": []}}
    assert validate(_request(new, operation="UPDATE", old=old), SHIPPED, limits=FIVE).allowed
    changed = {**old, "spec": {"containers": _containers(9)}}
    assert not validate(_request(changed, operation="UPDATE", old=old), SHIPPED, limits=FIVE).allowed


def test_the_serve_options_default_to_the_engines_bounds() -> None:
    from webhook.cli import main as cli

    defaults = {o.flag: o.type(o.default) for o in cli.SERVE_OPTIONS}
    assert defaults["--max-containers"] == DEFAULT_LIMITS.max_containers
    assert defaults["--max-object-bytes"] == DEFAULT_LIMITS.max_object_bytes == 3 * 1024 * 1024
    assert defaults["--max-copied-value"] == DEFAULT_LIMITS.max_copied_value


# --- the size of the answer and of the pod it produces --------------------------------------------

def test_a_pod_that_injection_would_grow_past_the_limit_is_denied_before_the_patch_is_built() -> None:
    pod = _pod({"containers": _containers(400)})
    allowed = mutate(_request(pod), SHIPPED)
    assert allowed.patch, "400 containers fit the default limit"
    patch_bytes = len(orjson.dumps(allowed.patch))
    small = Limits(max_object_bytes=patch_bytes // 2)
    denied = mutate(_request(pod), SHIPPED, limits=small)
    assert not denied.allowed and denied.patch is None
    assert "injection would add about" in (denied.message or "")
    assert f"over the {patch_bytes // 2} byte limit" in (denied.message or "")


def test_the_pods_own_size_counts_with_what_injection_adds() -> None:
    pod = _pod({"containers": _containers(300)},
               annotations={"notes": "x" * 600_000})  # large, but injection adds less than that
    added = len(orjson.dumps(mutate(_request(pod), SHIPPED).patch))
    own = len(orjson.dumps(pod))
    assert added < own
    limit = own + added // 2
    denied = mutate(_request(pod), SHIPPED, limits=Limits(max_object_bytes=limit))
    assert not denied.allowed
    assert "after injection the pod would be about" in (denied.message or "")
    assert mutate(_request(pod), SHIPPED, limits=Limits(max_object_bytes=own + 2 * added)).patch


def test_the_estimate_is_close_to_the_patch_it_stands_for() -> None:
    """The estimate counts each addition with a patch operation's overhead: at least the
    patch, and not wildly more, or the limit would deny pods that fit."""
    pod = _pod({"containers": _containers(400)})
    patch_bytes = len(orjson.dumps(mutate(_request(pod), SHIPPED).patch))
    fits = mutate(_request(pod), SHIPPED, limits=Limits(max_object_bytes=2 * patch_bytes))
    assert fits.patch
    too_small = mutate(_request(pod), SHIPPED, limits=Limits(max_object_bytes=patch_bytes))
    assert not too_small.allowed


def test_the_hostile_label_is_a_small_clear_denial() -> None:
    """A 0.11 MiB review whose 100,000-character label a template copies into 600 containers."""
    pod = _pod({"containers": _containers(600)}, labels={"app": "a" * 100_000})
    started = time.process_time()
    decision = mutate(_request(pod), SHIPPED)
    assert time.process_time() - started < 0.2
    assert not decision.allowed and decision.patch is None
    message = decision.message or ""
    assert "policy identity" in message and "metadata.labels['app']" in message
    assert "100000 characters" in message and "not a valid label value" in message
    assert len(orjson.dumps(response_fields(decision, mutating=True))) < 2048


def test_warnings_that_quote_the_pod_are_bounded() -> None:
    annotations = {f"runtime.platform.io/inject-typo{i}-" + "x" * 300: "maybe" * 100 for i in range(50)}
    decision = mutate(_request(_pod({"containers": _containers(1)}, annotations=annotations)), SHIPPED)
    assert decision.warnings
    assert all(len(w) <= 256 for w in decision.warnings)
    assert sum(len(w) for w in decision.warnings) <= 3072
    assert decision.warnings[-1].startswith("… and ") and decision.warnings[-1].endswith("more warnings")


# --- values copied from the pod, and quantities rendered from templates --------------------------

def _policy(inject: str, *, mode: str = "Enforce") -> PolicySet:
    return policies_from_yaml(f"""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {{name: copier}}
        spec:
          mode: {mode}
          inject:
{inject}
        """)


ENV_FROM_LABEL = """
            env:
              - name: TEAM
                value: "{{ labels['team'] | 'none' }}"
"""
ENV_FROM_ANNOTATION = """
            env:
              - name: NOTE
                value: "{{ annotations['example.com/note'] }}"
"""
SIDECAR = """
            sidecars:
              - name: helper
                image: registry.example.com/helper:1.0
                resources:
                  requests: {{memory: "{request}"}}
                  limits: {{memory: "{limit}"}}
"""
VOLUME = """
            volumes:
              - name: scratch
                source: {{emptyDir: {{sizeLimit: "{size}"}}}}
"""
MEMORY = "{{ annotations['example.com/memory'] | '64Mi' }}"

RENDERED_CASES = [
    # (policy inject stanza, labels, annotations, None if admitted else words the denial holds)
    ("label fits", ENV_FROM_LABEL, {"team": "payments"}, {}, None),
    ("label absent: the literal", ENV_FROM_LABEL, {}, {}, None),
    ("label too long", ENV_FROM_LABEL, {"team": "p" * 70}, {},
     ["policy copier", "env 'TEAM' value", "pod label 'team' (metadata.labels['team'])", "70 characters"]),
    ("label not a label value", ENV_FROM_LABEL, {"team": "pay ments"}, {},
     ["env 'TEAM'", "metadata.labels['team']", "not a valid label value"]),
    ("annotation at the bound", ENV_FROM_ANNOTATION, {}, {"example.com/note": "n" * 1024}, None),
    ("annotation over the bound", ENV_FROM_ANNOTATION, {}, {"example.com/note": "n" * 1025},
     ["env 'NOTE' value", "pod annotation 'example.com/note' (metadata.annotations['example.com/note'])",
      "is 1025 characters", "at most 1024"]),
    ("quantity from annotation", SIDECAR.format(request=MEMORY, limit="256Mi"), {},
     {"example.com/memory": "128Mi"}, None),
    ("quantity default", SIDECAR.format(request=MEMORY, limit="256Mi"), {}, {}, None),
    ("quantity that does not parse", SIDECAR.format(request=MEMORY, limit="256Mi"), {},
     {"example.com/memory": "lots"},
     ["container 'helper'", "resources.requests.memory rendered to 'lots'",
      "from pod annotation 'example.com/memory'", "not a quantity"]),
    ("request over limit", SIDECAR.format(request=MEMORY, limit="256Mi"), {},
     {"example.com/memory": "1Gi"},
     ["container 'helper'", "resources.requests.memory ('1Gi') is over resources.limits.memory ('256Mi')",
      "from pod annotation 'example.com/memory'"]),
    ("sizeLimit that does not parse", VOLUME.format(size="{{ annotations['example.com/size'] | '1Gi' }}"), {},
     {"example.com/size": "big"}, ["volume 'scratch'", "emptyDir.sizeLimit rendered to 'big'", "not a quantity"]),
    ("sizeLimit from annotation", VOLUME.format(size="{{ annotations['example.com/size'] | '1Gi' }}"), {},
     {"example.com/size": "2Gi"}, None),
]


@pytest.mark.parametrize("case", RENDERED_CASES, ids=[c[0] for c in RENDERED_CASES])
def test_rendered_values_are_checked_before_they_are_emitted(case: tuple) -> None:
    _, stanza, labels, annotations, denial = case
    pod = _pod({"containers": _containers(2)}, labels=labels, annotations=annotations)
    result = run(pod, policies=_policy(stanza))
    if denial is None:
        assert result.denial is None and result.patch
    else:
        assert result.denial is not None, result.patch
        for words in denial:
            assert words in result.denial
        assert len(result.denial) < 1024


def test_a_shadow_policy_with_a_bad_value_warns_instead_of_denying() -> None:
    pod = _pod({"containers": _containers(1)}, labels={"team": "p" * 100})
    result = run(pod, policies=_policy(ENV_FROM_LABEL, mode="Shadow"))
    assert result.denial is None
    assert any("shadow policy copier would deny" in w and "metadata.labels['team']" in w for w in result.warnings)


def test_the_copied_value_bound_is_configurable() -> None:
    pod = _pod({"containers": _containers(1)}, annotations={"example.com/note": "n" * 40})
    policies = _policy(ENV_FROM_ANNOTATION)
    assert inject(pod, namespace="default", policies=policies).denial is None
    denied = inject(pod, namespace="default", policies=policies, limits=Limits(max_copied_value=32))
    assert denied.denial is not None and "at most 32" in denied.denial


def test_a_value_used_unescaped_where_the_kubelet_expands_it_is_bounded_before_escaping() -> None:
    """`$` is doubled where the kubelet expands `$(VAR)`; the bound is on the pod's own text."""
    pod = _pod({"containers": _containers(1)}, annotations={"example.com/note": "$" * 1024})
    result = run(pod, policies=_policy(ENV_FROM_ANNOTATION))
    assert result.denial is None
    assert result.pod["spec"]["containers"][0]["env"][0]["value"] == "$" * 2048


# --- the deadline ---------------------------------------------------------------------------------

def test_a_deadline_already_passed_stops_the_engine() -> None:
    pod = _pod({"containers": _containers(3)})
    past = time.perf_counter() - 1
    with pytest.raises(DeadlineExceeded):
        mutate(_request(pod), SHIPPED, deadline=past)
    with pytest.raises(DeadlineExceeded):
        validate(_request(pod), SHIPPED, deadline=past)
    later = time.perf_counter() + 60
    assert mutate(_request(pod), SHIPPED, deadline=later).patch
    assert validate(_request(pod), SHIPPED, deadline=later).allowed


@pytest.mark.parametrize("engine", [mutate, validate])
def test_a_heavy_request_stops_at_its_deadline_not_at_its_end(engine: Any) -> None:
    """Checked as the engine goes (per container injected into, per policy, per rule): a
    request near the container limit stops soon after its deadline."""
    pod = _pod({"containers": [{**c, "securityContext": {"privileged": True}} for c in _containers(1000)]})
    request = _request(pod)
    engine(request, SHIPPED)  # warm: a first call builds per-policy caches, which made `whole` too long
    # A collection of the suite's whole heap inside one timing, not the other, skews the ratio.
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()  # CPU time: other processes on the machine do not count
        engine(request, SHIPPED)
        whole = time.process_time() - started
        started = time.process_time()
        with pytest.raises(DeadlineExceeded):
            engine(request, SHIPPED, deadline=time.perf_counter() + whole / 10)
        stopped = time.process_time() - started
    finally:
        gc.enable()
    assert stopped < whole * 0.8
