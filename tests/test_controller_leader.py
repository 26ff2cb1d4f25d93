"""Lease leader election (webhook/controller/leader.py) round by round, on a clock of the
test's: expiry judged by the follower's own clock, a race for the Lease won by one, a
leader that cannot renew stops acting, a released Lease taken at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.fake_apiserver import FakeApiServer
from webhook.controller.leader import LeaderElector
from webhook.kube.client import load_api_client

NS, NAME = "webhook-system", "webhook-controller"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        server.put({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": NAME, "namespace": NS}, "spec": {}})
        yield server


@pytest.fixture
def api(fake: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    with load_api_client(fake.write_kubeconfig(tmp_path / "kubeconfig")) as client:
        yield client


def elector(api: Any, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(api, NS, NAME, identity, lease_duration=15, renew_deadline=10, retry_period=2, clock=clock)


def holder(fake: FakeApiServer) -> str | None:
    return fake.get("leases", NAME, NS)["spec"].get("holderIdentity")


def test_the_follower_takes_over_only_after_the_lease_expired_on_its_own_clock(fake: FakeApiServer,
                                                                                api: Any) -> None:
    clock_a, clock_b = Clock(), Clock()
    clock_b.now = 5_000.0          # another clock altogether: never compared with a's
    a, b = elector(api, "a", clock_a), elector(api, "b", clock_b)
    assert a.try_acquire_or_renew() and holder(fake) == "a"
    assert not b.try_acquire_or_renew()
    clock_b.now += 14
    assert not b.try_acquire_or_renew()          # a renews nothing, but 15 s have not passed for b
    clock_a.now += 2
    assert a.try_acquire_or_renew()              # a renews: b's count starts again
    clock_b.now += 14
    assert not b.try_acquire_or_renew()
    clock_b.now += 16                            # a silent for longer than the duration
    assert b.try_acquire_or_renew() and holder(fake) == "b"
    assert fake.get("leases", NAME, NS)["spec"]["leaseTransitions"] == 1
    clock_a.now += 2
    assert not a.try_acquire_or_renew()          # a sees b holding it, freshly renewed
    assert not a.is_leader


def test_of_two_racing_for_the_lease_one_wins(fake: FakeApiServer, api: Any) -> None:
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    lease = fake.get("leases", NAME, NS)
    # b read the Lease before a wrote it: its update carries a stale resourceVersion.
    a.try_acquire_or_renew()
    with pytest.raises(ApiException) as refused:
        b._update(lease, took_over=True)
    assert refused.value.status == 409 and holder(fake) == "a"


def test_a_leader_that_cannot_renew_stops_acting_before_it_can_expire(fake: FakeApiServer, api: Any) -> None:
    clock = Clock()
    a = elector(api, "a", clock)
    assert a.try_acquire_or_renew()
    fake.fail("get", "leases", NAME, code=500, times=100)
    clock.now += 9
    assert a.is_leader and a.try_acquire_or_renew()   # within the renew deadline
    clock.now += 2
    assert not a.try_acquire_or_renew() and not a.is_leader
    assert a.last_error and "500" in a.last_error


def test_a_released_lease_is_taken_at_once(fake: FakeApiServer, api: Any) -> None:
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.stop()                                     # a clean stop releases the Lease
    assert holder(fake) is None and not a.is_leader
    assert b.try_acquire_or_renew() and holder(fake) == "b"
