"""Parse Kubernetes resource quantities ("100m", "1Gi", "1e3") into exact decimals.

The value returned is what k8s.io/apimachinery/pkg/api/resource.ParseQuantity
stores, expressed in base units, so a policy compares exactly what the API
server and kubelet will act on:

* the grammar is the documented one::

      <quantity>        ::= <signedNumber><suffix>
      <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
      <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
      <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
      <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
      <decimalExponent> ::= ("e" | "E") [+-]<digits>   (an int64; Go truncates it to int32)

* any non-zero value is rounded *away from zero* to a whole number of nano
  units (Go's inf.RoundUp: "if you want some resources, you get some"),
  e.g. "0.1n" -> 1e-9 and "-0.1n" -> -1e-9;
* binary-suffixed values are capped at 2**63-1 in magnitude ("9Ei");
  decimal ones are not capped (Go only caps BinarySI), e.g. "12E" is 1.2e19.

Deliberate difference: Go's hand-written scanner also accepts inputs with no
digit at all ("m", "Ki", ".", "-", "e3") and reads them as zero. They do not
match the documented grammar, and a policy should not silently read "m" as 0,
so they are rejected here (fail closed).
"""

from __future__ import annotations

import decimal
import math
import re
from decimal import Decimal
from functools import lru_cache
from typing import Final

__all__ = ["parse_quantity"]

# Anchored with fullmatch; [0-9] rather than \d so Unicode digits ("١") are
# rejected like Go does. The exponent alternative comes last so that a bare
# "E" is read as the exa suffix and "E3" as an exponent (regex backtracking).
_QUANTITY_RE: Final = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac_only>[0-9]+))"
    r"(?:(?P<bin>[KMGTPE]i)|(?P<dec>[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?"
)

_BINARY_EXP: Final[dict[str, int]] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_EXP: Final[dict[str, int]] = {
    "n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}

_NANO_EXP: Final = -9  # Go rounds every quantity to a whole number of nano units
_MAX_BINARY: Final = Decimal(2**63 - 1)  # Go's maxAllowed, applied to BinarySI only
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FAST_PATH_DIGITS: Final = 18  # Go's maxInt64Factors: digit budget of its int64 fast path


def _wrap_int32(v: int) -> int:
    """Two's-complement int32 wrap-around, as Go's int32(x) conversions and arithmetic do."""
    return (v + 2**31) % 2**32 - 2**31


def _exact_context(digits: int) -> decimal.Context:
    # Enough precision that products/scalings below are exact, and exponent
    # limits wide enough for "1e2000000000"; Inexact traps guard that claim.
    return decimal.Context(
        prec=digits + 40,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation, decimal.Overflow],
    )


def _round_up_to_nano(value: Decimal) -> Decimal:
    """Round a non-negative value up to a multiple of 1e-9 (Go: inf.RoundUp at scale 9)."""
    exp = value.as_tuple().exponent
    assert isinstance(exp, int)
    if exp >= _NANO_EXP:
        # Already a whole number of nanos. Quantizing would only append zeros,
        # which for "1e2000000000" would mean two billion digits.
        return value
    if value.adjusted() < _NANO_EXP:
        # Below one nano: the answer is exactly 1n. Short-circuiting keeps
        # quantize's working precision bounded for inputs like "1e-2000000000".
        return Decimal((0, (1,), _NANO_EXP))
    ctx = decimal.Context(
        prec=len(value.as_tuple().digits) + 2,  # room for a carry ("0.9999999999" -> "1.000000000")
        rounding=decimal.ROUND_UP,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.InvalidOperation],
    )
    return value.quantize(Decimal((0, (1,), _NANO_EXP)), context=ctx)


def _tidy(value: Decimal) -> Decimal:
    """Canonical spelling: no "-0", no trailing fractional zeros, "1000" not "1E+3"."""
    if value.is_zero():
        return Decimal(0)
    sign, digits, exp = value.as_tuple()
    assert isinstance(exp, int)
    coeff = list(digits)
    while exp < 0 and coeff[-1] == 0:
        coeff.pop()
        exp += 1
    if 0 < exp <= 24:  # expand only modest exponents; "1e2000000000" stays compact
        coeff.extend([0] * exp)
        exp = 0
    return Decimal((sign, tuple(coeff), exp))


def _digits(s: str) -> tuple[int, ...]:
    return tuple(int(c) for c in s) or (0,)


def _parse_string(text: str) -> Decimal:
    m = _QUANTITY_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid quantity {text!r}: must match <sign><number><suffix>, e.g. '100m', '1.5Gi', '1e3'")

    negative = m["sign"] == "-"
    int_part = m["int"] or ""
    denom = m["frac"] if m["frac"] is not None else (m["frac_only"] or "")
    # Go's "num": the integer digits with leading zeros stripped ("0" if none left);
    # its length decides which of Go's two code paths runs.
    num = int_part.lstrip("0") or "0"
    all_digits = int_part + denom
    ctx = _exact_context(len(all_digits))

    if m["bin"] is not None:
        # Binary: exact value digits * 2^e / 10^len(denom). Go's fast and slow
        # paths agree here, so no path emulation is needed.
        value = Decimal((0, _digits(all_digits), -len(denom)))
        value = ctx.multiply(value, Decimal(2 ** _BINARY_EXP[m["bin"]]))
        if not value.is_zero():
            value = _round_up_to_nano(value)
        if value > _MAX_BINARY:
            value = _MAX_BINARY
    else:
        if m["exp"] is not None:
            # Go: strconv.ParseInt(suffix[1:], 10, 64) must succeed, then int32(parsed) wraps.
            exp_text = m["exp"]
            magnitude = exp_text.lstrip("+-").lstrip("0") or "0"
            raw = int(magnitude) * (-1 if exp_text.startswith("-") else 1) if len(magnitude) <= 19 else None
            if raw is None or not _INT64_MIN <= raw <= _INT64_MAX:
                raise ValueError(f"invalid quantity {text!r}: exponent {exp_text!r} is out of int64 range")
            exponent = _wrap_int32(raw)
        else:
            exponent = _DECIMAL_EXP[m["dec"] or ""]

        # Mirror Go's two paths so int32 overflow of absurd exponents lands
        # where Go lands (e.g. "1e4294967296" is 1, not 10^4294967296).
        scale = _wrap_int32(exponent - len(denom))
        if len(num) + len(denom) <= _FAST_PATH_DIGITS and scale >= _NANO_EXP:
            # Fast path: exact int64 mantissa * 10^scale, never rounded.
            value = Decimal((0, _digits(num + denom), scale))
        else:
            # Slow path: inf.Dec with scale len(denom) - exponent (int32 maths), rounded up to nano.
            inf_scale = _wrap_int32(len(denom) + _wrap_int32(-exponent))
            value = Decimal((0, _digits(all_digits), -inf_scale))
            if not value.is_zero():
                value = _round_up_to_nano(value)

    if negative:
        value = value.copy_negate()  # unary minus would round/overflow in the default context
    return _tidy(value)


# Only texts this short are cached, so the cache holds at most its entries times this
# (and a value no longer than its text): keyed by whole texts, 4096 entries of the 1-2 MB
# quantities a client can put in a pod would keep gigabytes. Real quantities are a few
# characters ("100m", "128Mi", "1.5e3").
_CACHED_TEXT_MAX = 64


def parse_quantity(s: str | int | float) -> Decimal:
    """See `_parse_quantity`; short text is cached, since the same few quantities ("100m",
    "128Mi") recur on every pod. Only exact str is cached: True == 1 for a cache."""
    if type(s) is str:
        return _parse_text(s) if len(s) <= _CACHED_TEXT_MAX else _parse_quantity(s)
    return _parse_quantity(s)


@lru_cache(maxsize=4096)
def _parse_text(s: str) -> Decimal:
    return _parse_quantity(s)


def _parse_quantity(s: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity into its exact value in base units.

    "100m" -> Decimal("0.1"), "1Gi" -> Decimal(1073741824), "1e3" -> Decimal(1000).
    ints and floats stand for JSON/YAML numbers, which the API server parses
    from their text; a float is read from its shortest repr (0.1 -> "0.1").

    Raises ValueError (quoting the input) for anything that is not a valid
    quantity, including bools, other types, NaN and infinities.
    """
    # bool is an int subclass; "cpu: true" in YAML is a mistake, not 1.
    if isinstance(s, bool) or not isinstance(s, (str, int, float)):
        raise ValueError(f"invalid quantity {s!r}: expected a string, int or float, got {type(s).__name__}")
    if isinstance(s, int):
        # An integer is exact and never rounded or capped (DecimalSI); Decimal(int)
        # also sidesteps Python's int->str digit limit for huge values.
        return _tidy(Decimal(s))
    if isinstance(s, float):
        if not math.isfinite(s):
            raise ValueError(f"invalid quantity {s!r}: not a finite number")
        return _parse_string(repr(s))
    return _parse_string(s)
