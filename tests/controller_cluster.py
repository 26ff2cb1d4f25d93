"""A whole simulated cluster for the controller's scenario tests: the fake API server, the
simulated workload controllers and kubelet (pods admitted through the webhook's engine),
the controller's cache filled by lists, and its rollout hook, all on the simulated clock."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tests.fake_apiserver import FakeApiServer
from tests.fake_workloads import FakeWorkloads
from webhook.controller.model import HookContext, RolloutState, WorkloadRef
from webhook.controller.rollout import Rollout
from webhook.controller.state import ClusterState
from webhook.controller.watch import list_all
from webhook.policy.loader import PolicySet, load_policy_sources

AGENT = """\
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {{name: agent}}
spec:
  match: {{namespaces: {{exclude: [kube-system]}}}}
  inject:
    sidecars: [{{name: agent, image: "registry.example.com/agent:{version}"}}]
    env: [{{name: AGENT_PORT, value: "{port}"}}]
  update: {update}
"""


def agent(version: str = "1", update: str = "{}", *, port: str = "9000") -> PolicySet:
    return load_policy_sources({"agent.yaml": textwrap.dedent(AGENT.format(version=version, update=update,
                                                                          port=port)).encode()})


@dataclass
class Events:
    """Stands in for the event recorder: what the controller asked to record."""
    recorded: list[tuple[WorkloadRef, str, str, str, tuple[str, str]]] = field(default_factory=list)

    def record(self, ref: WorkloadRef, reason: str, note: str, policy: str, revisions: tuple[str, str]) -> None:
        self.recorded.append((ref, reason, note, policy, revisions))

    def reasons(self) -> list[tuple[str, str]]:
        return [(str(r[0]), r[1]) for r in self.recorded]


class Cluster:
    RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}

    def __init__(self, fake: FakeApiServer, policies: PolicySet, tmp_path: Path) -> None:
        self.fake = fake
        self.policies = policies
        self.workloads = FakeWorkloads(fake, policies)
        fake.admission.append(self.workloads.webhook)
        self.api = config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
        self.core = client.CoreV1Api(self.api)
        self.state = ClusterState(policies)
        self.events = Events()
        self.said: list[str] = []
        self.rollout = self.leader()
        self.rollouts: Mapping[str, RolloutState] = {}
        self.most_rolling = 0

    def close(self) -> None:
        self.api.close()

    def leader(self, *, dry_run: bool = False) -> Rollout:
        """A new controller process's hook (nothing remembered)."""
        return Rollout(HookContext(api_client=self.api, recorder=self.events, dry_run=dry_run,
                                   log=logging.getLogger("webhook.controller"), say=self.said.append))

    def set_policies(self, policies: PolicySet) -> None:
        """The policy ConfigMap changed: the webhook and the controller both load it."""
        self.policies = policies
        self.workloads.policies = policies
        self.state.set_policies(policies)

    # -- the objects -----------------------------------------------------------------------------------

    def deploy(self, kind: str, name: str, namespace: str = "shop", replicas: int = 2, **spec: Any) -> WorkloadRef:
        body: dict[str, Any] = {"selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}},
                                             "spec": {"containers": [{"name": "app",
                                                                      "image": "registry.example.com/app:1"}]}},
                                **spec}
        if kind != "DaemonSet":
            body["replicas"] = replicas
        if kind == "StatefulSet":
            body["serviceName"] = name
        self.ensure_namespace(namespace)
        self.fake.create(self.RESOURCES[kind], {"metadata": {"name": name, "namespace": namespace}, "spec": body})
        return WorkloadRef(kind, namespace, name)

    def pod(self, name: str, namespace: str = "shop", owner: dict[str, Any] | None = None) -> dict[str, Any]:
        """A pod created over HTTP (admitted by the webhook), owned by `owner` if given."""
        self.ensure_namespace(namespace)
        metadata: dict[str, Any] = {"name": name, "labels": {"app": name}}
        if owner is not None:
            metadata["ownerReferences"] = [{**owner, "controller": True}]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}
        self.core.create_namespaced_pod(namespace, body)
        created = self.fake.get("pods", body["metadata"]["name"], namespace)
        assert created is not None
        return created

    def ensure_namespace(self, name: str) -> None:
        if self.fake.get("namespaces", name) is None:
            self.fake.put_namespace(name)

    # -- time passes ------------------------------------------------------------------------------------

    def reconcile(self, rollout: Rollout | None = None) -> Mapping[str, RolloutState]:
        """One pass of the controller: list everything into its cache, plan, act."""
        list_all(self.state, self.api)
        self.rollouts = (rollout or self.rollout)(self.state.snapshot(), self.policies,
                                                  self.workloads.now.timestamp())
        return self.rollouts

    def rolling(self) -> list[str]:
        """Workloads whose rollout is under way (kubectl rollout status would wait)."""
        out = []
        for kind, resource in self.RESOURCES.items():
            for obj in self.fake.list(resource):
                meta = obj["metadata"]
                if not self.workloads.rollout_complete(resource, meta["namespace"], meta["name"]):
                    out.append(f"{kind}/{meta['namespace']}/{meta['name']}")
        return out

    def run(self, until: Callable[[], bool], passes: int = 200, rollout: Rollout | None = None) -> int:
        """Reconcile and step the simulated controllers until `until()`; how many passes it took.
        Records the most workloads rolling out at once."""
        for taken in range(passes):
            if until():
                return taken
            self.reconcile(rollout)
            self.most_rolling = max(self.most_rolling, len(self.rolling()))
            self.workloads.step()
            self.most_rolling = max(self.most_rolling, len(self.rolling()))
        raise AssertionError(f"not done after {passes} passes; rolling: {self.rolling()}; {dict(self.rollouts)}")

    def stale(self, policy: str = "agent") -> list[str]:
        list_all(self.state, self.api)
        return sorted(f"{p.namespace}/{p.name}" for p in self.state.snapshot().pods() if p.stale_for(policy))

    def pod_uids(self) -> dict[str, str]:
        return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"]
                for p in self.fake.list("pods")}

    def restarts(self) -> list[tuple[str, str, str]]:
        """(verb, resource, name) of every write to a workload the controller made."""
        return [(verb, resource, name) for verb, resource, _, name in self.fake.writes()
                if resource in self.RESOURCES.values()]
