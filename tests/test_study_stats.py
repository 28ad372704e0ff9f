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


def test_macro_f1_by_hand_and_as_torchmetrics():
    import torch
    from torchmetrics.functional.classification import multiclass_f1_score

    from audiostem.metrics import classification_metrics, macro_f1
    labels = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "c", "c"]
    # a: P=1, R=2/3 -> 0.8; b: P=1/2, R=1/2 -> 0.5; c: P=1/2, R=1 -> 2/3
    assert macro_f1(labels, preds, ["a", "b", "c"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # d: never true, never predicted: no F1, left out (as torchmetrics); e: only predicted: 0
    assert macro_f1(labels, preds, ["a", "b", "c", "d"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1(labels, preds[:-1] + ["e"], ["a", "b", "c", "d", "e"]) == pytest.approx((0.8 + 0.5 + 0 + 0) / 4)
    index = {c: k for k, c in enumerate("abcde")}
    y, p = torch.tensor([index[c] for c in labels]), torch.tensor([index[c] for c in preds[:-1] + ["e"]])
    expected = float(multiclass_f1_score(p, y, num_classes=5, average="macro"))
    assert macro_f1(y.tolist(), p.tolist(), range(5)) == pytest.approx(expected, abs=1e-6)
    logits = torch.nn.functional.one_hot(p, 5).float()
    assert classification_metrics(logits, y, list("abcde"))["macro_f1"] == pytest.approx(expected, abs=1e-6)


def test_bootstrap_exact_cases_and_reproducibility():
    a, b = pairs(30, 10, 40, 20)
    same = stats.paired_bootstrap(a, a, n_boot=200)
    assert (same["diff"], same["low"], same["high"], same["p"]) == (0, 0, 0, 1)
    r = stats.paired_bootstrap(a, b, n_boot=2000)
    assert r["diff"] == pytest.approx(20 / 100) and r["low"] < 0.2 < r["high"]
    assert r["n_seeds"] == 1 and r["n_units"] == 100
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


def test_one_seed_is_the_paired_t_test_on_items():
    a, b = pairs(60, 10, 100, 30)
    r = stats.compare(a, b, n_boot=1000)
    assert r["p_mcnemar"] < 1e-6 and r["p_boot"] < 0.01 and r["df"] == 199
    assert r["p"] == pytest.approx(st.ttest_1samp(a - b, 0).pvalue)
    # one seed cannot see run-to-run noise: never called, whatever the interval
    assert stats.decide(r["diff"], r["se"], r["df"], 1, 0.5, n_seeds=1)["verdict"] == "inconclusive"


def test_unit_table_keeps_the_mean_and_collapses_clusters():
    rng = np.random.default_rng(3)
    a, b = (rng.random((4, 60)) < 0.6).astype(int), (rng.random((4, 60)) < 0.5).astype(int)
    d = a - b
    assert np.array_equal(stats.unit_table(a, b), d)
    # every item its own cluster: the items themselves
    assert stats.unit_table(a, b, np.arange(60)) == pytest.approx(d)
    # equal clusters: the cluster means; unequal: the mean difference is kept all the same
    equal = np.repeat(np.arange(6), 10)
    assert stats.unit_table(a, b, equal) == pytest.approx(d.reshape(4, 6, 10).mean(axis=2))
    unequal = np.array([0] * 5 + [1] * 40 + [2] * 15)
    assert stats.unit_table(a, b, unequal).mean() == pytest.approx(d.mean())
    assert stats.variance_components(a, b, equal)["n_units"] == 6
    with pytest.raises(ValueError, match="one label per item"):
        stats.unit_table(a, b, equal[:-1])


def test_decide_reads_every_verdict_off_one_interval():
    se, df = 0.01, 20
    t = st.t.ppf(1 - 0.05 / (2 * 4), df)          # Bonferroni over 4 stems
    r = stats.decide(0.05, se, df, 4, 0.02)
    assert (r["low"], r["high"]) == pytest.approx((0.05 - t * se, 0.05 + t * se))
    assert r["verdict"] == "better" and r["level"] == pytest.approx(1 - 0.05 / 4)
    assert r["p_adj"] == pytest.approx(min(1, 4 * 2 * st.t.sf(5, df)))
    assert stats.decide(-0.05, se, df, 4, 0.02)["verdict"] == "worse"
    assert stats.decide(0.0, 0.002, df, 4, 0.02)["verdict"] == "equivalent"      # [-0.6, +0.6] inside ±2
    assert stats.decide(0.0, 0.002, df, 4, None)["verdict"] == "inconclusive"    # no margin declared
    assert stats.decide(0.01, se, df, 4, 0.02)["verdict"] == "inconclusive"
    for diff in np.linspace(-0.06, 0.06, 25):                                     # interval and verdict agree
        r = stats.decide(diff, se, df, 4, 0.02)
        assert (r["verdict"] in ("better", "worse")) == (r["low"] > 0 or r["high"] < 0) == (r["p_adj"] < 0.05)


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
    assert c["ms_seed"] == pytest.approx(n * np.var(d.mean(1), ddof=1))
    assert c["seed"] == pytest.approx(np.var(d.mean(1), ddof=1) - c["residual"] / n, rel=1e-6)
    assert c["seed"] > 0 and c["unit"] < 0.01 and c["residual"] == pytest.approx(d.var(), rel=0.1)
    # unbiased: seed/K + unit/N + residual/(N K) with the estimates before any floor
    assert c["var_mean"] == pytest.approx((c["ms_seed"] + c["ms_unit"] - c["ms_residual"]) / (k * n))
    assert math.isnan(stats.variance_components(a[0], b[0])["seed"])


def test_degrees_of_freedom_move_smoothly_through_a_zero_seed_variance():
    """The df of the old test jumped from ~4 to N - 1 when the seed estimate crossed 0."""
    base = {"n_seeds": 5, "n_units": 1500, "ms_unit": 1.3, "ms_residual": 1.0}
    dfs = []
    for ms_seed in np.linspace(0.9, 1.1, 41):                # seed estimate from -1e-4 to +1e-4
        c = {**base, "ms_seed": ms_seed, "var_mean": (ms_seed + 0.3) / (5 * 1500)}
        dfs.append(stats.satterthwaite_df(c))
    assert max(np.abs(np.diff(dfs))) < 0.5 and 4 <= min(dfs) and max(dfs) < 20


def simulate_family(rng, deltas, seeds, clusters, per, seed_sd, swing_sd, cluster_sd=0.1):
    """A baseline and one stem per ``deltas`` on the same ``clusters x per`` test items; each
    run's accuracy has a seed offset and a whole-cluster swing (as gm_instruments' classes swing
    between seeds). Offsets are symmetric and bounded, so every stem's population accuracy
    difference to the baseline is exactly its delta."""
    def bounded(sd, size):
        return np.clip(rng.normal(0, sd, size), -2.5 * sd, 2.5 * sd) if sd else np.zeros(size)
    n = clusters * per
    label = np.repeat(np.arange(clusters), per)
    q = 0.5 + bounded(cluster_sd, clusters)[label] + rng.uniform(-0.15, 0.15, n)
    shared = rng.random((seeds, n))        # flips shared by two runs of one seed (same data order)

    def run(delta):
        p = q + delta + bounded(seed_sd, (seeds, 1)) + bounded(swing_sd, (seeds, clusters))[:, label]
        u = np.where(rng.random((seeds, n)) < 0.5, shared, rng.random((seeds, n)))
        return (u < p).astype(int)
    b = run(0.0)
    return [(run(delta), b) for delta in deltas], label


@pytest.mark.parametrize("design", [
    dict(seeds=5, clusters=600, per=1, seed_sd=0.0, swing_sd=0.0),     # item flips dominate (folk)
    dict(seeds=6, clusters=8, per=40, seed_sd=0.03, swing_sd=0.08),    # whole-class swings (gm_instruments)
], ids=["items", "clusters"])
def test_the_rule_has_the_error_rates_it_reports(design):
    """Family-wise false better/worse <= 5% at no difference; better/worse called with >= 80% at
    the reported 80%-power difference; equivalent called with <= 5% at a true difference equal
    to the margin. 600 simulated studies each (Monte Carlo SE of a rate near 80%: 1.6 points)."""
    rng = np.random.default_rng(7)
    m, margin, sims = 3, 0.02, 600
    clustered = design["clusters"] < 600

    def run(deltas):
        fam, label = simulate_family(rng, deltas, **design)
        tests = [stats.crossed_t_test(a, b, clusters=label if clustered else None) for a, b in fam]
        return tests, [stats.decide(t["diff"], t["se"], t["df"], m, margin, n_seeds=design["seeds"])["verdict"]
                       for t in tests]
    false_calls, reported = 0, []
    for i in range(sims):
        tests, verdicts = run([0.0] * m)
        false_calls += any(v in ("better", "worse") for v in verdicts)
        if i < 40:
            reported.append(stats.rule_power(tests[0]["components"], m, margin)["detectable"])
    assert false_calls / sims <= 0.05
    detectable = float(np.median(reported))
    hits = sum(run([detectable] + [0.0] * (m - 1))[1][0] == "better" for _ in range(sims))
    assert hits / sims >= 0.8 - 2 * math.sqrt(0.8 * 0.2 / sims)
    equivalent = sum(run([margin] * m)[1][0] == "equivalent" for _ in range(sims))
    assert equivalent / sims <= 0.05


def test_rule_power_grows_with_seeds_and_margin():
    c = {"n_seeds": 5, "n_units": 1500, "seed": 1e-5, "unit": 0.02, "residual": 0.2}
    now = stats.rule_power(c, 10, 0.02)
    more = stats.rule_power(c, 10, 0.02, n_seeds=10)
    assert 0 < more["detectable"] < now["detectable"] and more["p_equivalent"] > now["p_equivalent"]
    assert stats.rule_power(c, 10, 0.04)["p_equivalent"] > now["p_equivalent"]
    assert stats.rule_power(c, 1, 0.02)["detectable"] < now["detectable"]           # smaller family
    assert math.isnan(stats.rule_power(c, 10, None)["p_equivalent"])
    assert stats.rule_power(c, 10, 0.02) == now                                       # reproducible
    assert math.isnan(stats.rule_power({**c, "n_seeds": 1, "seed": math.nan}, 10, 0.02)["detectable"])
