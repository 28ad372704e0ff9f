"""Run the cells of a study: each one an ordinary training run in its own folder.

A cell is *finished* when its folder holds ``metrics.json`` (the train command writes it
last). Running a study again skips finished cells and re-runs the others; a folder without
``metrics.json`` resumes from its ``last.ckpt`` (the train command does that by itself).
Output of every attempt is appended to ``OUT_DIR/logs/<dataset>__<variant>__seed<k>.log``.

A study with ``tune`` runs its tuning cells first and its main cells only once the choices are
made (:func:`run_all`, :mod:`audiostem.study.tuning`). Cells run in :func:`run_order`: dataset
group by group (the first body's groups first), and within a group seed by seed, so that a
session stopped half-way leaves every stem with the same seeds.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

from .. import run_folder
from ..run_folder import is_finished
from .grid import Cell, Study, StudyError, TuningPending
from .tuning import choices_path, settle_choices, study_cells

USAGE_ERROR = 2      # the train command's exit status for a bad recipe, override or cache


def status(cell: Cell) -> str:
    """``finished``, ``damaged`` (its metrics.json is unreadable: see :func:`damage`), ``partial``
    (a run folder without metrics.json: it will resume) or ``pending``."""
    if is_finished(cell.out_dir):
        return "damaged" if damage(cell) else "finished"
    return "partial" if cell.out_dir.exists() else "pending"


def damage(cell: Cell) -> Optional[str]:
    """Why a finished cell's ``metrics.json`` cannot be read (one line naming the file and the
    remedy), or None. The runner does not train such a cell (the train command would refuse it
    too) and does not delete it: it counts as failed until the file is restored or removed."""
    try:
        run_folder.read_metrics(cell.out_dir)
    except run_folder.RunFolderError as err:
        return f"{err}; or copy it back from the study's exported cells, if they hold this one"
    return None


def select(cells: list[Cell], patterns: Optional[Sequence[str]], pending: bool = False) -> list[Cell]:
    """Cells whose name matches any glob pattern (``folk/*``, ``*/deep3/seed0``); all if none given.
    ``pending``: the main cells are not in ``cells`` yet (tuning unfinished), said in the error."""
    if not patterns:
        return cells
    picked = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not picked:
        raise StudyError(f"no cell matches {list(patterns)}; cell names look like {cells[0].name!r}" + (
            "; the main cells exist once the tuning cells ('_tune/*') have finished" if pending else ""))
    return picked


def run_order(study: Study, cells: list[Cell]) -> list[Cell]:
    """Cheapest-informative first: the groups of the study's first body before the others, then
    the study file's dataset order, and within a group seed-major (seed, fold, variant, tuning
    point; each in its order of first appearance), so that every stem gets seed k before any
    stem gets seed k+1."""
    groups = {d.name: (d._body_index, i) for i, d in enumerate(study.datasets)}
    ranks: dict[tuple, dict] = {}

    def rank(kind: str, group: str, value) -> int:
        seen = ranks.setdefault((kind, group), {})
        return seen.setdefault(repr(value), len(seen))
    keyed = [(groups.get(c.dataset, (0, 0)), rank("seed", c.dataset, c.seed), rank("fold", c.dataset, c.fold),
              rank("variant", c.dataset, c.variant), rank("point", c.dataset, c.point)) for c in cells]
    return [c for _, c in sorted(zip(keyed, cells), key=lambda kc: kc[0])]


def main_cells(study: Study, echo: Callable[[str], None]) -> list[Cell]:
    """The study's main cells; with ``tune``, those of the groups whose tuning has finished, after
    their choices are made or checked (:func:`tuning.settle_choices`, which may refuse)."""
    if study.tune is not None:
        settle_choices(study, echo)
    try:
        return study_cells(study)
    except TuningPending:
        return []


def train_command(study: Study, cell: Cell, portable: bool = False) -> list[str]:
    """The argv of one cell's training run as a user would type it: ``TRAIN RECIPE key=value...
    out_dir=CELL`` (the values spelled by :func:`grid.format_value`, which reads back the same).
    A study's own ``train_command`` is run with these arguments; the default one is given the
    values as they are (:func:`_run_argv`).

    ``portable`` spells the default train command ``python -m audiostem.train`` (for --plan)
    instead of this interpreter's full path.
    """
    base = study.train_command or ["python" if portable else sys.executable, "-m", "audiostem.train"]
    recipe = str(Path(cell.recipe).resolve())
    return [*base, recipe, *cell.overrides, f"out_dir={cell.out_dir.resolve()}"]


def _values(cell: Cell) -> dict:
    """The cell's recipe values with its run folder: what its training run sets on its recipe."""
    return {**cell.values, "out_dir": str(cell.out_dir.resolve())}


def _run_argv(study: Study, cell: Cell) -> tuple[list[str], Optional[str]]:
    """``(argv, stdin text)`` that run one cell: the default train command reads the cell's values
    as JSON on stdin (``--values -``: values stay values, no text round trip); a study's own
    ``train_command`` gets the ``key=value`` arguments of :func:`train_command`."""
    if study.train_command is not None:
        return train_command(study, cell), None
    argv = [sys.executable, "-m", "audiostem.train", str(Path(cell.recipe).resolve()), "--values", "-"]
    return argv, json.dumps(_values(cell))


def log_path(study: Study, cell: Cell) -> Path:
    return Path(study.out_dir) / "logs" / (cell.name.replace("/", "__") + ".log")


def keep_checkpoint(study: Study, cell: Cell) -> bool:
    """Whether a finished cell keeps ``best.ckpt``: ``all``, ``none``, or ``one_per_variant``
    (the first seed's, and its first fold's, run: the one the filter figure shows). Tuning cells
    keep none."""
    if cell.point is not None:
        return False
    if study.keep_checkpoints != "one_per_variant":
        return study.keep_checkpoints == "all"
    dataset = study.dataset(cell.dataset)
    folds = dataset.folds
    return cell.seed == study.seeds_of(dataset)[0] and (folds is None or cell.fold == folds.values[0])


def prune_checkpoints(study: Study, cell: Cell) -> int:
    """Delete the checkpoints a finished cell no longer needs (also those of its CV fold
    folders, ``fold_*/checkpoints``); a kept cell keeps ``checkpoints/best.ckpt`` (or ``last.ckpt``
    when there is no best). Returns bytes freed."""
    if not is_finished(cell.out_dir):
        return 0
    kept = run_folder.model_checkpoint(cell.out_dir) if keep_checkpoint(study, cell) else None
    freed = 0
    for ckpt in run_folder.checkpoint_files(cell.out_dir):
        if ckpt != kept:
            freed += ckpt.stat().st_size
            ckpt.unlink()
    return freed


def prepare_caches(study: Study, cells: list[Cell], echo: Callable[[str], None]) -> dict[str, str]:
    """Build every missing feature cache the cells need, one at a time, before any cell runs:
    parallel cells of one dataset must not all start building the same cache. Only for the
    default train command (a custom one is on its own). Returns ``{dataset: error}`` for the
    datasets whose recipe or cache failed (their cells cannot run; the others can)."""
    if study.train_command is not None:
        return {}
    from data_prep import CacheError, cache_exists

    from ..recipe import load_recipe
    from ..train import ensure_cache
    seen, failed = set(), {}
    for cell in cells:
        if cell.dataset in failed:
            continue
        try:
            recipe = load_recipe(cell.recipe, values=cell.values)
            if recipe.data.cache in seen:
                continue
            seen.add(recipe.data.cache)
            if not cache_exists(recipe.data.cache):
                echo(f"[study {study.name}] building the feature cache {recipe.data.cache} for {cell.dataset}")
                ensure_cache(recipe)
        except (ValueError, CacheError) as err:
            failed[cell.dataset] = str(err)
            echo(f"[study {study.name}] {cell.dataset}: its cells cannot run: {err}")
    return failed


def write_plan(study: Study, study_path: Path, cells: list[Cell], out: TextIO, raw: bool = False) -> int:
    """One shell command per cell, one per line. By default each line runs the study runner on
    one cell (skip if finished, resume, log, prune); ``raw`` writes the bare train commands."""
    n = 0
    for cell in cells:
        if raw:
            line = shlex.join(train_command(study, cell, portable=True))
        else:
            line = shlex.join(["python", "-m", "audiostem.study", str(study_path.resolve()),
                               "--cells", cell.name])
        out.write(line + "\n")
        n += 1
    return n


def _env(jobs: int) -> dict:
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // jobs))      # the cores this process may use (SLURM, taskset)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


def stale_changes(study: Study, cell: Cell) -> list[str]:
    """How the recipe stored in a partial cell's folder differs from what the cell would run now
    (after a code change altered a recipe default, say); empty when it would resume as is. Such a
    cell restarts from scratch: resuming must not mix two recipes. Finished cells are kept."""
    stored = None if study.train_command is not None or is_finished(cell.out_dir) else run_folder.read_recipe(cell.out_dir)
    if stored is None:
        return []
    from ..recipe import load_recipe
    try:
        now = load_recipe(cell.recipe, values=_values(cell))
    except ValueError:
        return []            # the train command reports a bad recipe itself
    return run_folder.recipe_changes(stored, now.to_dict())


def run_cell(study: Study, cell: Cell, env: Optional[dict] = None) -> tuple[bool, float]:
    """Run one cell's training in a subprocess, appending its output to the cell's log.
    A partial cell resumes, or restarts when its recipe changed since (``stale_changes``).
    Returns ``(finished, seconds, exit status)``; finished means the run wrote ``metrics.json``."""
    log = log_path(study, cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv, values = _run_argv(study, cell)
    shown = train_command(study, cell)         # the same run as a user would type it
    changes = stale_changes(study, cell)
    if changes:
        argv.append("--restart")
        shown.append("--restart")
    start = time.time()
    with open(log, "a") as fh:
        if changes:
            fh.write(f"\n=== the recipe changed since this partial run ({'; '.join(changes[:5])}): restarting it\n")
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {status(cell)}: {shlex.join(shown)}\n")
        fh.flush()
        rc = subprocess.run(argv, input=values, text=True, stdout=fh, stderr=subprocess.STDOUT,
                            env=env).returncode
        fh.write(f"=== exit status {rc} after {time.time() - start:.0f} s\n")
    return rc == 0 and is_finished(cell.out_dir), time.time() - start, rc


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_all(study: Study, patterns: Optional[Sequence[str]] = None, jobs: int = 1, retries: int = 1,
            echo: Callable[[str], None] = _echo) -> dict:
    """Run a study's cells that match ``patterns`` (all if None), body by body (the study's
    ``bodies`` order): the tuning cells of that body's groups, then their choices, then the main
    cells of the groups whose choices are made; each phase in :func:`run_order`. Returns
    :func:`run_study`'s counts summed over the phases, plus ``waiting``: main cells not started
    because the tuning cells they wait for are unfinished (or failed)."""
    from .tuning import tuning_cells, unchosen_main_cells
    tuning = tuning_cells(study)
    main = main_cells(study, echo)
    every = unchosen_main_cells(study)
    select(tuning + main, patterns, pending=len(main) < len(every))    # a pattern that matches nothing is an error

    def matching(cells: list[Cell]) -> list[Cell]:
        return [c for c in cells if not patterns or any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    total = {"cells": 0, "skipped": 0, "finished": 0, "failed": [], "waiting": 0}

    def run(cells: list[Cell], what: str) -> None:
        if cells:
            result = run_study(study, run_order(study, cells), jobs, retries, echo, what=what)
            for key in ("cells", "skipped", "finished", "failed"):
                total[key] += result[key]
    for body in sorted({d._body_index for d in study.datasets}):
        groups = {d.name for d in study.datasets if d._body_index == body}
        run(matching([c for c in tuning if c.dataset in groups]), "tuning cells")
        main = main_cells(study, echo) if study.tune is not None else main
        run(matching([c for c in main if c.dataset in groups]), "cells")
    ready = {c.name for c in main}
    total["waiting"] = len([c for c in matching(every) if c.name not in ready])
    if total["waiting"]:
        left = sum(not is_finished(c.out_dir) for c in tuning)
        echo(f"[study {study.name}] {left} of {len(tuning)} tuning cells unfinished: {total['waiting']} main "
             f"cells wait for their tuning choices")
    return total


def run_study(study: Study, cells: list[Cell], jobs: int = 1, retries: int = 1,
              echo: Callable[[str], None] = _echo, what: str = "cells") -> dict:
    """Run every unfinished cell (``jobs`` at a time, in the given order), retrying a failed one
    up to ``retries`` more times. Prints a progress line per finished cell. Returns counts and
    failed cell names."""
    todo = [c for c in cells if not is_finished(c.out_dir)]
    damaged = {c.name: why for c in cells if is_finished(c.out_dir) and (why := damage(c))}
    skipped = len(cells) - len(todo) - len(damaged)
    for c in cells:
        if c.name not in damaged:
            prune_checkpoints(study, c)
    echo(f"[study {study.name}] {len(cells)} {what}: {skipped} finished, {len(todo)} to run, "
         f"{jobs} at a time; logs in {Path(study.out_dir) / 'logs'}")
    for name, why in damaged.items():
        echo(f"[study {study.name}] DAMAGED {name}: {why}")
    broken = prepare_caches(study, todo, echo)
    unrunnable = [c.name for c in todo if c.dataset in broken]
    todo = [c for c in todo if c.dataset not in broken]
    env, lock = _env(jobs), threading.Lock()
    done, failed, durations = [], [], []

    def work(cell: Cell) -> None:
        for attempt in range(retries + 1):
            ok, seconds, rc = run_cell(study, cell, env)
            if ok or rc == USAGE_ERROR:    # a bad recipe or override fails the same way again
                break
        prune_checkpoints(study, cell)
        with lock:
            (done if ok else failed).append(cell.name)
            durations.append(seconds)
            left = len(todo) - len(done) - len(failed)
            eta = sum(durations) / len(durations) * left / jobs
            echo(f"[study {study.name}] {len(done) + len(failed)}/{len(todo)} "
                 f"{'done' if ok else 'FAILED'} {cell.name} in {_fmt_s(seconds)}"
                 f"{'' if ok else f' (see {log_path(study, cell)})'} | {len(failed)} failed, "
                 f"{left} left, ~{_fmt_s(eta)} to go")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(work, todo))
    return {"cells": len(cells), "skipped": skipped, "finished": len(done),
            "failed": list(damaged) + unrunnable + failed}


def export_cells(study: Study, cells: list[Cell], dest: Path) -> tuple[int, list[str]]:
    """Copy the small files of every finished cell (:data:`audiostem.run_folder.SMALL_FILES`: all
    the report reads, no checkpoints or logs) to ``dest/DATASET/VARIANT/seedK[/...]``, the layout of
    ``OUT_DIR/runs``; copying them back there later makes the runner skip those cells and the
    report count them. The tuning choices file goes along (``_tune/choices.json``): the main
    cells' values come from it. A damaged cell (:func:`damage`) is not copied: it would overwrite
    a good earlier export of it in ``dest``, the copy its remedy restores from. Returns the number
    of cells exported and the :func:`damage` line of each damaged cell left out; :class:`StudyError`
    naming ``dest`` when it cannot be written."""
    try:
        return _export(study, cells, Path(dest))
    except OSError as e:           # dest is a file or under one, no permission, a full disk
        raise StudyError(f"export: cannot write to {dest} ({e.strerror}: {e.filename}); give a folder "
                         "that can be created and written") from None


def _export(study: Study, cells: list[Cell], dest: Path) -> tuple[int, list[str]]:
    runs = Path(study.out_dir) / "runs"
    choices = choices_path(study)
    if study.tune is not None and choices.is_file():
        target = Path(dest) / choices.relative_to(runs)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(choices, target)
    n, damaged = 0, []
    for cell in cells:
        if not is_finished(cell.out_dir):
            continue
        why = damage(cell)
        if why:
            damaged.append(f"{cell.name}: {why}")
            continue
        run_folder.copy_small_files(cell.out_dir, Path(dest) / cell.out_dir.relative_to(runs))
        n += 1
    return n, damaged


def check_cell(study: Study, cell: Cell) -> Optional[str]:
    """The recipe error of a cell (its recipe with its values, validated as the train command would,
    without building a model), or None. Custom train commands are not checked."""
    if study.train_command is not None:
        return None
    from ..recipe import load_recipe
    try:
        load_recipe(cell.recipe, values=cell.values)
    except ValueError as err:
        return str(err)
    return None


def describe(study: Study, cells: list[Cell], out: TextIO) -> int:
    """The --dry-run listing: status and command of every cell (recipes checked), then totals.
    Returns the number of invalid and damaged cells (a run would fail on either)."""
    counts: dict[str, int] = {}
    for cell in cells:
        st = status(cell)
        error = damage(cell) if st == "damaged" else None if st == "finished" else check_cell(study, cell)
        st = "INVALID" if error and st != "damaged" else st
        counts[st] = counts.get(st, 0) + 1
        out.write(f"{st:9s} {cell.name}\n          {error or shlex.join(train_command(study, cell))}\n")
    out.write(f"{len(cells)} cells: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + "\n")
    return counts.get("INVALID", 0) + counts.get("damaged", 0)

