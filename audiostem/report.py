"""What a run leaves behind: clip predictions, metrics.json, a per-class report, a confusion matrix.

The run folder layout (``docs/training.md``; the study runner depends on these names)::

    OUT_DIR/recipe.yaml, checkpoints/{best,last}.ckpt, logs/, history.csv,
            predictions_test.csv, predictions_val.csv, per_class.txt, confusion_matrix.png,
            metrics.json   (written last: its presence means the run finished)
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

PathLike = Union[str, Path]


def write_json(path: PathLike, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Clip-level scores from ``(clips, num_classes)`` logits and ``(clips,)`` label indices.

    Returns plain data: ``accuracy``, ``balanced_accuracy`` (macro recall), ``macro_f1``,
    ``loss`` (cross-entropy), ``per_class`` ``{class: {precision, recall, f1, support}}``,
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
        "macro_f1": float(multiclass_f1_score(preds, target, average="macro", **kw)),
        "loss": float(F.cross_entropy(preds, target)) if len(target) else float("nan"),
        "per_class": {c: {"precision": float(per_p[k]), "recall": float(per_r[k]), "f1": float(per_f[k]),
                          "support": int(support[k])} for k, c in enumerate(classes)},
        "confusion": multiclass_confusion_matrix(preds, target, **kw).tolist(),
        "n_items": int(len(target)),
    }


def prediction_rows(items: list, log_probs: torch.Tensor, target: torch.Tensor, classes: list[str],
                    fold: Optional[int] = None) -> list[dict]:
    """One row per clip of ``items`` (:class:`data_prep.Item`): ``id, label, pred, correct, fold,
    p_<class>..., group`` (probabilities).

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
        row["group"] = item.group
        rows.append(row)
    return rows


def write_predictions(path: PathLike, rows: list[dict], classes: list[str]) -> None:
    """Write :func:`prediction_rows` as CSV: ``id, label, pred, correct, fold, p_<class>...``,
    and a last column ``group`` when any row has one (a cache with groups)."""
    fields = ["id", "label", "pred", "correct", "fold"] + [f"p_{c}" for c in classes]
    if any(r.get("group") for r in rows):
        fields.append("group")
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_predictions(path: PathLike, classes: list[str]) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """``(rows, log_probs (clips, classes), target (clips,))`` from a predictions CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    index = {c: k for k, c in enumerate(classes)}
    probs = torch.tensor([[float(r[f"p_{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes))
    target = torch.tensor([index[r["label"]] for r in rows], dtype=torch.long)
    return rows, probs.clamp(min=1e-12).log(), target


def per_class_text(metrics: dict, title: str = "") -> str:
    """A plain-text table of per-class precision, recall, F1 and support, with the totals."""
    per = metrics["per_class"]
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


def write_split_reports(out: Path, test: Optional[dict], classes: list[str], title: str) -> None:
    """``per_class.txt`` and ``confusion_matrix.png`` of the test metrics (val when no test)."""
    if test is None:
        return
    (out / "per_class.txt").write_text(per_class_text(test, title))
    plot_confusion(out / "confusion_matrix.png", test["confusion"], classes, title)
