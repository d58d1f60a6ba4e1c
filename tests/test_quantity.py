"""Kubernetes quantities: exact parsing, the refusals a pod author sees, and display of MiB."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.core.quantity import (
    MAX_BYTES,
    QuantityError,
    format_mib,
    parse_bytes,
    parse_mib,
    parse_quantity,
    whole_number,
)

GI = 2**30
MI = 2**20

MULTIPLIERS: dict[str, Decimal] = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
    "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
}


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("24Gi", 24 * GI, id="binary-Gi"),
    pytest.param("20000Mi", 20000 * MI, id="binary-Mi"),
    pytest.param("1Ki", 1024, id="binary-Ki"),
    pytest.param("2Ti", 2 * 2**40, id="binary-Ti"),
    pytest.param("1Pi", 2**50, id="binary-Pi"),
    pytest.param("1Ei", 2**60, id="binary-Ei-is-the-cap"),
    pytest.param("1.5Gi", 3 * GI // 2, id="fractional-binary"),
    pytest.param("500M", 500_000_000, id="decimal-M"),
    pytest.param("1k", 1000, id="decimal-k"),
    pytest.param("80G", 80 * 10**9, id="decimal-G"),
    pytest.param("1T", 10**12, id="decimal-T"),
    pytest.param("1P", 10**15, id="decimal-P"),
    pytest.param("1E", 10**18, id="decimal-E-exa-not-exponent"),
    pytest.param("1500m", 2, id="milli-rounds-up-to-whole-bytes"),
    pytest.param("1000m", 1, id="milli-exact"),
    pytest.param("1500000u", 2, id="micro"),
    pytest.param("3n", 1, id="nano"),
    pytest.param("1e3", 1000, id="exponent-lower"),
    pytest.param("1.5E9", 1_500_000_000, id="exponent-upper-fractional"),
    pytest.param("2e+3", 2000, id="exponent-explicit-plus"),
    pytest.param("12e-1", 2, id="exponent-negative"),
    pytest.param("+1Gi", GI, id="leading-plus"),
    pytest.param("1073741824", GI, id="plain-integer"),
    pytest.param("0.5", 1, id="plain-decimal"),
    pytest.param("1.", 1, id="trailing-dot"),
    pytest.param(".5Ki", 512, id="leading-dot"),
    pytest.param("0", 0, id="zero"),
    pytest.param("0Ei", 0, id="zero-with-suffix"),
    pytest.param("0e999999999", 0, id="zero-with-huge-exponent"),
    pytest.param(str(2**60), 2**60, id="cap-as-plain-integer"),
    pytest.param(4096, 4096, id="int-input"),
    pytest.param(0, 0, id="int-zero"),
])
def test_accepted_quantities_parse_to_exact_bytes(value: str | int, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("1.5E9", Fraction(1_500_000_000), id="exponent"),
    pytest.param("1500m", Fraction(3, 2), id="milli-kept-exact"),
    pytest.param("0.1Gi", Fraction(2**30, 10), id="fraction-of-binary"),
    pytest.param("1.123456789012345678901234567890123Gi",
                 Fraction("1.123456789012345678901234567890123") * 2**30,
                 id="more-digits-than-the-default-decimal-precision"),
])
def test_parse_quantity_is_exact(value: str, expected: Fraction) -> None:
    assert Fraction(parse_quantity(value)) == expected


@pytest.mark.parametrize(("value", "reason"), [
    pytest.param("", "the value is empty", id="empty"),
    pytest.param("   ", "the value is empty", id="whitespace-only"),
    pytest.param("1 Gi", "whitespace is not allowed", id="inner-whitespace"),
    pytest.param("1\tGi", "whitespace is not allowed", id="inner-tab"),
    pytest.param(" 1Gi", "leading or trailing whitespace", id="leading-whitespace"),
    pytest.param("1Gi\n", "leading or trailing whitespace", id="trailing-newline"),
    pytest.param("-1Gi", "VRAM cannot be negative", id="negative"),
    pytest.param("-0", "VRAM cannot be negative", id="negative-zero-sign"),
    pytest.param(-1, "VRAM cannot be negative", id="negative-int"),
    pytest.param("NaN", "not a finite number", id="nan"),
    pytest.param("Inf", "not a finite number", id="inf"),
    pytest.param("-Infinity", "not a finite number", id="negative-infinity"),
    pytest.param("9e999", "absurdly large", id="huge-exponent"),
    pytest.param("1e999999999", "absurdly large", id="giant-exponent-does-not-hang"),
    pytest.param("1e" + "9" * 5000, "absurdly large", id="exponent-with-5000-digits"),
    pytest.param("2Ei", "absurdly large", id="over-cap-binary"),
    pytest.param(str(2**60 + 1), "absurdly large", id="one-byte-over-cap"),
    pytest.param("1.0000000000000000001Ei", "absurdly large", id="fraction-over-cap"),
    pytest.param("9" * 400, "absurdly large", id="many-digits"),
    pytest.param(2**61, "absurdly large", id="over-cap-int"),
    pytest.param("1e-999", "out of range", id="tiny-exponent"),
    pytest.param("1GB", 'unknown suffix "GB"', id="GB-suffix"),
    pytest.param("1gi", 'unknown suffix "gi"', id="lowercase-gi"),
    pytest.param("1GiB", 'unknown suffix "GiB"', id="GiB-suffix"),
    pytest.param("1K", 'unknown suffix "K"', id="uppercase-K"),
    pytest.param("1e", 'unknown suffix "e"', id="bare-e"),
    pytest.param("1e3Gi", 'unknown suffix "e3Gi"', id="exponent-and-suffix"),
    pytest.param("1.2.3", "more than one decimal point", id="multiple-dots"),
    pytest.param("Gi", "expected a number", id="no-number"),
    pytest.param("+-1", "expected a number", id="two-signs"),
    pytest.param("\u0661Gi", "expected a number", id="non-ascii-digit"),
    pytest.param(True, "not bool", id="bool"),
    pytest.param(1.5, "not float", id="float"),
    pytest.param(None, "not NoneType", id="none"),
])
def test_rejected_quantities_name_value_and_reason(value: object, reason: str) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity(value)  # type: ignore[arg-type]
    message = str(caught.value)
    # Strings are shown JSON-quoted (a newline stays visible as \n); other values by repr.
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    assert message.startswith(f"invalid quantity {shown}")
    assert reason in message
    assert message.endswith("use a Kubernetes quantity such as 24Gi or 20000Mi")
    assert isinstance(caught.value, ValueError)


def test_error_message_format_for_pod_authors() -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity("1 Gi")
    assert str(caught.value) == (
        'invalid quantity "1 Gi": whitespace is not allowed; '
        "use a Kubernetes quantity such as 24Gi or 20000Mi"
    )


@pytest.mark.parametrize(("value", "hint"), [
    pytest.param("1GB", 'did you mean "G" or "Gi"?', id="GB"),
    pytest.param("1gi", 'case-sensitive; did you mean "Gi"?', id="gi"),
    pytest.param("1MiB", 'did you mean "Mi"?', id="MiB"),
    pytest.param("1K", 'did you mean "k"?', id="K"),
])
def test_unknown_suffix_suggests_the_near_miss(value: str, hint: str) -> None:
    with pytest.raises(QuantityError, match="accepted suffixes are Ki Mi Gi") as caught:
        parse_quantity(value)
    assert hint in str(caught.value)


@pytest.mark.parametrize(("value", "mib"), [
    pytest.param("24Gi", 24576, id="whole-GiB"),
    pytest.param("20000Mi", 20000, id="whole-MiB"),
    pytest.param("1", 1, id="one-byte-rounds-up"),
    pytest.param("1Mi", 1, id="exactly-one"),
    pytest.param(str(MI + 1), 2, id="one-byte-over-rounds-up"),
    pytest.param("1G", 954, id="decimal-G"),
    pytest.param("0", 0, id="zero"),
])
def test_parse_mib_rounds_up(value: str, mib: int) -> None:
    assert parse_mib(value) == mib


@pytest.mark.parametrize(("mib", "text"), [
    pytest.param(5939, "5.8 GiB", id="worked-example"),
    pytest.param(512, "512 MiB", id="below-a-GiB"),
    pytest.param(1023, "1023 MiB", id="just-below-a-GiB"),
    pytest.param(1024, "1.0 GiB", id="one-GiB"),
    pytest.param(81559, "79.6 GiB", id="h100"),
    pytest.param(0, "0 MiB", id="zero"),
    pytest.param(457.4, "457 MiB", id="float-MiB"),
    pytest.param(1023.6, "1.0 GiB", id="float-rounding-to-a-GiB"),
    pytest.param(-2048, "-2.0 GiB", id="negative-free-VRAM"),
])
def test_format_mib(mib: int | float, text: str) -> None:
    assert format_mib(mib) == text


@given(n=st.integers(min_value=0, max_value=2**50), suffix=st.sampled_from(sorted(MULTIPLIERS)))
def test_integer_with_any_suffix_parses_exactly(n: int, suffix: str) -> None:
    expected = n * MULTIPLIERS[suffix]
    if expected > MAX_BYTES:
        with pytest.raises(QuantityError, match="absurdly large"):
            parse_quantity(f"{n}{suffix}")
    else:
        assert parse_quantity(f"{n}{suffix}") == expected


@given(a=st.integers(min_value=0, max_value=2**60), b=st.integers(min_value=0, max_value=2**60))
def test_parse_mib_is_monotone_and_covers_the_bytes(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert parse_mib(str(low)) <= parse_mib(str(high))
    assert parse_mib(str(high)) * MI >= high
    assert parse_mib(str(high)) >= high / MI
    assert (parse_mib(str(high)) - 1) * MI < high or high == 0


@given(text=st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_quantity_error(text: str) -> None:
    try:
        amount = parse_quantity(text)
    except QuantityError as exc:
        assert str(exc).startswith("invalid quantity ")
    else:
        assert 0 <= amount <= MAX_BYTES


@given(st.text(max_size=30) | st.integers(-(10**25), 10**25).map(str) | st.just("9" * 5000))
def test_whole_number_is_plain_ascii_digits_within_bounds(text: str) -> None:
    got = whole_number(text, minimum=1, maximum=10**12)
    plain = text.isascii() and text.isdigit() and len(text) <= 18
    expected = int(text) if plain and 1 <= int(text) <= 10**12 else None
    assert got == expected
