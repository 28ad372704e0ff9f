"""Read finished run folders and turn them into per-stem summaries and paired comparisons.

Reads run folders only through their owner, :mod:`audiostem.run_folder`: ``metrics.json`` (its
presence means finished), ``predictions_test.csv`` (``id, label, pred, correct, fold, p_*``),
``history.csv`` and ``checkpoints/best.ckpt``. Accuracy and macro-F1 are computed from the
item-level predictions (pooled over CV folds), so the means and the paired tests use exactly
the same numbers; runs without predictions fall back to ``metrics.json``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .. import run_folder
from ..metrics import macro_f1
from ..run_folder import is_finished, read_history
from . import stats
from .grid import Cell, Study, StudyError, dataset_variants
from .tuning import study_cells, tuning_cells, tuning_choices
from .runner import select


@dataclass
class Replicate:
    """One seed of one (dataset, variant): its cells (one per CV fold cell) merged."""
    seed: int
    metrics: list[dict]
    ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))   # sorted item ids
    correct: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    preds: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    units: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))   # cluster of each item
    correct_last: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))  # last epoch's model, same ids
    history: list[dict] = field(default_factory=list)
    checkpoint: Optional[Path] = None

    @property
    def accuracy(self) -> float:
        if len(self.ids):
            return float(self.correct.mean())
        return float(np.mean([m["test"]["accuracy"] for m in self.metrics]))

    @property
    def last_epoch_accuracy(self) -> Optional[float]:
        """Test accuracy of the last epoch's model (``metrics.json`` ``test_last``; CV: pooled over
        folds, and over fold cells by their item counts); None for runs that did not record it."""
        last = [m.get("test_last") for m in self.metrics]
        if not last or any(x is None for x in last):
            return None
        n = [x["n_items"] for x in last]
        return sum(x.get("pooled_accuracy", x["accuracy"]) * k for x, k in zip(last, n)) / max(sum(n), 1)

    @property
    def macro_f1(self) -> float:
        if len(self.ids):
            classes = self.metrics[0].get("classes") or sorted(set(self.labels.tolist()))
            return macro_f1(self.labels, self.preds, classes)
        return float(np.mean([m["test"]["macro_f1"] for m in self.metrics]))


def test_outcomes(run_dir: Path, cluster: Optional[str] = None,
                  split: str = "test") -> dict[str, tuple[str, str, int, str]]:
    """A run's test predictions as ``{id: (label, pred, correct, unit)}``; ``unit`` is the value of
    the ``cluster`` column (the item's own id without one). ``split``: ``test`` (the
    validation-chosen checkpoint) or ``test_last`` (the last epoch's model). Raises
    :class:`StudyError` naming the file when the column is missing."""
    columns, rows = run_folder.read_predictions(run_dir, split)
    if cluster and cluster not in columns:
        raise StudyError(f"{run_folder.predictions_name(run_dir, split)}: no column {cluster!r} to cluster the "
                         f"test items by (the study's `cluster:`); columns: {', '.join(columns)}")
    return {r["id"]: (r["label"], r["pred"], int(float(r["correct"])), r[cluster] if cluster else r["id"])
            for r in rows}


def _merged_outcomes(cells: list[Cell], cluster: Optional[str], split: str,
                     expected: Optional[list[Optional[int]]] = None) -> dict[str, tuple]:
    """:func:`test_outcomes` of ``split`` merged over the fold cells of one seed that have that
    predictions file (every item once; later duplicates ignored). ``expected``: each cell's number
    of tested items (``metrics.json``); a file with another number of rows is truncated or edited,
    and raises :class:`StudyError` naming it (its items would drop out of the paired tests)."""
    items: dict[str, tuple] = {}
    for i, c in enumerate(cells):
        if run_folder.has_predictions(c.out_dir, split):
            outcomes = test_outcomes(c.out_dir, cluster, split)
            n = expected[i] if expected else None
            if n is not None and len(outcomes) != n:
                raise StudyError(f"{run_folder.predictions_name(c.out_dir, split)}: {len(outcomes)} items, but "
                                 f"{Path(c.out_dir) / run_folder.METRICS_FILE} says {n} were tested (truncated or "
                                 f"edited): copy it back from the exported cells, or delete that metrics.json so "
                                 f"that the runner trains cell {c.name} again")
            for k, v in outcomes.items():
                items.setdefault(k, v)
    return items


def load_replicate(seed: int, cells: list[Cell], cluster: Optional[str] = None,
                   need_predictions: bool = False) -> Replicate:
    """Merge the finished fold cells of one seed (every item once; later duplicates ignored);
    ``cluster``: the predictions column that gives each item's unit (see :func:`test_outcomes`).
    ``need_predictions``: other cells of the dataset have test predictions, so a cell without
    them is damaged (comparing it on ``metrics.json`` alone would quietly drop it, or some of its
    folds' items, from the paired tests): raises :class:`StudyError` naming the missing file."""
    rep = Replicate(seed, [run_folder.read_metrics(c.out_dir) for c in cells])
    for c in cells:
        if need_predictions and not run_folder.has_predictions(c.out_dir, "test"):
            raise StudyError(f"{run_folder.predictions_name(c.out_dir, 'test')}: missing, though the dataset's "
                             f"other finished cells have theirs (the paired tests need every cell's items): "
                             f"copy it back from the exported cells, or delete "
                             f"{Path(c.out_dir) / run_folder.METRICS_FILE} so that the runner trains cell {c.name} again")
    items = _merged_outcomes(cells, cluster, "test", [m.get("test", {}).get("n_items") for m in rep.metrics]
                             if need_predictions else None)
    if items:
        keys = sorted(items)
        rep.ids = np.array(keys)
        rep.labels = np.array([items[k][0] for k in keys])
        rep.preds = np.array([items[k][1] for k in keys])
        rep.correct = np.array([items[k][2] for k in keys], dtype=int)
        rep.units = np.array([items[k][3] for k in keys])
        if all(run_folder.has_predictions(c.out_dir, "test_last") for c in cells):
            last = _merged_outcomes(cells, None, "test_last")
            if set(last) == set(keys):
                rep.correct_last = np.array([last[k][2] for k in keys], dtype=int)
    rep.history = read_history(cells[0].out_dir)
    ckpt = run_folder.best_checkpoint(cells[0].out_dir)
    rep.checkpoint = ckpt if ckpt.is_file() else None
    return rep


def collect(study: Study, cells: list[Cell]) -> tuple[dict, list[str]]:
    """``({(dataset, variant): [Replicate, ...]}, [names of unfinished cells])``; a seed counts
    only when all of its fold cells finished. ``cells``: the cells to read (``study_cells(study)`` or a
    selection of it; the others are left out, not counted as unfinished). Every dataset x variant
    of the study gets a key, in the study's order.

    Raises :class:`StudyError` when the finished cells of one dataset were trained on different
    builds of its cache (their ``metrics.json`` record the build id): comparing them would
    compare features, not stems."""
    groups: dict[tuple, dict[int, list[Cell]]] = {(d.name, v.name): {} for d in study.datasets
                                                  for v in dataset_variants(study, d)}
    for cell in cells:
        groups.setdefault((cell.dataset, cell.variant), {}).setdefault(cell.seed, []).append(cell)
    with_predictions = {c.dataset for c in cells
                        if is_finished(c.out_dir) and run_folder.has_predictions(c.out_dir, "test")}
    results, missing = {}, []
    for key, by_seed in groups.items():
        reps = []
        for seed, cells in by_seed.items():
            unfinished = [c.name for c in cells if not is_finished(c.out_dir)]
            missing += unfinished
            if not unfinished:
                reps.append(load_replicate(seed, cells, study.dataset(key[0]).cluster,
                                           need_predictions=key[0] in with_predictions))
        results[key] = reps
    _check_one_build(results)
    return results, missing


def _check_one_build(results: dict) -> None:
    """Refuse a dataset whose finished cells record different cache builds (see :func:`collect`)."""
    builds: dict[str, dict[str, list[str]]] = {}
    for (dataset, variant), reps in results.items():
        for r in reps:
            for m in r.metrics:
                if m.get("cache_build_id"):
                    builds.setdefault(dataset, {}).setdefault(m["cache_build_id"], []).append(f"{variant}/seed{r.seed}")
    for dataset, by_build in builds.items():
        if len(by_build) > 1:
            parts = [f"build {b[:12]}: {', '.join(sorted(set(cells))[:4])}" + (" ..." if len(set(cells)) > 4 else "")
                     for b, cells in sorted(by_build.items(), key=lambda kv: -len(kv[1]))]
            raise StudyError(f"dataset {dataset}: its cells were trained on {len(by_build)} builds of the cache "
                             f"({'; '.join(parts)}); comparing them would mix features. Delete the run folders "
                             "of the cells of the other builds and run the study again (it trains them on "
                             "the current cache), or report with --cells to leave them out")


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
        "val_ceiling": _mean(float(x["val"]["accuracy"] >= 1.0) for x in folds
                             if isinstance(x.get("val"), dict) and x["val"].get("accuracy") is not None),
        "devices": [r.metrics[0].get("device") or "device not recorded" for r in reps],
        "best_epoch": _mean(x.get("best_epoch") for x in folds),
        "last_acc_mean": (None if not reps or any(r.last_epoch_accuracy is None for r in reps)
                          else float(np.mean([r.last_epoch_accuracy for r in reps]))),
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


def tuning_convergence(study: Study, group: str) -> Optional[dict]:
    """How the validation curves of the tuning runs that won ended, for the report's tuning line:
    ``{"tuned_on", "gains", "late", "n"}`` with each finished winning run's rise in validation
    accuracy over its last quarter (:func:`_late_gain`) and whether its best epoch fell in the
    last 10% (:func:`_late`). None when the study does not tune, ``group`` has no choices yet, or
    no winning run has a validation curve of four epochs."""
    chosen = (tuning_choices(study) or {}).get(group)
    if not chosen:
        return None
    tuned_on = next(iter(chosen.values()))["tuned_on"]
    won = [c for c in tuning_cells(study) if c.dataset == tuned_on and c.variant in chosen
           and c.point == chosen[c.variant]["point"] and is_finished(c.out_dir)]
    gains = [g for g in (_late_gain(read_history(c.out_dir)) for c in won) if g is not None]
    late = [x for x in (_late(run_folder.read_metrics(c.out_dir)) for c in won) if x is not None]
    return {"tuned_on": tuned_on, "gains": gains, "late": late, "n": len(won)} if gains else None


def paired_arrays(a: list[Replicate], b: list[Replicate]) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """``(seeds, items)`` correctness of ``a`` and ``b`` on the seeds both have and the items
    both tested (sorted ids), those seeds, and the unit (cluster) of each of those items."""
    by_seed = {r.seed: r for r in b}
    seeds = [r.seed for r in a if r.seed in by_seed and len(r.ids) and len(by_seed[r.seed].ids)]
    if not seeds:
        return np.zeros((0, 0), int), np.zeros((0, 0), int), [], np.array([], dtype=str)
    ra = {r.seed: r for r in a}
    common = set(ra[seeds[0]].ids)
    for s in seeds:
        common &= set(ra[s].ids) & set(by_seed[s].ids)
    ids = np.array(sorted(common))

    def take(r: Replicate) -> np.ndarray:
        return r.correct[np.searchsorted(r.ids, ids)]
    first = by_seed[seeds[0]]
    units = first.units[np.searchsorted(first.ids, ids)] if len(first.units) else ids
    return (np.stack([take(ra[s]) for s in seeds]), np.stack([take(by_seed[s]) for s in seeds]), seeds, units)


def last_epoch_change(reps: list[Replicate], clustered: bool, alpha: float = 0.05) -> dict:
    """The last epoch's model against the validation-chosen checkpoint of the same runs, paired on
    the same seeds and test items: ``last_diff`` (accuracy, last minus chosen) with its
    ``1 - alpha`` interval ``last_low, last_high`` from :func:`stats.crossed_t_test` (seeds and
    units crossed; the dataset's clusters when ``clustered``), unadjusted for the stems of the
    dataset. Empty when a replicate lacks the last epoch's predictions or there are fewer than
    two seeds."""
    if len(reps) < 2 or any(len(r.correct_last) == 0 or not np.array_equal(r.ids, reps[0].ids) for r in reps):
        return {}
    t = stats.crossed_t_test(np.stack([r.correct_last for r in reps]), np.stack([r.correct for r in reps]),
                             alpha=alpha, clusters=reps[0].units if clustered else None)
    return {"last_diff": t["diff"], "last_low": t["low"], "last_high": t["high"]}


def analyse(study: Study, cells: Optional[list[str]] = None) -> dict:
    """Everything the report needs: ``rows`` (one dict per dataset x variant, in study order, with
    the comparison to the baseline merged in), ``missing`` cells, ``components`` per dataset
    (:func:`stats.variance_components` of each compared stem) and the runs (``results``).
    ``cells``: glob patterns of the cells to include (all if None), ``left_out``: how many were not.

    The family of one dataset is its stems compared with the baseline on at least two seeds:
    :func:`stats.decide` gives each its simultaneous interval and verdict, :func:`stats.rule_power`
    the power of that rule for the design as run and with twice the seeds."""
    every = study_cells(study)
    chosen = select(every, cells)
    results, missing = collect(study, chosen)
    left_out = len(every) - len(chosen)
    rows, components = [], {}
    for d in study.datasets:
        margin = study.margin_of(d)
        base = results.get((d.name, study.baseline), [])
        comps = {}
        for i, v in enumerate(dataset_variants(study, d)):
            reps = results[(d.name, v.name)]
            row = {"dataset": d.name, "variant": v.name, "baseline": study.baseline, **summarize(reps),
                   "margin": margin, "unit": d.cluster or "item"}
            if v.name != study.baseline and reps and base:
                a, b, seeds, units = paired_arrays(reps, base)
                if len(seeds) and a.shape[1]:
                    comps[v.name] = stats.compare(a, b, units if d.cluster else None, n_boot=study.bootstrap,
                                                  alpha=study.alpha, seed=i)
            rows.append(row)
        m = sum(c["n_seeds"] >= 2 for c in comps.values())
        for row in rows:
            c = comps.get(row["variant"]) if row["dataset"] == d.name else None
            if not c:
                continue
            k = c["n_seeds"]
            call = stats.decide(c["diff"], c["se"], c["df"], max(m, 1), margin, study.alpha, n_seeds=k)
            now = stats.rule_power(c["components"], max(m, 1), margin, study.alpha, study.power)
            more = stats.rule_power(c["components"], max(m, 1), margin, study.alpha, study.power, n_seeds=2 * k)
            row.update({key: c[key] for key in ("diff", "se", "df", "p", "p_boot", "boot_low", "boot_high",
                                                "p_mcnemar", "n10", "n01", "n_units")})
            row.update({"adj_low": call["low"], "adj_high": call["high"], "adj_level": call["level"],
                        "p_adj": call["p_adj"], "verdict": call["verdict"], "family": m,
                        "paired_seeds": k, "paired_items": c["n_items"],
                        "detectable": now["detectable"], "p_equivalent": now["p_equivalent"],
                        "detectable_2x": more["detectable"], "p_equivalent_2x": more["p_equivalent"]})
        components[d.name] = [c["components"] for c in comps.values()]
        for row in rows:
            if row["dataset"] == d.name:
                row.update(last_epoch_change(results[(d.name, row["variant"])], d.cluster is not None, study.alpha))
    return {"rows": rows, "missing": missing, "left_out": left_out, "components": components,
            "results": results}
