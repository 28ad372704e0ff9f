"""Training from recipes: the run folder, reproducibility, resume, cross-validation and DDP."""
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from audiostem.recipe import RecipeError, load_recipe
from audiostem.train import main, train
from fixtures import synthetic_cache

TINY = {
    "seed": 3,
    "model": {"stem": "deep3", "stem_args": {"width": 8, "out_channels": 16},
              "body": {"widths": [16, 32], "depths": [1, 1]}},
    "train": {"max_epochs": 3, "lr": 0.01},
    "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
}


def tiny_recipe(tmp: Path, cache: Path, name: str = "r", **data) -> Path:
    recipe = {**TINY, "out_dir": str(tmp / name),
              "data": {"cache": str(cache), "crop_frames": 16, "batch_size": 8, "eval_hop": 8, **data}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_main(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One finished 3-epoch run on a synthetic cache, shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("train")
    cache = synthetic_cache(tmp / "cache", per_class=10)
    recipe = tiny_recipe(tmp, tmp / "cache")
    printed = run_main(recipe)
    return {"tmp": tmp, "cache": tmp / "cache", "recipe": recipe, "out": tmp / "r", "printed": printed,
            "n_test": len(cache.indices("test")), "classes": cache.classes}


def test_the_run_folder_holds_the_contract(base):
    out = base["out"]
    for name in ("recipe.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv",
                 "history.csv", "predictions_test.csv", "metrics.json", "confusion_matrix.png", "per_class.txt"):
        assert (out / name).exists(), name
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["stem"] == "deep3"
    history = read_csv(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    assert list(history[0])[:7] == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"]
    preds = read_csv(out / "predictions_test.csv")
    assert len(preds) == base["n_test"] and len({r["id"] for r in preds}) == base["n_test"]
    assert list(preds[0]) == ["id", "label", "pred", "correct", "fold"] + [f"p_{c}" for c in base["classes"]]
    assert all(r["correct"] == str(int(r["label"] == r["pred"])) for r in preds)
    assert all(abs(sum(float(r[f"p_{c}"]) for c in base["classes"]) - 1) < 1e-4 for r in preds)
    m = json.loads((out / "metrics.json").read_text())
    for split in ("test", "val"):
        assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "n_items"} <= set(m[split])
        assert set(m[split]["per_class"]) == set(base["classes"])
        assert set(m[split]["per_class"]["a"]) >= {"precision", "recall", "f1", "support"}
    assert m["test"]["n_items"] == base["n_test"]
    assert m["test"]["accuracy"] == pytest.approx(sum(r["correct"] == "1" for r in preds) / len(preds))
    assert m["epochs_run"] == 3 and 1 <= m["best_epoch"] <= 3
    assert m["params"] > 0 and m["total_flops"] > m["stem"]["flops"] > 0
    assert m["stem"]["stride"] == [4, 4] and m["classes"] == base["classes"] and m["seed"] == 3
    assert m["train_seconds"] > 0 and m["train_samples_per_second"] > 0 and m["device"].startswith("cpu (")
    assert m["test"]["accuracy"] >= 0.5            # the synthetic classes are easy
    # the last epoch's model on the test split too, beside the checkpoint validation chose
    last = read_csv(out / "predictions_test_last.csv")
    assert sorted(r["id"] for r in last) == sorted(r["id"] for r in preds)
    assert m["test_last"]["n_items"] == base["n_test"]
    assert m["test_last"]["accuracy"] == pytest.approx(sum(r["correct"] == "1" for r in last) / len(last))
    if m["best_epoch"] == m["epochs_run"]:
        assert m["test_last"]["accuracy"] == m["test"]["accuracy"]
    printed = base["printed"]
    assert "test accuracy" in printed and "macro-F1" in printed
    assert f"run folder: {out}" in printed and f"confusion matrix: {out / 'confusion_matrix.png'}" in printed


def test_checkpoints_load_without_pickled_code(base):
    ckpt = torch.load(base["out"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    info = ckpt["audiostem"]
    assert info["classes"] == base["classes"] and info["recipe"]["model"]["stem"] == "deep3"
    assert info["features"]["kind"] == "logmel" and len(info["stats"]["mean"][0]) == 16
    assert info["crop_frames"] == 16 and info["input_shape"] == [1, 16, 16]


def test_a_seeded_run_repeats_exactly(base):
    again = train(load_recipe(base["recipe"], [f"out_dir={base['tmp'] / 'again'}"]))
    first = json.loads((base["out"] / "metrics.json").read_text())
    for split in ("test", "val"):
        assert again[split] == first[split]
    losses = lambda d: [r["train_loss"] for r in read_csv(d / "history.csv")]
    assert losses(base["tmp"] / "again") == losses(base["out"])


class Crash(Exception):
    pass


class CrashAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Crash(f"simulated crash at the start of epoch {self.epoch}")


def test_resume_after_an_interruption_ends_like_an_uninterrupted_run(base, capsys):
    recipe = load_recipe(base["recipe"], [f"out_dir={base['tmp'] / 'crashed'}"])
    with pytest.raises(Crash):
        train(recipe, callbacks=[CrashAtEpoch(2)])
    out = base["tmp"] / "crashed"
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "metrics.json").exists()
    assert len(read_csv(out / "history.csv")) == 2
    resumed = train(recipe)                                       # finds last.ckpt by itself
    assert "resuming" in capsys.readouterr().err
    first = json.loads((base["out"] / "metrics.json").read_text())
    for split in ("test", "val"):
        assert resumed[split] == first[split]
    assert [r["train_loss"] for r in read_csv(out / "history.csv")] == \
           [r["train_loss"] for r in read_csv(base["out"] / "history.csv")]
    assert resumed["epochs_run"] == 3
    logged = read_csv(out / "logs" / "metrics.csv")                 # the logs of epochs 1-2 are kept
    assert {r["epoch"] for r in logged if r["val_accuracy"]} >= {"0", "1", "2"}


def test_a_finished_run_is_kept_and_another_recipe_is_refused(base, capsys):
    before = (base["out"] / "metrics.json").read_text()
    assert train(load_recipe(base["recipe"])) == json.loads(before)
    assert "already finished" in capsys.readouterr().err
    with pytest.raises(RecipeError, match=r"out_dir: .* holds a run of a different recipe \(train\.lr: 0\.01 -> 0\.02"):
        train(load_recipe(base["recipe"], ["train.lr=0.02"]))
    assert (base["out"] / "metrics.json").read_text() == before


def test_a_damaged_metrics_json_or_resume_file_is_one_line_and_loses_nothing(base, capsys):
    import shutil
    damaged = base["tmp"] / "damaged"
    shutil.copytree(base["out"], damaged)
    (damaged / "metrics.json").write_text((damaged / "metrics.json").read_text()[:50])
    assert main([str(base["recipe"]), f"out_dir={damaged}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "metrics.json: damaged" in err and "\n" not in err
    # --restart with a damaged --resume file: refused before the finished run is discarded
    bad = base["tmp"] / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    before = (base["out"] / "metrics.json").read_text()
    assert main([str(base["recipe"]), "--restart", "--resume", str(bad)]) == 2
    assert "bad.ckpt" in capsys.readouterr().err
    assert (base["out"] / "metrics.json").read_text() == before and (base["out"] / "checkpoints" / "best.ckpt").exists()


def test_restart_discards_every_file_of_the_old_run(base):
    import shutil
    out = base["tmp"] / "restarted"
    shutil.copytree(base["out"], out)
    assert (out / "predictions_val.csv").exists() and (out / "predictions_test_last.csv").exists()
    m = train(load_recipe(base["recipe"], [f"out_dir={out}", "train.max_epochs=1", "data.val_split=null"]),
              restart=True)
    assert m["val"] is None and "test_last" not in m
    assert not (out / "predictions_val.csv").exists() and not (out / "predictions_test_last.csv").exists()
    assert (out / "predictions_test.csv").exists()


def test_cross_validation_that_leaves_nothing_to_train_on_is_refused(tmp_path):
    synthetic_cache(tmp_path / "cache", per_class=4, folds=2)
    recipe = load_recipe(tiny_recipe(tmp_path, tmp_path / "cache", folds={"cv": 2}))
    with pytest.raises(RecipeError, match=r"data\.folds: test fold 1 and validation fold 2 leave no training item"):
        train(recipe)


def test_options_sgd_cosine_mixup_specaugment_early_stopping_no_test(base):
    recipe = load_recipe(base["recipe"], [
        f"out_dir={base['tmp'] / 'options'}", "train.optimizer=sgd", "train.schedule=cosine",
        "train.label_smoothing=0.1", "augment.mixup=true", "augment.specaugment={enabled: true, freq_width: 4, time_width: 4}",
        "augment.gain=true", "augment.time_shift=true", "train.early_stopping={enabled: true, patience: 1, metric: val_loss}",
        "train.max_epochs=4", "data.test_split=null", "model.head=freq_time", "model.channels_last=true"])
    m = train(recipe)
    assert m["test"] is None and m["val"]["n_items"] > 0 and m["epochs_run"] <= 4
    assert "test_last" not in m                    # no test split: nothing to test the last epoch on
    assert (base["tmp"] / "options" / "confusion_matrix.png").exists()


def test_cross_validation_reports_the_mean_over_folds(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=9, folds=3, group_size=1)
    # validation held out of the training folds (the leave-one-soundfont/game-out recipes)
    recipe = load_recipe(tiny_recipe(tmp_path, tmp_path / "cache", folds={"cv": 3, "val": "train", "val_fraction": 0.34}),
                         ["train.max_epochs=1"])
    m = train(recipe)
    out = tmp_path / "r"
    assert [f["fold"] for f in m["folds"]] == [1, 2, 3]
    assert m["test"]["accuracy"] == pytest.approx(sum(f["accuracy"] for f in m["folds"]) / 3)
    assert "accuracy_std" in m["test"] and m["test"]["n_items"] == len(cache)
    assert m["test_last"]["n_items"] == len(cache) and "pooled_accuracy" in m["test_last"]
    assert len(read_csv(out / "predictions_test_last.csv")) == len(cache)
    preds = read_csv(out / "predictions_test.csv")
    assert sorted(r["id"] for r in preds) == sorted(it.id for it in cache.items)
    assert {r["fold"] for r in preds} == {"1", "2", "3"}
    assert list(preds[0])[-1] == "group"                    # the cache's group, last, for clustering
    assert {r["id"]: r["group"] for r in preds} == {it.id: it.group for it in cache.items}
    val = read_csv(out / "fold_1" / "predictions_val.csv")
    assert val and {r["id"][0] for r in val} == {"a", "b", "c"}
    assert not {r["id"] for r in val} & {r["id"] for r in read_csv(out / "fold_1" / "predictions_test.csv")}
    for k in (1, 2, 3):
        assert json.loads((out / f"fold_{k}" / "metrics.json").read_text())["fold"] == k
    assert (out / "checkpoints" / "best.ckpt").exists() and len(read_csv(out / "history.csv")) == 1
    assert (out / "confusion_matrix.png").exists()


def test_ddp_with_two_cpu_processes(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=10)
    recipe = tiny_recipe(tmp_path, tmp_path / "cache", name="ddp")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "audiostem.train", str(recipe), "train.max_epochs=2",
                           "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["test"]["n_items"] == len(cache.indices("test"))        # every clip once, across both ranks
    assert m["epochs_run"] == 2 and done.stdout.count("test accuracy") == 1
    assert len(read_csv(tmp_path / "ddp" / "predictions_test.csv")) == len(cache.indices("test"))


def test_an_out_dir_that_is_a_file_or_under_one_is_one_line(base, capsys):
    blocker = base["tmp"] / "a_file"
    blocker.write_text("mine\n")
    for out in (blocker, blocker / "run"):
        assert main([str(base["recipe"]), f"out_dir={out}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: out_dir: cannot create the run folder {out}") and "\n" not in err
    assert blocker.read_text() == "mine\n"


@pytest.mark.parametrize("override", ["trainer.accelerator=tpu9", "trainer.precision=foo", "trainer.devices=-3"])
def test_a_trainer_value_lightning_refuses_is_one_line(base, capsys, override):
    assert main([str(base["recipe"]), f"out_dir={base['tmp'] / 'bad_trainer'}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trainer: ") and "\n" not in err


def test_a_last_checkpoint_of_another_recipe_is_refused(base, capsys):
    import shutil
    out = base["tmp"] / "swapped"
    shutil.copytree(base["out"], out)
    (out / "metrics.json").unlink()
    last = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["audiostem"]["recipe"]["seed"] = 9            # another run's last.ckpt, same model
    torch.save(ckpt, last)
    assert main([str(base["recipe"]), f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "last.ckpt: written by a run of another recipe (seed: 9 -> 3)" in err and "\n" not in err
    assert last.exists()


def test_a_terminated_run_says_so_and_exits_non_zero(base, capsys, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import audiostem.train as train_module

    def stopped(*args, **kwargs):
        raise SIGTERMException()          # what Lightning raises after SIGTERM, a SystemExit of status 0
    monkeypatch.setattr(train_module, "train", stopped)
    assert main([str(base["recipe"])]) == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: stopped by SIGTERM") and "\n" not in err


def test_last_ckpt_is_the_last_finished_epoch_even_when_it_is_not_the_best(base):
    """Lightning 2.6 writes save_last only in an epoch whose top-k checkpoint improved: a resume
    would go back to the best epoch. last.ckpt must hold the last finished epoch, best.ckpt the best."""
    epoch = lambda name: torch.load(base["out"] / "checkpoints" / name, weights_only=True)["epoch"]
    history = read_csv(base["out"] / "history.csv")
    scores = [float(r["val_accuracy"]) for r in history]
    best = scores.index(max(scores))
    assert best < len(history) - 1, "the fixture's run must end on an epoch that did not improve"
    assert epoch("last.ckpt") == len(history) - 1
    assert epoch("best.ckpt") == best


@pytest.mark.parametrize("where", ["checkpoint", "history"])
def test_a_full_disk_during_training_is_one_line_and_the_run_resumes(base, capsys, monkeypatch, where):
    import errno
    import audiostem.checkpoint as checkpoint_module
    import audiostem.run_folder as run_folder

    out = base["tmp"] / f"full_{where}"
    calls = {"n": 0}

    def full(real):
        def write(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > (2 if where == "checkpoint" else 1):
                raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
            return real(*args, **kwargs)
        return write
    if where == "checkpoint":       # best.ckpt and last.ckpt of epoch 1, then none
        monkeypatch.setattr(checkpoint_module, "write_atomic", full(checkpoint_module.write_atomic))
    else:                           # history.csv of epoch 1, then none
        monkeypatch.setattr(run_folder, "write_history", full(run_folder.write_history))
    assert main([str(base["recipe"]), f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "No space left on device" in err and "run the same command again" in err
    from audiostem.checkpoint import load_checkpoint
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 0     # epoch 1 survived, whole
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    run_main(base["recipe"], f"out_dir={out}")                                     # space freed: resume
    first = json.loads((base["out"] / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    for split in ("test", "val"):
        assert again[split] == first[split]


def test_a_run_resumed_after_early_stopping_trains_no_further(base):
    """Lightning restores EarlyStopping's counters but not the trainer's should_stop: a run that had
    stopped early and was interrupted before metrics.json (a full disk while writing the reports)
    trained on when run again, and ended unlike the uninterrupted run."""
    import shutil
    stop = ["train.early_stopping={enabled: true, patience: 1, metric: val_accuracy}", "train.max_epochs=8"]
    first = train(load_recipe(base["recipe"], [f"out_dir={base['tmp'] / 'es'}", *stop]))
    assert first["epochs_run"] < 8, "the fixture's run must stop early"
    again = base["tmp"] / "es_again"
    shutil.copytree(base["tmp"] / "es", again)
    (again / "metrics.json").unlink()
    resumed = train(load_recipe(base["recipe"], [f"out_dir={again}", *stop]))
    assert resumed["epochs_run"] == first["epochs_run"]
    for split in ("test", "val", "test_last"):
        assert resumed[split] == first[split]
    assert len(read_csv(again / "history.csv")) == first["epochs_run"]


def test_the_full_disk_line_says_what_there_is_to_resume(tmp_path):
    import errno
    from audiostem.train import disk_error
    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "history.csv"))
    assert "no epoch had finished" in disk_error(full, str(run))
    (run / "fold_2" / "checkpoints").mkdir(parents=True)
    (run / "fold_2" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    line = disk_error(full, str(run))
    assert f"{run}/fold_2/checkpoints/last.ckpt" in line and "free space and run the same command again" in line
    assert "\n" not in line
    assert disk_error(OSError(errno.EROFS, "Read-only file system", str(run)), str(run)).count("fix that") == 1


def test_a_stray_checkpoint_temporary_of_a_killed_save_is_removed_on_resume(base):
    import shutil
    out = base["tmp"] / "stray"
    shutil.copytree(base["out"], out)
    (out / "metrics.json").unlink()
    stray = out / "checkpoints" / ".last.ckpt.999.1.tmp"
    stray.write_bytes(b"half a checkpoint")
    train(load_recipe(base["recipe"], [f"out_dir={out}"]))
    assert not stray.exists()
