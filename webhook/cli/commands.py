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
from webhook.engine.policy_exceptions import ALL_RULES, exception_applies, lifted_rules
from webhook.engine.namespaces import LabelsUnknown, NamespaceLabels, needs_namespace_labels
from webhook.cli.offline import (POD_FROM_TEMPLATE, Admission, Document, admit, no_namespace_labels,
                                 pod_of)
from webhook.core.request import make_request
from webhook.policy.loader import PolicySet


class _Dumper(yaml.SafeDumper):
    """YAML for people: no anchors (`&id001`) where injection shares one value between two
    places, no line folding (the ledger annotation is one long JSON string, and a folded
    one is hard to read and to copy), and multi-line strings (scripts) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself where a literal block cannot hold the text.
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _represent_str)


def _dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=float("inf"),
                     allow_unicode=True)


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


# The JSON shapes below are documented in docs/cli.md, where a CI job reads them: add
# fields freely, never rename or remove one without a new apiVersion.
REPORT_API_VERSION = "cli.runtime.platform.io/v1"
def _document_json(doc: Document, namespace: str) -> dict[str, Any]:
    meta = doc.obj.get("metadata") if isinstance(doc.obj.get("metadata"), dict) else {}
    return {"source": doc.where, "apiVersion": doc.obj.get("apiVersion"), "kind": doc.obj.get("kind"),
            "name": meta.get("name") or meta.get("generateName"), "namespace": namespace}


def _scope_json(scope: str) -> str:
    # The text's "Pod from its template" as a stable key; otherwise the object itself.
    return "podTemplate" if scope == POD_FROM_TEMPLATE else "object"


def _violation_json(v: Violation, injected: dict[str, str]) -> dict[str, Any]:
    return {"policy": v.policy, "rule": v.rule, "check": v.check or None, "action": v.action,
            "path": v.path, "message": v.message, "container": v.container or None,
            "injectedBy": injected.get(v.container) if v.container else None}


def _summary(allowed: int, denied: int) -> str:
    total = allowed + denied
    return f"{total} document{'s' if total != 1 else ''}: {allowed} allowed, {denied} denied"


def run_validate(documents: Sequence[Document], *, policies: PolicySet, namespace: str | None,
                 username: str, groups: tuple[str, ...], out: TextIO = sys.stdout, output: str = "text",
                 namespace_labels: LabelSource = no_namespace_labels) -> int:
    reports: list[dict[str, Any]] = []
    lines: list[str] = []
    for doc in documents:
        result = admit(doc, policies=policies, namespace=namespace, username=username, groups=groups,
                       namespace_labels=namespace_labels)
        report = _document_json(doc, result.namespace)
        report["allowed"] = not result.denied
        reports.append(report)
        denial = result.injection.denial if result.injection else None
        report["injectionDenial"] = denial
        report["checks"] = []
        if denial:
            lines.append(f"{doc.title}: DENIED by injection: {denial}")
            continue
        injected = injected_containers(result)
        for scope, decision in result.validations:
            report["checks"].append({
                "scope": _scope_json(scope), "kind": "Pod" if scope == POD_FROM_TEMPLATE else scope,
                "allowed": decision.allowed, "message": decision.message, "warnings": list(decision.warnings),
                "violations": [_violation_json(v, injected) for v in decision.violations]})
            verdict = "denied" if not decision.allowed else "allowed"
            lines.append(f"{doc.title} ({scope}, namespace {result.namespace}): {verdict}, "
                         f"{len(decision.violations)} violation(s)")
            lines += [_violation_line(violation, injected) for violation in decision.violations]
    denied = sum(1 for r in reports if not r["allowed"])
    allowed = len(reports) - denied
    if output == "json":
        out.write(json.dumps({"apiVersion": REPORT_API_VERSION, "kind": "ValidationReport", "allowed": not denied,
                              "summary": {"documents": len(reports), "allowed": allowed, "denied": denied},
                              "documents": reports}, indent=2) + "\n")
    else:
        if len(reports) > 1:
            lines.append(_summary(allowed, denied))
        out.write("".join(line + "\n" for line in lines))
    return 1 if denied else 0


def run_explain(documents: Sequence[Document], *, policies: PolicySet, namespace: str | None,
                username: str, groups: tuple[str, ...], out: TextIO = sys.stdout, output: str = "text",
                namespace_labels: LabelSource = no_namespace_labels) -> int:
    reports = [_explain(doc, policies=policies, namespace=namespace, username=username, groups=groups,
                        namespace_labels=namespace_labels) for doc in documents]
    if output == "json":
        out.write(json.dumps({"apiVersion": REPORT_API_VERSION, "kind": "ExplainReport", "documents": reports},
                             indent=2) + "\n")
    else:
        out.write("".join(_explain_text(report) for report in reports))
    return 0


def _explain(doc: Document, *, policies: PolicySet, namespace: str | None, username: str,
             groups: tuple[str, ...], namespace_labels: LabelSource) -> dict[str, Any]:
    """What `explain` says of one document, as its JSON shape (docs/cli.md)."""
    result = admit(doc, policies=policies, namespace=namespace, username=username, groups=groups,
                   namespace_labels=namespace_labels)
    report = _document_json(doc, result.namespace)
    report["title"] = doc.title
    labels = namespace_labels(result.namespace)
    known = needs_namespace_labels(policies) and not isinstance(labels, LabelsUnknown)
    report["namespaceLabels"] = dict(sorted(labels.items())) if known else None
    pod = pod_of(doc.obj)
    facts = pod_facts(pod, namespace=result.namespace, namespace_labels=labels) if pod is not None else None
    report["workload"] = None if facts is None else {
        "kind": facts.owner_kind, "name": facts.workload_name or None, "profile": facts.workload_kind.value,
        "os": facts.os}
    if result.injection is None:
        report["injection"] = None
    else:
        report["injection"] = {
            "policies": [{"policy": o.policy,
                          "state": "shadow" if o.shadow else ("applied" if o.applied else "not applied"),
                          "reason": o.reason} for o in result.injection.outcomes],
            "warnings": list(result.injection.warnings),
            "conflicts": [{"policy": name, **c} for name, conflicts in _ledger_conflicts(result).items()
                          for c in conflicts],
            "denial": result.injection.denial}
    request = make_request(doc.obj, namespace=result.namespace, username=username, groups=groups)
    target_facts = facts if facts is not None else pod_facts(doc.obj, namespace=result.namespace,
                                                             namespace_labels=labels)
    today = datetime.now(timezone.utc).date()
    checked: list[dict[str, Any]] = []
    for policy in policies.validation:
        reason = mismatch(policy.spec.match, target_facts)
        entry: dict[str, Any] = {"policy": policy.metadata.name, "action": policy.spec.action.value,
                                 "checked": reason is None, "reason": reason, "liftedRules": [],
                                 "exceptions": []}
        if reason is None:
            lifted = lifted_rules(policy, facts=target_facts, request=request, today=today)
            entry["checked"] = lifted != ALL_RULES
            entry["liftedRules"] = ["*"] if lifted == ALL_RULES else sorted(lifted)
            entry["exceptions"] = [
                {"index": index, "reason": exception.reason, "rules": list(exception.rules) or ["*"],
                 "expires": exception.expires.isoformat() if exception.expires else None}
                for index, exception in enumerate(policy.spec.exceptions)
                if exception_applies(exception, facts=target_facts, request=request, today=today)]
        checked.append(entry)
    report["validation"] = checked
    report["outcomes"] = [{"scope": _scope_json(scope), "allowed": decision.allowed,
                           "violations": len(decision.violations)} for scope, decision in result.validations]
    return report


def _exception_names(entry: dict[str, Any]) -> str:
    return "; ".join(f"spec.exceptions[{e['index']}] ({e['reason']}"
                     + (f", until {e['expires']}" if e["expires"] else "") + ")"
                     for e in entry["exceptions"])


def _explain_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    head = f"{report['title']} (namespace {report['namespace']}"
    if report["namespaceLabels"] is not None:
        head += f" [{', '.join(f'{k}={v}' for k, v in report['namespaceLabels'].items()) or 'no labels'}]"
    workload = report["workload"]
    if workload is not None:
        profile = "" if workload["kind"] == workload["profile"] else f" (profile {workload['profile']})"
        head += f", workload {workload['kind']}/{workload['name'] or '?'}{profile}, os {workload['os']}"
    lines += [head + ")", "  injection:"]
    injection = report["injection"]
    if injection is None:
        lines.append("    not a pod or pod controller: nothing is injected")
    else:
        width = max((len(p["policy"]) for p in injection["policies"]), default=0)
        lines += [f"    {p['policy']:<{width}}  {p['state']}: {p['reason']}" for p in injection["policies"]]
        for c in injection["conflicts"]:
            where = f" in container {c['container']}" if "container" in c else ""
            other = f" (already from {c['with']})" if "with" in c else ""
            lines.append(f"    {c['policy']}: conflict on {c['kind']} {c['name']}{where}{other}: {c['resolution']}")
        lines += [f"    warning: {warning}" for warning in injection["warnings"]]
    lines.append("  validation:")
    width = max((len(e["policy"]) for e in report["validation"]), default=0)
    for entry in report["validation"]:
        if entry["reason"] is not None:
            reason = f"not checked: {entry['reason']}"
        elif entry["liftedRules"] == ["*"]:
            reason = f"not checked: lifted by {_exception_names(entry)}"
        else:
            reason = f"checked ({entry['action']})"
            if entry["liftedRules"]:
                reason += f"; {', '.join(entry['liftedRules'])} lifted by {_exception_names(entry)}"
        lines.append(f"    {entry['policy']:<{width}}  {reason}")
    for outcome in report["outcomes"]:
        scope = POD_FROM_TEMPLATE if outcome["scope"] == "podTemplate" else report["kind"] or "object"
        lines.append(f"  outcome ({scope}): {'allowed' if outcome['allowed'] else 'denied'}, "
                     f"{outcome['violations']} violation(s)")
    return "".join(line + "\n" for line in lines)


def _ledger_conflicts(result: Admission) -> dict[str, list[dict[str, str]]]:
    return {r.name: r.conflicts for r in _ledger(result).policies if r.conflicts}
