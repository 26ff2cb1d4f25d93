"""Label and field selectors as kube-apiserver parses them, for the fake API server.

Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined
by commas (apimachinery `labels.Parse`). Field selectors: `f=v`, `f==v`, `f!=v` on the
few fields each resource supports; any other field is a 400, as the real server answers
"field label not supported".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

# A label key (optional DNS prefix) or value: what labels.Parse accepts as a token.
_TOKEN = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_REQUIREMENT = re.compile(
    rf"\s*(?:(?P<not>!)\s*(?P<absent>{_TOKEN})"
    rf"|(?P<key>{_TOKEN})\s*(?:(?P<op>==|=|!=)\s*(?P<value>{_TOKEN})?"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)")

# Fields each resource may be selected on (metadata.name and metadata.namespace everywhere).
FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("status.phase", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName"),
    "events": ("regarding.kind", "regarding.name", "regarding.namespace", "reason", "type"),
}


class SelectorError(ValueError):
    """A selector the real API server refuses (it answers 400 BadRequest)."""


def label_selector(text: str) -> Matcher:
    """A predicate on an object's metadata.labels."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise SelectorError(f"unable to parse requirement: {text[position:]!r}")
        position = match.end()
        checks.append(_requirement(match))
    return lambda obj: all(check((obj.get("metadata") or {}).get("labels") or {}) for check in checks)


def _requirement(match: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    if match["absent"]:
        key = match["absent"]
        return lambda labels: key not in labels
    key = match["key"]
    if match["op"]:
        value = match["value"] or ""
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match["setop"]:
        values = {v.strip() for v in match["values"].split(",") if v.strip()}
        if not values:
            raise SelectorError(f"for '{match['setop']}' operator, values set can't be empty")
        if match["setop"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


def field_selector(text: str, resource: str) -> Matcher:
    """A predicate on the fields a resource supports; SelectorError for any other."""
    checks: list[Matcher] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        op = "!=" if "!=" in term else "==" if "==" in term else "="
        path, sep, value = term.partition(op)
        if not sep:
            raise SelectorError(f"invalid selector: {term!r}; can't understand {term!r}")
        path = path.strip()
        if path not in ("metadata.name", "metadata.namespace", *FIELDS.get(resource, ())):
            raise SelectorError(f"field label not supported: {path}")
        checks.append(_field_check(path.split("."), value.strip(), negate=op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(path: list[str], value: str, *, negate: bool) -> Matcher:
    def check(obj: dict[str, Any]) -> bool:
        current: Any = obj
        for key in path:
            current = current.get(key) if isinstance(current, dict) else None
        found = "" if current is None else str(current)
        return (found != value) if negate else (found == value)
    return check
