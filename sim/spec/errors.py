"""Errors a person can act on.

Every mistake in a scenario, from a YAML typo to a model that does not fit its GPU, becomes a
`SpecIssue`: the field path as the user wrote it (`sites.premises.pools[0].gpu`), the bad
value, what went wrong and what is allowed. A `SpecError` carries all issues of one file, so a
user fixes them in one pass; its text fits on one screen. The CLI prints it and exits with
code 2; it never shows a traceback for a user's mistake.

Pydantic's errors are translated here: discriminator tags are dropped from paths, unknown keys
get a "did you mean" from the fields the model really has, and constraint types become plain
words ("a whole number >= 0", "a finite number > 0").

Rendering is bounded in time and size whatever the value: a value is shown through `reprlib`
limits (a few items per level, a few levels, long text cut) and never through its full
`repr()`, which for a YAML alias bomb or a million-item list would not end; messages and paths
are cut too. An issue may name the file it comes from (`file`) when that is not the file the
error is about: a value set in an `extends`ed file, a catalog file, or a `--set`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pydantic is imported where its errors are translated: `deploysim --help` needs none
    from pydantic import BaseModel, ValidationError

MAX_ISSUES_SHOWN = 12
MAX_VALUE_CHARS = 60
MAX_TEXT_CHARS = 400  # a message, a path or an allowed-values list, each


@dataclass(frozen=True)
class SpecIssue:
    path: str
    message: str
    value: Any = None
    allowed: str = ""
    has_value: bool = True
    file: str = ""  # the file the value comes from, when not the one the error is about

    def render(self, source: str = "") -> str:
        where = _cut(self.path or "(top level)")
        if self.file and self.file != source:
            where += f" (in {_cut(self.file)})"
        text = f"{where}: {_cut(self.message)}"
        if self.has_value:
            text += f" (got {short_repr(self.value)})"
        if self.allowed:
            text += f"\n    allowed: {_cut(self.allowed)}"
        return text


class SpecError(ValueError):
    """A scenario, catalog or override that cannot be used, with every problem found."""

    def __init__(self, issues: Sequence[SpecIssue], source: str = "") -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.issues)
        head = f"{_cut(self.source)}: " if self.source else ""
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} found"]
        for issue in self.issues[:MAX_ISSUES_SHOWN]:
            lines.append("  - " + issue.render(self.source).replace("\n", "\n  "))
        if count > MAX_ISSUES_SHOWN:
            lines.append(f"  ... and {count - MAX_ISSUES_SHOWN} more")
        return "\n".join(lines)

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.issues, source or self.source)

    def within(self, source: str) -> SpecError:
        """This error as found while checking `source`: issues from another file (an extended
        file, a catalog) keep naming that file."""
        if not self.source or _same_path(self.source, source):
            return SpecError(self.issues, source)
        return SpecError([dataclasses.replace(i, file=i.file or self.source) for i in self.issues], source)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args (here the rendered text); worker processes send
        # SpecErrors back whole, issues and source.
        return (SpecError, (self.issues, self.source))


def _same_path(a: str, b: str) -> bool:
    try:
        return a == b or Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return a == b


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _BoundedRepr(reprlib.Repr):
    """reprlib with small limits, insertion order kept, and no full repr() of anything."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = 6
        self.maxstring = self.maxother = MAX_VALUE_CHARS
        self.maxlong = 40

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = []
        for i, (key, value) in enumerate(x.items()):
            if i >= self.maxdict:
                items.append("...")
                break
            items.append(f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}")
        return "{" + ", ".join(items) + "}"

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() of a huge int is slow (and refused past 4300 digits)
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"<{'-' if x < 0 else ''}a whole number of about {digits} digits>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        if isinstance(x, float | complex | bool | dt.date | dt.time | dt.timedelta | PurePath | type(None)):
            return reprlib.Repr.repr_instance(self, x, level)
        if isinstance(x, bytes | bytearray):
            return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")
        size = getattr(x, "size", None) if hasattr(x, "shape") else None  # numpy arrays
        return f"<{type(x).__name__}" + (f" of {size} values>" if isinstance(size, int) else ">")


_BOUNDED = _BoundedRepr()


def short_repr(value: Any) -> str:
    """A value as it is shown in an error: at most ~60 characters, in bounded time."""
    try:
        text = _BOUNDED.repr(value)
    except Exception:  # a value whose repr fails must not hide the error it belongs to
        text = f"<{type(value).__name__}>"
    return _cut(text, MAX_VALUE_CHARS)


def format_path(parts: Iterable[Any]) -> str:
    """('sites', 'premises', 'pools', 0, 'gpu') -> 'sites.premises.pools[0].gpu'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            out += ("." if out else "") + text
    return out


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'gpu'?)' when a close match exists, else ''."""
    matches = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


# ------------------------------------------------------------------------------------------
# Walking model types along an error location
# ------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_model(value: Any) -> bool:
    """Whether `value` is a pydantic model class."""
    from pydantic import BaseModel

    return isinstance(value, type) and issubclass(value, BaseModel)


def _members(tp: Any) -> list[Any]:
    return [_unwrap(m) for m in typing.get_args(tp) if m is not type(None)]


def _model_field(model: type[BaseModel], key: str) -> Any | None:
    fields = model.model_fields
    if key in fields:
        return fields[key].annotation
    for field in fields.values():
        if field.alias == key:
            return field.annotation
    return None


def _tagged_member(members: list[Any], tag: str) -> Any | None:
    for member in members:
        if _is_model(member):
            for field in member.model_fields.values():
                if typing.get_origin(field.annotation) is typing.Literal and tag in typing.get_args(field.annotation):
                    return member
    return None


_UNION_MEMBER = object()


def walk_location(root: type[BaseModel], loc: Sequence[Any]) -> tuple[list[Any], Any]:
    """Follow a pydantic error location through the model types.

    Returns the location as the user sees it (union tags and member type names removed) and the
    type found at its end (a model class when the location ends inside one), or None when the
    walk leaves the known types.
    """
    path: list[Any] = []
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        # Optional[X] and plain unions: step into the member the part belongs to.
        while _is_union(current):
            members = _members(current)
            if len(members) == 1:
                current = members[0]
                continue
            tagged = _tagged_member(members, str(part)) if isinstance(part, str) else None
            if tagged is not None:
                current = tagged
                break
            models = [m for m in members if _is_model(m)]
            current = models[0] if len(models) == 1 else None
            if not models and isinstance(part, str):
                current = _UNION_MEMBER  # pydantic names the member it tried ('float', 'int')
            break
        if current is _UNION_MEMBER:
            current = None
            continue
        if current is not None and isinstance(part, str) and _is_tag_of(current, part):
            continue  # a discriminator tag pydantic puts in the location; users never wrote it
        path.append(part)
        if current is None:
            continue
        if _is_model(current):
            current = _model_field(current, str(part))
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (list, tuple):
            args = typing.get_args(current)
            current = args[0] if args else None
        else:
            current = None
    current = _unwrap(current) if current is not None else None
    if current is not None and _is_union(current):
        members = _members(current)
        current = members[0] if len(members) == 1 else current
    return path, current


def _is_tag_of(current: Any, part: str) -> bool:
    """Whether `part` is a discriminator value naming the model `current` (pydantic adds it)."""
    if not (_is_model(current)):
        return False
    if part in current.model_fields:
        return False
    for field in current.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal and typing.get_args(field.annotation) == (part,):
            return True
    return False


def _allowed_keys(model: Any) -> list[str]:
    if _is_model(model):
        return list(model.model_fields)
    return []


_TYPE_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
    "list_type": "a list",
    "tuple_type": "a list",
    "date_parsing": "a date, YYYY-MM-DD",
    "date_from_datetime_parsing": "a date, YYYY-MM-DD",
    "finite_number": "a finite number",
}


def _allowed_from_error(error: Mapping[str, Any], model_here: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        sign, key = bounds[kind]
        bound = ctx.get(key)
        return f"a value {sign} {bound:g}" if isinstance(bound, int | float) else f"a value {sign} {bound}"
    if kind == "literal_error":
        return f"one of {ctx.get('expected', '')}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"'{ctx.get('discriminator', '').strip(chr(39))}' set to one of {ctx.get('expected_tags', '')}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_short":
        return f"text of at least {ctx.get('min_length')} character(s)"
    if kind == "missing":
        return "this field is required"
    return _TYPE_WORDS.get(kind, "")


_BOUND_SIGNS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
_BOUND_ERRORS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def finite_range(model: Any, key: Any) -> str:
    """'a finite number > 0 and <= 1': the range a model's numeric field allows, in words."""
    bounds: list[str] = []
    if _is_model(model) and isinstance(key, str):
        field = model.model_fields.get(key)
        for constraint in field.metadata if field is not None else ():
            for attribute, sign in _BOUND_SIGNS:
                value = getattr(constraint, attribute, None)
                if value is not None:
                    bounds.append(f"{sign} {value:g}" if isinstance(value, int | float) else f"{sign} {value}")
    return "a finite number" + (" " + " and ".join(bounds) if bounds else "")


def issues_from_validation(
    error: ValidationError, root: type[BaseModel], prefix: Sequence[Any] = ()
) -> list[SpecIssue]:
    """Translate pydantic's errors into SpecIssues with user paths and plain words."""
    issues: list[SpecIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in error.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        try:
            path_parts, _ = walk_location(root, loc)
            parent_parts, parent_type = walk_location(root, loc[:-1]) if loc else ([], root)
        except Exception:  # the walk is a nicety; never let it hide the real error
            path_parts, parent_type = list(loc), None
        path = format_path([*prefix, *path_parts])
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            options = _allowed_keys(parent_type)
            message = f"unknown key {key!r}{suggest(key, options)}"
            allowed = ", ".join(options) if options else ""
            issue = SpecIssue(path, message, allowed=allowed, has_value=False)
        elif kind == "missing":
            issue = SpecIssue(path, "required field is missing", has_value=False)
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx") or {}
            field = str(ctx.get("discriminator", "")).strip("'")
            tag = str(ctx.get("tag", ""))
            tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
            if kind == "union_tag_not_found":
                issue = SpecIssue(path, f"missing {field!r}", has_value=False, allowed=", ".join(tags))
            else:
                issue = SpecIssue(path + f".{field}" if field else path,
                                  f"unknown {field} {tag!r}{suggest(tag, tags)}", tag, ", ".join(tags))
        elif kind == "finite_number" or (kind in _BOUND_ERRORS and _non_finite(err.get("input"))):
            # NaN fails every bound check too: say what is really wrong with it
            last_key: Any = path_parts[-1] if path_parts else None
            issue = SpecIssue(path, "not a finite number", err.get("input"), finite_range(parent_type, last_key))
        elif kind in _BOUND_ERRORS:
            issue = SpecIssue(path, "out of range", err.get("input"), _allowed_from_error(err, parent_type))
        else:
            message = str(err["msg"])
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            elif message.startswith("Assertion failed, "):
                message = message[len("Assertion failed, "):]
            message = message[0].lower() + message[1:] if message else message
            allowed = _allowed_from_error(err, parent_type)
            if "; allowed: " in message:  # unit errors say what is allowed themselves
                message, _, allowed = message.partition("; allowed: ")
            issue = SpecIssue(path, message, err.get("input"), allowed)
        found = (issue.path, issue.message)
        if found not in seen:
            seen.add(found)
            issues.append(issue)
    return issues
