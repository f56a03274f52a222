"""YAML and JSON read within bounds: input size, nesting depth and, for YAML, the size once aliases expand.

Recipes, search specs, manifests and annotation files may come from someone else. The parsers
recurse once per nesting level, so a deep enough file ends in a RecursionError; and a YAML alias
stands for a whole subtree, so a kilobyte of nested aliases is billions of nodes for every later
walk over the data (validation, copies, comparisons). Both are refused here while the file is
composed, cheaply, naming the source; JSON has no aliases and is bounded by Python's recursion limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stride.errors import StrideError

MAX_YAML_BYTES = 4 << 20  # recipes and search specs are a few KB
MAX_DEPTH = 64  # nesting levels, aliases expanded; a config uses fewer than ten
MAX_NODES = 100_000  # values, keys included and aliases expanded; a config has hundreds


class _Refused(yaml.YAMLError):
    """Past a bound: raised from inside the composer, so PyYAML stops right there."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that measures each composed node's expanded size and height as it goes."""

    def __init__(self, text: str, max_depth: int, max_nodes: int):
        super().__init__(text)
        self.max_depth, self.max_nodes = max_depth, max_nodes
        self.depth = 0
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height), aliases expanded

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # refused while scanning: the scanner looks up to 1,024 characters ahead at every open bracket
        if self.flow_level >= self.max_depth:
            raise _Refused(f"nested deeper than {self.max_depth} levels")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self.anchors and id(self.anchors[anchor]) not in self.measured:
                raise _Refused(f"the alias *{anchor} refers to a node that contains it")
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Refused(f"nested deeper than {self.max_depth} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        nodes, height = self.measured.get(id(node)) or self._measure(node)
        if nodes > self.max_nodes:
            raise _Refused(f"more than {self.max_nodes:,} values once its aliases are expanded")
        if height > self.max_depth:
            raise _Refused(f"nested deeper than {self.max_depth} levels once its aliases are expanded")
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes = [self.measured[id(child)] for child in children]
        self.measured[id(node)] = (1 + sum(n for n, _ in sizes), 1 + max((h for _, h in sizes), default=0))
        return self.measured[id(node)]


def load_yaml(text: str, source: str, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_DEPTH,
              max_nodes: int = MAX_NODES) -> Any:
    """One YAML document of plain data (PyYAML's safe tags), or a StrideError naming `source`."""
    if len(text) > max_bytes:
        raise StrideError(f"{source}: {len(text):,} characters, more than the {max_bytes:,} a YAML file here may hold")
    loader = _BoundedLoader(text, max_depth, max_nodes)
    try:
        return loader.get_single_data()
    except _Refused as err:
        raise StrideError(f"{source}: refused: {err}") from None
    except yaml.YAMLError as err:
        raise StrideError(f"{source}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def load_json(data: bytes | str, source: str) -> Any:
    """A JSON document, or a StrideError naming `source`: invalid, or nested past Python's recursion limit."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StrideError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise StrideError(f"{source}: refused: nested too deeply to read") from None


def read_json_file(path: Path, *, max_bytes: int) -> Any:
    """`load_json` of a file no larger than `max_bytes`, checked before it is read."""
    if not path.is_file():
        raise StrideError(f"{path}: missing" + (" (it is a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size > max_bytes:
        raise StrideError(f"{path}: {size:,} bytes, more than the {max_bytes:,} expected of this file")
    return load_json(path.read_bytes(), str(path))
