"""The `serve` options (flags, environment variables WEBHOOK_<NAME>, defaults) and the
argument types the command line's parsers share."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


def env_default(name: str, default: str) -> str:
    # Set but empty (an empty ConfigMap key, `VAR=`) reads as unset: Path("") is the
    # working directory, which nobody means.
    return os.environ.get(env_name(name)) or default


def env_name(option: str) -> str:
    return f"WEBHOOK_{option.upper().replace('-', '_')}"


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return value


def _count(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def namespace_labels(text: str) -> dict[str, str]:
    from webhook.cli.offline import parse_namespace_labels
    try:
        return parse_namespace_labels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < math.inf:   # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value


class ServeOption(NamedTuple):
    flag: str
    default: str                      # as it would be written on the command line
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    help: str | None = None


# Every `serve` option, also read from WEBHOOK_<NAME> when its flag is not given. The
# environment's value is converted and checked exactly as the flag's would be, and a bad
# one stops the start naming the variable: a typo in a Deployment's env (say
# WEBHOOK_FAILURE_POLICY=ignore) must not quietly change what the server does.
SERVE_OPTIONS = (
    ServeOption("--host", "0.0.0.0"),
    ServeOption("--port", "8443", _port, help="0 picks a free port (logged at start)"),
    ServeOption("--metrics-port", "0", _port, metavar="PORT",
                 help="serve /metrics over plain HTTP on this port only (not on --port), so that "
                      "a NetworkPolicy can restrict it; 0 serves it on --port"),
    ServeOption("--policies", "./policies", Path, metavar="DIR"),
    ServeOption("--cert-dir", "./certs", Path, metavar="DIR", help="holds tls.crt and tls.key"),
    ServeOption("--log-level", "info", choices=("debug", "info", "warning", "error")),
    ServeOption("--log-format", "json", choices=("json", "text")),
    ServeOption("--failure-policy", "Fail", choices=("Fail", "Ignore"),
                 help="on an internal error: Fail denies the request, Ignore admits it unchanged"),
    ServeOption("--workers", "0", _count, metavar="N",
                 help="worker processes sharing the port (default: the CPUs available); "
                      "1 serves from this process without a supervisor"),
    ServeOption("--decision-memo", "512", _count, metavar="N",
                 help="remember the decisions for up to N distinct pods per worker, so that the "
                      "replicas of one rollout are decided once; 0 turns it off"),
    ServeOption("--shutdown-delay", "5", _seconds, metavar="SECONDS",
                 help="after SIGTERM, fail readiness this long before closing"),
    # Per-request bounds (engine/bounds.py); the defaults are the engine's own.
    ServeOption("--max-containers", "1000", _positive, metavar="N",
                 help="deny a pod (or pod template) with more containers than this, of all kinds together"),
    ServeOption("--max-object-bytes", str(3 * 1024 * 1024), _positive, metavar="BYTES",
                 help="deny a pod that injection would make larger than this (JSON); the default is the "
                      "API server's limit on a write request"),
    ServeOption("--max-copied-value", "1024", _positive, metavar="CHARS",
                 help="deny a pod whose annotation or name a policy template would copy when longer than "
                      "this (a label's value must be a valid label value)"),
    ServeOption("--kubeconfig", "", _optional_path, metavar="PATH",
                 help="cluster access for the namespace label cache (only while a policy has a "
                      "namespaceSelector); default: in-cluster when KUBERNETES_SERVICE_HOST is set, "
                      "else $KUBECONFIG or ~/.kube/config"),
    ServeOption("--max-connections-per-client", "256", _positive, metavar="N",
                 help="connections one peer address may hold open per worker; more are closed at "
                      "once (size it for API servers behind one proxy address: docs/operations.md)"),
)


def serve_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the `serve` options not given as flags from the environment, else their defaults."""
    for option in SERVE_OPTIONS:
        dest = option.flag[2:].replace("-", "_")
        if getattr(args, dest) is not None:
            continue
        name = env_name(option.flag[2:])
        text = os.environ.get(name)
        if text is None:
            setattr(args, dest, option.type(option.default))
            continue
        if not text.strip():
            # e.g. WEBHOOK_POLICIES= would serve from the working directory (Path("") is ".").
            default = "" if option.flag == "--workers" else f" ({option.default})"  # workers: the CPUs
            parser.error(f"environment variable {name} is empty; unset it to use the default{default}")
        try:
            value = option.type(text)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"environment variable {name}: {exc}")
        if option.choices and value not in option.choices:
            parser.error(f"environment variable {name}: {text!r} is not one of "
                         f"{', '.join(option.choices)}")
        setattr(args, dest, value)
