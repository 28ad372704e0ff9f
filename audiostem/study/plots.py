"""PNG figures of a study report (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "tab:gray", None: "black"}


def _panels(n: int, width: float = 5.0, height: float = 4.0):
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _by_dataset(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["n_seeds"]:
            out.setdefault(r["dataset"], []).append(r)
    return out


def _err(r: dict, key: str = "acc") -> list:
    """Error bar lengths (below, above) in points of the 95% CI, clipped to [0, 100] %."""
    m, lo, hi = r[f"{key}_mean"], r[f"{key}_low"], r[f"{key}_high"]
    if math.isnan(lo):
        return [[0.0], [0.0]]
    return [[100 * (m - max(lo, 0.0))], [100 * (min(hi, 1.0) - m)]]


def accuracy_vs_flops(rows: list[dict], path: Path) -> Optional[Path]:
    """Test accuracy (mean and 95% CI over seeds) against the whole model's FLOPs, per dataset."""
    data = _by_dataset(rows)
    if not data:
        return None
    fig, axes = _panels(len(data))
    for ax, (name, rs) in zip(axes, data.items()):
        for r in rs:
            x = r["total_flops"] or r["stem_flops"] or math.nan
            ax.errorbar(x, 100 * r["acc_mean"], yerr=_err(r), fmt="o", capsize=3,
                        color=COLORS[r.get("verdict")])
            ax.annotate(r["variant"], (x, 100 * r["acc_mean"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set(title=name, xlabel="FLOPs per input (model)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs compute\n(mean, 95% CI over seeds; green/red: better/worse than the baseline)", fontsize=9)
    return _save(fig, path)


def accuracy_per_stem(rows: list[dict], path: Path) -> Optional[Path]:
    """Test accuracy with 95% CI per stem variant, per dataset; the baseline's mean as a line."""
    data = _by_dataset(rows)
    if not data:
        return None
    fig, axes = _panels(len(data), height=max(3.0, 0.35 * max(len(v) for v in data.values()) + 1))
    for ax, (name, rs) in zip(axes, data.items()):
        y = np.arange(len(rs))[::-1]
        for yi, r in zip(y, rs):
            ax.errorbar(100 * r["acc_mean"], yi, xerr=_err(r), fmt="o", capsize=3,
                        color=COLORS[r.get("verdict")])
            ax.plot(100 * np.array(r.get("seed_accs", [])), [yi] * len(r.get("seed_accs", [])),
                    "x", color="tab:blue", alpha=0.5, ms=4)
        base = [r for r in rs if r["variant"] == r["baseline"]]
        if base:
            ax.axvline(100 * base[0]["acc_mean"], color="black", lw=0.8, ls="--")
        ax.set_yticks(y, [r["variant"] for r in rs], fontsize=8)
        ax.set(title=name, xlabel="test accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Test accuracy per stem\n(o: mean, 95% CI; x: single seeds; dashed: baseline)", fontsize=9)
    return _save(fig, path)


def verdict_grid(rows: list[dict], path: Path) -> Optional[Path]:
    """Stems x datasets: in each cell the paired difference to the baseline (points) with the
    simultaneous interval the verdict is read from, coloured by the verdict; the shaded band is
    the dataset's equivalence margin. One column per dataset, one row per stem variant."""
    compared = [r for r in rows if "verdict" in r]
    if not compared:
        return None
    datasets = list(dict.fromkeys(r["dataset"] for r in compared))
    stems = list(dict.fromkeys(r["variant"] for r in compared))
    width = 2.6 * len(datasets) + 1.2
    chars = int(width * 72 / (9 * 0.6))       # a 9-point line holds about this many characters
    title = "\n".join(textwrap.fill(part, chars) for part in (
        "Each stem vs the baseline: simultaneous interval and verdict",
        "(green better, red worse, blue equivalent, grey inconclusive; band: margin)"))
    fig, axes = plt.subplots(1, len(datasets), figsize=(width, 0.32 * len(stems) + 1.4 + 0.16 * (title.count("\n") - 1)),
                             sharey=True, squeeze=False)
    y = {v: len(stems) - 1 - i for i, v in enumerate(stems)}
    for ax, name in zip(axes[0], datasets):
        rs = [r for r in compared if r["dataset"] == name]
        margin = rs[0]["margin"]
        if margin is not None:
            ax.axvspan(-100 * margin, 100 * margin, color="tab:blue", alpha=0.08, lw=0)
        ax.axvline(0, color="black", lw=0.8)
        for r in rs:
            lo, hi = 100 * max(r["adj_low"], -1.0), 100 * min(r["adj_high"], 1.0)
            ax.plot([lo, hi], [y[r["variant"]]] * 2, color=COLORS[r["verdict"]], lw=2)
            ax.plot(100 * r["diff"], y[r["variant"]], "o", color=COLORS[r["verdict"]], ms=4)
        ax.set(title=f"{name}\n(unit: {rs[0]['unit']})", xlabel="Δ accuracy (points)")
        ax.title.set_fontsize(8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(y.values()), list(y), fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def validation_curves(results: dict, datasets: list[str], path: Path) -> Optional[Path]:
    """Validation accuracy per epoch (mean over seeds) of every variant, per dataset."""
    data = {d: {v: reps for (dd, v), reps in results.items() if dd == d and any(r.history for r in reps)}
            for d in datasets}
    data = {d: v for d, v in data.items() if v}
    if not data:
        return None
    fig, axes = _panels(len(data))
    for ax, (name, variants) in zip(axes, data.items()):
        for variant, reps in variants.items():
            curves: dict[float, list[float]] = {}
            for r in reps:
                for h in r.history:
                    if not math.isnan(h.get("val_accuracy", math.nan)):
                        curves.setdefault(h["epoch"], []).append(h["val_accuracy"])
            epochs = sorted(curves)
            ax.plot(epochs, [100 * np.mean(curves[e]) for e in epochs], label=variant, lw=1.2)
        ax.set(title=name, xlabel="epoch", ylabel="validation accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Validation curves (mean over seeds)", fontsize=9)
    return _save(fig, path)


def first_layer_filters(state_dict: dict) -> list[np.ndarray]:
    """The learned input-layer kernels of a stem, as 2-D arrays ``(kh, kw)`` (input channel 0).

    The first 4-D ``weight`` under a ``stem`` module is the first Conv2d (registration order);
    every stem conv with the same number of input channels is an input layer too (the parallel
    branches of ``pons``). Sorted by L2 norm, largest first.
    """
    convs = [(k, v) for k, v in state_dict.items()
             if k.endswith("weight") and getattr(v, "ndim", 0) == 4 and "stem." in f".{k}"]
    if not convs:
        convs = [(k, v) for k, v in state_dict.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 4]
    if not convs:
        return []
    c_in = convs[0][1].shape[1]
    kernels = [w[:, 0].float().cpu().numpy() for _, w in convs if w.shape[1] == c_in]
    flat = [k for w in kernels for k in w]
    return sorted(flat, key=lambda k: -float(np.sum(k ** 2)))


def load_state_dict(checkpoint: Path) -> dict:
    """A checkpoint's state dict, verified and loaded with ``weights_only=True`` (no pickled
    code runs; :func:`audiostem.checkpoint.load_checkpoint`)."""
    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    return ckpt.get("state_dict", ckpt)


def filters_figure(models: dict[str, Path], title: str, path: Path, per_row: int = 16) -> Optional[Path]:
    """One row per stem variant: its ``per_row`` strongest first-layer filters (frequency or
    pitch upward, time to the right; red positive, blue negative, each filter scaled alone)."""
    rows = []
    for variant, ckpt in models.items():
        try:
            kernels = first_layer_filters(load_state_dict(ckpt))
        except Exception as err:  # an unreadable checkpoint costs one row, not the report
            kernels, variant = [], f"{variant} (unreadable: {type(err).__name__})"
        if kernels:
            rows.append((variant, kernels[:per_row]))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 0.7 + 1.5, len(rows) * 0.9 + 0.6),
                             squeeze=False)
    for (variant, kernels), ax_row in zip(rows, axes):
        for j, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(j < len(kernels))
            if j < len(kernels):
                k = kernels[j]
                lim = float(np.abs(k).max()) or 1.0
                ax.imshow(k, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto",
                          interpolation="nearest")
        shape = "x".join(str(s) for s in kernels[0].shape)
        ax_row[0].set_ylabel(f"{variant}\n{shape}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
