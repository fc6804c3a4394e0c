"""Request traces: read a CSV of real requests and replay it as arrivals.

A trace is a CSV file with one row per request: when it was sent and, usually, how many prompt
and output tokens it had. Two layouts are understood:

- `azure`: the Azure LLM inference trace (Patel et al., "Splitwise", ISCA 2024, CC-BY 4.0),
  with columns `TIMESTAMP` (`2023-11-16 18:17:03.9799600`), `ContextTokens` (the prompt) and
  `GeneratedTokens` (the output). `columns` may rename any of them.
- `csv`: any file; `columns` says which column holds `time`, `prompt_tokens` and
  `output_tokens`, and `time_unit` how `time` is written: a number of seconds (`s`),
  milliseconds (`ms`) or microseconds (`us`), or ISO 8601 text (`datetime`).

Times become seconds after the earliest row (the first row of a sorted trace), and rows are
sorted by time. Token counts of 0 become 1: a request has at least one prompt token and
produces at least one output token.

Replay then reshapes time. `time_scale` multiplies every time, and so every inter-arrival
time (2 = twice as slow, half the rate). With `loop`, copies of the trace follow each other
until the horizon: copy k starts k x (span + mean gap) after the first, so the gap across each
seam is the trace's mean gap. Requests at or after the horizon are dropped.

Files are read with pandas, once checked to be regular files within `MAX_TRACE_BYTES`
(`sim.spec.files`). Only when something is wrong is the file scanned again, row by row,
to find the 1-based line of the first bad row, so the error says exactly where to look. Reads
are cached by (path, modification time, size): every replication replays the same file.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # imported where a trace is read: a scenario that names none never pays for pandas
    import pandas as pd

from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.files import MAX_TRACE_BYTES, check_file
from sim.workload.limits import check_request_count, spec_error

AZURE_COLUMNS: dict[str, str] = {
    "time": "TIMESTAMP",
    "prompt_tokens": "ContextTokens",
    "output_tokens": "GeneratedTokens",
}
SECONDS_PER_TIME_UNIT: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
TIME_EXPECTED: dict[str, str] = {
    "s": "a number of seconds",
    "ms": "a number of milliseconds",
    "us": "a number of microseconds",
    "datetime": "a date and time, e.g. 2023-11-16 18:17:03.9799600",
}
INT32_MAX = int(np.iinfo(np.int32).max)
TOKENS_EXPECTED = "a whole number >= 0"


class TraceSource(Protocol):
    """What replaying needs to know (the `trace` arrival process, `sim.workload.arrivals`)."""

    @property
    def path(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def columns(self) -> Mapping[Any, str]: ...
    @property
    def time_unit(self) -> str: ...
    @property
    def time_scale(self) -> float: ...
    @property
    def loop(self) -> bool: ...
    @property
    def use_token_counts(self) -> bool: ...


@dataclass(frozen=True)
class _Column:
    """One column to read: its role, its name in the file, how to read it, where to blame."""

    key: str
    name: str
    kind: str  # "tokens", or a time unit: "s", "ms", "us", "datetime"
    missing_path: str


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def read_trace(
    path: str | Path,
    format: str = "azure",
    columns: Mapping[Any, str] | None = None,
    time_unit: str = "datetime",
    *,
    tokens: bool = True,
    where: str = "workload.arrivals",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read a trace: (times_s, prompt_tokens, output_tokens), sorted by time.

    `times_s` (float64) are seconds after the earliest row. Token counts are int32 >= 1 (a 0 in
    the file becomes 1), or None when `tokens` is false, in which case the token columns are
    neither needed nor read. `where` is the spec path that errors are reported under.

    Raises SpecError for a missing file, a missing column, or a row that cannot be read (its
    line number is in the message).
    """
    wanted = _trace_columns(format, {str(k): v for k, v in (columns or {}).items()}, time_unit, tokens, where)
    table = _read_table(path, wanted, where)
    times = table[0]
    order = None if bool(np.all(np.diff(times) >= 0)) else np.argsort(times, kind="stable")
    if order is not None:
        times = times[order]
    times = times - times[0]
    if not tokens:
        return times, None, None
    prompt, output = table[1], table[2]
    if order is not None:
        prompt, output = prompt[order], output[order]
    return times, np.array(prompt), np.array(output)


def read_token_column(path: str | Path, column: str, where: str) -> np.ndarray:
    """All values of one token column (int32 >= 1; a 0 becomes 1), in file order."""
    wanted = (_Column("tokens", column, "tokens", f"{where}.column"),)
    return np.array(_read_table(path, wanted, where)[0])


def replay_trace(
    spec: TraceSource, horizon_s: float, where: str = "workload.arrivals"
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The trace's requests inside [0, horizon_s): times scaled, looped if asked, then cut.

    Token arrays are None unless `spec.use_token_counts`.
    """
    times, prompt, output = read_trace(
        spec.path, spec.format, spec.columns, spec.time_unit,
        tokens=spec.use_token_counts, where=where,
    )
    times = times * spec.time_scale
    if spec.loop:
        count, span = len(times), float(times[-1])
        if count < 2 or span <= 0:
            raise spec_error(
                f"{where}.loop",
                f"{spec.path} cannot loop: its {count} row(s) all have the same time, "
                "so the trace has no length to repeat",
                allowed="loop: false, or a trace whose rows span some time",
            )
        period = span + span / (count - 1)
        copies = max(1, math.ceil(horizon_s / period))
        check_request_count(copies * count, where)
        times = (np.arange(copies, dtype=np.float64)[:, None] * period + times[None, :]).ravel()
        if prompt is not None and output is not None:
            prompt, output = np.tile(prompt, copies), np.tile(output, copies)
    inside = int(np.searchsorted(times, horizon_s, side="left"))
    check_request_count(inside, where)  # before the run allocates its per-request state
    times = times[:inside]
    if prompt is not None and output is not None:
        prompt, output = prompt[:inside], output[:inside]
    return times, prompt, output


# --------------------------------------------------------------------------------------------
# Which columns, by format
# --------------------------------------------------------------------------------------------


def _trace_columns(
    format: str, columns: dict[str, str], time_unit: str, tokens: bool, where: str
) -> tuple[_Column, ...]:
    keys = ("time", "prompt_tokens", "output_tokens") if tokens else ("time",)
    if format == "azure":
        names = {**AZURE_COLUMNS, **columns}
        missing_path = {key: f"{where}.path" for key in keys}
    else:
        names = columns
        missing_path = {key: f"{where}.columns.{key}" for key in keys}
        unmapped = [key for key in keys if key not in names]
        if unmapped:
            hint = "" if "time" in unmapped else ", or set use_token_counts: false"
            raise spec_error(
                f"{where}.columns",
                f"a trace in format 'csv' needs columns.{unmapped[0]}: the column that holds "
                f"each request's {unmapped[0].replace('_', ' ')}{hint}",
                allowed="a mapping such as {time: ts, prompt_tokens: input_len, output_tokens: output_len}",
            )
    if time_unit not in TIME_EXPECTED:
        raise spec_error(f"{where}.time_unit", f"unknown time unit {time_unit!r}",
                         allowed=", ".join(TIME_EXPECTED))
    kinds = {"time": time_unit, "prompt_tokens": "tokens", "output_tokens": "tokens"}
    return tuple(_Column(key, names[key], kinds[key], missing_path[key]) for key in keys)


# --------------------------------------------------------------------------------------------
# Reading, cached
# --------------------------------------------------------------------------------------------


def _read_table(path: str | Path, wanted: tuple[_Column, ...], where: str) -> tuple[np.ndarray, ...]:
    """The wanted columns converted (read-only arrays), or a SpecError naming file and line."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None:
        raise SpecError([SpecIssue(
            f"{where}.path", f"trace file not found: {path}", str(path),
            "an existing CSV file (a relative path is taken from the scenario file's folder)",
        )])
    check_file(path, MAX_TRACE_BYTES, "trace", f"{where}.path")  # a regular file, not over the cap
    return _read_table_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, wanted, where)


@functools.lru_cache(maxsize=16)
def _read_table_cached(
    path_text: str, mtime_ns: int, size: int, wanted: tuple[_Column, ...], where: str
) -> tuple[np.ndarray, ...]:
    del mtime_ns, size  # part of the cache key only: an edited file is read again
    path = Path(path_text)
    frame = _read_frame(path, wanted, where)
    arrays: list[np.ndarray] = []
    first_bad: tuple[int, str] | None = None
    for column in wanted:
        values, bad_row, problem = _convert(frame[column.name], column)
        if bad_row is not None and (first_bad is None or bad_row < first_bad[0]):
            first_bad = (bad_row, problem)
        values.flags.writeable = False
        arrays.append(values)
    if first_bad is not None:
        line = _line_of_row(path, first_bad[0])
        raise spec_error(f"{where}.path", f"{path}, line {line}: {first_bad[1]}")
    return tuple(arrays)


def _read_frame(path: Path, wanted: tuple[_Column, ...], where: str) -> pd.DataFrame:
    import pandas as pd

    try:
        # Every column is read (not `usecols`): pandas then rejects rows with extra fields
        # instead of silently dropping them, and a malformed row is worth an error.
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise spec_error(f"{where}.path", f"{path} is empty; a trace starts with a header row "
                         "naming its columns") from None
    except UnicodeDecodeError:
        raise spec_error(f"{where}.path", f"{path} is not UTF-8 text; is it a CSV file?") from None
    except pd.errors.ParserError as exc:
        raise _malformed_row_error(path, where, exc) from None
    header = [str(name) for name in frame.columns]
    for column in wanted:
        if column.name not in header:
            raise spec_error(
                column.missing_path,
                f"{path} has no column {column.name!r}{suggest(column.name, header)}",
                allowed="its columns: " + ", ".join(header),
            )
    if len(frame) == 0:
        raise spec_error(f"{where}.path", f"{path} has a header but no rows")
    return frame


# --------------------------------------------------------------------------------------------
# Converting columns: values, or the first bad row and what is wrong with it
# --------------------------------------------------------------------------------------------


def _convert(series: pd.Series, column: _Column) -> tuple[np.ndarray, int | None, str]:
    if column.kind == "tokens":
        return _tokens(series, column.name)
    if column.kind == "datetime":
        return _datetimes(series, column.name)
    return _numeric_times(series, column.name, SECONDS_PER_TIME_UNIT[column.kind], column.kind)


def _as_floats(series: pd.Series) -> np.ndarray:
    import pandas as pd
    from pandas.api import types as pdtypes

    if pdtypes.is_bool_dtype(series.dtype):
        return np.full(len(series), np.nan)
    numbers = pd.to_numeric(series, errors="coerce")
    return np.asarray(numbers.to_numpy(dtype=np.float64, na_value=np.nan))


def _tokens(series: pd.Series, name: str) -> tuple[np.ndarray, int | None, str]:
    from pandas.api import types as pdtypes

    if pdtypes.is_integer_dtype(series.dtype) and not pdtypes.is_bool_dtype(series.dtype):
        counts = series.to_numpy(dtype=np.int64)
        bad = (counts < 0) | (counts > INT32_MAX)
    else:
        numbers = _as_floats(series)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(numbers) | (numbers < 0) | (numbers > INT32_MAX) | (numbers != np.floor(numbers))
        counts = np.where(bad, 0, numbers).astype(np.int64)
    if bad.any():
        row = int(np.argmax(bad))
        return counts, row, _token_problem(series.iloc[row], name)
    return np.maximum(counts, 1).astype(np.int32), None, ""


def _token_problem(raw: Any, name: str) -> str:
    import pandas as pd

    if _is_blank(raw):
        return f"{name} is empty ({TOKENS_EXPECTED})"
    number = pd.to_numeric(pd.Series([raw]), errors="coerce").iloc[0]
    if pd.notna(number) and number < 0:
        return f"{name} is negative ({raw}); a token count is {TOKENS_EXPECTED}"
    if pd.notna(number) and not math.isfinite(number):
        return f"{name} is {raw}, not a finite number ({TOKENS_EXPECTED})"
    if pd.notna(number) and number > INT32_MAX and number == math.floor(number):
        return f"{name} is {raw}, too large (a whole number from 0 to {INT32_MAX})"
    return f"cannot read {str(raw)!r} as {name} ({TOKENS_EXPECTED})"


def _numeric_times(
    series: pd.Series, name: str, seconds_per_unit: float, unit: str
) -> tuple[np.ndarray, int | None, str]:
    numbers = _as_floats(series)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.argmax(bad))
        return numbers, row, _time_problem(series.iloc[row], name, unit)
    return numbers * seconds_per_unit, None, ""


def _datetimes(series: pd.Series, name: str) -> tuple[np.ndarray, int | None, str]:
    import pandas as pd
    from pandas.api import types as pdtypes

    if not (pdtypes.is_string_dtype(series.dtype) or pdtypes.is_object_dtype(series.dtype)):
        # Numbers would be read as nanoseconds since 1970; a number is not a datetime here.
        return np.zeros(len(series)), 0, _time_problem(series.iloc[0], name, "datetime")
    try:
        stamps = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError):
        stamps = pd.Series([_one_datetime(value) for value in series], dtype="datetime64[ns, UTC]")
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        return np.zeros(len(series)), row, _time_problem(series.iloc[row], name, "datetime")
    # Subtract in integer time before going to float: epoch nanoseconds do not fit a float.
    seconds = (stamps - stamps.min()) / pd.Timedelta(1, "s")
    return np.asarray(seconds.to_numpy(dtype=np.float64)), None, ""


def _one_datetime(value: Any) -> Any:
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return pd.NaT
    if pd.isna(stamp):
        return pd.NaT
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _time_problem(raw: Any, name: str, unit: str) -> str:
    if _is_blank(raw):
        return f"{name} is empty ({TIME_EXPECTED[unit]})"
    return f"cannot read {str(raw)!r} as {name} ({TIME_EXPECTED[unit]})"


def _is_blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, float) and math.isnan(raw)) or str(raw).strip() == ""


# --------------------------------------------------------------------------------------------
# The slow path: find a row's line in the file
# --------------------------------------------------------------------------------------------


def _records(path: Path) -> Any:
    """(first line, fields) of each non-blank CSV record; the header is the first."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        previous = 0
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if fields:  # pandas skips blank lines, so they are not rows
                yield start, fields


def _line_of_row(path: Path, row: int) -> int:
    """The 1-based line where data row `row` (0-based, after the header) starts."""
    for index, (line, _) in enumerate(_records(path)):
        if index == row + 1:
            return line
    return row + 2  # not found (pandas and csv disagree); assume one line per row


def _malformed_row_error(path: Path, where: str, exc: Exception) -> SpecError:
    width = None
    for line, fields in _records(path):
        if width is None:
            width = len(fields)
        elif len(fields) > width:
            return spec_error(
                f"{where}.path",
                f"{path}, line {line}: {len(fields)} fields where the header has {width}",
                allowed="one value per header column; quote values that contain commas",
            )
    return spec_error(f"{where}.path", f"{path} cannot be read as CSV: {exc}")
