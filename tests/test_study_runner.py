"""The study runner: grid expansion, the study file's errors, --plan, --dry-run, and the
skip / resume / retry / prune logic (with a fake train command), plus one real smoke study."""
import csv
import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from audiostem.study.__main__ import main
from audiostem.study.grid import StudyError, expand, format_value, load_study

FAKE = str(Path(__file__).with_name("study_fake_train.py"))
REPO = Path(__file__).resolve().parents[1]


def write_study(tmp_path, **changes):
    (tmp_path / "recipe.yaml").write_text("items: 30\n")
    study = {"name": "t", "out_dir": str(tmp_path / "out"), "seeds": 2,
             "train_command": [sys.executable, FAKE],
             "datasets": [{"name": "one", "recipe": str(tmp_path / "recipe.yaml")},
                          {"name": "two", "recipe": str(tmp_path / "recipe.yaml"), "exclude": ["octave"]}],
             "stems": ["deep3", {"name": "octave", "datasets": ["one"]},
                       {"name": "deep3", "grid": {"width": [8, 64]}}]}
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_grid_expansion_names_and_overrides(tmp_path):
    path = write_study(tmp_path, overrides={"train.max_epochs": 3})
    data = yaml.safe_load(path.read_text())
    data["datasets"][1]["stem_args"] = {"deep3": {"n_freq": 64, "train.lr": 0.1}}
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    cells = expand(study)
    names = [c.name for c in cells]
    assert len(cells) == (4 + 3) * 2
    assert names[:2] == ["one/deep3/seed0", "one/deep3/seed1"]
    assert "two/octave/seed0" not in names and "one/octave/seed1" in names
    w8 = next(c for c in cells if c.name == "two/deep3-width8/seed1")
    assert w8.overrides == ("train.max_epochs=3", "model.stem=deep3", "model.stem_args.width=8",
                            "model.stem_args.n_freq=64", "train.lr=0.1", "seed=1")
    assert next(c for c in cells if c.name == "one/deep3/seed0").overrides == (
        "train.max_epochs=3", "model.stem=deep3", "seed=0")
    assert w8.out_dir == tmp_path / "out" / "runs" / "two" / "deep3-width8" / "seed1"
    assert [c.name for c in expand(load_study(tmp_path / "study.yaml"))] == names   # stable


def test_a_dataset_may_run_more_seeds(tmp_path):
    from audiostem.study.runner import keep_checkpoint

    path = write_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["datasets"][1]["seeds"] = [3, 4, 5]
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    cells = expand(study)
    assert sorted({c.seed for c in cells if c.dataset == "one"}) == [0, 1]
    assert sorted({c.seed for c in cells if c.dataset == "two"}) == [3, 4, 5]
    assert len(cells) == 4 * 2 + 3 * 3
    kept = [c.name for c in cells if keep_checkpoint(study, c)]
    assert "two/deep3/seed3" in kept and "one/deep3/seed0" in kept and "two/deep3/seed4" not in kept


def test_folds_inline_specs_and_value_formatting(tmp_path):
    spec = {"layers": [{"kernel": [3, 3], "channels": 64}]}
    path = write_study(tmp_path, seeds=[7], stems=["deep3", {"name": "mine", "stem": spec, "args": {"coord": True}}],
                       datasets=[{"name": "one", "recipe": "r.yaml", "folds": {"key": "data.test_fold", "values": [0, 1]}}])
    cells = expand(load_study(path))
    assert [c.name for c in cells][-2:] == ["one/mine/seed7/fold0", "one/mine/seed7/fold1"]
    assert cells[-1].overrides[1:] == ("model.stem_args.coord=true", "seed=7", "data.test_fold=1")
    assert yaml.safe_load(cells[-1].overrides[0].split("=", 1)[1]) == spec
    values = (True, None, 3, 0.5, 1e-05, 2.5e-07, float("inf"), "deep3", "yes", "a b", [1, 2])
    assert [format_value(v) for v in values] == \
        ["true", "null", "3", "0.5", "1.0e-05", "2.5e-07", ".inf", "deep3", '"yes"', "a b", "[1,2]"]
    assert [yaml.safe_load(format_value(v)) for v in values] == list(values)


@pytest.mark.parametrize("change, message", [
    ({"seeds": "five"}, "seeds"),
    ({"datasets": [{"name": "one", "recipe": "r", "seeds": [1, 1]}]}, "datasets[0].seeds"),
    ({"bogus": 1}, "bogus: unknown field"),
    ({"baseline": "nope"}, "baseline: 'nope' is not a stem variant"),
    ({"stems": ["deep3", {"name": "x", "datasets": ["three"]}]}, "unknown dataset 'three'"),
    ({"stems": ["deep3", {"name": "x", "kernel": 5}]}, "stems[1].kernel: unknown field"),
    ({"datasets": [{"name": "one"}]}, "datasets[0].recipe: Field required"),
    ({"datasets": [{"name": "a/b", "recipe": "r"}]}, "datasets[0].name"),
    ({"stems": ["deep3", "octave", "deep3"]}, "variant names ['deep3'] occur twice"),
    ({"datasets": [{"name": "one", "recipe": "r", "exclude": ["octav"]}]}, "datasets[0].exclude: unknown stem 'octav'"),
    ({"datasets": [{"name": "one", "recipe": "r", "stem_args": {"tal": {}}}]}, "datasets[0].stem_args: unknown stem"),
    # an empty list would run nothing, or nothing of its part: refused, naming the field
    ({"datasets": []}, "datasets: a non-empty list of dataset entries"),
    ({"stems": []}, "stems: a non-empty list of stem names or entries"),
    ({"seeds": []}, "seeds: need at least one seed"),
    ({"seeds": 0}, "seeds: need at least one seed"),
    ({"datasets": [{"name": "one", "recipe": "r", "seeds": []}]}, "datasets[0].seeds: need at least one seed"),
    ({"datasets": [{"name": "one", "recipe": "r", "stems": []}]}, "datasets[0].stems: an empty list picks nothing"),
    ({"datasets": [{"name": "one", "recipe": "r", "folds": {"key": "data.test_fold", "values": []}}]},
     "datasets[0].folds.values: give at least one value"),
    ({"stems": ["deep3", {"name": "x", "datasets": []}]}, "stems[1].datasets: an empty list picks nothing"),
    ({"stems": ["deep3", {"name": "x", "grid": {"width": []}}]}, "stems[1].grid: axis 'width' has no values"),
    ({"train_command": []}, "train_command: give the command"),
])
def test_bad_study_files_name_the_field(tmp_path, change, message):
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, **change))
    assert message in str(err.value) and "study.yaml" in str(err.value)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    assert "cannot read the study file" in capsys.readouterr().err
    assert main([str(write_study(tmp_path, datasets=[])), "--dry-run"]) == 2     # was "0 cells", exit 0
    assert capsys.readouterr().err.endswith("study.yaml: datasets: a non-empty list of dataset entries "
                                            "({name, recipe}) is required\n")
    path = write_study(tmp_path, datasets=[{"name": "one", "recipe": "no/such/recipe.yaml"}])
    assert main([str(path), "--plan"]) == 2
    assert "no/such/recipe.yaml" in capsys.readouterr().err


def test_plan_writes_one_command_per_unfinished_cell(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main([str(path), "--plan", "--raw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 14
    argv = shlex.split(lines[0])
    assert argv[:2] == [sys.executable, FAKE] and argv[-1] == f"out_dir={tmp_path}/out/runs/one/deep3/seed0"
    assert main([str(path), "--plan", str(tmp_path / "cells.txt"), "--cells", "two/*"]) == 0
    wrapped = (tmp_path / "cells.txt").read_text().splitlines()
    assert len(wrapped) == 6
    assert shlex.split(wrapped[0]) == ["python", "-m", "audiostem.study", str(path), "--cells", "two/deep3/seed0"]
    # finished cells drop out of the plan unless --all
    (tmp_path / "out/runs/one/deep3/seed0").mkdir(parents=True)
    (tmp_path / "out/runs/one/deep3/seed0/metrics.json").write_text("{}")
    assert main([str(path), "--plan"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 13
    assert main([str(path), "--plan", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 14
    assert main([str(path), "--dry-run", "--cells", "one/deep3/*"]) == 0
    out = capsys.readouterr().out
    assert "finished  one/deep3/seed0" in out and "pending   one/deep3/seed1" in out


def test_run_skips_finished_retries_failed_and_prunes(tmp_path, capsys):
    path = write_study(tmp_path, datasets=[
        {"name": "one", "recipe": str(tmp_path / "recipe.yaml")},
        {"name": "two", "recipe": str(tmp_path / "recipe.yaml"), "overrides": {"fake.fail": "once"}}],
        stems=["deep3", {"name": "resnet7", "overrides": {"fake.cv": True}}])
    runs = tmp_path / "out" / "runs"
    # --retries 0: the "two" cells fail once and stay partial; exit status 1
    assert main([str(path), "--jobs", "2", "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "4 failed" in err and "FAILED two/deep3/seed0" in err and "8/8" in err
    assert not (runs / "two/deep3/seed0/metrics.json").exists()
    assert (runs / "one/deep3/seed1/metrics.json").exists()
    # again: finished cells are skipped, partial ones resume and finish
    assert main([str(path), "--jobs", "2"]) == 0
    assert "4 finished, 4 to run" in capsys.readouterr().err
    for cell in runs.glob("*/*/seed*"):
        assert (cell / "metrics.json").exists()
        calls = (cell / "calls.txt").read_text().splitlines()
        assert len(calls) == (2 if cell.parts[-3] == "two" else 1)
        # one model per variant (first seed) keeps best.ckpt; everything else is pruned
        assert sorted(str(p.relative_to(cell)) for p in cell.rglob("*.ckpt")) == (
            ["checkpoints/best.ckpt"] if cell.name == "seed0" else [])
    log = (tmp_path / "out/logs/two__resnet7__seed1.log").read_text()
    assert log.count("=== exit status 1") == 1 and log.count("=== exit status 0") == 1
    assert "partial:" in log   # the second attempt saw the partial folder
    # retries within one invocation
    assert main([str(path), "--cells", "two/*"]) == 0
    assert "0 to run" in capsys.readouterr().err


def test_a_damaged_metrics_file_is_named_not_counted_finished_nor_deleted(tmp_path, capsys):
    """A cell whose metrics.json is truncated is listed as damaged by --dry-run and as failed by
    the runner (naming the file and the remedy); it is not trained over, and nothing is deleted."""
    path = write_study(tmp_path, seeds=1, stems=["deep3"],
                       datasets=[{"name": "one", "recipe": str(tmp_path / "recipe.yaml")}])
    assert main([str(path)]) == 0
    capsys.readouterr()
    metrics = tmp_path / "out/runs/one/deep3/seed0/metrics.json"
    metrics.write_text(metrics.read_text()[:7])
    assert main([str(path), "--dry-run"]) == 1           # a run would fail on it, as on an invalid recipe
    out = capsys.readouterr().out
    assert "damaged   one/deep3/seed0" in out and f"{metrics}: damaged" in out and "1 damaged" in out
    assert "from the start: there is no checkpoints/last.ckpt" in out      # pruned: nothing to resume
    assert "copy it back from the study's exported cells" in out
    # export leaves it out: it would overwrite a good earlier export of the cell
    kept = tmp_path / "kept/one/deep3/seed0"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text("{}")
    assert main(["export", str(path), str(tmp_path / "kept")]) == 1
    assert "not exported, DAMAGED one/deep3/seed0" in capsys.readouterr().err
    assert (kept / "metrics.json").read_text() == "{}"
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"DAMAGED one/deep3/seed0: {metrics}: damaged" in err and "1 failed: one/deep3/seed0" in err
    assert len(metrics.read_text()) == 7
    assert len((metrics.parent / "calls.txt").read_text().splitlines()) == 1


def test_retry_within_one_invocation(tmp_path, capsys):
    path = write_study(tmp_path, seeds=1, stems=["deep3"], overrides={"fake.fail": "once"},
                       datasets=[{"name": "one", "recipe": str(tmp_path / "recipe.yaml")}])
    assert main([str(path), "--retries", "1"]) == 0
    assert "1 trained" in capsys.readouterr().err
    path = write_study(tmp_path, seeds=1, stems=["deep3"], overrides={"fake.fail": "always"},
                       datasets=[{"name": "x", "recipe": str(tmp_path / "recipe.yaml")}])
    assert main([str(path), "--retries", "2"]) == 1
    assert len((tmp_path / "out/runs/x/deep3/seed0/calls.txt").read_text().splitlines()) == 3


def test_smoke_study_end_to_end(tmp_path, capsys):
    """studies/smoke.yaml with the real train command, on a generated cache, then the report."""
    pytest.importorskip("audiostem.train")
    synthetic_cache = pytest.importorskip("fixtures").synthetic_cache
    cache = synthetic_cache(tmp_path / "cache", per_class=10, bins=16, frames=(24, 40))
    study = yaml.safe_load((REPO / "studies/smoke.yaml").read_text())
    study["out_dir"] = str(tmp_path / "out")
    study["bootstrap"] = 200
    study["overrides"].update({"train.max_epochs": 2, "data.cache": str(cache.path), "data.prepare": None,
                               "data.features": None, "data.crop_frames": 24, "data.batch_size": 8})
    study["datasets"][0]["recipe"] = str(REPO / study["datasets"][0]["recipe"])
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(study))
    # two cells (one training round with --jobs 2) keep the test short
    assert main([str(path), "--jobs", "2", "--cells", "*/deep3/seed0", "*/patch4/seed0"]) == 0, capsys.readouterr().err
    runs = tmp_path / "out" / "runs" / "espeak_digits"
    metrics = json.loads((runs / "patch4/seed0/metrics.json").read_text())
    assert metrics["seed"] == 0 and metrics["stem"]["stride"] == [4, 4]
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*.ckpt")) == [
        "deep3/seed0/checkpoints/best.ckpt", "patch4/seed0/checkpoints/best.ckpt"]
    # the cell's values reached the run as values (--values - on stdin); the command the log shows
    # (key=value text, the one --dry-run prints) gives the same recipe
    from audiostem.recipe import load_recipe
    cell = next(c for c in expand(load_study(path)) if c.name == "espeak_digits/patch4/seed0")
    stored = yaml.safe_load((runs / "patch4/seed0/recipe.yaml").read_text())
    assert load_recipe(cell.recipe, [*cell.overrides, f"out_dir={cell.out_dir.resolve()}"]).to_dict() == stored
    log = (tmp_path / "out/logs/espeak_digits__patch4__seed0.log").read_text()
    assert "model.stem=patch4" in log and "--values" not in log
    assert main(["report", str(path)]) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "out/report/results.csv"))}
    assert rows["deep3"]["n_seeds"] == "1" and rows["patch4"]["paired_seeds"] == "1"
    assert rows["patch4"]["n_items"] == "6" and rows["resnet7"]["n_seeds"] == "0"
    assert float(rows["patch4"]["acc_mean"]) == pytest.approx(metrics["test"]["accuracy"], abs=1e-5)
    report = (tmp_path / "out/report")
    assert (report / "filters_espeak_digits.png").exists() and (report / "validation_curves.png").exists()


def test_dry_run_checks_every_cell_recipe(tmp_path, capsys):
    path = write_study(tmp_path, train_command=None, seeds=1,
                       datasets=[{"name": "digits", "recipe": str(REPO / "recipes/espeak_digits.yaml"),
                                  "stem_args": {"tall": {"n_freq": 64}}}],
                       stems=["deep3", "tall", {"name": "bad", "stem": "deep3", "args": {"bogus": 1}}])
    assert main([str(path), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "pending   digits/tall/seed0" in out and "model.stem_args.n_freq=64" in out
    assert "INVALID   digits/bad/seed0" in out and "bogus" in out
    assert "3 cells: 1 INVALID, 2 pending" in out


def test_a_dataset_whose_cache_cannot_be_built_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    from audiostem.study import runner
    path = write_study(tmp_path, seeds=1, stems=["deep3"],
                       datasets=[{"name": n, "recipe": str(tmp_path / "recipe.yaml")} for n in ("one", "two")])
    monkeypatch.setattr(runner, "prepare_caches", lambda study, cells, echo: {"two": "no audio at /x"})
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "1 trained, 0 already finished, 1 failed: two/deep3/seed0" in err
    assert (tmp_path / "out/runs/one/deep3/seed0/metrics.json").exists()


def test_a_partial_cell_whose_recipe_changed_restarts(tmp_path):
    """A code change that alters a resolved default (channels_last false -> 'auto', say) must not
    leave a partial cell refused forever: the runner restarts it; an unchanged one resumes."""
    from audiostem.recipe import dump_recipe, load_recipe
    from audiostem.study import runner
    path = write_study(tmp_path, train_command=None, seeds=1, stems=["deep3"],
                       datasets=[{"name": "digits", "recipe": str(REPO / "recipes/espeak_digits.yaml")}])
    study = load_study(path)
    cell = expand(study)[0]
    assert runner.stale_changes(study, cell) == []                   # pending: nothing stored
    cell.out_dir.mkdir(parents=True)
    now = load_recipe(cell.recipe, [*cell.overrides, f"out_dir={cell.out_dir}"])
    (cell.out_dir / "recipe.yaml").write_text(dump_recipe(now))
    assert runner.stale_changes(study, cell) == []                   # partial, same recipe: resume
    old = yaml.safe_load(dump_recipe(now))
    old["model"]["channels_last"] = False
    old["trainer"]["devices"] = 2                                    # runtime fields do not count
    (cell.out_dir / "recipe.yaml").write_text(yaml.safe_dump(old))
    assert runner.stale_changes(study, cell) == ["model.channels_last: False -> 'auto'"]
    (cell.out_dir / "metrics.json").write_text("{}")
    assert runner.stale_changes(study, cell) == []                   # finished cells are kept


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads_and_its_recipes_validate(path):
    """The study files in studies/ as shipped: valid, and every variant's recipe valid (one seed)."""
    from audiostem.study.runner import check_cell
    from audiostem.study.tuning import tuning_cells, unchosen_main_cells
    study = load_study(path)
    cells = expand(study) if study.tune is None else unchosen_main_cells(study)   # names do not depend on choices
    assert cells and len({c.name for c in cells}) == len(cells)
    missing = sorted({d.recipe for d in study.datasets if not (REPO / d.recipe).is_file()})
    if missing:     # recipes that other branches add (studies/stem_study_v2.yaml's new datasets)
        pytest.skip(f"{path.name}: recipes not on this branch yet: {missing}")
    first_seed = [c for c in cells if c.seed == study.seeds_of(study.dataset(c.dataset))[0]
                  and c.fold in (None, cells[0].fold)]
    if study.tune is not None:   # every grid point of the tuned groups, and the applied groups' main cells
        first_seed += [c for c in tuning_cells(study) if c.seed == study.tune.seeds[0]]
    assert [check_cell(study, c) for c in first_seed] == [None] * len(first_seed)


def test_export_keeps_finished_cells_that_a_new_out_dir_then_skips(tmp_path, capsys):
    path = write_study(tmp_path, seeds=1, stems=["deep3"], datasets=[
        {"name": "one", "recipe": str(tmp_path / "recipe.yaml")},
        {"name": "two", "recipe": str(tmp_path / "recipe.yaml"), "overrides": {"fake.fail": "always"}}])
    assert main([str(path), "--retries", "0"]) == 1
    assert main(["export", str(path), str(tmp_path / "kept")]) == 0
    assert "exported 1 finished cells" in capsys.readouterr().out
    kept = tmp_path / "kept/one/deep3/seed0"
    assert sorted(p.name for p in kept.iterdir()) == ["history.csv", "metrics.json", "predictions_test.csv"]
    # the last epoch's predictions go along where a run has them: the report's last-epoch check reads them
    cell = tmp_path / "out/runs/one/deep3/seed0"
    shutil.copyfile(cell / "predictions_test.csv", cell / "predictions_test_last.csv")
    assert main(["export", str(path), str(tmp_path / "kept")]) == 0
    assert (kept / "predictions_test_last.csv").read_text() == (cell / "predictions_test.csv").read_text()
    capsys.readouterr()
    assert not (tmp_path / "kept/two").exists() and not list((tmp_path / "kept").rglob("*.ckpt"))
    # a fresh out_dir with the exported cells copied in: the runner skips them
    data = yaml.safe_load(path.read_text())
    data["out_dir"] = str(tmp_path / "elsewhere")
    path.write_text(yaml.safe_dump(data))
    shutil.copytree(tmp_path / "kept", tmp_path / "elsewhere/runs")
    assert main([str(path), "--retries", "0", "--cells", "one/*"]) == 0
    assert "1 cells: 1 finished, 0 to run" in capsys.readouterr().err


def test_export_or_plan_into_a_file_is_one_line(tmp_path, capsys):
    path = write_study(tmp_path, seeds=1, stems=["deep3"], datasets=[
        {"name": "one", "recipe": str(tmp_path / "recipe.yaml")}])
    assert main([str(path)]) == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("mine\n")
    capsys.readouterr()
    for dest in (blocker, blocker / "sub"):
        assert main(["export", str(path), str(dest)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: export: cannot write to {dest}") and "\n" not in err
        assert main([str(path), "--plan", str(dest / "cells.txt"), "--all"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --plan: cannot write {dest / 'cells.txt'}") and "\n" not in err
    assert blocker.read_text() == "mine\n"
