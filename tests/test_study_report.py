"""The study report, from fabricated run folders that follow the train command's contract:
the numbers in results.csv and report.md must be the right ones."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as st

from audiostem.study.__main__ import main
from audiostem.study.plots import first_layer_filters

CLASSES = ["x", "y"]


def write_predictions(path: Path, ids, correct, fold=0):
    labels = [CLASSES[i % 2] for i in range(len(ids))]
    preds = [lab if c else CLASSES[1 - CLASSES.index(lab)] for lab, c in zip(labels, correct)]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "pred", "correct", "fold", "p_x", "p_y"])
        for row in zip(ids, labels, preds, correct):
            w.writerow([*row[:3], int(row[3]), fold, 0.5, 0.5])
    return labels, preds


def make_run(out: Path, ids, correct, seed, *, params=1000, stem_flops=5e6, fold=0, checkpoint=None,
             last_accuracy=None, last_correct=None, val_accuracy=None):
    """A finished run folder: metrics.json, predictions_test.csv, history.csv (+ best.ckpt; with
    ``last_accuracy``, the last epoch's test accuracy as ``test_last``; with ``last_correct``,
    also its predictions_test_last.csv; ``val_accuracy``: the chosen checkpoint's validation
    accuracy, the test accuracy if None)."""
    out.mkdir(parents=True)
    labels, preds = write_predictions(out / "predictions_test.csv", ids, correct, fold)
    if last_correct is not None:
        write_predictions(out / "predictions_test_last.csv", ids, last_correct, fold)
        last_accuracy = float(np.mean(last_correct))
    (out / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds\n" + "".join(
        f"{e},1,1,{0.5 + 0.1 * e},0.5,0.001,2\n" for e in range(4)))
    if checkpoint is not None:
        (out / "checkpoints").mkdir()
        torch.save({"state_dict": checkpoint, "epoch": 2}, out / "checkpoints" / "best.ckpt")
    acc = float(np.mean(correct))
    test = {"accuracy": acc, "balanced_accuracy": acc, "macro_f1": 0.0, "per_class": {}, "n_items": len(ids)}
    last = {} if last_accuracy is None else {"test_last": {**test, "accuracy": last_accuracy}}
    (out / "metrics.json").write_text(json.dumps({
        "test": test, "val": test if val_accuracy is None else {**test, "accuracy": val_accuracy}, **last, "best_epoch": 2, "epochs_run": 3, "train_seconds": 120.0,
        "train_samples_per_second": 250.0, "params": params, "total_flops": 4 * stem_flops,
        "classes": CLASSES, "seed": seed, "stem": {"params": params // 10, "flops": stem_flops,
                                                   "receptive_field": [7, 7], "stride": [4, 4],
                                                   "out_shape": [64, 32, 32]}}))
    return labels, preds


def macro_f1_by_hand(labels, preds):
    f1 = []
    for c in CLASSES:
        tp = sum(l == c and p == c for l, p in zip(labels, preds))
        f1.append(2 * tp / (labels.count(c) + preds.count(c)))
    return sum(f1) / len(f1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "r", "out_dir": str(tmp / "out"), "seeds": 3, "bootstrap": 400,
        "datasets": [{"name": "a", "recipe": "r.yaml"},
                     {"name": "b", "recipe": "r.yaml", "folds": {"key": "data.test_fold", "values": [0, 1]}}],
        "stems": ["deep3", "wider", "same", "partial"]}))
    runs = tmp / "out" / "runs"
    ids = [f"clip{i:03d}" for i in range(200)]
    f1 = {}
    filters = {"model.stem.layers.0.conv.weight": torch.randn(8, 1, 3, 3),
               "model.stem.layers.0.bn.weight": torch.ones(8),
               "model.stem.layers.1.conv.weight": torch.randn(16, 8, 3, 3)}
    for k in range(3):
        base = [i < 120 + k for i in range(200)]                 # 60.0, 60.5, 61.0 %
        wider = [i < 150 + k for i in range(200)]                # +15 points on every seed
        f1[("deep3", k)] = macro_f1_by_hand(*make_run(runs / f"a/deep3/seed{k}", ids, base, k,
                                                      checkpoint=filters if k == 0 else None))
        make_run(runs / f"a/wider/seed{k}", ids, wider, k, params=4000, stem_flops=2e7)
        make_run(runs / f"a/same/seed{k}", ids, base, k)
        for fold in (0, 1):   # dataset b: two CV folds of 50 items per seed
            fids = ids[100 * fold:100 * fold + 50]
            make_run(runs / f"b/deep3/seed{k}/fold{fold}", fids, [i % 2 == 0 for i in range(50)], k, fold=fold)
            if (k, fold) != (2, 1):
                make_run(runs / f"b/wider/seed{k}/fold{fold}", fids, [i % 5 != 0 for i in range(50)], k, fold=fold)
    make_run(runs / "a/partial/seed0", ids, base, 0)
    (runs / "a/partial/seed1").mkdir(parents=True)           # started, not finished
    assert main(["report", str(path)]) == 0
    rows = {(r["dataset"], r["variant"]): r for r in csv.DictReader(open(tmp / "out/report/results.csv"))}
    return {"rows": rows, "md": (tmp / "out/report/report.md").read_text(), "dir": tmp / "out/report", "f1": f1}


def test_means_intervals_and_sizes(study):
    r = study["rows"][("a", "deep3")]
    accs = [0.600, 0.605, 0.610]
    half = st.t.ppf(0.975, 2) * np.std(accs, ddof=1) / math.sqrt(3)
    assert int(r["n_seeds"]) == 3 and int(r["n_items"]) == 200
    assert float(r["acc_mean"]) == pytest.approx(0.605)
    assert (float(r["acc_low"]), float(r["acc_high"])) == pytest.approx((0.605 - half, 0.605 + half))
    assert float(r["acc_std"]) == pytest.approx(0.005)
    assert float(r["f1_mean"]) == pytest.approx(np.mean([study["f1"][("deep3", k)] for k in range(3)]))
    assert r["seed_accs"] == "0.6;0.605;0.61"
    w = study["rows"][("a", "wider")]
    assert (int(w["params"]), int(w["stem_params"]), float(w["stem_flops"]), float(w["total_flops"])) == \
        (4000, 400, 2e7, 8e7)
    assert (w["receptive_field"], w["stride"], float(w["samples_per_s"]), float(w["train_minutes"])) == \
        ("7x7", "4x4", 250.0, 2.0)


def test_paired_comparisons_and_verdicts(study):
    w = study["rows"][("a", "wider")]
    assert float(w["diff"]) == pytest.approx(0.15) and w["verdict"] == "better"
    assert (int(w["n10"]), int(w["n01"]), int(w["paired_seeds"]), int(w["paired_items"])) == (90, 0, 3, 200)
    assert float(w["p_mcnemar"]) == pytest.approx(st.binomtest(90, 90, 0.5).pvalue)
    # the family is the stems with two or more seeds: wider and same (partial has one seed)
    assert int(w["family"]) == 2 and float(w["adj_level"]) == pytest.approx(0.975)
    assert float(w["p_adj"]) == pytest.approx(min(1.0, 2 * float(w["p"])))
    assert float(w["adj_low"]) > 0 and float(w["detectable"]) < 0.15
    assert w["unit"] == "item" and int(w["n_units"]) == 200 and w["margin"] == ""
    same = study["rows"][("a", "same")]
    assert float(same["diff"]) == 0 and float(same["p"]) == 1
    assert same["verdict"] == "inconclusive"            # no equivalence margin declared in this study
    part = study["rows"][("a", "partial")]
    assert int(part["n_seeds"]) == 1 and int(part["paired_seeds"]) == 1
    assert part["verdict"] == "inconclusive"      # one seed is never enough to call a stem
    assert study["rows"][("a", "deep3")]["verdict"] == ""


def test_cv_folds_are_pooled_per_seed(study):
    b, w = study["rows"][("b", "deep3")], study["rows"][("b", "wider")]
    assert int(b["n_items"]) == 100 and float(b["acc_mean"]) == pytest.approx(0.5)
    assert int(w["n_seeds"]) == 2                 # seed 2 lacks fold 1: not counted
    assert float(w["acc_mean"]) == pytest.approx(0.8)
    assert float(w["diff"]) == pytest.approx(0.3) and int(w["paired_items"]) == 100
    assert float(w["train_minutes"]) == pytest.approx(4.0)   # both folds' training


def test_report_markdown(study):
    md = study["md"]
    assert "## a" in md and "## b" in md
    assert "| **deep3** | 3 | 60.5 [" in md
    assert "| wider | 3 | 75.5 [74.3, 76.7] | 75.5 [" in md and "| 2 / 3 | +15.0 [" in md
    assert "better: wider (+15.0)" in md and "inconclusive: same (+0.0), partial (+1.0)" in md
    assert "| Δ acc vs deep3 [97.5% simultaneous CI] |" in md
    assert "**Convergence:** validation accuracy changed by +10.0 points over the last quarter" in md
    assert "only a longer schedule tells" in md
    assert "100% of the runs had their best validation epoch in the last 10%" in md
    assert "**Trained on:** device not recorded (" in md
    assert "a/partial/seed1" in md and "a/partial/seed2" in md
    assert "**Power of the rule:** with 3 seeds x 200 test items, it calls a true difference of" in md
    assert ("**Rule:** 2 stems compared with `deep3`; each verdict is read off its 97.5% simultaneous "
            "interval (Bonferroni over the 2, family-wise α = 0.05)") in md
    assert "no equivalence margin declared" in md
    for png in ("verdicts", "accuracy_vs_flops", "accuracy_per_stem", "validation_curves", "filters_a"):
        assert (study["dir"] / f"{png}.png").stat().st_size > 1000
        assert f"]({png}.png)" in md
    assert not (study["dir"] / "filters_b.png").exists()   # no checkpoint kept there


def test_summary_across_datasets(study):
    """One table, stems x datasets: each cell the verdict and Δ with the interval of the dataset's
    own table (the same numbers as results.csv), the baseline's row its mean accuracy."""
    md = study["md"]
    summary = md[md.index("## Summary"):md.index("## Figures")]
    header = next(line for line in summary.splitlines() if line.startswith("| stem |"))
    datasets = [c.strip() for c in header.strip("|").split("|")][1:]
    assert datasets == ["a", "b"]
    w = study["rows"][("a", "wider")]
    cell = (f"better {100 * float(w['diff']):+.1f} [{100 * float(w['adj_low']):+.1f}, "
            f"{100 * float(w['adj_high']):+.1f}]")
    assert f"| wider | {cell} |" in summary
    assert "| **deep3** | 60.5% (3 seeds) | 50.0% (3 seeds) |" in summary
    assert "| same | inconclusive +0.0 [+0.0, +0.0] | – |" in summary     # b has no 'same'


def test_first_layer_filters_finds_the_input_convs():
    sd = {"model.stem.branches.0.0.weight": torch.randn(4, 2, 20, 3),   # tall branch (2 = coord channel)
          "model.stem.branches.0.1.weight": torch.ones(4),
          "model.stem.branches.1.0.weight": torch.randn(4, 2, 1, 20),   # wide branch
          "model.stem.mix.weight": torch.randn(8, 8, 1, 1),
          "model.body.0.weight": torch.randn(8, 2, 3, 3)}
    kernels = first_layer_filters(sd)
    assert sorted(k.shape for k in kernels) == [(1, 20)] * 4 + [(20, 3)] * 4
    norms = [float(np.sum(k ** 2)) for k in kernels]
    assert norms == sorted(norms, reverse=True)
    assert first_layer_filters({"net.conv1.weight": torch.randn(2, 1, 7, 7)})[0].shape == (7, 7)


def test_report_before_any_cell_finished(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "empty", "out_dir": str(tmp_path / "out"), "seeds": 2,
                                    "datasets": [{"name": "a", "recipe": "r.yaml"}], "stems": ["deep3", "tall"]}))
    assert main(["report", str(path)]) == 0
    md = (tmp_path / "out/report/report.md").read_text()
    assert "4 cells not finished" in md and "No paired comparison yet on a" in md
    assert len(list(csv.DictReader(open(tmp_path / "out/report/results.csv")))) == 2


def test_report_of_some_cells_leaves_the_others_out(study, tmp_path):
    """--cells: a seed that not every stem has finished can be left out of the tables."""
    path = study["dir"].parent.parent / "study.yaml"
    out = tmp_path / "seed01"
    assert main(["report", str(path), "--out", str(out), "--cells", "a/*/seed[01]"]) == 0
    rows = {(r["dataset"], r["variant"]): r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows[("a", "deep3")]["seed_accs"] == "0.6;0.605" and rows[("a", "wider")]["n_seeds"] == "2"
    assert rows[("b", "deep3")]["n_seeds"] == "0"                     # not selected: no runs, nothing missing
    md = (out / "report.md").read_text()
    assert "report --cells 'a/*/seed[01]'`; 1 cells not finished (7 finished runs" in md   # a/partial/seed1
    assert md.splitlines()[2].endswith(" 28 cells left out by --cells.")   # a: seed 2 of 4 stems; b: 4 x 3 seeds x 2 folds
    assert main(["report", str(path), "--out", str(out), "--cells", "nope/*"]) == 2  # names what cells look like
    assert "**Power of the rule:** with 2 seeds x 200 test items" in md


def test_clustered_items_and_an_equivalence_margin(tmp_path):
    """`cluster: label` makes the class the unit of analysis; `equivalence_margin` lets a stem be
    called equivalent. Seeds swing whole classes here, which only the clustered test can see."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "c", "out_dir": str(tmp_path / "out"), "seeds": 4, "bootstrap": 200,
        "equivalence_margin": 10.0,
        "datasets": [{"name": "items", "recipe": "r.yaml"},
                     {"name": "classes", "recipe": "r.yaml", "cluster": "label", "equivalence_margin": 40.0}],
        "stems": ["deep3", "swing"]}))
    ids = [f"clip{i:03d}" for i in range(200)]          # labels alternate x, y
    for name in ("items", "classes"):
        for k in range(4):
            base = [i % 4 != 0 for i in range(200)]     # 75% on every seed
            # a whole class right or wrong, by seed: +/-25 points on the mean, 0 on average
            swing = [(i % 2 == k % 2) or i % 4 == 1 for i in range(200)]
            make_run(tmp_path / f"out/runs/{name}/deep3/seed{k}", ids, base, k)
            make_run(tmp_path / f"out/runs/{name}/swing/seed{k}", ids, swing, k)
    assert main(["report", str(path)]) == 0
    rows = {r["dataset"]: r for r in csv.DictReader(open(tmp_path / "out/report/results.csv")) if r["variant"] == "swing"}
    items, classes = rows["items"], rows["classes"]
    assert (items["unit"], int(items["n_units"]), float(items["margin"])) == ("item", 200, 0.10)
    assert (classes["unit"], int(classes["n_units"]), float(classes["margin"])) == ("label", 2, 0.40)
    assert float(items["diff"]) == pytest.approx(float(classes["diff"]))
    assert float(classes["se"]) > float(items["se"])
    md = (tmp_path / "out/report/report.md").read_text()
    assert "x 200 test items in 2 clusters (unit of analysis: `label`)" in md
    assert "equivalent when it lies within the margin of ±40.0 points" in md


def test_a_cluster_column_the_predictions_lack_is_named(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "c", "out_dir": str(tmp_path / "out"), "seeds": 2,
        "datasets": [{"name": "a", "recipe": "r.yaml", "cluster": "game"}], "stems": ["deep3", "x"]}))
    make_run(tmp_path / "out/runs/a/deep3/seed0", ["i1", "i2"], [1, 0], 0)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "predictions_test.csv: no column 'game'" in err and "Traceback" not in err


def test_the_last_epoch_is_reported_beside_the_chosen_one(tmp_path):
    """Runs that also tested their last epoch (metrics.json `test_last`) get a line giving each
    stem's mean last-epoch accuracy and its difference from the validation-chosen checkpoint's."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "l", "out_dir": str(tmp_path / "out"), "seeds": 2, "bootstrap": 50,
                                    "datasets": [{"name": "d", "recipe": "r.yaml"}], "stems": ["deep3", "patch4"]}))
    ids = [f"clip{i:03d}" for i in range(40)]
    for k in range(2):
        make_run(tmp_path / f"out/runs/d/deep3/seed{k}", ids, [i % 4 != 0 for i in range(40)], k, last_accuracy=0.70)
        make_run(tmp_path / f"out/runs/d/patch4/seed{k}", ids, [i % 2 == 0 for i in range(40)], k,
                 last_accuracy=0.40 + 0.1 * k)
    assert main(["report", str(path)]) == 0
    md = (tmp_path / "out/report/report.md").read_text()
    assert ("**Last epoch instead of the validation-chosen one** (mean test accuracy over seeds; no interval): "
            "deep3 70.0 (-5.0); patch4 45.0 (-5.0).") in md
    # without test_last in every run of the dataset, no such line
    (tmp_path / "out/runs/d/patch4/seed1/metrics.json").write_text(json.dumps(
        {k: v for k, v in json.loads((tmp_path / "out/runs/d/patch4/seed1/metrics.json").read_text()).items()
         if k != "test_last"}))
    assert main(["report", str(path)]) == 0
    assert "Last epoch" not in (tmp_path / "out/report/report.md").read_text()


@pytest.mark.parametrize("tested_last", [True, False])
def test_validation_at_its_ceiling_is_not_read_as_a_plateau(tmp_path, tested_last):
    """When the chosen checkpoints score 100% on validation (e.g. validation drawn from the training
    domain), a flat validation curve says nothing about convergence: the line says so instead of
    'the runs had plateaued', and points to the last-epoch line where there is one."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "out_dir": str(tmp_path / "out"), "seeds": 2, "bootstrap": 50,
                                    "datasets": [{"name": "d", "recipe": "r.yaml"}], "stems": ["deep3", "patch4"]}))
    ids = [f"clip{i:03d}" for i in range(40)]
    for stem in ("deep3", "patch4"):
        for k in range(2):
            run = tmp_path / f"out/runs/d/{stem}/seed{k}"
            make_run(run, ids, [i % 4 != 0 for i in range(40)], k, val_accuracy=1.0,
                     last_accuracy=0.8 if tested_last else None)
            (run / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds\n"
                                             + "".join(f"{e},1,1,1.0,1.0,0.001,2\n" for e in range(4)))
    assert main(["report", str(path)]) == 0
    md = (tmp_path / "out/report/report.md").read_text()
    assert "plateaued" not in md
    assert "but the checkpoint chosen on validation scored 100% there in 100% of the runs (best epoch 2 of 3" in md
    assert ("the last-epoch line below shows what the later epochs gave" in md) == tested_last
    assert ("did not test their last epoch's model" in md) != tested_last
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "out/report/results.csv"))}
    assert float(rows["patch4"]["val_ceiling"]) == 1.0


def test_a_finished_cell_without_its_predictions_is_named_not_dropped(tmp_path, capsys):
    """One fold of a CV cell lost predictions_test.csv while the dataset's other cells have
    theirs: the report refuses with the file's name, rather than comparing on fewer items."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "p", "out_dir": str(tmp_path / "out"), "seeds": 2, "bootstrap": 50,
        "datasets": [{"name": "d", "recipe": "r.yaml", "folds": {"key": "data.test_fold", "values": [0, 1]}}],
        "stems": ["deep3", "x"]}))
    ids = [f"clip{i:03d}" for i in range(20)]
    for stem in ("deep3", "x"):
        for k in range(2):
            for fold in (0, 1):
                make_run(tmp_path / f"out/runs/d/{stem}/seed{k}/fold{fold}", ids[10 * fold:10 * fold + 10],
                         [i % 3 != 0 for i in range(10)], k, fold=fold)
    assert main(["report", str(path)]) == 0
    lost = tmp_path / "out/runs/d/x/seed1/fold1/predictions_test.csv"
    lost.unlink()
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{lost}: missing" in err and "d/x/seed1/fold1/metrics.json" in err
    # a predictions file cut to its header (or to fewer rows than metrics.json's n_items) is named too
    lost.write_text("id,label,pred,correct,fold,p_x,p_y\n")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{lost}: 0 items, but" in err and "says 10 were tested" in err and err.count("\n") == 1


def test_the_last_epoch_change_has_a_paired_interval(tmp_path):
    """With predictions_test_last.csv in every run, the last-epoch line gives each stem's paired
    difference (last minus chosen, same seeds and items) with the crossed seeds x units interval."""
    from audiostem.study.stats import crossed_t_test

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "l", "out_dir": str(tmp_path / "out"), "seeds": 3, "bootstrap": 50,
                                    "datasets": [{"name": "d", "recipe": "r.yaml"}], "stems": ["deep3", "patch4"]}))
    ids = [f"clip{i:03d}" for i in range(60)]
    rng = np.random.default_rng(0)
    chosen, last = {}, {}
    for stem in ("deep3", "patch4"):
        for k in range(3):
            chosen[stem, k] = (rng.random(60) < 0.7).astype(int)
            last[stem, k] = np.where(rng.random(60) < 0.2, 1, chosen[stem, k])    # the last epoch fixes some
            make_run(tmp_path / f"out/runs/d/{stem}/seed{k}", ids, chosen[stem, k], k, last_correct=last[stem, k])
    assert main(["report", str(path)]) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "out/report/results.csv"))}
    for stem in ("deep3", "patch4"):
        t = crossed_t_test(np.stack([last[stem, k] for k in range(3)]), np.stack([chosen[stem, k] for k in range(3)]))
        r = rows[stem]
        assert float(r["last_diff"]) == pytest.approx(t["diff"]) and t["diff"] > 0
        assert float(r["last_low"]) == pytest.approx(t["low"]) and float(r["last_high"]) == pytest.approx(t["high"])
        assert float(r["last_acc_mean"]) == pytest.approx(np.mean([last[stem, k].mean() for k in range(3)]))
    md = (tmp_path / "out/report/report.md").read_text()
    t = crossed_t_test(np.stack([last["patch4", k] for k in range(3)]), np.stack([chosen["patch4", k] for k in range(3)]))
    assert "in brackets the paired difference's 95% interval, seeds and items crossed, not adjusted for the 2 stems" in md
    interval = f"(+{100 * t['diff']:.1f} [{100 * t['low']:+.1f}, {100 * t['high']:+.1f}])"
    assert interval in md
    # one deep3 run lost its last-epoch predictions: deep3 gets the difference of means only, patch4 keeps its interval
    (tmp_path / "out/runs/d/deep3/seed1/predictions_test_last.csv").unlink()
    assert main(["report", str(path)]) == 0
    md = (tmp_path / "out/report/report.md").read_text()
    assert interval in md and "no interval': some of that stem's runs lack the last epoch's predictions" in md
    deep3 = np.mean([last["deep3", k].mean() - chosen["deep3", k].mean() for k in range(3)])
    assert f"deep3 {100 * np.mean([last['deep3', k].mean() for k in range(3)]):.1f} ({100 * deep3:+.1f}, no interval)" in md


def test_the_verdict_figure_title_fits_with_one_dataset(tmp_path, monkeypatch):
    """The verdict figure is 3.8 inches wide with one dataset: its title wraps to fit (the two-line
    title of two datasets was cut off at both sides)."""
    import warnings

    from audiostem.study import plots
    drawn = {}

    def keep(fig, path):
        fig.tight_layout()
        fig.canvas.draw()
        drawn["title"], drawn["figure"] = fig._suptitle.get_window_extent(), fig.bbox
        return path
    monkeypatch.setattr(plots, "_save", keep)
    rows = [{"dataset": "d", "variant": v, "verdict": "inconclusive", "margin": 0.02, "unit": "item",
             "adj_low": -0.05, "adj_high": 0.03, "diff": -0.01} for v in ("resnet7", "wide5")]
    for n in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # "Tight layout not applied": the title did not fit
            plots.verdict_grid(rows + [{**r, "dataset": "e"} for r in rows][: 2 * (n - 1)], tmp_path / "v.png")
        title, figure = drawn["title"], drawn["figure"]
        assert figure.x0 <= title.x0 and title.x1 <= figure.x1, (n, title, figure)
