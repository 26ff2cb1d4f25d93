"""Command line: `webhook serve`, `webhook certs generate`, `webhook policies ...`, the
offline tools and `webhook completion` (docs/cli.md).

Every `serve` option is also read from an environment variable WEBHOOK_<NAME>
(flags win). Exit codes: 0 success, 1 what was checked failed (a denial, invalid
policies, bad certificates), 2 usage error: nothing could be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from webhook import __version__
from webhook.cli.options import SERVE_OPTIONS, env_default, env_name, namespace_labels, serve_settings



def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="webhook", description="Pod runtime admission webhook")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTPS admission server")
    for option in SERVE_OPTIONS:
        # default None: "not given", so that serve_settings can tell a flag from the environment
        env = f"env {env_name(option.flag[2:])}"
        if option.flag != "--workers" and option.default:   # those say their defaults in their help
            env = f"default {option.default}; {env}"
        serve.add_argument(option.flag, type=option.type, choices=option.choices or None, default=None,
                           metavar=option.metavar, help=f"{option.help} ({env})" if option.help else f"({env})")

    certs = sub.add_parser("certs", help="certificate tools").add_subparsers(
        dest="certs_command", required=True, metavar="COMMAND")
    gen = certs.add_parser("generate", help="create a CA (or reuse ca.key) and a serving certificate")
    gen.add_argument("--out", type=Path, required=True, metavar="DIR")
    gen.add_argument("--service", required=True)
    gen.add_argument("--namespace", required=True)
    gen.add_argument("--days", type=int, default=365,
                     help="validity of the serving certificate (default 365, at most 36500)")
    gen.add_argument("--if-missing", action="store_true",
                     help="do nothing when DIR already holds a tls.crt/tls.key pair that is valid for "
                          "7 more days, covers the service's names and is issued by DIR/ca.crt")

    policies = sub.add_parser("policies", help="policy tools").add_subparsers(
        dest="policies_command", required=True, metavar="COMMAND")
    policies.add_parser("schema", help="print the JSON Schema of policy documents")
    check = policies.add_parser("check", help="validate a policy directory; lists every error")
    check.add_argument("directory", type=Path)

    def offline(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("-f", "--filename", required=True, action="append", metavar="FILE",
                         help="a Pod, pod controller or multi-document YAML/JSON file, a directory of "
                              ".yaml/.yml/.json files, or - for stdin; repeatable, every one is read")
        cmd.add_argument("-R", "--recursive", action="store_true",
                         help="read the subdirectories of a -f directory too")
        cmd.add_argument("--namespace", "-n", default=None,
                         help="the request's namespace (default: the object's, else 'default'); "
                              "refused when an object names another")
        cmd.add_argument("--policies", type=Path, default=Path(env_default("policies", "policies")), metavar="DIR")
        cmd.add_argument("--namespace-labels", type=namespace_labels, default=None, metavar="KEY=VALUE,...",
                         help="the labels of the namespace, for policies with a namespaceSelector "
                              "('' for none); a Namespace object in the input gives its own")
        return cmd

    mutate = offline("mutate", "show what injection does to a manifest (offline)")
    mutate.add_argument("-o", "--output", default="yaml", choices=["yaml", "json", "patch", "diff"])
    for name, text in (("validate", "run injection then validation on a manifest (offline)"),
                       ("explain", "why each policy applied to a manifest or not (offline)")):
        cmd = offline(name, text)
        cmd.add_argument("-o", "--output", default="text", choices=["text", "json"],
                         help="json: one document for CI jobs to parse (docs/cli.md)")
        cmd.add_argument("--user", default="offline", help="request username, for exceptions")
        cmd.add_argument("--group", action="append", default=[], help="request group (repeatable)")
    test = sub.add_parser("test", help="run policy test cases (PolicyTest files, docs/testing.md)")
    test.add_argument("directory", type=Path, metavar="DIR|FILE")
    test.add_argument("--policies", type=Path, default=None, metavar="DIR",
                      help="run every test against these policies, replacing the tests' own spec.policies "
                           "(default: a test's spec.policies, else $WEBHOOK_POLICIES, else ./policies)")

    install_ca = sub.add_parser("install-ca", help="create or reuse the CA, store the serving pair in a "
                                "Secret and patch the caBundle into the webhook configurations (cluster)")
    install_ca.add_argument("--namespace", "-n", required=True, help="where the Service and Secrets live")
    install_ca.add_argument("--service", default="webhook")
    install_ca.add_argument("--secret", default="webhook-tls", help="Secret for the serving pair")
    install_ca.add_argument("--ca-secret", default="webhook-ca", help="Secret holding ca.crt and ca.key")
    install_ca.add_argument("--webhook-configuration", default="pod-runtime-webhook", metavar="NAME",
                            help="name of both the Mutating- and the ValidatingWebhookConfiguration")
    install_ca.add_argument("--days", type=int, default=365, help="validity of a new serving certificate")
    install_ca.add_argument("--renew-before-days", type=int, default=30, metavar="DAYS",
                            help="renew a serving certificate that expires within DAYS")
    install_ca.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH",
                            help="default: in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG "
                                 "or ~/.kube/config")
    report = sub.add_parser("report", help="running pods with stale injections or that validation "
                            "would now deny (cluster)")
    scope = report.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", default=None, help="one namespace")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace (the default)")
    report.add_argument("--policies", type=Path, default=Path(env_default("policies", "policies")), metavar="DIR")
    report.add_argument("-o", "--output", default="table", choices=["table", "json"])
    report.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH",
                        help="default: in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG "
                             "or ~/.kube/config")
    from webhook.cli.status import add_commands
    add_commands(sub, policies_default=Path(env_default("policies", "policies")), env=env_default)
    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                                description="Load it in the shell's startup file, e.g. "
                                            "'source <(webhook completion bash)' in ~/.bashrc "
                                            "or 'source <(webhook completion zsh)' in ~/.zshrc.")
    from webhook.cli.completion import SHELLS
    completion.add_argument("shell", choices=SHELLS)
    return parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and exit 2, for scripts and humans alike.
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve_settings(parser, args)
        return _serve(args)
    if args.command == "certs":
        return _certs_generate(args)
    if args.command == "policies":
        if args.policies_command == "schema":
            from webhook.policy.model import json_schema
            print(json.dumps(json_schema(), indent=2))
            return 0
        return _policies_check(args.directory)
    if args.command == "install-ca":
        return _install_ca(args)
    if args.command == "report":
        return _report(args)
    if args.command in ("status", "controller"):
        from webhook.cli.status import run_command
        return run_command(args)
    if args.command == "completion":
        from webhook.cli.completion import script
        sys.stdout.write(script(parser, args.shell))
        return 0
    return _offline(args)


T = TypeVar("T")


def _on_cluster(command: str, kubeconfig: Path | None, call: Callable[[Any], T]) -> T | None:
    """`call(api_client)` against the cluster; None, with the reason on stderr, if it fails."""
    from webhook.kube.client import ClusterError, load_api_client

    try:
        with load_api_client(kubeconfig) as api_client:
            return call(api_client)
    except ClusterError as exc:
        print(f"webhook {command}: {exc}", file=sys.stderr)
        return None


def _install_ca(args: argparse.Namespace) -> int:
    from webhook.pki.install_ca import check_install_args, install_ca

    try:
        check_install_args(days=args.days, renew_before_days=args.renew_before_days)
    except ValueError as exc:
        print(f"webhook install-ca: {exc}", file=sys.stderr)
        return 2
    result = _on_cluster("install-ca", args.kubeconfig, lambda api_client: install_ca(
        api_client, namespace=args.namespace, service=args.service, secret=args.secret,
        ca_secret=args.ca_secret, webhook_configuration=args.webhook_configuration, days=args.days,
        renew_before_days=args.renew_before_days))
    if result is None:
        return 1
    ns = result.namespace
    print(f"CA: {result.ca} (Secret {ns}/{result.ca_secret})")
    why = f" ({result.reason})" if result.reason and result.certificate == "renewed" else ""
    print(f"serving certificate: {result.certificate}{why}, valid until "
          f"{result.not_after:%Y-%m-%d %H:%M} UTC, for {', '.join(result.dns_names)}")
    print(f"Secret {ns}/{result.secret}: {result.secret_action}")
    for conf in result.configurations:
        detail = (f"caBundle set on {conf.patched} of {conf.total} webhook(s)" if conf.patched
                  else f"caBundle already current on {conf.total} webhook(s)")
        print(f"{conf.kind} {conf.name}: {conf.action} ({detail})")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from webhook.cli.report import report
    from webhook.policy.errors import PolicyDirectoryError, PolicyLoadError
    from webhook.policy.loader import load_policy_dir

    try:
        policies = load_policy_dir(args.policies)
    except PolicyDirectoryError as exc:
        print(f"webhook report: {exc}", file=sys.stderr)
        return 2
    except PolicyLoadError as exc:
        print(f"webhook report: invalid policies in {args.policies}:\n{exc}", file=sys.stderr)
        return 1
    result = _on_cluster("report", args.kubeconfig,
                         lambda api_client: report(api_client, policies, namespace=args.namespace))
    if result is None:
        return 1
    if args.output == "json":
        print(json.dumps([f.to_json() for f in result.findings], indent=2))
        return 0
    rows = [("NAMESPACE", "POD", "STATUS", "DETAIL")]
    rows += [(f.namespace, f.pod, f.status, f.detail) for f in result.findings]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    if len(rows) > 1:
        for row in rows:
            print("   ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "   " + row[3])
    scope = f"namespace {args.namespace}" if args.namespace else "all namespaces"
    pods = {(f.namespace, f.pod) for f in result.findings}
    print(f"{result.pods} running pod(s) in {scope}; {len(pods)} with findings "
          f"(policy revision {result.policy_revision})", file=sys.stderr)
    return 0


def _offline(args: argparse.Namespace) -> int:
    from webhook.cli import commands
    from webhook.engine.namespaces import NamespaceLabelsUnavailable
    from webhook.cli.offline import InputError, NamespaceLabelSource, check_namespace, read_inputs
    from webhook.policy.errors import PolicyDirectoryError, PolicyLoadError
    from webhook.policy.loader import load_policy_dir
    from webhook.cli.policytest import run_tests

    try:
        if args.command == "test":
            return run_tests(args.directory, default_policies=Path(env_default("policies", "policies")),
                             policies=args.policies, out=sys.stdout, err=sys.stderr)
        documents = read_inputs(args.filename, recursive=args.recursive)
        check_namespace(documents, args.namespace)
        policies = load_policy_dir(args.policies)
    except InputError as exc:
        print(f"webhook {args.command}: {exc}", file=sys.stderr)
        return 2
    except PolicyDirectoryError as exc:
        print(f"webhook {args.command}: {exc}; give the policy directory with --policies DIR "
              f"(or {env_name('policies')})", file=sys.stderr)
        return 2
    except PolicyLoadError as exc:
        print(f"webhook {args.command}: invalid policies in {args.policies}:\n{exc}", file=sys.stderr)
        return 2
    labels = NamespaceLabelSource.of(documents, args.namespace_labels)
    try:
        if args.command == "mutate":
            return commands.run_mutate(documents, policies=policies, namespace=args.namespace, output=args.output,
                                       namespace_labels=labels)
        run = commands.run_validate if args.command == "validate" else commands.run_explain
        return run(documents, policies=policies, namespace=args.namespace, username=args.user,
                   groups=tuple(args.group), output=args.output, namespace_labels=labels)
    except NamespaceLabelsUnavailable as exc:
        # A policy matches namespaces by label: guessing "no labels" could hide an injection.
        print(f"webhook {args.command}: a policy has a namespaceSelector, and {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from webhook.runtime import logs
    from webhook.admission.connections import ConnectionLimits
    from webhook.policy.errors import PolicyLoadError
    from webhook.runtime.policy_holder import PolicyHolder
    from webhook.admission.serve import ListenError, ServeConfig, serve
    from webhook.runtime.tls import CertificateError, ServingCertificate
    from webhook.admission.workers import available_cpus, supervise

    if args.kubeconfig is not None and not args.kubeconfig.is_file():
        # Read only once a policy selects namespaces by label: a typo would surface much later.
        print(f"webhook: --kubeconfig {args.kubeconfig}: no such file", file=sys.stderr)
        return 2
    logs.configure(level=args.log_level, fmt=args.log_format)
    from webhook.engine.bounds import Limits

    config = ServeConfig(host=args.host, port=args.port, metrics_port=args.metrics_port, policies=args.policies,
                         cert_dir=args.cert_dir, failure_policy=args.failure_policy,
                         shutdown_delay=args.shutdown_delay, decision_memo=args.decision_memo,
                         kubeconfig=args.kubeconfig,
                         connections=ConnectionLimits(max_connections_per_client=args.max_connections_per_client),
                         limits=Limits(max_containers=args.max_containers, max_object_bytes=args.max_object_bytes,
                                       max_copied_value=args.max_copied_value))
    workers = args.workers if args.workers > 0 else available_cpus()
    try:
        if workers == 1:
            asyncio.run(serve(config))
            return 0
        # Check once here so that bad policies or certificates stop the start with one
        # clear report instead of a crash loop of workers.
        PolicyHolder.load(config.policies)
        ServingCertificate(config.cert_dir)
        return supervise(config, workers=workers, log_level=args.log_level, log_format=args.log_format)
    except PolicyLoadError as exc:
        print(f"webhook: refusing to start: invalid policies in {args.policies}:\n{exc}", file=sys.stderr)
        return 1
    except CertificateError as exc:
        print(f"webhook: refusing to start: {exc}", file=sys.stderr)
        return 1
    except ListenError as exc:
        print(f"webhook: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # An error about a file is not about the socket: name the file instead.
        where = exc.filename if exc.filename else f"cannot listen on {args.host}:{args.port}"
        print(f"webhook: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _certs_generate(args: argparse.Namespace) -> int:
    from webhook.pki.certs import check_days, generate, reissue_reason

    try:
        check_days(args.days)
    except ValueError as exc:
        # A usage error (exit 2), as `--days x` and install-ca's own --days check are.
        print(f"webhook certs generate: {exc}", file=sys.stderr)
        return 2
    try:
        if args.if_missing:
            reason = reissue_reason(args.out, service=args.service, namespace=args.namespace)
            if reason is None:
                print(f"{args.out}: a valid tls.crt/tls.key pair exists; nothing to do "
                      f"(CA: {args.out / 'ca.crt'})", file=sys.stderr)
                return 0
            print(f"{args.out}: issuing a serving certificate: {reason}", file=sys.stderr)
        result = generate(args.out, service=args.service, namespace=args.namespace, days=args.days)
    except (ValueError, OSError) as exc:
        print(f"webhook certs generate: {exc}", file=sys.stderr)
        return 1
    print(f"{'reused' if result.ca_reused else 'created'} CA {args.out / 'ca.crt'}; wrote "
          f"{args.out / 'tls.crt'} and {args.out / 'tls.key'} for {', '.join(result.dns_names)}, "
          "127.0.0.1", file=sys.stderr)
    print("caBundle (base64 of ca.crt, for the webhook configurations):", file=sys.stderr)
    print(result.ca_bundle)
    return 0


def _policies_check(directory: Path) -> int:
    from webhook.policy.errors import PolicyDirectoryError, PolicyLoadError
    from webhook.policy.loader import load_policy_dir

    try:
        policy_set = load_policy_dir(directory)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        if isinstance(exc, PolicyDirectoryError):
            return 2   # nothing was checked: the argument is wrong
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    from webhook.policy.lint import lint

    for warning in lint(policy_set):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{directory}: {policy_set.policy_count} policies OK (revision {policy_set.revision})")
    return 0
