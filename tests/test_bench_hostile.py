"""bench/hostile.py's machinery, on small cases, so that the measurement cannot rot.

The full run (`make bench-hostile`) takes minutes; here a real worker answers a few
small cases through the same code, and the judging is checked on made-up outcomes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import hostile  # noqa: E402  (bench/hostile.py)
import hostile_bodies as bodies  # noqa: E402
from hostile import Answer, Case, Extra, Outcome  # noqa: E402


def _outcome(*answers: Answer, peak: float = 80.0, settled: float | None = 60.0, log_line: int = 900,
             extras: list[Extra] | None = None) -> Outcome:
    case = Case("made-up", "a made-up case", lambda worker: ([], []))
    return Outcome(case, list(answers), 55.0, peak, settled, None, log_line, extras or [])


OK = Answer("/validate", 200, None, 300, 0.01)


@pytest.mark.parametrize(("outcome", "missed"), [
    (_outcome(OK), []),
    (_outcome(Answer("/mutate", 400, None, 60, 0.01)), []),            # a clear 4xx is the goal
    (_outcome(Answer("/validate", 200, 422, 200, 0.01)), []),          # a review with a 4xx code too
    (_outcome(OK, peak=250.0), ["peak 250 > 200 MiB"]),
    (_outcome(OK, settled=150.0), ["RSS after 150 > 100 MiB"]),
    (_outcome(OK, settled=None), []),                                  # small cases are not settled
    (_outcome(Answer("/mutate", 500, None, 57, 0.01)), ["/mutate: 500"]),
    (_outcome(Answer("/validate", 200, 500, 271, 0.01)), ["/validate: 200/500"]),
    (_outcome(Answer("/validate", 0, None, 0, 5.0, "TimeoutError")), ["/validate: no answer (TimeoutError)"]),
    (_outcome(OK, log_line=hostile.TARGET_LOG_LINE_BYTES + 1), ["log line 65,537 > 65,536 B"]),
    (_outcome(OK, extras=[Extra("served", False, "127.0.0.2 got no answer")]), ["127.0.0.2 got no answer"]),
])
def test_an_outcome_misses_exactly_the_targets_it_misses(outcome: Outcome, missed: list[str]) -> None:
    assert outcome.misses() == missed
    assert outcome.passed is (not missed)
    row = hostile.table([outcome]).splitlines()[-1]
    assert ("| PASS |" in row) is (not missed)


@pytest.mark.slow
def test_the_bodies_are_the_issues_cases() -> None:
    label = json.loads(bodies.label_600())
    assert len(label["request"]["object"]["metadata"]["labels"]["app"]) == 100_000
    assert len(label["request"]["object"]["spec"]["containers"]) == 600
    privileged = bodies.privileged_30k()
    assert 2.6e6 < len(privileged) < 2.8e6
    assert len(json.loads(privileged)["request"]["object"]["spec"]["containers"]) == 30_000
    assert len(json.loads(bodies.uid_3mb())["request"]["uid"]) == 3_000_000
    resources = json.loads(bodies.quantity_review(0, 1_000_000))["request"]["object"]["spec"]["containers"][0][
        "resources"]
    quantities = {resources["requests"]["memory"], resources["limits"]["memory"]}
    assert len(quantities) == 2 and all(len(q) > 1e6 for q in quantities)
    # Nested as deep as the issue's case, and still within what the server's JSON parser reads.
    # (Comparing the two halves in Python would itself raise RecursionError: the issue's bug.)
    deep = orjson.loads(bodies.deep_update())["request"]
    assert deep["operation"] == "UPDATE" and deep["object"].keys() == deep["oldObject"].keys()
    assert bodies.deep_update().count(b'{"a":') == 2 * (990 - 5)
    # The second /mutate pass's answer carries the pod's own nested volume.
    patch_case = json.loads(bodies.deep_patch())["request"]["object"]
    assert [v["name"] for v in patch_case["spec"]["volumes"]][-1] == "data"
    assert all(len(body) < bodies.BODY_LIMIT for body in (privileged, bodies.uid_3mb()))


def test_the_case_list_is_complete_and_named_once(capsys: pytest.CaptureFixture[str]) -> None:
    names = [c.name for c in hostile.CASES]
    assert len(names) == len(set(names)) == 15
    assert hostile.main(["--list"]) == 0
    assert capsys.readouterr().out.count("\n") == len(names)
    with pytest.raises(SystemExit):
        hostile.main(["--cases", "no-such-case"])


@pytest.mark.process
def test_small_cases_against_a_real_worker() -> None:
    """A malformed body, a settled small review, and the two-address check with a few
    connections, each against its own pinned worker."""
    cases = [
        next(c for c in hostile.CASES if c.name == "malformed-apiversion-object"),
        Case("normal", "a normal review", hostile.one_request("/validate?timeout=5s", bodies.normal_review)),
        Case("connections-5", "5 connections, then another address", hostile.many_connections(5), heavy=False),
    ]
    malformed, normal, connections = hostile.run(cases, settle=0.3)
    # The malformed body gets an answer (a 4xx once fixed, a 500 before) and is judged by it.
    [answer] = malformed.answers
    assert 400 <= answer.status < 600 and answer.size > 0
    assert (f"{answer.label}: {answer.describe()}" in malformed.misses()) is answer.server_error
    assert malformed.settled_mib is None and malformed.log_line > 0
    # A normal review passes every target, RSS read before, at its peak and after.
    assert normal.passed, normal.misses()
    assert normal.answers[0].status == 200 and normal.answers[0].code is None
    assert 20 < normal.idle_mib <= normal.peak_mib < hostile.TARGET_PEAK_MIB
    assert normal.settled_mib is not None and normal.settled_mib > 20
    [extra] = connections.extras
    assert extra.ok and extra.seen == "127.0.0.2 served beside 5 of 5 connections held from 127.0.0.1"
    assert connections.answers[0].status == 200
