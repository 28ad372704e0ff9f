"""Statistics of a stem study: pure functions over numbers and 0/1 correctness arrays.

Why item-level and paired: two stems trained with the same seed see the same data order and
are tested on the same items, so most of the item-sampling noise cancels in their difference.
Comparing only the means of run accuracies throws that pairing away, and with seed noise about
as large as the stem differences it leaves nothing to see. For a stem ``a`` and the baseline
``b`` we have correctness arrays ``(seeds, items)``; seeds and items are both random samples
(of training runs and of test clips), crossed. The tests:

- :func:`crossed_t_test` — the decision test: the mean paired difference with the unbiased
  standard error of a seed x item random-effects design and Satterthwaite's degrees of freedom
  (the quasi-F construction of psycholinguistics' subjects x items designs). Calibrated when
  seed noise dominates (df near K - 1) and when item flips dominate.
- :func:`paired_bootstrap` — the assumption-light check: resample items *and* seeds with
  replacement (the two-way "pigeonhole" bootstrap, pairs kept together). It counts the seed x
  item term about three times (too wide when flips dominate) and cannot see more seed variance
  than its K seeds show (too narrow when seed noise dominates and K is small).
- :func:`mcnemar_exact` — exact McNemar on the discordant pairs pooled over seeds: the textbook
  test, but it treats the K repetitions of an item as independent; for reference only.
- :func:`pooled_seed_variance` — the check on the decision test's weak spot: each stem's seed
  variance rests on K - 1 degrees of freedom and is floored at 0, so with few seeds it can come
  out as zero by chance and narrow the interval; pooled over a dataset's stems it is steadier,
  and :func:`crossed_t_test` accepts it as a floor (``seed_floor``).
- :func:`min_detectable_difference` — the power statement: the true difference the decision
  test detects with probability ``power`` at level ``alpha``, ``(t_{1-alpha/2} + t_power) * SE``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy import stats as _st

VERDICTS = ("better", "worse", "indistinguishable")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample std (ddof=1) and t-based ``confidence`` interval of ``values`` (e.g. over seeds).

    With one value the std and interval are NaN. Returns ``{mean, std, low, high, half, n}``.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "low": math.nan, "high": math.nan, "half": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "low": math.nan, "high": math.nan, "half": math.nan, "n": 1}
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "half": half, "n": n}


def macro_f1(labels: Sequence, preds: Sequence, classes: Optional[Sequence] = None) -> float:
    """Unweighted mean over ``classes`` (default: every label seen) of the per-class F1 score.

    A class with no true and no predicted items scores 0, as in torchmetrics and scikit-learn.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    scores = []
    for c in classes:
        tp = np.sum((preds == c) & (labels == c))
        denom = np.sum(preds == c) + np.sum(labels == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else math.nan


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact two-sided McNemar test of ``a`` against ``b`` on paired 0/1 outcomes of any shape.

    Discordant pairs are pooled over all axes (items and seeds): ``n10`` = a right, b wrong;
    ``n01`` = a wrong, b right. Under H0 ``n10 ~ Binomial(n10 + n01, 1/2)``; the p-value is
    ``min(1, 2 * P(X <= min(n10, n01)))`` (equal to ``scipy.stats.binomtest``'s two-sided one).
    Returns ``{n10, n01, p, test}``.
    """
    a, b = _pair(a_correct, b_correct)
    n10 = int(np.sum(a & ~b))
    n01 = int(np.sum(~a & b))
    n = n10 + n01
    p = 1.0 if n == 0 else min(1.0, 2.0 * float(_st.binom.cdf(min(n10, n01), n, 0.5)))
    return {"n10": n10, "n01": n01, "p": p, "test": "exact McNemar (pooled over seeds)"}


def paired_bootstrap(a_correct: np.ndarray, b_correct: np.ndarray, n_boot: int = 10000,
                     alpha: float = 0.05, seed: int = 0, chunk: int = 500) -> dict:
    """Paired two-way bootstrap of the accuracy difference ``a - b`` over seeds and items.

    Args:
        a_correct, b_correct: 0/1 arrays ``(seeds, items)``; row k of both comes from runs with
            seed k, column i is the same test item. A 1-D array is one seed.
        n_boot: bootstrap replicates. Each draws K seeds and N items with replacement and takes
            the mean difference over the K x N (seed, item) pairs they index.
        alpha: 1 - the confidence of the percentile interval.
        seed: seed of the resampling (results are reproducible).

    Returns:
        ``{diff, low, high, se, p, n_seeds, n_items, n_boot, test}``: observed mean difference
        (accuracy points as a fraction), percentile interval, bootstrap standard error, and the
        two-sided p-value of H0 "no difference" from the bootstrap distribution shifted to
        mean 0: ``(1 + #{|t* - t| >= |t|}) / (n_boot + 1)``.
    """
    a, b = _pair(a_correct, b_correct)
    d = a.astype(np.float64) - b.astype(np.float64)
    if d.ndim == 1:
        d = d[None, :]
    k, n = d.shape
    rng = np.random.default_rng(seed)
    observed = float(d.mean())
    reps = []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        reps.append(((_counts(rng, m, k) @ d) * _counts(rng, m, n)).sum(axis=1) / (k * n))
    t = np.concatenate(reps)
    low, high = np.quantile(t, [alpha / 2, 1 - alpha / 2])
    p = (1 + np.sum(np.abs(t - observed) >= abs(observed) - 1e-12)) / (n_boot + 1)
    return {"diff": observed, "low": float(low), "high": float(high), "se": float(t.std(ddof=1)),
            "p": float(min(1.0, p)) if observed != 0 else 1.0, "n_seeds": k, "n_items": n,
            "n_boot": n_boot, "test": "paired bootstrap over items and seeds"}


def _counts(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """``(m, n)`` counts of how often each of n units is drawn in m resamples of size n."""
    idx = rng.integers(0, n, size=(m, n)) + n * np.arange(m)[:, None]
    return np.bincount(idx.ravel(), minlength=m * n).reshape(m, n)


def variance_components(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Two-way crossed random-effects decomposition of the paired differences ``d = a - b``.

    Model ``d[k, i] = mu + seed_k + item_i + e_ki``; moment (ANOVA) estimates, floored at 0:
    ``seed`` (run-to-run variance of a whole run's difference), ``item`` and ``residual``
    (seed x item: the items that flip from run to run); ``seed_raw`` is the seed estimate before
    the floor (it can be negative), for :func:`pooled_seed_variance`. ``var_mean`` is the unbiased variance of
    the mean difference, ``seed/K + item/N + residual/(N K)``; :func:`paired_bootstrap` counts
    the residual about three times, so its SE is larger (conservative) when flips dominate.
    With one seed the seed and residual terms cannot be separated (NaN).
    """
    a, b = _pair(a_correct, b_correct)
    d = a.astype(float) - b.astype(float)
    d = d[None, :] if d.ndim == 1 else d
    k, n = d.shape
    g = d.mean()
    seed_means, item_means = d.mean(axis=1), d.mean(axis=0)
    ms_item = k * np.sum((item_means - g) ** 2) / max(n - 1, 1)
    if k == 1:
        return {"seed": math.nan, "item": float(ms_item), "residual": math.nan,
                "var_mean": float(ms_item / n), "n_seeds": 1, "n_items": n, "seed_raw": math.nan}
    ms_seed = n * np.sum((seed_means - g) ** 2) / (k - 1)
    resid = d - seed_means[:, None] - item_means[None, :] + g
    ms_res = np.sum(resid ** 2) / ((k - 1) * max(n - 1, 1))
    seed_raw = float((ms_seed - ms_res) / n)
    out = {"seed": max(0.0, seed_raw), "item": max(0.0, (ms_item - ms_res) / k),
           "residual": float(ms_res), "n_seeds": k, "n_items": n, "seed_raw": seed_raw}
    out["var_mean"] = projected_variance(out, k, n)
    return out


def crossed_t_test(a_correct: np.ndarray, b_correct: np.ndarray, alpha: float = 0.05,
                   seed_floor: float = 0.0, seed_floor_df: Optional[float] = None) -> dict:
    """Paired t-test of the accuracy difference ``a - b`` with seeds and items as crossed random effects.

    The standard error is the unbiased ``sqrt(var_mean)`` of :func:`variance_components` (the
    quasi-F error term of a seed x item design), with Satterthwaite's degrees of freedom: close
    to ``K - 1`` when run-to-run (seed) variation dominates, large when item flips dominate.
    ``seed_floor``: a seed variance to use where the stem's own estimate is smaller (e.g. the
    :func:`pooled_seed_variance` of its dataset), counted with ``seed_floor_df`` degrees of
    freedom; the default 0 is the plain test.
    Returns ``{diff, low, high, se, df, p, test}`` (``1 - alpha`` interval, two-sided p).
    """
    a, b = _pair(a_correct, b_correct)
    d = a.astype(float) - b.astype(float)
    d = d[None, :] if d.ndim == 1 else d
    k, n = d.shape
    c = variance_components(a, b)
    seed_df = k - 1
    if k > 1 and seed_floor > c["seed"]:
        c = {**c, "seed": float(seed_floor)}
        c["var_mean"] = projected_variance(c, k, n)
        seed_df = seed_floor_df if seed_floor_df else k - 1
    diff, se = float(d.mean()), math.sqrt(c["var_mean"])
    if k == 1:
        df = float(max(n - 1, 1))
    else:
        ms = {"seed": (c["seed"] * n + c["residual"], seed_df),
              "item": (c["item"] * k + c["residual"], max(n - 1, 1)),
              "residual": (c["residual"], (k - 1) * max(n - 1, 1))}
        coef = {"seed": float(c["seed"] > 0), "item": float(c["item"] > 0)}
        coef["residual"] = 1.0 - coef["seed"] - coef["item"]
        denom = sum((coef[j] * ms[j][0]) ** 2 / ms[j][1] for j in ms)
        df = float((sum(coef[j] * ms[j][0] for j in ms)) ** 2 / denom) if denom > 0 else float(n - 1)
    if se == 0:
        return {"diff": diff, "low": diff, "high": diff, "se": 0.0, "df": df, "p": 1.0 if diff == 0 else 0.0,
                "test": "crossed t"}
    half = float(_st.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * _st.t.sf(abs(diff) / se, df))
    return {"diff": diff, "low": diff - half, "high": diff + half, "se": se, "df": df, "p": p,
            "test": "paired t-test, seeds and items crossed random effects (Satterthwaite df)"}


def pooled_seed_variance(components: Sequence[dict]) -> dict:
    """The seed variance of a paired difference, pooled over the stems of one dataset.

    ``components``: :func:`variance_components` of each stem against the same baseline. Each
    stem's own estimate rests on ``K - 1`` degrees of freedom and is floored at 0; here the
    unfloored estimates are averaged, weighted by their degrees of freedom, and floored once.
    Returns ``{"seed", "df", "n_stems"}`` (``seed`` NaN when no stem has two seeds). The stems
    share the baseline's runs, so the estimates are correlated and ``df`` (the sum of the
    stems' ``K - 1``) overstates the evidence somewhat: use it as a check on the verdicts (as a
    ``seed_floor`` of :func:`crossed_t_test`), not as the decision test itself.
    """
    usable = [c for c in components if c.get("n_seeds", 1) >= 2 and not math.isnan(c.get("seed_raw", math.nan))]
    if not usable:
        return {"seed": math.nan, "df": 0, "n_stems": 0}
    df = sum(c["n_seeds"] - 1 for c in usable)
    seed = sum(c["seed_raw"] * (c["n_seeds"] - 1) for c in usable) / df
    return {"seed": max(0.0, float(seed)), "df": df, "n_stems": len(usable)}


def projected_variance(components: dict, n_seeds: int, n_items: int) -> float:
    """Variance of the mean paired difference with ``n_seeds`` seeds and ``n_items`` test items,
    from :func:`variance_components` (for "how many seeds would it take" statements)."""
    c = components
    return float(c["seed"] / n_seeds + c["item"] / n_items + c["residual"] / (n_seeds * n_items))


def min_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8,
                              df: float = math.inf) -> float:
    """Smallest true difference detected with probability ``power`` by a two-sided level-``alpha``
    test whose estimate has standard error ``se``: ``(z_{1-alpha/2} + z_{power}) * se`` (2.80 SE
    at the defaults), with t quantiles of ``df`` degrees of freedom when given (3.72 SE at df=4)."""
    q = _st.norm if math.isinf(df) else _st.t(df)
    return float((q.ppf(1 - alpha / 2) + q.ppf(power)) * se)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(diff: float, p: float, mde: float, alpha: float = 0.05) -> str:
    """``better`` / ``worse`` when significant at ``alpha`` *and* at least the MDE in size,
    else ``indistinguishable``: a difference below what the study could reliably detect is
    never called, even if its p-value happens to be small."""
    if p < alpha and abs(diff) >= mde:
        return "better" if diff > 0 else "worse"
    return "indistinguishable"


def compare(a_correct: np.ndarray, b_correct: np.ndarray, n_boot: int = 10000,
            alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> dict:
    """Everything the report says about one stem against the baseline on one dataset:
    the decision test (``diff, low, high, se, df, p``: :func:`crossed_t_test`), the bootstrap
    (``p_boot, boot_low, boot_high, boot_se``), McNemar (``p_mcnemar, n10, n01``), the ``mde``,
    the variance ``components`` and the ``verdict`` (before any multiple-comparison adjustment)."""
    t = crossed_t_test(a_correct, b_correct, alpha=alpha)
    boot = paired_bootstrap(a_correct, b_correct, n_boot=n_boot, alpha=alpha, seed=seed)
    mc = mcnemar_exact(a_correct, b_correct)
    mde = min_detectable_difference(t["se"], alpha, power, t["df"])
    return {**t, "n_seeds": boot["n_seeds"], "n_items": boot["n_items"],
            "p_boot": boot["p"], "boot_low": boot["low"], "boot_high": boot["high"], "boot_se": boot["se"],
            "p_mcnemar": mc["p"], "n10": mc["n10"], "n01": mc["n01"], "mde": mde,
            "components": variance_components(a_correct, b_correct),
            "verdict": verdict(t["diff"], t["p"], mde, alpha)}


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same shape (seeds, items); got {a.shape} and {b.shape}")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("paired outcomes must be 0/1 (or bool) correctness values")
    return a.astype(bool), b.astype(bool)
