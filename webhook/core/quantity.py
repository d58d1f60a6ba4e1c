"""Kubernetes resource quantities (`24Gi`, `500M`, `1.5e3`): the only module that parses them.

A quantity is an optional `+`, a decimal number (`1`, `1.5`, `1.`, `.5`) and one optional suffix:
binary `Ki Mi Gi Ti Pi Ei` (powers of 1024), decimal `n u m k M G T P E` (powers of 1000) or an
exponent `e<int>`/`E<int>`. Parsing is exact (regex + `Decimal`, never `float`). The guard only
measures memory with quantities, so negative values and values above `MAX_BYTES` (1 EiB) are
refused here, each with a message a pod author can act on. The exponent is bounded before any
`Decimal` is built, so `1e999999999` costs nothing. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Final

MAX_BYTES: Final = 2**60
MIB: Final = 2**20
_HINT: Final = "use a Kubernetes quantity such as 24Gi or 20000Mi"

_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: Final = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_SUFFIXES: Final = "Ki Mi Gi Ti Pi Ei (powers of 1024), n u m k M G T P E (powers of 1000)"

_NUMBER = re.compile(r"(?P<sign>[+-]?)(?P<number>[0-9]+\.?[0-9]*|\.[0-9]+)(?P<suffix>.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE](?P<exp>[+-]?[0-9]+)")
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
# A value of at least 10**19 is over MAX_BYTES (~1.15e18) for sure.
_MAX_DIGITS: Final = 19
_MIN_EXPONENT: Final = -64


class QuantityError(ValueError):
    """A value that is not an acceptable Kubernetes quantity; the message names value and reason."""

    def __init__(self, value: object, reason: str) -> None:
        shown = json.dumps(value) if isinstance(value, str) else repr(value)
        super().__init__(f"invalid quantity {shown}: {reason}; {_HINT}")
        self.value = value
        self.reason = reason


def whole_number(text: str, *, minimum: int = 0, maximum: int) -> int | None:
    """`text` as a plain decimal whole number (ASCII digits only: no sign, space or suffix) within
    [minimum, maximum], else None. At most 18 digits are converted, so a 5,000-digit value is
    refused here rather than tripping the interpreter's integer-conversion limit (a ValueError)."""
    if not (0 < len(text) <= 18 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def parse_quantity(value: str | int) -> Decimal:
    """Parse a Kubernetes quantity exactly (in its base unit, bytes for memory)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise QuantityError(value, f"expected a string or an integer, not {type(value).__name__}")
    if isinstance(value, int):
        return _bounded(value, Decimal(value))
    _check_text(value)
    match = _NUMBER.fullmatch(value)
    if match is None:
        raise QuantityError(value, "expected a number followed by an optional unit suffix")
    if match["sign"] == "-":
        raise QuantityError(value, "negative quantities are not allowed (VRAM cannot be negative)")
    number, suffix = match["number"], match["suffix"]
    multiplier, exponent = _parse_suffix(value, suffix)
    if not number.strip("0."):
        return Decimal(0)
    _check_magnitude(value, number, exponent, multiplier)
    with localcontext() as ctx:
        ctx.prec = len(number) + 64  # enough digits that the product below is exact
        return _bounded(value, Decimal(number).scaleb(exponent) * multiplier)


def parse_bytes(value: str | int) -> int:
    """A quantity as whole bytes, rounding a fractional byte up."""
    return int(parse_quantity(value).to_integral_value(rounding=ROUND_CEILING))


def parse_mib(value: str | int) -> int:
    """A quantity as MiB, rounded up to a whole MiB (how the guard accounts VRAM)."""
    return -(-parse_bytes(value) // MIB)


def parse_vram_mib(value: str | int, *, allow_zero: bool = False) -> int:
    """A VRAM declaration as whole MiB: a whole number of bytes, at least 1 MiB (or exactly 0 when
    `allow_zero`), rounded up to a whole MiB. `1e-3` (a thousandth of a byte) and `1k` (1000 bytes)
    are refused here, each with what was read and the accepted form (issue 18)."""
    amount = parse_quantity(value)
    if amount != amount.to_integral_value():
        raise QuantityError(value, f"that is {amount.normalize():f} bytes, not a whole number of bytes")
    if amount == 0 and allow_zero:
        return 0
    if amount < MIB:
        raise QuantityError(value, f"that is {int(amount)} bytes, less than 1 MiB")
    return -(-int(amount) // MIB)


def format_mib(mib: int | float) -> str:
    """A human figure: `512 MiB` below 1 GiB, else GiB with one decimal (`5939` -> `5.8 GiB`)."""
    if abs(round(mib)) >= 1024:
        return f"{mib / 1024:.1f} GiB"
    return f"{mib:.0f} MiB"


def _check_text(value: str) -> None:
    if not value.strip():
        raise QuantityError(value, "the value is empty")
    if value != value.strip():
        raise QuantityError(value, "leading or trailing whitespace is not allowed")
    if any(ch.isspace() for ch in value):
        raise QuantityError(value, "whitespace is not allowed")
    if value.lstrip("+-").lower() in _NOT_FINITE:
        raise QuantityError(value, "not a finite number")
    if value.count(".") > 1:
        raise QuantityError(value, "more than one decimal point")


def _parse_suffix(value: str, suffix: str) -> tuple[int, int]:
    """The suffix as (binary multiplier, decimal exponent)."""
    if suffix in _BINARY:
        return _BINARY[suffix], 0
    if suffix in _DECIMAL:
        return 1, _DECIMAL[suffix]
    match = _EXPONENT.fullmatch(suffix)
    if match is None:
        raise QuantityError(
            value,
            f"unknown suffix {json.dumps(suffix)}{_suggest(suffix)}; "
            f"accepted suffixes are {_SUFFIXES} or an exponent such as e3",
        )
    digits = match["exp"].lstrip("+-").lstrip("0")
    if len(digits) > 6:  # keep int() and Decimal away from absurd exponents
        return 1, (10**6 if match["exp"][0] != "-" else -(10**6))
    return 1, int(match["exp"])


def _suggest(suffix: str) -> str:
    """A hint for near misses: `gi` -> `Gi`, `GB` -> `G` or `Gi`, `MiB` -> `Mi`."""
    stem = suffix[:-1] if suffix[-1:] in ("b", "B") else suffix
    for name in (*_BINARY, *(s for s in _DECIMAL if s)):
        if stem and stem.lower() == name.lower():
            also = f' or "{name}i"' if f"{name}i" in _BINARY else ""
            case = "suffixes are case-sensitive; " if stem != name else ""
            return f' ({case}did you mean "{name}"{also}?)'
    return ""


def _check_magnitude(value: str, number: str, exponent: int, multiplier: int) -> None:
    """Refuse out-of-range values from their digit counts alone, before building a Decimal."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    # The value is at least 10**first (first: the position of its first significant digit).
    first = len(whole) - 1 if whole else len(fraction.lstrip("0")) - len(fraction) - 1
    if first + exponent + len(str(multiplier)) - 1 >= _MAX_DIGITS:
        raise QuantityError(value, "absurdly large (more than 1 EiB)")
    if exponent < _MIN_EXPONENT:
        raise QuantityError(value, f"exponent {exponent} is out of range")


def _bounded(value: str | int, amount: Decimal) -> Decimal:
    if amount < 0:
        raise QuantityError(value, "negative quantities are not allowed (VRAM cannot be negative)")
    if amount > MAX_BYTES:
        raise QuantityError(value, "absurdly large (more than 1 EiB)")
    return amount
