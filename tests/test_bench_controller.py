"""bench/controller.py on a small cluster: the figures are there and consistent (no timing
asserted: the machine is shared)."""

from __future__ import annotations

import pytest

from bench.controller import TARGETS, measure


@pytest.mark.process
def test_the_controller_benchmark_measures_every_figure() -> None:
    figures = measure(workloads=20, replicas=2, events=10)
    assert figures["pods"] == figures["evaluated"] == 40
    assert figures["deployments_resolved"] == 20            # every pod's owner checked and found
    assert figures["current_after_start"] == 40            # copies of admitted pods: current
    assert figures["stale_in_place_after_change"] == 40    # the sidecar image bump: stale, in place
    assert figures["pod_events"] >= 10
    for key in TARGETS:
        assert figures[key] is not None and figures[key] > 0, key
    assert isinstance(figures["targets_met"], bool)
