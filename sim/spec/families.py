"""Families: the interchangeable parts of a scenario, each kept in one registry.

A family is a set of members a scenario chooses between by name: arrival processes
(`process:`), token-length distributions (`dist:`), service-time distributions, routers and
drift detectors. Each member keeps what a user writes (its spec fields) and what it does in
one place, its family's module, and registers itself there. Nothing else lists the members:
the scenario's unions and name lists are generated from the registry (`Family.choice`), and
every registration rebuilds the scenario models that hold them, so a member added later (a
plugin, a test's toy) validates and runs exactly like a built-in one.

Two kinds of family:

- A **model family** (`Family("arrival process", key="process")`): each member is a `Spec`
  subclass whose `key` field is a one-value `Literal` naming it, e.g.
  `process: Literal["poisson"]`. The scenario field holds the discriminated union of the
  members, so an unknown name is reported with the names allowed and a "did you mean".
- A **named family** (`Family("router")`): each member is any object with a `name`; the
  scenario field holds a `Literal` of the names.

The scenario declares which of its fields a family fills (`family.bind(Model, "field")`).
`register` then sets those fields' annotations to the new union and rebuilds, in
dependency order, every pydantic model of `sim` that holds them directly or through other
models (`Workload`, then `Scenario`, ...). Read a family's current union from the model
field (`Workload.model_fields["arrivals"]`), not from a module-level alias taken at import.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, Field

from sim.spec.errors import suggest

M = TypeVar("M")


class Family(Generic[M]):
    """The members of one family, by name, in the order they were registered."""

    def __init__(self, title: str, key: str | None = None) -> None:
        self.title = title
        self.key = key
        self._members: dict[str, M] = {}
        self._bindings: list[tuple[type[BaseModel], tuple[str, ...]]] = []

    # -- members ----------------------------------------------------------------------------

    def register(self, member: M) -> M:
        """Add a member (usable as a class decorator) and rebuild the models that hold the family."""
        name = self.name_of(member)
        if name in self._members:
            raise ValueError(f"a {self.title} named {name!r} is already registered")
        self._members[name] = member
        self._rebuild()
        return member

    def unregister(self, name: str) -> None:
        """Remove a member (a test's toy, once the test is done) and rebuild."""
        del self._members[name]
        self._rebuild()

    def name_of(self, member: Any) -> str:
        """A member's name: its `key` Literal (model families) or its `name` attribute."""
        if self.key is None:
            return str(member.name)
        fields = getattr(member, "model_fields", {})
        values = typing.get_args(fields[self.key].annotation) if self.key in fields else ()
        if len(values) != 1 or not isinstance(values[0], str):
            raise TypeError(f"a {self.title} is a Spec with `{self.key}: Literal['<its name>']`")
        return values[0]

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def members(self) -> list[M]:
        return list(self._members.values())

    def get(self, name: Any, default: M | None = None) -> M | None:
        return self._members.get(name, default) if isinstance(name, str) else default

    def __getitem__(self, name: str) -> M:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"unknown {self.title} {name!r}{suggest(name, self._members)}; "
                           f"allowed: {', '.join(self._members)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Family({self.title!r}: {', '.join(self._members)})"

    # -- the scenario's view ----------------------------------------------------------------

    def choice(self) -> Any:
        """The annotation of a scenario field that takes one member: a discriminated union of
        the member models, or a Literal of the names."""
        if not self._members:
            raise RuntimeError(f"the {self.title} family has no members yet")
        if self.key is None:
            return self._bare_choice()
        return Annotated[self._bare_choice(), Field(discriminator=self.key)]

    def _bare_choice(self) -> Any:
        if self.key is None:
            return Literal[self.names()]
        return Union[tuple(self._members.values())]  # noqa: UP007

    def bind(self, model: type[BaseModel], *fields: str) -> None:
        """Declare that `model`'s `fields` take this family's choice (kept current on register)."""
        for field in fields:
            info = model.model_fields.get(field)
            if info is None:
                raise ValueError(f"{model.__name__} has no field {field!r}")
            if self.key is not None and info.discriminator != self.key:
                raise ValueError(f"{model.__name__}.{field} is not a union discriminated by {self.key!r}")
        self._bindings.append((model, fields))

    def _rebuild(self) -> None:
        if not self._bindings:
            return  # the scenario is not built yet: it reads the members when it is
        choice = self._bare_choice()  # a bound field keeps its discriminator in its FieldInfo
        for model, fields in self._bindings:
            for field in fields:
                info = model.model_fields[field]
                optional = _is_optional(info.annotation)
                info.annotation = choice | None if optional else choice
        rebuild_models_using({model for model, _ in self._bindings})


def _is_optional(annotation: Any) -> bool:
    return (typing.get_origin(annotation) in (Union, types.UnionType)
            and type(None) in typing.get_args(annotation))


# ------------------------------------------------------------------------------------------
# Rebuilding the models that hold a changed one
# ------------------------------------------------------------------------------------------


def _sim_models() -> list[type[BaseModel]]:
    """Every pydantic model class defined under `sim` (subclasses of subclasses included)."""
    found: list[type[BaseModel]] = []
    stack = list(BaseModel.__subclasses__())
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "sim":
            found.append(cls)
    return found


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    """The model classes an annotation mentions (inside unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    out: set[type[BaseModel]] = set()
    for arg in typing.get_args(annotation):
        out |= _models_in(arg)
    return out


def rebuild_models_using(changed: set[type[BaseModel]]) -> None:
    """Rebuild `changed` and every `sim` model that holds one of them, inner models first."""
    models = _sim_models()
    uses = {m: set().union(*(_models_in(f.annotation) for f in m.model_fields.values()))
            for m in models}
    dirty = set(changed)
    grew = True
    while grew:
        grew = False
        for model in models:
            if model not in dirty and uses[model] & dirty:
                dirty.add(model)
                grew = True
    done: set[type[BaseModel]] = set()

    def rebuild(model: type[BaseModel]) -> None:
        if model in done:
            return
        done.add(model)
        for inner in uses.get(model, set()) & dirty:
            rebuild(inner)
        model.model_rebuild(force=True)

    for model in sorted(dirty, key=lambda m: (m.__module__, m.__qualname__)):
        rebuild(model)
