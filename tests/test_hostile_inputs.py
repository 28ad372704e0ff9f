"""Hostile inputs cost little and run nothing: YAML bombs in recipes, overrides and study files;
tar archives with links out of the root (with and without Python's extraction filters); study
reports over cells trained on different builds of a cache."""
import contextlib
import io
import json
import tarfile
import time

import pytest
import yaml

from audiostem.recipe import RecipeError, load_recipe
from audiostem.study.__main__ import main as study_main
from audiostem.study.grid import StudyError, load_study
from audiostem.train import main as train_main
from data_prep.download import extract

LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] +
                   [f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]" for k in range(8)])


def bomb_recipe(tmp_path, body: str):
    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("body", [
    # nine levels of aliases inside data.prepare.options (9**9 nodes once expanded)
    "data:\n  cache: c\n  prepare:\n    source: folder\n    root: r\n    options:\n" +
    "\n".join("      " + line for line in LAUGHS.splitlines()),
    # the bomb defined in an unused key, expanded into a field whose error message would print it
    LAUGHS + "\nseed: *i\n",
    # a merge key
    "base: &base {lr: 0.1}\ntrain:\n  <<: *base\n",
])
def test_recipe_aliases_are_refused_before_anything_expands_them(tmp_path, body):
    path = bomb_recipe(tmp_path, body)
    started = time.process_time()
    with pytest.raises(RecipeError, match=rf"{path}: not valid YAML: line \d+: the alias \*\w+ is not allowed"):
        load_recipe(path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert train_main([str(path), "--print"]) == 2
    assert "alias" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert time.process_time() - started < 10         # bounded: nothing was expanded


@pytest.mark.parametrize("body, match", [
    ("x: " + "[" * 500 + "]" * 500 + "\n", "nested more than 64 levels"),
    ("seed: " + "9" * 5000 + "\n", "digits"),
    ("seed: !!python/object/apply:os.system [touch pwned]\n", "could not determine a constructor"),
    ("a: " + "x" * (1 << 20) + "\n", "1048580 bytes, more than the 1048576"),
])
def test_other_costly_or_hostile_yaml_is_refused(tmp_path, body, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(bomb_recipe(tmp_path, body))
    assert not (tmp_path / "pwned").exists()


def test_override_values_are_bounded_too(tmp_path):
    path = bomb_recipe(tmp_path, "data: {cache: c}\n")
    with pytest.raises(RecipeError, match="override 'seed=\\*a'"):
        load_recipe(path, ["seed=*a"])
    with pytest.raises(RecipeError, match="alias"):
        load_recipe(path, ["data.prepare.options={a: &a [1, 1], b: [*a, *a]}"])


def test_study_files_are_read_the_same_way(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(LAUGHS + "\nname: s\nout_dir: o\nseeds: *i\ndatasets: []\nstems: [deep3]\n")
    with pytest.raises(StudyError, match="alias"):
        load_study(path)


# --- archives -------------------------------------------------------------------------------------
def _tar(path, members):
    """``members``: (name, kind, payload) with kind file / symlink / hardlink / fifo."""
    with tarfile.open(path, "w") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                         "dir": tarfile.DIRTYPE}[kind]
            info.linkname = payload or ""
            tf.addfile(info)
    return path


HOSTILE = {
    "chained symlink": [("d", "dir", None), ("d/l", "symlink", ".."), ("d/l/../x.txt", "file", b"escaped")],
    "symlink then file": [("l", "symlink", ".."), ("l/x.txt", "file", b"escaped")],
    "hardlink then file": [("h", "hardlink", "../outside.txt"), ("h", "file", b"overwritten")],
    "absolute": [("/tmp/x.txt", "file", b"escaped")],
    "fifo": [("f", "fifo", None)],
}


@pytest.fixture(params=["filters", "fallback"])
def python_tar(request, monkeypatch):
    """Extract with Python's tar filters, and as on a Python without them (< 3.10.12, 3.11.4)."""
    if request.param == "fallback":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_tar_members_that_could_leave_the_root_are_refused(tmp_path, python_tar, case):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    archive = _tar(tmp_path / "a.tar", HOSTILE[case])
    root = tmp_path / "sub" / "root"
    with pytest.raises(ValueError, match=r"a\.tar: .*(refused|outside)"):
        extract(archive, root)
    assert outside.read_bytes() == b"keep me"
    assert not (tmp_path / "sub" / "x.txt").exists() and not (tmp_path / "x.txt").exists()
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_tar_extracts_plain_files_without_setuid(tmp_path, python_tar):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("c/x.wav")
        info.size, info.mode = 3, 0o4777                      # setuid and executable
        tf.addfile(info, io.BytesIO(b"abc"))
    extract(archive, tmp_path / "root")
    f = tmp_path / "root" / "c" / "x.wav"
    assert f.read_bytes() == b"abc" and not f.stat().st_mode & 0o6000
    if python_tar == "fallback":                             # the archive's modes are not applied
        assert not f.stat().st_mode & 0o111


# --- a study over several builds of one cache -----------------------------------------------------
def test_a_study_report_refuses_cells_of_different_cache_builds(tmp_path):
    from test_study_report import make_run

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "out_dir": str(tmp_path / "out"), "seeds": 2, "bootstrap": 100,
                                    "datasets": [{"name": "a", "recipe": "r.yaml"}], "stems": ["deep3", "tall"]}))
    ids = [f"c{i}" for i in range(40)]
    for stem in ("deep3", "tall"):
        for seed in (0, 1):
            run = tmp_path / "out" / "runs" / "a" / stem / f"seed{seed}"
            make_run(run, ids, [i % 3 != 0 for i in range(40)], seed)
            metrics = json.loads((run / "metrics.json").read_text())
            metrics["cache_build_id"] = "b" * 32 if (stem, seed) == ("tall", 1) else "a" * 32
            (run / "metrics.json").write_text(json.dumps(metrics))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert study_main(["report", str(path)]) == 2
    assert "dataset a: its cells were trained on 2 builds" in err.getvalue()
    assert "tall/seed1" in err.getvalue()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):   # leaving it out works
        assert study_main(["report", str(path), "--cells", "a/deep3/*", "a/tall/seed0"]) == 0


@pytest.mark.parametrize("text, line", [("data: {cache: c}\nseed: 3\nseed: 4\n", 3),
                                         ("data: {cache: c, cache: d}\n", 1)])
def test_a_key_written_twice_is_refused_not_silently_the_last(tmp_path, text, line):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=rf"dup.yaml: not valid YAML: line {line}: the key '\w+' occurs twice"):
        load_recipe(path)
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nout_dir: o\nseeds: 2\nseeds: 3\ndatasets: []\nstems: [deep3]\n")
    with pytest.raises(StudyError, match="line 4: the key 'seeds' occurs twice"):
        load_study(study)
