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
``export`` and copying back carry them like the main cells). When all of a group's tuning cells
have finished it picks, per variant, the point with the best mean validation metric over the
tuning seeds (test items are never read) and writes ``OUT_DIR/runs/_tune/choices.json``; this
module owns that file. That group's main cells (and those of the groups that take its choices)
then exist and carry the chosen values. Cell names and folders do not
depend on the values, so a choice that changes under a started main cell is refused rather than
run into the same folder (:func:`settle_choices`).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable, Optional

from data_prep.fileio import write_atomic

from .. import run_folder
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
    metrics = run_folder.read_metrics(cell.out_dir)
    val = metrics.get("val") or {}
    if val.get(study.tune.metric) is None:
        raise StudyError(f"{cell.out_dir / run_folder.METRICS_FILE}: no validation {study.tune.metric!r} (val section: "
                         f"{sorted(val) or 'none'}); tuning chooses on a validation split, never on test items")
    return float(val[study.tune.metric])


def ready_groups(study: Study) -> list[str]:
    """The groups whose tuning has finished: every tuning cell of the group they take their
    choices from (:func:`grid.tuning_source`) has ``metrics.json``."""
    done: dict[str, bool] = {}
    for c in tuning_cells(study):
        done[c.dataset] = done.get(c.dataset, True) and run_folder.is_finished(c.out_dir)
    return [d.name for d in study.datasets if done.get(tuning_source(study, d).name, False)]


def choose(study: Study) -> dict:
    """The choices from the finished tuning cells: ``{"metric", "grid", "seeds", "rule", "choices":
    {group: {variant: {"values": {key: value}, "point", "tuned_on", "scores": {point: mean}}}}}``
    for every group in :func:`ready_groups` (an untuned group gets its source group's). Raises
    :class:`StudyError` when a finished tuning run has no validation metric."""
    ready = ready_groups(study)
    sources = {tuning_source(study, d).name for d in study.datasets if d.name in ready}
    scores: dict[tuple, list[float]] = {}
    for c in tuning_cells(study):
        if c.dataset in sources:
            scores.setdefault((c.dataset, c.variant, c.point), []).append(_score(study, c))
    sign = -1.0 if study.tune.metric == "loss" else 1.0
    tuned = {}
    for d in tuned_groups(study):
        if d.name not in sources:
            continue
        for v in dataset_variants(study, d):
            means = {label: sum(s) / len(s) for label, _ in points(study)
                     for s in [scores[(d.name, v.name, label)]]}
            best = None
            for label, values in points(study):      # strictly better only: ties keep the earlier point
                if best is None or sign * means[label] > sign * means[best[0]]:
                    best = (label, values)
            tuned[(d.name, v.name)] = {"values": best[1], "point": best[0], "tuned_on": d.name,
                                       "scores": {k: round(x, 6) for k, x in means.items()}}
    choices = {d.name: {v.name: tuned[(tuning_source(study, d).name, v.name)] for v in dataset_variants(study, d)}
               for d in study.datasets if d.name in ready}
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
    """``{group: {variant: {key: value}}}`` for :func:`grid.expand`, for the groups whose tuning has
    finished (:func:`ready_groups`) and whose choice is in the file; the other groups have no main
    cells yet. Raises :class:`TuningPending` (naming how many tuning cells are left) while no
    group has its choices."""
    data = read_choices(study) or {"choices": {}}
    out = {}
    for name in ready_groups(study):
        try:
            out[name] = {v.name: data["choices"][name][v.name]["values"]
                         for v in dataset_variants(study, study.dataset(name))}
        except (KeyError, TypeError):
            continue                  # tuned, but the runner has not written the choice yet
    if not out:
        left = sum(not run_folder.is_finished(c.out_dir) for c in tuning_cells(study))
        raise TuningPending(f"study {study.name}: the tuning choices ({choices_path(study)}) are not made yet; "
                            f"{left} of its tuning cells are unfinished. `python -m audiostem.study STUDY.yaml` "
                            f"runs them first, then the main cells")
    return out


def study_cells(study: Study) -> list[Cell]:
    """The study's main cells (:func:`grid.expand`); with ``tune``, those of the groups whose
    choices are made, carrying them (:func:`chosen_overrides`, which raises
    :class:`TuningPending` while no group has its choices)."""
    return expand(study, None if study.tune is None else chosen_overrides(study))


def write_choices(study: Study, data: dict) -> Path:
    """Write the choices file atomically (parallel runners may finish tuning at once)."""
    path = choices_path(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def _values(data: Optional[dict]) -> dict:
    return {(g, v): c["values"] for g, vs in (data or {}).get("choices", {}).items() for v, c in vs.items()}


def settle_choices(study: Study, echo: Callable[[str], None]) -> None:
    """Make or check the choices of every group whose tuning has finished, and write them (with
    the stored choices of groups whose tuning has grown since, so that a later change is seen).
    Refuses (:class:`StudyError`) when a choice would change for a group and variant some of whose
    main cells have already started, or when a started cell's stored ``recipe.yaml`` holds another
    value than the one chosen now: mixing runs made with two values is what this guards against."""
    if study.tune is None:
        return
    new = choose(study)
    old = read_choices(study)
    before, after = _values(old), _values(new)
    for group, variants in (old or {}).get("choices", {}).items():
        new["choices"].setdefault(group, variants)        # not ready now: keep what it had
    if old == json.loads(json.dumps(new)):
        return
    changed = sorted(k for k in after if k in before and before[k] != after[k])
    main = [c for c in unchosen_main_cells(study) if c.out_dir.exists()]
    started = [c.name for c in main if (c.dataset, c.variant) in changed]
    if started:
        detail = "; ".join(f"{g}/{v}: {before[(g, v)]} -> {after[(g, v)]}" for g, v in changed[:6])
        raise StudyError(
            f"study {study.name}: the tuning choices changed ({detail}) but {len(started)} main cells already "
            f"started with the old ones (e.g. {started[0]}). Refusing to mix them: restore {choices_path(study)} "
            f"and the tuning cells as they were, or move those main cells' folders away to rerun them")
    for c in main:          # each run folder's recipe.yaml records what it ran
        ran = _recorded(c, after.get((c.dataset, c.variant), {}))
        if ran:
            raise StudyError(f"study {study.name}: {c.out_dir / run_folder.RECIPE_FILE} ran {ran}, not the values the tuning "
                             f"cells choose now ({after[(c.dataset, c.variant)]}); refusing to mix them: move the "
                             f"main cells made with other values away, or restore the choices they were made with")
    if not new["choices"]:
        return
    write_choices(study, new)
    made = [f"{g}/{v} {after[(g, v)]}" for g, v in after if before.get((g, v)) != after[(g, v)]]
    if made:
        echo(f"[study {study.name}] tuning choices made ({choices_path(study)}): " + "; ".join(made))


def _recorded(cell: Cell, values: dict) -> dict:
    """The tuned keys whose value in the cell's stored ``recipe.yaml`` differs from ``values``
    (``{key: recorded value}``; empty when they agree or nothing is recorded)."""
    recipe = run_folder.read_recipe(cell.out_dir) if values else None
    if recipe is None:
        return {}
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

