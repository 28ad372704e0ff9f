"""A non-editable install works from anywhere: the shipped recipes are package data."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_non_editable_install_runs_a_shipped_recipe_from_another_directory(tmp_path):
    site, source = tmp_path / "site", tmp_path / "source"
    # a copy of what the package is made of, so that the build leaves nothing in the checkout
    for name in ("audiostem", "data_prep"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # --no-build-isolation: build with this environment's setuptools (nothing is downloaded)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=600)
    assert (site / "audiostem" / "recipes" / "folk.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "AUDIOSTEM_CACHE": str(tmp_path / "caches")}
    probe = subprocess.run([sys.executable, "-c", "import audiostem; print(audiostem.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(site))          # the installed copy, not the checkout
    out = subprocess.run([sys.executable, "-m", "audiostem.train", "folk", "--print"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "will be built from source 'folk'" in out.stdout
