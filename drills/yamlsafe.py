"""YAML from people and CI, loaded within bounds: a runbook cannot exhaust the drill host.

PyYAML's ``SafeLoader`` refuses arbitrary objects but not arbitrary size. A
"billion laughs" file of a few hundred bytes expands, through aliases, to
billions of values (our line index and pydantic walk every one of them);
20,000 nested brackets overflow the composer's recursion; duplicate keys
silently keep the last value; escaped control characters reach SQL, paths and
evidence. This module composes the document once, with a depth bound, then
proves on the node graph (linear time, aliases counted by reference, not
expanded) that it is acyclic and small, its text free of control characters,
its numbers short, before anything constructs Python values from it.

Every refusal is a :class:`YamlProblem` carrying the 1-based line of the
offending node, so the runbook loader reports ``FILE:LINE``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlProblem", "load_bounded"]

#: Largest runbook accepted. Real runbooks are a few KiB; the pure-Python parser reads ~1 MiB in seconds.
MAX_BYTES = 1 << 20
#: Deepest nesting of collections. A runbook is about 5 levels deep.
MAX_DEPTH = 32
#: Most values (scalars, lists, mappings) once every alias is counted where it is used.
MAX_NODES = 100_000
#: Longest integer literal: Python refuses to parse ints over 4,300 digits, and no setting needs 40.
MAX_INT_CHARS = 40

_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ALLOWED_CONTROLS = frozenset("\t\n\r")


class YamlProblem(Exception):
    """The document cannot be loaded: ``line`` (1-based, or None) and what is wrong."""

    def __init__(self, line: int | None, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem
        self.hint = hint


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and duplicate keys while constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):  # an alias is a reference: no recursion happens here
            return super().compose_node(parent, index)
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlProblem(
                    self._event_line(),
                    f"nested more than {MAX_DEPTH} levels deep",
                    hint="a runbook is a few levels of mappings and lists; flatten this value",
                )
            if self._nodes > MAX_NODES:  # stop reading now: the rest of the file is not worth parsing
                raise YamlProblem(
                    self._event_line(),
                    f"the document holds more than {MAX_NODES:,} values",
                    hint="a runbook holds far fewer; is this the right file?",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _event_line(self) -> int:
        return int(self.peek_event().start_mark.line) + 1  # type: ignore[no-untyped-call]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue  # `<<:` merges are overridden on purpose; complex keys fail in the base class
                key = self.construct_object(key_node)
                if not isinstance(key, Hashable):
                    continue  # the base class reports unhashable keys
                if key in seen:
                    raise YamlProblem(
                        _line(key_node),
                        f"the key {_short(key_node.value)} appears twice in this mapping",
                        hint="YAML would silently keep only the last one; remove or rename one of them",
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. 2026-13-45 matched the timestamp regexp
            raise ConstructorError(None, None, f"cannot read this value: {exc}", node.start_mark) from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def _control_char(text: str) -> str | None:
    for ch in text:
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs"):
            return ch
    return None


def _check_scalar(node: ScalarNode) -> None:
    value = str(node.value)
    bad = _control_char(value)
    if bad is not None:
        raise YamlProblem(
            _line(node),
            f"a value contains the control character U+{ord(bad):04X}",
            hint="remove it; only tab and newline are allowed in text",
        )
    if node.tag == _INT_TAG and len(value) > MAX_INT_CHARS:
        raise YamlProblem(_line(node), f"a number of {len(value)} characters", hint="no setting needs such a number")


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_graph(root: Node) -> None:
    """Refuse alias cycles, documents over :data:`MAX_NODES` values or :data:`MAX_DEPTH` levels once
    aliases are followed, in time linear in the file.

    Sizes are memoized per node, so an alias costs one lookup however large
    its target; the first collection whose expanded size passes the bound is
    the one reported (for a billion-laughs file, the first anchor that blows up).
    """
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            children = _children(node)
            height = 1 + max((heights[id(c)] for c in children), default=0)
            if height > MAX_DEPTH:  # aliases can stack what each anchor nests within the bound
                raise YamlProblem(
                    _line(node),
                    f"this value nests more than {MAX_DEPTH} levels deep through aliases (*name)",
                    hint="a runbook is a few levels of mappings and lists; flatten this value",
                )
            heights[key] = height
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                raise YamlProblem(
                    _line(node),
                    f"this value expands to more than {MAX_NODES:,} values through aliases (*name)",
                    hint="a runbook needs far fewer; repeat the value instead of nesting aliases",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlProblem(_line(node), "an alias refers to the value that contains it", hint="remove the cycle")
        if isinstance(node, ScalarNode):
            _check_scalar(node)
            sizes[key] = heights[key] = 1
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> YamlProblem:
    char = exc.character
    what = f"U+{char:04X}" if isinstance(char, int) else repr(char)
    return YamlProblem(
        text.count("\n", 0, max(0, int(exc.position))) + 1,
        f"the character {what} is not allowed in YAML ({exc.reason})",
        hint="remove it; only tab and newline are allowed in text",
    )


def load_bounded(text: str) -> tuple[Node | None, Any]:
    """Compose and construct one YAML document: its node graph (for line numbers) and its data.

    Raises :class:`YamlProblem` for anything the bounds refuse and for every
    YAML error, with the line where it is.
    """
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
    except yaml.reader.ReaderError as exc:
        raise _reader_problem(text, exc) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:
            raise _reader_problem(text, exc) from None
        if node is None:
            return None, None
        _check_graph(node)
        # Construct every value where it stands (the graph is acyclic and shallow), so a value that
        # fails to construct is reported by construct_object with its own line.
        loader.deep_construct = True
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise YamlProblem(
            mark.line + 1 if mark is not None else None, f"not valid YAML: {problem}", hint="fix the YAML syntax"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(None, f"not valid YAML: {' '.join(str(exc).split())}", hint="fix the YAML syntax") from None
    except RecursionError:  # defensive: the depth bound should make this unreachable
        raise YamlProblem(None, "nested too deeply", hint="flatten the document") from None
    finally:
        loader.dispose()
