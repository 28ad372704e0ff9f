"""The run folder's owner (audiostem.run_folder) and the checkpoint payload: round trips, run
folders written before them (the committed study cells), and damaged files named in one line."""
from pathlib import Path

import pytest
import torch

from data_prep.cache import Item

from audiostem import run_folder as rf
from audiostem.checkpoint import CheckpointError, CheckpointPayload, load_checkpoint
from audiostem.metrics import pool_folds
from audiostem.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
OLD_CV_CELL = ROOT / "studies" / "results" / "stem_study" / "folk" / "deep3" / "seed0"   # written 2026-11-26

PAYLOAD = {   # the stored layout, key order included, of a checkpoint written before cache_build_id
    "recipe": {"model": {"stem": "deep3"}, "seed": 0}, "classes": ["a", "b"], "input_shape": [1, 4, 16],
    "features": {"kind": "logmel", "n_mels": 4}, "feature_shape": [1, 4],
    "stats": {"mean": [[0.0] * 4], "std": [[1.0] * 4], "pad": [[-80.0] * 4]}, "normalize": "per_bin",
    "crop_frames": 16, "eval_hop": 8, "fold": None, "cache": "/caches/x",
}


def test_metrics_mark_a_run_finished_and_read_back(tmp_path):
    assert not rf.is_finished(tmp_path)
    rf.write_metrics(tmp_path, {"test": {"accuracy": 0.5, "loss": float("nan")}, "fold": None})
    assert rf.is_finished(tmp_path)
    assert rf.read_metrics(tmp_path)["test"]["accuracy"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]          # no temporary file left


@pytest.mark.parametrize("content", [b'{"test": {"accur', b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_metrics_file_is_one_line_naming_it(tmp_path, content):
    (tmp_path / "metrics.json").write_bytes(content)
    with pytest.raises(rf.RunFolderError) as err:
        rf.read_metrics(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'metrics.json'}: damaged") and "\n" not in str(err.value)
    assert "delete it and run the training again (from the start" in str(err.value)   # every kind says what to do


def test_a_failed_write_keeps_the_old_file(tmp_path):
    rf.write_metrics(tmp_path, {"a": 1})
    with pytest.raises(UnicodeEncodeError):
        rf.write_atomic(tmp_path / "metrics.json", "\udc80")                 # cannot be UTF-8
    assert rf.read_metrics(tmp_path) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


def test_history_and_predictions_round_trip(tmp_path):
    rows = [{"epoch": 1, "train_loss": 1.5, "val_loss": "", "val_accuracy": "", "val_macro_f1": "", "lr": 0.01,
             "seconds": 2.0, "val_balanced_accuracy": ""},
            {"epoch": 2, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.75, "val_macro_f1": 0.7, "lr": 0.005,
             "seconds": 2.5, "val_balanced_accuracy": 0.72}]
    rf.write_history(tmp_path, rows)
    back = rf.read_history(tmp_path)
    assert [r["epoch"] for r in back] == [1.0, 2.0] and back[1]["val_accuracy"] == 0.75
    assert rf.best_epoch(rows, "val_accuracy") == 2 and rf.best_epoch(rows[:1], "val_accuracy") == 1

    classes = ["a", "b", "c"]
    items = [Item("x1", "x1.wav", "", "a", "", 2, "g1", 10, "shards/00000.npy", 0),
             Item("x2", "x2.wav", "", "b", "", None, "", 10, "shards/00000.npy", 10)]
    log_probs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    target = torch.tensor([0, 1])
    rf.write_predictions(tmp_path, "test", rf.prediction_rows(items, log_probs, target, classes), classes)
    assert rf.has_predictions(tmp_path, "test") and not rf.has_predictions(tmp_path, "val")
    columns, read = rf.read_predictions(tmp_path, "test")
    assert columns == ["id", "label", "pred", "correct", "fold", "p_a", "p_b", "p_c", "group"]
    assert [(r["id"], r["pred"], r["correct"], r["fold"], r["group"]) for r in read] == [
        ("x1", "a", "1", "2", "g1"), ("x2", "c", "0", "", "")]
    lp, t = rf.prediction_tensors(read, classes)
    assert torch.allclose(lp, log_probs, atol=1e-5) and t.tolist() == [0, 1]


def test_the_recipe_is_stored_compared_and_discarded_on_restart(tmp_path):
    recipe = load_recipe("folk", [f"out_dir={tmp_path / 'run'}"])
    out = rf.prepare(recipe)
    assert rf.read_recipe(out)["out_dir"] == str(tmp_path / "run")
    moved = load_recipe("folk", [f"out_dir={tmp_path / 'run'}", "data.num_workers=0", "trainer.devices=1"])
    assert rf.prepare(moved) == out                     # runtime fields may change on resume
    other = load_recipe("folk", [f"out_dir={tmp_path / 'run'}", "seed=7"])
    with pytest.raises(RecipeError, match=r"out_dir: .* holds a run of a different recipe \(seed: \d+ -> 7\)"):
        rf.prepare(other)
    rf.write_metrics(out, {})
    rf.fold_dir(out, 1).mkdir()
    rf.prepare(other, restart=True)
    assert not rf.is_finished(out) and not rf.fold_dir(out, 1).exists() and rf.read_recipe(out)["seed"] == 7


def test_an_old_cross_validation_cell_still_reads(tmp_path):
    """A committed study cell, exported by the runner before run_folder existed: the pooled top
    folder of a 5-fold run. Its stored pooled accuracy is what its predictions give."""
    assert rf.is_finished(OLD_CV_CELL) and rf.read_recipe(OLD_CV_CELL)["data"]["folds"]
    m = rf.read_metrics(OLD_CV_CELL)
    columns, rows = rf.read_predictions(OLD_CV_CELL, "test")
    assert columns[:5] == ["id", "label", "pred", "correct", "fold"] and len(rows) == m["test"]["n_items"]
    lp, t = rf.prediction_tensors(rows, m["classes"])
    pooled = pool_folds([lp[:100], lp[100:]], [t[:100], t[100:]], m["classes"])
    assert pooled["accuracy"] == pytest.approx(m["test"]["pooled_accuracy"], abs=1e-6)
    history = rf.read_history(OLD_CV_CELL)
    assert history and tuple(history[0]) == rf.HISTORY_FIELDS and history[-1]["epoch"] == len(history)
    rf.copy_small_files(OLD_CV_CELL, tmp_path / "copy")
    # an old cell has no predictions_test_last.csv (runs test their last epoch since 2026-12-01)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(
        set(rf.SMALL_FILES) - {"predictions_test_last.csv"})
    assert rf.is_finished(tmp_path / "copy")


def test_find_checkpoint_and_the_fold_layout(tmp_path):
    with pytest.raises(CheckpointError, match="without checkpoints/best.ckpt"):
        rf.find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint file or run folder"):
        rf.find_checkpoint(tmp_path / "nowhere")
    for d in (tmp_path, rf.fold_dir(tmp_path, 1), rf.fold_dir(tmp_path, 2)):
        rf.checkpoint_dir(d).mkdir(parents=True)
        rf.best_checkpoint(d).write_bytes(b"x")
    rf.last_checkpoint(tmp_path).write_bytes(b"x")
    assert rf.find_checkpoint(tmp_path) == rf.best_checkpoint(tmp_path) == rf.model_checkpoint(tmp_path)
    assert rf.fold_checkpoints(tmp_path) == [rf.best_checkpoint(rf.fold_dir(tmp_path, k)) for k in (1, 2)]
    assert len(rf.checkpoint_files(tmp_path)) == 4


def test_a_payload_written_before_the_class_loads_and_stores_the_same_dict(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "audiostem": PAYLOAD}, path)
    payload = CheckpointPayload.from_checkpoint(load_checkpoint(path), path)
    assert payload.cache_build_id is None and payload.fold is None and payload.crop_frames == 16
    assert list(payload.to_dict().items()) == list(PAYLOAD.items())
    assert payload.stats_tensors()["pad"].shape == (1, 4)
    newer = {**PAYLOAD, "cache_build_id": "b" * 32, "added_later": 1}     # unknown keys are ignored
    assert CheckpointPayload.from_dict(newer, path).to_dict() == {**PAYLOAD, "cache_build_id": "b" * 32}


DELETE = object()


@pytest.mark.parametrize("change, expected", [
    ({"stats": DELETE}, "lacks stats"),
    ({"crop_frames": "16"}, "malformed fields: crop_frames '16' (an integer >= 1)"),
    ({"classes": [], "fold": True}, "classes [] (a list of class names); fold True (a fold number or null)"),
    ({"input_shape": [1, 4]}, "input_shape [1, 4] ([channels, bins, frames])"),
])
def test_a_damaged_payload_is_one_line_naming_the_file(tmp_path, change, expected):
    data = {k: v for k, v in {**PAYLOAD, **change}.items() if v is not DELETE}
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "audiostem": data}, path)
    with pytest.raises(CheckpointError) as err:
        CheckpointPayload.from_checkpoint(load_checkpoint(path), path)
    text = str(err.value)
    assert text.startswith(f"{path}: its 'audiostem' entry") and expected in text and "\n" not in text
    with pytest.raises(CheckpointError, match=f"{path}: not an audiostem checkpoint"):
        CheckpointPayload.from_checkpoint({"state_dict": {}}, path)


def test_no_module_but_the_owner_names_the_run_folder_files():
    """The files of a run folder are opened through run_folder only: no other module of the
    package spells their names in code (docstrings and messages may)."""
    import ast
    names = {"metrics.json", "history.csv", "recipe.yaml", "last.ckpt", "best.ckpt", "per_class.txt",
             "confusion_matrix.png", "run.lock", "predictions_test.csv"}
    offenders = []
    for path in sorted((ROOT / "audiostem").rglob("*.py")):
        if path.name == "run_folder.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        messages = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and id(node) not in messages and node.value in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_a_history_with_text_for_numbers_is_named(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,train_loss\n1,abc\n")
    with pytest.raises(rf.RunFolderError, match=r"history\.csv: damaged \(not numbers"):
        rf.read_history(tmp_path)
