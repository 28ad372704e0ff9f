"""Recipes: the shipped ones validate; overrides; every kind of bad recipe gives a field-named error."""
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from audiostem import list_stems
from audiostem.recipe import (MANAGED_TRAINER_KEYS, RECIPES_DIR, TRAINER_KEYS, RecipeError, apply_overrides,
                              dump_recipe, expand_path, load_recipe, open_data, validate_recipe)
from fixtures import synthetic_cache

SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(tmp_path, **extra):
    return {"data": {"cache": str(tmp_path / "cache")}, **extra}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_loads_and_validates(path, monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOSTEM_CACHE", str(tmp_path / "caches"))
    recipe = load_recipe(path)
    assert open_data(recipe) is None          # no cache yet: the recipe says how to build it
    assert recipe.data.prepare is not None and recipe.data.cache.startswith(str(tmp_path))
    again = validate_recipe(yaml.safe_load(dump_recipe(recipe)))       # the resolved form round-trips
    assert again.to_dict() == recipe.to_dict()


def test_the_default_and_the_documented_recipes_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"folk", "folk_audio", "gtzan", "esc50", "urbansound8k", "speechcommands", "maestro_composer",
            "lakh_genre", "folder", "polyphony", "game_sfx", "hedgewars_voices", "gm_instruments_loso"} <= names


def test_overrides_set_nested_values_parsed_as_yaml(tmp_path):
    path = write(tmp_path, minimal(tmp_path))
    r = load_recipe(path, ["model.stem=resnet7", "train.max_epochs=5", "seed=3", "train.lr=3e-4",
                           "model.stem_args.kernel_size=5", "data.folds=[1, 2]", "augment.mixup=true",
                           "augment.specaugment.time_width=4", "trainer.devices=2",
                           "data.prepare={source: folder, root: /x}"])
    assert (r.model.stem, r.train.max_epochs, r.seed, r.train.lr) == ("resnet7", 5, 3, 3e-4)
    assert r.model.stem_args == {"kernel_size": 5} and r.data.folds == [1, 2]
    assert r.augment.mixup.enabled and r.augment.specaugment.time_width == 4 and not r.augment.specaugment.enabled
    assert r.trainer == {"devices": 2} and r.data.prepare.source == "folder"
    assert r.out_dir == os.path.join("runs", "r")          # default: runs/<recipe name>
    r = load_recipe(path, ["data.folds={cv: 5, test: [2]}", "model.stem={layers: [{kernel: 3, channels: 8}]}"])
    assert r.data.folds.cv == 5 and r.data.folds.test == [2] and r.model.stem["layers"][0]["channels"] == 8


def test_apply_overrides_does_not_touch_the_input():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.c.d=x"]) == {"a": {"b": 1, "c": {"d": "x"}}}
    assert data == {"a": {"b": 1}}


@pytest.mark.parametrize("overrides, expected", [
    (["data.crop_frame=3"], r"data\.crop_frame: unknown key; valid keys: cache, prepare, .*crop_frames"),
    (["train.max_epochs=many"], r"train\.max_epochs: .*valid integer.*'many'"),
    (["train.optimizer=adam"], r"train\.optimizer: .*'adamw' or 'sgd'"),
    (["train.schedule=step"], r"train\.schedule: .*'onecycle', 'cosine' or 'none'"),
    (["train.early_stopping.metric=acc"], r"train\.early_stopping\.metric: .*'val_accuracy'"),
    (["model.stem=deeper"], r"model\.stem: unknown stem 'deeper'; valid stems: " + ", ".join(list_stems())),
    (["model.stem_args.width=8", "model.stem=resnet7"], r"model\.stem_args: .*unknown override 'width'.*kernel_size"),
    (["model.stem={layers: [{kernel: -3, channels: 4}]}"], r"model\.stem: stem\.layers\[0\]\.kernel"),
    (["model.body=wide"], r"model\.body: unknown body 'wide'; valid bodies: .*narrow"),
    # other members of the kind: checked from the registries' declarations, no model built
    (["model.stem_args.widht=8"], r"model\.stem_args: stem 'deep3': unknown override 'widht'; valid overrides: .*width"),
    (["model.stem_args.kernel_size=five"], r"model\.stem_args\.kernel_size: .*must be int.*got 'five'"),
    (["model.stem_args.width=true"], r"model\.stem_args\.width: .*must be int, got true"),
    (["model.stem=tall", "model.stem_args.fraction=[1]"], r"model\.stem_args\.fraction: .*must be float"),
    (["model.stem_args.depth=0"], r"model\.stem_args: deep3 depth: must be an int >= 1, got 0"),
    (["model.stem={layers: [{kernel: 3, channels: 8}]}", "model.stem_args.width=8"],
     r"model\.stem_args: stem 'spec': unknown override 'width'; valid overrides: coord"),
    (["model.body=resnet50"], r"model\.body: unknown body 'resnet50'; valid bodies: "),
    (["model.body={widths: [8, 16], depths: [1]}"], r"model\.body: widths \[8, 16\] and depths \[1\] must be"),
    (["model.body=timm:resnet_nope"], r"model\.body: timm has no model 'resnet_nope'"),
    (["model.body=torchvision:nope"], r"model\.body: torchvision has no classification model 'nope'"),
    (["model.body=keras:resnet18"], r"model\.body: 'keras:resnet18': a library body is timm:<name> or torchvision:<name>"),
    (["model.head=max"], r"model\.head: must be one of avg, freq_time"),
    (["trainer.gpus=1"], r"trainer\.gpus: not a lightning\.Trainer argument; valid: accelerator"),
    (["trainer.max_epochs=3"], r"trainer\.max_epochs: set by audiostem.*train\.max_epochs"),
    (["data.features={kind: logmel, n_mel: 3}"], r"data\.features\.n_mel: unknown field"),
    (["data.features={kind: logmel, n_mels: -3}"], r"data\.features\.n_mels: must be a positive integer"),
    (["data.batch_size=0"], r"data\.batch_size: .*greater than or equal to 1"),
    (["augment.mixup.alpha=-1"], r"augment\.mixup\.alpha: .*greater than 0"),
    (["data.cache=${AUDIOSTEM_TEST_UNSET}/x"], r"data\.cache: environment variable AUDIOSTEM_TEST_UNSET is not set"),
    (["out_dir=''"], r"out_dir: empty: give a run folder such as runs/NAME"),       # else the current directory
    (["out_dir=${AUDIOSTEM_TEST_EMPTY:-}"], r"out_dir: empty: give a run folder"),
])
def test_bad_recipes_name_the_field(tmp_path, overrides, expected):
    path = write(tmp_path, minimal(tmp_path))
    with pytest.raises(RecipeError, match=expected) as info:
        load_recipe(path, overrides)
    assert str(info.value).startswith(str(path))


def test_each_model_error_is_one_line_naming_the_field(tmp_path):
    path = write(tmp_path, minimal(tmp_path))
    for overrides in (["model.stem_args.kernel_size=five"], ["model.body=timm:resnet_nope"], ["model.stem=nope"]):
        with pytest.raises(RecipeError) as info:
            load_recipe(path, overrides)
        assert len(str(info.value).splitlines()) == 1 and str(info.value).startswith(f"{path}: model.")


def test_a_valid_recipe_builds_its_model_with_one_function(tmp_path):
    """recipe.model.build is the one road from a recipe to a model; a list kernel is a valid preset argument."""
    path = write(tmp_path, minimal(tmp_path))
    r = load_recipe(path, ["model.stem_args={kernel_size: [5, 3], width: 8}", "model.head=freq_time"])
    model = r.model.build(num_classes=3, in_channels=2)
    assert model(torch.zeros(2, 2, 32, 40)).shape == (2, 3)
    assert model.stem.spec["layers"][0]["kernel"] == [5, 3]


@pytest.mark.parametrize("model, shape, expected", [
    ({"stem": "tall"}, (1, 64, 32), r"model\.stem_args\.n_freq: 128 is more than the input's 64 bins.*n_freq: 64$"),
    ({"stem": "pons", "stem_args": {"n_freq": 88}}, (1, 64, 32), r"model\.stem_args\.n_freq: 88 is more"),
    ({"stem": "temporal"}, (1, 2, 16), r"model\.stem: an input of 2 bins x 16 frames .* too small for the stem 'temporal'"),
    ({"stem": {"layers": [{"kernel": 3, "channels": 8, "stride": 3}]}, "body": "timm:test_resnet"}, (1, 32, 32),
     r"model: the inline stem on the body timm:test_resnet: .*stride \(3, 3\) cannot be reduced to \(4, 4\)"),
])
def test_what_only_the_data_shows_is_one_line_naming_the_field(model, shape, expected):
    """Checked once where the input shape is known (the training task), not when the recipe loads."""
    from audiostem.recipe_schema import ModelConfig
    from audiostem.task import model_for_input
    with pytest.raises(RecipeError, match=expected) as info:
        model_for_input(ModelConfig(**model), 3, shape)
    assert len(str(info.value).splitlines()) == 1
    assert model_for_input(ModelConfig(stem="tall", stem_args={"n_freq": 64}), 3, (1, 64, 32))(
        torch.zeros(1, 1, 64, 32)).shape == (1, 3)


def test_several_errors_are_reported_together(tmp_path):
    path = write(tmp_path, {"data": {"crop_frames": "x"}, "seeds": 1})
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "data.cache: required key missing" in message and "data.crop_frames:" in message
    assert "seeds: unknown key; valid keys: seed, out_dir" in message


@pytest.mark.parametrize("bad, expected", [
    ("model.stem", "expected dotted.key=value"),
    ("model..stem=3", "expected dotted.key=value"),
    ("model.stem.kernel=3", "model.stem is 'deep3', not a mapping"),
    ("seed=[1", "not valid YAML"),
])
def test_bad_overrides(tmp_path, bad, expected):
    path = write(tmp_path, minimal(tmp_path, model={"stem": "deep3"}))
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path, [bad])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_paths_expand_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOSTEM_T", "/data")
    monkeypatch.delenv("AUDIOSTEM_UNSET_X", raising=False)
    assert expand_path("${AUDIOSTEM_T}/a") == "/data/a"
    assert expand_path("${AUDIOSTEM_UNSET_X:-~/c}/a") == os.path.expanduser("~/c/a")
    assert expand_path("${AUDIOSTEM_T:-/no}/a") == "/data/a"


def test_missing_cache_without_prepare_says_how_to_build_it(tmp_path):
    recipe = load_recipe(write(tmp_path, minimal(tmp_path)))
    with pytest.raises(RecipeError, match=r"(?s)data\.cache: no feature cache at .*python -m data_prep SOURCE "
                                          r"--root DATASET_FOLDER --out .*data\.prepare"):
        open_data(recipe)


def test_a_different_feature_config_is_refused_with_the_fields(tmp_path):
    synthetic_cache(tmp_path / "cache", per_class=2)
    ok = load_recipe(write(tmp_path, minimal(tmp_path)))
    assert open_data(ok).classes == ["a", "b", "c"]
    same = load_recipe(write(tmp_path, minimal(tmp_path)), [
        "data.features={kind: logmel, sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 16}"])
    assert open_data(same) is not None
    other = load_recipe(write(tmp_path, minimal(tmp_path)), [
        "data.features={kind: logmel, sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 32}"])
    with pytest.raises(RecipeError, match=r"data\.features: .*another feature config.*n_mels: 16 != 32"):
        open_data(other)


def test_trainer_keys_match_lightning():
    from lightning.pytorch import Trainer
    params = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    assert set(TRAINER_KEYS) | set(MANAGED_TRAINER_KEYS) == params


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "audiostem.train", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_values_are_set_as_values_before_the_overrides(tmp_path):
    """--values FILE (or - for stdin): how the study runner hands a cell its recipe values."""
    path = write(tmp_path, minimal(tmp_path, data={"cache": str(tmp_path / "c"),
                                                    "prepare": {"source": "folder", "root": "/x"}}))
    done = subprocess.run([sys.executable, "-m", "audiostem.train", str(path), "--print", "--values", "-",
                           "train.max_epochs=2"], input='{"model.stem_args": {"width": 8}, "train.max_epochs": 5, '
                          '"train.lr": 1e-05}', capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["model"]["stem_args"] == {"width": 8} and printed["train"]["max_epochs"] == 2
    assert printed["train"]["lr"] == 1e-05
    for content, expected in (("[1, 2]", "expected a mapping of dotted keys"), ("{a: [", "cannot read")):
        (tmp_path / "v.yaml").write_text(content)
        bad = run_cli(path, "--print", "--values", tmp_path / "v.yaml")
        assert bad.returncode == 2 and expected in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr


def test_cli_print_and_errors(tmp_path):
    path = write(tmp_path, minimal(tmp_path, data={"cache": str(tmp_path / "c"),
                                                    "prepare": {"source": "folder", "root": "/x"}}))
    done = run_cli(path, "--print", "model.stem=pons", "train.max_epochs=2")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["model"]["stem"] == "pons" and printed["train"]["max_epochs"] == 2
    assert "will be built from source 'folder'" in done.stdout
    bad = run_cli(path, "--print", "model.stem=nope")
    assert bad.returncode == 2 and "model.stem: unknown stem 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    helped = run_cli("--help")
    assert helped.returncode == 0 and "key=value" in helped.stdout and "--print" in helped.stdout


def test_a_shipped_recipe_is_found_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOSTEM_CACHE", str(tmp_path))
    assert load_recipe("folk").data.prepare.source == "folk"
    with pytest.raises(RecipeError, match="no such recipe file; shipped recipes: .*folk"):
        load_recipe("no_such_recipe")


def test_the_documented_key_table_is_the_schema_s_own():
    """docs/training.md's table of every key is key_table() of the schema, field for field."""
    from audiostem.recipe import Recipe, key_table
    doc = (Path(__file__).parent.parent / "docs" / "training.md").read_text()
    table = key_table()
    assert table in doc, ("docs/training.md's key table differs from the schema; regenerate it with "
                          "python -c 'from audiostem.recipe import key_table; print(key_table())'")

    def fields(model, prefix=""):
        for name, field in model.model_fields.items():
            yield prefix + name, field
            for sub in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    yield from fields(sub, prefix + name + ".")

    undescribed = [key for key, field in fields(Recipe) if not field.description]
    assert not undescribed, f"schema fields without a description: {undescribed}"
    assert all(f"| `{key}` |" in table for key, _ in fields(Recipe))


def test_a_recipe_that_is_not_utf8_or_not_yaml_gets_one_line(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"seed: 0\ndata: {cache: /tmp/caf\xe9}\n")
    with pytest.raises(RecipeError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 30\)"):
        load_recipe(latin1)
    for text, what in (("seed: [1, 2\n", "line 2: expected ',' or ']'"),
                       ("m: !!python/object/apply:os.system [ls]\n", "line 1: could not determine a constructor")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(RecipeError) as err:
            load_recipe(bad)
        assert what in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("5\n", "int")])
def test_a_recipe_that_is_not_a_mapping_is_named_with_overrides_too(tmp_path, text, kind):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    for overrides in ([], ["seed=3"]):
        with pytest.raises(RecipeError, match=rf"x.yaml: a recipe must be a mapping of keys, got {kind}$"):
            load_recipe(path, overrides)
