"""Read finished run folders and turn them into per-stem summaries and paired comparisons.

Reads only the run-folder contract of ``python -m audiostem.train``: ``metrics.json`` (its
presence means finished), ``predictions_test.csv`` (``id, label, pred, correct, fold, p_*``),
``history.csv`` and ``checkpoints/best.ckpt``. Accuracy and macro-F1 are computed from the
item-level predictions (pooled over CV folds), so the means and the paired tests use exactly
the same numbers; runs without predictions fall back to ``metrics.json``.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import stats
from .grid import Cell, Study, dataset_variants, expand
from .runner import is_finished, select


@dataclass
class Replicate:
    """One seed of one (dataset, variant): its cells (one per CV fold cell) merged."""
    seed: int
    metrics: list[dict]
    ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))   # sorted item ids
    correct: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    preds: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    history: list[dict] = field(default_factory=list)
    checkpoint: Optional[Path] = None

    @property
    def accuracy(self) -> float:
        if len(self.ids):
            return float(self.correct.mean())
        return float(np.mean([m["test"]["accuracy"] for m in self.metrics]))

    @property
    def macro_f1(self) -> float:
        if len(self.ids):
            return stats.macro_f1(self.labels, self.preds, self.metrics[0].get("classes"))
        return float(np.mean([m["test"]["macro_f1"] for m in self.metrics]))


def read_predictions(path: Path) -> dict[str, tuple[str, str, int]]:
    """``predictions_test.csv`` as ``{id: (label, pred, correct)}``."""
    with open(path, newline="") as fh:
        return {r["id"]: (r["label"], r["pred"], int(float(r["correct"]))) for r in csv.DictReader(fh)}


def read_history(path: Path) -> list[dict]:
    """``history.csv`` rows with numbers as floats (empty cells as NaN)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def load_replicate(seed: int, cells: list[Cell]) -> Replicate:
    """Merge the finished fold cells of one seed (every item once; later duplicates ignored)."""
    rep = Replicate(seed, [json.loads((c.out_dir / "metrics.json").read_text()) for c in cells])
    items: dict[str, tuple] = {}
    for c in cells:
        if (c.out_dir / "predictions_test.csv").is_file():
            for k, v in read_predictions(c.out_dir / "predictions_test.csv").items():
                items.setdefault(k, v)
    if items:
        keys = sorted(items)
        rep.ids = np.array(keys)
        rep.labels = np.array([items[k][0] for k in keys])
        rep.preds = np.array([items[k][1] for k in keys])
        rep.correct = np.array([items[k][2] for k in keys], dtype=int)
    rep.history = read_history(cells[0].out_dir / "history.csv")
    ckpt = cells[0].out_dir / "checkpoints" / "best.ckpt"
    rep.checkpoint = ckpt if ckpt.is_file() else None
    return rep


def collect(study: Study, cells: list[Cell]) -> tuple[dict, list[str]]:
    """``({(dataset, variant): [Replicate, ...]}, [names of unfinished cells])``; a seed counts
    only when all of its fold cells finished. ``cells``: the cells to read (``expand(study)`` or a
    selection of it; the others are left out, not counted as unfinished). Every dataset x variant
    of the study gets a key, in the study's order."""
    groups: dict[tuple, dict[int, list[Cell]]] = {(d.name, v.name): {} for d in study.datasets
                                                  for v in dataset_variants(study, d)}
    for cell in cells:
        groups.setdefault((cell.dataset, cell.variant), {}).setdefault(cell.seed, []).append(cell)
    results, missing = {}, []
    for key, by_seed in groups.items():
        reps = []
        for seed, cells in by_seed.items():
            unfinished = [c.name for c in cells if not is_finished(c)]
            missing += unfinished
            if not unfinished:
                reps.append(load_replicate(seed, cells))
        results[key] = reps
    return results, missing


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


def summarize(reps: list[Replicate]) -> dict:
    """Per (dataset, variant): accuracy and macro-F1 over seeds (mean, 95% CI, std), sizes and costs."""
    acc = stats.mean_ci([r.accuracy for r in reps])
    f1 = stats.mean_ci([r.macro_f1 for r in reps])
    m = reps[0].metrics[0] if reps else {}
    stem = m.get("stem", {})
    folds = [x for r in reps for x in r.metrics]
    return {
        "n_seeds": len(reps), "n_items": len(reps[0].ids) if reps else 0,
        "seed_accs": [r.accuracy for r in reps],
        "acc_mean": acc["mean"], "acc_low": acc["low"], "acc_high": acc["high"], "acc_std": acc["std"],
        "f1_mean": f1["mean"], "f1_low": f1["low"], "f1_high": f1["high"], "f1_std": f1["std"],
        "params": m.get("params"), "stem_params": stem.get("params"), "stem_flops": stem.get("flops"),
        "total_flops": m.get("total_flops"), "receptive_field": stem.get("receptive_field"),
        "stride": stem.get("stride"),
        "samples_per_s": _mean(x.get("train_samples_per_second") for x in folds),
        "train_minutes": _mean(sum(x.get("train_seconds", 0) for x in r.metrics) / 60 for r in reps),
        "epochs": _mean(x.get("epochs_run") for x in folds),
        "late_best": _mean(float(_late(x)) for x in folds if _late(x) is not None),
        "late_gain": _mean(_late_gain(r.history) for r in reps),
        "devices": [r.metrics[0].get("device") or "device not recorded" for r in reps],
        "best_epoch": _mean(x.get("best_epoch") for x in folds),
    }


def _late(metrics: dict) -> Optional[bool]:
    """Whether a run's best validation epoch fell in the last 10% of its epochs (still improving?)."""
    best, run = metrics.get("best_epoch"), metrics.get("epochs_run")
    if best is None or not run:
        return None
    return best >= run - 1 - max(1.0, 0.1 * run)


def _late_gain(history: list[dict]) -> Optional[float]:
    """How much validation accuracy rose over the last quarter of a run's epochs (last epoch
    minus the epoch at 75%): near 0 when it had plateaued. None without a validation curve."""
    acc = [h["val_accuracy"] for h in history if not math.isnan(h.get("val_accuracy", math.nan))]
    if len(acc) < 4:
        return None
    return acc[-1] - acc[int(0.75 * len(acc)) - 1]


def paired_arrays(a: list[Replicate], b: list[Replicate]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(seeds, items)`` correctness of ``a`` and ``b`` on the seeds both have and the items
    both tested (sorted ids), plus those seeds."""
    by_seed = {r.seed: r for r in b}
    seeds = [r.seed for r in a if r.seed in by_seed and len(r.ids) and len(by_seed[r.seed].ids)]
    if not seeds:
        return np.zeros((0, 0), int), np.zeros((0, 0), int), []
    ra = {r.seed: r for r in a}
    common = set(ra[seeds[0]].ids)
    for s in seeds:
        common &= set(ra[s].ids) & set(by_seed[s].ids)
    ids = np.array(sorted(common))

    def take(r: Replicate) -> np.ndarray:
        return r.correct[np.searchsorted(r.ids, ids)]
    return (np.stack([take(ra[s]) for s in seeds]), np.stack([take(by_seed[s]) for s in seeds]), seeds)


def analyse(study: Study, cells: Optional[list[str]] = None) -> dict:
    """Everything the report needs: ``rows`` (one dict per dataset x variant, in study order, with
    the comparison to the baseline merged in), ``missing`` cells, ``components`` per dataset and
    ``pooled_seed`` per dataset (:func:`stats.pooled_seed_variance`; each row's ``pooled_*`` fields
    are its test and verdict with that as the floor of its seed variance).
    ``cells``: glob patterns of the cells to include (all if None), ``left_out``: how many were not."""
    every = expand(study)
    chosen = select(every, cells)
    results, missing = collect(study, chosen)
    left_out = len(every) - len(chosen)
    rows, components, pooled_seed = [], {}, {}

    def call(c: dict, p_holm: float) -> str:   # one seed cannot see seed noise: never called
        return stats.verdict(c["diff"], p_holm, c["mde"], study.alpha) if c["n_seeds"] >= 2 else "indistinguishable"

    for d in study.datasets:
        names = [v.name for v in dataset_variants(study, d)]
        base = results.get((d.name, study.baseline), [])
        comps, arrays = {}, {}
        for i, v in enumerate(names):
            reps = results[(d.name, v)]
            row = {"dataset": d.name, "variant": v, "baseline": study.baseline, **summarize(reps)}
            if v != study.baseline and reps and base:
                a, b, seeds = paired_arrays(reps, base)
                if len(seeds) and a.shape[1]:
                    comps[v] = stats.compare(a, b, n_boot=study.bootstrap, alpha=study.alpha,
                                             power=study.power, seed=i)
                    arrays[v] = (a, b)
            rows.append(row)
        adjusted = dict(zip(comps, stats.holm([c["p"] for c in comps.values()])))
        pooled = stats.pooled_seed_variance([c["components"] for c in comps.values()])
        checks = {}
        if pooled["n_stems"]:   # the same tests with each stem's seed variance raised to the pooled one
            for v, (a, b) in arrays.items():
                t = stats.crossed_t_test(a, b, alpha=study.alpha, seed_floor=pooled["seed"], seed_floor_df=pooled["df"])
                checks[v] = {**t, "n_seeds": comps[v]["n_seeds"],
                             "mde": stats.min_detectable_difference(t["se"], study.alpha, study.power, t["df"])}
            for v, p in zip(checks, stats.holm([c["p"] for c in checks.values()])):
                checks[v].update(p_holm=p, verdict=call(checks[v], p))
        for row in rows:
            c = comps.get(row["variant"]) if row["dataset"] == d.name else None
            if c:
                row.update({"diff": c["diff"], "diff_low": c["low"], "diff_high": c["high"], "se": c["se"],
                            "df": c["df"], "p": c["p"], "p_holm": adjusted[row["variant"]],
                            "p_boot": c["p_boot"], "boot_low": c["boot_low"], "boot_high": c["boot_high"],
                            "p_mcnemar": c["p_mcnemar"],
                            "n10": c["n10"], "n01": c["n01"], "mde": c["mde"], "paired_seeds": c["n_seeds"],
                            "paired_items": c["n_items"],
                            "verdict": call(c, adjusted[row["variant"]])})
                if row["variant"] in checks:
                    ch = checks[row["variant"]]
                    row.update({"pooled_p_holm": ch["p_holm"], "pooled_mde": ch["mde"], "pooled_verdict": ch["verdict"]})
        components[d.name] = [c["components"] for c in comps.values()]
        pooled_seed[d.name] = pooled
    return {"rows": rows, "missing": missing, "left_out": left_out, "components": components,
            "pooled_seed": pooled_seed, "results": results}
