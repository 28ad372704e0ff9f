"""Recipe numbers are refused at validation (``--print``), with the field named, when training
would silently misread them (``max_epochs: true`` is 1 epoch) or crash at its start
(``lr: .inf``, ``seed: -1``, ``seed: 1e20``): every integer field, every float field, the seed's
range, and the options handed to a data_prep source."""
import subprocess
import sys

import pytest
import yaml

from audiostem.recipe import SEED_MAX, RecipeError, load_recipe


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"data": {"cache": str(tmp_path / "cache"),
                                             "prepare": {"source": "folder", "root": str(tmp_path)}}}))
    return path


@pytest.mark.parametrize("override,field,expected", [
    ("train.max_epochs=true", "train.max_epochs", "expected an integer, got true"),
    ("train.max_epochs=2.5", "train.max_epochs", "valid integer"),
    ("train.max_epochs='3'", "train.max_epochs", "valid integer"),
    ("data.batch_size=yes", "data.batch_size", "expected an integer, got true"),
    ("augment.specaugment.time_width=false", "augment.specaugment.time_width", "expected an integer"),
    ("data.folds=[1, true]", "data.folds", "expected an integer"),
    ("train.lr=.inf", "train.lr", "finite number"),
    ("train.lr=.nan", "train.lr", "nan"),
    ("train.lr=true", "train.lr", "expected a number, got true"),
    ("train.weight_decay=.inf", "train.weight_decay", "finite number"),
    ("augment.gain.max_db=.inf", "augment.gain.max_db", "finite number"),
    ("seed=-1", "seed", "greater than or equal to 0"),
    ("seed=1e20", "seed", "valid integer"),
    ("seed=100000000000000000000", "seed", f"less than or equal to {SEED_MAX}"),
    ("seed=true", "seed", "expected an integer"),
    ("data.prepare.options.seed=true", "data.prepare", "folder option 'seed' (--seed): expected an integer"),
    ("data.prepare.options.valid_fraction=.nan", "data.prepare", "expected a finite number"),
    ("data.prepare.options.group_by=3", "data.prepare", None),          # a regex given as 3: taken as text
    ("data.prepare.options.workers=2", "data.prepare", "has no option 'workers'"),
])
def test_bad_numbers_are_refused_with_the_field_named(recipe, override, field, expected):
    if expected is None:
        load_recipe(recipe, [override])
        return
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, [override])
    assert f"{field}:" in str(info.value) and expected in str(info.value), str(info.value)


@pytest.mark.parametrize("override", ["seed=0", f"seed={SEED_MAX}", "train.lr=3e-3", "train.lr=1",
                                      "train.max_epochs=1", "data.prepare.options.valid_fraction=0",
                                      "data.prepare.options.seed=7"])
def test_good_numbers_still_pass(recipe, override):
    load_recipe(recipe, [override])


def test_print_refuses_before_training(recipe):
    done = subprocess.run([sys.executable, "-m", "audiostem.train", str(recipe), "train.lr=.inf", "--print"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "train.lr" in done.stderr and "Traceback" not in done.stderr
