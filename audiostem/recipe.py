"""Training recipes: a typed schema, YAML loading, dotted ``key=value`` overrides.

A recipe is plain data (a YAML file) that names a feature cache, a model and a schedule::

    seed: 0
    out_dir: runs/folk
    data:
      cache: ${AUDIOSTEM_CACHE:-~/.cache/audiostem/caches}/folk_roll
      prepare: {source: folk, root: ~/.cache/audiostem-data/folk_midi}
      crop_frames: 128
    model: {stem: deep3, body: narrow}
    train: {max_epochs: 20, lr: 0.003}

:func:`load_recipe` reads it as plain data at bounded cost (:mod:`audiostem.yamlio`: no object
tags, no aliases, capped size and depth), applies overrides such
as ``model.stem=resnet7 train.max_epochs=5`` (values parsed as YAML, so ``[1, 2]`` is a list
and ``{cv: 5}`` a mapping; :mod:`audiostem.overrides`) and validates the result once against the
schema (:mod:`audiostem.recipe_schema`). Every error names the field path and what would be
right. Paths take ``~``, ``$VAR`` and ``${VAR:-default}``. A validated recipe builds its model with
``recipe.model.build(num_classes, in_channels)``.

The full key reference is in ``docs/training.md`` (generated: :mod:`audiostem.recipe_doc`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError

from data_prep.discover import shown

from .overrides import OverrideError, apply_overrides, parse_overrides
from .recipe_doc import key_table
from .recipe_schema import (MANAGED_TRAINER_KEYS, METRICS, SEED_MAX, TRAINER_KEYS, Augment, CrossValidation, Data,
                            ModelConfig, Prepare, Recipe, Train, expand_path)
from .yamlio import load_yaml, yaml_error

if TYPE_CHECKING:
    from data_prep.cache import FeatureCache

__all__ = ["MANAGED_TRAINER_KEYS", "METRICS", "RECIPES_DIR", "SEED_MAX", "TRAINER_KEYS", "Augment", "CrossValidation",
           "Data", "ModelConfig", "Prepare", "Recipe", "RecipeError", "Train", "apply_overrides",
           "dump_recipe", "expand_path", "find_recipe", "key_table", "load_recipe", "open_data", "parse_overrides",
           "stored_recipe", "validate_recipe"]

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"   # package data; the repository's recipes/ links here


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the field and the fix."""


# --- loading ----------------------------------------------------------------------------------
def _format_errors(error: ValidationError, data: dict) -> list[str]:
    lines = []
    for e in error.errors():
        loc = [str(p) for p in e["loc"]]
        # Union members add their type name to the location ("str", "list[int]", ...): drop it.
        loc = [p for p in loc if not re.fullmatch(r"(str|int|float|bool|dict\[.*\]|list\[.*\]|[A-Z]\w*)", p)
               or p.isdigit()]
        path = ".".join(loc)
        if e["type"] == "extra_forbidden":
            parent = _schema_at(loc[:-1])
            valid = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
            lines.append(f"{path}: unknown key{valid}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "value_error" and re.match(rf"{re.escape(path)}[.:]", msg):
                lines.append(msg)            # the validator named a deeper field itself
            elif path.endswith(".features") and msg.startswith("features."):
                lines.append(f"{path.removesuffix('features')}{msg}")
            else:
                got = "" if e["type"] == "value_error" else f", got {e.get('input')!r}"
                lines.append(f"{path}: {msg}{got}")
    return list(dict.fromkeys(lines))


def _schema_at(path: list[str]) -> Optional[type[BaseModel]]:
    """The pydantic model class at a dotted path of :class:`Recipe`, if there is one."""
    cls: Any = Recipe
    for key in path:
        field = cls.model_fields.get(key) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = getattr(ann, "__args__", (ann,))
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if cls is None:
            return None
    return cls


def validate_recipe(data: Any, source: str = "recipe", out_name: str = "recipe") -> Recipe:
    """Validate plain data against the schema, once: every field, including the model's stem,
    stem arguments, body and head (checked from the registries, no model is built), and that a
    ``model.pretrained`` body's weights are on disk. Raises :class:`RecipeError` listing every
    problem as ``source: field.path: message``."""
    recipe = _parse(data, source)
    if recipe.out_dir is None:
        recipe.out_dir = os.path.join("runs", out_name)
    if recipe.model.pretrained:
        from .bodies import pretrained_file
        try:
            pretrained_file(recipe.model.body)   # weights on disk, or an error naming where it looked
        except FileNotFoundError as e:
            raise RecipeError(f"{shown(source)}: {e}") from None
    return recipe


def stored_recipe(data: Any, source: str) -> Recipe:
    """A recipe stored by a run (a checkpoint's, a run folder's ``recipe.yaml``) read back: parsed
    against the schema, without the checks of the machine it ran on (pretrained weight files).
    Raises :class:`RecipeError` naming ``source`` when it no longer fits the schema."""
    return _parse(data, source)


def _parse(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{shown(source)}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError("\n".join(f"{shown(source)}: {line}" for line in _format_errors(e, data))) from None


def find_recipe(path: Union[str, Path]) -> Path:
    """A recipe file: the path itself, or the shipped ``audiostem/recipes/NAME.yaml`` for a bare name."""
    p = Path(path)
    if p.exists():
        return p
    shipped = RECIPES_DIR / f"{p.name}.yaml" if not p.suffix else None
    if shipped is not None and shipped.exists():
        return shipped
    names = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.exists() else []
    hint = f"; shipped recipes: {', '.join(names)}" if names else ""
    raise RecipeError(f"{shown(path)}: no such recipe file{hint}")


def load_recipe(path: Union[str, Path], overrides: Optional[list[str]] = None,
                values: Optional[Mapping[str, Any]] = None) -> Recipe:
    """Load a YAML recipe (plain data at bounded cost: :func:`audiostem.yamlio.load_yaml`, which
    refuses aliases, deep nesting and huge files), set ``values`` and ``dotted.key=value``
    overrides, and validate.

    Args:
        path: a recipe file, or the name of a shipped recipe (``folk`` -> ``recipes/folk.yaml``).
        overrides: e.g. ``["model.stem=resnet7", "train.max_epochs=5", "data.folds=[1]"]``.
        values: dotted keys and their values as values, set before ``overrides``, e.g.
            ``{"model.stem_args.width": 8}`` (what a program such as the study runner has).

    Raises:
        RecipeError: naming the file, the field path and the valid choices.
    """
    path = find_recipe(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise RecipeError(f"{shown(path)}: not valid YAML: {yaml_error(e)}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{shown(path)}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                          f"save the recipe as UTF-8") from None
    except OSError as e:
        raise RecipeError(f"{shown(path)}: cannot read the recipe ({e.strerror})") from None
    if data is not None and not isinstance(data, dict):     # before overrides, which set keys in it
        raise RecipeError(f"{shown(path)}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        data = apply_overrides(data or {}, list(overrides or []), values)
    except OverrideError as e:
        raise RecipeError(str(e)) from None
    return validate_recipe(data, str(path), path.stem)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None)


def open_data(recipe: Recipe) -> Optional[FeatureCache]:
    """Open the recipe's cache, checked against the recipe; ``None`` when the cache is missing
    and ``data.prepare`` says how to build it.

    Raises :class:`RecipeError` when the cache is missing and no ``data.prepare`` section
    exists (saying which command builds it), or when ``data.features`` differs from the
    feature config the cache was built with (naming the differing fields);
    :class:`data_prep.CacheError` when the cache is damaged (naming the file and the command
    that rebuilds it).
    """
    from data_prep.cache import cache_exists, open_cache, partial_path
    cache = Path(recipe.data.cache)
    if not cache_exists(cache):
        if recipe.data.prepare is not None:
            return None
        partial = partial_path(cache)
        what = "an interrupted build is at " + shown(partial) if partial.exists() else "it does not exist"
        raise RecipeError(
            f"data.cache: no feature cache at {shown(cache)} ({what}). Build it with\n"
            f"  python -m data_prep SOURCE --root DATASET_FOLDER --out {shown(cache)}\n"
            "(`python -m data_prep --help` lists the sources), or add a data.prepare section "
            "(source, root, options) so that training builds it.")
    opened = open_cache(cache)           # CacheError naming a damaged file and the rebuild command
    problem = opened.mismatch(recipe.data.features, "recipe") if recipe.data.features is not None else None
    if problem:
        raise RecipeError(f"data.features: {problem}. Rebuild the cache with these features "
                          "(python -m data_prep ... --force, or another data.cache), or remove data.features.")
    return opened
