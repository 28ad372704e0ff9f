"""The run folder: every file a training run writes, and the one module that knows their names.

``python -m audiostem.train`` writes, the study runner, the study report, ``evaluate`` and
``predict`` read, and nothing else opens these files by path::

    OUT_DIR/recipe.yaml               the resolved recipe (a folder holds one recipe's run)
    OUT_DIR/run.lock                  held while a process trains this folder
    OUT_DIR/checkpoints/best.ckpt     best epoch by train.early_stopping.metric
    OUT_DIR/checkpoints/last.ckpt     end of the last epoch: the resume point
    OUT_DIR/logs/                     Lightning's CSVLogger (metrics.csv) and TensorBoard events
    OUT_DIR/history.csv               one row per epoch (HISTORY_FIELDS)
    OUT_DIR/predictions_<split>.csv   one row per clip: id, label, pred, correct, fold, p_<class>..., [group];
                                      <split> test, val, and test_last: the last epoch's model on the
                                      test split (with validation, the checkpoint is chosen on it)
    OUT_DIR/per_class.txt             per-class precision, recall, F1 of the test split (val without one)
    OUT_DIR/confusion_matrix.png      its confusion matrix
    OUT_DIR/metrics.json              written last: its presence means the run finished (is_finished)
    OUT_DIR/fold_<k>/                 with cross-validation, a run folder per test fold; the top
                                      folder then holds the pooled files (pool_fold_runs)

``evaluate --out DIR`` writes an evaluation folder of the same files named per split
(:func:`write_evaluation`). JSON, CSV and text files are written atomically (a reader sees the
old file or the new one, never half of one). The checkpoint's own content is
:class:`audiostem.checkpoint.CheckpointPayload`'s.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from data_prep.discover import shown
from data_prep.fileio import write_atomic

from .checkpoint import CheckpointError

PathLike = Union[str, Path]

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PER_CLASS_FILE = "per_class.txt"
CONFUSION_FILE = "confusion_matrix.png"
LOCK_FILE = "run.lock"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
BEST_STEM, LAST_STEM = "best", "last"           # checkpoints/<stem>.ckpt (Lightning's names for them)
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds",
                  "val_balanced_accuracy")
# Everything the study report reads of a finished run (no checkpoints, no logs): what a study exports.
# predictions_test_last.csv feeds the report's paired last-epoch check (present in runs with validation).
SMALL_FILES = (METRICS_FILE, HISTORY_FILE, "predictions_test.csv", "predictions_test_last.csv", RECIPE_FILE)
# Recipe fields that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = (("data", "num_workers"), ("trainer",), ("out_dir",))


class RunFolderError(ValueError):
    """A file of a run folder that cannot be read (truncated, not JSON, not a mapping)."""


# --- writing ------------------------------------------------------------------------------------
def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN written as ``NaN``)."""
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def _csv_text(fields: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# --- metrics.json: the run's results, and the sign that it finished ---------------------------------
def is_finished(run_dir: PathLike) -> bool:
    """Whether the run in ``run_dir`` finished: ``metrics.json`` is written last, and only then."""
    return (Path(run_dir) / METRICS_FILE).is_file()


def write_metrics(run_dir: PathLike, metrics: dict) -> None:
    """Write ``metrics.json``, which marks the run finished: call it last."""
    write_json(Path(run_dir) / METRICS_FILE, metrics)


def read_metrics(run_dir: PathLike) -> dict:
    """The ``metrics.json`` of a finished run. Raises :class:`RunFolderError` naming the file
    when it is missing, damaged or not a JSON object."""
    path = Path(run_dir) / METRICS_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RunFolderError(f"{shown(path)}: missing (the run has not finished)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(_damaged(run_dir, f"truncated or not JSON: {e}")) from None
    if not isinstance(data, dict):
        raise RunFolderError(_damaged(run_dir, "not a JSON object"))
    return data


def _damaged(run_dir: PathLike, why: str) -> str:
    resume = ("it resumes from checkpoints/last.ckpt" if last_checkpoint(run_dir).is_file()
              else "from the start: there is no checkpoints/last.ckpt to resume from")
    return (f"{shown(Path(run_dir) / METRICS_FILE)}: damaged ({why}); delete it and run the training "
            f"again ({resume})")


# --- recipe.yaml ----------------------------------------------------------------------------------
def _comparable(recipe: dict) -> dict:
    d = json.loads(json.dumps(recipe))
    for path in RUNTIME_FIELDS:
        node = d
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return d


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def recipe_changes(old: dict, new: dict) -> list[str]:
    """``field: old -> new`` for every field that differs between two resolved recipes, ignoring
    the runtime fields (``trainer``, ``data.num_workers``, ``out_dir``) that may change on resume."""
    return _diff(_comparable(old), _comparable(new))


def read_recipe(run_dir: PathLike) -> Optional[dict]:
    """The resolved recipe stored in ``run_dir`` as plain data, or None when there is none.
    Raises :class:`~audiostem.recipe.RecipeError` naming the file when it is not valid YAML."""
    from .yamlio import load_yaml
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        return None
    return load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}


def write_recipe(run_dir: PathLike, text: str) -> None:
    """Store the resolved recipe (``dump_recipe``'s YAML) in ``run_dir``."""
    write_atomic(Path(run_dir) / RECIPE_FILE, text)


def prepare(recipe, restart: bool = False, write: bool = True) -> Path:
    """Create the run folder ``recipe.out_dir`` and store the recipe in it; refuse a folder that
    holds a run of another recipe (resuming must not mix two experiments), or first discard that
    run with ``restart``. ``write``: this process writes (rank 0 of a distributed run; the others
    only check). Raises :class:`~audiostem.recipe.RecipeError` (field ``out_dir``)."""
    from .recipe import RecipeError, dump_recipe
    out = Path(recipe.out_dir)
    if restart and out.exists() and write:
        discard_run(out)
    stored = read_recipe(out)
    diff = [] if stored is None else recipe_changes(stored, recipe.to_dict())
    if diff:
        raise RecipeError(f"out_dir: {shown(out)} holds a run of a different recipe ({'; '.join(diff[:5])}); "
                          "choose another out_dir, or pass --restart to discard that run")
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_recipe(out, dump_recipe(recipe))
    return out


def discard_run(run_dir: PathLike) -> None:
    """Delete every file a run writes (checkpoints, logs, metrics, history, recipe, predictions,
    reports, fold folders) for ``--restart``; the lock and any files of other programs stay."""
    out = Path(run_dir)
    for name in (CHECKPOINTS_DIR, LOGS_DIR, METRICS_FILE, HISTORY_FILE, RECIPE_FILE, PER_CLASS_FILE, CONFUSION_FILE):
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for pattern in ("predictions_*.csv", "per_class_*.txt", "confusion_matrix_*.png"):
        for target in out.glob(pattern):
            target.unlink(missing_ok=True)
    for d in out.glob("fold_*"):
        shutil.rmtree(d)


def run_lock(run_dir: PathLike):
    """The lock a training process holds on its run folder (``run.lock``), refusing a second
    trainer of the same folder with :class:`data_prep.cache_files.CacheBusyError`."""
    from data_prep.cache_files import CacheLock
    out = Path(run_dir)
    return CacheLock(out, out / LOCK_FILE, busy="being trained by {holder} (lock {lock}); one run "
                     "per out_dir at a time: wait for it, or stop it and run again (it resumes)")


# --- checkpoints/ and logs/ -------------------------------------------------------------------------
def checkpoint_dir(run_dir: PathLike) -> Path:
    """``run_dir/checkpoints``, where Lightning's ModelCheckpoint writes ``best.ckpt`` and ``last.ckpt``."""
    return Path(run_dir) / CHECKPOINTS_DIR


def best_checkpoint(run_dir: PathLike) -> Path:
    return checkpoint_dir(run_dir) / f"{BEST_STEM}.ckpt"


def last_checkpoint(run_dir: PathLike) -> Path:
    return checkpoint_dir(run_dir) / f"{LAST_STEM}.ckpt"


def find_checkpoint(path: PathLike) -> Path:
    """A checkpoint file, or ``RUN/checkpoints/best.ckpt`` for a run folder. Raises
    :class:`~audiostem.checkpoint.CheckpointError` when there is none."""
    p = Path(path)
    if p.is_dir():
        best = best_checkpoint(p)
        folds = [c.parents[1] for c in fold_checkpoints(p)]
        if not best.exists() and folds:          # pool_fold_runs copies the first fold's when all have finished
            unfinished = [f.name for f in folds if not is_finished(f)]
            example = next((f for f in folds if is_finished(f)), folds[0])
            raise CheckpointError(f"{shown(p)}: a cross-validation run that has not finished"
                                  + (f" ({', '.join(unfinished)} unfinished)" if unfinished else "")
                                  + f"; it gets {CHECKPOINTS_DIR}/{BEST_STEM}.ckpt, a copy of the first fold's, "
                                    f"when every fold has: give one fold's folder, e.g. {shown(example)}")
        if not best.exists():
            raise CheckpointError(f"{shown(p)}: a run folder without checkpoints/best.ckpt (not trained yet, or "
                                  "not a run folder)")
        return best
    if not p.exists():
        raise CheckpointError(f"{shown(p)}: no such checkpoint file or run folder")
    return p


def fold_checkpoints(run_dir: PathLike) -> list[Path]:
    """The best checkpoint of every fold of a cross-validation run folder (``fold_*/``), in name
    order; empty for a run without folds (or a path that is not a folder)."""
    p = Path(run_dir)
    return sorted(p.glob(f"fold_*/{CHECKPOINTS_DIR}/{BEST_STEM}.ckpt")) if p.is_dir() else []


def checkpoint_files(run_dir: PathLike) -> list[Path]:
    """Every checkpoint file of a run folder, its folds' included (what a study prunes)."""
    p = Path(run_dir)
    return sorted(p.glob(f"{CHECKPOINTS_DIR}/*.ckpt")) + sorted(p.glob(f"fold_*/{CHECKPOINTS_DIR}/*.ckpt"))


def model_checkpoint(run_dir: PathLike) -> Optional[Path]:
    """The checkpoint that stands for a run's model: ``best.ckpt``, else ``last.ckpt``, else None."""
    return next((p for p in (best_checkpoint(run_dir), last_checkpoint(run_dir)) if p.is_file()), None)


def discard_unfinished_epoch(run_dir: PathLike) -> None:
    """Delete the checkpoints and logs of a run that never finished an epoch (nothing to resume)."""
    for stale in (checkpoint_dir(run_dir), Path(run_dir) / LOGS_DIR):
        shutil.rmtree(stale, ignore_errors=True)


def loggers(run_dir: PathLike, rank_zero: bool = True) -> list:
    """Lightning's loggers of a run: a CSVLogger writing ``logs/metrics.csv`` that keeps the rows
    of an interrupted run when it resumes (the stock logger deletes an existing file; ``rank_zero``:
    this process owns the file), and TensorBoard events in ``logs/``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    run_dir = Path(run_dir)
    logger = CSVLogger(run_dir, name=LOGS_DIR, version="")
    path = run_dir / LOGS_DIR / "metrics.csv"
    if path.exists() and rank_zero:
        kept = path.with_name("metrics.csv.resume")
        os.replace(path, kept)
        writer = logger.experiment                      # created now: finds no file to delete
        os.replace(kept, path)
        with open(path, newline="") as fh:
            writer.metrics_keys = list(csv.DictReader(fh).fieldnames or [])
    return [logger, TensorBoardLogger(run_dir, name=LOGS_DIR, version="")]


# --- history.csv --------------------------------------------------------------------------------------
def write_history(run_dir: PathLike, rows: Sequence[dict]) -> None:
    """Write ``history.csv``: one row per epoch with :data:`HISTORY_FIELDS` (empty cells where an
    epoch had no validation)."""
    write_atomic(Path(run_dir) / HISTORY_FILE, _csv_text(HISTORY_FIELDS, rows))


def read_history(run_dir: PathLike) -> list[dict]:
    """``history.csv`` rows with numbers as floats (empty cells as NaN); empty without the file."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        return [{k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()}
                for r in _read_csv(path)[1]]
    except (ValueError, TypeError) as e:
        raise RunFolderError(f"{shown(path)}: damaged (not numbers: {' '.join(str(e).split())[:120]}); delete the run "
                             "folder's metrics.json and history.csv and run the training again") from None


def best_epoch(rows: list[dict], metric: str) -> int:
    """The epoch whose ``metric`` was best (the first of ties; the last epoch without validation)."""
    scored = [(r["epoch"], r[metric]) for r in rows if r.get(metric) not in ("", None)]
    if not scored:
        return rows[-1]["epoch"] if rows else 0
    pick = min if metric == "val_loss" else max
    value = pick(v for _, v in scored)
    return next(e for e, v in scored if v == value)


# --- predictions_<split>.csv ------------------------------------------------------------------------
def prediction_rows(items: list, log_probs: torch.Tensor, target: torch.Tensor, classes: list[str],
                    fold: Optional[int] = None) -> list[dict]:
    """One row per clip: ``id, label, pred, correct, fold, p_<class>..., group`` (probabilities),
    from cache items (:class:`data_prep.Item`), ``(clips, classes)`` log-probabilities and ``(clips,)`` label indices.

    ``fold`` is the test fold of a cross-validation run, else the item's own fold (may be empty);
    ``group`` is the item's group in the cache (a piece, a speaker, a game; may be empty).
    """
    probs = log_probs.exp()
    rows = []
    for item, p, y in zip(items, probs, target.tolist()):
        pred = int(p.argmax())
        f = fold if fold is not None else item.fold
        row = {"id": item.id, "label": classes[y], "pred": classes[pred], "correct": int(pred == y),
               "fold": "" if f is None else f}
        row.update({f"p_{c}": f"{float(v):.6f}" for c, v in zip(classes, p)})
        row["group"] = item.group or ""
        rows.append(row)
    return rows


def _predictions_path(folder: PathLike, split: str) -> Path:
    return Path(folder) / f"predictions_{split}.csv"


def write_predictions(folder: PathLike, split: str, rows: list[dict], classes: list[str]) -> None:
    """Write :func:`prediction_rows` as ``predictions_<split>.csv``: ``id, label, pred, correct,
    fold, p_<class>...``, and a last column ``group`` when any row has one (a cache with groups)."""
    fields = ["id", "label", "pred", "correct", "fold"] + [f"p_{c}" for c in classes]
    if any(r.get("group") for r in rows):
        fields.append("group")
    write_atomic(_predictions_path(folder, split), _csv_text(fields, rows))


def has_predictions(folder: PathLike, split: str) -> bool:
    return _predictions_path(folder, split).is_file()


def read_predictions(folder: PathLike, split: str) -> tuple[list[str], list[dict]]:
    """``(columns, rows)`` of ``predictions_<split>.csv``, every value as text."""
    return _read_csv(_predictions_path(folder, split))


def predictions_name(folder: PathLike, split: str) -> str:
    """The path of ``predictions_<split>.csv`` as text, for messages."""
    return str(_predictions_path(folder, split))


def prediction_tensors(rows: list[dict], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_probs (clips, classes), target (clips,))`` of prediction rows."""
    index = {c: k for k, c in enumerate(classes)}
    probs = torch.tensor([[float(r[f"p_{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes))
    target = torch.tensor([index[r["label"]] for r in rows], dtype=torch.long)
    return probs.clamp(min=1e-12).log(), target


# --- per_class.txt and confusion_matrix.png ---------------------------------------------------------
def write_reports(folder: PathLike, metrics: Optional[dict], classes: list[str], title: str,
                  split: Optional[str] = None) -> None:
    """``per_class.txt`` and ``confusion_matrix.png`` of ``metrics`` (:func:`classification_metrics`'s
    dict); ``per_class_<split>.txt`` and ``confusion_matrix_<split>.png`` with ``split``. Nothing
    when ``metrics`` is None (a run without a test or validation split)."""
    from .metrics import per_class_text, plot_confusion
    if metrics is None:
        return
    folder, tag = Path(folder), f"_{split}" if split else ""
    write_atomic(folder / f"per_class{tag}.txt", per_class_text(metrics, title))
    plot_confusion(folder / f"confusion_matrix{tag}.png", metrics["confusion"], classes, title)


def confusion_figure(folder: PathLike) -> Optional[Path]:
    """The run's confusion-matrix PNG, or None when it has none."""
    path = Path(folder) / CONFUSION_FILE
    return path if path.exists() else None


def write_evaluation(folder: PathLike, split: str, rows: list[dict], metrics: dict, classes: list[str],
                     title: str) -> list[str]:
    """What ``evaluate --out`` writes: ``predictions_<split>.csv``, ``per_class_<split>.txt``,
    ``confusion_matrix_<split>.png`` and ``metrics_<split>.json``; returns their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder, split, rows, classes)
    write_reports(folder, metrics, classes, title, split)
    write_json(folder / f"metrics_{split}.json", metrics)
    return [f"predictions_{split}.csv", f"metrics_{split}.json", f"confusion_matrix_{split}.png"]


# --- cross-validation: fold_<k>/ and the pooled top folder -------------------------------------------
def fold_dir(run_dir: PathLike, fold: Any) -> Path:
    """The run folder of test fold ``fold`` inside a cross-validation run folder."""
    return Path(run_dir) / f"fold_{fold}"


def pool_fold_runs(out: Path, fold_dirs: list[Path], fold_metrics: list[dict], classes: list[str]) -> dict:
    """Write the top-level files of a cross-validation run from its fold folders and return its
    metrics (:func:`metrics.cross_validation_metrics`): the predictions of every fold together
    (every item once, scored by :func:`metrics.pool_folds`), the history as the mean over folds
    of each epoch, the per-class report and confusion matrix of the pooled test predictions, and
    a copy of the first fold's checkpoints. The caller writes ``metrics.json``
    (:func:`write_metrics`) last."""
    from .metrics import cross_validation_metrics, pool_folds, public
    pooled: dict[str, Optional[dict]] = {}
    for stage in ("test", "val", "test_last"):
        if fold_metrics[0].get(stage) is None:
            if stage != "test_last":          # present only in runs that test their last epoch too
                pooled[stage] = None
            continue
        rows, log_probs, target = [], [], []
        for d in fold_dirs:
            r = read_predictions(d, stage)[1]
            lp, t = prediction_tensors(r, classes)
            rows += r
            log_probs.append(lp)
            target.append(t)
        write_predictions(out, stage, rows, classes)
        pooled[stage] = public(pool_folds(log_probs, target, classes))
    metrics = cross_validation_metrics(pooled, fold_metrics)
    histories = [read_history(d) for d in fold_dirs]
    rows = []
    for e in range(max(len(h) for h in histories)):
        row: dict[str, Any] = {"epoch": e + 1}
        for key in HISTORY_FIELDS[1:]:
            vals = [h[e][key] for h in histories if e < len(h) and not math.isnan(h[e][key])]
            row[key] = round(sum(vals) / len(vals), 6) if vals else ""
        rows.append(row)
    write_history(out, rows)
    checkpoint_dir(out).mkdir(exist_ok=True)
    for src in (best_checkpoint(fold_dirs[0]), last_checkpoint(fold_dirs[0])):
        if src.exists():
            shutil.copyfile(src, checkpoint_dir(out) / src.name)
    write_reports(out, metrics["test"] or metrics["val"], classes, f"{out.name}: test, {len(fold_dirs)} folds pooled")
    return {**metrics, "checkpoint": str(best_checkpoint(out))}


# --- what a study keeps of a finished run -------------------------------------------------------------
def copy_small_files(run_dir: PathLike, dest: PathLike) -> None:
    """Copy a finished run's :data:`SMALL_FILES` (those present) to ``dest`` (created)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (Path(run_dir) / name).is_file():
            shutil.copy2(Path(run_dir) / name, dest / name)
