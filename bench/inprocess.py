"""CPU per review in process: the engine, parsing and the answer timed in a loop with
`time.process_time`, before any server runs (so the machine is as quiet as it gets)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import corpus
from bench.servers import ROOT

PODS = ("200KiB", "1c")
ENDPOINTS = ("mutate", "validate")
STAGES = ("engine", "parse+engine", "parse+engine+response")


def cpu_per_call(fn: Callable[[], Any], *, rounds: int = 5, round_seconds: float = 0.15) -> float:
    """Median over `rounds` of CPU seconds per call (time.process_time), each round
    running `fn` until it has used `round_seconds` of CPU (at least 10 calls)."""
    fn()
    results = []
    for _ in range(rounds):
        calls, start = 0, time.process_time()
        while True:
            fn()
            calls += 1
            used = time.process_time() - start
            if calls >= 10 and used >= round_seconds:
                break
        results.append(used / calls)
    return statistics.median(results)


def in_process_cpu(*, rounds: int = 5, round_seconds: float = 0.15) -> dict[str, float]:
    """Seconds per call, keyed `{endpoint}/{pod}/{stage}`, and `bytes/{pod}`: each pod's body size."""
    import orjson

    from webhook.engine import mutate, validate
    from webhook.policy.loader import load_policy_dir
    from webhook.admission.review import envelope_json, parse_review, response_fields

    policies = load_policy_dir(ROOT / "policies")
    out: dict[str, float] = {}
    for pod_label, raw in (("200KiB", corpus.body(corpus.large_pod())),
                           ("1c", corpus.body(corpus.synthetic_pod(1)))):
        request = parse_review(raw).request
        for name, engine, mutating in (("mutate", mutate, True), ("validate", validate, False)):
            def engine_only() -> None:
                engine(request, policies)

            def with_parse() -> None:
                engine(parse_review(raw).request, policies)

            def full() -> None:  # the server's answer on a miss: fields serialised, envelope joined
                review = parse_review(raw)
                decision = engine(review.request, policies)
                envelope_json(api_version=review.api_version, uid=review.request.uid,
                              fields_json=orjson.dumps(response_fields(decision, mutating=mutating)))

            for stage, fn in zip(STAGES, (engine_only, with_parse, full)):
                out[f"{name}/{pod_label}/{stage}"] = cpu_per_call(fn, rounds=rounds, round_seconds=round_seconds)
        out[f"bytes/{pod_label}"] = len(raw)
    return out
