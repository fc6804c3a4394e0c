"""Output folders: where results go, and how a name becomes part of a path.

Two rules keep every file deploysim writes inside the folder a person chose:

- **Names are labels, never paths.** A scenario's or sweep's `name` only becomes a folder
  name through `folder_name`, which keeps letters, digits, `.`, `_` and `-` (any script),
  turns every other run of characters (separators, spaces, control characters) into `_`, and
  cannot produce `.`, `..`, an absolute path or an empty name: `name: ../../../tmp/x` is the
  folder `tmp_x`, `name: /tmp/escape_abs` is `tmp_escape_abs`.
- **The output folder is ready before the work starts.** `prepare_out_dir` creates `--out`
  (or the default folder) and proves it writable by creating and removing a file in it, so a
  typo in `--out` costs a second, not a simulation that cannot be saved. `prepare_out_file`
  does the same for a command that writes one file (`calibrate --out my_hw.yaml`).

Files that must survive a crash or a power loss (a sweep's points and manifest) are written by
`write_durably`: to a temporary name, flushed and fsynced, renamed over the target, and the
folder fsynced, so that afterwards the file is either absent or whole. A rename alone can
reach the disk before the data it names, leaving a zero-byte file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from sim.spec.errors import SpecError, SpecIssue

MAX_FOLDER_NAME_CHARS = 100
_NOT_NAME = re.compile(r"[^\w.\-]+")  # \w: letters and digits of any script, and '_'


def folder_name(label: str, fallback: str = "unnamed") -> str:
    """A readable, safe folder name for a label (see the module doc)."""
    name = _NOT_NAME.sub("_", str(label)).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:MAX_FOLDER_NAME_CHARS].rstrip("._-")
    return name or fallback


def _unusable(path: Path, option: str, message: str, allowed: str = "a folder you can write to") -> SpecError:
    return SpecError([SpecIssue(option, message, str(path), allowed)])


def prepare_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Create the output folder (and its parents) and check that files can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _unusable(path, option, "is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(path, option, f"cannot create the folder: {exc.strerror or exc}") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=".deploysim-write-check-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise _unusable(path, option, f"cannot write in the folder: {exc.strerror or exc}") from None
    return path


def prepare_out_file(path: str | Path, option: str = "--out") -> Path:
    """Check that a file can be written at `path` (its folder is created if needed)."""
    path = Path(path)
    if path.is_dir():
        raise _unusable(path, option, "is a folder; give a file name", "a file name, e.g. my_hw.yaml")
    prepare_out_dir(path.parent if str(path.parent) else Path("."), option)
    if path.exists() and not os.access(path, os.W_OK):
        raise _unusable(path, option, "the file exists and cannot be written", "a file you can write")
    return path


def write_durably(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that after a crash it is absent, the old file, or the new one whole."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: str | Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on a folder; the data itself is synced
        pass
    finally:
        os.close(handle)
