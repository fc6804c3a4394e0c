"""Human units at the spec boundary.

Users write `250ms`, `6h`, `16GB`, `512MiB`, `1Gbps` or `125MB/s`; everything past the spec
works in SI: seconds, bytes and bytes per second. Conversion happens here, once, and a bare
number is taken to be in the SI unit already (seconds, bytes, bytes/s).

Sizes follow the usual convention: `kB`/`MB`/`GB`/`TB` are powers of 1000, `KiB`/`MiB`/`GiB`/
`TiB` powers of 1024. Rates in bits (`bps`, `Kbps`, `Mbps`, `Gbps`, `Tbps`) are divided by 8.
A year (`y`) is 365 days, as amortisation schedules count it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

SECONDS_PER_UNIT: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}

BYTES_PER_UNIT: dict[str, float] = {
    "B": 1.0,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "PB": 1e15,
    "KiB": 2.0**10,
    "MiB": 2.0**20,
    "GiB": 2.0**30,
    "TiB": 2.0**40,
}

BITS_PER_SECOND_UNIT: dict[str, float] = {
    "bps": 1.0,
    "Kbps": 1e3,
    "kbps": 1e3,
    "Mbps": 1e6,
    "Gbps": 1e9,
    "Tbps": 1e12,
}

_NUMBER_AND_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµ/]*)\s*$")


class UnitError(ValueError):
    """A quantity could not be read; the message says what is allowed."""


def _split(text: str, kind: str, allowed: str) -> tuple[float, str]:
    match = _NUMBER_AND_UNIT.match(text)
    if not match:
        raise UnitError(f"cannot read {text!r} as a {kind}; write a number and a unit, e.g. {allowed}")
    return float(match.group(1)), match.group(2)


_EXAMPLES = {"duration": "'250ms', '6h', '30d'", "size": "'16GB', '512MiB'", "bandwidth": "'1Gbps', '2GB/s'"}


def _finite(value: float, text: object, kind: str) -> float:
    if not math.isfinite(value):
        raise UnitError(f"{text!r} is not a finite {kind}; allowed: a finite {kind}, e.g. {_EXAMPLES[kind]}")
    return value


def _number(value: object) -> float | None:
    """A bare number (not a bool, which YAML happily produces from `yes`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def parse_duration(value: object) -> float:
    """`250ms`, `6h`, `30d`, `3y` or a bare number of seconds -> seconds."""
    number = _number(value)
    if number is not None:
        return _finite(number, value, "duration")
    if not isinstance(value, str):
        raise UnitError(f"expected a duration such as '250ms', '6h' or '30d', got {value!r}")
    amount, unit = _split(value, "duration", "'250ms', '6h', '30d'")
    if unit == "":
        return _finite(amount, value, "duration")
    if unit not in SECONDS_PER_UNIT:
        raise UnitError(
            f"unknown duration unit {unit!r} in {value!r}; allowed: {', '.join(SECONDS_PER_UNIT)}"
        )
    return _finite(amount * SECONDS_PER_UNIT[unit], value, "duration")


def parse_bytes(value: object) -> float:
    """`16GB`, `512MiB` or a bare number of bytes -> bytes."""
    number = _number(value)
    if number is not None:
        return _finite(number, value, "size")
    if not isinstance(value, str):
        raise UnitError(f"expected a size such as '16GB' or '512MiB', got {value!r}")
    amount, unit = _split(value, "size", "'16GB', '512MiB'")
    if unit == "":
        return _finite(amount, value, "size")
    if unit not in BYTES_PER_UNIT:
        raise UnitError(f"unknown size unit {unit!r} in {value!r}; allowed: {', '.join(BYTES_PER_UNIT)}")
    return _finite(amount * BYTES_PER_UNIT[unit], value, "size")


def parse_bandwidth(value: object) -> float:
    """`1Gbps`, `125MB/s`, `2GiB/s` or a bare number of bytes/s -> bytes per second."""
    number = _number(value)
    if number is not None:
        return _finite(number, value, "bandwidth")
    if not isinstance(value, str):
        raise UnitError(f"expected a bandwidth such as '1Gbps' or '125MB/s', got {value!r}")
    amount, unit = _split(value, "bandwidth", "'1Gbps', '125MB/s'")
    if unit == "":
        return _finite(amount, value, "bandwidth")
    if unit in BITS_PER_SECOND_UNIT:
        return _finite(amount * BITS_PER_SECOND_UNIT[unit] / 8.0, value, "bandwidth")
    if unit.endswith("/s") and unit[:-2] in BYTES_PER_UNIT:
        return _finite(amount * BYTES_PER_UNIT[unit[:-2]], value, "bandwidth")
    allowed = ", ".join([*BITS_PER_SECOND_UNIT, *(f"{u}/s" for u in BYTES_PER_UNIT)])
    raise UnitError(f"unknown bandwidth unit {unit!r} in {value!r}; allowed: {allowed}")


def format_duration(seconds: float) -> str:
    """Seconds -> the largest unit that reads well (`1.5h`, `250ms`)."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= size:
            return f"{seconds / size:.4g}{unit}"
    return f"{seconds:.3g}s"


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n:.4g}B"


def format_bandwidth(bytes_per_s: float) -> str:
    bits = bytes_per_s * 8
    for unit, size in (("Tbps", 1e12), ("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3)):
        if abs(bits) >= size:
            return f"{bits / size:.4g}{unit}"
    return f"{bits:.4g}bps"


def _as_float(value: float) -> float:
    return float(value)


# Annotated types for the pydantic models: the field holds SI floats, the file may hold units.
Seconds = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(_as_float)]
Bytes = Annotated[float, BeforeValidator(parse_bytes), PlainSerializer(_as_float)]
BytesPerSecond = Annotated[float, BeforeValidator(parse_bandwidth), PlainSerializer(_as_float)]
