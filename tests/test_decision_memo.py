"""The decision memo (webhook/engine/memo.py): a remembered decision must be exactly the
one the engine would give now, for the corpus, for a rollout's replicas whose
server-set metadata differs, for different users, namespaces, dates and policy sets."""

from __future__ import annotations

import base64
import copy
import gc
import importlib
import itertools
import json
import socket
import time
import tracemalloc
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.apiserver import exchange, make_review, verify_response
from tests.conftest import SHIPPED_POLICIES, ServerProcess
from tests.test_validate_helpers import container, policy, policy_set, pod
from webhook.admission import memo as memo_module
from webhook.engine import mutate, validate
from webhook.admission.memo import DecisionMemo
from webhook.core.request import make_request
from webhook.admission import server as server_module
from webhook.runtime.policy_holder import PolicyHolder
from webhook.policy.loader import PolicySet, load_policy_dir
from webhook.core.request import AdmissionRequest
from webhook.admission.server import ServerState, answer_memo

CORPUS = sorted((Path(__file__).parent / "data" / "corpus").glob("*.yaml"))
SHIPPED = load_policy_dir(SHIPPED_POLICIES)
ENGINES = {"mutate": mutate, "validate": validate}
# the module: `webhook.engine.validate` as an attribute is the function it exports
validate_module = importlib.import_module("webhook.engine.validate")


def _as_replica(obj: dict[str, Any], n: int) -> dict[str, Any]:
    """The same pod as the API server shows it to validating webhooks: named, with uid,
    creation time and managed fields of its own."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.update(name=f"web-7d4b9c-{n:05d}", uid=f"00000000-0000-4000-8000-{n:012d}",
                creationTimestamp=f"2026-11-26T00:00:{n % 60:02d}Z", resourceVersion=str(1000 + n),
                managedFields=[{"manager": "kube-controller-manager", "time": f"2026-11-26T00:00:{n % 60:02d}Z"}])
    return obj


def _raw(request: AdmissionRequest) -> dict[str, Any]:
    """The review's `request` as the API server sends it, which the memo keys on."""
    return {**request.to_json(), "object": request.object, "oldObject": request.old_object}


def _decide(memo: DecisionMemo, endpoint: str, engine: Any, request: AdmissionRequest,
            policies: PolicySet) -> tuple[Any, str]:
    return memo.decide(endpoint, _raw(request), policies, lambda: engine(request, policies))


def _fresh_and_memoised(memo: DecisionMemo, endpoint: str, request: AdmissionRequest,
                        policies: PolicySet) -> tuple[Any, Any, str]:
    decision, result = _decide(memo, endpoint, ENGINES[endpoint], request, policies)
    return ENGINES[endpoint](request, policies), decision, result


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_memoised_decisions_equal_fresh_ones_for_the_corpus(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    memo = DecisionMemo()
    for endpoint in ENGINES:
        request = make_request(obj, namespace="shop")
        fresh, first, result = _fresh_and_memoised(memo, endpoint, request, SHIPPED)
        assert first == fresh
        fresh, second, again = _fresh_and_memoised(memo, endpoint, make_request(obj, namespace="shop"), SHIPPED)
        assert second == fresh
        if result == "miss":
            assert again == "hit"
        else:
            assert (result, again) == ("skip", "skip")


@pytest.mark.parametrize("path", [p for p in CORPUS if p.stem.startswith("pod-")], ids=lambda p: p.stem)
def test_replicas_of_a_rollout_share_one_validation(path: Path) -> None:
    pod_obj = yaml.safe_load(path.read_text())
    memo = DecisionMemo()
    results = []
    for n in range(3):
        request = make_request(_as_replica(pod_obj, n), namespace="shop")
        fresh, decision, result = _fresh_and_memoised(memo, "validate", request, SHIPPED)
        assert decision == fresh
        results.append(result)
    assert results == ["miss", "hit", "hit"]


def test_what_a_decision_depends_on_is_in_the_key() -> None:
    exempt_alice = {"reason": "break-glass", "usernames": ["alice"]}
    policies = policy_set(policy("no-latest", [{"images": {"forbidLatest": True}}],
                                 match={"namespaces": {"include": ["shop"]}}, exceptions=[exempt_alice]))
    latest = pod(container(image="registry.example.com/app:latest"))
    memo = DecisionMemo()
    cases = [
        make_request(latest, namespace="shop", username="bob"),
        make_request(latest, namespace="shop", username="alice"),       # exception applies
        make_request(latest, namespace="other", username="bob"),        # policy does not match
        make_request(latest, namespace="shop", username="bob", operation="DELETE"),
        make_request(pod(container(image="registry.example.com/app:1.0")), namespace="shop", username="bob"),
    ]
    expected = [False, True, True, True, True]
    for _ in range(2):  # second round: every answer from the memo
        for request, allowed in zip(cases, expected):
            fresh, decision, _ = _fresh_and_memoised(memo, "validate", request, policies)
            assert decision == fresh
            assert decision.allowed is allowed


def test_an_exception_that_expires_stops_applying_to_remembered_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    today = datetime.now(timezone.utc).date()
    policies = policy_set(policy("no-latest", [{"images": {"forbidLatest": True}}],
                                 exceptions=[{"reason": "migration", "namespaces": ["shop"],
                                             "expires": today.isoformat()}]))
    request = make_request(pod(container(image="registry.example.com/app:latest")), namespace="shop")
    memo = DecisionMemo()
    assert _decide(memo, "validate", validate, request, policies)[0].allowed is True
    assert _decide(memo, "validate", validate, request, policies)[1] == "hit"

    class Tomorrow(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)

    monkeypatch.setattr(memo_module, "datetime", Tomorrow)
    monkeypatch.setattr(validate_module, "datetime", Tomorrow)
    decision, result = _decide(memo, "validate", validate, request, policies)
    assert (decision.allowed, result) == (False, "miss")


def test_a_new_policy_set_empties_the_memo() -> None:
    request = make_request(pod(container(image="registry.example.com/app:latest")), namespace="shop")
    strict = policy_set(policy("no-latest", [{"images": {"forbidLatest": True}}]))
    lenient = policy_set(policy("registries", [{"images": {"allowedRegistries": ["registry.example.com"]}}]))
    memo = DecisionMemo()
    assert _decide(memo, "validate", validate, request, strict)[0].allowed is False
    assert _decide(memo, "validate", validate, request, strict)[1] == "hit"
    decision, result = _decide(memo, "validate", validate, request, lenient)
    assert (decision.allowed, result) == (True, "miss")
    assert len(memo) == 1


def test_cel_rules_turn_the_validation_memo_off() -> None:
    policies = policy_set(policy("names", [{"cel": {"expression": "object.metadata.name != 'forbidden'",
                                                    "message": "no"}}]))
    memo = DecisionMemo()
    for name, allowed in (("fine", True), ("forbidden", False)):
        # same pod apart from the server-set name, which a CEL rule may read
        request = make_request(_as_replica(pod(), 1) | {"metadata": {"name": name}}, namespace="shop")
        decision, result = _decide(memo, "validate", validate, request, policies)
        assert (decision.allowed, result) == (allowed, "skip")


def test_the_memo_is_bounded_and_forgets_the_least_recent() -> None:
    memo = DecisionMemo(max_entries=2)
    requests = [make_request(pod(container(name=f"c{i}")), namespace="shop") for i in range(3)]
    for request in requests:
        assert _decide(memo, "mutate", mutate, request, SHIPPED)[1] == "miss"
    assert len(memo) == 2
    assert _decide(memo, "mutate", mutate, requests[2], SHIPPED)[1] == "hit"
    assert _decide(memo, "mutate", mutate, requests[0], SHIPPED)[1] == "miss"  # evicted first


def test_the_memo_is_bounded_by_the_bytes_its_keys_hold() -> None:
    memo = DecisionMemo(max_bytes=5000)
    requests = [make_request(pod(container(name=f"c{i}", args=["x" * 1000])), namespace="shop")
                for i in range(6)]
    for request in requests:
        assert _decide(memo, "mutate", mutate, request, SHIPPED)[1] == "miss"
    assert 1 <= len(memo) < 5  # each key holds more than 1000 bytes
    assert _decide(memo, "mutate", mutate, requests[-1], SHIPPED)[1] == "hit"
    assert _decide(memo, "mutate", mutate, requests[0], SHIPPED)[1] == "miss"


def test_the_memo_counts_the_size_of_what_it_keeps() -> None:
    # The server weighs an answer by its serialised response: a few large answers must
    # not fill memory while the entry count stays low.
    requests = [make_request(pod(container(name=f"c{i}")), namespace="shop") for i in range(4)]
    kept = {}
    for name, memo in (("keys only", DecisionMemo()), ("answers weighed", answer_memo())):
        memo.max_bytes = 12_000
        for request in requests:
            answer, result = memo.decide("mutate", _raw(request), SHIPPED,
                                         lambda: server_module._answer(mutate(request, SHIPPED), mutating=True))
            assert result == "miss" and len(orjson.loads(answer.fields_json)["patch"]) > 3000
        kept[name] = len(memo)
    assert kept["keys only"] == 4 and 1 <= kept["answers weighed"] < 4, kept


def test_the_memory_the_memo_holds_is_about_what_it_counts() -> None:
    # The byte bound is only a bound if the count is true: orjson's output keeps its
    # working buffer (a 6 KB answer held 64 KB), so stored keys and answers are copied.
    requests = [make_request(pod(container(name=f"c{i}")), namespace="shop") for i in range(20)]
    memo = answer_memo()
    tracemalloc.start()
    try:
        for request in requests:
            memo.decide("mutate", _raw(request), SHIPPED,
                        lambda: server_module._answer(mutate(request, SHIPPED), mutating=True))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(memo) == 20 and memo.size_bytes > 20 * 5000
    assert held < 1.5 * memo.size_bytes, (held, memo.size_bytes)


def test_large_objects_and_a_zero_size_are_not_memoised() -> None:
    big = pod(container(env=[{"name": f"V{i}", "value": "x" * 100} for i in range(1000)]))
    assert _decide(DecisionMemo(), "mutate", mutate, make_request(big, namespace="shop"), SHIPPED)[1] == "skip"
    off = DecisionMemo(max_entries=0)
    for _ in range(2):
        assert _decide(off, "mutate", mutate, make_request(pod(), namespace="shop"), SHIPPED)[1] == "skip"
    assert len(off) == 0


def test_objects_that_differ_only_in_server_set_metadata_are_injected_separately() -> None:
    # At mutation the name is the user's own (no generateName) and templates may use it.
    memo = DecisionMemo()
    a = make_request(pod(name="a"), namespace="shop")
    b = a._replace(object=pod(name="b"))
    assert _decide(memo, "mutate", mutate, a, SHIPPED)[1] == "miss"
    assert _decide(memo, "mutate", mutate, b, SHIPPED)[1] == "miss"


def _counts(server: ServerProcess, metric: str) -> dict[tuple[str, ...], float]:
    counts = {}
    for line in server.client.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric) + 1:].split("} ")
            counts[tuple(part.split("=")[1].strip('"') for part in labels.split(","))] = float(value)
    return counts


def test_the_server_answers_repeats_from_the_memo_and_counts_them(server: ServerProcess) -> None:
    replica = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "memo-test-7d4b9c-", "labels": {"app": "memo-test"}},
               "spec": {"containers": [{"name": "app", "image": "registry.example.com/memo-test:1.0"}]}}
    before, injections_before = _counts(server, "webhook_decision_memo_total"), \
        _counts(server, "webhook_injections_total")
    answers = [server.client.admit(replica, namespace="memo-test") for _ in range(3)]
    after, injections = _counts(server, "webhook_decision_memo_total"), _counts(server, "webhook_injections_total")
    assert all(a.allowed for a in answers)
    assert answers[0].response["patch"] == answers[1].response["patch"] == answers[2].response["patch"]
    assert len({a.response["uid"] for a in answers}) == 3  # each answer echoes its own uid
    assert after[("mutate", "hit")] - before.get(("mutate", "hit"), 0) == 2
    assert after[("mutate", "miss")] - before.get(("mutate", "miss"), 0) == 1
    # every answer counts for the policies it applied, remembered or not
    added = {k: v - injections_before.get(k, 0) for k, v in injections.items()}
    assert set(added.values()) <= {0, 3} and 3 in added.values(), added


def test_the_namespace_is_in_the_injection_key() -> None:
    # the log shipper renders the namespace into its arguments
    memo = DecisionMemo()
    for namespace in ("shop", "billing", "shop"):
        request = make_request(pod(), namespace=namespace)
        fresh, decision, _ = _fresh_and_memoised(memo, "mutate", request, SHIPPED)
        assert decision == fresh
        assert any(f"--namespace={namespace}" in str(op.get("value")) for op in decision.patch or [])


def test_the_metrics_tally_keeps_counts_not_answers() -> None:
    # Unremembered answers are new objects each time (a patch each): the tally, which holds
    # its keys until it folds them into the metrics, must keep plain values, not answers.
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None,
                        memo=DecisionMemo(max_entries=0))
    body = json.dumps(make_review(pod(), namespace="shop")).encode()
    for _ in range(5):
        response = server_module._admit(body, state, "mutate", mutate, True, time.perf_counter(), float("inf"))
        assert response.status == 200
    pending = state.tally._pending
    assert len(pending) == 1 and len(next(iter(pending.values()))) == 5  # five requests, one key

    def plain(value: Any) -> bool:
        return isinstance(value, (str, int, float)) or (isinstance(value, tuple) and all(map(plain, value)))

    assert all(plain(key) for key in pending)


def test_a_decision_made_across_midnight_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The key carries the day it was made on; the engine reads the clock again. If the day
    # turned in between, the decision belongs to neither key safely.
    days = iter([date(2026, 6, 1), date(2026, 6, 2)])
    monkeypatch.setattr(memo_module, "utc_today", lambda: next(days))
    memo = DecisionMemo()
    request = make_request(pod(), namespace="shop")
    assert _decide(memo, "validate", validate, request, SHIPPED)[1] == "skip"
    assert len(memo) == 0


@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_a_remembered_answer_does_not_let_a_malformed_request_through(endpoint: str) -> None:
    # The memo keys on the request as sent and only a miss parses it: the fields a key
    # leaves out (uid; at validation the name) must still be checked on a hit, and any
    # other malformed field must make a different key, hence a miss and a refusal.
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    engine = ENGINES[endpoint]
    review = make_review(pod(), namespace="shop")

    def admit(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = server_module._admit(json.dumps(doc).encode(), state, endpoint, engine, endpoint == "mutate",
                                        time.perf_counter(), float("inf"))
        return response.status, orjson.loads(response.body)

    assert admit(review)[0] == 200
    assert admit({**review, "request": {**review["request"], "uid": "another"}})[0] == 200  # a hit
    kind, resource = review["request"]["kind"], review["request"]["resource"]
    malformed = [("uid", 5), ("uid", ""), ("name", 7), ("dryRun", "yes"), ("namespace", ["shop"]),
                 ("userInfo", {"username": "u", "groups": "all"}), ("userInfo", {"username": "u", "groups": [1]}),
                 ("userInfo", {"username": "u", "uid": 1}), ("kind", "Pod"), ("kind", {**kind, "version": 1}),
                 ("resource", {**resource, "resource": 1}), ("oldObject", []), ("object", []), ("object", 5)]
    for field, value in malformed:
        status, body = admit({**review, "request": {**review["request"], field: value}})
        assert status == 400, (field, value, body)
        assert f"request.{field}" in body["error"], body
    hits = [v for (e, result), v in _memo_counts(state).items() if e == endpoint and result == "hit"]
    assert hits == [1]


def _memo_counts(state: ServerState) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for (endpoint, _operation, result, _counted), latencies in state.tally._pending.items():
        counts[(endpoint, result)] = counts.get((endpoint, result), 0) + len(latencies)
    return counts


def test_what_a_validation_key_leaves_out_still_hits_through_the_server() -> None:
    # Replicas reach /validate with their own request name and server-set metadata; a null
    # or absent name is well-formed too. All of them are one decision.
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    review = make_review(pod(), namespace="shop")
    variants = [{}, {"name": None}, {"name": "web-2"}]
    for n, extra in enumerate(variants):
        request = {k: v for k, v in review["request"].items() if k != "name"}
        doc = {**review, "request": {**request, **extra, "uid": f"uid-{n}",
                                     "object": _as_replica(review["request"]["object"], n)}}
        response = server_module._admit(json.dumps(doc).encode(), state, "validate", validate, False,
                                        time.perf_counter(), float("inf"))
        assert response.status == 200
    assert _memo_counts(state) == {("validate", "miss"): 1, ("validate", "hit"): 2}


def test_the_request_parser_reads_nothing_a_validation_key_leaves_out() -> None:
    # A tripwire. The memo answers a hit without parsing the request, so what its key
    # leaves out must be what the parser does not check (or what the key's own guard
    # checks: uid and name). If the parser starts checking inside the object's metadata,
    # the key must keep that field.
    review = make_review(pod(), namespace="shop")
    for field in memo_module.SERVER_SET_METADATA:
        for value in (5, [], {"x": 1}, None, True):
            obj = copy.deepcopy(review["request"]["object"])
            obj["metadata"][field] = value
            old = copy.deepcopy(obj)
            AdmissionRequest.from_dict({**review["request"], "object": obj, "oldObject": old})


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_hit_is_parsed_only_for_the_decision_log(level: str, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    calls = {"n": 0}
    real = AdmissionRequest.from_dict.__func__  # type: ignore[attr-defined]

    def counting(cls: type, raw: dict[str, Any]) -> AdmissionRequest:
        calls["n"] += 1
        return real(cls, raw)

    monkeypatch.setattr(AdmissionRequest, "from_dict", classmethod(counting))
    caplog.set_level(level, logger=server_module.log.name)
    body = json.dumps(make_review(pod(), namespace="shop")).encode()
    for expected in (1, 1 if level == "INFO" else 0):  # a miss, then a hit
        calls["n"] = 0
        response = server_module._admit(body, state, "validate", validate, False, time.perf_counter(),
                                        float("inf"))
        assert response.status == 200 and calls["n"] == expected


def _bodies_for_the_uid_cut() -> list[tuple[tuple[Any, ...], bytes]]:
    """Reviews that differ in where a uid-like string appears and how it is written: the
    review's uid plain or escaped, the same text as a label (whose key may be "uid") or as
    the object's own uid, before or after the review's uid, a duplicate uid member, compact
    or spaced JSON."""
    bodies = []
    for variant in itertools.product(
            ("a1", "b2"), ("uid first", "object first"),
            ((), (("uid", "a1"),), (("uid", "b2"),), (("app", "a1"),)), (None, "a1", "b2"),
            (False, True), (False, True), (False, True)):
        uid, order, labels, object_uid, escaped, spaced, duplicate = variant
        obj = pod()
        obj["metadata"]["labels"] = dict(labels)
        if object_uid is not None:
            obj["metadata"]["uid"] = object_uid
        request = make_review(obj, namespace="shop")["request"]
        request = {k: v for k, v in request.items() if k != "uid"}
        request = {"uid": "@@UID@@", **request} if order == "uid first" else {**request, "uid": "@@UID@@"}
        doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        text = json.dumps(doc) if spaced else orjson.dumps(doc).decode()
        token = '"\\u%04x%s"' % (ord(uid[0]), uid[1:]) if escaped else f'"{uid}"'
        member = '"uid": ' if spaced else '"uid":'
        if duplicate:  # the last of two members is the one a JSON parser keeps
            token = f'"b2", {member}{token}' if spaced else f'"b2",{member}{token}'
        bodies.append((variant, text.replace('"@@UID@@"', token).encode()))
    return bodies


def test_a_body_key_cuts_out_the_uid_and_nothing_else() -> None:
    # Every pair of bodies that share a key is the same review but for the request's uid;
    # reviews of one pod that differ only in their uid, written plainly, share one.
    groups: dict[bytes, list[dict[str, Any]]] = {}
    keys = {}
    for variant, body in _bodies_for_the_uid_cut():
        doc = orjson.loads(body)
        key = keys[variant] = memo_module.body_key(body, doc["request"]["uid"])
        if key is not None:
            doc["request"].pop("uid")
            groups.setdefault(key, []).append(doc)
    assert len(groups) > 100
    for docs in groups.values():
        assert all(doc == docs[0] for doc in docs[1:])
    # A plain uid, single, is shared when no "uid" member before it has the same text.
    shared = {variant for variant, key in keys.items() if variant[0] == "a1" and key is not None
              and key == keys[("b2", *variant[1:])]}
    assert shared == {v for v in keys if v[0] == "a1" and v[4:] in ((False, False, False), (False, True, False))
                      and (v[1] == "uid first" or (v[3] is None and all(k != "uid" for k, _ in v[2])))}
    assert len(shared) == 28
    plain = orjson.dumps(make_review(pod(), namespace="shop"))
    uid = orjson.loads(plain)["request"]["uid"]
    other = plain.replace(uid.encode(), b"0f1e2d3c-4b5a-4968-8776-655443322110")
    assert memo_module.body_key(plain, uid) == memo_module.body_key(other, "0f1e2d3c-4b5a-4968-8776-655443322110")
    assert memo_module.body_key(plain.replace(uid.encode(), b'a\\"b'), 'a"b') is None  # not a plain uid
    # The NUL that marks the cut is unambiguous only while the parser refuses it in JSON.
    for raw in (b'{"a":"x\x00"}', b'{"a":1}\x00', b'{"a":\x001}'):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
    # A recall's check (memo._recallable) relies on the parser keeping a duplicate's last value.
    assert orjson.loads(b'{"a":1,"b":{"u":"x","u":"y"},"a":2}') == {"a": 2, "b": {"u": "y"}}


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_large_pod_is_injected_once_and_its_answer_remembered(level: str, caplog: pytest.LogCaptureFixture) -> None:
    # Beyond the size a key is serialised for, a mutation still keys on its body, and a
    # validation is remembered by its body's shape.
    caplog.set_level(level, logger=server_module.log.name)
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    big = pod(container(env=[{"name": f"V{i}", "value": "x" * 100} for i in range(700)]))
    review = make_review(big, namespace="shop")
    answers = []
    for n, endpoint in enumerate(["mutate", "mutate", "validate", "validate"]):
        body = orjson.dumps({**review, "request": {**review["request"], "uid": f"uid-{n}"}})
        assert memo_module.DEFAULT_MAX_OBJECT_BYTES < len(body) < memo_module.DEFAULT_MAX_BODY_KEY_BYTES
        answers.append(admit(state, endpoint, body)[1]["response"])
    assert _memo_counts(state) == {("mutate", "miss"): 1, ("mutate", "hit"): 1,
                                   ("validate", "miss"): 1, ("validate", "hit"): 1}
    assert [a["uid"] for a in answers] == ["uid-0", "uid-1", "uid-2", "uid-3"]
    assert answers[3] == {**answers[2], "uid": "uid-3"}
    fresh = mutate(AdmissionRequest.from_dict(review["request"]), SHIPPED)
    assert json.loads(base64.b64decode(answers[1]["patch"])) == fresh.patch
    assert answers[0]["patch"] == answers[1]["patch"]


def _go_body(request: dict[str, Any], uid: str, *, api_version: str = "admission.k8s.io/v1",
             request_tail: str = "", review_tail: str = "") -> bytes:
    """A review as the API server writes it: compact, kind and apiVersion first, then the
    request with its uid first. The tails go at the end of the request and of the review."""
    rest = orjson.dumps({k: v for k, v in request.items() if k != "uid"}).decode()[1:-1]
    return (f'{{"kind":"AdmissionReview","apiVersion":"{api_version}","request":{{"uid":"{uid}",'
            f'{rest}{request_tail}}}{review_tail}}}').encode()


def count_parses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the server's reads of a body's JSON from now on: `["n"]`, which a test may reset."""
    calls = {"n": 0}
    real = server_module.read_envelope

    def counting(body: bytes) -> Any:
        calls["n"] += 1
        return real(body)

    monkeypatch.setattr(server_module, "read_envelope", counting)
    return calls


def admit(state: ServerState, endpoint: str, body: bytes) -> tuple[int, Any]:
    """`body` sent to `endpoint` of a server in `state`, no deadline: the status and the JSON answer."""
    response = server_module._admit(body, state, endpoint, ENGINES[endpoint], endpoint == "mutate",
                                    time.perf_counter(), float("inf"))
    return response.status, orjson.loads(response.body)


def _admit_mutation(state: ServerState, body: bytes) -> tuple[int, Any]:
    return admit(state, "mutate", body)


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_replica_at_mutation_is_answered_without_parsing(level: str, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # Replicas reach /mutate as the same body but for the uid it begins with: from the second
    # repeat on (the first checks the body for it), the memo answers them without parsing the
    # body at all (at info, the log line names what was stored).
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    calls = count_parses(monkeypatch)
    caplog.set_level(level, logger=server_module.log.name)
    request = make_review(pod(), namespace="shop")["request"]
    answers = []
    for i, expected in enumerate((1, 1, 0, 0)):
        calls["n"] = 0
        status, answer = _admit_mutation(state, _go_body(request, f"replica-{i}"))
        assert status == 200 and calls["n"] == expected
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["response"]["uid"] == f"replica-{i}"
        answers.append(answer["response"])
    assert answers[0]["patch"] and all(a == {**answers[0], "uid": a["uid"]} for a in answers)
    assert _memo_counts(state) == {("mutate", "miss"): 1, ("mutate", "hit"): 3}


# A later duplicate member wins in a JSON parser: a body may begin with one uid or apiVersion
# and mean another. (request tail, review tail), and what the request then is.
_OVERRIDES = [
    ("", ""),  # nothing overridden: recalled
    (',"uid":"the-real-uid"', ""),  # the request's uid is the later one
    (',"uid":"first-uid"', ""),  # the first body's uid again, later: the later one still wins
    ("", ',"apiVersion":"admission.k8s.io/v1beta1"'),  # answered in v1beta1
    ("", ',"kind":"NotAReview"'),  # refused, remembered or not
    (',"uid":""', ""),  # refused: an empty uid
    (',"namespace":"other"', ""),  # a different request altogether: its own key
]


@pytest.mark.parametrize(("request_tail", "review_tail"), _OVERRIDES)
def test_a_recalled_answer_is_the_one_parsing_gives(request_tail: str, review_tail: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger=server_module.log.name)
    state = ServerState(policies=PolicyHolder.load(SHIPPED_POLICIES), certificate=None)
    fresh = ServerState(policies=state.policies, certificate=None, memo=DecisionMemo(max_entries=0))
    request = make_review(pod(), namespace="shop")["request"]
    for uid in ("first-uid", "second-uid", "xecond-uid"):  # x: the letter the check swaps in
        body = _go_body(request, uid, request_tail=request_tail, review_tail=review_tail)
        assert _admit_mutation(state, body) == _admit_mutation(fresh, body), uid


def test_an_entry_answers_recalls_only_if_its_body_begins_with_its_own_uid() -> None:
    # The store-time check needs both: the body's parsed uid is the one it begins with, and
    # the same body with another uid takes that one (no later member overrides it).
    request = make_review(pod(), namespace="shop")["request"]
    assert memo_module._recallable(_go_body(request, "abc"), "abc")
    assert not memo_module._recallable(_go_body(request, "abc", request_tail=',"uid":"xbc"'), "xbc")
    assert not memo_module._recallable(_go_body(request, "abc", request_tail=',"uid":"abc"'), "abc")
    assert not memo_module._recallable(_go_body(request, "abc", review_tail=',"kind":"Other"'), "abc")


def test_recall_answers_every_body_as_parsing_does() -> None:
    # The reviews the body key is tested on (uids escaped, duplicated, look-alike members,
    # compact or spaced, apiVersion first): each decided after its twin with the other uid
    # must answer as a memo-less server does.
    logger = server_module.log
    level = logger.level
    logger.setLevel("WARNING")
    try:
        bodies = dict(_bodies_for_the_uid_cut())
        policies = PolicyHolder.load(SHIPPED_POLICIES)
        fresh = ServerState(policies=policies, certificate=None, memo=DecisionMemo(max_entries=0))
        recalled = 0
        for variant, body in bodies.items():
            state = ServerState(policies=policies, certificate=None)
            twin = bodies[("b2" if variant[0] == "a1" else "a1", *variant[1:])]
            _admit_mutation(state, twin)
            _admit_mutation(state, twin)
            assert _admit_mutation(state, body) == _admit_mutation(fresh, body), variant
            recalled += state.memo.recall("mutate", body, policies.current) is not None
        assert recalled >= 16  # plain, single uids written first and compactly: recalled
    finally:
        logger.setLevel(level)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.process
def test_replicas_are_answered_from_memory_over_tls(pki: Path, tmp_path: Path) -> None:
    # The benchmark's setting and a quiet production one: --log-level warning, where a replica
    # is answered without parsing. The API server's checks hold for each answer.
    server = ServerProcess(cert_dir=pki, policies=SHIPPED_POLICIES, log_file=tmp_path / "server.log",
                           args=["--log-level", "warning", "--port", str(_free_port())])
    try:
        replica = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "recall-7d4b9c-", "labels": {"app": "recall"}},
                   "spec": {"containers": [{"name": "app", "image": "registry.example.com/recall:1.0"}]}}
        review = make_review(replica, namespace="recall")
        before = _counts(server, "webhook_decision_memo_total")
        conn = server.client.connection()
        patches = []
        # uid-4 and uid-5 end with a second uid member, "uid-4", which is the request's uid.
        for uid, tail in (("uid-1", ""), ("uid-2", ""), ("uid-3", ""),
                          ("uid-4", ',"uid":"uid-4"'), ("uid-5", ',"uid":"uid-4"')):
            raw = exchange(conn, "POST", "/mutate?timeout=10s", _go_body(review["request"], uid, request_tail=tail),
                           headers={"Content-Type": "application/json"})
            sent = {**review, "request": {**review["request"], "uid": "uid-4" if tail else uid}}
            result = verify_response(sent, raw, mutating=True)  # the uid echoed is the one a parser reads
            assert result.allowed
            patches.append(result.response["patch"])
        conn.close()
        after = _counts(server, "webhook_decision_memo_total")
        assert len(set(patches)) == 1
        # uid-2 (which made the entry recallable) and uid-3 (recalled) hit. uid-5 does not (it
        # would echo "uid-5"): its key, cut at the request's uid, keeps the uid it begins
        # with, so uid-4 and uid-5 are two misses.
        assert after[("mutate", "hit")] - before.get(("mutate", "hit"), 0) == 2
        assert after[("mutate", "miss")] - before.get(("mutate", "miss"), 0) == 3
        assert [e for e in server.log_lines() if e.get("level") in ("error", "critical")] == []
    finally:
        server.stop()
