"""Re-evaluate a trained model on a split of its feature cache.

    python -m audiostem.evaluate RUN_OR_CHECKPOINT [--split test] [--cache PATH] [--json] [--out DIR]

RUN_OR_CHECKPOINT is a run folder (its ``checkpoints/best.ckpt``; for a cross-validation run,
every fold's model on its own test fold, pooled) or a checkpoint file. ``--split`` is ``test``,
``val`` or ``train`` as the recipe defined them, or any other split name in the cache (for
example ``real`` in the espeak digits cache). Scores are clip-level: window logits are averaged
per clip, as in training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .inference import CheckpointError, clip_logits, find_checkpoint, load_classifier, stats_of

ROLES = {"test": "test", "val": "val", "valid": "val", "train": "train"}


def evaluate_checkpoint(checkpoint: Union[str, Path], split: str = "test", cache_path: Optional[str] = None,
                        batch_size: int = 64, device: str = "cpu") -> dict:
    """Score one checkpoint on ``split`` of its cache. Returns ``{"metrics", "items",
    "log_probs", "target", "classes", "fold"}``.

    The model's own cache (``cache_path`` not given) must still be the build it was trained on
    (the checkpoint records the build id); a rebuilt one is refused with
    :class:`~audiostem.inference.CheckpointError`. A cache rebuilt while it is being scored
    raises :class:`data_prep.CacheError`."""
    import data_prep
    from torch.utils.data import DataLoader

    from .data import Windows, resolve_splits
    from .recipe import validate_recipe
    from .report import classification_metrics

    model, info = load_classifier(checkpoint, device)
    cache = data_prep.open_cache(cache_path or info["cache"])
    built = info.get("cache_build_id")
    if cache_path is None and built is not None and built != cache.build_id:
        raise CheckpointError(f"{cache.path}: rebuilt since {checkpoint} was trained on it (model: build "
                              f"{built[:12]}, cache now: build {cache.build_id[:12]}); its items and "
                              "features may differ from the model's. Retrain, or pass --cache "
                              f"{cache.path} to score the model on the new build anyway")
    problem = cache.mismatch(info["features"], "model")
    if problem:
        raise CheckpointError(problem)
    if cache.classes != info["classes"]:
        raise CheckpointError(f"{cache.path}: classes {cache.classes} differ from the model's {info['classes']}")
    if split in ROLES:
        recipe = validate_recipe({**info["recipe"], "data": {**info["recipe"]["data"], "cache": str(cache.path)}})
        runs = {r["fold"]: r for r in resolve_splits(cache, recipe)}
        indices = runs[info["fold"]][ROLES[split]]
    else:
        indices = cache.indices(split=split)
    if not indices:
        raise CheckpointError(f"--split {split}: no items in {cache.path} (its splits: {cache.splits}; "
                              "or test, val, train as the recipe defined them)")
    windows = Windows(cache, indices, info["crop_frames"], info["eval_hop"], stats_of(info))
    loader = DataLoader(windows, batch_size=batch_size)
    logits = clip_logits(model, loader, windows.n_clips, device)
    target = torch.tensor([cache.label_index(i) for i in indices])
    log_probs = torch.log_softmax(logits, 1)
    return {"metrics": classification_metrics(log_probs, target, cache.classes), "log_probs": log_probs,
            "target": target, "items": [cache.items[i] for i in indices], "classes": cache.classes,
            "fold": info["fold"]}


def evaluate(run_or_checkpoint: Union[str, Path], split: str = "test", cache_path: Optional[str] = None,
             batch_size: int = 64, device: str = "cpu") -> dict:
    """Score a run folder (all its folds, pooled) or a checkpoint; same return as
    :func:`evaluate_checkpoint`, with ``folds`` (per-fold metrics) for a cross-validation run."""
    from .report import classification_metrics
    p = Path(run_or_checkpoint)
    fold_dirs = sorted(p.glob("fold_*/checkpoints/best.ckpt")) if p.is_dir() else []
    if not fold_dirs:
        return evaluate_checkpoint(find_checkpoint(p), split, cache_path, batch_size, device)
    parts = [evaluate_checkpoint(c, split, cache_path, batch_size, device) for c in fold_dirs]
    if split not in ROLES:          # a named split is the same items for every fold: average the models
        first = parts[0]
        log_probs = torch.log_softmax(torch.stack([r["log_probs"] for r in parts]).exp().mean(0).log(), 1)
        return {**first, "log_probs": log_probs,
                "metrics": classification_metrics(log_probs, first["target"], first["classes"]),
                "folds": [r["metrics"] for r in parts]}
    log_probs = torch.cat([r["log_probs"] for r in parts])
    target = torch.cat([r["target"] for r in parts])
    pooled = classification_metrics(log_probs, target, parts[0]["classes"])
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--out", metavar="DIR", help="also write predictions_<split>.csv, metrics_<split>.json, "
                                                     "per_class_<split>.txt and confusion_matrix_<split>.png here")
    args = parser.parse_args(argv)
    from data_prep import CacheError

    from .report import per_class_text, plot_confusion, prediction_rows, public, write_json, write_predictions
    try:
        result = evaluate(args.run, args.split, args.cache, args.batch_size, args.device)
    except (CheckpointError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics, classes = public(result["metrics"]), result["classes"]
    if "folds" in result:
        metrics["folds"] = public(result["folds"])
    title = f"{args.run}: {args.split}"
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(per_class_text(metrics, title), end="")
        for f in metrics.get("folds", []):
            print(f"fold {f.get('fold', '?')}: accuracy {f['accuracy']:.3f}  macro-F1 {f['macro_f1']:.3f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        folds = result.get("fold_of_item")
        rows = []
        for n, item in enumerate(result["items"]):
            rows += prediction_rows([item], result["log_probs"][n:n + 1], result["target"][n:n + 1], classes,
                                    folds[n] if folds else result["fold"])
        write_predictions(out / f"predictions_{args.split}.csv", rows, classes)
        (out / f"per_class_{args.split}.txt").write_text(per_class_text(metrics, title))
        plot_confusion(out / f"confusion_matrix_{args.split}.png", metrics["confusion"], classes, title)
        write_json(out / f"metrics_{args.split}.json", metrics)
        print(f"wrote {out}/predictions_{args.split}.csv, metrics_{args.split}.json, "
              f"confusion_matrix_{args.split}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
