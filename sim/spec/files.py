"""Reading a user's file within bounds.

Every file deploysim reads on a user's behalf (scenario, catalog and sweep YAML, request
traces, measurement CSV and JSON) is checked here before a byte is parsed:

- it must be a regular file: `/dev/zero` never ends, a FIFO blocks the reader for ever, and a
  directory is a typo;
- it must be no larger than a cap per kind of file (below), so that a wrong path costs an
  error message, not the machine's memory;
- text must be UTF-8 (a byte-order mark is allowed).

The read itself is bounded too (at most cap + 1 bytes), since a file can grow between the
size check and the read. Every refusal is a `SpecError` naming the file and the cap.

The caps, and why:

- `MAX_YAML_BYTES` (1 MiB): the largest shipped YAML file is the GPU catalog, about 20 kB.
  YAML is parsed in pure Python (the strict loader in `sim.spec.safe_yaml` needs PyYAML's
  Python composer) at about 0.2 MB/s, so 1 MiB keeps the worst case near 5 s.
- `MAX_TRACE_BYTES` (1 GiB): the Azure traces in `../shared/data` are under 1 MB; a month of a
  busy service is a few hundred MB of CSV. pandas holds about 3x the file while it reads.
- `MAX_MEASUREMENT_BYTES` (128 MiB): a vLLM `--save-result` JSON with per-request lists of
  100k requests is a few tens of MB; the published CSV is 4 kB.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sim.spec.errors import SpecError, SpecIssue

MiB = 2**20
MAX_YAML_BYTES = 1 * MiB
MAX_TRACE_BYTES = 1024 * MiB
MAX_MEASUREMENT_BYTES = 128 * MiB


def format_size(n_bytes: float) -> str:
    """1048576 -> '1 MiB' (binary units, as the caps are written)."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            scaled = n_bytes / size
            return f"{scaled:,.0f} {unit}" if scaled >= 1000 else f"{scaled:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def _refuse(path: Path, message: str, allowed: str, where: str = "") -> SpecError:
    return SpecError([SpecIssue(where, message, has_value=False, allowed=allowed)], str(path))


def check_file(path: str | Path, max_bytes: int, what: str, where: str = "") -> int:
    """The size of a readable regular file no larger than `max_bytes`, or a SpecError.

    `what` names the kind of file for the message ("YAML file", "trace"); `where` is the spec
    path to blame (empty for a file named on the command line).
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _refuse(path, "file not found", f"an existing {what}", where) from None
    except OSError as exc:
        raise _refuse(path, f"cannot read the file: {exc.strerror or exc}", f"a readable {what}", where) from None
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is a folder, not a file", f"a {what}", where)
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "is not a regular file (a device, a pipe or a socket)", f"a regular {what}", where)
    if info.st_size > max_bytes:
        raise _refuse(path, f"is {format_size(info.st_size)}, over the {format_size(max_bytes)} cap for a {what}",
                      f"a {what} of at most {format_size(max_bytes)}", where)
    if not os.access(path, os.R_OK):
        raise _refuse(path, "cannot read the file: permission denied", f"a readable {what}", where)
    return info.st_size


def read_text(path: str | Path, max_bytes: int, what: str, where: str = "") -> str:
    """The text of a file checked by `check_file`, read in a bounded way, decoded as UTF-8."""
    path = Path(path)
    check_file(path, max_bytes, what, where)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise _refuse(path, f"cannot read the file: {exc.strerror or exc}", f"a readable {what}", where) from None
    if len(data) > max_bytes:  # it grew after the size check
        raise _refuse(path, f"is over the {format_size(max_bytes)} cap for a {what}",
                      f"a {what} of at most {format_size(max_bytes)}", where)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(path, f"is not UTF-8 text (byte {exc.start} cannot be decoded)", f"a {what} in UTF-8",
                      where) from None
