"""The study report: ``OUT_DIR/report/report.md``, ``results.csv`` and PNG figures.

Aggregates whatever cells have finished (wherever they ran, as long as their folders are under
the study's ``out_dir``); rerun it as more cells finish.
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Optional, Union

from . import plots
from .collect import analyse
from .grid import Study
from .stats import projected_variance
from .tuning import tuning_lines

CSV_FIELDS = ["dataset", "variant", "baseline", "n_seeds", "n_items", "acc_mean", "acc_low", "acc_high",
              "acc_std", "f1_mean", "f1_low", "f1_high", "f1_std", "params", "stem_params", "stem_flops",
              "total_flops", "receptive_field", "stride", "samples_per_s", "train_minutes", "epochs",
              "best_epoch", "late_best", "late_gain", "diff", "diff_low", "diff_high", "se", "df", "p", "p_holm", "p_boot", "boot_low",
              "boot_high", "p_mcnemar",
              "n10", "n01", "mde", "paired_seeds", "paired_items", "verdict", "pooled_p_holm", "pooled_mde",
              "pooled_verdict", "seed_accs"]


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
    head = (f"| stem | seeds | accuracy % [95% CI] | macro-F1 % [95% CI] | seed std | params | stem FLOPs "
            f"| total FLOPs | RF (f x t) | stride | samples/s | best / epochs | Δ acc vs {baseline} [95% CI] | p (Holm) "
            f"| bootstrap p | McNemar p | MDE | verdict |")
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
            "baseline" if is_base else _ci(r.get("diff", math.nan), r.get("diff_low", math.nan),
                                           r.get("diff_high", math.nan), sign=True) if "diff" in r else "–",
            _p(r.get("p_holm")), _p(r.get("p_boot")), _p(r.get("p_mcnemar")), _pct(r.get("mde")),
            r.get("verdict", "–") if not is_base else "–"]) + " |")
    return lines


def _pooled_check(compared: list[dict], pooled: dict, k: int) -> str:
    """The verdicts again with each stem's seed variance floored at the dataset's pooled one."""
    changed = [f"{r['variant']} ({r['verdict']} -> {r['pooled_verdict']})" for r in compared
               if r.get("pooled_verdict") and r["pooled_verdict"] != r["verdict"]]
    return (f"**Seed-variance check:** each stem's seed variance comes from its own {k - 1} degree"
            f"{'s' if k != 2 else ''} of freedom and is floored at 0; pooled over the {pooled['n_stems']} stems "
            f"({pooled['df']} df) a run's paired difference varies by {_pct(math.sqrt(pooled['seed']))} points (std) "
            f"between seeds. Raising each stem's seed variance to at least that "
            + (f"changes these verdicts: {', '.join(changed)}." if changed else "leaves the verdicts unchanged."))


def _summary(name: str, rows: list[dict], components: list[dict], study: Study,
             pooled: Optional[dict] = None) -> list[str]:
    compared = [r for r in rows if "verdict" in r]
    out = []
    tuning = tuning_lines(study, name)    # (h16b) the values chosen on validation, when the study tunes
    if not compared:
        return [f"No paired comparison yet on {name} (needs finished runs of `{study.baseline}` and "
                f"another stem on the same seeds)."] + tuning
    groups = {v: [f"{r['variant']} ({_pct(r['diff'], sign=True)})" for r in compared if r["verdict"] == v]
              for v in ("better", "worse", "indistinguishable")}
    out.append(f"**Verdict ({name}, vs `{study.baseline}`):** " + "; ".join(
        f"{v}: {', '.join(g) if g else 'none'}" for v, g in groups.items()) + ".")
    k = max(r["paired_seeds"] for r in compared)
    n = max(r["paired_items"] for r in compared if r["paired_seeds"] == k)
    mdes = [r["mde"] for r in compared if r["paired_seeds"] == k]
    power = (f"**Power:** with {k} seed{'s' if k != 1 else ''} x {n} test items, the smallest accuracy difference this study "
             f"detects with {study.power:.0%} power at α = {study.alpha} is {_pct(statistics.median(mdes))} points "
             f"(median over stems; range {_pct(min(mdes))}–{_pct(max(mdes))}); no difference below it is called.")
    full = [c for c in components if not math.isnan(c.get("seed", math.nan)) and c["var_mean"] > 0]
    if full:
        def part(c: dict, key: str) -> float:   # the term of var_mean that `key` contributes
            return c[key] / {"seed": c["n_seeds"], "item": c["n_items"]}.get(key, c["n_seeds"] * c["n_items"])
        share = {key: statistics.median(part(c, key) / c["var_mean"] for c in full)
                 for key in ("seed", "item", "residual")}
        total = sum(share.values()) or 1.0
        ratio = statistics.median(math.sqrt(projected_variance(c, 2 * c["n_seeds"], c["n_items"]) / c["var_mean"])
                                  for c in full)
        power += (f" Variance of a mean paired difference: {share['seed'] / total:.0%} from seeds, "
                  f"{share['item'] / total:.0%} from items, {share['residual'] / total:.0%} from seed x item "
                  f"flips; with {2 * k} seeds the MDE would be about {_pct(statistics.median(mdes) * ratio)} points.")
    out.append(power)
    if k >= 2 and pooled and pooled.get("n_stems"):
        out.append(_pooled_check(compared, pooled, k))
    if k < 2:
        out.append("**Caution:** with one seed per stem the run-to-run variation is invisible to the test; "
                   "no stem is called better or worse.")
    elif k < 3:
        out.append("**Caution:** with two seeds the run-to-run (seed) variance is estimated from one degree "
                   "of freedom and can come out as zero by chance; treat the verdicts as provisional "
                   "until more seeds have run.")
    late = [r["late_best"] for r in rows if r["n_seeds"] and not math.isnan(r["late_best"])]
    gains = [r["late_gain"] for r in rows if r["n_seeds"] and not math.isnan(r["late_gain"])]
    if gains:
        gain = statistics.median(gains)
        change = (f"validation accuracy changed by {_pct(gain, sign=True)} points over the last quarter of the "
                  f"epochs (median over stems; range {_pct(min(gains), sign=True)} to {_pct(max(gains), sign=True)})"
                  + (f", and {statistics.mean(late):.0%} of the runs had their best validation epoch in the last 10%"
                     if late else ""))
        out.append(f"**Convergence:** {change}: " + (
            "the runs had plateaued." if gain < 0.01 else
            "a decaying schedule gains most at its end, so only a longer schedule tells whether the models "
            "were still improving (see the validation curves)."))
    base = [r for r in rows if r["variant"] == study.baseline and r["n_seeds"]]
    if base and n:
        b = base[0]
        sampling = math.sqrt(b["acc_mean"] * (1 - b["acc_mean"]) / n)
        out.append(f"**Seed noise:** `{study.baseline}` varies by {_pct(b['acc_std'])} points (std) between "
                   f"seeds; the item sampling error of one run on {n} items is {_pct(sampling)} points; "
                   f"the median |Δ| between a stem and the baseline is "
                   f"{_pct(statistics.median(abs(r['diff']) for r in compared))} points.")
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
baseline on the same seeds and the same test items. Δ is the mean paired accuracy difference; its
95% interval and p come from a paired t-test that treats seeds and items as crossed random
effects (unbiased standard error, Satterthwaite degrees of freedom), and p is Holm-adjusted over
the stems of a dataset. Two checks are shown beside it: a {n_boot}-replicate paired bootstrap
that resamples items and seeds together, and the exact McNemar test on discordant pairs pooled
over seeds (it ignores the correlation between seeds, so it overstates the evidence). MDE =
(t(1-α/2) + t(power)) x SE is the smallest true difference the study detects with {power:.0%}
power at α = {alpha}; a stem is called better or worse only when its Holm p < {alpha} and
|Δ| >= MDE, otherwise indistinguishable. The seed-variance check repeats the test with each
stem's seed variance (estimated from its own seeds and floored at 0) raised to at least the one
pooled over the dataset's stems; a verdict that changes there rests on a seed variance estimated
from too few seeds. See docs/study.md."""


def _cells_arg(cells: Optional[list[str]]) -> str:
    return " --cells " + " ".join(f"'{c}'" for c in cells) if cells else ""


def write_report(study: Study, out: Union[str, Path, None] = None, cells: Optional[list[str]] = None) -> Path:
    """Write ``report.md``, ``results.csv`` and the figures; returns the report's path. ``cells``:
    glob patterns of the cells to read (e.g. only the seeds every stem has finished); all if None."""
    out = Path(out) if out else Path(study.out_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(study, cells)
    rows, results = a["rows"], a["results"]
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "receptive_field": _pair(r["receptive_field"]), "stride": _pair(r["stride"]),
                        "seed_accs": ";".join(f"{x:.6g}" for x in r["seed_accs"])})
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
                  *[x + "\n" for x in _summary(d, drows, a["components"][d], study, a["pooled_seed"].get(d))]]
    figures = [plots.accuracy_vs_flops(rows, out / "accuracy_vs_flops.png"),
               plots.accuracy_per_stem(rows, out / "accuracy_per_stem.png"),
               plots.validation_curves(results, datasets, out / "validation_curves.png")]
    for d in datasets:
        models = {v: next((r.checkpoint for r in reps if r.checkpoint), None)
                  for (dd, v), reps in results.items() if dd == d}
        models = {v: p for v, p in models.items() if p}
        figures.append(plots.filters_figure(models, f"{d}: learned first-layer filters (input channel 0)",
                                            out / f"filters_{d}.png") if models else None)
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})\n" for f in figures if f]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
