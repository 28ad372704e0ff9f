"""Re-evaluate a trained model on a split of its feature cache.

    python -m audiostem.evaluate RUN_OR_CHECKPOINT [--split test] [--cache PATH] [--json] [--out DIR]

RUN_OR_CHECKPOINT is a run folder (its ``checkpoints/best.ckpt``; for a cross-validation run,
every fold's model on its own test fold, pooled) or a checkpoint file. ``--split`` is ``test``,
``val`` or ``train`` as the recipe defined them, or any other split name in the cache (for
example ``real`` in the espeak digits cache; ``test`` is the cache's split of that name when the
recipe had none, ``data.test_split: null``). Scores are clip-level: window logits are averaged
per clip, as in training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from data_prep.discover import shown

from . import run_folder
from .inference import (CheckpointError, clip_logits, device_arg, load_classifier, one_line_warnings, positive_int,
                        warn_if_unfinished)

ROLES = {"test": "test", "val": "val", "valid": "val", "train": "train"}


def evaluate_checkpoint(checkpoint: Union[str, Path], split: str = "test", cache_path: Optional[str] = None,
                        batch_size: int = 64, device: str = "cpu") -> dict:
    """Score one checkpoint on ``split`` of its cache. Returns ``{"metrics", "items",
    "log_probs", "target", "classes", "fold"}``.

    The model's own cache (``cache_path`` not given) must still be the build it was trained on
    (the checkpoint records the build id); a rebuilt one is refused with
    :class:`~audiostem.inference.CheckpointError`, and a missing or damaged one with
    :class:`data_prep.CacheError` that says ``--cache`` reads another copy. A cache rebuilt while it is being scored
    raises :class:`data_prep.CacheError`."""
    import data_prep
    from torch.utils.data import DataLoader

    from .data import Windows, resolve_splits
    from .metrics import classification_metrics
    from .recipe import RecipeError, stored_recipe

    model, payload = load_classifier(checkpoint, device)
    try:
        cache = data_prep.open_cache(cache_path or payload.cache)
    except data_prep.CacheError as e:
        if cache_path is not None:
            raise
        raise data_prep.CacheError(f"{e}; that is the cache the model was trained on: pass --cache PATH to score "
                                   f"it on a copy of that cache, or on another with the same feature config "
                                   f"and classes") from None
    built = payload.cache_build_id
    if cache_path is None and built is not None and built != cache.build_id:
        raise CheckpointError(f"{shown(cache.path)}: rebuilt since {shown(checkpoint)} was trained on it (model: build "
                              f"{built[:12]}, cache now: build {cache.build_id[:12]}); its items and "
                              "features may differ from the model's. Retrain, or pass --cache "
                              f"{shown(cache.path)} to score the model on the new build anyway")
    problem = cache.mismatch(payload.features, "model")
    if problem:
        raise CheckpointError(problem)
    if cache.classes != payload.classes:
        raise CheckpointError(f"{shown(cache.path)}: classes {cache.classes} differ from the model's {payload.classes}")
    if split in ROLES:
        try:           # the recipe training validated, read back (no model is built for it)
            recipe = stored_recipe({**payload.recipe, "data": {**payload.recipe["data"], "cache": str(cache.path)}},
                                   f"{shown(checkpoint)}: its stored recipe")
        except RecipeError as e:
            raise CheckpointError("; ".join(str(e).splitlines())) from None
        runs = {r["fold"]: r for r in resolve_splits(cache, recipe)}
        indices = runs[payload.fold][ROLES[split]]
        role = ROLES[split]
        if not indices and recipe.data.folds is not None:
            raise CheckpointError(f"--split {split}: the model's recipe has no {role} split (data.folds.val: none)")
        if not indices:          # a role the recipe left out (data.test_split: null): the split of that name
            indices = cache.indices(split=split)
            if not indices:
                raise CheckpointError(f"--split {split}: the model's recipe has no {role} split (data.{role}_split: "
                                      f"null) and {shown(cache.path)} no split {split!r} (its splits: {cache.splits})")
    else:
        indices = cache.indices(split=split)
    if not indices:
        raise CheckpointError(f"--split {split}: no items in {shown(cache.path)} (its splits: {cache.splits}; "
                              "or test, val, train as the recipe defined them)")
    windows = Windows(cache, indices, payload.crop_frames, payload.eval_hop, payload.stats_tensors())
    loader = DataLoader(windows, batch_size=batch_size)
    logits = clip_logits(model, loader, windows.n_clips, device)
    target = torch.tensor([cache.label_index(i) for i in indices])
    log_probs = torch.log_softmax(logits, 1)
    return {"metrics": classification_metrics(log_probs, target, cache.classes), "log_probs": log_probs,
            "target": target, "items": [cache.items[i] for i in indices], "classes": cache.classes,
            "fold": payload.fold}


def evaluate(run_or_checkpoint: Union[str, Path], split: str = "test", cache_path: Optional[str] = None,
             batch_size: int = 64, device: str = "cpu") -> dict:
    """Score a run folder (all its folds, pooled) or a checkpoint; same return as
    :func:`evaluate_checkpoint`, with ``folds`` (per-fold metrics) for a cross-validation run.
    A run folder that has not finished (no ``metrics.json``) is scored as it stands, with a
    ``UserWarning`` naming what: its best checkpoint so far, or the folds it has."""
    from .metrics import classification_metrics, pool_folds
    fold_checkpoints = run_folder.fold_checkpoints(run_or_checkpoint)
    warn_if_unfinished(run_or_checkpoint, "scoring", [c.parents[1] for c in fold_checkpoints])
    if not fold_checkpoints:
        return evaluate_checkpoint(run_folder.find_checkpoint(run_or_checkpoint), split, cache_path, batch_size,
                                   device)
    parts = [evaluate_checkpoint(c, split, cache_path, batch_size, device) for c in fold_checkpoints]
    if split not in ROLES:          # a named split is the same items for every fold: average the models
        first = parts[0]
        log_probs = torch.log_softmax(torch.stack([r["log_probs"] for r in parts]).exp().mean(0).log(), 1)
        return {**first, "log_probs": log_probs,
                "metrics": classification_metrics(log_probs, first["target"], first["classes"]),
                "folds": [r["metrics"] for r in parts]}
    log_probs = torch.cat([r["log_probs"] for r in parts])
    target = torch.cat([r["target"] for r in parts])
    pooled = pool_folds([r["log_probs"] for r in parts], [r["target"] for r in parts], parts[0]["classes"])
    return {"metrics": pooled, "log_probs": log_probs, "target": target, "classes": parts[0]["classes"],
            "items": [it for r in parts for it in r["items"]], "fold": None,
            "folds": [{**r["metrics"], "fold": r["fold"]} for r in parts],
            "fold_of_item": [r["fold"] for r in parts for _ in r["items"]]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiostem.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder or a .ckpt file")
    parser.add_argument("--split", default="test", help="test (default), val, train, or a split name of the cache")
    parser.add_argument("--cache", help="read this cache instead of the one the model was trained on "
                                        "(it must have the same feature config and classes)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--out", metavar="DIR", help="also write predictions_<split>.csv, metrics_<split>.json, "
                                                     "per_class_<split>.txt and confusion_matrix_<split>.png here")
    args = parser.parse_args(argv)
    one_line_warnings()
    from data_prep import CacheError

    from .metrics import per_class_text, public
    try:
        result = evaluate(args.run, args.split, args.cache, args.batch_size, args.device)
    except (CheckpointError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics, classes = public(result["metrics"]), result["classes"]
    if "folds" in result:
        metrics["folds"] = public(result["folds"])
    title = f"{shown(args.run)}: {args.split}"
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(per_class_text(metrics, title), end="")
        for f in metrics.get("folds", []):
            print(f"fold {f.get('fold', '?')}: accuracy {f['accuracy']:.3f}  macro-F1 {f['macro_f1']:.3f}")
    if args.out:
        folds = result.get("fold_of_item")
        rows = []
        for n, item in enumerate(result["items"]):
            rows += run_folder.prediction_rows([item], result["log_probs"][n:n + 1], result["target"][n:n + 1],
                                               classes, folds[n] if folds else result["fold"])
        names = run_folder.write_evaluation(args.out, args.split, rows, metrics, classes, title)
        print(f"wrote {shown(Path(args.out))}/{', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
