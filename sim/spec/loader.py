"""Reading scenario files: YAML, `extends:`, `--set` overrides, the catalog, validation.

A scenario file may start from another with `extends: base.yaml` (a path relative to the file,
or a list of them, merged left to right). Mappings merge key by key, recursively; any other
value, lists included, replaces what the base had. A file cannot extend itself, directly or
through others: the chain is reported.

Overrides are `path=value` strings, as `deploysim run --set` takes them:
`workload.arrivals.rate_per_s=40`, `sites.premises.pools[0].count=8`, `links.wan.rtt=80ms`.
The value is read as YAML (so `40` is a number and `[1, 2]` a list) and then validated by the
models like anything written in the file.

Beside the merged document the loader keeps which file wrote each value (its origins, merged
by the same rules, with `--set` on top), so that a problem in a value an `extends`ed file
wrote, or a `--set` gave, names that file or that `--set` rather than the top-level file.

YAML is read with `sim.spec.safe_yaml`: safe loading only (no tag can construct Python
objects), and a duplicate key, an alias bomb or nesting beyond a fixed depth is an error. Files
are read within the size caps of `sim.spec.files`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from sim.spec import safe_yaml
from sim.spec.errors import SpecError, SpecIssue, finite_range, format_path, issues_from_validation
from sim.spec.files import MAX_YAML_BYTES, read_text
from sim.spec.scenario import Scenario
from sim.workload.arrivals import ARRIVALS
from sim.workload.lengths import LENGTHS

if TYPE_CHECKING:
    from sim.catalog import Catalog

_INDEX = re.compile(r"^(?P<key>[^\[\]]*)(?P<indexes>(\[\d+\])*)$")


# ------------------------------------------------------------------------------------------
# Documents
# ------------------------------------------------------------------------------------------


def read_yaml(path: Path, where: str = "") -> Any:
    """A YAML file's document, read within `MAX_YAML_BYTES` by the strict loader."""
    return parse_yaml(read_text(path, MAX_YAML_BYTES, "YAML file", where), str(path))


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """One YAML document; any problem is a SpecError saying where (line, column, key path)."""
    try:
        return safe_yaml.load(text)
    except safe_yaml.YamlLimitError as exc:
        path = format_path(part for part in exc.path if part != "<key>")
        raise SpecError([SpecIssue(path, f"{exc.problem} ({_position(exc.problem_mark)})", has_value=False)],
                        source) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            [SpecIssue("", f"not valid YAML at {_position(getattr(exc, 'problem_mark', None))}: {problem}",
                       has_value=False)], source
        ) from None


def _position(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"


def parse_value(text: str) -> Any:
    """A `--set` / `--vary` value read as YAML (so `40` is a number); unreadable YAML stays text.

    A value that breaks a rule of the strict loader (a duplicate key, an alias bomb, deep
    nesting) is a ValueError saying which, not text.
    """
    if not text.strip():
        return ""
    try:
        return safe_yaml.load(text)
    except safe_yaml.YamlLimitError as exc:
        raise ValueError(str(exc.problem)) from None
    except yaml.YAMLError:
        return text


# Keys that say which member of a family a mapping is (arrival process, length distribution,
# drift kind): a mapping that names another member replaces the base's instead of merging,
# since the old member's fields mean nothing to the new one.
FAMILY_KEYS = ("process", "dist", "kind")


def _switches_family(base: Mapping[str, Any], top: Mapping[str, Any]) -> bool:
    return any(key in top and key in base and top[key] != base[key] for key in FAMILY_KEYS)


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mappings recursively; every other value in `top` replaces the base's.

    A mapping that switches family (another `process:`, `dist:` or `kind:`) replaces the
    base's mapping whole.
    """
    merged = dict(base)
    for key, value in top.items():
        if (isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
                and not _switches_family(merged[key], value)):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _rebase_paths(doc: dict[str, Any], directory: Path) -> None:
    """File references in a document are relative to the file that wrote them."""
    catalog = doc.get("catalog")
    if isinstance(catalog, str) and not Path(catalog).is_absolute():
        doc["catalog"] = str((directory / catalog).resolve())
    workload = doc.get("workload")
    if not isinstance(workload, Mapping):
        return
    classes = workload.get("classes")
    for holder in [workload, *(classes if isinstance(classes, list) else [])]:
        if not isinstance(holder, Mapping):
            continue  # a class that is not a mapping: validation says so
        for key, family in (("arrivals", ARRIVALS), ("prompt_tokens", LENGTHS), ("output_tokens", LENGTHS)):
            part = holder.get(key)
            if not isinstance(part, dict):
                continue
            # any member's file fields: a file may set `path` and leave `process` to the one it extends
            for field in {name for member in family.members() for name in member.file_fields}:
                if isinstance(part.get(field), str) and not Path(part[field]).is_absolute():
                    part[field] = str((directory / part[field]).resolve())


def load_document(path: str | Path) -> dict[str, Any]:
    """A scenario file with its `extends:` chain merged in, as a plain mapping."""
    return _load_document(Path(path))[0]


def _load_document(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Origins]:
    """The merged document and, mirroring it, which file wrote each value (`Origins`)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise SpecError(
            [SpecIssue("extends", f"extends forms a cycle: {cycle}", has_value=False,
                       allowed="a chain of files that ends in a file without extends")],
            str(chain[0]),
        )
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(
            [SpecIssue("", "a scenario file must be a mapping of keys to values", type(raw).__name__)],
            str(path),
        )
    raw = copy.deepcopy(raw)
    _rebase_paths(raw, path.parent)
    parents = raw.pop("extends", None)
    if parents is None:
        return raw, origins_of(raw, str(path))
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise SpecError(
            [SpecIssue("extends", "extends must name a file or a list of files", parents,
                       "a path relative to this file, e.g. 'base.yaml'")],
            str(path),
        )
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for parent in parents:
        parent_path = (path.parent / parent).resolve()
        if not parent_path.exists():  # anything else that is not a readable file, read_yaml says what
            raise SpecError(
                [SpecIssue("extends", f"the file to extend does not exist: {parent_path}", parent,
                           "a path relative to this file, e.g. 'base.yaml'")],
                str(path),
            )
        try:
            document, found = _load_document(parent_path, (*chain, path))
        except SpecError as exc:
            raise exc.with_source(exc.source or str(parent_path)) from None
        origins = merge_origins(merged, origins, document, found)
        merged = deep_merge(merged, document)
    origins = merge_origins(merged, origins, raw, origins_of(raw, str(path)))
    return deep_merge(merged, raw), origins


# ------------------------------------------------------------------------------------------
# Origins: which file wrote each value
# ------------------------------------------------------------------------------------------

# A tree shaped like the document: a mapping's origins are a dict of its keys' origins; any
# other value's origin is the file (or `--set`) that wrote it. A value a `--set` changed in
# part (an item of a list) becomes an `_Inherited` dict.
Origins = dict[Any, Any]


def origins_of(doc: Mapping[Any, Any], file: str) -> Origins:
    """Every value of one file's document comes from that file."""
    return {key: origins_of(value, file) if isinstance(value, Mapping) else file for key, value in doc.items()}


def merge_origins(base: Mapping[Any, Any], base_origins: Origins, top: Mapping[Any, Any],
                  top_origins: Origins) -> Origins:
    """The origins of `deep_merge(base, top)`, following its rules exactly."""
    merged = dict(base_origins)
    for key, value in top.items():
        if (isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
                and not _switches_family(base[key], value)):
            merged[key] = merge_origins(base[key], base_origins.get(key, {}), value, top_origins[key])
        else:
            merged[key] = top_origins[key]
    return merged


class _Inherited(dict):
    """Origins inside a value one file wrote and a `--set` changed in part (a list item, say):
    what the override wrote is in the dict, everything else is still `default`'s."""

    def __init__(self, default: Any) -> None:
        super().__init__()
        self.default = default


def _set_origin(origins: Origins, parts: Sequence[str | int], label: str) -> None:
    """Record that a `--set` wrote the value at `parts` (as `set_path` walks the document)."""
    node: Any = origins
    for i, part in enumerate(parts):
        if i == len(parts) - 1:
            node[part] = label
            return
        child = node.get(part)
        if not isinstance(child, dict):  # a value written whole by a file, or nothing yet
            inherited = child if child is not None else getattr(node, "default", None)
            child = node[part] = _Inherited(inherited) if inherited is not None else {}
        node = child


def origin_of(origins: Origins, path: str) -> str | None:
    """The file that wrote the value at a user path, if one file wrote all of it."""
    try:
        parts = parse_override_path(path)
    except ValueError:
        return None
    node: Any = origins
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            node = getattr(node, "default", node)
            break
    files = set(_leaf_files(node))
    return files.pop() if len(files) == 1 else None


def _leaf_files(node: Any) -> Iterable[Any]:
    if isinstance(node, _Inherited):
        yield node.default
    if isinstance(node, dict):
        for child in node.values():
            yield from _leaf_files(child)
    else:
        yield node


def attribute(issues: Sequence[SpecIssue], origins: Origins | None, source: str) -> list[SpecIssue]:
    """Issues with `file` set where the value came from another file than `source`."""
    if not origins:
        return list(issues)
    out = []
    for issue in issues:
        origin = None if issue.file else origin_of(origins, issue.path)
        out.append(dataclasses.replace(issue, file=origin) if origin and not _same_file(origin, source) else issue)
    return out


def _same_file(origin: str, source: str) -> bool:
    return origin == source or (origin != "--set" and Path(source).resolve() == Path(origin))


# ------------------------------------------------------------------------------------------
# Overrides
# ------------------------------------------------------------------------------------------


def parse_override_path(path: str) -> list[str | int]:
    """'sites.premises.pools[0].count' -> ['sites', 'premises', 'pools', 0, 'count']."""
    parts: list[str | int] = []
    if not path or path.strip() != path:
        raise ValueError(f"empty or padded path {path!r}")
    for token in path.split("."):
        match = _INDEX.match(token)
        if not match or not match.group("key") and not match.group("indexes"):
            raise ValueError(f"cannot read {token!r} in {path!r}")
        if match.group("key"):
            key = match.group("key")
            parts.append(int(key) if key.isdigit() else key)
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group("indexes")))
    return parts


def set_path(doc: dict[str, Any], parts: Sequence[str | int], value: Any) -> None:
    """Set a value deep in a document, creating mappings on the way."""
    node: Any = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = format_path(parts[: i + 1])
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ValueError(f"{format_path(parts[:i])} is a list; use an index like [0], not {part!r}")
            if part >= len(node):
                raise ValueError(f"{where} is past the end of a list of {len(node)}")
            if last:
                node[part] = value
            else:
                node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{format_path(parts[:i])} holds a value, not a mapping")
        key: str | int = str(part) if isinstance(part, int) and part not in node else part
        if last:
            node[key] = value
        else:
            if key not in node or node[key] is None:
                node[key] = {}
            node = node[key]


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `path=value` overrides to a copy of a document."""
    doc = copy.deepcopy(doc)
    issues: list[SpecIssue] = []
    for text in overrides:
        if "=" not in text:
            issues.append(SpecIssue(f"--set {text}", "an override needs '=': path=value", text,
                                    "e.g. --set workload.arrivals.rate_per_s=40"))
            continue
        path, _, raw_value = text.partition("=")
        path = path.strip()
        try:
            parts = parse_override_path(path)
        except ValueError as exc:
            issues.append(SpecIssue(f"--set {text}", f"bad path: {exc}", path,
                                    "dotted keys with optional [index], e.g. sites.premises.pools[0].count"))
            continue
        try:
            value = parse_value(raw_value)
        except ValueError as exc:
            issues.append(SpecIssue(f"--set {path}", f"bad value: {exc}", has_value=False))
            continue
        try:
            set_path(doc, parts, value)
        except ValueError as exc:
            issues.append(SpecIssue(f"--set {text}", str(exc), has_value=False))
    if issues:
        raise SpecError(issues, "--set")
    return doc


# ------------------------------------------------------------------------------------------
# Scenario
# ------------------------------------------------------------------------------------------


def catalog_from_document(extra: Any, source: str = "") -> Catalog:
    """The shipped catalog with a user's catalog document merged over it, checked.

    Every number must be finite; every problem names `source` (the user's catalog file).
    """
    from sim.catalog import Catalog as CatalogModel
    from sim.catalog import catalog_raw

    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise SpecError([SpecIssue("", "a catalog file must be a mapping of keys to values", type(extra).__name__,
                                   "gpus:, models: and prices: entries")], source)
    try:
        catalog = CatalogModel.model_validate(catalog_raw(extra))
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc, CatalogModel), source) from None
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:  # a shape the merge cannot take
        raise SpecError([SpecIssue("", f"cannot read the catalog: {exc}", has_value=False)], source) from None
    issues = non_finite_issues(catalog)
    if issues:
        raise SpecError(issues, source)
    return catalog


def load_catalog_file(path: str | Path | None, where: str = "") -> Catalog:
    """The shipped catalog with a user's catalog file merged over it (None: the shipped one)."""
    from sim.catalog import shipped_catalog

    if path is None:
        return shipped_catalog()
    return catalog_from_document(read_yaml(Path(path), where), str(path))


def non_finite_issues(value: Any, path: tuple[Any, ...] = (), model: Any = None) -> list[SpecIssue]:
    """Every NaN or infinite number in a validated model, with its path and allowed range.

    For models that do not refuse them themselves (the catalog's).
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        key = path[-1] if path else None
        return [SpecIssue(format_path(path), "not a finite number", value, finite_range(model, key))]
    if isinstance(value, BaseModel):
        return [issue for name in type(value).model_fields
                for issue in non_finite_issues(getattr(value, name), (*path, name), type(value))]
    if isinstance(value, Mapping):
        return [issue for key, item in value.items() for issue in non_finite_issues(item, (*path, key))]
    if isinstance(value, list | tuple):
        return [issue for i, item in enumerate(value) for issue in non_finite_issues(item, (*path, i))]
    return []


def _load_catalog(doc: dict[str, Any]) -> Catalog:
    catalog_path = doc.get("catalog")
    if isinstance(catalog_path, str) and not Path(catalog_path).exists():
        raise SpecError([SpecIssue("catalog", "catalog file not found", catalog_path,
                                   "a YAML file with gpus:, models: or prices: entries")])
    try:
        return load_catalog_file(catalog_path if isinstance(catalog_path, str) else None, "catalog")
    except SpecError as exc:  # the problems are in the catalog file: say so on each
        raise SpecError([dataclasses.replace(i, file=i.file or exc.source) for i in exc.issues]) from None


def scenario_from_document(doc: Any, source: str = "", origins: Origins | None = None) -> Scenario:
    """Validate a merged document into a Scenario, with catalog and cross-field checks.

    `origins` (from `load_scenario`) says which file wrote each value, so that a problem in
    an `extends`ed file, or set by a `--set`, names it.
    """
    from sim.spec.checks import check_scenario

    if not isinstance(doc, dict):
        raise SpecError([SpecIssue("", "a scenario must be a mapping of keys to values", type(doc).__name__)], source)
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(attribute(issues_from_validation(exc, Scenario), origins, source), source) from None
    except (TypeError, ValueError, RecursionError) as exc:  # pydantic raises these on pathological input
        raise SpecError([SpecIssue("", f"cannot read the scenario: {exc}", has_value=False)], source) from None
    try:
        catalog = _load_catalog(doc)
    except SpecError as exc:
        raise SpecError(attribute(exc.issues, origins, source), source) from None
    issues = check_scenario(scenario, catalog)
    if issues:
        raise SpecError(attribute(issues, origins, source), source)
    scenario.attach(catalog, source)
    return scenario


def load_scenario(
    path: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()
) -> Scenario:
    """Load, merge, override and validate a scenario.

    >>> s = load_scenario("scenarios/s1_local.yaml", ["workload.arrivals.rate_per_s=8"])
    >>> s.workload.arrivals.rate_per_s
    8.0
    """
    overrides = list(overrides)
    origins: Origins | None = None
    if isinstance(path, Mapping):
        source = "<document>"
        doc = copy.deepcopy(dict(path))
    else:
        source = str(path)
        doc, origins = _load_document(Path(path))
    if overrides:
        try:
            doc = apply_overrides(doc, overrides)
        except SpecError as exc:
            raise exc.with_source(source) from None
        if origins is not None:
            for text in overrides:
                _set_origin(origins, parse_override_path(text.partition("=")[0].strip()), "--set")
    return scenario_from_document(doc, source, origins)


def spec_hash(scenario: Scenario) -> str:
    """A short, stable hash of everything the scenario says (after defaults and units)."""
    canonical = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def dump_scenario(scenario: Scenario) -> str:
    """The fully resolved scenario as YAML (SI units, every default spelled out)."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
