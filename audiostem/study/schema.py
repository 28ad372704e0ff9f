"""Study files: their schema, validation and stem variants (the cells are in :mod:`.grid`).

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
    bodies: [narrow, {name: resnet18, stems: [deep3, resnet7]}]   # optional: a body axis
    tune: {grid: {train.lr: [0.003, 0.001, 0.01]}, seeds: [100]}  # optional: tuned on validation

A *variant* is one stem entry with one value of each of its ``grid`` axes; a *cell* is one
(dataset, variant, seed[, fold]) and is one ordinary training run in its own folder
``OUT_DIR/runs/<dataset>/<variant>/seed<k>[/fold<f>]``. Relative paths are relative to the
current working directory, like the train command's.

``bodies`` turns each dataset entry into one *group* per body: the first body's group keeps the
dataset's name, the others are ``DATASET@BODY`` (the body's name with characters other than
letters, digits, ``.``, ``_``, ``-`` as ``_``: ``folk@timm_resnet18``), each with
``model.body=BODY`` in its overrides. After validation ``Study.datasets`` holds the groups, so
each group has its own baseline runs and the report its own section. ``tune`` is run first by
the runner (see :mod:`audiostem.study.tuning`); the main cells then carry the chosen values.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

from data_prep.discover import shown

from ..yamlio import load_yaml, yaml_error

_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StudyError(ValueError):
    """A study file that is missing, unreadable or invalid; the message names the field."""


class TuningPending(StudyError):
    """The study has a ``tune`` section whose choices are not made yet: run its tuning cells first."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_', '-'")
    return value


def _check_margin(value: Optional[float]) -> Optional[float]:
    if value is not None and not (0 < value < 100):
        raise ValueError(f"an equivalence margin is in accuracy points, above 0 and below 100; got {value}")
    return value


def _seed_list(seeds: Union[int, list[int]]) -> list[int]:
    seeds = list(range(seeds)) if isinstance(seeds, int) else seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"need at least one seed, all different; got {seeds}")
    return seeds


def _some(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("an empty list picks nothing: list at least one, or leave the field out for all")
    return names


def _values(values: list[Any]) -> list[Any]:
    if not values:
        raise ValueError("give at least one value (one cell each)")
    return values


def _command(argv: Optional[list[str]]) -> Optional[list[str]]:
    if argv is not None and not argv:
        raise ValueError("give the command and its arguments, e.g. [python, -m, audiostem.train], "
                         "or leave the field out for that one")
    return argv


# Field types that check themselves (pydantic AfterValidator): a study, dataset or stem name; an
# equivalence margin in points; seeds as a count or a list (always a list after validation); a
# list of names that picks some entries (None, the field left out, picks all; [] is refused,
# since it would run nothing of its part).
Name = Annotated[str, AfterValidator(_check_name)]
Margin = Annotated[Optional[float], AfterValidator(_check_margin)]
Seeds = Annotated[Union[int, list[int]], AfterValidator(_seed_list)]
Some = Annotated[list[str], AfterValidator(_some)]


class Body(_Strict):
    """One body of the study's ``bodies`` axis. ``name``: any ``model.body`` value (``narrow``,
    ``resnet18``, ``timm:resnet18``); ``datasets``: only these dataset entries (default all);
    ``stems``: only these stem entries or variants (default all that run on the dataset);
    ``overrides``: recipe overrides for this body's cells (a batch size, say)."""
    name: str
    datasets: Optional[Some] = None
    stems: Optional[Some] = None
    overrides: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or v != v.strip():
            raise ValueError(f"{v!r} is not a body name: a model.body value such as narrow, resnet18, timm:resnet18")
        return v


class Tune(_Strict):
    """The tuning phase: every (dataset group, variant) of the tuned datasets runs each point of
    ``grid`` (``{key: [values]}``, a key without a dot is a stem argument; axes crossed) with each
    of ``seeds``; the point with the best validation ``metric`` (``metrics.json``'s ``val``
    section; mean over the seeds; ``loss`` is minimised, the others maximised) is chosen for that
    group and variant, ties going to the point listed first. ``datasets``: the dataset entries
    tuned (default all); ``apply``: ``{untuned entry: tuned entry}``, whose choices (same body,
    same variant) the untuned one takes."""
    grid: dict[str, list[Any]]
    seeds: Seeds = [100]
    datasets: Optional[Some] = None
    apply: dict[str, str] = {}
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "loss"] = "accuracy"

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict) -> dict:
        if not grid:
            raise ValueError("give at least one axis, e.g. {train.lr: [0.003, 0.001, 0.01]}")
        for key, values in grid.items():
            if not values or len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"axis {key!r} needs one or more different values, got {values}")
        labels = [k.split(".")[-1] for k in grid]
        if len(set(labels)) != len(labels):
            raise ValueError(f"axes {list(grid)} end in the same name; their points would share folder names")
        return grid


class FoldAxis(_Strict):
    """Run each cross-validation fold as its own cell (``key=value`` override per fold)."""
    key: str
    values: Annotated[list[Any], AfterValidator(_values)]


class StemEntry(_Strict):
    """One stem of the study, possibly expanded into several variants by ``grid``.

    ``stem``: preset name or inline spec (default: ``name``); ``args``: stem overrides
    (``model.stem_args.<key>``); ``overrides``: any other recipe overrides for this stem;
    ``grid``: axes, ``{key: [values]}`` where a key without a dot is a stem argument;
    ``datasets``: only these datasets (default all).
    """
    name: Name
    stem: Union[str, dict, None] = None
    args: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    datasets: Optional[Some] = None

    @field_validator("grid")
    @classmethod
    def _grid_not_empty(cls, grid: dict) -> dict:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
        return grid


class Dataset(_Strict):
    """One dataset: a training recipe plus overrides; ``stems`` / ``exclude`` pick stem variants;
    ``stem_args`` adds stem arguments (or dotted recipe keys) for some stem entries on this
    dataset only, e.g. ``{tall: {n_freq: 64}}`` for a 64-bin input; ``seeds`` replaces the
    study's seeds on this dataset (more where its seed noise needs them); ``bodies``: only these
    of the study's ``bodies``. After validation each entry is one group per body: ``entry`` is
    the dataset entry's name, ``body`` the body (None without a ``bodies`` axis).

    The statistics (docs/study.md): ``equivalence_margin`` is the accuracy difference, in points,
    within which a stem counts as *equivalent* to the baseline on this dataset (the study's
    default if unset; declare it before the runs); ``cluster`` names the column of the runs'
    ``predictions_test.csv`` whose value is the cluster a test item belongs to (``label`` for its
    class, ``fold``, ``group``: a game, a soundfont, a piece), which then is the unit of analysis
    instead of the item."""
    name: Name
    recipe: str
    overrides: dict[str, Any] = {}
    stem_args: dict[str, dict[str, Any]] = {}
    stems: Optional[Some] = None
    exclude: list[str] = []
    folds: Optional[FoldAxis] = None
    seeds: Optional[Seeds] = None
    equivalence_margin: Margin = None
    cluster: Optional[str] = None
    bodies: Optional[Some] = None
    _entry: Optional[str] = PrivateAttr(None)
    _body: Optional[str] = PrivateAttr(None)
    _body_index: int = PrivateAttr(0)

    @property
    def entry(self) -> str:
        """The study file's dataset entry this group comes from (its own name without bodies)."""
        return self._entry or self.name

    @property
    def body(self) -> Optional[str]:
        return self._body


class Study(_Strict):
    """The whole study file (see the module docstring)."""
    name: Name
    out_dir: str
    seeds: Seeds
    baseline: str = "deep3"
    datasets: list[Dataset]
    stems: list[StemEntry]
    bodies: Optional[list[Body]] = None
    tune: Optional[Tune] = None
    overrides: dict[str, Any] = {}
    keep_checkpoints: Literal["one_per_variant", "all", "none"] = "one_per_variant"
    train_command: Annotated[Optional[list[str]], AfterValidator(_command)] = None
    alpha: float = 0.05
    power: float = 0.8
    bootstrap: int = 10000
    equivalence_margin: Margin = None

    def margin_of(self, dataset: Dataset) -> Optional[float]:
        """The equivalence margin on ``dataset`` as a fraction (its own, else the study's; None: none)."""
        points = dataset.equivalence_margin if dataset.equivalence_margin is not None else self.equivalence_margin
        return None if points is None else points / 100

    def dataset(self, name: str) -> Dataset:
        return next(d for d in self.datasets if d.name == name)

    def seeds_of(self, dataset: Dataset) -> list[int]:
        """The seeds that run on ``dataset``: its own ``seeds``, else the study's."""
        return dataset.seeds if dataset.seeds is not None else self.seeds

    @field_validator("datasets", mode="before")
    @classmethod
    def _dataset_entries(cls, datasets: Any) -> Any:
        if not isinstance(datasets, list) or not datasets:
            raise ValueError("a non-empty list of dataset entries ({name, recipe}) is required")
        return datasets

    @field_validator("stems", mode="before")
    @classmethod
    def _entries(cls, stems: Any) -> Any:
        if not isinstance(stems, list) or not stems:
            raise ValueError("a non-empty list of stem names or entries is required")
        return [{"name": s} if isinstance(s, str) else s for s in stems]

    @field_validator("bodies", mode="before")
    @classmethod
    def _body_entries(cls, bodies: Any) -> Any:
        if bodies is None:
            return None
        if not isinstance(bodies, list) or not bodies:
            raise ValueError("a non-empty list of body names or entries, e.g. [narrow, resnet18]")
        return [{"name": b} if isinstance(b, str) else b for b in bodies]

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

    @model_validator(mode="after")
    def _body_groups(self) -> "Study":
        """Replace each dataset entry by one group per body (see the module docstring)."""
        if self.bodies is None:
            for i, d in enumerate(self.datasets):
                if d.bodies is not None:
                    raise ValueError(f"datasets[{i}].bodies: the study lists no bodies (add `bodies: [...]` at the top)")
            return self
        names, entries = [b.name for b in self.bodies], [d.name for d in self.datasets]
        slugs = [_slug(n) for n in names]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"bodies: names {names} must differ (also in folder names: {slugs})")
        known = {e.name for e in self.stems} | {v.name for v in variants(self)}
        for i, b in enumerate(self.bodies):
            for d in b.datasets or []:
                if d not in entries:
                    raise ValueError(f"bodies[{i}].datasets: unknown dataset {d!r}; datasets: {entries}")
            for s in b.stems or []:
                if s not in known:
                    raise ValueError(f"bodies[{i}].stems: unknown stem {s!r}; stems: {sorted(known)}")
            if b.stems is not None and self.baseline not in b.stems:
                raise ValueError(f"bodies[{i}].stems: add the baseline {self.baseline!r}: "
                                 f"without it no stem on {b.name} can be compared")
        groups = []
        for i, d in enumerate(self.datasets):
            for s in d.bodies or []:
                if s not in names:
                    raise ValueError(f"datasets[{i}].bodies: unknown body {s!r}; bodies: {names}")
            if "model.body" in d.overrides:
                raise ValueError(f"datasets[{i}].overrides: model.body is set by the study's bodies; "
                                 f"use datasets[{i}].bodies to choose among them")
            for k, b in enumerate(self.bodies):
                if (d.bodies is not None and b.name not in d.bodies) or (b.datasets is not None and d.name not in b.datasets):
                    continue
                update: dict[str, Any] = {"name": d.name if k == 0 else f"{d.name}@{slugs[k]}",
                                          "overrides": {**d.overrides, **b.overrides, "model.body": b.name}}
                if b.stems is not None:
                    update.update(stems=[v.name for v in dataset_variants(self, d)
                                         if v.name in b.stems or v.entry in b.stems], exclude=[])
                    if not update["stems"]:
                        raise ValueError(f"bodies[{k}].stems: none of {b.stems} runs on dataset {d.name!r}")
                group = d.model_copy(update=update, deep=True)
                group._entry, group._body, group._body_index = d.name, b.name, k
                groups.append(group)
        self.datasets = groups
        return self

    @model_validator(mode="after")
    def _tune_references(self) -> "Study":
        if self.tune is None:
            return self
        entries = list(dict.fromkeys(d.entry for d in self.datasets))
        tuned = self.tune.datasets if self.tune.datasets is not None else entries
        for d in [*tuned, *self.tune.apply, *self.tune.apply.values()]:
            if d not in entries:
                raise ValueError(f"tune: unknown dataset {d!r}; datasets: {entries}")
        for target, source in self.tune.apply.items():
            if target in tuned or source not in tuned:
                raise ValueError(f"tune.apply: {target}: {source} must map an untuned dataset to a tuned one "
                                 f"(tuned: {tuned})")
        for e in entries:
            if e not in tuned and e not in self.tune.apply:
                raise ValueError(f"tune: dataset {e!r} is neither tuned (tune.datasets) nor given a tuned "
                                 f"dataset whose choices it takes (tune.apply: {{{e}: ...}})")
        for g in self.datasets:
            source = tuning_source(self, g)
            missing = sorted({v.name for v in dataset_variants(self, g)} - {v.name for v in dataset_variants(self, source)})
            if missing:
                raise ValueError(f"tune.apply: {g.name} takes its choices from {source.name}, which does not "
                                 f"run {missing}")
        return self


@dataclass(frozen=True)
class Variant:
    """One stem configuration: its name, the entry it comes from and its recipe overrides."""
    name: str
    entry: str
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    datasets: Optional[tuple] = None     # only these datasets (None: all)


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ""))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


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
            if (v.datasets is None or dataset.entry in v.datasets)
            and (dataset.stems is None or picked(dataset.stems, v))
            and not picked(dataset.exclude, v)]


def tuning_source(study: Study, group: Dataset) -> Dataset:
    """The group whose tuning choices ``group`` takes: itself when its dataset is tuned, else the
    group of ``tune.apply[its dataset]`` with the same body."""
    if study.tune is None or group.entry not in study.tune.apply:
        return group
    source = study.tune.apply[group.entry]
    found = [d for d in study.datasets if d.entry == source and d.body == group.body]
    if not found:
        raise ValueError(f"tune.apply: {group.name} takes its choices from {source}, "
                         f"which does not run the body {group.body!r}")
    return found[0]


def load_study(path: Union[str, Path]) -> Study:
    """Read and validate a study file; raises :class:`StudyError` naming the file and field."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise StudyError(f"{shown(path)}: cannot read the study file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"{shown(path)}: not valid YAML: {yaml_error(err)}") from None
    except UnicodeDecodeError as err:
        raise StudyError(f"{shown(path)}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                         f"save the study file as UTF-8") from None
    if not isinstance(data, dict):
        raise StudyError(f"{shown(path)}: a study file is a mapping (name, out_dir, seeds, datasets, stems)")
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
            lines.append(f"{shown(path)}: {loc + ': ' if loc else ''}{msg}")
        raise StudyError("\n".join(dict.fromkeys(lines))) from None
