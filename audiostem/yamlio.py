"""Reading YAML that a user wrote (recipes, study files, ``key=value`` overrides) at bounded cost.

Recipes and study files are data, never code: they are read with PyYAML's safe loader (no
object tags), and without the features that let a few hundred bytes expand into gigabytes.
An alias (``*name``) re-uses a node, so nine levels of nine aliases are 9**9 nodes for
whatever walks the result (validation, printing, an error message); aliases and merge keys
(``<<: *base``) are refused, with the line, before anything else reads the document. The text
is also capped in size (:data:`MAX_BYTES`) and nesting depth (:data:`MAX_DEPTH`, which also keeps
PyYAML's recursive composer far from Python's recursion limit), so the cost of reading one is
proportional to its length. Anchors alone (``&name``) are harmless and allowed. A key written twice
in one mapping is refused with its line (PyYAML would keep the last one silently).
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20          # a recipe is a few KB; a study file with many variants tens of KB
MAX_DEPTH = 64


class YamlLimitError(yaml.YAMLError):
    """YAML that uses aliases, nests too deeply or is too large for a recipe or study file."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and deep nesting while composing nodes."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlLimitError(f"line {event.start_mark.line + 1}: the alias *{event.anchor} is not "
                                 "allowed (recipes and study files are plain data: write the value out)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise YamlLimitError(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of two equal keys without a word: a recipe with `lr` written twice
        # would train with whichever came last
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise YamlLimitError(f"line {key_node.start_mark.line + 1}: the key {key!r} occurs twice "
                                         "in one mapping (write it once)")
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, what: str = "YAML") -> Any:
    """Parse ``text`` as plain YAML data at bounded cost (see the module docstring).

    Args:
        text: the document.
        what: what it is, for messages (a file name, ``override x=...``).

    Raises ``yaml.YAMLError`` (:class:`YamlLimitError` for aliases, depth and size; PyYAML's
    own errors for syntax and unknown tags), whose message starts with ``what`` when the
    limits are the cause."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YamlLimitError(f"{size} bytes, more than the {MAX_BYTES} a recipe or study file may have")
    try:
        return yaml.load(text, Loader=_BoundedLoader)   # noqa: S506 - a SafeLoader subclass
    except ValueError as e:          # e.g. an integer of more digits than Python converts
        raise YamlLimitError(" ".join(str(e).split())) from None
    except RecursionError:
        raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep") from None


def yaml_error(error: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line L: what is wrong`` (PyYAML's own text spans several lines,
    with a copy of the offending line and a caret)."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if not problem:
        return " ".join(str(error).split())
    return (f"line {mark.line + 1}: " if mark is not None else "") + " ".join(str(problem).split())
