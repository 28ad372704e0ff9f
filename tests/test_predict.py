"""Prediction on new audio and MIDI files, and re-evaluation of a run from the command line."""
import json
import subprocess
import sys

import pytest
import yaml

from audiostem.evaluate import main as evaluate_main
from audiostem.predict import main as predict_main, predict_files
from audiostem.train import train
from audiostem.recipe import load_recipe
from fixtures import AUDIO_FEATURES, write_midi, write_wav

TINY = {"model": {"stem": "resnet7", "stem_args": {"out_channels": 16}, "body": {"widths": [16], "depths": [1]}},
        "train": {"max_epochs": 4, "lr": 0.01},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}}


def train_on_folder(tmp, root, features, crop):
    recipe = {**TINY, "out_dir": str(tmp / "run"),
              "data": {"cache": str(tmp / "cache"), "prepare": {"source": "folder", "root": str(root), "workers": 1},
                       "features": features, "crop_frames": crop, "batch_size": 4}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    train(load_recipe(tmp / "r.yaml"))
    return tmp / "run"


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audio")
    for n in range(10):
        write_wav(tmp / "data" / "low" / f"l{n}.wav", 200 + 10 * n, seconds=0.6)
        write_wav(tmp / "data" / "high" / f"h{n}.wav", 2000 + 50 * n, seconds=0.6)
    return train_on_folder(tmp, tmp / "data", AUDIO_FEATURES, 16)


@pytest.fixture(scope="module")
def midi_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("midi")
    for n in range(10):
        # the classes differ in rhythm as well as register: a CNN with global pooling is
        # (almost) blind to where a pattern sits on the pitch axis
        write_midi(tmp / "data" / "low" / f"l{n}.mid", 36 + n % 4, seconds=3, step=0.5)
        write_midi(tmp / "data" / "high" / f"h{n}.mid", 76 + n % 4, seconds=3, step=0.125)
    return train_on_folder(tmp, tmp / "data", {"kind": "pianoroll", "fs": 8.0, "pitch_range": "piano"}, 16)


def test_predict_an_audio_file(audio_run, tmp_path, capsys):
    low = write_wav(tmp_path / "new_low.wav", 230, seconds=1.5)
    high = write_wav(tmp_path / "new_high.wav", 2100, seconds=0.2)
    (result_low, result_high) = predict_files(audio_run, [low, high], top_k=2)
    assert result_low["top"][0]["label"] == "low" and result_high["top"][0]["label"] == "high"
    assert result_low["windows"] > 1 and result_high["windows"] == 1        # a long file is windowed
    assert sum(result_low["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert predict_main([str(audio_run / "checkpoints" / "best.ckpt"), str(low), "--top-k", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{low}: low ") and "high" not in line


def test_predict_a_midi_file_and_json_output(midi_run, tmp_path, capsys):
    high = write_midi(tmp_path / "tune.mid", 78, seconds=5, step=0.125)
    assert predict_main([str(midi_run), str(high), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["top"][0]["label"] == "high" and set(result["probabilities"]) == {"high", "low"}


def test_unreadable_and_wrong_kind_files_are_reported(midi_run, tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", 440)
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd garbage")
    good = write_midi(tmp_path / "ok.mid", 40, step=0.5)
    assert predict_main([str(midi_run), str(wav), str(broken), str(good)]) == 1
    captured = capsys.readouterr()
    assert f"{wav}: error:" in captured.err and "this model reads MIDI files" in captured.err
    assert f"{broken}: error:" in captured.err and f"{good}: low" in captured.out
    assert predict_main([str(tmp_path / "nowhere"), str(good)]) == 2
    assert "no such checkpoint file or run folder" in capsys.readouterr().err


def test_evaluate_reproduces_the_run_metrics(audio_run, tmp_path, capsys):
    stored = json.loads((audio_run / "metrics.json").read_text())
    assert evaluate_main([str(audio_run), "--split", "test", "--json", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    assert metrics["accuracy"] == pytest.approx(stored["test"]["accuracy"])
    assert metrics["n_items"] == stored["test"]["n_items"]
    assert (tmp_path / "ev" / "predictions_test.csv").exists() and (tmp_path / "ev" / "confusion_matrix_test.png").exists()
    assert evaluate_main([str(audio_run), "--split", "nosuch"]) == 2
    assert "--split nosuch: no items" in capsys.readouterr().err


def test_evaluate_cli(audio_run):
    done = subprocess.run([sys.executable, "-m", "audiostem.evaluate", str(audio_run), "--split", "val"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "precision" in done.stdout and "macro F1" in done.stdout and ": val" in done.stdout


def test_predict_reads_files_from_the_wild(audio_run, tmp_path):
    """A Latin-1 file name, an unlisted extension, and a WAV whose header sizes are 0 (as a
    streaming writer leaves it): read, and printed without a traceback."""
    import os

    from test_files_in_the_wild import zero_sizes

    data = write_wav(tmp_path / "src.wav", 230, seconds=1.0).read_bytes()
    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9_take1.wav"))
    with open(odd, "wb") as fh:
        fh.write(data)
    (tmp_path / "take2.wave").write_bytes(data)
    (tmp_path / "stream.wav").write_bytes(zero_sizes(data))
    files = [odd, str(tmp_path / "take2.wave"), str(tmp_path / "stream.wav")]
    done = subprocess.run([sys.executable, "-m", "audiostem.predict", str(audio_run), *files, "--top-k", "1"],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0 and "Traceback" not in err, err
    assert f"{tmp_path}/caf\\xe9_take1.wav: low" in out and "take2.wave: low" in out and "stream.wav: low" in out


def test_evaluate_reads_the_stored_recipe_and_builds_one_model(audio_run, tmp_path, monkeypatch):
    """The checkpoint's recipe was validated by training: evaluate parses it and builds the model
    once (for the weights); a damaged stored recipe is one line naming the checkpoint."""
    import torch

    from audiostem import models
    from audiostem.checkpoint import load_checkpoint
    from audiostem.evaluate import evaluate
    from audiostem.inference import CheckpointError
    built = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: built.append(1) or real(*a, **k))
    assert evaluate(audio_run, split="test")["metrics"]["n_items"] > 0 and len(built) == 1
    ckpt = load_checkpoint(audio_run / "checkpoints" / "best.ckpt")
    ckpt["audiostem"]["recipe"]["data"]["folds"] = "every"
    torch.save(ckpt, tmp_path / "damaged.ckpt")
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt: its stored recipe: data\.folds") as info:
        evaluate(tmp_path / "damaged.ckpt", split="test")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("option", [["--top-k", "0"], ["--top-k", "two"], ["--batch-size", "-1"]])
def test_counts_below_one_are_a_usage_error(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        predict_main([str(tmp_path / "x.ckpt"), str(tmp_path / "a.wav"), *option])
    assert stop.value.code == 2 and f"argument {option[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("main", [predict_main, evaluate_main], ids=["predict", "evaluate"])
@pytest.mark.parametrize("option, why", [(["--batch-size", "0"], "0 is below 1"),
                                         (["--device", "bogus"], "'bogus' is not a torch device"),
                                         (["--device", "cuda:99"], "cuda:99: not available here")])
def test_a_bad_count_or_device_is_a_usage_error(main, option, why, tmp_path, capsys):
    args = [str(tmp_path / "x.ckpt"), *([str(tmp_path / "a.wav")] if main is predict_main else [])]
    with pytest.raises(SystemExit) as stop:
        main([*args, *option])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option[0]}: {why}" in err and "Traceback" not in err


def test_a_role_the_recipe_left_out_is_the_cache_split_of_that_name(audio_run, tmp_path):
    """A model trained with data.test_split: null has no test role; --split test then means the
    cache's split named test, which the role used to hide ('no items', listing 'test' among the splits)."""
    import torch

    from audiostem.checkpoint import load_checkpoint
    from audiostem.evaluate import evaluate
    from audiostem.inference import CheckpointError
    ckpt = load_checkpoint(audio_run / "checkpoints" / "best.ckpt")
    ckpt["audiostem"]["recipe"]["data"].update(test_split=None, val_split=None)
    torch.save(ckpt, tmp_path / "no_test.ckpt")
    assert evaluate(tmp_path / "no_test.ckpt", split="test")["metrics"]["n_items"] == \
        evaluate(audio_run, split="test")["metrics"]["n_items"]
    with pytest.raises(CheckpointError, match=r"--split val: the model's recipe has no val split "
                                              r"\(data\.val_split: null\) and .* no split 'val' \(its splits: "):
        evaluate(tmp_path / "no_test.ckpt", split="val")


def test_an_unfinished_run_is_scored_with_a_warning_naming_what(audio_run, tmp_path):
    """A run folder without metrics.json (interrupted, or still training) holds the best checkpoint
    so far; a cross-validation run may hold only some folds. Both used to be scored and pooled as if
    finished, without a word."""
    import shutil

    from audiostem.evaluate import evaluate
    single = tmp_path / "single"
    shutil.copytree(audio_run, single)
    (single / "metrics.json").unlink()
    with pytest.warns(UserWarning, match=r"single: training has not finished \(no metrics\.json\): scoring its best "
                                         r"checkpoint so far"):
        evaluate(single, split="test")
    cv = tmp_path / "cv"                            # fold_1 finished, fold_2 interrupted, no fold_3 yet
    shutil.copytree(audio_run, cv / "fold_1")
    shutil.copytree(single, cv / "fold_2")
    with pytest.warns(UserWarning, match=r"cv: training has not finished \(no metrics\.json\): scoring the best "
                                         r"checkpoints so far of fold_1, fold_2 \(fold_2 unfinished\) only"):
        assert len(evaluate(cv, split="test")["folds"]) == 2


def test_predict_and_export_warn_on_an_unfinished_run_as_evaluate_does(audio_run, tmp_path):
    """predict and export used an interrupted (or still training) run's best checkpoint so far as if
    it were the trained model, without a word; they now warn as evaluate does, through its helper."""
    import shutil

    from audiostem.export import export
    single = tmp_path / "single"
    shutil.copytree(audio_run, single)
    (single / "metrics.json").unlink()
    clip = write_wav(tmp_path / "x.wav", 230, seconds=0.6)
    with pytest.warns(UserWarning, match=r"single: training has not finished \(no metrics\.json\): predicting "
                                         r"with its best checkpoint so far"):
        predict_files(single, [clip])
    with pytest.warns(UserWarning, match=r"single: training has not finished \(no metrics\.json\): exporting "
                                         r"its best checkpoint so far"):
        export(single, "torchscript", tmp_path / "x.pt", clip_seconds=0.6)
    import warnings
    with warnings.catch_warnings():                  # a finished run, or a checkpoint file named outright
        warnings.simplefilter("error")
        predict_files(audio_run, [clip])
        predict_files(single / "checkpoints" / "best.ckpt", [clip])


def test_the_commands_print_the_unfinished_run_warning_as_one_line(audio_run, tmp_path):
    import shutil
    import subprocess
    import sys
    single = tmp_path / "single"
    shutil.copytree(audio_run, single)
    (single / "metrics.json").unlink()
    clip = write_wav(tmp_path / "x.wav", 230, seconds=0.6)
    done = subprocess.run([sys.executable, "-m", "audiostem.predict", str(single), str(clip)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "training has not finished" in line]
    assert lines == [f"warning: {single}: training has not finished (no metrics.json): predicting with its best "
                     "checkpoint so far"]
    assert "warnings.warn" not in done.stderr and "UnfinishedRunWarning" not in done.stderr


def test_an_unfinished_cross_validation_run_names_its_folds(audio_run, tmp_path, capsys):
    """A CV run gets checkpoints/ (a copy of its first fold's) when every fold has finished; before that
    predict said 'a run folder without checkpoints/best.ckpt (not trained yet, or not a run
    folder)', though its folds hold trained models."""
    import shutil

    cv = tmp_path / "cv"
    shutil.copytree(audio_run, cv / "fold_1")
    shutil.copytree(audio_run, cv / "fold_2")
    (cv / "fold_2" / "metrics.json").unlink()
    clip = write_wav(tmp_path / "x.wav", 230, seconds=0.6)
    assert predict_main([str(cv), str(clip)]) == 2
    err = capsys.readouterr().err
    assert (f"{cv}: a cross-validation run that has not finished (fold_2 unfinished); it gets "
            f"checkpoints/best.ckpt, a copy of the first fold's, when every fold has: give one fold's "
            f"folder, e.g. {cv / 'fold_1'}") in err, err


def test_a_model_whose_cache_is_gone_is_pointed_at_another_copy(audio_run, tmp_path, capsys):
    """evaluate reads the model's own cache unless told otherwise; when it was deleted or moved the
    message said only '... not a feature cache, no meta.json', not that --cache reads a copy."""
    cache = audio_run.parent / "cache"
    moved = tmp_path / "moved_cache"
    cache.rename(moved)
    try:
        assert evaluate_main([str(audio_run)]) == 2
        err = capsys.readouterr().err
        assert f"{cache}: not a feature cache, no meta.json" in err, err
        assert "the cache the model was trained on: pass --cache PATH to score it on a copy of that cache" in err, err
        assert evaluate_main([str(audio_run), "--cache", str(moved), "--json"]) == 0
    finally:
        moved.rename(cache)


def test_names_with_control_characters_stay_on_one_line(audio_run, tmp_path, capsys):
    """A file, run folder or recipe named with a newline or tab: predict's lines and the one-line
    errors of train, evaluate, predict and export write it escaped (Python's repr), as data_prep
    does; so does the per-class table for a class named so."""
    from audiostem.export import main as export_main
    from audiostem.metrics import per_class_text
    from audiostem.train import main as train_main
    from test_files_in_the_wild import _escaped_everywhere

    bad = tmp_path / "bad\nTAIL1.wav"
    bad.write_bytes(b"not audio, just text\n")
    good = write_wav(tmp_path / "ok\tTAIL2.wav", 230, seconds=1.0)
    assert predict_main([str(audio_run), str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    _escaped_everywhere(captured.err)
    _escaped_everywhere(captured.out)
    assert captured.err.startswith(f"{str(bad)!r}: error: BadInputError: {str(bad)!r}: not a readable audio file")
    assert captured.out.startswith(f"{str(good)!r}: low ")
    nowhere = str(tmp_path / "no\nTAIL3")
    for main, argv in ((predict_main, [nowhere, str(good)]), (evaluate_main, [nowhere]),
                       (export_main, [nowhere, "--format", "torchscript"]), (train_main, [nowhere + ".yaml"])):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: '"), err
        _escaped_everywhere(err)
    per_class = {"a\nTAIL4": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
    table = per_class_text({"per_class": per_class, "accuracy": 1.0, "n_items": 1, "balanced_accuracy": 1.0,
                            "macro_f1": 1.0})
    _escaped_everywhere(table)
