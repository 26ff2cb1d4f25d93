"""`webhook status` (each policy's matched, current, stale and skipped pods and workloads,
computed from the cluster as `webhook report` does) and `webhook controller` (the lifecycle
controller's process, webhook/controller/main.py): their options and their runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

KUBECONFIG_HELP = "default: in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG or ~/.kube/config"


def add_commands(sub: Any, *, policies_default: Path, env: Any) -> None:
    status = sub.add_parser("status", help="each policy's current, stale and skipped pods and workloads, "
                            "and its rollout (cluster)")
    scope = status.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", default=None, help="one namespace")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace (the default)")
    status.add_argument("--policies", type=Path, default=policies_default, metavar="DIR")
    status.add_argument("-o", "--output", default="table", choices=["table", "json"])
    status.add_argument("--controller-namespace", default=env("controller_namespace", "webhook-system"),
                        metavar="NS", help="where the controller's status ConfigMap is, for the rollout states "
                        "(default webhook-system)")
    status.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH", help=KUBECONFIG_HELP)

    controller = sub.add_parser("controller", help="run the lifecycle controller: status, events and rollouts "
                                "of policy changes to running workloads (cluster)")
    controller.add_argument("--policies", type=Path, default=policies_default, metavar="DIR",
                            help="loaded and reloaded on change, as by serve")
    controller.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH", help=KUBECONFIG_HELP)
    controller.add_argument("--lease-namespace", default=env("lease_namespace", "") or None, metavar="NS",
                            help="the Lease's namespace (default: the pod's, POD_NAMESPACE)")
    controller.add_argument("--lease-name", default=env("lease_name", "") or None, metavar="NAME",
                            help="leader election on this coordination.k8s.io/v1 Lease (without it this "
                                 "process always acts: run one replica only)")
    controller.add_argument("--namespace", default=None, metavar="NS",
                            help="where the status ConfigMap is (default: the Lease's namespace, POD_NAMESPACE)")
    controller.add_argument("--port", type=int, default=int(env("controller_port", "8080")),
                            help="plain HTTP /healthz /readyz /metrics /status (default 8080)")
    controller.add_argument("--dry-run", action="store_true", help="decide and log every action, change nothing")
    controller.add_argument("--once", action="store_true",
                            help="one full reconcile pass, print what it did or would do, exit 0")
    controller.add_argument("--log-level", default=env("log_level", "info"),
                            choices=("debug", "info", "warning", "error"))
    controller.add_argument("--log-format", default=env("log_format", "json"), choices=("json", "text"))


def run_command(args: argparse.Namespace) -> int:
    return _controller(args) if args.command == "controller" else _status(args)


def _controller(args: argparse.Namespace) -> int:
    from webhook.controller.main import ControllerConfig, run
    from webhook.runtime import logs

    if not 0 <= args.port <= 65535:
        print(f"webhook controller: --port {args.port} is not a port number", file=sys.stderr)
        return 2
    logs.configure(level=args.log_level, fmt=args.log_format)
    return run(ControllerConfig(policies=args.policies, kubeconfig=args.kubeconfig,
                                lease_namespace=args.lease_namespace, lease_name=args.lease_name, port=args.port,
                                dry_run=args.dry_run, once=args.once, namespace=args.namespace))


def status(api_client: Any, policies: Any, *, namespace: str | None = None,
           controller_namespace: str = "webhook-system") -> dict[str, Any]:
    """Each policy's PolicyStatus, from the cluster (the rollout states from the controller's
    status ConfigMap when it can be read; idle otherwise)."""
    from webhook.controller import status as policy_status
    from webhook.controller.state import ClusterState
    from webhook.controller.watch import list_all

    state = ClusterState(policies)
    list_all(state, api_client, namespace=namespace)
    return policy_status.compute(state.snapshot(), policies, _rollouts(api_client, controller_namespace),
                                 namespace=namespace)


def _rollouts(api_client: Any, namespace: str) -> dict[str, Any]:
    from kubernetes import client

    from webhook.controller.status import STATUS_CONFIGMAP, rollout_states_from
    try:
        response = client.CoreV1Api(api_client).read_namespaced_config_map(
            STATUS_CONFIGMAP, namespace, _preload_content=False, _request_timeout=10)
        return rollout_states_from(json.loads(response.data).get("data") or {})
    except Exception:  # noqa: BLE001 - no controller, or no right to read its status: idle
        return {}


def _status(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from webhook.controller.status import stale_lines, table
    from webhook.kube.client import ClusterError, load_api_client
    from webhook.kube.watching import describe
    from webhook.policy.errors import PolicyLoadError
    from webhook.policy.loader import load_policy_dir

    try:
        policies = load_policy_dir(args.policies)
    except PolicyLoadError as exc:
        print(f"webhook status: invalid policies in {args.policies}:\n{exc}", file=sys.stderr)
        return 1
    try:
        with load_api_client(args.kubeconfig) as api_client:
            statuses = status(api_client, policies, namespace=args.namespace,
                              controller_namespace=args.controller_namespace)
    except ClusterError as exc:
        print(f"webhook status: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"webhook status: {describe('list', exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - unreachable API server: one line, not a traceback
        print(f"webhook status: cannot read the cluster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps([s.to_json() for _, s in sorted(statuses.items())], indent=2))
        return 0
    print(table(statuses))
    for line in stale_lines(statuses):
        print(line)
    return 0
