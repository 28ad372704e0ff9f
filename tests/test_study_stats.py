"""Study statistics on synthetic data with known answers."""
import math

import numpy as np
import pytest
from scipy import stats as st

from audiostem.study import stats


def pairs(n10, n01, n11=5, n00=5):
    """Paired 0/1 outcomes with the given counts of (a, b) = (1,0), (0,1), (1,1), (0,0)."""
    a = np.array([1] * n10 + [0] * n01 + [1] * n11 + [0] * n00)
    b = np.array([0] * n10 + [1] * n01 + [1] * n11 + [0] * n00)
    return a, b


def test_mean_ci_is_the_t_interval():
    r = stats.mean_ci([1, 2, 3, 4, 5])
    assert r["mean"] == 3 and r["std"] == pytest.approx(math.sqrt(2.5))
    assert r["half"] == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5))
    assert (r["low"], r["high"]) == pytest.approx((3 - r["half"], 3 + r["half"]))
    one = stats.mean_ci([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["low"]) and one["n"] == 1
    assert stats.mean_ci([])["n"] == 0


@pytest.mark.parametrize("n10, n01", [(0, 0), (3, 0), (10, 4), (4, 10), (25, 25), (60, 37), (1, 200)])
def test_mcnemar_matches_the_exact_binomial_test(n10, n01):
    a, b = pairs(n10, n01)
    r = stats.mcnemar_exact(a, b)
    assert (r["n10"], r["n01"]) == (n10, n01)
    expected = 1.0 if n10 + n01 == 0 else st.binomtest(n10, n10 + n01, 0.5).pvalue
    assert r["p"] == pytest.approx(expected, rel=1e-9, abs=1e-300)
    # pooled over seeds: a (seeds, items) array gives the same as its flattening
    assert stats.mcnemar_exact(np.tile(a, (3, 1)), np.tile(b, (3, 1)))["n10"] == 3 * n10


def test_macro_f1_and_holm_by_hand():
    labels = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "c", "c"]
    # a: P=1, R=2/3 -> 0.8; b: P=1/2, R=1/2 -> 0.5; c: P=1/2, R=1 -> 2/3
    assert stats.macro_f1(labels, preds) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert stats.macro_f1(labels, preds, ["a", "b", "c", "d"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 4)
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.3, 0.02]) == pytest.approx([0.3, 0.04])


def test_bootstrap_exact_cases_and_reproducibility():
    a, b = pairs(30, 10, 40, 20)
    same = stats.paired_bootstrap(a, a, n_boot=200)
    assert (same["diff"], same["low"], same["high"], same["p"]) == (0, 0, 0, 1)
    r = stats.paired_bootstrap(a, b, n_boot=2000)
    assert r["diff"] == pytest.approx(20 / 100) and r["low"] < 0.2 < r["high"]
    assert r["n_seeds"] == 1 and r["n_items"] == 100
    # one seed: the bootstrap SE is the item-level SE of the mean difference
    d = (a - b).astype(float)
    assert r["se"] == pytest.approx(d.std() / math.sqrt(len(d)), rel=0.1)
    assert stats.paired_bootstrap(a, b, n_boot=500, seed=3) == stats.paired_bootstrap(a, b, n_boot=500, seed=3)
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar_exact(a * 2, b)


def simulate(rng, delta, seeds=5, items=200, seed_sd=0.02):
    """Correctness of a stem and a baseline on the same items and seeds; the population
    accuracy difference is exactly ``delta``. Items differ in difficulty; every run (a stem at a
    seed) has its own accuracy offset, as training noise does."""
    q = rng.uniform(0.35, 0.65, items)
    off_a = rng.normal(0, seed_sd, (seeds, 1))
    off_b = rng.normal(0, seed_sd, (seeds, 1))
    shared = rng.random((seeds, items))   # correlated flips: an item hard for one is hard for both
    own_a, own_b = rng.random((seeds, items)), rng.random((seeds, items))
    u_a = np.where(rng.random((seeds, items)) < 0.5, shared, own_a)
    u_b = np.where(rng.random((seeds, items)) < 0.5, shared, own_b)
    return (u_a < q + delta + off_a).astype(int), (u_b < q + off_b).astype(int)


@pytest.mark.parametrize("seed_sd", [0.0, 0.06])   # item flips dominate / run-to-run noise dominates
def test_crossed_t_test_is_calibrated(seed_sd):
    rng = np.random.default_rng(0)
    covered, rejected, sims = 0, 0, 300
    for i in range(sims):
        r = stats.crossed_t_test(*simulate(rng, 0.03, seed_sd=seed_sd))
        covered += r["low"] <= 0.03 <= r["high"]
        rejected += stats.crossed_t_test(*simulate(rng, 0.0, seed_sd=seed_sd))["p"] < 0.05
    assert 0.92 <= covered / sims <= 0.99
    assert rejected / sims <= 0.08


def test_bootstrap_covers_the_true_difference():
    rng = np.random.default_rng(0)
    sims = 100
    covered = 0
    for i in range(sims):
        r = stats.paired_bootstrap(*simulate(rng, 0.03), n_boot=300, seed=i)
        covered += r["low"] <= 0.03 <= r["high"]
    # nominal 95%; with item flips dominating, the two-way bootstrap is conservative
    assert 0.93 <= covered / sims <= 1.0


def test_mde_formula_and_power_at_the_mde():
    assert stats.min_detectable_difference(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert stats.min_detectable_difference(0.01, df=4) == pytest.approx((2.776445 + 0.940965) * 0.01, rel=1e-5)
    assert stats.min_detectable_difference(0.01, alpha=0.01, power=0.9) == pytest.approx(
        (st.norm.ppf(0.995) + st.norm.ppf(0.9)) * 0.01)
    # one seed, independent items: at a true difference equal to the MDE, about 80% of
    # studies reject H0 (the statement the report makes)
    rng = np.random.default_rng(1)
    n, p_disc = 400, 0.3
    se = math.sqrt(p_disc / n)            # SE of the mean of d in {-1, 0, 1} near delta = 0
    delta = stats.min_detectable_difference(se)
    hits = 0
    sims = 200
    for i in range(sims):
        u = rng.random(n)
        a = (u < p_disc / 2 + delta / 2).astype(int)                 # a right, b wrong
        b = ((u >= p_disc / 2 + delta / 2) & (u < p_disc)).astype(int)   # a wrong, b right
        hits += stats.crossed_t_test(a, b)["p"] < 0.05
    assert 0.65 <= hits / sims <= 0.93


def test_verdict_never_calls_a_difference_below_the_mde():
    assert stats.verdict(0.05, 0.001, 0.03) == "better"
    assert stats.verdict(-0.05, 0.001, 0.03) == "worse"
    assert stats.verdict(0.02, 0.001, 0.03) == "indistinguishable"   # significant but below MDE
    assert stats.verdict(0.05, 0.2, 0.03) == "indistinguishable"
    r = stats.compare(*pairs(60, 10, 100, 30), n_boot=1000)
    assert r["verdict"] == "better" and r["p_mcnemar"] < 1e-6 and r["p_boot"] < 0.01
    assert r["df"] == 199 and r["mde"] == pytest.approx(stats.min_detectable_difference(r["se"], df=199))
    # one seed: the crossed test is the paired t-test on the item differences
    d = pairs(60, 10, 100, 30)[0] - pairs(60, 10, 100, 30)[1]
    assert r["p"] == pytest.approx(st.ttest_1samp(d, 0).pvalue)


def test_variance_components_recover_known_values():
    rng = np.random.default_rng(2)
    k, n = 8, 3000
    # d = a - b in {-1, 0, 1}; seed effects shift the rate of a-right/b-wrong pairs per seed
    rate = 0.15 + rng.normal(0, 0.03, (k, 1))
    u = rng.random((k, n))
    a = (u < rate).astype(int)
    b = ((u >= rate) & (u < 0.3)).astype(int)
    c = stats.variance_components(a, b)
    d = a - b
    assert c["seed"] == pytest.approx(np.var(d.mean(1), ddof=1) - c["residual"] / n, rel=1e-6)
    assert c["seed"] > 0 and c["item"] < 0.01 and c["residual"] == pytest.approx(d.var(), rel=0.1)
    assert c["var_mean"] == pytest.approx(c["seed"] / k + c["item"] / n + c["residual"] / (k * n))
    assert stats.projected_variance(c, 2 * k, n) < c["var_mean"]
    assert math.isnan(stats.variance_components(a[0], b[0])["seed"])


def test_pooled_seed_variance_averages_the_unfloored_estimates():
    rng = np.random.default_rng(4)
    k, n = 3, 2000
    comps = []
    for sd in (0.0, 0.04, 0.04):                  # one stem's seeds happen to agree, two vary
        rate = 0.15 + rng.normal(0, sd, (k, 1))
        u = rng.random((k, n))
        comps.append(stats.variance_components((u < rate).astype(int), ((u >= rate) & (u < 0.3)).astype(int)))
    pooled = stats.pooled_seed_variance(comps)
    assert pooled["df"] == 3 * (k - 1) and pooled["n_stems"] == 3
    assert pooled["seed"] == pytest.approx(np.mean([c["seed_raw"] for c in comps]))   # equal df: plain mean
    assert comps[0]["seed"] == max(0.0, comps[0]["seed_raw"]) and pooled["seed"] > comps[0]["seed"]
    # floored once, after averaging; one-seed stems carry no seed information
    neg = {**comps[0], "seed_raw": -1.0}
    assert stats.pooled_seed_variance([neg, comps[1]])["seed"] == 0.0
    one = stats.variance_components(np.ones(50, int), np.zeros(50, int))
    assert math.isnan(stats.pooled_seed_variance([one])["seed"])
    assert stats.pooled_seed_variance([one, comps[1]])["df"] == k - 1


def test_a_seed_floor_widens_only_the_intervals_it_raises():
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 0.03, seeds=3, items=400, seed_sd=0.0)
    plain = stats.crossed_t_test(a, b)
    c = stats.variance_components(a, b)
    assert stats.crossed_t_test(a, b, seed_floor=c["seed"] / 2) == plain     # below the own estimate
    floor = c["seed"] + 0.02 ** 2
    raised = stats.crossed_t_test(a, b, seed_floor=floor, seed_floor_df=30)
    assert raised["diff"] == plain["diff"] and raised["se"] > plain["se"] and raised["p"] > plain["p"]
    assert raised["se"] == pytest.approx(math.sqrt(stats.projected_variance({**c, "seed": floor}, 3, 400)))
    # the floor's degrees of freedom enter Satterthwaite's df: more df, a narrower interval
    few = stats.crossed_t_test(a, b, seed_floor=floor, seed_floor_df=2)
    assert few["se"] == raised["se"] and few["df"] < raised["df"] and few["high"] > raised["high"]
    assert stats.crossed_t_test(a[0], b[0], seed_floor=floor) == stats.crossed_t_test(a[0], b[0])   # one seed
