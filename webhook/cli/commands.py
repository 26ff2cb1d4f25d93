"""The offline commands `mutate`, `validate` and `explain`: output formatting only; the
admission itself is `webhook.cli.offline.admit`, the same engine the server runs."""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

from webhook.core.decision import Violation
from webhook.engine.ledger import Ledger, ledger_of
from webhook.engine.match import mismatch
from webhook.engine.pod import pod_facts
from webhook.engine.policy_exceptions import ALL_RULES, lifted_rules
from webhook.engine.namespaces import LabelsUnknown, NamespaceLabels, needs_namespace_labels
from webhook.cli.offline import Admission, Document, admit, make_request, no_namespace_labels, pod_of
from webhook.policy.loader import PolicySet


def _dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


LabelSource = Callable[[str], NamespaceLabels]


def run_mutate(documents: Sequence[Document], *, policies: PolicySet, namespace: str | None,
               output: str, out: TextIO = sys.stdout, namespace_labels: LabelSource = no_namespace_labels) -> int:
    status = 0
    rendered: list[Any] = []
    for doc in documents:
        result = admit(doc, policies=policies, namespace=namespace, namespace_labels=namespace_labels)
        injection = result.injection
        for warning in injection.warnings if injection else ():
            _err(f"warning: {doc.title}: {warning}")
        if injection and injection.denial:
            _err(f"denied: {doc.title} ({doc.where}): {injection.denial}")
            status = 1
            continue
        for problem in result.checks:
            _err(f"error: {doc.title}: {problem}")
            status = 1
        if injection is None:
            _err(f"note: {doc.title}: not a pod or pod controller; unchanged")
        if output == "patch":
            rendered.append({"object": doc.title, "patch": injection.patch if injection else []})
        elif output == "diff":
            before, after = _dump_yaml(doc.obj), _dump_yaml(result.mutated)
            out.writelines(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                                fromfile=f"{doc.title} (submitted)",
                                                tofile=f"{doc.title} (admitted)"))
        else:
            rendered.append(result.mutated)
    if output == "yaml":
        out.write("---\n".join(_dump_yaml(obj) for obj in rendered))
    elif output == "json":
        value = rendered[0] if len(rendered) == 1 else {"apiVersion": "v1", "kind": "List", "items": rendered}
        out.write(json.dumps(value, indent=2) + "\n")
    elif output == "patch":
        value = rendered[0]["patch"] if len(rendered) == 1 else rendered
        out.write(json.dumps(value, indent=2) + "\n")
    return status


def _ledger(admission: Admission) -> Ledger:
    if admission.injection is None:
        return Ledger()
    return ledger_of((admission.injection.pod.get("metadata") or {}).get("annotations") or {})


def injected_containers(admission: Admission) -> dict[str, str]:
    """Container name -> the policy that injected it, from the ledger."""
    return _ledger(admission).container_owners()


def _violation_line(v: Violation, injected: dict[str, str]) -> str:
    label = {"Enforce": "DENY ", "Warn": "WARN ", "Audit": "AUDIT"}.get(v.action, v.action)
    check = f"[{v.check}]" if v.check else ""
    line = f"  {label} {v.policy}/{v.rule}{check} {v.path}: {v.message}"
    if v.container and v.container in injected:
        line += f"  (only because policy {injected[v.container]} injected container {v.container!r})"
    return line


def run_validate(documents: Sequence[Document], *, policies: PolicySet, namespace: str | None,
                 username: str, groups: tuple[str, ...], out: TextIO = sys.stdout,
                 namespace_labels: LabelSource = no_namespace_labels) -> int:
    status = 0
    for doc in documents:
        result = admit(doc, policies=policies, namespace=namespace, username=username, groups=groups,
                       namespace_labels=namespace_labels)
        if result.injection and result.injection.denial:
            out.write(f"{doc.title}: DENIED by injection: {result.injection.denial}\n")
            status = 1
            continue
        injected = injected_containers(result)
        for scope, decision in result.validations:
            verdict = "denied" if not decision.allowed else "allowed"
            out.write(f"{doc.title} ({scope}, namespace {result.namespace}): {verdict}, "
                      f"{len(decision.violations)} violation(s)\n")
            for violation in decision.violations:
                out.write(_violation_line(violation, injected) + "\n")
            if not decision.allowed:
                status = 1
    return status


def run_explain(documents: Sequence[Document], *, policies: PolicySet, namespace: str | None,
                username: str, groups: tuple[str, ...], out: TextIO = sys.stdout,
                namespace_labels: LabelSource = no_namespace_labels) -> int:
    for doc in documents:
        result = admit(doc, policies=policies, namespace=namespace, username=username, groups=groups,
                       namespace_labels=namespace_labels)
        labels = namespace_labels(result.namespace)
        pod = pod_of(doc.obj)
        facts = pod_facts(pod, namespace=result.namespace, namespace_labels=labels) if pod is not None else None
        head = f"{doc.title} (namespace {result.namespace}"
        if needs_namespace_labels(policies) and not isinstance(labels, LabelsUnknown):
            head += f" [{', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or 'no labels'}]"
        if facts is not None:
            profile = "" if facts.owner_kind == facts.workload_kind.value else f" (profile {facts.workload_kind.value})"
            head += f", workload {facts.owner_kind}/{facts.workload_name or '?'}{profile}, os {facts.os}"
        out.write(head + ")\n")
        out.write("  injection:\n")
        if result.injection is None:
            out.write("    not a pod or pod controller: nothing is injected\n")
        else:
            width = max((len(o.policy) for o in result.injection.outcomes), default=0)
            for outcome in result.injection.outcomes:
                state = "shadow " if outcome.shadow else ("applied" if outcome.applied else "not applied")
                out.write(f"    {outcome.policy:<{width}}  {state}: {outcome.reason}\n")
            for warning in result.injection.warnings:
                out.write(f"    warning: {warning}\n")
            for name, conflicts in _ledger_conflicts(result).items():
                for c in conflicts:
                    where = f" in container {c['container']}" if "container" in c else ""
                    other = f" (already from {c['with']})" if "with" in c else ""
                    out.write(f"    {name}: conflict on {c['kind']} {c['name']}{where}{other}: "
                              f"{c['resolution']}\n")
            for warning in result.injection.warnings:
                out.write(f"    warning: {warning}\n")
        out.write("  validation:\n")
        request = make_request(doc.obj, namespace=result.namespace, username=username, groups=groups)
        target_facts = facts if facts is not None else pod_facts(doc.obj, namespace=result.namespace,
                                                                 namespace_labels=labels)
        width = max((len(p.metadata.name) for p in policies.validation), default=0)
        for policy in policies.validation:
            reason = mismatch(policy.spec.match, target_facts)
            if reason is None:
                lifted = lifted_rules(policy, facts=target_facts, request=request,
                                      today=datetime.now(timezone.utc).date())
                reason = ("an exception lifts every rule" if lifted == ALL_RULES else
                          f"checked ({policy.spec.action.value})" +
                          (f"; exception lifts {', '.join(sorted(lifted))}" if lifted else ""))
            else:
                reason = f"not checked: {reason}"
            out.write(f"    {policy.metadata.name:<{width}}  {reason}\n")
        for scope, decision in result.validations:
            out.write(f"  outcome ({scope}): {'allowed' if decision.allowed else 'denied'}, "
                      f"{len(decision.violations)} violation(s)\n")
    return 0


def _ledger_conflicts(result: Admission) -> dict[str, list[dict[str, str]]]:
    return {r.name: r.conflicts for r in _ledger(result).policies if r.conflicts}
