"""Differential test of the decision memo: every answer a server with the memo gives must be
the one a server without it (`--decision-memo 0`) gives the same body, byte for byte, and
its decision log line must name the same request.

Sequences of AdmissionReview bodies are sent to both: one review, then variants of it as a
rollout's replicas would differ (uid, names, server-set metadata, of the same length or
not) and as an adversary might write them (duplicate members, which a parser resolves to
the last; unicode-escaped or slash-escaped strings; spacing and member order; uids and
names holding quotes, backslashes or another member's text), reviews that differ in what
decides (user, groups, namespace, operation, dryRun, subresource, oldObject, apiVersion,
image), same-length byte edits of a body already remembered, a policy reload and the UTC
date turning (an exception expires). Each body goes to /mutate or /validate, once or
several times (an entry becomes recallable without parsing on its first repeat)."""

from __future__ import annotations

import gc
import logging
import random
import time
import tracemalloc
import types
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SHIPPED_POLICIES
from webhook.admission import server as server_module
from webhook.admission import memo as memo_module
from webhook.engine import mutate, validate
from webhook.admission.memo import DecisionMemo
from webhook.policy.loader import PolicySet, load_policy_sources
from webhook.admission.server import ServerState, answer_memo

import importlib

validate_module = importlib.import_module("webhook.engine.validate")

ENGINES = {"mutate": mutate, "validate": validate}
DAY0 = datetime.now(timezone.utc).date()

# The shipped policies (injection and validation), plus one whose exceptions select by user,
# group and pod labels, one whose exception expires on DAY0 (so it lapses when the day turns), and
# one that warns of a missing label, and one that excludes a namespace.
_EXTRA = f"""
apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata: {{name: zz-no-latest}}
spec:
  action: Enforce
  rules:
    - images: {{forbidLatest: true}}
  exceptions:
    - {{reason: break-glass, usernames: [alice]}}
    - {{reason: ops, groups: [ops]}}
    - {{reason: legacy, podSelector: {{matchLabels: {{legacy: "yes"}}}}}}
---
apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata: {{name: zz-dated}}
spec:
  action: Enforce
  rules:
    - images: {{forbidLatest: true}}
  exceptions:
    - {{reason: migration, namespaces: [shop, billing], expires: "{DAY0.isoformat()}"}}
---
apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata: {{name: zz-app-label}}
spec:
  action: Warn
  rules:
    - requiredLabels: [{{key: app}}]
---
apiVersion: runtime.platform.io/v1
kind: ValidationPolicy
metadata: {{name: zz-no-privileged}}
spec:
  action: Enforce
  match: {{namespaces: {{exclude: [kube-system]}}}}
  rules:
    - privileged: {{}}
"""


def _sources(extra: bool) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in Path(SHIPPED_POLICIES).glob("*.yaml")}
    if extra:
        files["zz-extra.yaml"] = _EXTRA.encode()
    return files


# Three sets: two alike (a reload to the same content is still a new set) and one without
# the extra policies.
POLICY_SETS: list[PolicySet] = [load_policy_sources(_sources(True)), load_policy_sources(_sources(False)),
                                load_policy_sources(_sources(True))]

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
_RESOURCES = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments")}


# --- a JSON writer with duplicate members, escapes, spacing and member order --------------

class Members(list):  # type: ignore[type-arg]
    """An object as a list of (name, value) pairs: it may repeat a name."""


def _members(value: Any) -> Any:
    if isinstance(value, dict):
        return Members((k, _members(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_members(v) for v in value]
    return value


class Style:
    def __init__(self, rng: random.Random, *, spaced: bool, escape: float, slashes: bool) -> None:
        self.rng, self.spaced, self.escape, self.slashes = rng, spaced, escape, slashes

    def string(self, text: str) -> str:
        out = []
        for ch in text:
            if self.escape and self.rng.random() < self.escape:
                out.append("\\u%04x" % ord(ch) if ord(ch) < 0x10000 else orjson.dumps(ch).decode()[1:-1])
            elif ch == "/" and self.slashes:
                out.append("\\/")
            else:
                out.append(orjson.dumps(ch).decode()[1:-1])
        return '"' + "".join(out) + '"'

    def dump(self, value: Any) -> str:
        colon, comma = (": ", ", ") if self.spaced else (":", ",")
        if isinstance(value, Members):
            return "{" + comma.join(self.string(k) + colon + self.dump(v) for k, v in value) + "}"
        if isinstance(value, list):
            return "[" + comma.join(self.dump(v) for v in value) + "]"
        if isinstance(value, str):
            return self.string(value)
        return orjson.dumps(value).decode()


# --- reviews ------------------------------------------------------------------------------

# Uids and names: plain ones of several lengths, and ones holding what JSON escapes or the
# text of other members.
_TRICKY = ['a"b', "a\\b", 'x","uid":"y', '","namespace":"kube-system', "\u00e9t\u00e9", "a/b", "~0~", ""]
plain_uids = st.one_of(st.sampled_from(["u1", "u2", "x1", "y1", "00000000-0000-4000-8000-000000000001",
                                        "00000000-0000-4000-8000-000000000002"]),
                       st.text(alphabet="abxy019-_.", min_size=1, max_size=40))
uids = st.one_of(
    plain_uids, plain_uids, plain_uids,
    st.sampled_from(["u1", "u2", "x1", "y1", "uid", "00000000-0000-4000-8000-000000000001",
                     "00000000-0000-4000-8000-000000000002", "web-7d4b9c-00001", "A" * 128, "B" * 129]),
    st.sampled_from(_TRICKY[:-1]),
    st.text(alphabet="abxy019-_.:\"\\/ ", min_size=1, max_size=12))
names = st.one_of(st.sampled_from(["web-7d4b9c-00001", "web-7d4b9c-00002", "u1", "uid", "shop", "pods"]),
                  st.sampled_from(_TRICKY), st.text(alphabet="abxy019-_.:\"\\/ ", max_size=12))


@st.composite
def reviews(draw: st.DrawFn, *, pod_create: bool = False) -> dict[str, Any]:
    """`pod_create`: only a pod's CREATE (which the mutation memo keeps)."""
    kind = "Pod" if pod_create else draw(st.sampled_from(["Pod"] * 5 + ["Deployment"]))
    group, version, resource = _RESOURCES[kind]
    image = draw(st.sampled_from(["registry.example.com/app:1.0", "registry.example.com/app:latest", "busybox:latest"]))
    container: dict[str, Any] = {"name": "app", "image": image}
    if draw(st.booleans()):
        container["securityContext"] = {"privileged": draw(st.booleans())}
    labels = draw(st.sampled_from([{}, {"app": "web"}, {"legacy": "yes"}, {"app": "web", "legacy": "no"}]))
    meta: dict[str, Any] = {"generateName": "web-7d4b9c-", "labels": labels}
    if kind == "Pod":
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [container]}}
    else:
        pod = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}
    if draw(st.booleans()):  # as validating admission sees it: server-set metadata
        n = draw(st.integers(0, 99))
        pod["metadata"] = {**pod["metadata"], "name": f"web-7d4b9c-{n:05d}", "uid": f"00000000-0000-4000-8000-{n:012d}",
                           "creationTimestamp": f"2026-11-26T00:00:{n % 60:02d}Z",
                           "managedFields": [{"manager": "kube-controller-manager",
                                              "time": f"2026-11-26T00:00:{n % 60:02d}Z"}]}
    operation = "CREATE" if pod_create else draw(st.sampled_from(["CREATE"] * 5 + ["UPDATE", "UPDATE", "DELETE"]))
    request: dict[str, Any] = {
        "uid": draw(uids),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": draw(st.sampled_from(["shop", "billing", "kube-system"])),
        "operation": operation,
        "userInfo": {"username": draw(st.sampled_from(["alice", "bob"])), "uid": "1",
                     "groups": draw(st.sampled_from([["system:authenticated"], ["ops"], []]))},
        "object": pod,
        "oldObject": None,
    }
    if operation == "UPDATE":
        old = orjson.loads(orjson.dumps(pod))
        if draw(st.booleans()):
            old.setdefault("spec", {})["nodeName"] = "n1"  # a different pod before
        request["oldObject"] = old
    if draw(st.booleans()):
        request["name"] = pod["metadata"].get("name", "")
    if draw(st.booleans()):
        request["dryRun"] = draw(st.booleans())
    if not pod_create and draw(st.integers(0, 9)) == 0:
        request["subResource"] = draw(st.sampled_from(["", "status", "ephemeralcontainers"]))
    return {"kind": "AdmissionReview", "apiVersion": draw(st.sampled_from(API_VERSIONS)), "request": request}


def _copy(review: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(review))


_CHANGES = ["uid", "plain-uid", "uid-same-length", "names-same-length", "name", "pod-name", "namespace", "user", "groups", "operation", "dryRun",
            "apiVersion", "image", "subResource", "oldObject", "labels"]


@st.composite
def variants(draw: st.DrawFn, base: dict[str, Any], changes: list[str] | None = None) -> dict[str, Any]:
    """`base` as another replica (server-set values changed), or changed in what decides."""
    review = _copy(base)
    request = review["request"]
    meta = request["object"]["metadata"]
    if changes is None:
        changes = draw(st.lists(st.sampled_from(_CHANGES), min_size=1, max_size=3))
    for change in changes:
        if change == "uid":
            request["uid"] = draw(uids)
        elif change == "plain-uid":
            request["uid"] = draw(plain_uids)
        elif change == "uid-same-length":
            # its plain characters replaced: one holding what JSON escapes stays uncut, as long
            uid = request["uid"] or "u"
            request["uid"] = "".join(draw(st.sampled_from("abxy019-")) if c.isascii() and c.isalnum() else c
                                     for c in uid)
        elif change == "names-same-length":
            for holder, key in ((request, "name"), (meta, "name"), (meta, "uid"), (meta, "creationTimestamp")):
                if isinstance(holder.get(key), str) and holder[key]:
                    holder[key] = draw(st.text(alphabet="abxy019-:Z", min_size=len(holder[key]),
                                               max_size=len(holder[key])))
            for entry in meta.get("managedFields", []):
                entry["time"] = draw(st.text(alphabet="0123:Z", min_size=len(entry["time"]),
                                             max_size=len(entry["time"])))
        elif change == "name":
            request["name"] = draw(names)
        elif change == "pod-name":
            meta["name"] = draw(names)
        elif change == "namespace":
            request["namespace"] = draw(st.sampled_from(["shop", "shap", "billing", "kube-system"]))
        elif change == "user":
            request["userInfo"]["username"] = draw(st.sampled_from(["alice", "bob", "Alice"]))
        elif change == "groups":
            request["userInfo"]["groups"] = draw(st.sampled_from([["ops"], ["system:authenticated"], [], ["ops", "x"]]))
        elif change == "operation":
            request["operation"] = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]))
        elif change == "dryRun":
            request["dryRun"] = draw(st.sampled_from([True, False, None, "true"]))
        elif change == "apiVersion":
            review["apiVersion"] = draw(st.sampled_from(API_VERSIONS))
        elif change == "image":
            for c in _containers(request["object"]):
                c["image"] = draw(st.sampled_from(["registry.example.com/app:1.0", "registry.example.com/app:latest"]))
        elif change == "subResource":
            request["subResource"] = draw(st.sampled_from(["", "status", "ephemeralcontainers", "resize"]))
        elif change == "oldObject":
            old = _copy(request["object"])
            if draw(st.booleans()):
                old.setdefault("spec", {})["nodeName"] = "n2"
            request["oldObject"] = draw(st.sampled_from([None, old]))
        elif change == "labels":
            meta["labels"] = draw(st.sampled_from([{}, {"legacy": "yes"}, {"app": "web"}]))
    return review


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if "template" in spec:
        spec = spec["template"]["spec"]
    return spec["containers"]


_DUPLICATES = [  # (where, member, value): a member written again, last
    ((), "apiVersion", "admission.k8s.io/v1"), ((), "apiVersion", "admission.k8s.io/v1beta1"),
    ((), "kind", "NotAReview"), ((), "request", None),
    (("request",), "uid", "u1"), (("request",), "uid", "x1"), (("request",), "uid", ""),
    (("request",), "namespace", "kube-system"), (("request",), "name", "other"),
    (("request",), "operation", "DELETE"), (("request",), "userInfo", {"username": "alice"}),
    (("request", "object", "metadata"), "name", "web-7d4b9c-00001"),
    (("request", "object", "metadata"), "uid", "u1"),
    (("request", "object", "metadata"), "labels", {"legacy": "yes"}),
]


class Writing(types.SimpleNamespace):
    """How a review is written: `write` it."""

    def write(self, review: dict[str, Any]) -> bytes:
        rng = random.Random(self.seed)
        tree = _members(review)
        request = dict(tree)["request"]
        if self.writer == "go":  # as the API server writes it: kind, apiVersion, then the request, uid first
            tree.sort(key=lambda kv: ("kind", "apiVersion", "request").index(kv[0]))
            request.sort(key=lambda kv: kv[0] != "uid")
        elif self.writer == "compact":
            tree.sort(key=lambda kv: ("apiVersion", "kind", "request").index(kv[0]))
        elif self.writer == "shuffled":
            rng.shuffle(tree)
            rng.shuffle(request)
        if self.duplicate is not None:
            where, member, value, first = self.duplicate
            if value is None:  # another request altogether, later
                value = {**_copy(review)["request"], "uid": "u2"}
            holder: Any = tree
            for step in where:
                holder = dict(holder).get(step)
            if isinstance(holder, Members):
                holder.insert(0 if first else len(holder), (member, _members(value)))
        return Style(rng, spaced=self.spaced, escape=self.escape, slashes=self.slashes).dump(tree).encode()


@st.composite
def writings(draw: st.DrawFn, *, go: bool = False, duplicate: bool = False) -> Writing:
    """`go`: as the API server writes (so a mutation may be recalled), but perhaps with a
    `duplicate` member (always when asked)."""
    writer = "go" if go else draw(st.sampled_from(["go", "go", "go", "compact", "spaced", "shuffled"]))
    if duplicate or draw(st.integers(0, 2)) == 0:
        # those a recall must see through, twice as often
        duplicate = (*draw(st.sampled_from(_DUPLICATES + _DUPLICATES[:2] + _DUPLICATES[4:6])), draw(st.booleans()))
    else:
        duplicate = None
    plain = go and duplicate  # written as the API server would but for the duplicate
    return Writing(writer=writer, seed=draw(st.integers(0, 2**32)), duplicate=duplicate,
                   spaced=writer == "spaced" or (not plain and draw(st.integers(0, 5)) == 0),
                   escape=0.0 if plain else draw(st.sampled_from([0.0] * 8 + [0.02, 0.3])),
                   slashes=not plain and draw(st.integers(0, 5)) == 0)


@st.composite
def bodies(draw: st.DrawFn, review: dict[str, Any]) -> bytes:
    """`review` written one of several ways, perhaps with members repeated."""
    return draw(writings()).write(review)


# --- the two servers ------------------------------------------------------------------------

class Clock:
    """Today, as the memo and the validation engine both read it."""

    def __init__(self) -> None:
        self.day = DAY0

    def now(self) -> datetime:
        return datetime.combine(self.day, datetime.min.time().replace(hour=12), tzinfo=timezone.utc)


class Decisions(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[Any, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "decision":
            self.lines.append((record.getMessage(), record.uid, record.namespace, record.podName,  # type: ignore[attr-defined]
                               record.generateName, record.owner, record.operation, record.kind,  # type: ignore[attr-defined]
                               record.outcome, record.dryRun, tuple(record.violations)))  # type: ignore[attr-defined]


def _answer(state: ServerState, endpoint: str, body: bytes, lines: Decisions) -> tuple[Any, ...]:
    before = len(lines.lines)
    response = server_module._admit(body, state, endpoint, ENGINES[endpoint], endpoint == "mutate",
                                    time.perf_counter(), float("inf"))
    logged = tuple(lines.lines[before:])
    return response.status, response.body, logged


def run_differential(steps: list[tuple[Any, ...]], *, level: int, memo: DecisionMemo | None = None) -> None:
    """Play `steps` against a server with `memo` (a default one if None) and one without; every
    answer and decision log line must be the same."""
    holder = types.SimpleNamespace(current=POLICY_SETS[0])
    with_memo = ServerState(policies=holder, certificate=None,  # type: ignore[arg-type]
                            memo=memo if memo is not None else answer_memo())
    without = ServerState(policies=holder, certificate=None, memo=DecisionMemo(max_entries=0))  # type: ignore[arg-type]
    clock = Clock()

    class Now(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return clock.now()

    lines = Decisions()
    logger = server_module.log
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(lines)
    logger.setLevel(level)
    logger.propagate = False
    reloads = 0
    try:
        with mock.patch.object(memo_module, "datetime", Now), mock.patch.object(validate_module, "datetime", Now):
            for n, step in enumerate(steps):
                if step[0] == "reload":
                    reloads += 1
                    holder.current = POLICY_SETS[reloads % len(POLICY_SETS)]
                    continue
                if step[0] == "tomorrow":
                    clock.day += timedelta(days=1)
                    continue
                _, endpoint, body = step
                got = _answer(with_memo, endpoint, body, lines)
                expected = _answer(without, endpoint, body, lines)
                assert got == expected, (n, endpoint, body, with_memo.memo.recall(endpoint, body, holder.current))
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _byte_edit(body: bytes, position: int, char: int) -> bytes:
    at = position % len(body)
    return body[:at] + bytes([char]) + body[at + 1:]


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    base, base_writing = draw(reviews()), draw(writings())
    primary = draw(st.sampled_from(["mutate", "validate"]))
    endpoints = st.sampled_from([primary] * 3 + ["mutate" if primary == "validate" else "validate"])
    steps: list[tuple[Any, ...]] = []
    sent: list[bytes] = [base_writing.write(base)]
    steps += [("send", primary, sent[0])] * draw(st.integers(1, 3))  # a repeat makes an entry recallable
    for _ in range(draw(st.integers(1, 7))):
        what = draw(st.sampled_from(["base", "variant", "variant", "variant", "replicas", "replicas", "edit",
                                     "edit", "reload", "tomorrow"]))
        if what == "reload":
            steps.append(("reload",))
            continue
        if what == "tomorrow":
            steps.append(("tomorrow",))  # and a body remembered yesterday again
            steps.append(("send", draw(endpoints), draw(st.sampled_from(sent))))
            continue
        if what == "replicas":  # a rollout: one writing, new uids (and at validation, names)
            endpoint = draw(endpoints)
            writing = draw(st.sampled_from([base_writing, draw(writings(go=draw(st.booleans())))]))
            review = draw(st.sampled_from([base, draw(variants(base))]))
            for _ in range(draw(st.integers(2, 6))):
                change = draw(st.sampled_from(["plain-uid", "plain-uid", "uid-same-length"]
                                              + ["names-same-length"] * (endpoint == "validate")))
                review = draw(variants(review, changes=[change]))
                sent.append(writing.write(review))
                steps.append(("send", endpoint, sent[-1]))
            continue
        if what == "edit":  # a byte of a body sent before, perhaps inside a value replicas differ in
            body = draw(st.sampled_from(sent))
            position = draw(st.integers(0, 10**6))
            member = draw(st.sampled_from([None, b'"uid":"', b'"name":"', b'"creationTimestamp":"', b'"time":"']))
            at = body.find(member) if member is not None else -1
            if at >= 0:
                position = at + len(member) + position % 8
            body = _byte_edit(body, position, draw(st.sampled_from(b'a0-""\\\\ :,}{]xu')))
        else:
            review = base if what == "base" else draw(variants(base))
            body = draw(st.sampled_from([base_writing, draw(writings())])).write(review)
        sent.append(body)
        steps += [("send", draw(endpoints), body)] * draw(st.sampled_from([1, 2, 3, 3]))
    return steps


DIFFERENTIAL = settings(max_examples=400, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
@DIFFERENTIAL
@given(steps=scenarios())
def test_the_memo_answers_every_body_as_a_server_without_it(level: int, steps: list[tuple[Any, ...]]) -> None:
    run_differential(steps, level=level)


@st.composite
def pairs(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A review remembered, then one that differs from it in one way: one field, the way it
    is written, or the day or policy set it is decided under."""
    base, writing = draw(reviews()), draw(writings())
    endpoint = draw(st.sampled_from(["mutate", "validate"]))
    first = writing.write(base)
    change = draw(st.sampled_from([*dict.fromkeys(_CHANGES), "rewrite", "reload", "tomorrow"]))
    if change in ("reload", "tomorrow"):
        return [("send", endpoint, first)] * 3 + [(change,)] + [("send", endpoint, first)] * 3
    if change == "rewrite":
        second = draw(writings()).write(base)
    else:
        changes = [change, *draw(st.sampled_from([[], [], ["uid-same-length"]]))]
        second = draw(st.sampled_from([writing, draw(writings())])).write(draw(variants(base, changes=changes)))
    return [("send", endpoint, first)] * 3 + [("send", endpoint, second)] * 3


@pytest.mark.slow
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
@DIFFERENTIAL
@given(steps=pairs())
def test_a_review_that_differs_in_one_way_is_answered_as_without_the_memo(level: int,
                                                                          steps: list[tuple[Any, ...]]) -> None:
    run_differential(steps, level=level)


@st.composite
def recalls(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Replicas of a pod written as the API server does but with a member repeated (a later
    one wins): the memo must not answer one by the uid or apiVersion it begins with when
    parsing gives another."""
    base, writing = draw(reviews(pod_create=True)), draw(writings(go=True, duplicate=True))
    endpoint = draw(st.sampled_from(["mutate", "mutate", "validate"]))
    steps: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(3, 5))):
        base = draw(variants(base, changes=["plain-uid"]))
        steps += [("send", endpoint, writing.write(base))] * draw(st.integers(1, 2))
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
@settings(DIFFERENTIAL, max_examples=150)
@given(steps=recalls())
def test_replicas_with_a_member_repeated_are_answered_as_without_the_memo(level: int,
                                                                          steps: list[tuple[Any, ...]]) -> None:
    run_differential(steps, level=level)


def _replicas(n: int, review: dict[str, Any], *, named: bool) -> list[bytes]:
    """Reviews of `review`'s pod as replicas reach the webhook, written as the API server does:
    differing in uid and, at validation (`named`), in names of one length."""
    out = []
    for i in range(n):
        r = _copy(review)
        r["request"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        if named:
            meta = r["request"]["object"]["metadata"]
            meta["name"] = r["request"]["name"] = f"web-7d4b9c-{i:05d}"
        out.append(Style(random.Random(0), spaced=False, escape=0, slashes=False).dump(_members(r)).encode())
    return out


def test_the_differential_sequences_reach_every_path() -> None:
    """The generator above must reach the memo's recall paths (else the test proves little):
    a mutation and a validation answered without parsing."""
    review = {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
        "uid": "x", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
        "operation": "CREATE", "userInfo": {"username": "bob"}, "name": "",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "", "generateName": "web-"},
                   "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:latest"}]}}}}
    memo = answer_memo()
    steps = [("send", endpoint, body) for endpoint in ("mutate", "validate")
             for body in _replicas(4, review, named=endpoint == "validate")]
    run_differential(steps, level=logging.WARNING, memo=memo)
    policies = POLICY_SETS[0]
    assert memo.recall("mutate", _replicas(6, review, named=False)[5], policies) is not None
    recalled = memo.recall("validate", _replicas(6, review, named=True)[5], policies)
    assert recalled is not None and recalled.value.outcome == "denied"


@pytest.mark.slow
def test_the_shapes_the_memo_keeps_are_within_its_byte_bound() -> None:
    # A validation's shape is kept by body length and outlives its entries; a uid the memo
    # cannot cut out (it holds what JSON escapes) is part of the shape. Reviews of 70 KB,
    # over the size whose key is serialised again, are shaped on their first sight: with
    # long uids, the shapes held many times what the memo counts and bounds.
    memo = answer_memo(max_entries=16)
    memo.max_bytes = 512 * 1024
    state = ServerState(policies=types.SimpleNamespace(current=POLICY_SETS[0]), certificate=None,  # type: ignore[arg-type]
                        memo=memo)
    logger = server_module.log
    level = logger.level
    logger.setLevel(logging.WARNING)
    tracemalloc.start()
    try:
        for i in range(64):  # 4 shapes for each of 16 lengths
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": '"' + "u" * (70_000 + i // 4) + str(i % 4), "name": "web-7d4b9c-00001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
                "operation": "CREATE", "userInfo": {"username": "bob"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-7d4b9c-00001"},
                           "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]}}}}
            body = orjson.dumps(review)
            assert memo_module.DEFAULT_MAX_OBJECT_BYTES < len(body) < memo_module.DEFAULT_MAX_BODY_KEY_BYTES
            response = server_module._admit(body, state, "validate", validate, False, time.perf_counter(),
                                            float("inf"))
            assert orjson.loads(response.body)["response"]["uid"] == review["request"]["uid"]
        del review, body, response
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        logger.setLevel(level)
    assert memo.size_bytes <= memo.max_bytes
    assert held < 2 * memo.max_bytes, (held, memo.size_bytes)
