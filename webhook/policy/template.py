"""A tiny, safe template syntax for policy string values; no code is ever executed.

    {{ labels['app'] | workload.name | 'unknown' }}

A placeholder holds alternatives separated by `|`; the first that is non-empty
wins, and a quoted literal gives the default. References:

    namespace, podName, serviceAccountName, workload.kind, workload.name,
    labels['KEY'], annotations['KEY']

Unknown references are errors when the policy is loaded, never at admission time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_LITERAL = re.compile(r"""^'([^']*)'$|^"([^"]*)"$""")
_MAP_REF = re.compile(r"""^(labels|annotations)\[\s*(?:'([^']+)'|"([^"]+)")\s*\]$""")
SIMPLE_REFS = ("namespace", "podName", "serviceAccountName", "workload.kind", "workload.name")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class TemplateContext:
    """The values a template may read, taken from the request and the pod."""

    namespace: str
    pod_name: str
    service_account_name: str
    workload_kind: str
    workload_name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    def lookup(self, ref: tuple[str, str]) -> str:
        return _getter(ref)(self)


# Simple references -> the context attribute that holds them.
_ATTRIBUTES = {"namespace": "namespace", "podName": "pod_name", "serviceAccountName": "service_account_name",
               "workload.kind": "workload_kind", "workload.name": "workload_name"}


def _getter(ref: tuple[str, str]) -> Callable[[TemplateContext], str]:
    """A function reading `ref` from a context, made once per template at compile time."""
    kind, key = ref
    if kind == "labels":
        return lambda ctx: str(ctx.labels.get(key, ""))
    if kind == "annotations":
        return lambda ctx: str(ctx.annotations.get(key, ""))
    return attrgetter(_ATTRIBUTES[kind])


# An alternative is a reference ("ref", (kind, key)) or a literal ("lit", text).
_Alternative = tuple[str, tuple[str, str] | str]
Renderer = Callable[[TemplateContext], str]


def has_template(value: str) -> bool:
    return "{{" in value


@lru_cache(maxsize=4096)
def compile_template(value: str, *, expanded: bool = False) -> Renderer:
    """Compile `value` once; raises TemplateError naming the bad reference.

    `expanded`: the value lands where the kubelet expands `$(VAR)` and reads `$$` as `$`
    (a container's command, args, env values). A pod's value put there (an annotation's
    text) is then written with each `$` doubled, so it reaches the container as the pod
    holds it; the policy's own text, literals included, keeps its `$(VAR)` references."""
    pieces: list[str | list[_Alternative]] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(value):
        pieces.append(value[pos:match.start()])
        pieces.append([_parse_alternative(a.strip(), value) for a in match.group(1).split("|")])
        pos = match.end()
    tail = value[pos:]
    if "{{" in tail or "}}" in tail:
        raise TemplateError(f"unbalanced '{{{{' or '}}}}' in {value!r}")
    pieces.append(tail)

    # Each placeholder as (reader, literal) alternatives: a reader for a reference, None for a
    # literal; empty text between placeholders is dropped.
    compiled = tuple(piece if isinstance(piece, str) else
                     tuple((_getter(arg), "") if kind == "ref" else (None, arg)  # type: ignore[arg-type]
                           for kind, arg in piece)
                     for piece in pieces if piece != "")

    def render(ctx: TemplateContext) -> str:
        out = []
        for piece in compiled:
            if isinstance(piece, str):
                out.append(piece)
                continue
            for read, literal in piece:
                if read is None:
                    text = literal
                else:
                    text = read(ctx)
                    if expanded:
                        text = text.replace("$", "$$")
                if text:
                    out.append(text)
                    break
        return "".join(out)

    return render


def _parse_alternative(text: str, whole: str) -> _Alternative:
    if not text:
        raise TemplateError(f"empty reference in {whole!r}")
    literal = _LITERAL.match(text)
    if literal:
        return ("lit", literal.group(1) if literal.group(1) is not None else literal.group(2))
    if text in SIMPLE_REFS:
        return ("ref", (text, ""))
    mapped = _MAP_REF.match(text)
    if mapped:
        return ("ref", (mapped.group(1), mapped.group(2) or mapped.group(3)))
    raise TemplateError(f"unknown reference {text!r} in {whole!r}; known: "
                        f"{', '.join(SIMPLE_REFS)}, labels['KEY'], annotations['KEY'], 'literal'")
