"""The study report: ``OUT_DIR/report/report.md``, ``results.csv`` and PNG figures.

Aggregates whatever cells have finished (wherever they ran, as long as their folders are under
the study's ``out_dir``); rerun it as more cells finish.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Optional, Union

from data_prep.fileio import write_atomic

from . import plots
from .collect import analyse, tuning_convergence
from .grid import Study
from .stats import VERDICTS
from .tuning import tuning_lines

PLATEAU = 0.01   # a median rise in validation accuracy over the last quarter below this reads as a plateau

CSV_FIELDS = ["dataset", "variant", "baseline", "n_seeds", "n_items", "acc_mean", "acc_low", "acc_high",
              "acc_std", "f1_mean", "f1_low", "f1_high", "f1_std", "params", "stem_params", "stem_flops",
              "total_flops", "receptive_field", "stride", "samples_per_s", "train_minutes", "epochs",
              "best_epoch", "late_best", "late_gain", "val_ceiling", "diff", "se", "df", "p", "family", "adj_level",
              "adj_low", "adj_high", "p_adj", "margin", "unit", "n_units", "verdict", "detectable",
              "p_equivalent", "detectable_2x", "p_equivalent_2x", "p_boot", "boot_low", "boot_high",
              "p_mcnemar", "n10", "n01", "paired_seeds", "paired_items", "seed_accs", "last_acc_mean",
              "last_diff", "last_low", "last_high"]


def _pct(x: Optional[float], digits: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    value = 100 * x if round(100 * x, digits) else 0.0      # no "-0.0"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _ci(mean: float, low: float, high: float, sign: bool = False) -> str:
    """``mean [low, high]`` in points; the bounds clipped to what the quantity can take
    (0..100 % for a score, -100..+100 for a difference)."""
    if math.isnan(low):
        return _pct(mean, sign=sign)
    floor = -1.0 if sign else 0.0
    return f"{_pct(mean, sign=sign)} [{_pct(max(low, floor), sign=sign)}, {_pct(min(high, 1.0), sign=sign)}]"


def _p(p: Optional[float]) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _si(n: Optional[float]) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _pair(x) -> str:
    return "–" if not x else "x".join(str(v) for v in x)


def _table(rows: list[dict], baseline: str) -> list[str]:
    level = next((r["adj_level"] for r in rows if "adj_level" in r), None)
    ci = f"{100 * level:.4g}% simultaneous CI" if level else "simultaneous CI"
    head = (f"| stem | seeds | accuracy % [95% CI] | macro-F1 % [95% CI] | seed std | params | stem FLOPs "
            f"| total FLOPs | RF (f x t) | stride | samples/s | best / epochs | Δ acc vs {baseline} [{ci}] "
            f"| p (Bonferroni) | bootstrap p | McNemar p | 80%-power Δ | verdict |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        is_base = r["variant"] == baseline
        lines.append(" | ".join([
            f"| {'**' + r['variant'] + '**' if is_base else r['variant']}", str(r["n_seeds"]),
            _ci(r["acc_mean"], r["acc_low"], r["acc_high"]), _ci(r["f1_mean"], r["f1_low"], r["f1_high"]),
            _pct(r["acc_std"]), _si(r["params"]), _si(r["stem_flops"]), _si(r["total_flops"]),
            _pair(r["receptive_field"]), _pair(r["stride"]),
            "–" if math.isnan(r["samples_per_s"]) else f"{r['samples_per_s']:.0f}",
            "–" if math.isnan(r["epochs"]) else f"{r['best_epoch']:.0f} / {r['epochs']:.0f}",
            "baseline" if is_base else _ci(r["diff"], r["adj_low"], r["adj_high"], sign=True) if "diff" in r else "–",
            _p(r.get("p_adj")), _p(r.get("p_boot")), _p(r.get("p_mcnemar")), _pct(r.get("detectable")),
            r.get("verdict", "–") if not is_base else "–"]) + " |")
    return lines


def _range(values: list[float], fmt) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mid = fmt(statistics.median(values))
    return mid if min(values) == max(values) else f"{mid} (median over stems; range {fmt(min(values))}–{fmt(max(values))})"


def _summary(name: str, rows: list[dict], components: list[dict], study: Study) -> list[str]:
    compared = [r for r in rows if "verdict" in r]
    tuning = tuning_lines(study, name)    # the values chosen on validation, when the study tunes
    conv = tuning_convergence(study, name)          # did the winning tuning runs' curves flatten?
    if tuning and conv:
        gains, late = conv["gains"], conv["late"]
        gain = statistics.median(gains)
        if gain < PLATEAU:
            reading = "they had plateaued."
        elif any(k.split(".")[-1] == "max_epochs" for k in study.tune.grid):
            reading = "still rising when their schedule ended (the epochs were in the tuning grid)."
        else:
            reading = "still rising when the schedule ended, so more epochs might raise every stem; the epochs were not tuned."
        tuning[0] += (f" The winning tuning runs (on {conv['tuned_on']}) ended with validation accuracy "
                      f"{_pct(gain, sign=True)} points over their last quarter (median; range "
                      f"{_pct(min(gains), sign=True)} to {_pct(max(gains), sign=True)})"
                      + (f", {sum(late)} of {len(late)} with their best epoch in the last 10%" if late else "")
                      + f": {reading}")
    if not compared:
        return [f"No paired comparison yet on {name} (needs finished runs of `{study.baseline}` and "
                f"another stem on the same seeds)."] + tuning
    margin, unit = compared[0]["margin"], compared[0]["unit"]
    groups = {v: [f"{r['variant']} ({_pct(r['diff'], sign=True)})" for r in compared if r["verdict"] == v]
              for v in VERDICTS}
    out = [f"**Verdict ({name}, vs `{study.baseline}`):** " + "; ".join(
        f"{v}: {', '.join(g) if g else 'none'}" for v, g in groups.items()) + "."]
    k = max(r["paired_seeds"] for r in compared)
    top = [r for r in compared if r["paired_seeds"] == k]
    n, units = top[0]["paired_items"], top[0]["n_units"]
    m, level = top[0]["family"], top[0]["adj_level"]
    design = (f"{k} seed{'s' if k != 1 else ''} x {n} test items"
              + (f" in {units} clusters (unit of analysis: `{unit}`)" if unit != "item" else ""))
    margin_text = f"±{_pct(margin)} points" if margin is not None else None
    rule = (f"**Rule:** {m} stem{'s' if m != 1 else ''} compared with `{study.baseline}`; each verdict is read off its "
            f"{100 * level:.4g}% simultaneous interval (Bonferroni over the {m}, family-wise α = {study.alpha}): "
            "better/worse when it excludes 0, "
            + (f"equivalent when it lies within the margin of {margin_text}, " if margin_text else
               "no equivalence margin declared (so nothing is called equivalent), ")
            + "otherwise inconclusive.")
    out.append(rule)
    if k >= 2:
        power = (f"**Power of the rule:** with {design}, it calls a true difference of "
                 f"{_range([r['detectable'] for r in top], _pct)} points better or worse with "
                 f"{study.power:.0%} probability")
        if margin_text:
            power += (f", and calls a stem with no true difference equivalent (±{_pct(margin)}) with probability "
                      f"{_range([r['p_equivalent'] for r in top], lambda x: f'{x:.2f}')}")
        power += (f"; with {2 * k} seeds these would be {_range([r['detectable_2x'] for r in top], _pct)} points"
                  + (f" and {_range([r['p_equivalent_2x'] for r in top], lambda x: f'{x:.2f}')}" if margin_text else "")
                  + " (simulated from each stem's fitted variance components).")
        full = [c for c in components if c["n_seeds"] >= 2 and c["var_mean"] > 0]
        if full:
            def part(c: dict, key: str) -> float:   # the (floored) term of the mean's variance from `key`
                return c[key] / {"seed": c["n_seeds"], "unit": c["n_units"]}.get(key, c["n_seeds"] * c["n_units"])
            share = {key: statistics.median(part(c, key) / max(sum(part(c, j) for j in ("seed", "unit", "residual")), 1e-300)
                                            for c in full) for key in ("seed", "unit", "residual")}
            total = sum(share.values()) or 1.0
            what = "items" if unit == "item" else f"clusters ({unit})"
            power += (f" Variance of a mean paired difference: {share['seed'] / total:.0%} from seeds, "
                      f"{share['unit'] / total:.0%} from {what}, {share['residual'] / total:.0%} from seed x "
                      f"{'item' if unit == 'item' else 'cluster'} interaction.")
        out.append(power)
    else:
        out.append("**Caution:** with one seed per stem the run-to-run variation is invisible to the test; "
                   "no stem is called better, worse or equivalent.")
    late = [r["late_best"] for r in rows if r["n_seeds"] and not math.isnan(r["late_best"])]
    gains = [r["late_gain"] for r in rows if r["n_seeds"] and not math.isnan(r["late_gain"])]
    if gains:
        gain = statistics.median(gains)
        change = (f"validation accuracy changed by {_pct(gain, sign=True)} points over the last quarter of the "
                  f"epochs (median over stems; range {_pct(min(gains), sign=True)} to {_pct(max(gains), sign=True)})"
                  + (f", and {statistics.mean(late):.0%} of the runs had their best validation epoch in the last 10%"
                     if late else ""))
        ceiling = [r["val_ceiling"] for r in rows if r["n_seeds"] and not math.isnan(r.get("val_ceiling", math.nan))]
        at_ceiling = statistics.mean(ceiling) if ceiling else 0.0
        if at_ceiling >= 0.5:
            best = [r["best_epoch"] for r in rows if r["n_seeds"] and not math.isnan(r["best_epoch"])]
            epochs = statistics.mean(r["epochs"] for r in rows if r["n_seeds"])
            reading = (f"; but the checkpoint chosen on validation scored 100% there in {at_ceiling:.0%} of the runs "
                       f"(best epoch {statistics.median(best):.0f} of {epochs:.0f}, median over stems; range "
                       f"{min(best):.0f}–{max(best):.0f}): at its ceiling validation cannot show whether the models "
                       f"were still improving, nor choose among the epochs after it (a tie keeps the earliest), so "
                       f"this is no evidence of a plateau; "
                       + ("the last-epoch line below shows what the later epochs gave." if any(
                           r.get("last_acc_mean") is not None for r in rows) else
                          "these runs did not test their last epoch's model, so what the later epochs gave is unknown."))
        else:
            reading = (": the runs had plateaued." if gain < PLATEAU else
                       ": a decaying schedule gains most at its end, so only a longer schedule tells whether the "
                       "models were still improving (see the validation curves).")
            if at_ceiling > 0:
                reading += f" ({at_ceiling:.0%} of the runs chose a checkpoint with 100% validation accuracy.)"
        out.append(f"**Convergence:** {change}{reading}")
    base = [r for r in rows if r["variant"] == study.baseline and r["n_seeds"]]
    if base and n:
        b = base[0]
        sampling = math.sqrt(b["acc_mean"] * (1 - b["acc_mean"]) / n)
        out.append(f"**Seed noise:** `{study.baseline}` varies by {_pct(b['acc_std'])} points (std) between "
                   f"seeds; the binomial sampling error of one run on {n} independent items would be {_pct(sampling)} points; "
                   f"the median |Δ| between a stem and the baseline is "
                   f"{_pct(statistics.median(abs(r['diff']) for r in compared))} points.")
    last = [r for r in rows if r.get("n_seeds") and r.get("last_acc_mean") is not None]
    if last and len(last) == len([r for r in rows if r.get("n_seeds")]):
        paired = sum("last_diff" in r for r in last)       # stems whose runs all kept the last epoch's predictions
        level = f"{1 - study.alpha:.0%}"

        def change(r: dict) -> str:
            if "last_diff" in r:
                return (f"{_pct(r['last_diff'], sign=True)} [{_pct(r['last_low'], sign=True)}, "
                        f"{_pct(r['last_high'], sign=True)}]")
            return _pct(r["last_acc_mean"] - r["acc_mean"], sign=True) + (", no interval" if paired else "")
        out.append("**Last epoch instead of the validation-chosen one** (mean test accuracy over seeds; "
                   + (f"in brackets the paired difference's {level} interval, seeds and "
                      f"{'clusters' if unit != 'item' else 'items'} crossed, not adjusted for the "
                      f"{len(last)} stems" if paired else "no interval")
                   + ("; 'no interval': some of that stem's runs lack the last epoch's predictions, so only the "
                      "difference of the means is given" if 0 < paired < len(last) else "")
                   + "): " + "; ".join(f"{r['variant']} {_pct(r['last_acc_mean'])} ({change(r)})" for r in last) + ".")
    devices: dict[str, int] = {}
    for r in rows:
        for d in r.get("devices", []):
            d = d.split(" (")[0]                   # "cpu (2 threads)" -> "cpu"
            devices[d] = devices.get(d, 0) + 1
    if devices:
        out.append("**Trained on:** " + ", ".join(f"{d} ({k} runs)" for d, k in sorted(devices.items()))
                   + " (samples/s compare only within one device).")
    return out + tuning


METHOD = """Accuracy and macro-F1 come from each run's item-level test predictions (CV: every item
once, pooled over folds); mean and 95% t-interval over seeds. Each stem is compared with the
baseline on the same seeds and the same test items. Δ is the mean paired accuracy difference. Its
standard error comes from a seeds x units random-effects design (a unit is a test item, or the
cluster the dataset declares, e.g. a class: items of one cluster are not independent), unbiased,
with Satterthwaite degrees of freedom. The stems of a dataset form one family: each Δ gets a
Bonferroni-simultaneous interval (family-wise α = {alpha}), and the verdict is read off it: *better*
or *worse* when it excludes 0, *equivalent* when it lies within the dataset's declared
equivalence margin (two one-sided tests, Schuirmann 1987), otherwise *inconclusive*: not
"equal", only not resolved. The power line gives the true difference this rule calls with
{power:.0%} probability and its chance of calling a stem equivalent when there is no difference,
simulated from the fitted variance components. Two checks are shown beside it, unadjusted: a
{n_boot}-replicate paired bootstrap that resamples units and seeds together, and the exact
McNemar test on discordant item pairs pooled over seeds (it treats all of them as independent,
so it overstates the evidence). See docs/study.md."""


def _across(rows: list[dict], baseline: str) -> list[str]:
    """``## Summary``: stems x datasets (the groups with a paired comparison), each cell the verdict
    and Δ with its simultaneous interval as in the dataset's table; the baseline's row gives its
    mean accuracy. Empty when no dataset has a comparison yet."""
    compared = [r for r in rows if "verdict" in r]
    datasets = list(dict.fromkeys(r["dataset"] for r in compared))
    if not datasets:
        return []
    by = {(r["dataset"], r["variant"]): r for r in rows}
    stems = [baseline] + list(dict.fromkeys(r["variant"] for r in compared))
    out = ["## Summary", "",
           f"Each stem against `{baseline}` on every dataset with a paired comparison: the verdict and Δ "
           f"accuracy (points) with the simultaneous interval of that dataset's table; `{baseline}`'s row "
           "gives its mean accuracy. Margins, units and seeds differ between datasets: read each column "
           "with its section.", "",
           "| stem | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for v in stems:
        cells = []
        for d in datasets:
            r = by.get((d, v))
            if v == baseline and r and r["n_seeds"]:
                cells.append(f"{_pct(r['acc_mean'])}% ({r['n_seeds']} seeds)")
            elif r and "verdict" in r:
                cells.append(f"{r['verdict']} {_pct(r['diff'], sign=True)} [{_pct(r['adj_low'], sign=True)}, "
                             f"{_pct(r['adj_high'], sign=True)}]")
            else:
                cells.append("–")
        out.append(f"| {'**' + v + '**' if v == baseline else v} | " + " | ".join(cells) + " |")
    return out + [""]


def _cells_arg(cells: Optional[list[str]]) -> str:
    return " --cells " + " ".join(f"'{c}'" for c in cells) if cells else ""


def write_report(study: Study, out: Union[str, Path, None] = None, cells: Optional[list[str]] = None) -> Path:
    """Write ``report.md``, ``results.csv`` and the figures; returns the report's path. ``cells``:
    glob patterns of the cells to read (e.g. only the seeds every stem has finished); all if None."""
    out = Path(out) if out else Path(study.out_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(study, cells)
    rows, results = a["rows"], a["results"]
    table = io.StringIO()
    w = csv.DictWriter(table, CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "receptive_field": _pair(r["receptive_field"]), "stride": _pair(r["stride"]),
                    "margin": "" if r["margin"] is None else r["margin"],
                    "seed_accs": ";".join(f"{x:.6g}" for x in r["seed_accs"])})
    write_atomic(out / "results.csv", table.getvalue())
    n_cells = sum(len(r["seed_accs"]) for r in rows)
    lines = [f"# Stem study `{study.name}`", "",
             f"Made by `python -m audiostem.study report{_cells_arg(cells)}`; {len(a['missing'])} cells not finished "
             f"({n_cells} finished runs in the tables, one per dataset, stem and seed)." + (
                 " Unfinished: " + ", ".join(a["missing"][:12]) + (" ..." if len(a["missing"]) > 12 else "")
                 if a["missing"] else "") + (
                 f" {a['left_out']} cells left out by --cells." if a["left_out"] else ""), "",
             "**Method.** " + METHOD.format(n_boot=study.bootstrap, power=study.power, alpha=study.alpha), ""]
    datasets = [d.name for d in study.datasets]
    for d in datasets:
        drows = [r for r in rows if r["dataset"] == d]
        lines += [f"## {d}", "", *_table(drows, study.baseline), "",
                  *[x + "\n" for x in _summary(d, drows, a["components"][d], study)]]
    figures = [plots.verdict_grid(rows, out / "verdicts.png"),
               plots.accuracy_vs_flops(rows, out / "accuracy_vs_flops.png"),
               plots.accuracy_per_stem(rows, out / "accuracy_per_stem.png"),
               plots.validation_curves(results, datasets, out / "validation_curves.png")]
    for d in datasets:
        models = {v: next((r.checkpoint for r in reps if r.checkpoint), None)
                  for (dd, v), reps in results.items() if dd == d}
        models = {v: p for v, p in models.items() if p}
        figures.append(plots.filters_figure(models, f"{d}: learned first-layer filters (input channel 0)",
                                            out / f"filters_{d}.png") if models else None)
    lines += _across(rows, study.baseline)
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})\n" for f in figures if f]
    write_atomic(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
