"""The study's bodies axis (one analysis group per dataset x body) and its tuning phase (values
chosen on validation before the main cells), with the fake train command."""
import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from audiostem.study.__main__ import main
from audiostem.study.grid import StudyError, TuningPending, expand, load_study
from audiostem.study.tuning import study_cells

FAKE = str(Path(__file__).with_name("study_fake_train.py"))
REPO = Path(__file__).resolve().parents[1]


def write_study(tmp_path, **changes):
    (tmp_path / "recipe.yaml").write_text("items: 30\n")
    study = {"name": "t", "out_dir": str(tmp_path / "out"), "seeds": 2,
             "train_command": [sys.executable, FAKE],
             "datasets": [{"name": "one", "recipe": str(tmp_path / "recipe.yaml")},
                          {"name": "two", "recipe": str(tmp_path / "recipe.yaml")}],
             "stems": ["deep3", {"name": "octave", "datasets": ["one"]}, "patch4"]}
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def digest(cells) -> str:
    text = json.dumps([[c.name, c.recipe, list(c.overrides), str(c.out_dir)] for c in cells])
    return hashlib.sha256(text.encode()).hexdigest()


def test_v1_study_files_expand_exactly_as_before():
    """Names, recipes, overrides and folders of the committed v1 cells, as expanded before bodies
    and tuning existed (the digests were taken on the code of that time)."""
    assert digest(expand(load_study(REPO / "studies/stem_study.yaml"))) == \
        "dc821fae1ca3f253780815563cf017a7d449ca36631ce5f866d826874c8c5cb4"
    assert digest(expand(load_study(REPO / "studies/folk_schedule.yaml"))) == \
        "c29de43b1cfa4e5628fc73a4c05bf0f1ed2a5d7b4e4f127fc4ec5056a6cbfabe"


def test_bodies_make_one_group_per_dataset_and_body(tmp_path):
    from audiostem.study.collect import collect
    from audiostem.study.runner import keep_checkpoint, run_order
    path = write_study(tmp_path, bodies=["narrow", {"name": "timm:resnet18.a1_in1k", "stems": ["deep3", "octave"],
                                                      "overrides": {"data.batch_size": 16}}],
                       overrides={"train.max_epochs": 3})
    data = yaml.safe_load(path.read_text())
    data["datasets"][1]["bodies"] = ["narrow"]
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    assert [(d.name, d.entry, d.body) for d in study.datasets] == [
        ("one", "one", "narrow"), ("one@timm_resnet18.a1_in1k", "one", "timm:resnet18.a1_in1k"), ("two", "two", "narrow")]
    cells = expand(study)
    names = [c.name for c in cells]
    assert len(cells) == (3 + 2 + 2) * 2
    # the stem entry's `datasets: [one]` holds for all of one's groups; the body's `stems` restrict it
    assert "one@timm_resnet18.a1_in1k/octave/seed1" in names and "one@timm_resnet18.a1_in1k/patch4/seed0" not in names
    assert "two/octave/seed0" not in names
    c = next(c for c in cells if c.name == "one@timm_resnet18.a1_in1k/deep3/seed0")
    assert c.overrides == ("train.max_epochs=3", "data.batch_size=16", "model.body=timm:resnet18.a1_in1k",
                           "model.stem=deep3", "seed=0")
    assert c.out_dir == tmp_path / "out/runs/one@timm_resnet18.a1_in1k/deep3/seed0"
    assert next(c for c in cells if c.name == "two/patch4/seed1").overrides == (
        "train.max_epochs=3", "model.body=narrow", "model.stem=patch4", "seed=1")
    assert keep_checkpoint(study, c)
    # the report's groups: each dataset x body its own, compared with its own baseline runs
    results, missing = collect(study, cells)
    assert ("one@timm_resnet18.a1_in1k", "octave") in results and len(missing) == len(cells)
    # cheapest first: the first body's groups, then seed-major within a group
    order = [c.name for c in run_order(study, cells)]
    assert order[:4] == ["one/deep3/seed0", "one/octave/seed0", "one/patch4/seed0", "one/deep3/seed1"]
    assert order.index("two/patch4/seed1") < order.index("one@timm_resnet18.a1_in1k/deep3/seed0")


@pytest.mark.parametrize("change, message", [
    ({"bodies": ["narrow", {"name": "resnet18", "datasets": ["three"]}]}, "bodies[1].datasets: unknown dataset 'three'"),
    ({"bodies": ["narrow", {"name": "resnet18", "stems": ["patch4"]}]}, "bodies[1].stems: add the baseline 'deep3'"),
    ({"bodies": ["narrow", {"name": "resnet18", "stems": ["deep3", "tal"]}]}, "bodies[1].stems: unknown stem 'tal'"),
    ({"bodies": ["timm:resnet18", "timm_resnet18"]}, "bodies: names"),
    ({"bodies": []}, "bodies: a non-empty list"),
    ({"bodies": ["narrow", {"name": "resnet18", "datasets": []}]}, "bodies[1].datasets: an empty list picks nothing"),
    ({"bodies": ["narrow", {"name": "resnet18", "stems": []}]}, "bodies[1].stems: an empty list picks nothing"),
    ({"bodies": ["narrow"], "datasets": [{"name": "one", "recipe": "r", "bodies": []}]},
     "datasets[0].bodies: an empty list picks nothing"),
    ({"bodies": ["narrow "]}, "is not a body name"),
    ({"datasets": [{"name": "one", "recipe": "r", "bodies": ["narrow"]}]}, "datasets[0].bodies: the study lists no bodies"),
    ({"bodies": ["narrow"], "datasets": [{"name": "one", "recipe": "r", "bodies": ["resnet10"]}]},
     "datasets[0].bodies: unknown body 'resnet10'"),
    ({"bodies": ["narrow"], "datasets": [{"name": "one", "recipe": "r", "overrides": {"model.body": "x"}}]},
     "datasets[0].overrides: model.body is set by the study's bodies"),
    ({"tune": {"grid": {}}}, "tune.grid: give at least one axis"),
    ({"tune": {"grid": {"train.lr": [0.1, 0.1]}}}, "tune.grid: axis 'train.lr' needs one or more different values"),
    ({"tune": {"grid": {"train.lr": []}}}, "tune.grid: axis 'train.lr' needs one or more different values"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "seeds": []}}, "tune.seeds: need at least one seed"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "datasets": []}}, "tune.datasets: an empty list picks nothing"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "datasets": ["one"]}}, "tune: dataset 'two' is neither tuned"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "datasets": ["one"], "apply": {"two": "three"}}}, "unknown dataset 'three'"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "datasets": ["two"], "apply": {"one": "two"}}},
     "one takes its choices from two, which does not run ['octave']"),
    ({"tune": {"grid": {"train.lr": [0.1]}, "metric": "test_accuracy"}}, "tune.metric"),
])
def test_bad_bodies_and_tune_sections_name_the_field(tmp_path, change, message):
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, **change))
    assert message in str(err.value) and "study.yaml" in str(err.value)


TUNE = {"grid": {"train.lr": [0.003, 0.001, 0.01]}, "seeds": [100], "datasets": ["one"], "apply": {"two": "one"}}


def tune_study(tmp_path, **changes):
    # validation favours lr 0.01, the test items favour lr 0.001: a choice must follow validation
    return write_study(tmp_path, **{"tune": TUNE, "stems": ["deep3", "patch4"],
                                    "overrides": {"fake.val_best": 0.01, "fake.test_best": 0.001}, **changes})


def test_tuning_runs_first_and_chooses_on_validation(tmp_path, capsys):
    from audiostem.study.report import _summary
    from audiostem.study.tuning import tuning_choices, tuning_lines
    path = tune_study(tmp_path)
    study = load_study(path)
    with pytest.raises(TuningPending, match="6 of its tuning cells are unfinished"):
        study_cells(study)
    # before tuning: --dry-run and --plan show the tuning cells and say the main cells wait
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pending   _tune/one/deep3/lr0.003/seed100" in out and "train.lr=0.01 seed=100" in out
    assert "8 main cells wait for their tuning choices" in out and "0 INVALID" in out
    assert main([str(path), "--plan"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6 and "8 main cells wait for their tuning cells: plan again" in captured.err
    assert main([str(path), "--cells", "one/*"]) == 2
    assert "the main cells exist once the tuning cells ('_tune/*') have finished" in capsys.readouterr().err
    # one invocation: the tuning cells, then the choices, then the main cells with them
    assert main([str(path), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "6 tuning cells: 0 finished, 6 to run" in err and "8 cells: 0 finished, 8 to run" in err
    assert err.index("tuning choices made") < err.index("8 cells:")
    choices = tuning_choices(study)
    assert choices["one"]["deep3"]["values"] == {"train.lr": 0.01}            # validation, not test
    assert choices["one"]["deep3"]["scores"] == {"lr0.003": 0.893, "lr0.001": 0.891, "lr0.01": 0.9}
    assert choices["two"]["patch4"]["tuned_on"] == "one"                      # applied to the untuned dataset
    runs = tmp_path / "out/runs"
    assert "train.lr=0.01" in (runs / "two/patch4/seed1/calls.txt").read_text()
    assert not list((runs / "_tune").rglob("*.ckpt"))                         # tuning cells keep no checkpoint
    assert study_cells(study)[0].overrides == ("fake.test_best=0.001", "fake.val_best=0.01", "model.stem=deep3",
                                          "train.lr=0.01", "seed=0")
    line = tuning_lines(study, "two")[0]
    assert line.startswith("**Tuning:** lr chosen on validation accuracy") and "tuned on one" in line
    assert line.endswith(": deep3 0.01, patch4 0.01.")
    assert line in _summary("two", [], [], study)
    # a second run: nothing to do
    assert main([str(path)]) == 0
    assert "0 trained, 14 already finished" in capsys.readouterr().err


@pytest.mark.parametrize("rise", [0.0, 0.05])
def test_the_tuning_line_says_whether_the_winning_runs_had_plateaued(tmp_path, capsys, rise):
    """The epochs are not tuned unless they are in the grid: the report's tuning line reads the
    validation curves of the winning tuning runs (only theirs) and says whether they still rose."""
    from audiostem.study.report import _summary
    path = tune_study(tmp_path)
    assert main([str(path), "--cells", "_tune/*"]) == 0
    capsys.readouterr()
    study = load_study(path)
    for cell in (tmp_path / "out/runs/_tune/one").glob("*/*/seed100"):
        winner = cell.parent.name == "lr0.01"               # fake.val_best: lr 0.01 wins on validation
        curve = [0.6 + (rise if winner else 0.3) * e / 7 for e in range(8)]
        (cell / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds\n" + "".join(
            f"{e + 1},1,1,{a},0.5,0.001,1\n" for e, a in enumerate(curve)))
    line = _summary("two", [], [], study)[-1]
    assert line.startswith("**Tuning:**") and "The winning tuning runs (on one) ended with validation accuracy" in line
    if rise:
        assert "+1.4 points over their last quarter" in line and "2 of 2 with their best epoch in the last 10%" in line
        assert line.endswith("still rising when the schedule ended, so more epochs might raise every stem; "
                             "the epochs were not tuned.")
    else:
        assert "+0.0 points over their last quarter" in line and line.endswith(": they had plateaued.")


def test_ties_go_to_the_first_point(tmp_path, capsys):
    from audiostem.study.tuning import tuning_choices
    path = tune_study(tmp_path, overrides={})          # no fake.val_best: every point scores the same
    assert main([str(path), "--cells", "_tune/*"]) == 0
    assert "the 8 main cells wait" not in capsys.readouterr().err
    assert tuning_choices(load_study(path))["one"]["patch4"]["values"] == {"train.lr": 0.003}


def test_changed_choices_under_finished_cells_are_refused(tmp_path, capsys):
    path = tune_study(tmp_path)
    assert main([str(path)]) == 0
    capsys.readouterr()
    runs = tmp_path / "out/runs"
    calls = (runs / "one/deep3/seed0/calls.txt").read_text()
    # a tuning result changes (a rerun, an edit): lr 0.001 now wins on validation for deep3
    metrics = runs / "_tune/one/deep3/lr0.001/seed100/metrics.json"
    m = json.loads(metrics.read_text())
    m["val"]["accuracy"] = 0.99
    metrics.write_text(json.dumps(m))
    for argv in ([str(path)], [str(path), "--plan"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "the tuning choices changed (one/deep3: {'train.lr': 0.01} -> {'train.lr': 0.001}" in err
        assert "Refusing to mix them" in err and "4 main cells already started" in err
    assert (runs / "one/deep3/seed0/calls.txt").read_text() == calls         # nothing re-ran
    assert json.loads((runs / "_tune/choices.json").read_text())["choices"]["one"]["deep3"]["values"] == {"train.lr": 0.01}
    # the choices file lost: the finished cells' recipe.yaml still says what they ran
    (runs / "_tune/choices.json").unlink()
    assert main([str(path)]) == 2
    assert "recipe.yaml ran {'train.lr': 0.01}, not the values the tuning cells choose now" in capsys.readouterr().err
    # restored as it was: the study is complete again
    m["val"]["accuracy"] = 0.891
    metrics.write_text(json.dumps(m))
    assert main([str(path)]) == 0
    assert "0 trained, 14 already finished" in capsys.readouterr().err


def test_new_tuning_cells_hold_the_main_cells_back_and_export_carries_the_choices(tmp_path, capsys):
    path = tune_study(tmp_path)
    assert main([str(path), "--cells", "_tune/*", "one/deep3/*"]) == 0
    assert "2 cells: 0 finished, 2 to run" in capsys.readouterr().err
    # a tuning seed added: its cells run before any more main cells
    data = yaml.safe_load(path.read_text())
    data["tune"]["seeds"] = [100, 101]
    path.write_text(yaml.safe_dump(data))
    assert main([str(path), "--plan", "--raw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("seed=101" in x for x in lines)
    assert main([str(path)]) == 0
    err = capsys.readouterr().err
    assert "6 tuning cells: 0 finished, 6 to run" in err or "12 tuning cells: 6 finished, 6 to run" in err
    assert main(["export", str(path), str(tmp_path / "kept")]) == 0
    assert (tmp_path / "kept/_tune/choices.json").read_bytes() == (tmp_path / "out/runs/_tune/choices.json").read_bytes()
    assert (tmp_path / "kept/_tune/one/patch4/lr0.01/seed101/metrics.json").is_file()
    assert (tmp_path / "kept/two/deep3/seed1/metrics.json").is_file()
    assert shlex.split(lines[0])[-1].startswith(f"out_dir={tmp_path}/out/runs/_tune/one/deep3/")
    # a damaged tuning cell: export refuses in one line naming it (the choices are read from it)
    metrics = tmp_path / "out/runs/_tune/one/patch4/lr0.01/seed101/metrics.json"
    metrics.write_text("{")
    assert main(["export", str(path), str(tmp_path / "kept2")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {metrics}: damaged")


def test_bodies_and_tuning_together(tmp_path, capsys):
    """Each body's group is tuned on its own, and an untuned dataset takes the same body's choices."""
    from audiostem.study.tuning import tuning_cells, tuning_choices
    path = tune_study(tmp_path, bodies=["narrow", {"name": "resnet18", "stems": ["deep3", "patch4"]}], seeds=2,
                      bootstrap=200)
    study = load_study(path)
    assert sorted({c.dataset for c in tuning_cells(study)}) == ["one", "one@resnet18"]
    # the narrow groups' main cells need only the narrow tuning cells
    assert main([str(path), "--cells", "_tune/one/*"]) == 0
    capsys.readouterr()
    assert main([str(path), "--cells", "one/*", "two/*"]) == 0
    assert "8 cells: 0 finished, 8 to run" in capsys.readouterr().err
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "finished  two/patch4/seed1" in out and "8 main cells wait for their tuning choices" in out
    assert main([str(path), "--cells", "two@resnet18/*"]) == 2
    assert "the main cells exist once the tuning cells" in capsys.readouterr().err
    assert main([str(path)]) == 0
    err = capsys.readouterr().err
    assert "8 cells: 8 finished, 0 to run" in err
    assert err.index("6 tuning cells: 0 finished, 6 to run") < err.index("8 cells: 0 finished, 8 to run")
    choices = tuning_choices(study)
    assert choices["two@resnet18"]["deep3"]["tuned_on"] == "one@resnet18"
    assert "model.body=resnet18" in (tmp_path / "out/runs/two@resnet18/deep3/seed0/calls.txt").read_text()
    # the report: a section per dataset and body, each with its tuning line
    assert main(["report", str(path)]) == 0
    report = (tmp_path / "out/report/report.md").read_text()
    sections = report.split("\n## ")[1:]
    assert [x.split("\n")[0] for x in sections][:4] == ["one", "one@resnet18", "two", "two@resnet18"]
    assert all("**Tuning:** lr chosen on validation accuracy" in x for x in sections[:4])
    assert "tuned on one@resnet18" in sections[3]


def test_the_v2_study_file(tmp_path, monkeypatch):
    """studies/stem_study_v2.yaml: its groups, tuning cells and main cells, and its recipes valid for
    one cell per group and body (recipes other branches add are stood in for by v1 recipes of the
    same kind, audio or roll, until they are here)."""
    from audiostem.study.runner import check_cell, run_order
    from audiostem.study.tuning import tuning_cells, unchosen_main_cells
    data = yaml.safe_load((REPO / "studies/stem_study_v2.yaml").read_text())
    for d in data["datasets"]:
        if not (REPO / d["recipe"]).is_file():
            stand_in = "folk.yaml" if d["name"] == "polyphony" else "gm_instruments.yaml"
            d["recipe"] = str(REPO / "recipes" / stand_in)
        else:
            d["recipe"] = str(REPO / d["recipe"])
    data["out_dir"] = str(tmp_path / "out")
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(data))
    study = load_study(tmp_path / "v2.yaml")
    assert [d.name for d in study.datasets] == ["hedgewars_voices", "hedgewars_voices@resnet18", "polyphony",
                                                "polyphony@resnet18", "gm_instruments_loso", "game_sfx"]
    assert len(study.seeds) >= 5
    tuning, main = tuning_cells(study), unchosen_main_cells(study)
    assert (len(tuning), len(main)) == (66, 160)
    five = {"deep3", "resnet7", "wide5", "pons", "patch4"}
    for d in study.datasets:
        assert {c.variant for c in main if c.dataset == d.name} >= five
    assert run_order(study, main)[0].name == "hedgewars_voices/deep3/seed0"
    assert run_order(study, main)[-1].dataset == "polyphony@resnet18"
    firsts = [next(c for c in tuning + main if c.dataset == d.name) for d in study.datasets]
    assert [check_cell(study, c) for c in firsts] == [None] * len(firsts)
