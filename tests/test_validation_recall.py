"""Validations recalled by their body's shape (webhook/engine/memo.py `_Shape`): a rollout's
replica at /validate is answered without parsing, and every answer must be the one a
memo-less server gives, whatever the body holds where the shape cuts."""

from __future__ import annotations

import copy
import itertools
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.apiserver import exchange, make_review, verify_response
from tests.conftest import SHIPPED_POLICIES, ServerProcess
from tests.test_decision_memo import _counts, _free_port, _go_body, _memo_counts, admit, count_parses
from tests.test_validate_helpers import container, pod, policy, policy_set
from webhook.admission import server as server_module
from webhook.admission import memo as memo_module
from webhook.admission.memo import DecisionMemo
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.server import ServerState

POLICIES = PolicyHolder.load(SHIPPED_POLICIES)
STAMP = "2026-11-26T00:00:00Z"


def _replica(obj: dict[str, Any], n: int, *, uid: str | None = None) -> dict[str, Any]:
    """The review the API server sends a validating webhook for replica `n` of `obj`: the pod
    named from its generateName, with a uid, creation time and managed fields of its own (all
    of one length for every n), and the request named and identified likewise."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    name = f"web-7d4b9c-{n:05d}"
    stamp = f"2026-11-26T00:{n % 60:02d}:{n % 60:02d}Z"
    meta.update(name=name, generateName="web-7d4b9c-", uid=f"00000000-0000-4000-8000-{n:012d}",
                creationTimestamp=stamp,
                managedFields=[{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                                "time": stamp, "fieldsType": "FieldsV1",
                                "fieldsV1": {"f:metadata": {"f:generateName": {}}}}])
    review = make_review(obj, namespace="shop")
    review["request"]["uid"] = uid or f"{n:08d}-aaaa-4bbb-8ccc-dddddddddddd"
    return review


def _admit(state: ServerState, body: bytes) -> tuple[int, Any]:
    return admit(state, "validate", body)


def _states() -> tuple[ServerState, ServerState]:
    """A server with the memo and one without (every request parsed and decided)."""
    return (ServerState(policies=POLICIES, certificate=None),
            ServerState(policies=POLICIES, certificate=None, memo=DecisionMemo(max_entries=0)))


def _recalled(state: ServerState, body: bytes) -> bool:
    return state.memo.recall("validate", body, state.policies.current) is not None


def _violating_pod(**spec: Any) -> dict[str, Any]:
    # Warned about by the shipped Pod Security and resource policies: a non-trivial answer.
    return pod(container(name="app", image="registry.example.com/shop/app:1.2.3"), **spec)


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_replica_at_validation_is_answered_without_parsing(level: str, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(level, logger=server_module.log.name)
    state, fresh = _states()
    calls = count_parses(monkeypatch)
    answers = []
    for n in range(4):
        body = orjson.dumps(_replica(_violating_pod(), n))
        calls["n"] = 0
        status, answer = _admit(state, body)
        assert calls["n"] == (1 if n < 2 else 0)  # a miss, its first repeat (which shapes it), recalls
        assert (status, answer) == _admit(fresh, body)
        assert answer["response"]["uid"] == f"{n:08d}-aaaa-4bbb-8ccc-dddddddddddd"
        answers.append(answer["response"])
    assert answers[0]["warnings"] and all(a == {**answers[0], "uid": a["uid"]} for a in answers)
    assert _memo_counts(state) == {("validate", "miss"): 1, ("validate", "hit"): 3}


def _name_of(review: dict[str, Any]) -> str:
    return review["request"]["object"]["metadata"]["name"]


def _named_like_the_pod(review: dict[str, Any]) -> dict[str, Any]:
    """The pod's container named as the pod, its env holding the name too."""
    review = copy.deepcopy(review)
    name = _name_of(review)
    spec = review["request"]["object"]["spec"]
    spec["containers"][0].update(name=name, env=[{"name": "POD", "value": name}])
    return review


def _with_image(review: dict[str, Any], image: str) -> dict[str, Any]:
    review = copy.deepcopy(review)
    review["request"]["object"]["spec"]["containers"][0]["image"] = image
    return review


def _with_container_name(review: dict[str, Any], name: str) -> dict[str, Any]:
    review = copy.deepcopy(review)
    review["request"]["object"]["spec"]["containers"][0]["name"] = name
    return review


def _body(review: dict[str, Any], *, request_tail: bytes = b"", review_tail: bytes = b"") -> bytes:
    body = orjson.dumps(review)
    assert body.endswith(b"}}")  # the request is the review's last member
    return body[:-2] + request_tail + b"}" + review_tail + b"}"


def _same_length(body: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and old in body
    return body.replace(old, new)


def _pairs() -> list[tuple[str, bytes, bytes]]:
    """(case, the body decided first, the body sent after it), all pairs of one length."""
    plain = _violating_pod()
    cases: list[tuple[str, bytes, bytes]] = []
    for kind, obj in (("plain", plain), ("hostNetwork", _violating_pod(hostNetwork=True))):
        first, second = _replica(obj, 1), _replica(obj, 2)
        cases += [
            (f"{kind}: a replica", orjson.dumps(first), orjson.dumps(second)),
            (f"{kind}: named like the pod", orjson.dumps(_named_like_the_pod(first)),
             orjson.dumps(_named_like_the_pod(second))),
            # The container keeps its name while the pod's changes: the same answer.
            (f"{kind}: a container named like the first pod", orjson.dumps(_named_like_the_pod(first)),
             orjson.dumps(_with_name_kept(_named_like_the_pod(first), second))),
            # Same length, a field a decision reads: a reserved container name is denied.
            (f"{kind}: a reserved container name", orjson.dumps(_with_container_name(first, "traffic-proxz")),
             orjson.dumps(_with_container_name(second, "traffic-proxy"))),
            (f"{kind}: the latest tag", orjson.dumps(_with_image(first, "registry.example.com/shop/app:stable")),
             orjson.dumps(_with_image(second, "registry.example.com/shop/app:latest"))),
        ]
    first, second = _replica(plain, 1), _replica(plain, 2)
    b1, b2 = orjson.dumps(first), orjson.dumps(second)
    name1, name2 = _name_of(first).encode(), _name_of(second).encode()
    cases += [
        # What the places hold in the second body, same length: not plain text.
        ("a quote in the name", b1, _same_length(b2, b'"name":"' + name2, b'"name":"' + name2[:-3] + b'","')),
        ("an escape in the name", b1, _same_length(b2, b'"name":"' + name2, b'"name":"' + name2[:-2] + b'\\"')),
        ("an escaped digit in the uid", b1, _same_length(b2, b'"uid":"00000002', b'"uid":"\\u003002')),
        ("a non-ASCII name", b1, _same_length(b2, name2, name2[:-2] + "é".encode())),
        ("a control character in the name", b1, _same_length(b2, name2, name2[:-1] + b"\t")),
        # Later duplicate members override what a place holds, in the first body or the second.
        ("a later uid in both", _body(first, request_tail=b',"uid":"later-uid-1"'),
         _body(second, request_tail=b',"uid":"later-uid-2"')),
        ("a later uid in the second", _body(first, request_tail=b',"uid":"00000001-aaaa-4bbb-8ccc-dddddddddddd"'),
         _body(second, request_tail=b',"uid":"00000009-aaaa-4bbb-8ccc-dddddddddddd"')),
        ("a later name in both", _body(first, request_tail=b',"name":"' + name1 + b'"'),
         _body(second, request_tail=b',"name":"' + name1 + b'"')),
        ("a later object", _body(first, request_tail=b',"object":{"kind":"Pod","metadata":{"name":"' + name1 + b'"}}'),
         _body(second, request_tail=b',"object":{"kind":"Pod","metadata":{"name":"' + name2 + b'"}}')),
        ("a later kind", _body(first, review_tail=b',"kind":"AdmissionReviex"'),
         _body(second, review_tail=b',"kind":"AdmissionReviex"')),
        ("a later apiVersion", _body(first, review_tail=b',"apiVersion":"admission.k8s.io/v1"     '),
         _body(second, review_tail=b',"apiVersion":"admission.k8s.io/v1beta1"')),
        # A uid the needle does not find (a space after the colon) that reads like the marker
        # the check puts in the first place it cuts, a label named "name" holding the pod's name.
        ("a uid like a marker", _spaced_uid(_label_first(first, "web-7d4b9c-00001")),
         _spaced_uid(_label_first(first, "web-7d4b9c-00002"))),
        # The pod's name where a label's value is read: the label is in the key.
        ("a label holding the name", orjson.dumps(_labelled(first, name1.decode())),
         orjson.dumps(_labelled(second, name1.decode()))),
        ("a label holding each name", orjson.dumps(_labelled(first, name1.decode())),
         orjson.dumps(_labelled(second, name2.decode()))),
    ]
    return cases


def _with_name_kept(named: dict[str, Any], replica: dict[str, Any]) -> dict[str, Any]:
    """`named` (container and env named as its pod) as replica `replica`: the pod renamed, the
    container and env keeping the first name."""
    out = copy.deepcopy(replica)
    out["request"]["object"]["spec"] = copy.deepcopy(named["request"]["object"]["spec"])
    return out


def _label_first(review: dict[str, Any], value: str) -> bytes:
    review = copy.deepcopy(review)
    metadata = review["request"]["object"]["metadata"]
    review["request"]["object"]["metadata"] = {"labels": {"name": value}, **metadata}
    review["request"]["uid"] = "~0~"
    return orjson.dumps(review)


def _spaced_uid(body: bytes) -> bytes:
    return body.replace(b'"uid":"~0~"', b'"uid": "~0~"', 1)


def _labelled(review: dict[str, Any], value: str) -> dict[str, Any]:
    review = copy.deepcopy(review)
    review["request"]["object"]["metadata"]["labels"] = {"app": value}
    return review


@pytest.mark.parametrize(("case", "first", "second"), _pairs(), ids=[case for case, _, _ in _pairs()])
def test_a_recalled_validation_is_the_one_parsing_gives(case: str, first: bytes, second: bytes,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger=server_module.log.name)
    state, fresh = _states()
    for _ in range(2):  # a decision and its first repeat, which stores its shape
        assert _admit(state, first) == _admit(fresh, first)
    assert _admit(state, second) == _admit(fresh, second), case


_REVIEW = ('{"apiVersion":"admission.k8s.io/%s","kind":"AdmissionReview","request":{%s,"operation":"CREATE",'
           '"object":{"kind":"Pod","metadata":{"name":"%s"},"spec":{"containers":[{"name":"c","image":"r.example.com/a:%s"}]}}}}')


def _review(version: str, head: str, name: str, tag: str, before: str = "") -> bytes:
    return (before + _REVIEW % (version, head, name, tag)).encode()


# Three bodies of one length whose places lie alike, the first with other uid, apiVersion or
# member order than the next two; the third is a replica of the second. Found by a review:
# an entry answered with the apiVersion and uid of whichever shape found it.
_ALIKE = {
    "a uid not cut": [_review("v1", '"uid":"\\u0041AAA","name":"p-01"', "p-01", "1"),
                      _review("v1", '"uid":"\\u0042BBB","name":"p-02"', "p-02", "2"),
                      _review("v1", '"uid":"\\u0042BBB","name":"p-03"', "p-03", "2")],
    "another apiVersion": [_review("v1", '"uid":"AAAA","name":"p-01"', "p-01", "1", before="     "),
                           _review("v1beta1", '"uid":"BBBB","name":"p-02"', "p-02", "2"),
                           _review("v1beta1", '"uid":"CCCC","name":"p-03"', "p-03", "2")],
    "uid and name swapped": [_review("v1", ' "uid":"AAAA","name":"p-01"', "p-01", "1"),
                             _review("v1", '"name":"BBBB", "uid":"p-02"', "p-02", "2"),
                             _review("v1", '"name":"CCCC", "uid":"p-03"', "p-03", "2")],
}


@pytest.mark.parametrize("case", sorted(_ALIKE))
def test_an_entry_answers_with_its_own_bodys_uid_and_apiversion(case: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger=server_module.log.name)
    state, fresh = _states()
    first, second, third = _ALIKE[case]
    assert len({len(first), len(second), len(third)}) == 1
    for body in (first, first, second, second):  # each shaped on its repeat
        assert _admit(state, body) == _admit(fresh, body)
    assert _recalled(state, third)
    assert _admit(state, third) == _admit(fresh, third)


def test_replicas_are_recalled_and_other_pods_are_not(caplog: pytest.LogCaptureFixture) -> None:
    # The sweep above would pass with no recall at all: these must be recalled, those not.
    caplog.set_level("WARNING", logger=server_module.log.name)
    cases = {case: (first, second) for case, first, second in _pairs()}
    recalled = set()
    for case, (first, second) in cases.items():
        state, _ = _states()
        _admit(state, first)
        _admit(state, first)
        if _recalled(state, second):
            recalled.add(case)
    # Not recalled: whatever differs outside the places a shape cuts (a container or label
    # that takes each pod's name, an image, a name overridden by a later member) or holds other
    # than plain text inside them.
    assert recalled == {"plain: a replica", "plain: a container named like the first pod",
                        "hostNetwork: a replica", "hostNetwork: a container named like the first pod",
                        "a label holding the name"}


def test_a_recall_is_for_the_day_it_was_decided(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # Exceptions expire by date: a validation remembered yesterday is decided again today.
    caplog.set_level("WARNING", logger=server_module.log.name)
    state, _ = _states()
    first, second = (orjson.dumps(_replica(_violating_pod(), n)) for n in (1, 2))
    monkeypatch.setattr(memo_module, "utc_today", lambda: date(2026, 11, 26))
    _admit(state, first)
    _admit(state, first)
    assert _recalled(state, second)
    monkeypatch.setattr(memo_module, "utc_today", lambda: date(2026, 11, 27))
    assert not _recalled(state, second)


def test_cel_rules_turn_the_validation_recall_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger=server_module.log.name)
    policies = policy_set(policy("names", [{"cel": {"expression": "object.metadata.name != 'forbidden'",
                                                    "message": "no"}}]))
    memo: DecisionMemo[str] = DecisionMemo()
    for n in (1, 2):
        review = _replica(_violating_pod(), n)
        body = orjson.dumps(review)
        assert memo.recall("validate", body, policies) is None
        memo.decide("validate", review["request"], policies, lambda: "decided", body=body,
                    api_version=review["apiVersion"])
    assert memo.recall("validate", orjson.dumps(_replica(_violating_pod(), 3)), policies) is None


def test_a_shape_cuts_only_the_fields_a_key_leaves_out() -> None:
    review = _named_like_the_pod(_replica(_violating_pod(), 1))
    body = orjson.dumps(review)
    shape = memo_module._Shape.of(body, review["apiVersion"], review["request"])
    assert shape is not None
    cut = {body[start:end].decode() for start, end in shape.spans}
    # the request's uid and name, the pod's name, uid and time, the managed fields' time;
    # not the container's name nor the env value, which hold the pod's name as well
    assert cut == {review["request"]["uid"], _name_of(review), review["request"]["object"]["metadata"]["uid"],
                   "2026-11-26T00:01:01Z"}
    assert len(shape.spans) == 6
    assert shape.values(body)[("uid",)] == review["request"]["uid"]
    # More places than are worth a key: no shape (the pod's name in 20 containers and envs).
    crowded = copy.deepcopy(review)
    spec = crowded["request"]["object"]["spec"]
    spec["containers"] *= 20
    body = orjson.dumps(crowded)
    assert memo_module._Shape.of(body, crowded["apiVersion"], crowded["request"]) is None


@pytest.mark.process
def test_replicas_are_validated_from_memory_over_tls(pki: Path, tmp_path: Path) -> None:
    server = ServerProcess(cert_dir=pki, policies=SHIPPED_POLICIES, log_file=tmp_path / "server.log",
                           args=["--log-level", "warning", "--port", str(_free_port())])
    try:
        before = _counts(server, "webhook_decision_memo_total")
        conn = server.client.connection()
        answers = []
        for n in range(4):
            review = _replica(_violating_pod(), n)
            raw = exchange(conn, "POST", "/validate?timeout=10s", orjson.dumps(review),
                           headers={"Content-Type": "application/json"})
            result = verify_response(review, raw, mutating=False)
            answers.append({k: v for k, v in result.response.items() if k != "uid"})
        conn.close()
        after = _counts(server, "webhook_decision_memo_total")
        assert answers[0]["warnings"] and all(a == answers[0] for a in answers)
        assert after[("validate", "hit")] - before.get(("validate", "hit"), 0) == 3
        assert after[("validate", "miss")] - before.get(("validate", "miss"), 0) == 1
        requests = _counts(server, "webhook_requests_total")
        assert requests[("validate", "CREATE", "allowed")] >= 4
        assert [e for e in server.log_lines() if e.get("level") in ("error", "critical")] == []
    finally:
        server.stop()


def test_replica_bodies_are_the_same_length() -> None:
    # The premise of the recall: a rollout's replicas differ only inside values of one length.
    lengths = {len(orjson.dumps(_replica(_violating_pod(), n))) for n in itertools.chain(range(3), (59, 99999))}
    assert len(lengths) == 1


def test_a_miss_pays_nothing_for_a_recall_until_it_repeats(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # Pods that are all different (a DaemonSet's, each Job's) are decided once each: checking
    # a body for the recall costs about a parse, so it waits for the first repeat.
    caplog.set_level("WARNING", logger=server_module.log.name)
    calls = {"shape": 0, "recallable": 0}
    shape_of, recallable = memo_module._Shape.of, memo_module._recallable

    def counting_shape(body: bytes, api_version: str, raw: dict[str, Any]) -> Any:
        calls["shape"] += 1
        return shape_of(body, api_version, raw)

    def counting_recallable(body: bytes, uid: str) -> bool:
        calls["recallable"] += 1
        return recallable(body, uid)

    monkeypatch.setattr(memo_module._Shape, "of", counting_shape)
    monkeypatch.setattr(memo_module, "_recallable", counting_recallable)
    state, _ = _states()
    request = make_review(pod(name=None, generateName="web-"), namespace="shop")["request"]
    for n, expected in enumerate(((0, 0), (1, 1), (1, 1), (1, 1))):  # a miss, the first repeat, recalls
        _admit(state, orjson.dumps(_replica(_violating_pod(), n)))
        admit(state, "mutate", _go_body(request, f"uid-{n}"))
        assert (calls["shape"], calls["recallable"]) == expected, n
    assert _memo_counts(state) == {("validate", "miss"): 1, ("validate", "hit"): 3,
                                   ("mutate", "miss"): 1, ("mutate", "hit"): 3}
