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
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from data_prep import CacheError
from data_prep.discover import shown
from data_prep.fileio import stray_temporaries

from . import run_folder
from .checkpoint import PAYLOAD_KEY, CheckpointError, CheckpointPayload, load_checkpoint, verified_checkpoint_io
from .recipe import Recipe, RecipeError, dump_recipe, load_recipe, open_data

# Lightning is imported by the functions that train, so that checking a recipe (--print, or an
# error in it) answers in the time it takes to import torch.

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
        print(f"audiostem: building the feature cache {shown(path)} from source {p.source!r} "
              f"(root {shown(p.root)})", file=sys.stderr)
        return data_prep.prepare(p.source, p.root, path, recipe.data.features, workers=p.workers, **p.options)
    deadline = time.time() + wait_seconds
    while not data_prep.cache_exists(path):
        if time.time() > deadline:
            raise RecipeError(f"data.cache: rank {_global_rank()} waited {wait_seconds:.0f} s "
                              f"for rank 0 to build {shown(path)}")
        time.sleep(2)
    return open_data(recipe)


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


def check_resume(path: str, cache, run_dir: Path, own: bool, task=None, recipe: Optional[Recipe] = None) -> None:
    """Verify the checkpoint a run resumes from (:func:`~audiostem.checkpoint.load_checkpoint`),
    that it was written by a run of ``recipe`` (every field but the runtime ones,
    :func:`~audiostem.run_folder.recipe_changes`), that it holds this model's weights (``task``'s
    parameter names and shapes), and that it was
    trained on the cache's current build; :class:`CheckpointError` or
    :class:`~data_prep.CacheError` saying how to go on otherwise (``own``: the run's own
    ``last.ckpt``, which ``--restart`` discards)."""
    how = (f"pass --restart to train this run again from the start (or delete {shown(path)})" if own
           else "resume from another checkpoint, or leave out --resume")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}. Cannot resume from it: {how}") from None
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or PAYLOAD_KEY not in ckpt:
        raise CheckpointError(f"{shown(path)}: not an audiostem training checkpoint (no state_dict or audiostem "
                              f"entry). Cannot resume from it: {how}")
    try:
        payload = CheckpointPayload.from_checkpoint(ckpt, path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}. Cannot resume from it: {how}") from None
    if task is not None:
        mine = {k: tuple(v.shape) for k, v in task.state_dict().items()}
        theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
        bad = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
        if bad:
            k = bad[0]
            raise CheckpointError(f"{shown(path)}: holds another model's weights ({k}: {theirs.get(k, 'missing')} "
                                  f"in the checkpoint, {mine.get(k, 'missing')} in this recipe's model). "
                                  f"Cannot resume from it: {how}")
    changes = [] if recipe is None else run_folder.recipe_changes(payload.recipe, recipe.to_dict())
    if changes:            # its optimiser, schedule and epoch belong to that run: resuming mixes two runs
        raise CheckpointError(f"{shown(path)}: written by a run of another recipe ({'; '.join(changes[:5])}). "
                              f"Cannot resume from it: {how}")
    built = payload.cache_build_id
    if built is not None and built != cache.build_id:
        raise CacheError(f"{shown(cache.path)}: rebuilt since {shown(path)} was written (the run trained on build "
                         f"{built[:12]}, the cache is now build {cache.build_id[:12]}); resuming would "
                         f"mix two builds' features: pass --restart to train {shown(run_dir)} again on it")


# --- one run ------------------------------------------------------------------------------------
def fit_run(recipe: Recipe, cache, split: dict, run_dir: Path, callbacks: Sequence = (),
            resume_from: Optional[str] = None) -> dict:
    """Train and evaluate one run (one fold) in ``run_dir``; returns its ``metrics.json`` dict
    (on rank 0; other ranks get ``{}``). A finished run folder is read, not trained again."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from .data import CacheDataModule
    from .metrics import public
    from .models import describe_model
    from .task import ClassifierTask, History, StayStopped
    if run_folder.is_finished(run_dir):
        return run_folder.read_metrics(run_dir)
    cache.check_build()
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    dm = CacheDataModule(cache, recipe, split)
    fold = split["fold"]
    payload = CheckpointPayload(
        recipe=recipe.to_dict(), classes=list(cache.classes), input_shape=[dm.in_channels, dm.bins, dm.crop],
        features=cache.config.to_dict(), feature_shape=list(cache.meta["feature_shape"]),
        stats={k: v.tolist() for k, v in dm.stats.items()}, normalize=recipe.data.normalize,
        crop_frames=dm.crop, eval_hop=dm.eval_hop, fold=fold, cache=str(cache.path), cache_build_id=cache.build_id)
    task = ClassifierTask(payload)
    swap = getattr(task.model, "audiostem_stem", None)       # a timm / torchvision body: say what changed
    if swap is not None and _is_rank_zero():
        from .bodies import swap_line
        print(swap_line(swap), file=sys.stderr)
    has_val, has_test = bool(split["val"]), bool(split["test"])
    es = recipe.train.early_stopping
    # best.ckpt: the epoch validation chose; last.ckpt: the last finished epoch, what a resume
    # starts from. Two callbacks, because Lightning (since 2.6) writes save_last only in an epoch
    # whose monitored checkpoint improved. The last one saves after the best one in each epoch,
    # so last.ckpt carries the best checkpoint's updated state.
    ckpt_args = dict(dirpath=run_folder.checkpoint_dir(run_dir), save_top_k=1, save_on_train_epoch_end=True,
                     enable_version_counter=False, auto_insert_metric_name=False)
    checkpoint = ModelCheckpoint(filename=run_folder.BEST_STEM, monitor=es.metric if has_val else None,
                                 mode="min" if es.metric == "val_loss" else "max", save_last=not has_val,
                                 **ckpt_args)
    savers = [checkpoint] + ([ModelCheckpoint(filename=run_folder.LAST_STEM, **ckpt_args)] if has_val else [])
    history = History(run_dir)
    cbs = [history, *savers, cache_build_check(cache), *callbacks]
    if es.enabled and has_val:
        cbs.append(StayStopped(monitor=es.metric, mode=checkpoint.mode, patience=es.patience))
    last = run_folder.last_checkpoint(run_dir)
    ckpt_path = resume_from or (str(last) if last.exists() else None)
    if ckpt_path:
        check_resume(ckpt_path, cache, run_dir, own=resume_from is None, task=task, recipe=recipe)
    if _is_rank_zero():
        if ckpt_path is None:
            run_folder.discard_unfinished_epoch(run_dir)
        for stray in stray_temporaries(run_folder.checkpoint_dir(run_dir), "*.ckpt"):    # a killed save's
            stray.unlink(missing_ok=True)
    loggers = run_folder.loggers(run_dir, rank_zero=_is_rank_zero())
    steps = max(1, len(split["train"]) // recipe.data.batch_size)
    trainer_args = {"log_every_n_steps": min(50, steps), **recipe.trainer}
    # every checkpoint Lightning reads (the resume) is verified and loaded weights_only
    trainer_args["plugins"] = [*_as_list(trainer_args.get("plugins")), verified_checkpoint_io()]
    if not has_val:
        trainer_args["limit_val_batches"] = 0
    try:
        trainer = pl.Trainer(max_epochs=recipe.train.max_epochs, logger=loggers, callbacks=cbs,
                             default_root_dir=run_dir, num_sanity_val_steps=0, use_distributed_sampler=False,
                             **trainer_args)
    except (ValueError, TypeError, MisconfigurationException) as e:    # the recipe's trainer values
        raise RecipeError(f"trainer: {' '.join(str(e).split())}") from None
    if ckpt_path:
        print(f"audiostem: resuming {shown(run_dir)} from {shown(ckpt_path)}", file=sys.stderr)
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)

    results = {}
    if has_val and has_test:      # the last epoch's model, beside the one validation chose (issue 16)
        trainer.test(task, datamodule=dm, verbose=False)
        results["test_last"] = task.results["test"]
    best = checkpoint.best_model_path or str(last)
    state = load_checkpoint(best, map_location=task.device)
    task.load_state_dict(state["state_dict"])
    for stage, present in (("val", has_val), ("test", has_test)):
        if present:
            (trainer.validate if stage == "val" else trainer.test)(task, datamodule=dm, verbose=False)
            results[stage] = task.results[stage]
    if not trainer.is_global_zero:
        return {}

    for stage, r in results.items():
        items = [cache.items[i] for i in split["test" if stage == "test_last" else stage]]
        rows = run_folder.prediction_rows(items, torch.log_softmax(r["logits"], 1), r["target"], cache.classes, fold)
        run_folder.write_predictions(run_dir, stage, rows, cache.classes)
    title = f"{Path(recipe.out_dir).name}" + (f" fold {fold}" if fold is not None else "")
    main = results.get("test", results.get("val"))
    run_folder.write_reports(run_dir, main["metrics"] if main else None, cache.classes,
                             f"{title}: {'test' if has_test else 'val'}")
    described = describe_model(task.model, task.input_shape)
    metrics = {
        "test": public(results["test"]["metrics"]) if has_test else None,
        "val": public(results["val"]["metrics"]) if has_val else None,
        **({"test_last": public(results["test_last"]["metrics"])} if "test_last" in results else {}),
        "best_epoch": run_folder.best_epoch(history.rows, f"{es.metric}" if has_val else "val_accuracy"),
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
    run_folder.write_metrics(run_dir, metrics)
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
    from data_prep.cache_files import CacheBusyError

    lock = None
    if _is_rank_zero():
        lock = run_folder.run_lock(recipe.out_dir)
        try:
            lock.acquire()
        except CacheBusyError as e:
            raise RecipeError(f"out_dir: {e}") from None
        except OSError as e:          # a file where the folder should be, no permission, a full disk
            raise RecipeError(f"out_dir: cannot create the run folder {shown(recipe.out_dir)} ({e.strerror}); "
                              "give a folder that can be created and written") from None
    try:
        return _train(recipe, callbacks, restart, resume_from, cache)
    finally:
        if lock is not None:
            lock.release()


def _train(recipe: Recipe, callbacks: Sequence, restart: bool, resume_from: Optional[str], cache=None) -> dict:
    from .data import resolve_splits
    quiet_lightning()
    if cache is None:
        cache = ensure_cache(recipe)
    if restart and resume_from:       # a damaged --resume file must not cost the run --restart discards
        load_checkpoint(resume_from)
    out = run_folder.prepare(recipe, restart, write=_is_rank_zero())
    if run_folder.is_finished(out):
        metrics = run_folder.read_metrics(out)    # RunFolderError (one line) when it is damaged
        print(f"audiostem: {shown(out)} is already finished (metrics.json); pass --restart to train it again",
              file=sys.stderr)
        return metrics
    splits = resolve_splits(cache, recipe)
    if recipe.data.folds is None:
        return fit_run(recipe, cache, splits[0], out, callbacks, resume_from)
    fold_dirs, fold_metrics = [], []
    for split in splits:
        d = run_folder.fold_dir(out, split["fold"])
        if _is_rank_zero():
            d.mkdir(parents=True, exist_ok=True)
            run_folder.write_recipe(d, dump_recipe(recipe))
        fold_dirs.append(d)
        fold_metrics.append(fit_run(recipe, cache, split, d, callbacks))
    if not _is_rank_zero():
        return {}
    metrics = run_folder.pool_fold_runs(out, fold_dirs, fold_metrics, cache.classes)
    run_folder.write_metrics(out, metrics)
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
    lines.append(f"run folder: {shown(out)}")
    figure = run_folder.confusion_figure(out)
    if figure is not None:
        lines.append(f"confusion matrix: {shown(figure)}")
    return lines


def quiet_lightning() -> None:
    """Drop Lightning's advertising tip and a deprecation warning from its own internals."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # expected when a run resumes in its own folder (and the CSV logger keeps its rows, run_folder.loggers)
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


def disk_error(error: OSError, out_dir: str) -> str:
    """One line for an ``OSError`` met while training ``out_dir``: the file, the system's reason,
    and what a second run of the same command resumes from (the ``last.ckpt`` of the run or of its
    folds, which are written whole or not at all), or that no epoch had finished."""
    import errno
    what = error.filename or out_dir
    why = error.strerror or one_message(error)
    fix = "free space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
    run = Path(out_dir)
    kept = [run_folder.last_checkpoint(d) for d in (run, *sorted(run.glob("fold_*")))
            if run_folder.last_checkpoint(d).is_file()]
    resume = (f"{', '.join(shown(k) for k in kept)} keep{'s' * (len(kept) == 1)} the last finished epoch"
              if kept else "no epoch had finished")
    return f"{shown(what)}: {why}; {resume}: {fix} and run the same command again"


DISK_ERRORS = ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "ESTALE")


def read_values(path: Optional[str]) -> Optional[dict]:
    """``--values FILE``: a mapping of dotted recipe keys to values (JSON or YAML; ``-``: stdin)."""
    if path is None:
        return None
    from .yamlio import load_yaml, yaml_error
    import yaml
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)         # JSON first: it carries every float (NaN too) exactly
        except (json.JSONDecodeError, RecursionError):
            data = load_yaml(text, "--values")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = yaml_error(e) if isinstance(e, yaml.YAMLError) else getattr(e, "strerror", None) or str(e)
        raise RecipeError(f"--values {shown(path)}: cannot read a mapping of dotted keys ({why})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise RecipeError(f"--values {shown(path)}: expected a mapping of dotted keys to values, e.g. "
                          '{"model.stem_args.width": 8}')
    return data


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
    parser.add_argument("--values", metavar="FILE", help="a JSON or YAML mapping of dotted keys to values "
                        "({\"model.stem_args.width\": 8}), set before the key=value overrides; - reads it from stdin "
                        "(how the study runner hands a cell its values)")
    parser.add_argument("--restart", action="store_true", help="discard an earlier run in out_dir and start over")
    parser.add_argument("--resume", metavar="CKPT", help="resume from this checkpoint (default: "
                        "OUT_DIR/checkpoints/last.ckpt when it exists)")
    args = parser.parse_intermixed_args(argv)
    recipe = None
    try:
        recipe = load_recipe(args.recipe, args.overrides, read_values(args.values))
        cache = open_data(recipe)
        if args.print_only:
            print(dump_recipe(recipe), end="")
            if cache is None:
                print(f"# the cache {shown(recipe.data.cache)} will be built from source {recipe.data.prepare.source!r}")
            else:
                print(f"# cache {shown(recipe.data.cache)}: {len(cache)} items, classes {cache.classes}, "
                      f"splits {cache.meta.get('splits')}, features {cache.config.kind}")
            return 0
        metrics = train(recipe, restart=args.restart, resume_from=args.resume, cache=cache)
    except (RecipeError, CacheError, CheckpointError, run_folder.RunFolderError) as e:
        print(f"error: {one_message(e)}", file=sys.stderr)
        return 2
    except OSError as e:          # a full, read-only or vanished disk under the run folder
        import errno
        if recipe is None or not (e.filename or errno.errorcode.get(e.errno) in DISK_ERRORS):
            raise
        print(f"error: {disk_error(e, recipe.out_dir)}", file=sys.stderr)
        return 2
    except SystemExit as e:       # Lightning's SIGTERMException: a SystemExit of status 0
        if type(e).__name__ != "SIGTERMException":
            raise
        print(f"error: stopped by SIGTERM before the run finished; {shown(recipe.out_dir)} keeps the last finished "
              "epoch (checkpoints/last.ckpt): run the same command again to resume", file=sys.stderr)
        return 143
    if metrics and _is_rank_zero():
        print("\n".join(summary_lines(metrics, Path(recipe.out_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
