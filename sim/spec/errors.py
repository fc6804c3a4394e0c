"""Errors a person can act on.

Every mistake in a scenario, from a YAML typo to a model that does not fit its GPU, becomes a
`SpecIssue`: the field path as the user wrote it (`sites.premises.pools[0].gpu`), the bad
value, what went wrong and what is allowed. A `SpecError` carries all issues of one file, so a
user fixes them in one pass; its text fits on one screen. The CLI prints it and exits with
code 2; it never shows a traceback for a user's mistake.

Pydantic's errors are translated here: discriminator tags are dropped from paths, unknown keys
get a "did you mean" from the fields the model really has, and constraint types become plain
words ("a whole number >= 0").
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ValidationError

MAX_ISSUES_SHOWN = 12


@dataclass(frozen=True)
class SpecIssue:
    path: str
    message: str
    value: Any = None
    allowed: str = ""
    has_value: bool = True

    def render(self) -> str:
        where = self.path or "(top level)"
        text = f"{where}: {self.message}"
        if self.has_value:
            text += f" (got {_short(self.value)})"
        if self.allowed:
            text += f"\n    allowed: {self.allowed}"
        return text


class SpecError(ValueError):
    """A scenario, catalog or override that cannot be used, with every problem found."""

    def __init__(self, issues: Sequence[SpecIssue], source: str = "") -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.issues)
        head = f"{self.source}: " if self.source else ""
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} found"]
        for issue in self.issues[:MAX_ISSUES_SHOWN]:
            lines.append("  - " + issue.render().replace("\n", "\n  "))
        if count > MAX_ISSUES_SHOWN:
            lines.append(f"  ... and {count - MAX_ISSUES_SHOWN} more")
        return "\n".join(lines)

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.issues, source or self.source)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field in member.model_fields.values():
                if typing.get_origin(field.annotation) is typing.Literal and tag in typing.get_args(field.annotation):
                    return member
    return None


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
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            current = models[0] if len(models) == 1 else None
            break
        if current is not None and isinstance(part, str) and _is_tag_of(current, part):
            continue  # a discriminator tag pydantic puts in the location; users never wrote it
        path.append(part)
        if current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
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
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return False
    if part in current.model_fields:
        return False
    for field in current.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal and typing.get_args(field.annotation) == (part,):
            return True
    return False


def _allowed_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
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


def _allowed_from_error(error: dict[str, Any], model_here: Any) -> str:
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
        return f"a value {sign} {ctx.get(key)}"
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
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
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
        key = (issue.path, issue.message)
        if key not in seen:
            seen.add(key)
            issues.append(issue)
    return issues
