"""Train a classifier from a YAML recipe.

    python -m audiostem.train RECIPE [key=value ...] [--print] [--restart] [--resume CKPT]

RECIPE is a file or the name of a shipped recipe (``folk`` = ``recipes/folk.yaml``); overrides
are dotted keys (``model.stem=resnet7 train.max_epochs=5 seed=3``). The run folder
(``out_dir``) gets the resolved recipe, checkpoints, logs, history, predictions, reports and,
last, ``metrics.json``. A run whose folder holds ``checkpoints/last.ckpt`` but no
``metrics.json`` was interrupted and resumes from that checkpoint; a finished run is not
trained again. With cross-validation (``data.folds``) each test fold runs in ``fold_<k>/``
(a run folder of its own) and the top folder gets the pooled results.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from data_prep import CacheError

from .checkpoint import CheckpointError, load_checkpoint, verified_checkpoint_io
from .recipe import Recipe, RecipeError, dump_recipe, load_recipe, open_data
from .yamlio import load_yaml

# Lightning is imported by the functions that train, so that checking a recipe (--print, or an
# error in it) answers in the time it takes to import torch.

# Recipe fields that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = (("data", "num_workers"), ("trainer",), ("out_dir",))


def _global_rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only
    return rank_zero_only.rank


def _is_rank_zero() -> bool:
    return _global_rank() == 0


# --- the cache ----------------------------------------------------------------------------------
def ensure_cache(recipe: Recipe, wait_seconds: float = 3600.0):
    """Open the recipe's cache (:func:`~audiostem.recipe.open_data`), building it first with
    ``data_prep.prepare`` when it is missing and ``data.prepare`` says how. Ranks other than 0
    wait for rank 0 to build it."""
    import data_prep
    cache = open_data(recipe)
    if cache is not None:
        return cache
    path = Path(recipe.data.cache)
    if _is_rank_zero():
        p = recipe.data.prepare
        print(f"audiostem: building the feature cache {path} from source {p.source!r} "
              f"(root {p.root})", file=sys.stderr)
        return data_prep.prepare(p.source, p.root, path, recipe.data.features, workers=p.workers, **p.options)
    deadline = time.time() + wait_seconds
    while not data_prep.cache_exists(path):
        if time.time() > deadline:
            raise RecipeError(f"data.cache: rank {_global_rank()} waited {wait_seconds:.0f} s "
                              f"for rank 0 to build {path}")
        time.sleep(2)
    return open_data(recipe)


# --- the run folder -----------------------------------------------------------------------------
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


def prepare_run_folder(recipe: Recipe, restart: bool = False) -> Path:
    """Create ``out_dir`` and write ``recipe.yaml``; refuse a folder that holds a run of another
    recipe (resuming must not mix two experiments), or wipe it with ``restart``."""
    out = Path(recipe.out_dir)
    stored = out / "recipe.yaml"
    if restart and out.exists() and _is_rank_zero():
        for name in ("checkpoints", "logs", "metrics.json", "history.csv", "recipe.yaml"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        for fold_dir in out.glob("fold_*"):
            shutil.rmtree(fold_dir)
    if stored.exists():
        diff = recipe_changes(load_yaml(stored.read_text(encoding="utf-8"), str(stored)) or {},
                              recipe.to_dict())
        if diff:
            raise RecipeError(f"out_dir: {out} holds a run of a different recipe ({'; '.join(diff[:5])}); "
                              "choose another out_dir, or pass --restart to discard that run")
    if _is_rank_zero():
        out.mkdir(parents=True, exist_ok=True)
        stored.write_text(dump_recipe(recipe))
    return out


def best_epoch(rows: list[dict], metric: str) -> int:
    """The epoch whose ``metric`` was best (the first of ties; the last epoch without validation)."""
    scored = [(r["epoch"], r[metric]) for r in rows if r.get(metric) not in ("", None)]
    if not scored:
        return rows[-1]["epoch"] if rows else 0
    pick = min if metric == "val_loss" else max
    value = pick(v for _, v in scored)
    return next(e for e, v in scored if v == value)


def csv_logger(run_dir: Path):
    """Lightning's CSVLogger writing ``run_dir/logs/metrics.csv``, which keeps the rows of an
    interrupted run when it resumes (the stock logger deletes an existing file)."""
    from lightning.pytorch.loggers import CSVLogger
    logger = CSVLogger(run_dir, name="logs", version="")
    path = run_dir / "logs" / "metrics.csv"
    if path.exists() and _is_rank_zero():
        kept = path.with_name("metrics.csv.resume")
        os.replace(path, kept)
        writer = logger.experiment                      # created now: finds no file to delete
        os.replace(kept, path)
        with open(path, newline="") as fh:
            writer.metrics_keys = list(csv.DictReader(fh).fieldnames or [])
    return logger


# --- the cache's build ----------------------------------------------------------------------------
def cache_build_check(cache):
    """A Lightning callback that checks, before every phase that reads features (each training,
    validation, test and predict epoch), that ``cache`` on disk is still the build this run
    opened (:meth:`data_prep.FeatureCache.check_build`): a cache rebuilt under a running training
    stops it with a :class:`~data_prep.CacheError` instead of mixing two builds. Shards opened
    later by DataLoader workers are checked by the cache itself."""
    from lightning.pytorch.callbacks import Callback

    class CacheBuildCheck(Callback):
        def _check(self, *_):
            cache.check_build()

        on_train_epoch_start = on_validation_epoch_start = on_test_epoch_start = _check
        on_predict_epoch_start = _check

    return CacheBuildCheck()


def check_resume(path: str, cache, run_dir: Path, own: bool, task=None) -> None:
    """Verify the checkpoint a run resumes from (:func:`~audiostem.checkpoint.load_checkpoint`),
    that it holds this model's weights (``task``'s parameter names and shapes), and that it was
    trained on the cache's current build; :class:`CheckpointError` or
    :class:`~data_prep.CacheError` saying how to go on otherwise (``own``: the run's own
    ``last.ckpt``, which ``--restart`` discards)."""
    how = (f"pass --restart to train this run again from the start (or delete {path})" if own
           else "resume from another checkpoint, or leave out --resume")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}. Cannot resume from it: {how}") from None
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or "audiostem" not in ckpt:
        raise CheckpointError(f"{path}: not an audiostem training checkpoint (no state_dict or audiostem "
                              f"entry). Cannot resume from it: {how}")
    if task is not None:
        mine = {k: tuple(v.shape) for k, v in task.state_dict().items()}
        theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
        bad = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
        if bad:
            k = bad[0]
            raise CheckpointError(f"{path}: holds another model's weights ({k}: {theirs.get(k, 'missing')} "
                                  f"in the checkpoint, {mine.get(k, 'missing')} in this recipe's model). "
                                  f"Cannot resume from it: {how}")
    built = (ckpt.get("audiostem") or {}).get("cache_build_id")
    if built is not None and built != cache.build_id:
        raise CacheError(f"{cache.path}: rebuilt since {path} was written (the run trained on build "
                         f"{built[:12]}, the cache is now build {cache.build_id[:12]}); resuming would "
                         f"mix two builds' features: pass --restart to train {run_dir} again on it")


# --- one run ------------------------------------------------------------------------------------
def fit_run(recipe: Recipe, cache, split: dict, run_dir: Path, callbacks: Sequence = (),
            resume_from: Optional[str] = None) -> dict:
    """Train and evaluate one run (one fold) in ``run_dir``; returns its ``metrics.json`` dict
    (on rank 0; other ranks get ``{}``). A finished run folder is read, not trained again."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from .data import CacheDataModule
    from .report import prediction_rows, public, write_json, write_predictions, write_split_reports
    from .models import describe_model
    from .task import ClassifierTask, History
    if (run_dir / "metrics.json").exists():
        return json.loads((run_dir / "metrics.json").read_text())
    cache.check_build()
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    dm = CacheDataModule(cache, recipe, split)
    fold = split["fold"]
    info = {"features": cache.config.to_dict(), "feature_shape": list(cache.meta["feature_shape"]),
            "stats": {k: v.tolist() for k, v in dm.stats.items()}, "normalize": recipe.data.normalize,
            "crop_frames": dm.crop, "eval_hop": dm.eval_hop, "fold": fold, "cache": str(cache.path),
            "cache_build_id": cache.build_id}
    task = ClassifierTask(recipe.to_dict(), cache.classes, dm.in_channels, dm.bins, info)
    swap = getattr(task.model, "audiostem_stem", None)       # a timm / torchvision body: say what changed
    if swap is not None and _is_rank_zero():
        from .bodies import swap_line
        print(swap_line(swap), file=sys.stderr)
    has_val, has_test = bool(split["val"]), bool(split["test"])
    es = recipe.train.early_stopping
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=es.metric if has_val else None,
                                 mode="min" if es.metric == "val_loss" else "max", save_last=True, save_top_k=1,
                                 save_on_train_epoch_end=True, enable_version_counter=False,
                                 auto_insert_metric_name=False)
    history = History(run_dir / "history.csv")
    cbs = [history, checkpoint, cache_build_check(cache), *callbacks]
    if es.enabled and has_val:
        cbs.append(EarlyStopping(monitor=es.metric, mode=checkpoint.mode, patience=es.patience))
    last = ckpt_dir / "last.ckpt"
    ckpt_path = resume_from or (str(last) if last.exists() else None)
    if ckpt_path:
        check_resume(ckpt_path, cache, run_dir, own=resume_from is None, task=task)
    if ckpt_path is None and _is_rank_zero():
        for stale in (ckpt_dir, run_dir / "logs"):     # leftovers of a run that never finished an epoch
            shutil.rmtree(stale, ignore_errors=True)
    loggers = [csv_logger(run_dir), TensorBoardLogger(run_dir, name="logs", version="")]
    steps = max(1, len(split["train"]) // recipe.data.batch_size)
    trainer_args = {"log_every_n_steps": min(50, steps), **recipe.trainer}
    # every checkpoint Lightning reads (the resume) is verified and loaded weights_only
    trainer_args["plugins"] = [*_as_list(trainer_args.get("plugins")), verified_checkpoint_io()]
    if not has_val:
        trainer_args["limit_val_batches"] = 0
    trainer = pl.Trainer(max_epochs=recipe.train.max_epochs, logger=loggers, callbacks=cbs,
                         default_root_dir=run_dir, num_sanity_val_steps=0, use_distributed_sampler=False,
                         **trainer_args)
    if ckpt_path:
        print(f"audiostem: resuming {run_dir} from {ckpt_path}", file=sys.stderr)
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)

    best = checkpoint.best_model_path or str(last)
    state = load_checkpoint(best, map_location=task.device)
    task.load_state_dict(state["state_dict"])
    results = {}
    for stage, present in (("val", has_val), ("test", has_test)):
        if present:
            (trainer.validate if stage == "val" else trainer.test)(task, datamodule=dm, verbose=False)
            results[stage] = task.results[stage]
    if not trainer.is_global_zero:
        return {}

    for stage, r in results.items():
        items = [cache.items[i] for i in split[stage]]
        rows = prediction_rows(items, torch.log_softmax(r["logits"], 1), r["target"], cache.classes, fold)
        write_predictions(run_dir / f"predictions_{stage}.csv", rows, cache.classes)
    title = f"{Path(recipe.out_dir).name}" + (f" fold {fold}" if fold is not None else "")
    main = results.get("test", results.get("val"))
    write_split_reports(run_dir, main["metrics"] if main else None, cache.classes,
                        f"{title}: {'test' if has_test else 'val'}")
    described = describe_model(task.model, task.input_shape)
    metrics = {
        "test": public(results["test"]["metrics"]) if has_test else None,
        "val": public(results["val"]["metrics"]) if has_val else None,
        "best_epoch": best_epoch(history.rows, f"{es.metric}" if has_val else "val_accuracy"),
        "epochs_run": len(history.rows),
        "train_seconds": round(history.fit_seconds, 3),
        "train_samples_per_second": round(history.samples / max(history.train_seconds, 1e-9), 2),
        "params": sum(p.numel() for p in task.model.parameters()),
        "stem": json.loads(json.dumps(described["stem"])),
        "total_flops": described["flops"],
        "receptive_field": list(described["receptive_field"] or []) or None,
        "output_stride": list(described["stride"]),
        "classes": cache.classes, "seed": recipe.seed, "fold": fold,
        "input_shape": list(task.input_shape), "cache": str(cache.path),
        "checkpoint": str(best), "device": _device_name(trainer), "cache_build_id": cache.build_id,
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _device_name(trainer) -> str:
    """What trained the model, for comparing throughput: ``cpu (2 threads)``, ``cuda: NVIDIA H200``."""
    import torch
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"


# --- cross-validation ---------------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return (sum((v - m) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5


def pool_folds(out: Path, fold_dirs: list[Path], fold_metrics: list[dict], classes: list[str]) -> dict:
    """Write the top-level files of a cross-validation run and return its metrics: accuracy,
    balanced accuracy and macro-F1 as the mean over folds (with ``*_std``), per-class figures and
    the confusion matrix from the pooled predictions (every item once)."""
    import torch

    from .report import classification_metrics, public, read_predictions, write_predictions, write_split_reports
    from .task import HISTORY_FIELDS, write_history
    summary: dict[str, Any] = {}
    for stage in ("test", "val"):
        if fold_metrics[0].get(stage) is None:
            summary[stage] = None
            continue
        rows, log_probs, target = [], [], []
        for d in fold_dirs:
            r, lp, t = read_predictions(d / f"predictions_{stage}.csv", classes)
            rows += r
            log_probs.append(lp)
            target.append(t)
        pooled = classification_metrics(torch.cat(log_probs), torch.cat(target), classes)
        write_predictions(out / f"predictions_{stage}.csv", rows, classes)
        s = public(pooled)
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            values = [m[stage][key] for m in fold_metrics]
            s[f"pooled_{key}"] = s[key]
            s[key], s[f"{key}_std"] = _mean(values), _std(values)
        summary[stage] = s
    # history: the mean over folds of each epoch's numbers
    histories = []
    for d in fold_dirs:
        with open(d / "history.csv", newline="") as fh:
            histories.append(list(csv.DictReader(fh)))
    rows = []
    for e in range(max(len(h) for h in histories)):
        row: dict[str, Any] = {"epoch": e + 1}
        for key in HISTORY_FIELDS[1:]:
            vals = [float(h[e][key]) for h in histories if e < len(h) and h[e][key] != ""]
            row[key] = round(_mean(vals), 6) if vals else ""
        rows.append(row)
    write_history(out / "history.csv", rows)
    # one model to look at: the first fold's checkpoints
    (out / "checkpoints").mkdir(exist_ok=True)
    for name in ("best.ckpt", "last.ckpt"):
        src = fold_dirs[0] / "checkpoints" / name
        if src.exists():
            shutil.copyfile(src, out / "checkpoints" / name)
    title = f"{out.name}: test, {len(fold_dirs)} folds pooled"
    write_split_reports(out, summary["test"] or summary["val"], classes, title)
    first = fold_metrics[0]
    return {
        **summary,
        "folds": [{**m["test"], "fold": m["fold"], "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
                   "val": m["val"]} if m["test"] else {"fold": m["fold"], "val": m["val"]} for m in fold_metrics],
        "best_epoch": _mean([m["best_epoch"] for m in fold_metrics]),
        "epochs_run": _mean([m["epochs_run"] for m in fold_metrics]),
        "train_seconds": round(sum(m["train_seconds"] for m in fold_metrics), 3),
        "train_samples_per_second": round(_mean([m["train_samples_per_second"] for m in fold_metrics]), 2),
        **{k: first.get(k) for k in ("params", "stem", "total_flops", "classes", "seed", "input_shape", "cache",
                                     "device", "cache_build_id")},
        "checkpoint": str(out / "checkpoints" / "best.ckpt"),
    }


# --- the whole run ------------------------------------------------------------------------------
def train(recipe: Recipe, callbacks: Sequence = (), restart: bool = False,
          resume_from: Optional[str] = None, cache=None) -> dict:
    """Train (or resume, or read back) the run of ``recipe``; returns its ``metrics.json`` dict
    (``{}`` on ranks other than 0). ``callbacks`` are extra Lightning callbacks for every run;
    ``cache`` is the recipe's cache when the caller opened it already (:func:`ensure_cache`
    opens or builds it otherwise).

    One process trains a run folder at a time: rank 0 holds ``OUT_DIR/run.lock`` throughout,
    and a second ``train`` of the same ``out_dir`` is refused (:class:`RecipeError` naming the
    holder's pid, host and start time) instead of writing the same checkpoints."""
    from data_prep.cache_files import CacheBusyError, CacheLock

    lock = None
    if _is_rank_zero():
        out = Path(recipe.out_dir)
        lock = CacheLock(out, out / "run.lock", busy="being trained by {holder} (lock {lock}); one run "
                         "per out_dir at a time: wait for it, or stop it and run again (it resumes)")
        try:
            lock.acquire()
        except CacheBusyError as e:
            raise RecipeError(f"out_dir: {e}") from None
    try:
        return _train(recipe, callbacks, restart, resume_from, cache)
    finally:
        if lock is not None:
            lock.release()


def _train(recipe: Recipe, callbacks: Sequence, restart: bool, resume_from: Optional[str], cache=None) -> dict:
    from .data import resolve_splits
    from .report import write_json
    quiet_lightning()
    if cache is None:
        cache = ensure_cache(recipe)
    out = prepare_run_folder(recipe, restart)
    if (out / "metrics.json").exists():
        print(f"audiostem: {out} is already finished (metrics.json); pass --restart to train it again",
              file=sys.stderr)
        return json.loads((out / "metrics.json").read_text())
    splits = resolve_splits(cache, recipe)
    if recipe.data.folds is None:
        return fit_run(recipe, cache, splits[0], out, callbacks, resume_from)
    fold_dirs, fold_metrics = [], []
    for split in splits:
        d = out / f"fold_{split['fold']}"
        if _is_rank_zero():
            d.mkdir(parents=True, exist_ok=True)
            (d / "recipe.yaml").write_text(dump_recipe(recipe))
        fold_dirs.append(d)
        fold_metrics.append(fit_run(recipe, cache, split, d, callbacks))
    if not _is_rank_zero():
        return {}
    metrics = pool_folds(out, fold_dirs, fold_metrics, cache.classes)
    write_json(out / "metrics.json", metrics)
    return metrics


def summary_lines(metrics: dict, out: Path) -> list[str]:
    """What the CLI prints at the end of a run."""
    lines = []
    for stage in ("test", "val"):
        m = metrics.get(stage)
        if m:
            extra = f" ± {m['accuracy_std']:.3f} over {len(metrics['folds'])} folds" if "accuracy_std" in m else ""
            lines.append(f"{stage} accuracy {m['accuracy']:.3f}{extra}  macro-F1 {m['macro_f1']:.3f}  "
                         f"balanced accuracy {m['balanced_accuracy']:.3f}  ({m['n_items']} clips)")
            break
    lines.append(f"run folder: {out}")
    if (out / "confusion_matrix.png").exists():
        lines.append(f"confusion matrix: {out / 'confusion_matrix.png'}")
    return lines


def quiet_lightning() -> None:
    """Drop Lightning's advertising tip and a deprecation warning from its own internals."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # expected when a run resumes in its own folder (and the CSV logger keeps its rows, see csv_logger)
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(type(f).__name__ == "_NoTips" for f in log.filters):
        log.addFilter(_NoTips())


def one_message(error: Exception) -> str:
    """An error's own message, without the traceback text that a DataLoader worker's exception
    carries when it is raised again in the main process."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audiostem.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m audiostem.train recipes/folk.yaml\n"
               "  python -m audiostem.train recipes/gtzan.yaml model.stem=resnet7 train.max_epochs=5 seed=3\n"
               "  python -m audiostem.train folk --print\n\nEvery key: docs/training.md")
    parser.add_argument("recipe", help="a recipe YAML file, or the name of one in recipes/ (e.g. folk)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, values as YAML (model.stem_args.width=8, data.folds=[1])")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the resolved recipe and check it (and its cache) without training")
    parser.add_argument("--restart", action="store_true", help="discard an earlier run in out_dir and start over")
    parser.add_argument("--resume", metavar="CKPT", help="resume from this checkpoint (default: "
                        "OUT_DIR/checkpoints/last.ckpt when it exists)")
    args = parser.parse_intermixed_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        cache = open_data(recipe)
        if args.print_only:
            print(dump_recipe(recipe), end="")
            if cache is None:
                print(f"# the cache {recipe.data.cache} will be built from source {recipe.data.prepare.source!r}")
            else:
                print(f"# cache {recipe.data.cache}: {len(cache)} items, classes {cache.classes}, "
                      f"splits {cache.meta.get('splits')}, features {cache.config.kind}")
            return 0
        metrics = train(recipe, restart=args.restart, resume_from=args.resume, cache=cache)
    except (RecipeError, CacheError, CheckpointError) as e:
        print(f"error: {one_message(e)}", file=sys.stderr)
        return 2
    if metrics and _is_rank_zero():
        print("\n".join(summary_lines(metrics, Path(recipe.out_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
