"""Dotted recipe keys set on plain data: ``key=value`` text from a command line, or values.

``["train.max_epochs=5", "data.folds=[1, 2]"]`` (values read as YAML, so ``[1, 2]`` is a list and
``{cv: 5}`` a mapping) and ``{"train.max_epochs": 5, "data.folds": [1, 2]}`` set the same keys;
the second form is for programs (the study runner) whose values are values already.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Mapping, Optional

import yaml

from .yamlio import load_yaml, yaml_error


class OverrideError(ValueError):
    """An override that is not ``dotted.key=value`` or that cannot be set; names the override."""


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[(["a", "b"], 1), (["c"], [1, 2])]`` (values as YAML)."""
    out = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key.strip()):
            raise OverrideError(f"override {text!r}: expected dotted.key=value, e.g. train.max_epochs=5")
        try:
            parsed = load_yaml(value, f"override {key}") if value.strip() else None
        except yaml.YAMLError as e:
            raise OverrideError(f"override {text!r}: the value is not valid YAML ({yaml_error(e)})") from None
        out.append((key.strip().split("."), parsed))
    return out


def set_values(data: dict, pairs: Iterable[tuple[list[str], Any]]) -> dict:
    """Set each ``(keys, value)`` in a copy of ``data``, creating mappings on the way."""
    data = copy.deepcopy(data)
    for keys, value in pairs:
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise OverrideError(f"override {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is "
                                    f"{child!r}, not a mapping")
            node = child
        node[keys[-1]] = copy.deepcopy(value)
    return data


def apply_overrides(data: dict, overrides: list[str], values: Optional[Mapping[str, Any]] = None) -> dict:
    """A copy of ``data`` with ``values`` (``{dotted.key: value}``) set, then each ``dotted.key=value``
    of ``overrides``."""
    pairs = [(key.split("."), value) for key, value in (values or {}).items()]
    return set_values(data, [*pairs, *parse_overrides(overrides)])
