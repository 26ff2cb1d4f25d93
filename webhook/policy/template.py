"""A tiny, safe template syntax for policy string values; no code is ever executed.

    {{ labels['app'] | workload.name | 'unknown' }}

A placeholder holds alternatives separated by `|`; the first that is non-empty
wins, and a quoted literal gives the default. References:

    namespace, podName, serviceAccountName, workload.kind, workload.name,
    labels['KEY'], annotations['KEY']

Unknown references are errors when the policy is loaded, never at admission time.

Every value a reference takes from the pod is checked when a template uses it: the
pod's author chose it, and the API server checks labels, names and annotations only
after mutating admission. A label's value must be a valid label value; any other
value is at most `max_copied_value` characters. Otherwise rendering raises
TemplateValueError naming the pod field, so a small pod cannot make a large answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter

from webhook.policy.common import LABEL_VALUE_RULE, valid_label_value

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_LITERAL = re.compile(r"""^'([^']*)'$|^"([^"]*)"$""")
_MAP_REF = re.compile(r"""^(labels|annotations)\[\s*(?:'([^']+)'|"([^"]+)")\s*\]$""")
SIMPLE_REFS = ("namespace", "podName", "serviceAccountName", "workload.kind", "workload.name")
# Characters a value taken from the pod (other than a label's) may have where a template
# puts it. Names are at most 253 characters; this leaves room for an annotation's text.
DEFAULT_MAX_COPIED_VALUE = 1024
# Where each simple reference reads the pod, for messages.
_SOURCES = {
    "namespace": "the request's namespace",
    "podName": "metadata.name",
    "serviceAccountName": "spec.serviceAccountName",
    "workload.kind": "the workload kind",
    "workload.name": "the workload name (metadata.ownerReferences, or the pod's own name)",
}


class TemplateError(ValueError):
    pass


class TemplateValueError(ValueError):
    """A value from the pod that a template may not use; the message names the pod field."""

    def __init__(self, ref: tuple[str, str], problem: str) -> None:
        super().__init__(f"{source_of(ref)} {problem}")
        self.ref = ref


def source_of(ref: tuple[str, str]) -> str:
    """The pod field a reference reads, for messages: `pod label 'app' (metadata.labels['app'])`."""
    kind, key = ref
    if kind == "labels":
        return f"pod label {key!r} (metadata.labels[{key!r}])"
    if kind == "annotations":
        return f"pod annotation {key!r} (metadata.annotations[{key!r}])"
    return f"{kind} ({_SOURCES[kind]})"


def references(value: str) -> list[tuple[str, str]]:
    """The pod references in a template's text, in order (for messages; the text compiled at load)."""
    refs: list[tuple[str, str]] = []
    for match in _PLACEHOLDER.finditer(value):
        for text in match.group(1).split("|"):
            try:
                kind, arg = _parse_alternative(text.strip(), value)
            except TemplateError:
                continue
            if kind == "ref" and arg not in refs:
                refs.append(arg)  # type: ignore[arg-type]
    return refs


def quoted(text: str) -> str:
    return repr(text) if len(text) <= 64 else f"{text[:64]!r}… ({len(text)} characters)"


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
    max_copied_value: int = DEFAULT_MAX_COPIED_VALUE

    def checked(self, ref: tuple[str, str], text: str) -> str:
        """`text`, the non-empty value of `ref`, if a template may use it; else TemplateValueError."""
        if ref[0] == "labels":
            if not valid_label_value(text):
                raise TemplateValueError(ref, f"is not a valid label value ({LABEL_VALUE_RULE}): {quoted(text)}")
        elif len(text) > self.max_copied_value:
            raise TemplateValueError(ref, f"is {len(text)} characters; a value copied from the pod is at "
                                          f"most {self.max_copied_value}: {quoted(text)}")
        return text

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

    # Each placeholder as (reader, reads a label, reference, literal) alternatives: a reader for a
    # reference, None for a literal; empty text between placeholders is dropped.
    compiled = tuple(piece if isinstance(piece, str) else
                     tuple((_getter(arg), arg[0] == "labels", arg, "") if kind == "ref"  # type: ignore[arg-type]
                           else (None, False, ("", ""), arg) for kind, arg in piece)
                     for piece in pieces if piece != "")

    def render(ctx: TemplateContext) -> str:
        out = []
        for piece in compiled:
            if isinstance(piece, str):
                out.append(piece)
                continue
            for read, is_label, ref, literal in piece:
                if read is None:
                    text = literal
                else:
                    text = read(ctx)
                    if text:
                        # The common case inline; `checked` raises with the message.
                        if is_label:
                            if not valid_label_value(text):
                                ctx.checked(ref, text)
                        elif len(text) > ctx.max_copied_value:
                            ctx.checked(ref, text)
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
