"""Statistics of a stem study: pure functions over numbers and 0/1 correctness arrays.

Why item-level and paired: two stems trained with the same seed see the same data order and
are tested on the same items, so most of the item-sampling noise cancels in their difference.
Comparing only the means of run accuracies throws that pairing away, and with seed noise about
as large as the stem differences it leaves nothing to see. For a stem ``a`` and the baseline
``b`` we have correctness arrays ``(seeds, items)``; seeds and test items are both random samples
(of training runs and of test clips), crossed. Where test items come in clusters (the clips of
one class, game or soundfont), the *unit* of analysis is the cluster: :func:`unit_table`
collapses items to clusters first, and everything below runs on the ``(seeds, units)`` table.

- :func:`crossed_t_test` — the paired test: the mean difference with the unbiased standard error
  of a seeds x units random-effects design (the quasi-F error term of psycholinguistics'
  subjects x items designs, Clark 1973) and Satterthwaite's (1946) degrees of freedom over all
  three mean squares, so that its df move smoothly with the data (no variance is floored).
- :func:`decide` — the verdicts of one dataset's stems: Bonferroni-simultaneous intervals, and
  *better* / *worse* when the interval excludes 0, *equivalent* when it lies inside the declared
  margin (two one-sided tests, Schuirmann 1987), else *inconclusive*. One interval decides all
  four verdicts, so an interval and its verdict never disagree.
- :func:`rule_power` — the power of that rule as used: the smallest true difference it calls
  better/worse with probability ``power``, and the probability that it calls a stem *equivalent*
  when the true difference is 0 (normal theory with the test's SE and df, exact integrals).
- :func:`paired_bootstrap` — the assumption-light check: resample units *and* seeds with
  replacement (pairs kept together). It counts the seed x unit term about three times (too wide
  when flips dominate) and cannot see more seed variance than its K seeds show.
- :func:`mcnemar_exact` — exact McNemar on the discordant pairs pooled over seeds: the textbook
  test, but it treats the K repetitions of an item (and the items of a cluster) as independent;
  for reference only.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as _st

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


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
                     alpha: float = 0.05, seed: int = 0, chunk: int = 500,
                     clusters: Optional[Sequence] = None) -> dict:
    """Paired two-way bootstrap of the accuracy difference ``a - b`` over seeds and units.

    Args:
        a_correct, b_correct: 0/1 arrays ``(seeds, items)``; row k of both comes from runs with
            seed k, column i is the same test item. A 1-D array is one seed.
        n_boot: bootstrap replicates. Each draws K seeds and U units with replacement and takes
            the mean difference over the K x U (seed, unit) pairs they index.
        clusters: one cluster label per item; the units resampled are then the clusters
            (:func:`unit_table`), else the items.
        alpha: 1 - the confidence of the percentile interval.
        seed: seed of the resampling (results are reproducible).

    Returns:
        ``{diff, low, high, se, p, n_seeds, n_units, n_boot, test}``: observed mean difference
        (accuracy points as a fraction), percentile interval, bootstrap standard error, and the
        two-sided p-value of H0 "no difference" from the bootstrap distribution shifted to
        mean 0: ``(1 + #{|t* - t| >= |t|}) / (n_boot + 1)``.
    """
    d = unit_table(a_correct, b_correct, clusters)
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
            "p": float(min(1.0, p)) if observed != 0 else 1.0, "n_seeds": k, "n_units": n,
            "n_boot": n_boot, "test": "paired bootstrap over units and seeds"}


def _counts(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """``(m, n)`` counts of how often each of n units is drawn in m resamples of size n."""
    idx = rng.integers(0, n, size=(m, n)) + n * np.arange(m)[:, None]
    return np.bincount(idx.ravel(), minlength=m * n).reshape(m, n)


def unit_table(a_correct: np.ndarray, b_correct: np.ndarray,
               clusters: Optional[Sequence] = None) -> np.ndarray:
    """The paired differences ``d = a - b`` as a ``(seeds, units)`` table whose mean is the mean
    accuracy difference.

    Without ``clusters`` a unit is a test item: the table is ``d`` itself. With ``clusters`` (one
    label per item, e.g. its class, game or soundfont) a unit is a cluster of ``n_g`` items, and
    its value at seed k is ``mean(d) + (G / N) * sum_{i in g} (d[k, i] - mean(d))``: the cluster's
    share of the mean difference, centred on the grand mean as in the cluster-robust (Liang-Zeger)
    variance, so unequal cluster sizes add no variance of their own. The mean of the table equals
    the mean of ``d``; the items within a cluster are no longer treated as independent (Cameron,
    Gelbach & Miller 2011, two-way clustering by seed and cluster).
    """
    a, b = _pair(a_correct, b_correct)
    d = a.astype(float) - b.astype(float)
    d = d[None, :] if d.ndim == 1 else d
    if clusters is None:
        return d
    clusters = np.asarray(clusters)
    if clusters.shape != (d.shape[1],):
        raise ValueError(f"clusters: need one label per item ({d.shape[1]}), got shape {clusters.shape}")
    _, index = np.unique(clusters, return_inverse=True)
    g, n = int(index.max()) + 1, d.shape[1]
    grand = d.mean()
    totals = np.zeros((d.shape[0], g))
    np.add.at(totals, (slice(None), index), d - grand)
    return grand + totals * (g / n)


def variance_components(a_correct: np.ndarray, b_correct: np.ndarray,
                        clusters: Optional[Sequence] = None) -> dict:
    """Two-way crossed random-effects decomposition of the paired differences (per unit, see
    :func:`unit_table`).

    Model ``x[k, u] = mu + seed_k + unit_u + e_ku``; moment (ANOVA) estimates from the mean squares
    ``ms_seed`` (df K - 1), ``ms_unit`` (U - 1) and ``ms_residual`` ((K - 1)(U - 1)):
    ``seed`` (run-to-run variance of a whole run's difference), ``unit`` and ``residual``
    (seed x unit: the units that flip from run to run), each floored at 0 for display.
    ``var_mean`` is the unbiased variance of the mean difference,
    ``(ms_seed + ms_unit - ms_residual) / (K U)`` = ``seed/K + unit/U + residual/(K U)`` before
    flooring, never floored itself below ``ms_residual / (K U)``. With one seed the seed and
    residual terms cannot be separated (NaN) and ``var_mean`` is ``ms_unit / U``.
    """
    x = unit_table(a_correct, b_correct, clusters)
    k, n = x.shape
    g = x.mean()
    seed_means, unit_means = x.mean(axis=1), x.mean(axis=0)
    ms_unit = k * np.sum((unit_means - g) ** 2) / max(n - 1, 1)
    out = {"n_seeds": k, "n_units": n, "n_items": np.asarray(a_correct).shape[-1],
           "clustered": clusters is not None, "ms_unit": float(ms_unit)}
    if k == 1:
        return {**out, "seed": math.nan, "unit": float(ms_unit), "residual": math.nan,
                "ms_seed": math.nan, "ms_residual": math.nan, "var_mean": float(ms_unit / n)}
    ms_seed = n * np.sum((seed_means - g) ** 2) / (k - 1)
    resid = x - seed_means[:, None] - unit_means[None, :] + g
    ms_res = np.sum(resid ** 2) / ((k - 1) * max(n - 1, 1))
    var_mean, _ = _mean_variance(ms_seed, ms_unit, ms_res, k, n)
    return {**out, "seed": max(0.0, float((ms_seed - ms_res) / n)), "unit": max(0.0, float((ms_unit - ms_res) / k)),
            "residual": float(ms_res), "ms_seed": float(ms_seed), "ms_residual": float(ms_res),
            "var_mean": float(var_mean)}


def _mean_variance(ms_seed, ms_unit, ms_res, k: int, n: int):
    """``(var_mean, df)`` of a seeds x units design from its mean squares (numbers or arrays):
    the unbiased ``(ms_seed + ms_unit - ms_res) / (k n)`` (``ms_res / (k n)`` in the rare case it
    is not positive) and Satterthwaite's df over all three mean squares, kept within
    ``[min(k - 1, n - 1), k n - 1]``: a difference of mean squares can make Satterthwaite's
    formula fall below the df of any of its terms, where it is needlessly conservative."""
    dfs = (k - 1, max(n - 1, 1), (k - 1) * max(n - 1, 1))
    total = ms_seed + ms_unit - ms_res
    total = np.maximum(total, ms_res)
    denom = ms_seed ** 2 / dfs[0] + ms_unit ** 2 / dfs[1] + ms_res ** 2 / dfs[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denom > 0, total ** 2 / denom, min(dfs[:2]))
    return total / (k * n), np.clip(df, min(dfs[:2]), k * n - 1)


def satterthwaite_df(c: dict) -> float:
    """Degrees of freedom of ``var_mean`` of :func:`variance_components` (Satterthwaite 1946):
    ``(ms_seed + ms_unit - ms_residual)^2 / sum(ms_j^2 / df_j)`` over all three mean squares.

    No term is dropped when its variance estimate is negative, so the df change smoothly with the
    data (with a floored seed variance they jumped from about K - 1 to about N at the floor).
    The df are small when the seed mean square dominates (about K - 1) and large when the unit
    one does (about U - 1); they are kept within ``[min(K - 1, U - 1), K U - 1]``. One seed: ``U - 1``.
    """
    k, n = c["n_seeds"], c["n_units"]
    if k == 1:
        return float(max(n - 1, 1))
    return float(_mean_variance(c["ms_seed"], c["ms_unit"], c["ms_residual"], k, n)[1])


def crossed_t_test(a_correct: np.ndarray, b_correct: np.ndarray, alpha: float = 0.05,
                   clusters: Optional[Sequence] = None) -> dict:
    """Paired t-test of the accuracy difference ``a - b`` with seeds and units (items, or the
    ``clusters`` they come in) as crossed random effects.

    The standard error is ``sqrt(var_mean)`` of :func:`variance_components`, the degrees of freedom
    :func:`satterthwaite_df`. Returns ``{diff, low, high, se, df, p, test, components}``
    (``1 - alpha`` interval, two-sided p).
    """
    c = variance_components(a_correct, b_correct, clusters)
    diff = float(unit_table(a_correct, b_correct, clusters).mean())
    se, df = math.sqrt(c["var_mean"]), satterthwaite_df(c)
    test = "paired t-test, seeds and units crossed random effects (Satterthwaite df)"
    if se == 0:
        return {"diff": diff, "low": diff, "high": diff, "se": 0.0, "df": df,
                "p": 1.0 if diff == 0 else 0.0, "test": test, "components": c}
    half = float(_st.t.ppf(1 - alpha / 2, df)) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "se": se, "df": df,
            "p": float(2 * _st.t.sf(abs(diff) / se, df)), "test": test, "components": c}


def simultaneous_level(alpha: float, m: int) -> float:
    """Bonferroni: the per-comparison two-sided level ``alpha / m`` whose ``1 - alpha/m``
    intervals hold for all ``m`` comparisons at once with probability >= ``1 - alpha``."""
    return alpha / max(m, 1)


def decide(diff: float, se: float, df: float, m: int, margin: Optional[float],
           alpha: float = 0.05, n_seeds: int = 2) -> dict:
    """The verdict of one stem against the baseline, in a family of ``m`` such comparisons.

    The interval is the simultaneous ``1 - alpha/m`` t-interval ``diff ± t(1 - alpha/(2m), df) * se``.
    *better* / *worse*: it excludes 0 (the Bonferroni-adjusted two-sided test at ``alpha``; the
    family-wise rate of a false better/worse is at most ``alpha``). *equivalent*: it lies inside
    ``(-margin, +margin)``: two one-sided tests (Schuirmann 1987), each at ``alpha/(2m)``, which
    call equivalence at a true difference of ±margin with probability at most ``alpha/(2m)``.
    *inconclusive*: neither; also with one seed (run-to-run noise is then invisible) or no margin
    for an equivalence call. Returns ``{verdict, low, high, p_adj, level}``; ``p_adj`` is the
    Bonferroni-adjusted p-value, ``min(1, m p)``, < alpha exactly when the interval excludes 0.
    """
    level = simultaneous_level(alpha, m)
    if se > 0:
        half = float(_st.t.ppf(1 - level / 2, df)) * se
        p_adj = min(1.0, m * float(2 * _st.t.sf(abs(diff) / se, df)))
    else:
        half, p_adj = 0.0, (1.0 if diff == 0 else 0.0)
    low, high = diff - half, diff + half
    if n_seeds < 2:
        verdict = "inconclusive"
    elif low > 0:
        verdict = "better"
    elif high < 0:
        verdict = "worse"
    elif margin is not None and -margin < low and high < margin:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return {"verdict": verdict, "low": low, "high": high, "p_adj": p_adj, "level": 1 - level}


def rule_power(components: dict, m: int, margin: Optional[float], alpha: float = 0.05,
               power: float = 0.8, n_seeds: Optional[int] = None, draws: int = 4000) -> dict:
    """The power of :func:`decide` as used, for a comparison whose variance components are
    ``components`` (:func:`variance_components`), in a family of ``m``.

    Simulated from the fitted components (each floored at 0): in a balanced normal seeds x units
    design the mean difference and the three mean squares are independent, the mean squares
    scaled chi-squares, so ``draws`` draws of the mean squares (fixed random seed: the figures are
    reproducible) give the test's standard error, Satterthwaite df and critical value exactly as
    the rule computes them, and the probability of each call follows in closed form per draw.

    Returns ``{detectable, p_equivalent, se}``: ``detectable`` is the smallest true difference
    the rule calls better/worse with probability ``power``; ``p_equivalent`` the probability that
    it calls *equivalent* when the true difference is 0 (NaN without a margin); ``se`` the true
    standard error of the mean difference. ``n_seeds``: the design's seeds (default: those of
    ``components``), e.g. twice as many for a projection.
    """
    k, n = n_seeds or components["n_seeds"], components["n_units"]
    out = {"detectable": math.nan, "p_equivalent": math.nan, "se": math.nan}
    if k < 2 or math.isnan(components.get("seed", math.nan)):
        return out
    seed, unit, res = (max(0.0, components[key]) for key in ("seed", "unit", "residual"))
    sd = math.sqrt(seed / k + unit / n + res / (k * n))
    if not sd > 0:
        return out
    rng = np.random.default_rng(12345)
    dfs = (k - 1, max(n - 1, 1), (k - 1) * max(n - 1, 1))
    expected = (n * seed + res, k * unit + res, res)
    var_mean, df = _mean_variance(*(e * rng.chisquare(f, draws) / f for e, f in zip(expected, dfs)), k, n)
    h = _st.t.ppf(1 - simultaneous_level(alpha, m) / 2, df) * np.sqrt(var_mean)

    def called(delta: float) -> float:
        return float(np.mean(_st.norm.cdf((delta - h) / sd) + _st.norm.cdf((-delta - h) / sd)))
    out["se"] = sd
    out["detectable"] = float(optimize.brentq(lambda d: called(d) - power, 0.0, float(h.max()) + 10 * sd,
                                              xtol=1e-6 * sd))
    if margin is not None:
        out["p_equivalent"] = float(np.mean(np.clip(2 * _st.norm.cdf((margin - h) / sd) - 1, 0, None)))
    return out


def compare(a_correct: np.ndarray, b_correct: np.ndarray, clusters: Optional[Sequence] = None,
            n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Everything the report says about one stem against the baseline on one dataset, before the
    family's adjustment (:func:`decide` does that): the paired test (``diff, low, high, se, df, p,
    components``: :func:`crossed_t_test`), the bootstrap over seeds and units (``p_boot, boot_low,
    boot_high, boot_se``) and McNemar over items (``p_mcnemar, n10, n01``)."""
    t = crossed_t_test(a_correct, b_correct, alpha=alpha, clusters=clusters)
    boot = paired_bootstrap(a_correct, b_correct, n_boot=n_boot, alpha=alpha, seed=seed, clusters=clusters)
    mc = mcnemar_exact(a_correct, b_correct)
    c = t["components"]
    return {**t, "n_seeds": c["n_seeds"], "n_items": c["n_items"], "n_units": c["n_units"],
            "p_boot": boot["p"], "boot_low": boot["low"], "boot_high": boot["high"], "boot_se": boot["se"],
            "p_mcnemar": mc["p"], "n10": mc["n10"], "n01": mc["n01"]}


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same shape (seeds, items); got {a.shape} and {b.shape}")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("paired outcomes must be 0/1 (or bool) correctness values")
    return a.astype(bool), b.astype(bool)
