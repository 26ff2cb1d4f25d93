"""Tests for webhook.rules.quantity.

Expected values follow k8s.io/apimachinery's ParseQuantity semantics: exact
decimal values, non-zero values rounded away from zero to whole nanos, and
binary-suffixed values capped at 2**63-1. Rows marked "apimachinery" are
transcribed from the expectations in apimachinery's own quantity_test.go.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webhook.rules.quantity import parse_quantity

MAX_INT64 = 2**63 - 1

VALID: list[tuple[str, str]] = [
    # the brief's examples
    ("100m", "0.1"),
    ("1Gi", "1073741824"),
    ("500M", "500000000"),
    ("1e3", "1000"),
    ("1E3", "1000"),
    ("0.5", "0.5"),
    ("+1", "1"),
    ("1.5Ki", "1536"),
    # plain numbers
    ("0", "0"),
    ("1", "1"),
    ("42", "42"),
    ("007", "7"),
    ("-1", "-1"),
    ("-0", "0"),
    ("+0", "0"),
    ("-0.0", "0"),
    ("1.", "1"),
    (".5", "0.5"),
    ("-.5", "-0.5"),
    ("+.5", "0.5"),
    ("0.50000", "0.5"),
    ("9223372036854775807", "9223372036854775807"),
    ("9223372036854775808", "9223372036854775808"),  # decimal values are not capped
    ("123456789012345678901234567890", "123456789012345678901234567890"),
    # decimal SI suffixes
    ("5n", "0.000000005"),
    ("4u", "0.000004"),
    ("3m", "0.003"),
    ("250m", "0.25"),
    ("1500m", "1.5"),
    ("8k", "8000"),
    ("7M", "7000000"),
    ("6G", "6000000000"),
    ("5T", "5000000000000"),
    ("2P", "2000000000000000"),
    ("1E", "1000000000000000000"),  # bare "E" is exa, not an exponent
    ("12E", "12000000000000000000"),  # apimachinery: no cap for decimal suffixes
    ("-100m", "-0.1"),
    ("1.G", "1000000000"),  # apimachinery: "1." followed by a suffix is accepted
    ("100.035k", "100035"),
    ("10.035M", "10035000"),
    ("0.0005k", "0.5"),
    (".0001k", "0.1"),
    ("6.987654321G", "6987654321"),
    ("2.5P", "2500000000000000"),
    ("1.01E", "1010000000000000000"),
    # binary SI suffixes
    ("1Ki", "1024"),
    ("8Ki", "8192"),
    ("7Mi", str(7 * 2**20)),
    ("6Gi", str(6 * 2**30)),
    ("5Ti", str(5 * 2**40)),
    ("4Pi", str(4 * 2**50)),
    ("3Ei", str(3 * 2**60)),
    ("-1Ki", "-1024"),
    ("0.5Mi", "524288"),
    ("100.035Ki", "102435.84"),
    ("0.05Gi", "53687091.2"),
    ("0.025Ti", "27487790694.4"),
    (".001Ki", "1.024"),
    ("0Gi", "0"),
    # decimal exponents
    ("1e0", "1"),
    ("1e-3", "0.001"),
    ("1E-3", "0.001"),
    ("1e+3", "1000"),
    ("1E+6", "1000000"),
    ("1e09", "1000000000"),
    ("1.2e3", "1200"),
    ("1.3E+6", "1300000"),
    ("1.53E12", "1530000000000"),
    ("0.5e-2", "0.005"),
    ("-1e3", "-1000"),
    ("1.e3", "1000"),
    (".5e1", "5"),
    ("1e21", "1000000000000000000000"),
    ("1e100", "1E+100"),  # not capped: DecimalExponent is a decimal format
    # rounding up to whole nanos, away from zero (apimachinery)
    ("3.001n", "0.000000004"),
    ("1.1E-9", "0.000000002"),
    ("0.0000000001", "0.000000001"),
    ("0.0000000005", "0.000000001"),
    ("0.5e-9", "0.000000001"),
    ("0.9n", "0.000000001"),
    ("0.00000012345", "0.000000124"),
    ("0.00000012354", "0.000000124"),
    ("-0.1n", "-0.000000001"),
    ("-3.001n", "-0.000000004"),
    ("1e-100", "0.000000001"),
    ("0.000000000001Ki", "0.000000002"),
    (".000000000001Ki", "0.000000002"),
    ("1.0000000001Ki", "1024.000000103"),
    ("0e-100", "0"),
    ("0.000000000000n", "0"),
    # binary values are capped at 2**63-1 in magnitude (apimachinery)
    ("8Ei", str(MAX_INT64)),  # 2**63 exactly, one more than the cap
    ("9Ei", str(MAX_INT64)),
    ("-9Ei", str(-MAX_INT64)),
    ("9223372036854775807Ki", str(MAX_INT64)),
    ("7.999999999Ei", "9223372035701854303.393153024"),  # below the cap, exact to the nano
    ("7.9999999999Ei", "9223372036739483657.539315303"),  # ...657.5393153024 rounded up to nanos
    # Go truncates int64 exponents to int32; we land where it does
    ("1e4294967296", "1"),  # 2**32 wraps to 0
    ("1e4294967299", "1000"),  # 2**32 + 3 wraps to 3
    # 2**31 wraps to -2**31, and negating that in Go's int32 scale maths wraps back
    ("1e2147483648", "1E+2147483648"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid(text: str, expected: str) -> None:
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize(("text", "expected"), [row for row in VALID if row[0][0] not in "+-"])
def test_negated(text: str, expected: str) -> None:
    # apimachinery's test also re-runs every row with a leading "-"
    assert parse_quantity("-" + text) == Decimal(expected).copy_negate()  # unary minus rounds to 28 digits


@pytest.mark.parametrize(
    "text",
    [
        # the brief's tricky ones
        "",
        " ",
        " 1",
        "1 ",
        "1 Gi",
        "1.2.3",
        "1KB",
        "m",
        "--1",
        "1e",
        "1E+",
        "1e-",
        "1Gi2",
        "1ki",
        "1K",
        "1gi",
        "1Gib",
        "1G i",
        # no digits at all: Go's lax scanner reads these as 0; we refuse (see module doc)
        "-",
        "+",
        ".",
        "-.",
        "Ki",
        "k",
        "e3",
        "E3",
        # from apimachinery's invalid list
        "1.1.M",
        "1+1.0M",
        "0.1mi",
        "0.1am",
        "aoeu",
        ".5i",
        "1i",
        "-3.01i",
        "-3.01e-",
        # others
        "+-1",
        "-+1",
        "1-",
        "1+",
        "1e1.5",
        "1e1e1",
        "1Mi1",
        "1mm",
        "1Kii",
        "1e3Ki",
        "Infinity",
        "inf",
        "nan",
        "NaN",
        "0x10",
        "1_000",
        "1,000",
        "١",  # Arabic-Indic digit one: \d would accept it, Go does not
        "1\n",  # "$" would accept a trailing newline
        "\t1",
        "1e9223372036854775808",  # exponent must fit in int64 (strconv.ParseInt)
        "1e-9223372036854775809",
        "1e" + "9" * 30,
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        parse_quantity(text)
    assert repr(text) in str(exc_info.value)  # the message quotes the input


def test_int64_exponent_bounds_accepted() -> None:
    # Both ends of int64 are accepted, then truncated to int32 like Go:
    # 2**63-1 -> -1 and -2**63 -> 0.
    assert parse_quantity("1e9223372036854775807") == Decimal("0.1")
    assert parse_quantity("1e-9223372036854775808") == 1
    assert parse_quantity("1e000000000000000000000000003") == 1000  # leading zeros don't count


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (-5, "-5"),
        (2**63, str(2**63)),
        (10**30, str(10**30)),
        (0.5, "0.5"),
        (0.1, "0.1"),  # read from repr, not the binary expansion 0.1000000000000000055...
        (-0.25, "-0.25"),
        (1.0, "1"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (1.5e-10, "0.000000001"),  # rounded up like "1.5e-10"
        (5e-324, "0.000000001"),
    ],
)
def test_numbers(value: int | float, expected: str) -> None:
    assert parse_quantity(value) == Decimal(expected)


@pytest.mark.parametrize(
    "value",
    [True, False, None, b"1", Decimal("1"), Fraction(1, 2), [1], {"a": 1}, 1j, math.inf, -math.inf, math.nan],
)
def test_invalid_types(value: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)  # type: ignore[arg-type]


def test_returns_decimal() -> None:
    for value in ("1", "100m", "1Gi", "1e3", 3, 0.5):
        assert type(parse_quantity(value)) is Decimal


def test_canonical_spelling() -> None:
    # Equal values compare equal whatever the exponent, but keep the repr readable.
    assert str(parse_quantity("1Gi")) == "1073741824"
    assert str(parse_quantity("1k")) == "1000"
    assert str(parse_quantity("100m")) == "0.1"
    assert str(parse_quantity("-0")) == "0"
    assert str(parse_quantity("0.50000")) == "0.5"


def test_huge_exponent_stays_compact() -> None:
    # Must not expand to billions of digits.
    value = parse_quantity("1e2000000000")
    assert value > 10**100
    assert value.as_tuple().exponent == 2000000000


def test_huge_int() -> None:
    # Past Python's int->str digit limit, so it must not go through str().
    assert parse_quantity(10**5000) == Decimal("1E+5000")


def test_long_input() -> None:
    # Longer than Python's int->str limit; Go's inf.Dec handles any length.
    digits = "1" * 6000
    assert parse_quantity(digits) == Decimal(digits)
    assert parse_quantity("0." + "0" * 6000 + "1") == Decimal("1e-9")


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

SUFFIX_MULTIPLIERS: dict[str, int | Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


@given(n=st.integers(min_value=-(10**20), max_value=10**20), suffix=st.sampled_from(sorted(SUFFIX_MULTIPLIERS)))
@example(n=1, suffix="Ki")
@example(n=8, suffix="Ei")
@example(n=-8, suffix="Ei")
def test_integer_with_suffix_round_trips(n: int, suffix: str) -> None:
    expected = n * Fraction(SUFFIX_MULTIPLIERS[suffix])
    if suffix.endswith("i"):
        expected = max(-MAX_INT64, min(MAX_INT64, expected))  # BinarySI cap
    assert Fraction(parse_quantity(f"{n}{suffix}")) == expected


@given(n=st.integers(min_value=-(10**20), max_value=10**20), exp=st.integers(min_value=-9, max_value=40))
def test_integer_with_exponent_round_trips(n: int, exp: int) -> None:
    for marker in ("e", "E"):
        assert Fraction(parse_quantity(f"{n}{marker}{exp}")) == n * Fraction(10) ** exp


def _reference(sign: str, int_part: str, frac: str, suffix: str) -> Fraction:
    """Independent model of the semantics with exact rationals (for moderate exponents)."""
    magnitude = Fraction(int(int_part or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    if suffix in SUFFIX_MULTIPLIERS:  # checked first: "E" and "Ei" are suffixes, not exponents
        magnitude *= SUFFIX_MULTIPLIERS[suffix]
    else:
        magnitude *= Fraction(10) ** int(suffix[1:])
    if magnitude:
        nanos = math.ceil(magnitude * 10**9)  # round away from zero (magnitude is positive)
        magnitude = Fraction(nanos, 10**9)
    if suffix.endswith("i"):
        magnitude = min(magnitude, MAX_INT64)
    return -magnitude if sign == "-" else magnitude


_digit_strings = st.text(alphabet="0123456789", min_size=0, max_size=25)
_suffixes = st.one_of(
    st.sampled_from(sorted(SUFFIX_MULTIPLIERS)),
    st.builds(lambda m, s, e: f"{m}{s}{e}", st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
              st.integers(min_value=0, max_value=40)),
)


@given(
    sign=st.sampled_from(["", "+", "-"]),
    int_part=_digit_strings,
    dot=st.booleans(),
    frac=_digit_strings,
    suffix=_suffixes,
)
def test_matches_reference_model(sign: str, int_part: str, dot: bool, frac: str, suffix: str) -> None:
    if not dot:
        frac = ""
    if not int_part and not frac:
        int_part = "0"  # the grammar needs at least one digit
    text = f"{sign}{int_part}{'.' if dot else ''}{frac}{suffix}"
    ref_suffix = suffix.replace("+", "")  # int("+3") is fine, but keep the model simple
    assert Fraction(parse_quantity(text)) == _reference(sign, int_part, frac, ref_suffix)


@given(st.text(alphabet="0123456789.+-eEinumkKMGTPi \t", max_size=12))
@example("1e")
@example("")
def test_never_raises_anything_but_value_error(text: str) -> None:
    try:
        result = parse_quantity(text)
    except ValueError:
        return
    assert isinstance(result, Decimal)
    assert any(c.isdigit() for c in text)


@given(st.text(max_size=20))
def test_arbitrary_text_only_value_error(text: str) -> None:
    try:
        parse_quantity(text)
    except ValueError:
        pass


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_parses_like_its_repr(value: float) -> None:
    assert parse_quantity(value) == parse_quantity(repr(value))


@pytest.mark.slow
@given(st.from_regex(r"[0-9]{1,20}(\.[0-9]{0,12})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,3})?", fullmatch=True))
def test_sign_symmetry(text: str) -> None:
    value = parse_quantity(text)
    assert parse_quantity("+" + text) == value
    assert parse_quantity("-" + text) == value.copy_negate()


def test_the_cache_keeps_only_short_texts() -> None:
    # A client can put megabyte quantity strings in a pod: cached by their text, a few
    # thousand of them would keep gigabytes after the requests are gone.
    from webhook.rules.quantity import _CACHED_TEXT_MAX, _parse_text

    _parse_text.cache_clear()
    long_texts = [f"{n}{'0' * 100_000}m" for n in range(1, 6)]
    for text in long_texts:
        assert parse_quantity(text) == Decimal(text[:-4])  # milli: three zeros fewer
    assert _parse_text.cache_info().currsize == 0
    short = "1" * (_CACHED_TEXT_MAX - 1) + "m"
    assert parse_quantity(short) == parse_quantity(short) == Decimal("1" * (_CACHED_TEXT_MAX - 4) + ".111")
    info = _parse_text.cache_info()
    assert (info.currsize, info.hits) == (1, 1)
