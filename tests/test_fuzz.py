"""Property-based fuzzing of the request parser and the engines with malformed and
adversarial reviews and pods: never an unexpected exception, a patch always applies,
and the running server answers every body with a 4xx or a valid review.

Deterministic in `make test`; WEBHOOK_FUZZ=long runs them randomised and longer
(tests/fuzzing.py). Every input a random run has found is kept below as an @example."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.conftest import ServerProcess
from tests.engine_helpers import SHIPPED
from tests.fuzzing import examples
from webhook.engine import mutate, validate
from webhook.engine.inject import inject
from webhook.admission.review import envelope, envelope_json, nests_deeper_than, parse_review
from webhook.core.request import BadReview

FUZZ = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)
names = st.sampled_from(["app", "identity-init", "traffic-proxy", "log-shipper", "x", "", "a/b~c"])
maybe = lambda strategy: st.one_of(strategy, json_values)  # noqa: E731  (sometimes the wrong type)

containers = st.lists(st.fixed_dictionaries({"name": maybe(names)}, optional={
    "image": maybe(st.text(max_size=30)),
    "env": maybe(st.lists(st.fixed_dictionaries({"name": maybe(st.sampled_from(["A", "POD_NAME", "SERVICE_NAME"])),
                                                 "value": maybe(st.text(max_size=5))}), max_size=3)),
    "volumeMounts": maybe(st.lists(st.fixed_dictionaries({"name": maybe(names),
                                                          "mountPath": maybe(st.sampled_from(["/var/log/app", "/x"]))}),
                                   max_size=3)),
    "securityContext": maybe(st.fixed_dictionaries({}, optional={"privileged": maybe(st.booleans()),
                                                                 "runAsNonRoot": maybe(st.booleans())})),
    "restartPolicy": maybe(st.just("Always")),
}), max_size=4)

pods = st.fixed_dictionaries({"apiVersion": st.just("v1"), "kind": st.just("Pod")}, optional={
    "metadata": maybe(st.fixed_dictionaries({}, optional={
        "name": maybe(st.text(max_size=10)), "generateName": maybe(st.text(max_size=10)),
        "labels": maybe(st.dictionaries(st.sampled_from(["app", "runtime.platform.io/workload", "pod-template-hash"]),
                                        maybe(st.text(max_size=8)), max_size=3)),
        "annotations": maybe(st.dictionaries(
            st.sampled_from(["runtime.platform.io/status", "runtime.platform.io/inject", "a/b~c"]),
            maybe(st.sampled_from(["false", "{}", '{"version":1,"policies":[{"name":"identity"}]}', "x"])),
            max_size=3)),
        "ownerReferences": maybe(st.lists(st.fixed_dictionaries({
            "kind": maybe(st.sampled_from(["ReplicaSet", "Job", "DaemonSet", "PyTorchJob"])),
            "name": maybe(st.text(max_size=12)), "controller": maybe(st.booleans())}), max_size=2)),
    })),
    "spec": maybe(st.fixed_dictionaries({}, optional={
        "containers": maybe(containers), "initContainers": maybe(containers),
        "ephemeralContainers": maybe(containers),
        "volumes": maybe(st.lists(st.fixed_dictionaries({"name": maybe(names)}), max_size=3)),
        "hostNetwork": maybe(st.booleans()), "os": maybe(st.fixed_dictionaries({"name": maybe(st.text(max_size=8))})),
        "nodeSelector": maybe(st.dictionaries(st.just("kubernetes.io/os"), st.text(max_size=8), max_size=1)),
    })),
})


def review(obj: Any, *, operation: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default", "operation": operation, "object": obj}}


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=300))
def test_parser_never_raises_anything_but_bad_review_on_bytes(body: bytes) -> None:
    try:
        parse_review(body)
    except BadReview:
        pass


@pytest.mark.slow
@FUZZ
@given(json_values)
# Found by random runs: an unhashable apiVersion was looked up in a set (a TypeError, a 500).
@example({"apiVersion": []})
@example({"apiVersion": {}})
@example({"apiVersion": "admission.k8s.io/v1", "kind": []})
def test_parser_on_arbitrary_json_and_requests(value: Any) -> None:
    for body in (value, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": value}):
        try:
            parse_review(json.dumps(body).encode())
        except BadReview:
            pass


@pytest.mark.slow
@FUZZ
@given(pods)
def test_engines_never_crash_and_patches_apply(pod: dict[str, Any]) -> None:
    request = parse_review(json.dumps(review(pod)).encode()).request
    decision = mutate(request, SHIPPED)
    validate(request, SHIPPED)
    validate(parse_review(json.dumps(review(pod, operation="UPDATE")).encode()).request, SHIPPED)
    if decision.patch:
        patched = jsonpatch.apply_patch(pod, decision.patch, in_place=False)
        again = inject(patched, namespace="default", policies=SHIPPED)
        assert again.patch == [] or again.denial is not None


def _nested(depth: int, leaf: str = '"x"') -> str:
    return '{"a":' * depth + leaf + "}" * depth


def _deep_update(depth: int) -> bytes:
    """An UPDATE whose object and oldObject are the same pod with content `depth` deep."""
    text = json.dumps(review({"apiVersion": "v1", "kind": "Pod", "spec": {"x": "DEEP"}}, operation="UPDATE"))
    text = text.replace('"request": {', '"request": {"oldObject": {"apiVersion": "v1", "kind": "Pod", '
                        '"spec": {"x": "DEEP"}}, ', 1)
    return text.replace('"DEEP"', _nested(depth)).encode()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])
@given(st.one_of(pods.map(lambda p: json.dumps(review(p)).encode()),
                 json_values.map(lambda v: json.dumps(review(v)).encode()),
                 st.binary(max_size=200)))
# Found by random runs or reported: each was a 500.
@example(b'{"apiVersion": []}')
@example(b'{"apiVersion": {}}')
@example(_deep_update(990))  # RecursionError comparing object and oldObject
@example(json.dumps(review({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
    {"name": "app", "image": "x", "env": "DEEP"}]}})).replace('"DEEP"', _nested(300)).encode())
def test_server_answers_every_body_with_a_4xx_or_a_valid_review(server: ServerProcess, body: bytes) -> None:
    for endpoint in ("/mutate", "/validate"):
        raw = server.client.request("POST", endpoint, body, headers={"Content-Type": "application/json"})
        assert raw.status == 200 or 400 <= raw.status < 500, raw.body[:200]
        answer = raw.json()
        if raw.status == 200:
            assert answer["response"]["uid"] == "u1"
            assert answer["response"].get("status", {}).get("code") != 500, answer
        else:
            assert "Traceback" not in answer["error"]


@pytest.mark.slow
@given(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]), st.text(min_size=1),
       st.dictionaries(st.text(), json_values, max_size=4).map(lambda d: {"allowed": True, **d}))
def test_the_serialised_envelope_is_the_envelope(api_version: str, uid: str, fields: dict[str, Any]) -> None:
    # The server joins bytes around a remembered answer's serialised fields; it must read
    # back as the envelope built from dicts, whatever the uid and fields hold.
    try:
        fields_json = orjson.dumps(fields)
    except orjson.JSONEncodeError:
        assume(False)  # an integer beyond 64 bits: no answer holds one
    joined = envelope_json(api_version=api_version, uid=uid, fields_json=fields_json)
    assert orjson.loads(joined) == envelope(api_version=api_version, uid=uid, fields=fields)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# Strings full of what the depth check must see through: brackets, quotes, escapes.
tricky_text = st.text(alphabet='[]{}"\\:,a\n\u00e9', max_size=8)
tricky_json = st.recursive(st.one_of(st.none(), st.integers(), tricky_text), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(tricky_text, inner, max_size=3)), max_leaves=30)


@pytest.mark.slow
@FUZZ
@given(tricky_json, st.booleans())
@example([[[]]], False)
@example({'"[': ["]\\", {"{": "\\\""}]}, True)
def test_the_depth_check_on_bytes_agrees_with_the_parsed_value(value: Any, indented: bool) -> None:
    body = json.dumps(value, indent=1 if indented else None, ensure_ascii=indented).encode()
    depth = _depth(value)
    for limit in {0, 1, 2, depth - 1, depth, depth + 1} - {-1}:
        assert nests_deeper_than(body, limit) is (depth > limit), (body, limit, depth)
