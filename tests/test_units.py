"""Human units at the spec boundary: durations, sizes and bandwidths become SI floats, once."""

from __future__ import annotations

import math

import pytest

from sim.spec.units import (
    BITS_PER_SECOND_UNIT,
    BYTES_PER_UNIT,
    SECONDS_PER_UNIT,
    UnitError,
    parse_bandwidth,
    parse_bytes,
    parse_duration,
)

DAY = 86400.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("6h", 6 * 3600.0),
        ("30d", 30 * DAY),
        ("3y", 3 * 365 * DAY),
        ("1.5min", 90.0),
        ("2w", 14 * DAY),
        ("40 ms", 0.04),
        ("500us", 5e-4),
        ("10s", 10.0),
        ("1e3ms", 1.0),
        (".5h", 1800.0),
        ("12", 12.0),
        (12, 12.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_duration_converts_to_seconds(text: object, seconds: float) -> None:
    """A duration with a unit, a numeric string or a bare number is read as seconds."""
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16GB", 16e9),
        ("512MiB", 512 * 2**20),
        ("1.5kB", 1500.0),
        ("2TB", 2e12),
        ("1GiB", 2.0**30),
        ("100B", 100.0),
        ("4096", 4096.0),
        (2048, 2048.0),
    ],
)
def test_size_converts_to_bytes(text: object, size: float) -> None:
    """Decimal prefixes (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024."""
    assert parse_bytes(text) == pytest.approx(size, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1Gbps", 125e6),
        ("125MB/s", 125e6),
        ("10Mbps", 1.25e6),
        ("2GiB/s", 2 * 2.0**30),
        ("400Gbps", 50e9),
        ("8bps", 1.0),
        ("1000", 1000.0),
        (1e9, 1e9),
    ],
)
def test_bandwidth_converts_to_bytes_per_second(text: object, rate: float) -> None:
    """Bit rates are divided by 8; byte rates are written as a size per second (`MB/s`)."""
    assert parse_bandwidth(text) == pytest.approx(rate, rel=1e-12)


@pytest.mark.parametrize(
    ("parse", "text", "listed"),
    [
        (parse_duration, "6x", SECONDS_PER_UNIT),
        (parse_duration, "3 years", SECONDS_PER_UNIT),
        (parse_bytes, "16Gb", BYTES_PER_UNIT),
        (parse_bytes, "2GiBs", BYTES_PER_UNIT),
        (parse_bandwidth, "1Gbit", BITS_PER_SECOND_UNIT),
        (parse_bandwidth, "125MB", BITS_PER_SECOND_UNIT),
    ],
)
def test_unknown_unit_lists_the_allowed_units(parse, text: str, listed: dict[str, float]) -> None:
    """An unknown unit is a UnitError that quotes the input and lists every unit it accepts."""
    with pytest.raises(UnitError) as info:
        parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert "allowed:" in message
    for unit in listed:
        assert unit in message


def test_bandwidth_error_lists_byte_rates_too() -> None:
    """The allowed bandwidth units include the byte rates (`MB/s`, `GiB/s`), not only bit rates."""
    with pytest.raises(UnitError, match="allowed:") as info:
        parse_bandwidth("3 furlongs")
    assert "MB/s" in str(info.value)
    assert "GiB/s" in str(info.value)


@pytest.mark.parametrize("parse", [parse_duration, parse_bytes, parse_bandwidth])
@pytest.mark.parametrize("text", ["", "ms", "fast", "1,5GB", "--3s", "1.2.3s"])
def test_text_that_is_not_a_quantity_is_rejected(parse, text: str) -> None:
    """Text without a readable number is a UnitError with an example of what to write."""
    with pytest.raises(UnitError, match="e.g.|allowed"):
        parse(text)


@pytest.mark.parametrize("parse", [parse_duration, parse_bytes, parse_bandwidth])
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_numbers(parse, value: bool) -> None:
    """YAML turns `yes`/`no` into booleans; they must not pass as 1 or 0 seconds/bytes."""
    with pytest.raises(UnitError):
        parse(value)


@pytest.mark.parametrize("parse", [parse_duration, parse_bytes, parse_bandwidth])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "inf", "nan", "1e400"])
def test_non_finite_quantities_are_rejected(parse, value: object) -> None:
    """Infinity and NaN, as floats or as text (or by overflow), are not quantities."""
    with pytest.raises(UnitError):
        parse(value)


@pytest.mark.parametrize(
    ("parse", "text"),
    [(parse_duration, "1e400s"), (parse_bytes, "1e400B"), (parse_bandwidth, "1e400Gbps")],
)
def test_overflow_with_a_unit_is_rejected(parse, text: str) -> None:
    """A number too large for a float is reported as not finite, not passed on as infinity."""
    with pytest.raises(UnitError, match="finite"):
        parse(text)


@pytest.mark.parametrize("parse", [parse_duration, parse_bytes, parse_bandwidth])
@pytest.mark.parametrize("value", [None, [1, "s"], {"value": 1}])
def test_other_types_are_rejected(parse, value: object) -> None:
    """Only numbers and strings are quantities; anything else is a UnitError, not a crash."""
    with pytest.raises(UnitError, match="expected"):
        parse(value)
