"""The tuning phase of a study: each stem's hyper-parameters chosen on validation before its test runs.

A study file's ``tune`` section (:class:`audiostem.study.grid.Tune`)::

    tune:
      grid: {train.lr: [0.003, 0.001, 0.01]}   # axes crossed into points; ties go to the first point
      seeds: [100]                             # tuning runs' seeds (keep them apart from the main seeds)
      datasets: [folk, game_sfx]               # tuned dataset entries (default: all)
      apply: {folk_audio: game_sfx}            # an untuned dataset takes a tuned one's choices
      metric: accuracy                         # of metrics.json's `val` section; `loss` is minimised

For every tuned (dataset group, variant) the runner first runs one *tuning cell* per grid point
and tuning seed, in ``OUT_DIR/runs/_tune/GROUP/VARIANT/POINT/seedK`` (inside ``runs/`` so that
``export`` and copying back carry them like the main cells). When all of them have finished it
picks, per group and variant, the point with the best mean validation metric over the tuning
seeds (test items are never read) and writes ``OUT_DIR/runs/_tune/choices.json``; this module
owns that file. The main cells then carry the chosen values. Cell names and folders do not
depend on the values, so a choice that changes under a started main cell is refused rather than
run into the same folder (:func:`settle_choices`).
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Callable, Optional

import yaml

from .grid import Cell, Dataset, Study, StudyError, TuningPending, _slug, dataset_variants, expand, make_cell, \
    tuning_source

CHOICES_FILE = "choices.json"


def choices_path(study: Study) -> Path:
    return Path(study.out_dir) / "runs" / "_tune" / CHOICES_FILE


def points(study: Study) -> list[tuple[str, dict]]:
    """The tuning grid's points in order (last axis fastest): ``[(label, {key: value}), ...]``,
    labels as in variant names: ``lr0.003``, ``lr0.003-max_epochs40``."""
    grid = study.tune.grid
    return [("-".join(f"{k.split('.')[-1]}{_slug(v)}" for k, v in zip(grid, values)), dict(zip(grid, values)))
            for values in itertools.product(*grid.values())]


def tuned_groups(study: Study) -> list[Dataset]:
    """The dataset groups that run tuning cells (the others take a tuned group's choices)."""
    return [] if study.tune is None else [d for d in study.datasets if tuning_source(study, d) is d]


def tuning_cells(study: Study) -> list[Cell]:
    """Every tuning cell: tuned group x variant x grid point x tuning seed (x fold)."""
    return [make_cell(study, d, v, seed, fold, values, label)
            for d in tuned_groups(study) for v in dataset_variants(study, d)
            for label, values in points(study) for seed in study.tune.seeds
            for fold in (d.folds.values if d.folds else [None])]


def _score(study: Study, cell: Cell) -> float:
    metrics = json.loads((cell.out_dir / "metrics.json").read_text())
    val = metrics.get("val") or {}
    if val.get(study.tune.metric) is None:
        raise StudyError(f"{cell.out_dir / 'metrics.json'}: no validation {study.tune.metric!r} (val section: "
                         f"{sorted(val) or 'none'}); tuning chooses on a validation split, never on test items")
    return float(val[study.tune.metric])


def choose(study: Study) -> dict:
    """The choices from the finished tuning cells: ``{"metric", "grid", "seeds", "choices": {group:
    {variant: {"values": {key: value}, "point", "tuned_on", "scores": {point: mean}}}}}`` for every
    group of the study (an untuned group gets its source group's). Raises :class:`StudyError`
    when a tuning cell is unfinished or has no validation metric."""
    cells = tuning_cells(study)
    unfinished = [c.name for c in cells if not (c.out_dir / "metrics.json").is_file()]
    if unfinished:
        raise TuningPending(f"{len(unfinished)} tuning cells have not finished (e.g. {unfinished[0]})")
    scores: dict[tuple, list[float]] = {}
    for c in cells:
        scores.setdefault((c.dataset, c.variant, c.point), []).append(_score(study, c))
    sign = -1.0 if study.tune.metric == "loss" else 1.0
    tuned = {}
    for d in tuned_groups(study):
        for v in dataset_variants(study, d):
            means = {label: sum(s) / len(s) for label, _ in points(study)
                     for s in [scores[(d.name, v.name, label)]]}
            best = None
            for label, values in points(study):      # strictly better only: ties keep the earlier point
                if best is None or sign * means[label] > sign * means[best[0]]:
                    best = (label, values)
            tuned[(d.name, v.name)] = {"values": best[1], "point": best[0], "tuned_on": d.name,
                                       "scores": {k: round(x, 6) for k, x in means.items()}}
    choices: dict[str, dict] = {}
    for d in study.datasets:
        source = tuning_source(study, d)
        choices[d.name] = {v.name: tuned[(source.name, v.name)] for v in dataset_variants(study, d)}
    return {"metric": study.tune.metric, "grid": study.tune.grid, "seeds": study.tune.seeds,
            "rule": "best mean validation metric over the tuning seeds; ties go to the point listed first",
            "choices": choices}


def read_choices(study: Study) -> Optional[dict]:
    """The study's choices file as :func:`choose` returns it, or None while there is none."""
    path = choices_path(study)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["choices"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a tuning choices file ({err}); delete it to choose again") from None
    return data


def tuning_choices(study: Study) -> Optional[dict[str, dict[str, dict]]]:
    """For the report: ``{group: {variant: {"values": {key: value}, "point", "tuned_on",
    "scores"}}}`` from the choices file; None when the study does not tune or has no choices yet."""
    if study.tune is None:
        return None
    data = read_choices(study)
    return None if data is None else data["choices"]


def chosen_overrides(study: Study) -> dict[str, dict[str, dict]]:
    """``{group: {variant: {key: value}}}`` for :func:`grid.expand`; raises :class:`TuningPending`
    (naming how many tuning cells are left) while there is no choices file, and StudyError when
    the file lacks a group or variant of the study (the study file changed: run the study)."""
    data = read_choices(study)
    if data is None:
        left = sum(not (c.out_dir / "metrics.json").is_file() for c in tuning_cells(study))
        raise TuningPending(f"study {study.name}: the tuning choices ({choices_path(study)}) are not made yet; "
                            f"{left} of its tuning cells are unfinished. `python -m audiostem.study STUDY.yaml` "
                            f"runs them first, then the main cells")
    out = {}
    for d in study.datasets:
        for v in dataset_variants(study, d):
            try:
                out.setdefault(d.name, {})[v.name] = data["choices"][d.name][v.name]["values"]
            except (KeyError, TypeError):
                raise StudyError(f"{choices_path(study)}: no choice for {d.name}/{v.name}; the study file gained it "
                                 f"after tuning: run the study to tune it") from None
    return out


def write_choices(study: Study, data: dict) -> Path:
    """Write the choices file atomically (parallel runners may finish tuning at once)."""
    path = choices_path(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CHOICES_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _values(data: Optional[dict]) -> dict:
    return {(g, v): c["values"] for g, vs in (data or {}).get("choices", {}).items() for v, c in vs.items()}


def settle_choices(study: Study, echo: Callable[[str], None]) -> Optional[dict]:
    """Make or check the choices once every tuning cell has finished; returns the choices data, or
    None while tuning cells are unfinished. Refuses (:class:`StudyError`) when the choices would
    change for a group and variant some of whose main cells have already started: their folders
    hold runs made with the old values, and mixing the two is what this guards against."""
    if study.tune is None:
        return None
    try:
        new = choose(study)
    except TuningPending:
        return None
    old = read_choices(study)
    if old == json.loads(json.dumps(new)):
        return old
    before, after = _values(old), _values(new)
    changed = sorted(k for k in after if old is not None and k in before and before[k] != after[k])
    main = [c for c in unchosen_main_cells(study) if c.out_dir.exists()]
    started = [c.name for c in main if (c.dataset, c.variant) in changed]
    for c in main:          # each run folder's recipe.yaml records what it ran
        ran = _recorded(c, after.get((c.dataset, c.variant), {}))
        if ran and not started:
            raise StudyError(f"study {study.name}: {c.out_dir / 'recipe.yaml'} ran {ran}, not the values the tuning "
                             f"cells choose now ({after[(c.dataset, c.variant)]}); refusing to mix them: move the "
                             f"main cells made with other values away, or restore the choices they were made with")
    if started:
        detail = "; ".join(f"{g}/{v}: {before[(g, v)]} -> {after[(g, v)]}" for g, v in changed[:6])
        raise StudyError(
            f"study {study.name}: the tuning choices changed ({detail}) but {len(started)} main cells already "
            f"started with the old ones (e.g. {started[0]}). Refusing to mix them: restore {choices_path(study)} "
            f"and the tuning cells as they were, or move those main cells' folders away to rerun them")
    write_choices(study, new)
    echo(f"[study {study.name}] tuning choices {'rewritten' if old else 'made'} ({choices_path(study)}): "
         + "; ".join(f"{g}/{v} {c['point']}" for g, vs in new["choices"].items() for v, c in vs.items()))
    return new


def _recorded(cell: Cell, values: dict) -> dict:
    """The tuned keys whose value in the cell's stored ``recipe.yaml`` differs from ``values``
    (``{key: recorded value}``; empty when they agree or nothing is recorded)."""
    path = cell.out_dir / "recipe.yaml"
    if not values or not path.is_file():
        return {}
    recipe = yaml.safe_load(path.read_text()) or {}
    out = {}
    for key, value in values.items():
        node = recipe
        for part in (key if "." in key else f"model.stem_args.{key}").split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            out[key] = node
    return out


def unchosen_main_cells(study: Study) -> list[Cell]:
    """The main cells without any tuned values: their names, folders and the rest of their
    overrides (names and folders do not depend on the choices). For counting and checking only."""
    none = {d.name: {v.name: {} for v in dataset_variants(study, d)} for d in study.datasets}
    return expand(study, none)


def tuning_lines(study: Study, group: str) -> list[str]:
    """The report's line for one dataset group: the values chosen on validation per variant."""
    choices = tuning_choices(study)
    if not choices or group not in choices:
        return []
    chosen = choices[group]
    keys = list(study.tune.grid)
    first = next(iter(chosen.values()))

    def value(c: dict) -> str:
        return (str(c["values"][keys[0]]) if len(keys) == 1
                else " ".join(f"{k.split('.')[-1]}={c['values'][k]}" for k in keys))
    what = (keys[0].split(".")[-1] if len(keys) == 1 else ", ".join(k.split(".")[-1] for k in keys))
    return [f"**Tuning:** {what} chosen on validation {study.tune.metric} (mean over tuning seeds "
            f"{study.tune.seeds}, tuned on {first['tuned_on']}; grid {study.tune.grid}; ties go to the first value): "
            + ", ".join(f"{v} {value(c)}" for v, c in chosen.items()) + "."]

