"""Checkpoints are tensors and plain data, verified on load; runs stay on the cache build they
started on. Hostile or damaged checkpoints are refused by every command that reads one
(train --resume, a run's own last.ckpt, evaluate, predict, the study's filter plots), with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set, and nothing in them runs."""
import contextlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from audiostem.checkpoint import CheckpointError, load_checkpoint, verified_checkpoint_io
from audiostem.evaluate import evaluate, main as evaluate_main
from audiostem.predict import main as predict_main
from audiostem.recipe import load_recipe
from audiostem.train import main as train_main, train
from data_prep import CacheError, open_cache
from fixtures import synthetic_cache, write_wav

TINY = {
    "seed": 1,
    "model": {"stem": "deep3", "stem_args": {"width": 8, "out_channels": 16},
              "body": {"widths": [16], "depths": [1]}},
    "train": {"max_epochs": 2, "lr": 0.01},
    "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
}


class Payload:
    """What a crafted checkpoint carries: unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def recipe_file(tmp: Path, cache: Path, name: str, **top) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp / name), **top,
                                    "data": {"cache": str(cache), "crop_frames": 16, "batch_size": 8}}))
    return path


def quiet(fn, *argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = fn([str(a) for a in argv])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    synthetic_cache(tmp / "cache", per_class=8)
    recipe = recipe_file(tmp, tmp / "cache", "r")
    assert quiet(train_main, recipe)[0] == 0
    return {"tmp": tmp, "recipe": recipe, "out": tmp / "r", "best": tmp / "r" / "checkpoints" / "best.ckpt"}


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A crafted pickle checkpoint, with the environment asking torch for full unpickling."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "audiostem": {"x": Payload(marker)}, "epoch": 0}, path)
    return path, marker


def test_a_crafted_pickle_is_refused_everywhere_and_runs_nothing(run, evil, tmp_path):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused: it holds pickled Python objects"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        verified_checkpoint_io().load_checkpoint(path)            # what Lightning's resume calls
    code, err = quiet(train_main, run["recipe"], f"out_dir={tmp_path / 'resumed'}", "--resume", path)
    assert code == 2 and "evil.ckpt: refused" in err and "leave out --resume" in err
    # an evil last.ckpt in an interrupted run folder
    folder = tmp_path / "interrupted"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(path, folder / "checkpoints" / "last.ckpt")
    code, err = quiet(train_main, run["recipe"], f"out_dir={folder}")
    assert code == 2 and "last.ckpt: refused" in err and "--restart" in err
    assert (folder / "checkpoints" / "last.ckpt").exists()      # not deleted: the user decides
    assert quiet(evaluate_main, path)[0] == 2
    wav = write_wav(tmp_path / "x.wav", 440)
    code, err = quiet(predict_main, path, wav)
    assert code == 2 and "refused" in err
    from audiostem.study.plots import load_state_dict
    with pytest.raises(CheckpointError):
        load_state_dict(path)
    assert not marker.exists()


def xor_entry(src: Path, dst: Path, suffix: str = "/data/0") -> str:
    """Copy ``src`` with the stored bytes of one tensor entry flipped (the zip's CRC unchanged)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(start, start + min(info.compress_size, 64)):
        data[k] ^= 0x5A
    dst.write_bytes(bytes(data))
    return info.filename


def test_altered_tensor_bytes_are_named_not_used(run, tmp_path):
    bad = tmp_path / "altered.ckpt"
    entry = xor_entry(run["best"], bad)
    with pytest.raises(CheckpointError, match=f"altered.ckpt: damaged checkpoint: the bytes of entry '{entry}'"):
        load_checkpoint(bad)
    wav = write_wav(tmp_path / "x.wav", 440)
    code, err = quiet(predict_main, bad, wav)
    assert code == 2 and entry in err
    code, err = quiet(evaluate_main, bad)
    assert code == 2 and entry in err and "CRC" in err
    load_checkpoint(run["best"])                                  # the original is whole


def test_a_truncated_last_ckpt_is_named_with_how_to_restart(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run["out"], folder)
    (folder / "metrics.json").unlink()                            # as if killed before the end
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:last.stat().st_size // 2])
    kept = last.read_bytes()
    code, err = quiet(train_main, run["recipe"], f"out_dir={folder}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{last}: truncated or not a checkpoint" in err and "--restart" in err
    assert last.read_bytes() == kept and (folder / "history.csv").exists()   # nothing lost


def test_runs_refuse_a_cache_rebuilt_under_them(tmp_path):
    cache = tmp_path / "cache"
    synthetic_cache(cache, per_class=8, seed=0)
    trained_on = open_cache(cache).build_id
    done = load_recipe(recipe_file(tmp_path, cache, "done", train={"max_epochs": 1, "lr": 0.01}))
    metrics = train(done)
    assert metrics["cache_build_id"] == trained_on
    assert load_checkpoint(Path(done.out_dir) / "checkpoints" / "best.ckpt")["audiostem"]["cache_build_id"] == trained_on

    class RebuildAfterFirstEpoch(Callback):           # another process's prep --force, mid-training
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:
                synthetic_cache(cache, per_class=8, seed=5, frames=(30, 40))

    running = load_recipe(recipe_file(tmp_path, cache, "running"))
    with pytest.raises(CacheError, match="rebuilt .* while it was being read"):
        train(running, callbacks=[RebuildAfterFirstEpoch()])
    assert not (Path(running.out_dir) / "metrics.json").exists()
    # resuming that run on the new build is refused too
    code, err = quiet(train_main, tmp_path / "running.yaml")
    assert code == 2 and "rebuilt since" in err and "--restart" in err
    # evaluate refuses the finished run's rebuilt cache, unless told to use it
    with pytest.raises(CheckpointError, match="rebuilt since .* was trained on it"):
        evaluate(done.out_dir)
    assert evaluate(done.out_dir, cache_path=str(cache))["metrics"]["n_items"] > 0


def test_a_checkpoint_of_another_model_or_without_its_data_is_refused(run, tmp_path):
    code, err = quiet(train_main, run["recipe"], f"out_dir={tmp_path / 'other'}", "model.stem_args.width=16",
                      "--resume", run["best"])
    assert code == 2 and "holds another model's weights" in err and "leave out --resume" in err
    ckpt = load_checkpoint(run["best"])
    del ckpt["audiostem"]["recipe"]
    torch.save(ckpt, tmp_path / "no_recipe.ckpt")
    code, err = quiet(predict_main, tmp_path / "no_recipe.ckpt", write_wav(tmp_path / "x.wav", 440))
    assert code == 2 and "no_recipe.ckpt: its 'audiostem' entry lacks recipe" in err and len(err.splitlines()) == 1


def test_a_second_training_of_one_run_folder_is_refused(run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from data_prep.cache_files import CacheLock; "
        "p = Path(sys.argv[1]); lock = CacheLock(p, p / 'run.lock').acquire(); print('held', flush=True); time.sleep(120)"),
        str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = quiet(train_main, run["recipe"], f"out_dir={out}")
        assert code == 2 and f"is being trained by pid {holder.pid}" in err
        assert not (out / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
