"""Study files and their grid: datasets x stem variants x seeds (x CV folds) -> cells.

A study file is plain YAML, validated before anything runs::

    name: stem_study
    out_dir: runs/stem_study          # results folder (shared when cells run on several machines)
    seeds: 5                          # or an explicit list [0, 1, 2, 3, 4]; a dataset may set its own
    baseline: deep3                   # the variant every other one is compared with
    equivalence_margin: 2.0           # points; "equivalent" = within it (a dataset may set its own)
    overrides: {train.max_epochs: 40} # recipe overrides for every cell
    datasets:
      - {name: folk, recipe: recipes/folk.yaml, overrides: {data.folds: {cv: 5}}}
      - {name: gm, recipe: recipes/gm_instruments.yaml, stem_args: {tall: {n_freq: 64}}, cluster: label}
    stems:
      - deep3                                       # a preset
      - {name: octave, datasets: [folk]}            # a preset on some datasets only
      - {name: deep3, grid: {width: [8, 16, 64]}}   # -> deep3-width8, deep3-width16, deep3-width64
      - {name: mine, stem: {layers: [...]}}         # an inline spec

A *variant* is one stem entry with one value of each of its ``grid`` axes; a *cell* is one
(dataset, variant, seed[, fold]) and is one ordinary training run in its own folder
``OUT_DIR/runs/<dataset>/<variant>/seed<k>[/fold<f>]``. Relative paths are relative to the
current working directory, like the train command's.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StudyError(ValueError):
    """A study file that is missing, unreadable or invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_', '-'")
    return value


class FoldAxis(_Strict):
    """Run each cross-validation fold as its own cell (``key=value`` override per fold)."""
    key: str
    values: list[Any]


class StemEntry(_Strict):
    """One stem of the study, possibly expanded into several variants by ``grid``.

    ``stem``: preset name or inline spec (default: ``name``); ``args``: stem overrides
    (``model.stem_args.<key>``); ``overrides``: any other recipe overrides for this stem;
    ``grid``: axes, ``{key: [values]}`` where a key without a dot is a stem argument;
    ``datasets``: only these datasets (default all).
    """
    name: str
    stem: Union[str, dict, None] = None
    args: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    datasets: Optional[list[str]] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("grid")
    @classmethod
    def _grid_not_empty(cls, grid: dict) -> dict:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
        return grid


def _check_margin(value: Optional[float]) -> Optional[float]:
    if value is not None and not (0 < value < 100):
        raise ValueError(f"an equivalence margin is in accuracy points, above 0 and below 100; got {value}")
    return value


def _seed_list(seeds: Union[int, list[int]]) -> list[int]:
    seeds = list(range(seeds)) if isinstance(seeds, int) else seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"need at least one seed, all different; got {seeds}")
    return seeds


class Dataset(_Strict):
    """One dataset: a training recipe plus overrides; ``stems`` / ``exclude`` pick stem variants;
    ``stem_args`` adds stem arguments (or dotted recipe keys) for some stem entries on this
    dataset only, e.g. ``{tall: {n_freq: 64}}`` for a 64-bin input; ``seeds`` replaces the
    study's seeds on this dataset (more where its seed noise needs them).

    The statistics (docs/study.md): ``equivalence_margin`` is the accuracy difference, in points,
    within which a stem counts as *equivalent* to the baseline on this dataset (the study's
    default if unset; declare it before the runs); ``cluster`` names the column of the runs'
    ``predictions_test.csv`` whose value is the cluster a test item belongs to (``label`` for its
    class, ``fold``, ``group``: a game, a soundfont, a piece), which then is the unit of analysis
    instead of the item."""
    name: str
    recipe: str
    overrides: dict[str, Any] = {}
    stem_args: dict[str, dict[str, Any]] = {}
    stems: Optional[list[str]] = None
    exclude: list[str] = []
    folds: Optional[FoldAxis] = None
    seeds: Optional[Union[int, list[int]]] = None
    equivalence_margin: Optional[float] = None
    cluster: Optional[str] = None

    @field_validator("equivalence_margin")
    @classmethod
    def _margin(cls, v: Optional[float]) -> Optional[float]:
        return _check_margin(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: Union[int, list[int], None]) -> Optional[list[int]]:
        return None if seeds is None else _seed_list(seeds)


class Study(_Strict):
    """The whole study file (see the module docstring)."""
    name: str
    out_dir: str
    seeds: Union[int, list[int]]
    baseline: str = "deep3"
    datasets: list[Dataset]
    stems: list[StemEntry]
    overrides: dict[str, Any] = {}
    keep_checkpoints: Literal["one_per_variant", "all", "none"] = "one_per_variant"
    train_command: Optional[list[str]] = None
    alpha: float = 0.05
    power: float = 0.8
    bootstrap: int = 10000
    equivalence_margin: Optional[float] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("equivalence_margin")
    @classmethod
    def _margin(cls, v: Optional[float]) -> Optional[float]:
        return _check_margin(v)

    def margin_of(self, dataset: Dataset) -> Optional[float]:
        """The equivalence margin on ``dataset`` as a fraction (its own, else the study's; None: none)."""
        points = dataset.equivalence_margin if dataset.equivalence_margin is not None else self.equivalence_margin
        return None if points is None else points / 100

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: Union[int, list[int]]) -> list[int]:
        return _seed_list(seeds)

    def dataset(self, name: str) -> Dataset:
        return next(d for d in self.datasets if d.name == name)

    def seeds_of(self, dataset: Dataset) -> list[int]:
        """The seeds that run on ``dataset``: its own ``seeds``, else the study's."""
        return dataset.seeds if dataset.seeds is not None else self.seeds

    @field_validator("stems", mode="before")
    @classmethod
    def _entries(cls, stems: Any) -> Any:
        if not isinstance(stems, list) or not stems:
            raise ValueError("a non-empty list of stem names or entries is required")
        return [{"name": s} if isinstance(s, str) else s for s in stems]

    @model_validator(mode="after")
    def _references(self) -> "Study":
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets: names must be unique, got {names}")
        entries = {e.name for e in self.stems}
        for i, e in enumerate(self.stems):
            for d in e.datasets or []:
                if d not in names:
                    raise ValueError(f"stems[{i}].datasets: unknown dataset {d!r}; datasets: {names}")
        known = entries | {v.name for v in variants(self)}
        for i, d in enumerate(self.datasets):
            for s in d.stem_args:
                if s not in entries:
                    raise ValueError(f"datasets[{i}].stem_args: unknown stem entry {s!r}; stems: {sorted(entries)}")
            for key in ("stems", "exclude"):
                for s in getattr(d, key) or []:
                    if s not in known:
                        raise ValueError(f"datasets[{i}].{key}: unknown stem {s!r}; stems: {sorted(known)}")
        all_variants = [v.name for v in variants(self)]
        dup = sorted({n for n in all_variants if all_variants.count(n) > 1})
        if dup:
            raise ValueError(f"stems: variant names {dup} occur twice; give the entries distinct names")
        if self.baseline not in all_variants:
            raise ValueError(f"baseline: {self.baseline!r} is not a stem variant; variants: {all_variants}")
        return self


@dataclass(frozen=True)
class Variant:
    """One stem configuration: its name, the entry it comes from and its recipe overrides."""
    name: str
    entry: str
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    datasets: Optional[tuple] = None     # only these datasets (None: all)


@dataclass(frozen=True)
class Cell:
    """One training run of the study."""
    dataset: str
    variant: str
    seed: int
    fold: Any = None
    recipe: str = ""
    overrides: tuple = ()          # ("key=value", ...) in order, without out_dir
    out_dir: Path = Path()

    @property
    def name(self) -> str:
        """Stable name, also the run folder below ``OUT_DIR/runs``: ``dataset/variant/seedK[/foldF]``."""
        return "/".join([self.dataset, self.variant, f"seed{self.seed}"]
                        + ([] if self.fold is None else [f"fold{_slug(self.fold)}"]))


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ""))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


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
        return value if yaml.safe_load(value) == value and value.strip() == value else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _override(key: str) -> str:
    return key if "." in key else f"model.stem_args.{key}"


def variants(study: Study) -> list[Variant]:
    """Every stem variant of the study, in file order (grid axes expanded, last axis fastest)."""
    out = []
    for e in study.stems:
        base = {"model.stem": e.stem if e.stem is not None else e.name,
                **{_override(k): v for k, v in e.args.items()}, **e.overrides}
        keys = list(e.grid)
        for values in itertools.product(*(e.grid[k] for k in keys)):
            suffix = "".join(f"-{k.split('.')[-1]}{_slug(v)}" for k, v in zip(keys, values))
            extra = {_override(k): v for k, v in zip(keys, values)}
            out.append(Variant(e.name + suffix, e.name, {**base, **extra},
                               None if e.datasets is None else tuple(e.datasets)))
    return out


def dataset_variants(study: Study, dataset: Dataset) -> list[Variant]:
    """The variants that run on one dataset (entry ``datasets`` and dataset ``stems``/``exclude``)."""
    def picked(names: list[str], v: Variant) -> bool:
        return v.name in names or v.entry in names
    return [v for v in variants(study)
            if (v.datasets is None or dataset.name in v.datasets)
            and (dataset.stems is None or picked(dataset.stems, v))
            and not picked(dataset.exclude, v)]


def expand(study: Study) -> list[Cell]:
    """All cells, dataset by dataset, variant by variant, seed by seed (then fold)."""
    root = Path(study.out_dir) / "runs"
    cells = []
    for d in study.datasets:
        for v in dataset_variants(study, d):
            for seed in study.seeds_of(d):
                for fold in (d.folds.values if d.folds else [None]):
                    extra = {_override(k): x for k, x in d.stem_args.get(v.entry, {}).items()}
                    ov = {**study.overrides, **d.overrides, **v.overrides, **extra, "seed": seed}
                    if d.folds:
                        ov[d.folds.key] = fold
                    cell = Cell(d.name, v.name, seed, fold, d.recipe,
                                tuple(f"{k}={format_value(x)}" for k, x in ov.items()))
                    cells.append(dataclasses.replace(cell, out_dir=root / cell.name))
    return cells


def load_study(path: Union[str, Path]) -> Study:
    """Read and validate a study file; raises :class:`StudyError` naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StudyError(f"{path}: cannot read the study file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study file is a mapping (name, out_dir, seeds, datasets, stems)")
    try:
        return Study.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]
                          if isinstance(p, int) or p.split("[")[0] not in _TYPE_TAGS).lstrip(".")
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field"
            lines.append(f"{path}: {loc + ': ' if loc else ''}{msg}")
        raise StudyError("\n".join(dict.fromkeys(lines))) from None
