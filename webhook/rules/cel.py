"""CEL expressions in the style of Kubernetes ValidatingAdmissionPolicy, on the
`common-expression-language` package (Rust cel-interpreter under Python bindings).

Why this library: it parses at compile time, so a syntax error is a load error; it
raises ordinary Python exceptions for evaluation errors (missing key, no overload,
division by zero); and it evaluates a pod in well under a millisecond once the
variables are bound. cel-python (celpy) was the alternative: pure Python but about
ten times slower, with has() lenient on missing parents, and it logs every
evaluation error itself.

Known differences from the Kubernetes CEL environment: no Kubernetes extension
libraries (quantity(), url(), ip(), isSorted(), ...), and `size()` of a string counts
UTF-8 bytes rather than code points (Kubernetes field values are mostly ASCII).
The strings, lists and sets extension functions (lowerAscii, split, join, sort,
distinct, sets.contains, ...) are registered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cel

# `cel` is imported when a policy first uses an expression: it costs about 28 MiB of
# memory and 0.2 s of start-up, which a policy set without CEL rules should not pay.

__all__ = ["CelError", "Variables", "compile_expression", "evaluate", "MAX_EXPRESSION_LENGTH"]

# Kubernetes caps a ValidatingAdmissionPolicy expression at 5 KiB (maxExpressionLength).
MAX_EXPRESSION_LENGTH = 5 * 1024
# The extension libraries that Kubernetes' CEL environment also offers.
_EXTENSIONS = ["strings", "lists", "sets"]


class CelError(ValueError):
    """A compile or evaluation error, with a one-line message for a policy author."""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> cel.Program:
    """Parse `source` once; raises CelError with the parser's position and reason."""
    if not source.strip():
        raise CelError("expression is empty")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise CelError(f"expression is {len(source)} characters; the limit is {MAX_EXPRESSION_LENGTH}")
    try:
        import cel

        return cel.compile(source)
    except Exception as exc:  # the binding raises ValueError; anything else is a parse failure too
        raise CelError("invalid CEL: " + _parse_error(str(exc))) from None


def _parse_error(message: str) -> str:
    """"Failed to parse expression '<src>': ERROR: <input>:1:31: Syntax error: mismatched input
    '<EOF>' expecting {...} | <src> | ...^" -> "1:31: Syntax error: mismatched input '<EOF>'"."""
    marker = message.find("ERROR:")
    if marker >= 0:
        message = message[marker + len("ERROR:"):]
    message = message.split(" | ", 1)[0].split("\n|", 1)[0]
    message = re.sub(r" expecting \{[^}]*\}", "", message).replace("<input>:", "")
    return _one_line(message.strip())


class Variables:
    """The variables of one evaluation, bound once and shared by every expression.

    Binding converts the whole pod into CEL values (milliseconds for a large pod);
    evaluating against the bound context afterwards is about ten times cheaper
    than passing a dict to each expression, so the context is built on first use.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._context: cel.Context | None = None

    @property
    def context(self) -> cel.Context:
        if self._context is None:
            import cel
            from cel.stdlib import add_stdlib_to_context

            context = cel.Context(variables=self._values)
            add_stdlib_to_context(context, _EXTENSIONS)
            self._context = context
        return self._context


def evaluate(source: str, variables: Variables) -> bool:
    """True when the expression holds. Raises CelError for an evaluation error or a non-bool result."""
    program = compile_expression(source)
    try:
        result = program.execute(variables.context)
    except BaseException as exc:
        # A Rust panic surfaces as pyo3's PanicException, a BaseException: it is an
        # evaluation failure of this expression, not a reason to kill the request.
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CelError(_describe(exc)) from None
    if not isinstance(result, bool):
        raise CelError(f"expression returned {type(result).__name__} {_one_line(repr(result), 60)}, "
                       "expected a bool")
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        # A missing map key or field: str(KeyError('x')) is just "'x'".
        return f"no such key: {_one_line(str(exc.args[0]) if exc.args else '?', 80)}"
    if isinstance(exc, IndexError):
        return _one_line(f"index out of range: {exc}")
    text = str(exc)
    # The binding's messages carry long advice after the first sentence.
    first = text.split(". ", 1)[0] if ". " in text else text
    return _one_line(f"{first}" if first else type(exc).__name__)
