"""The webhook keeps admitting the pod updates an in-place rollout makes: the fake API server
sends each pod UPDATE to a real `webhook serve` over TLS (both endpoints, as the webhook
configurations do), and the controller's actuator patches pods the shipped policies
injected, after the policies changed under the running server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.conftest import ServerProcess, copy_policies
from tests.fake_apiserver import ApiError, FakeApiServer
from tests.fake_workloads import FakeWorkloads
from webhook.controller.actions import UpdateInPlace
from webhook.controller.actuator import Actuator
from webhook.controller.model import WorkloadRef
from webhook.engine.ledger import ledger_of
from webhook.policy.loader import PolicySet, load_policy_dir

NS = "shop"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SHIPPER = "registry.platform.internal/runtime/log-shipper"
PROXY = "registry.platform.internal/runtime/traffic-proxy"


class Webhook:
    """The API server's side of both webhook configurations, for pod UPDATEs."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, operation: str, resource: str, namespace: str, obj: dict[str, Any],
                 old: dict[str, Any] | None) -> dict[str, Any] | None:
        if resource != "pods" or operation != "UPDATE":
            return None
        mutated = self.server.client.admit(obj, endpoint="/mutate", operation="UPDATE", namespace=namespace,
                                           old_object=old)
        assert mutated.patch is None, "only pod creation is mutated"
        answer = self.server.client.admit(obj, endpoint="/validate", operation="UPDATE", namespace=namespace,
                                          old_object=old).response
        self.seen.append((obj["metadata"]["name"], answer["allowed"]))
        if not answer["allowed"]:
            raise ApiError(403, "Forbidden", f"admission webhook \"validate.runtime.platform.io\" denied the "
                           f"request: {answer['status']['message']}")
        return None


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return copy_policies(tmp_path / "policies")


@pytest.fixture
def webhook(start_server: Any, policy_dir: Path) -> Webhook:
    return Webhook(start_server(policies=policy_dir))


@pytest.fixture
def fake(webhook: Webhook) -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_namespace(NS)
        server.admission.append(webhook)
        yield server


@pytest.fixture
def api_client(fake: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    with config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig"))) as api:
        yield api


def edit(server: ServerProcess, policy_dir: Path, file: str, old: str, new: str) -> PolicySet:
    """Change a policy file and wait until the running server serves the result."""
    path = policy_dir / file
    path.write_text(path.read_text().replace(old, new))
    policies = load_policy_dir(policy_dir)
    server.wait_for_log(lambda e: e.get("event") == "policy_reload" and e.get("revision") == policies.revision)
    return policies


def in_place(pod: dict[str, Any], policies: PolicySet, policy: str, images: dict[str, str]) -> UpdateInPlace:
    record = ledger_of(pod["metadata"]["annotations"]).record(policy)
    assert record is not None
    revision = next(p.revision for p in policies.injectors if p.name == policy)
    return UpdateInPlace(WorkloadRef("Deployment", NS, "web"), NS, pod["metadata"]["name"], pod["metadata"]["uid"],
                         policy, revision, record.revision, images)


def started(fake: FakeApiServer, policy_dir: Path) -> FakeWorkloads:
    workloads = FakeWorkloads(fake, load_policy_dir(policy_dir))
    fake.create("deployments", {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1"}]}}}})
    workloads.settle()
    return workloads


def test_an_in_place_image_update_is_admitted_with_the_new_revision(
        webhook: Webhook, fake: FakeApiServer, api_client: Any, policy_dir: Path) -> None:
    started(fake, policy_dir)
    pod = fake.list("pods", NS)[0]
    assert {c["name"] for c in pod["spec"]["initContainers"]} >= {"log-shipper", "traffic-proxy"}
    policies = edit(webhook.server, policy_dir, "inject-log-shipper.yaml", "log-shipper:3.1.0", "log-shipper:3.2.0")
    action = in_place(pod, policies, "log-shipper", {"log-shipper": f"{SHIPPER}:3.2.0"})
    outcome = Actuator(api_client).apply(action, NOW)
    assert outcome.result == "applied", outcome.detail
    assert webhook.seen == [(pod["metadata"]["name"], True)]
    after = fake.get("pods", pod["metadata"]["name"], NS)
    assert after is not None
    assert {c["name"]: c["image"] for c in after["spec"]["initContainers"]}["log-shipper"] == f"{SHIPPER}:3.2.0"


def test_an_in_place_update_is_admitted_while_another_policy_is_still_stale(
        webhook: Webhook, fake: FakeApiServer, api_client: Any, policy_dir: Path) -> None:
    # The proxy's policy changed too, in a way no in-place update can follow (its args): the
    # pod keeps the old proxy until its workload restarts, and that must not block the
    # log shipper's image update.
    started(fake, policy_dir)
    pod = fake.list("pods", NS)[0]
    edit(webhook.server, policy_dir, "inject-traffic-proxy.yaml", "args: [run,", "args: [run, --trace,")
    policies = edit(webhook.server, policy_dir, "inject-log-shipper.yaml", "log-shipper:3.1.0", "log-shipper:3.2.0")
    outcome = Actuator(api_client).apply(
        in_place(pod, policies, "log-shipper", {"log-shipper": f"{SHIPPER}:3.2.0"}), NOW)
    assert outcome.result == "applied", outcome.detail
    assert webhook.seen == [(pod["metadata"]["name"], True)]


def test_a_pod_author_cannot_swap_an_injected_image_by_an_update(
        webhook: Webhook, fake: FakeApiServer, api_client: Any, policy_dir: Path) -> None:
    started(fake, policy_dir)
    pod = fake.list("pods", NS)[0]
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod(pod["metadata"]["name"], NS,
                                  {"spec": {"initContainers": [{"name": "traffic-proxy",
                                                                "image": "registry.example.com/evil:1"}]}})
    assert refused.value.status == 403 and "reserved for the container" in str(refused.value.body)
    # The app's own image is the author's to change.
    core.patch_namespaced_pod(pod["metadata"]["name"], NS,
                              {"spec": {"containers": [{"name": "app", "image": "registry.example.com/web:2"}]}})
    assert webhook.seen[-1] == (pod["metadata"]["name"], True)
