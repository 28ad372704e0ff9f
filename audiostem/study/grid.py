"""A study's grid: dataset groups x stem variants x seeds (x CV folds) -> cells.

The study file (:mod:`.schema`) says what varies; this module makes the cells: each one training
run, its recipe values (``Cell.values``, values as values: the runner hands them to the train
command as they are) and its run folder. ``Cell.overrides`` spells the values as the train
command's ``key=value`` text (:func:`format_value`), for a command a user can copy and for a
study's own ``train_command``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..yamlio import load_yaml
from .schema import (Body, Dataset, FoldAxis, StemEntry, Study, StudyError, Tune, TuningPending, Variant, _override,
                     _slug, dataset_variants, load_study, tuning_source, variants)

__all__ = ["Body", "Cell", "Dataset", "FoldAxis", "StemEntry", "Study", "StudyError", "Tune", "TuningPending",
           "Variant", "dataset_variants", "expand", "format_value", "load_study", "make_cell", "tuning_source",
           "variants"]


@dataclass(frozen=True)
class Cell:
    """One training run of the study (``point``: the tuning grid point of a tuning cell)."""
    dataset: str
    variant: str
    seed: int
    fold: Any = None
    recipe: str = ""
    values: dict = field(default_factory=dict, hash=False)   # {dotted.key: value} in order, without out_dir
    out_dir: Path = Path()
    point: Optional[str] = None

    @property
    def overrides(self) -> tuple[str, ...]:
        """``values`` as the train command's ``key=value`` arguments (:func:`format_value`)."""
        return tuple(f"{k}={format_value(x)}" for k, x in self.values.items())

    @property
    def name(self) -> str:
        """Stable name, also the run folder below ``OUT_DIR/runs``: ``dataset/variant/seedK[/foldF]``,
        for a tuning cell ``_tune/dataset/variant/POINT/seedK[/foldF]``."""
        return "/".join(([] if self.point is None else ["_tune"]) + [self.dataset, self.variant]
                        + ([] if self.point is None else [self.point]) + [f"seed{self.seed}"]
                        + ([] if self.fold is None else [f"fold{_slug(self.fold)}"]))


def format_value(value: Any) -> str:
    """A recipe value as the train CLI's ``key=value`` text (YAML scalars; JSON for containers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):     # spelled so that YAML 1.1 reads a float back (1.0e-05, .inf)
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[repr(value)]
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, str):
        try:
            plain = load_yaml(value) == value and value.strip() == value
        except yaml.YAMLError:          # e.g. "*a", which would read as an alias
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def make_cell(study: Study, d: Dataset, v: Variant, seed: int, fold: Any = None,
              chosen: Optional[dict] = None, point: Optional[str] = None) -> Cell:
    """One cell: the study's, dataset's, variant's and dataset-stem overrides, then ``chosen``
    (tuned values, or a tuning point's), then seed and fold."""
    extra = {_override(k): x for k, x in d.stem_args.get(v.entry, {}).items()}
    ov = {**study.overrides, **d.overrides, **v.overrides, **extra,
          **{_override(k): x for k, x in (chosen or {}).items()}, "seed": seed}
    if d.folds:
        ov[d.folds.key] = fold
    cell = Cell(d.name, v.name, seed, fold, d.recipe, ov, point=point)
    return dataclasses.replace(cell, out_dir=Path(study.out_dir) / "runs" / cell.name)


def expand(study: Study, choices: Optional[dict] = None) -> list[Cell]:
    """All cells, dataset group by group, variant by variant, seed by seed (then fold).

    With ``tune``, each cell carries the values chosen for its group and variant: ``choices``
    (``{group: {variant: {key: value}}}``, required; :func:`tuning.study_cells` reads them from
    the study's tuning choices file). A group without choices has no cells yet."""
    if study.tune is not None and choices is None:
        raise TypeError(f"study {study.name} tunes its cells: pass the choices "
                        "(tuning.chosen_overrides), or call tuning.study_cells")
    cells = []
    for d in study.datasets:
        if study.tune is not None and d.name not in choices:
            continue
        for v in dataset_variants(study, d):
            chosen = None if study.tune is None else choices[d.name][v.name]
            for seed in study.seeds_of(d):
                for fold in (d.folds.values if d.folds else [None]):
                    cells.append(make_cell(study, d, v, seed, fold, chosen))
    return cells


