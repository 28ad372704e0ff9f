"""The preparation pipeline and the command line, on tiny generated audio datasets."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import AudioFeatures, CacheError, extract_file, prepare
from data_prep.__main__ import main
from data_prep.sources import group_split, stratified_split

SR = 8000
FEATURES = {"sample_rate": SR, "n_fft": 256, "hop_length": 128, "n_mels": 16}


def tone(freq, seconds=0.3, sr=SR, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def make_folder(root: Path, classes=("low", "high"), per_class=5):
    for c, freq in zip(classes, (220, 1760)):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            sf.write(root / c / f"spk{i % 2}_{i}.wav", tone(freq * (1 + i / 50)), SR, subtype="PCM_16")
    return root


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_folder_prepare_writes_a_readable_cache(tmp_path):
    root = make_folder(tmp_path / "data")
    cache = prepare("folder", root, tmp_path / "cache", FEATURES, workers=1, progress=False)
    assert len(cache) == 10 and cache.classes == ["high", "low"]
    assert {it.split for it in cache.items} <= {"train", "valid", "test"}
    item = cache.items[0]
    assert item.source == "high/spk0_0.wav" and item.checksum.startswith("sha1:")
    direct = extract_file(root / item.source, AudioFeatures(**FEATURES))
    assert np.array_equal(cache.features(0), direct.astype(np.float16))      # float16 storage
    assert cache.features(0).shape == (1 + int(SR * 0.3) // 128, 16)
    assert cache.meta["build"]["written"] == 10 and cache.meta["build"]["audio_hours"] > 0


def test_up_to_date_refused_config_and_force(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    out = tmp_path / "cache"
    prepare("folder", root, out, FEATURES, workers=1)
    before = (out / "meta.json").read_text()
    prepare("folder", root, out, FEATURES, workers=1)
    assert "up to date" in capsys.readouterr().err
    assert (out / "meta.json").read_text() == before
    with pytest.raises(CacheError, match="n_mels: 16 != 24"):
        prepare("folder", root, out, {**FEATURES, "n_mels": 24}, workers=1, progress=False)
    cache = prepare("folder", root, out, {**FEATURES, "n_mels": 24}, force=True, workers=1, progress=False)
    assert cache.features(0).shape[1] == 24


def test_extract_file_gives_what_the_cache_holds_and_refuses_overflow(tmp_path):
    t = np.arange(SR) / SR
    sf.write(tmp_path / "quiet.wav", 0.3 * np.sin(2 * np.pi * 440 * t), SR)
    assert extract_file(tmp_path / "quiet.wav", AudioFeatures(**FEATURES)).dtype == np.float16
    sf.write(tmp_path / "loud.wav", np.sin(2 * np.pi * 1000 * t), SR)
    loud = AudioFeatures(kind="mel", sample_rate=SR, n_fft=4096, hop_length=1024, n_mels=16, mel_norm=None)
    with pytest.raises(ValueError, match=r"values up to .* overflow the float16 cache \(max 65504\); "
                                         r"use a dB kind or power=1"):
        extract_file(tmp_path / "loud.wav", loud)        # what predict reports for such a file


def test_two_workers_give_the_same_cache_as_one(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "low" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    one = prepare("folder", root, tmp_path / "one", FEATURES, workers=1, progress=False)
    two = prepare("folder", root, tmp_path / "two", FEATURES, workers=2, progress=False)
    assert one.items == two.items
    assert all(np.array_equal(one.features(i), two.features(i)) for i in range(len(one)))
    assert one.failures == two.failures and one.failures[0]["source"] == "low/broken.wav"


def test_csv_source_with_splits_folds_and_groups(tmp_path):
    root = make_folder(tmp_path / "data")
    rows = ["path,label,speaker"] + [f"{c}/spk{i % 2}_{i}.wav,{c},s{i % 2}"
                                     for c in ("low", "high") for i in range(5)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    cache = prepare("csv", root, tmp_path / "cache", FEATURES, workers=1, progress=False,
                    group_by="speaker", valid_fraction=0.25, test_fraction=0.25)
    by_group = {}
    for it in cache.items:
        by_group.setdefault((it.label, it.group), set()).add(it.split)
    assert all(len(s) == 1 for s in by_group.values())       # a speaker never straddles splits
    (root / "folds.csv").write_text("path,label,fold,split\nlow/spk0_0.wav,low,1,\nhigh/spk0_0.wav,high,2,\n"
                                    "high/spk1_1.wav,high,2,validation\n")
    cache = prepare("csv", root / "folds.csv", tmp_path / "folds", FEATURES, workers=1, progress=False)
    assert [(it.fold, it.split) for it in cache.items] == [(1, ""), (2, ""), (2, "valid")]


def test_csv_fold_column_names_the_folds(tmp_path, capsys):
    root = make_folder(tmp_path / "data", per_class=4)
    sfs = ("timgm", "csound", "fluid", "csound")              # leave-one-soundfont-out: names, not numbers
    rows = ["path,label,split,soundfont,game"] + [f"{c}/spk{i % 2}_{i}.wav,{c},train,{sfs[i]},{7 - i}"
                                                  for c in ("low", "high") for i in range(4)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    cache = prepare("csv", root, tmp_path / "sf", FEATURES, workers=1, progress=False, fold_column="soundfont")
    number = {"csound": 1, "fluid": 2, "timgm": 3}             # sorted names, printed for the reader
    assert {it.id: it.fold for it in cache.items} == {
        f"{c}/spk{i % 2}_{i}": number[sfs[i]] for c in ("low", "high") for i in range(4)}
    assert "folds from column 'soundfont': 1=csound, 2=fluid, 3=timgm" in capsys.readouterr().err
    cache = prepare("csv", root, tmp_path / "game", FEATURES, workers=1, progress=False, fold_column="game")
    assert sorted({it.fold for it in cache.items}) == [4, 5, 6, 7]            # whole numbers as they are
    with pytest.raises(ValueError, match=r"manifest\.csv: --fold-column 'speaker' is not a column"):
        prepare("csv", root, tmp_path / "x", FEATURES, workers=1, progress=False, fold_column="speaker")
    (root / "bad.csv").write_text("path,label,fold\nlow/spk0_0.wav,low,one\n")
    with pytest.raises(ValueError, match=r"bad\.csv: fold must be an integer, got 'one'"):
        prepare("csv", root / "bad.csv", tmp_path / "y", FEATURES, workers=1, progress=False)


def test_split_helpers_are_deterministic_stratified_and_group_aware():
    keys = [f"f{i}" for i in range(100)]
    labels = ["a" if i < 60 else "b" for i in range(100)]
    splits = stratified_split(keys, labels, seed=3)
    assert splits == stratified_split(keys, labels, seed=3) != stratified_split(keys, labels, seed=4)
    assert sum(s == "test" for s, lab in zip(splits, labels) if lab == "a") == 6
    assert sum(s == "valid" for s, lab in zip(splits, labels) if lab == "b") == 4
    groups = [f"g{i // 7}" for i in range(100)]
    gsplits = group_split(keys, labels, groups, seed=0)
    for g in set(groups):
        assert len({s for s, gg in zip(gsplits, groups) if gg == g}) == 1
    assert {"train", "valid", "test"} == set(gsplits)


def test_cli_lists_sources_and_options_and_builds(tmp_path):
    top = run_cli("--help")
    assert top.returncode == 0 and "folder" in top.stdout and "csv" in top.stdout
    sub = run_cli("folder", "--help")
    assert sub.returncode == 0 and "--n-mels" in sub.stdout and "--beat-resolution" in sub.stdout
    assert "--group-by" in sub.stdout
    root = make_folder(tmp_path / "data")
    args = ["folder", "--root", root, "--out", tmp_path / "c", "--sample-rate", SR, "--n-fft", 256,
            "--hop-length", 128, "--n-mels", 16, "--top-db", "none", "--workers", 1]
    assert main([str(a) for a in args]) == 0
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["features"]["top_db"] is None and meta["features"]["n_mels"] == 16


def test_cli_errors_are_non_zero_with_a_reason(tmp_path, capsys):
    assert main(["folder", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    assert main(["folder", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 1
    assert "no audio files under" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["folder", "--root", str(tmp_path), "--out", str(tmp_path / "c"), "--n-mels", "-3"])
    assert info.value.code == 2 and "n_mels" in capsys.readouterr().err
    bad = tmp_path / "allbad" / "cls"
    bad.mkdir(parents=True)
    (bad / "a.wav").write_bytes(b"nope")
    assert main(["folder", "--root", str(tmp_path / "allbad"), "--out", str(tmp_path / "c"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no usable item" in err and "cls/a.wav: not a readable audio file (it is text" in err


def test_render_subcommand_dispatches(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("data_prep.render")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "data_prep.render", fake)
    import data_prep

    monkeypatch.setattr(data_prep, "render", fake, raising=False)
    assert main(["render", "--root", "x", "--out", "y"]) == 0
    assert calls == [["--root", "x", "--out", "y"]]


def test_folder_lists_midi_for_piano_rolls_and_hints_at_the_kind(tmp_path):
    from data_prep.prepare import resolve_features, source_arguments
    from data_prep.sources import get_source

    root = tmp_path / "tunes"
    for cls in ("jig", "reel"):
        (root / cls).mkdir(parents=True)
        (root / cls / "a.mid").write_bytes(b"MThd")
        (root / cls / "b.MIDI").write_bytes(b"MThd")
        sf.write(root / cls / "c.wav", tone(440), SR)
    folder = get_source("folder")
    args = source_arguments(folder)
    args.root, args.features = root, resolve_features(folder, {"kind": "pianoroll"})
    assert sorted(it.path.name for it in folder.items(args)) == ["a.mid", "a.mid", "b.MIDI", "b.MIDI"]
    args.features = resolve_features(folder, None)
    assert {it.path.suffix for it in folder.items(args)} == {".wav"}
    for cls in ("jig", "reel"):
        (root / cls / "c.wav").unlink()
    with pytest.raises(ValueError, match="add --kind pianoroll"):
        folder.items(args)
