"""Clip-level scores: window logits averaged per clip, classification metrics, and their
presentation (a per-class table, a confusion-matrix figure).

Which files hold them in a run folder is :mod:`audiostem.run_folder`'s business.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from data_prep.discover import shown

PathLike = Union[str, Path]


def add_windows(sums: torch.Tensor, counts: torch.Tensor, logits: torch.Tensor, clip: torch.Tensor) -> None:
    """Add a batch of window logits ``(batch, classes)`` to the per-clip ``sums``
    ``(clips, classes)`` and window ``counts`` ``(clips,)``, in place; ``clip`` ``(batch,)`` is
    each window's clip index. The mean over a clip's windows is :func:`mean_window_logits`."""
    sums.index_add_(0, clip, logits.float())
    counts.index_add_(0, clip, torch.ones(len(clip), dtype=counts.dtype, device=counts.device))


def mean_window_logits(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Clip logits ``(clips, classes)``: each clip's summed window logits over its window count
    (a clip without windows keeps zeros)."""
    return sums / counts.clamp(min=1).unsqueeze(1)


def macro_f1(labels: Sequence, preds: Sequence, classes: Sequence) -> float:
    """Unweighted mean over ``classes`` of the per-class F1 score ``2 tp / (2 tp + fp + fn)``, in
    float64, from true and predicted labels (any comparable values: names or indices).

    A class with no true and no predicted item has no F1 and is left out of the mean, as
    torchmetrics' ``multiclass_f1_score(average="macro")`` does (a class only predicted, or only
    true, scores 0). NaN when no class is left. The one macro-F1 of the project: the
    ``macro_f1`` of :func:`classification_metrics` (``metrics.json``, ``history.csv``) and of
    the study report.
    """
    import numpy as np
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = np.array([np.sum((preds == c) & (labels == c)) for c in classes], dtype=np.int64)
    both = np.array([np.sum(preds == c) + np.sum(labels == c) for c in classes], dtype=np.int64)
    seen = both > 0
    return float(np.mean(2 * tp[seen] / both[seen])) if seen.any() else math.nan


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Clip-level scores from ``(clips, num_classes)`` logits and ``(clips,)`` label indices.

    Returns plain data: ``accuracy``, ``balanced_accuracy`` (macro recall), ``macro_f1``
    (:func:`macro_f1` of the argmax predictions), ``loss`` (cross-entropy), ``per_class`` ``{class: {precision, recall, f1, support}}``,
    ``confusion`` (rows = true class, columns = predicted), ``n_items``.
    """
    import torch.nn.functional as F
    from torchmetrics.functional.classification import (multiclass_accuracy, multiclass_confusion_matrix,
                                                        multiclass_f1_score, multiclass_precision,
                                                        multiclass_recall)
    n = len(classes)
    preds, target = logits.float(), target.long()
    kw = dict(num_classes=n, validate_args=False)
    per_p = multiclass_precision(preds, target, average="none", **kw)
    per_r = multiclass_recall(preds, target, average="none", **kw)
    per_f = multiclass_f1_score(preds, target, average="none", **kw)
    support = torch.bincount(target, minlength=n)
    return {
        "accuracy": float(multiclass_accuracy(preds, target, average="micro", **kw)),
        "balanced_accuracy": float(multiclass_recall(preds, target, average="macro", **kw)),
        "macro_f1": macro_f1(target.tolist(), preds.argmax(1).tolist() if len(target) else [], range(n)),
        "loss": float(F.cross_entropy(preds, target)) if len(target) else float("nan"),
        "per_class": {c: {"precision": float(per_p[k]), "recall": float(per_r[k]), "f1": float(per_f[k]),
                          "support": int(support[k])} for k, c in enumerate(classes)},
        "confusion": multiclass_confusion_matrix(preds, target, **kw).tolist(),
        "n_items": int(len(target)),
    }


def pool_folds(log_probs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], classes: list[str]) -> dict[str, Any]:
    """:func:`classification_metrics` of the predictions of several cross-validation folds taken
    together (each item once, in the fold it was tested in): ``log_probs`` ``[(clips_k, classes)]``
    and ``targets`` ``[(clips_k,)]`` per fold."""
    return classification_metrics(torch.cat(list(log_probs)), torch.cat(list(targets)), classes)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return (sum((v - m) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5


def cross_validation_metrics(pooled: dict[str, Optional[dict]], fold_metrics: list[dict]) -> dict[str, Any]:
    """The ``metrics.json`` of a cross-validation run (less ``checkpoint``), from the pooled
    scores of each stage (``{"test": public(pool_folds(...)) or None, "val": ..., and "test_last"
    when the folds tested their last epoch too}``) and every
    fold's own ``metrics.json``: ``accuracy``, ``balanced_accuracy`` and ``macro_f1`` become the
    mean over folds (with ``*_std``, the sample standard deviation, and the ``pooled_*`` values);
    per-class figures and the confusion matrix stay pooled; ``folds`` lists each fold's test
    scores with its ``fold``, ``best_epoch``, ``epochs_run`` and ``val``; epochs are means over
    folds, ``train_seconds`` the sum; the model's description comes from the first fold."""
    summary: dict[str, Any] = {}
    for stage in ("test", "val", "test_last"):
        if stage not in pooled:
            continue
        s = pooled[stage]
        if s is not None:
            s = dict(s)
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                values = [m[stage][key] for m in fold_metrics]
                s[f"pooled_{key}"] = s[key]
                s[key], s[f"{key}_std"] = _mean(values), _std(values)
        summary[stage] = s
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
    }


def per_class_text(metrics: dict, title: str = "") -> str:
    """A plain-text table of per-class precision, recall, F1 and support, with the totals; a class
    name with a control character in it is written escaped (:func:`data_prep.discover.shown`)."""
    per = {shown(c): m for c, m in metrics["per_class"].items()}
    width = max([len(c) for c in per] + [17])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for c, m in per.items():
        lines.append(f"{c:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    lines.append("")
    lines.append(f"{'accuracy':<{width}}  {metrics['accuracy']:.3f}   ({metrics['n_items']} items)")
    lines.append(f"{'balanced accuracy':<{width}}  {metrics['balanced_accuracy']:.3f}")
    lines.append(f"{'macro F1':<{width}}  {metrics['macro_f1']:.3f}")
    return "\n".join(lines) + "\n"


def plot_confusion(path: PathLike, confusion: list[list[int]], classes: list[str], title: str = "") -> None:
    """Save a confusion-matrix PNG (rows: true class, columns: predicted; colour = row share)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion, dtype=float).reshape(len(classes), len(classes))
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def public(metrics: Any) -> Any:
    """Metrics as stored in ``metrics.json``: floats rounded to 6 decimals, NaN as null."""
    if isinstance(metrics, dict):
        return {k: public(v) for k, v in metrics.items()}
    if isinstance(metrics, list):
        return [public(v) for v in metrics]
    if isinstance(metrics, float):
        return None if math.isnan(metrics) else round(metrics, 6)
    return metrics
