"""Every shipped recipe, end to end: a tiny dataset in its real file layout -> data_prep builds
the cache from the recipe's ``data.prepare`` -> one epoch of training -> the run folder.

The recipes run as shipped (source, options, feature config, augmentations, schedule), with only
the sizes shrunk: one epoch, a one-stage body, 32-frame crops, one CV fold."""
import json

import pytest

import fixtures as fx
from audiostem.recipe import RECIPES_DIR, load_recipe
from audiostem.train import train


def rendered_folk(root):
    from data_prep.render import main as render
    midi = fx.folk_layout(root.with_name("folk_midi_for_audio"))
    assert render(["--root", str(midi), "--out", str(root), "--sample-rate", "16000", "--workers", "1",
                   "--quiet"]) in (0, None)
    return root


# recipe -> (how to make its dataset, extra overrides for a tiny fixture)
LAYOUTS = {
    "folk": (fx.folk_layout, []),
    "folk_audio": (rendered_folk, []),
    "gtzan": (fx.gtzan_layout, []),
    "esc50": (fx.esc50_layout, ["data.folds.test=[1]"]),
    "urbansound8k": (fx.urbansound8k_layout, ["data.folds.test=[4]"]),
    "speechcommands": (fx.speechcommands_layout, []),
    "maestro_composer": (fx.maestro_layout, ["data.prepare.options.min_per_class=2"]),
    "lakh_genre": (fx.lakh_layout, ["data.prepare.options.min_per_class=2"]),
    "folder": (fx.folder_layout, []),
    "gm_instruments": (lambda root: fx.manifest_layout(root, {"split_xsf": "unused"}), []),
    "espeak_digits": (lambda root: fx.manifest_layout(root, {"split": "real"}), []),
    "polyphony": (fx.folk_layout, []),           # a built folder, listed as it is
    "hedgewars_voices": (lambda root: fx.columns_layout(root, {
        "split": lambda c, n: ("train", "train", "valid", "test")[n % 4], "group": lambda c, n: f"line{n % 4}"},
        per_class=8), []),
    # leave one game out: 7 games as folds, validation inside the training games
    "game_sfx": (lambda root: fx.columns_layout(root, {
        "split": lambda c, n: "train", "group": lambda c, n: f"game{n % 7}", "source": lambda c, n: f"{c}{n}",
        "fold": lambda c, n: n % 7 + 1}, per_class=14), ["data.folds.test=[3]", "data.folds.val_fraction=0.5"]),
    # leave one soundfont out: soundfont names numbered 1-4, validation by melody inside the others
    "gm_instruments_loso": (lambda root: fx.columns_layout(root, {
        "split": lambda c, n: "train", "soundfont": lambda c, n: ("csound", "fluidr3", "musescore", "timgm6mb")[n % 4],
        "tune_id": lambda c, n: f"tune{n // 4}"}, per_class=8), ["data.folds.test=[4]", "data.folds.val_fraction=0.5"]),
}
SHRINK = ["train.max_epochs=1", "model.body={widths: [8], depths: [1]}", "model.stem_args.out_channels=8",
          "data.crop_frames=32", "data.eval_hop=32", "data.batch_size=4", "data.num_workers=0",
          "data.prepare.workers=1", "trainer={accelerator: cpu, enable_progress_bar: false, enable_model_summary: false}"]


def test_every_shipped_recipe_has_an_end_to_end_fixture():
    assert {p.stem for p in RECIPES_DIR.glob("*.yaml")} == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_recipe_end_to_end(name, tmp_path):
    make, extra = LAYOUTS[name]
    root = make(tmp_path / "dataset")
    recipe = load_recipe(RECIPES_DIR / f"{name}.yaml", [
        f"data.cache={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}", f"data.prepare.root={root}",
        *SHRINK, *extra])
    metrics = train(recipe)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert recipe.data.prepare.source in json.dumps(meta["source"])       # built from the recipe's source
    assert all(meta["features"][k] == v for k, v in recipe.data.features.items())
    scored = metrics["test"] or metrics["val"]
    assert scored["n_items"] > 0 and set(scored["per_class"]) == set(meta["classes"])
    assert (tmp_path / "run" / "predictions_test.csv").exists() and (tmp_path / "run" / "confusion_matrix.png").exists()
    if recipe.data.folds is not None:
        assert len(metrics["folds"]) == 1
