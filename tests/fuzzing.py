"""Hypothesis settings for the property-based tests.

`make test` (and any plain pytest run) is deterministic: every property test draws the
same examples on every run (derandomised, no example database), so the test command
never fails at random. WEBHOOK_FUZZ=long runs them randomised, with `examples(n)` many
times more examples each; a failure prints the example and a blob to reproduce it, and
the input it found is then kept as an @example in the test (docs/operations.md).
"""

from __future__ import annotations

import os

from hypothesis import settings

LONG = os.environ.get("WEBHOOK_FUZZ", "") == "long"
# How many times more examples a long run draws.
LONG_RUN_FACTOR = 40

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("long", derandomize=False, database=None, print_blob=True,
                          max_examples=100 * LONG_RUN_FACTOR)
settings.load_profile("long" if LONG else "deterministic")


def examples(n: int) -> int:
    """`n` examples in the deterministic run, LONG_RUN_FACTOR times as many in a long one."""
    return n * LONG_RUN_FACTOR if LONG else n
