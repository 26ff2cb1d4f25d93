"""CPU per review of the engine and its answer, in process, over the test corpus.

    .venv/bin/python bench/engine_cpu.py [--rounds 5]

For each pod of `tests/data/corpus` (as a Pod CREATE review, with the namespace its
file names) it times parse + engine + the serialised answer, as the server does on a
memo miss, with the shipped policies, for /mutate and /validate. Prints the mean over
the corpus of each pod's median (time.process_time), in µs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402
import orjson  # noqa: E402

from bench.inprocess import cpu_per_call  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from webhook.engine import mutate, validate
    from webhook.policy.loader import load_policy_dir
    from webhook.admission.review import envelope_json, parse_review, response_fields

    policies = load_policy_dir(corpus.SHIPPED_POLICIES)
    for name, engine, mutating in (("mutate", mutate, True), ("validate", validate, False)):
        times = []
        for _label, namespace, pod in corpus.corpus_pods():
            raw = corpus.body(pod, namespace=namespace)

            def full() -> None:
                review = parse_review(raw)
                decision = engine(review.request, policies)
                envelope_json(api_version=review.api_version, uid=review.request.uid,
                              fields_json=orjson.dumps(response_fields(decision, mutating=mutating)))
            times.append(cpu_per_call(full, rounds=args.rounds, round_seconds=0.05))
        print(f"{name}: {len(times)} pods, mean {statistics.mean(times) * 1e6:.1f} µs, "
              f"median {statistics.median(times) * 1e6:.1f} µs per review")


if __name__ == "__main__":
    main()
