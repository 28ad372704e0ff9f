"""A source's options and feature config as a build receives them: the source's defaults (what
its command line gives when nothing is said), overridden by the user's. Used by
:func:`data_prep.prepare.prepare`, the command line, recipes (``data.prepare``) and the rebuild
command that a damaged cache's message names (:func:`data_prep.cache_files.rebuild_command`).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Union

from .config import MIDI_KINDS, FeatureConfig, feature_config
from .sources import Source


def source_arguments(source: Source, **options: Any) -> argparse.Namespace:
    """The namespace a source's ``items`` receives: its option defaults overridden by
    ``options`` (keyword names as the option's ``dest``: ``group_by``, ``valid_fraction``...)."""
    parser = argparse.ArgumentParser(prog=f"data_prep {source.name}", add_help=False)
    source.add_arguments(parser)
    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"source {source.name!r} has no option {unknown[0]!r}; "
                        f"its options: {sorted(vars(args)) or 'none'}")
    actions = {a.dest: a for a in parser._actions}
    for key, value in options.items():
        setattr(args, key, _option_value(actions[key], source.name, value))
    return args


def _option_value(action: argparse.Action, source: str, value: Any) -> Any:
    """``value`` for a source option given from Python or a recipe, checked as the command line
    would check it: ``true``/``false`` for a switch, a (finite) number of the option's type, one
    of its choices. ``ValueError`` names the option otherwise."""
    name = f"{source} option {action.dest!r} ({action.option_strings[0]})"
    if value is None:
        return value
    if action.nargs == 0:                                   # store_true / --x/--no-x switches
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if action.type in (int, float):
        integer = action.type is int
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                or (not integer and not math.isfinite(value)):
            raise ValueError(f"{name}: expected {'an integer' if integer else 'a finite number'}, "
                             f"got {value!r}")
        value = action.type(value)
    elif action.type is not None and isinstance(value, str):
        value = action.type(value)
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{name}: expected one of {list(action.choices)}, got {value!r}")
    return value


def resolve_features(source: Source, features: Union[dict, FeatureConfig, None] = None) -> FeatureConfig:
    """The feature config for ``source``: its ``default_features``, overridden by ``features``.

    When ``features`` names a kind of the other family (``pianoroll`` for an audio default or
    the reverse), the source's defaults are not used. A config object is returned as it is (it
    is resolved already). Raises ``ValueError`` naming a bad field.
    """
    if features is not None and not isinstance(features, dict):
        return features
    given = dict(features or {})
    defaults = dict(source.default_features)
    family = lambda kind: "midi" if kind in MIDI_KINDS else "audio"   # noqa: E731
    if "kind" in given and family(given["kind"]) != family(defaults.get("kind", "logmel")):
        defaults = {}
    return feature_config({**defaults, **given})
