"""YAML text -> plain Python data plus the 1-based line/column of every node.

Called by `policies.loader` only. We use ruamel.yaml's round-trip *composer* (YAML 1.2, every node
carries its start mark) and build the plain data ourselves instead of running ruamel's constructor,
because:
  - the node tree still holds duplicate keys, so we can report every one of them with its line;
  - ruamel's constructor raises bare ValueErrors on input such as `2020-13-45` (a "timestamp")
    and builds self-referencing objects from `&a [*a]`; building the data here lets us turn all of
    that into ordinary error messages, with no exception escaping to an SRE;
  - we can cap alias expansion ("billion laughs") and nesting depth.
Scalars become str/int/float/bool/None by their resolved YAML 1.2 tag; any other tag (timestamps,
`!!binary`, custom `!tags`) keeps the source text, so pydantic reports a clear type error.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
MAX_NODES = 100_000  # far above any real policy; stops alias bombs
MAX_DEPTH = 64  # a policy nests about 5 deep


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based


@dataclass(frozen=True)
class Problem:
    """Something wrong with the YAML itself (not the policy's content)."""

    path: Path
    position: Position
    message: str


class YamlSyntaxError(Exception):
    """The text is not YAML at all; carries one Problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass
class Document:
    data: Any
    # Where each path's value is: the value for scalars, the key for mappings/lists (whose value
    # starts on the next line), the item for list entries.
    positions: dict[Path, Position] = field(default_factory=dict)
    # Where each mapping key itself is (used for "unknown key" errors).
    key_positions: dict[Path, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def locate(self, path: Path, *, key: bool = False) -> tuple[Path, Position]:
        """The longest prefix of `path` present in the document, and its position."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if key and end == len(path) and prefix in self.key_positions:
                return prefix, self.key_positions[prefix]
            if prefix in self.positions:
                return prefix, self.positions[prefix]
        return (), Position(1, 1)


def _pos(node: Node) -> Position:
    mark = node.start_mark
    return Position(mark.line + 1, mark.column + 1)


def parse(text: str) -> Document:
    """Compose one YAML document and convert it. Raises YamlSyntaxError for text that is not YAML."""
    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():  # YAML 1.2 allows redefining an anchor; don't print about it
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            root = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark is not None else Position(1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            started = exc.context_mark
            moved = started is not None and mark is not None and started.line != mark.line
            since = f" (started on line {started.line + 1})" if moved else ""
            message = f"{exc.problem}, {exc.context}{since}"
        raise YamlSyntaxError(Problem((), where, f"YAML syntax error: {message}")) from None
    except YAMLError as exc:  # e.g. ReaderError for control characters
        raise YamlSyntaxError(Problem((), Position(1, 1), f"YAML error: {exc}")) from None
    except RecursionError:
        raise YamlSyntaxError(Problem((), Position(1, 1), "YAML nested too deeply")) from None
    doc = Document(data=None)
    if root is None:
        return doc
    doc.positions[()] = Position(1, 1)
    builder = _Builder(doc)
    doc.data = builder.build(root, (), 0)
    return doc


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()  # node ids on the current branch, to catch `&a [*a]`
        self.too_big = False

    def problem(self, path: Path, node: Node, message: str) -> None:
        self.doc.problems.append(Problem(path, _pos(node), message))

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            if not self.too_big:
                self.too_big = True
                self.problem(path, node, f"document too large: aliases expand past {MAX_NODES} nodes")
            return None
        if depth > MAX_DEPTH:
            self.problem(path, node, f"nested deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, ScalarNode):
            return _scalar(node)
        if id(node) in self.active:
            self.problem(path, node, "an alias refers to the node that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path, depth)
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))
        return None

    def _record(self, path: Path, node: Node, key_node: Node | None) -> None:
        where = _pos(node) if isinstance(node, ScalarNode) or key_node is None else _pos(key_node)
        self.doc.positions.setdefault(path, where)
        if key_node is not None:
            self.doc.key_positions.setdefault(path, _pos(key_node))

    def _sequence(self, node: SequenceNode, path: Path, depth: int) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self._record(path + (index,), item, None)
            items.append(self.build(item, path + (index,), depth + 1))
        return items

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(path, key_node, "mapping keys must be plain words, not lists or mappings")
                continue
            key = str(key_node.value)
            if key in first_seen:
                first = _pos(first_seen[key]).line
                self.problem(path + (key,), key_node, f"duplicate key '{key}' (first set on line {first})")
                continue
            first_seen[key] = key_node
            self._record(path + (key,), value_node, key_node)
            out[key] = self.build(value_node, path + (key,), depth + 1)
        # `<<: *anchor` merge keys: explicit keys win, then earlier merged mappings win.
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.problem(path, merge, "'<<' must merge a mapping or a list of mappings")
                    continue
                merged = self.build(source, path, depth)
                if isinstance(merged, dict):
                    for key, value in merged.items():
                        out.setdefault(key, value)
        return out


def _scalar(node: ScalarNode) -> Any:
    text = str(node.value)
    tag = node.tag or ""
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return text.lower() == "true"
    if tag == _TAG + "int":
        return _to_int(text)
    if tag == _TAG + "float":
        return _to_float(text)
    return text  # str, timestamps, binary, custom tags: the source text


def _to_int(text: str) -> int | str:
    clean = text.replace("_", "")
    try:
        if clean.lower().lstrip("+-").startswith(("0x", "0o", "0b")):
            return int(clean, 0)
        return int(clean, 10)
    except ValueError:  # includes Python's 4300-digit limit
        return text


def _to_float(text: str) -> float | str:
    clean = text.replace("_", "").lower()
    if clean.lstrip("+-") in (".inf", "inf"):
        return -math.inf if clean.startswith("-") else math.inf
    if clean == ".nan":
        return math.nan
    try:
        return float(clean)
    except (ValueError, OverflowError):
        return text
