"""YAML as deploysim reads it: safe, strict and bounded.

PyYAML's `SafeLoader` never builds Python objects from tags, but it accepts three things that
hurt a simulator whose input is meant to be checked to the last field:

- **a key written twice** in one mapping: the last one silently wins, so a line a person
  wrote is ignored. Here it is an error naming the key's path and both lines.
- **aliases that expand into far more than the file holds**: ten anchored lists of ten
  aliases to the previous one is a few hundred bytes of text and 10^10 nodes once anything
  walks it (validation, a deep copy, an error message). Here every alias costs the number of
  nodes it stands for, and one document may spend at most `MAX_ALIAS_NODES` on aliases; an
  alias to a node that contains it (a structure that contains itself) is refused outright.
- **nesting deeper than anything a scenario needs**, which would exhaust Python's recursion in
  the composer and in every later walk. Here a document may nest at most `MAX_DEPTH` levels
  (a scenario needs about 8).

All three are checked by `StrictLoader` while the document is composed, before any Python
object exists, so the cost of a hostile file is bounded by its size (itself capped by
`sim.spec.files`). `load(text)` is the one entry point every reader uses: scenarios and the
files they extend, catalogs, sweeps and `--set` / `--vary` values.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 32
MAX_ALIAS_NODES = 10_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLimitError(yaml.MarkedYAMLError):
    """A document that breaks one of the rules above; `path` is where, as keys and indexes."""

    def __init__(self, problem: str, mark: Any, path: list[Any]) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.path = path


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate keys, alias bombs and deep nesting."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._path: list[Any] = []  # keys and indexes from the root to the node being composed
        self._open_anchors: set[str] = set()  # anchors of collections still being composed
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
        self._alias_nodes = 0
        self._seen_keys: dict[int, dict[Any, int]] = {}  # id(mapping) -> key -> line

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        step = self._step(parent, index)
        if step is not None:
            self._path.append(step)
        try:
            if isinstance(parent, MappingNode) and isinstance(index, Node):
                self._check_duplicate(parent, index)
            if self.check_event(yaml.AliasEvent):
                self._spend_alias(self.peek_event())
                return super().compose_node(parent, index)
            return self._compose_fresh(parent, index)
        finally:
            if step is not None:
                self._path.pop()

    def _compose_fresh(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection and len(self._path) >= MAX_DEPTH:
            raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", event.start_mark, list(self._path))
        anchor = event.anchor if collection else None
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if anchor is not None:
                self._open_anchors.discard(anchor)
        self._seen_keys.pop(id(node), None)
        return node

    @staticmethod
    def _step(parent: Node | None, index: Any) -> Any:
        """The path element of the node about to be composed (None for a key or the root)."""
        if isinstance(parent, SequenceNode):
            return index
        if isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
            return index.value
        if isinstance(parent, MappingNode) and isinstance(index, Node):
            return "<key>"
        return None

    # -- duplicate keys ---------------------------------------------------------------------

    def _key_identity(self, key: ScalarNode) -> Any:
        """What the key will be as a Python value (so `1` and `0x1` are the same key)."""
        construct = self.yaml_constructors.get(key.tag)
        try:
            value = construct(self, key) if construct is not None else key.value
            hash(value)
            return value
        except Exception:  # an odd scalar: compare its text
            return (key.tag, key.value)

    def _check_duplicate(self, mapping: MappingNode, key: Node) -> None:
        if not isinstance(key, ScalarNode) or key.tag == MERGE_TAG:
            return
        seen = self._seen_keys.setdefault(id(mapping), {})
        identity = self._key_identity(key)
        line = key.start_mark.line + 1
        if identity in seen:
            raise YamlLimitError(f"duplicate key {key.value!r} (first on line {seen[identity]}, again on line "
                                 f"{line}); YAML would keep only the last", key.start_mark, list(self._path))
        seen[identity] = line

    # -- aliases ----------------------------------------------------------------------------

    def _spend_alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor in self._open_anchors:
            raise YamlLimitError(f"alias *{event.anchor} refers to a node that contains it (a structure that "
                                 "contains itself)", event.start_mark, list(self._path))
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # PyYAML reports the undefined alias itself
        self._alias_nodes += self._size(node)
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise YamlLimitError(f"aliases expand to more than {MAX_ALIAS_NODES:,} values (alias *{event.anchor} "
                                 "and those before it)", event.start_mark, list(self._path))

    def _size(self, node: Node) -> int:
        """How many nodes `node` stands for once every alias in it is expanded (memoised)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, SequenceNode):
            size = 1 + sum(self._size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size


def load(text: str) -> Any:
    """One YAML document, read with `StrictLoader` (raises yaml.YAMLError subclasses)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
