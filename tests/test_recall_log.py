"""A request the memo answers without parsing (webhook/engine/memo.py `recall`) is logged
at info as a parsed one is: the decision log line is built from what was stored with the
answer and the names the request's own bytes hold."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.apiserver import make_review
from tests.conftest import SHIPPED_POLICIES
from tests.test_decision_memo import _go_body, _memo_counts, admit, count_parses
from tests.test_validation_recall import _ALIKE, _replica, _violating_pod
from webhook.admission import server as server_module
from webhook.admission.memo import DecisionMemo
from webhook.runtime.policy_holder import PolicyHolder
from webhook.admission.server import ServerState

CORPUS = sorted((Path(__file__).parent / "data" / "corpus").glob("*.yaml"))
LOGGED = ("endpoint", "uid", "namespace", "podName", "generateName", "owner", "operation", "kind", "outcome",
          "policies", "denyMessage", "warnings", "violations", "policyRevision", "dryRun")


def _corpus_pods() -> list[dict[str, Any]]:
    return [doc for path in CORPUS for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("kind") == "Pod"]


def _requests() -> list[tuple[str, bytes]]:
    """Replicas at both endpoints, as the API server writes them: owned pods of a rollout at
    validation (named, each name of one length), the same pods unnamed at mutation."""
    owned = _violating_pod()
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                             "uid": "11111111-2222-4333-8444-555555555555"}]
    sent: list[tuple[str, bytes]] = []
    for pod in [owned, *_corpus_pods()]:
        for n in range(4):  # a decision, its first repeat (which makes it recallable), recalls
            sent.append(("validate", orjson.dumps(_replica(pod, n))))
            unnamed = copy.deepcopy(pod)
            unnamed.setdefault("metadata", {}).pop("name", None)
            unnamed["metadata"]["generateName"] = "web-7d4b9c-"
            sent.append(("mutate", _go_body(make_review(unnamed, namespace="shop")["request"], f"uid-{n}")))
    return sent


def _lines(state: ServerState, sent: list[tuple[str, bytes]], caplog: pytest.LogCaptureFixture) -> list[Any]:
    caplog.clear()
    for endpoint, body in sent:
        assert admit(state, endpoint, body)[0] == 200
    return [(r.getMessage(), {field: getattr(r, field) for field in LOGGED})
            for r in caplog.records if getattr(r, "event", None) == "decision"]


def test_a_recalled_request_is_logged_as_a_parsed_one(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=server_module.log.name)
    policies = PolicyHolder.load(SHIPPED_POLICIES)
    sent = _requests()
    fresh = _lines(ServerState(policies=policies, certificate=None, memo=DecisionMemo(max_entries=0)), sent, caplog)
    parsed = count_parses(monkeypatch)
    state = ServerState(policies=policies, certificate=None)
    remembered = _lines(state, sent, caplog)
    assert len(fresh) == len(sent)
    assert remembered == fresh
    # Not vacuous: most replicas after the second were answered without parsing them.
    counts = _memo_counts(state)
    assert counts[("validate", "hit")] >= 3 * len(sent) // 8 and counts[("mutate", "hit")] >= 3 * len(sent) // 8
    assert len(sent) - parsed["n"] >= len(sent) // 3
    assert {line["podName"] for _, line in remembered if line["endpoint"] == "validate"} >= \
        {f"web-7d4b9c-{n:05d}" for n in range(3)}
    assert any(line["owner"] == "ReplicaSet/web-7d4b9c" for _, line in remembered)


@pytest.mark.parametrize("case", sorted(_ALIKE))
def test_bodies_whose_places_lie_alike_are_logged_with_their_own_names(case: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=server_module.log.name)
    policies = PolicyHolder.load(SHIPPED_POLICIES)
    first, second, third = _ALIKE[case]
    sent = [("validate", body) for body in (first, first, second, second, third)]
    fresh = _lines(ServerState(policies=policies, certificate=None, memo=DecisionMemo(max_entries=0)), sent, caplog)
    state = ServerState(policies=policies, certificate=None)
    assert _lines(state, sent, caplog) == fresh
    assert _memo_counts(state)[("validate", "hit")] == 3
    assert state.memo.recall("validate", third, policies.current) is not None  # answered by shape
