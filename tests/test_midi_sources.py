"""MIDI sources from the command line: folk, maestro, lakh, folder and csv on tiny fixtures in
their real layouts; resume, up to date, config change."""
import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from data_prep import CacheError, open_cache, prepare
from data_prep.__main__ import main

REPO = Path(__file__).resolve().parents[1]
prepare_module = importlib.import_module("data_prep.prepare")     # data_prep.prepare is also a function


def song(path: Path, pitches, program=0, seconds=3.0, drums=False, seed=0):
    """A small MIDI file: a scale over ``pitches`` (plus a drum track if asked)."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(rng.uniform(90, 140)))
    inst = pretty_midi.Instrument(program=program)
    step = seconds / len(pitches)
    inst.notes = [pretty_midi.Note(int(rng.integers(60, 110)), int(p), i * step, (i + 0.9) * step)
                  for i, p in enumerate(pitches)]
    pm.instruments.append(inst)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        kit.notes = [pretty_midi.Note(100, 36, t, t + 0.05) for t in np.arange(0, seconds, 0.5)]
        pm.instruments.append(kit)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_folk_cli_builds_on_first_use_then_up_to_date_then_config_change(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home")}          # --root defaults under ~
    cache = tmp_path / "folk_cache"
    done = run_cli("folk", "--out", cache, "--per-class", 6, "--workers", 2, env=env)
    assert done.returncode == 0, done.stderr
    built = tmp_path / "home/.cache/audiostem/data/folk_midi"
    assert (built / "manifest.csv").exists() and (built / "folk.json").exists()
    c = open_cache(cache)
    assert len(c) == 30 and c.classes == ["american", "chinese", "german", "irish", "scottish"]
    assert c.meta["feature_shape"] == [88] and c.config.beat_resolution == 4
    assert set(c.meta["splits"]) == {"train", "valid", "test"}
    again = run_cli("folk", "--out", cache, "--per-class", 6, env=env)
    assert again.returncode == 0 and "up to date" in again.stderr
    changed = run_cli("folk", "--out", cache, "--per-class", 6, "--values", "velocity", env=env)
    assert changed.returncode == 1 and "values: 'binary' != 'velocity'" in changed.stderr
    forced = run_cli("folk", "--out", cache, "--per-class", 6, "--values", "velocity", "--onsets",
                     "--force", "--quiet", env=env)
    assert forced.returncode == 0, forced.stderr
    assert open_cache(cache).meta["feature_shape"] == [2, 88]


def test_folk_lists_a_folder_built_elsewhere(tmp_path):
    root = tmp_path / "folk_midi"                        # the abc2midi script's layout
    rows = []
    for label, pitch in (("irish", 60), ("german", 70)):
        for k in range(4):
            song(root / label / f"t{k}_X1.mid", [pitch + k, pitch + 2, pitch + 4])
            rows.append({"path": f"{label}/t{k}_X1.mid", "label": label,
                         "split": ["train", "train", "val", "test"][k], "tune_id": f"t{k}_X1"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "split", "tune_id"])
        writer.writeheader()
        writer.writerows(rows)
    cache = prepare("folk", root, tmp_path / "c", workers=1, progress=False)
    assert len(cache) == 8 and cache.meta["splits"] == {"test": 2, "train": 4, "valid": 2}
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no folk dataset"):
        prepare("folk", tmp_path / "junk", tmp_path / "c2", workers=1, progress=False)


def maestro_fixture(root: Path) -> Path:
    folder = root / "maestro-v3.0.0"
    rows = []
    plan = [("Frédéric Chopin", "train"), ("Frédéric Chopin", "validation"), ("Frédéric Chopin", "test"),
            ("Johann Sebastian Bach", "train"), ("Johann Sebastian Bach", "train"),
            ("Johann Sebastian Bach", "test"), ("Alban Berg", "train")]
    for k, (composer, split) in enumerate(plan):
        name = f"2018/MIDI-Unprocessed_{k:02d}_R1_2018_wav--{k}.midi"
        song(folder / name, [40 + 5 * k + i for i in range(6)], seed=k)
        rows.append({"canonical_composer": composer, "canonical_title": f"Piece {k % 2}",
                     "split": split, "year": 2018, "midi_filename": name,
                     "audio_filename": name.replace(".midi", ".wav"), "duration": 3.0})
    with open(folder / "maestro-v3.0.0.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_maestro_cli(tmp_path):
    root = maestro_fixture(tmp_path / "maestro")
    out = tmp_path / "maestro_cache"
    done = run_cli("maestro", "--root", root, "--out", out, "--min-per-class", 2, "--workers", 1)
    assert done.returncode == 0, done.stderr
    cache = open_cache(out)
    assert cache.classes == ["Frédéric Chopin", "Johann Sebastian Bach"] and len(cache) == 6
    assert cache.meta["splits"] == {"test": 2, "train": 3, "valid": 1}
    assert cache.config.fs == 20.0 and cache.meta["feature_shape"] == [88]
    assert run_cli("maestro", "--root", root, "--out", tmp_path / "x", "--min-per-class", 5).returncode == 1


def lakh_fixture(root: Path, broken: bool = True) -> Path:
    tracks = {"TRAAAAW128F429D538": "Rock", "TRAAABD128F429CF47": "Rock", "TRAAADZ128F9348C2E": "Rock",
              "TRAAAEF128F4273421": "Electronic", "TRAAAFD128F92F423A": "Electronic",
              "TRAAAMO128F1481E7F": "Electronic", "TRAAAMQ128F1460CD3": "Jazz"}
    for k, track in enumerate(tracks):
        folder = root / "lmd_matched" / track[2] / track[3] / track[4] / track
        for m in range(2 if k < 2 else 1):          # two matches for the first two tracks
            song(folder / f"{k:02d}{m}cafe{'0' * 24}.mid", [50 + k + 3 * i for i in range(5)],
                 drums=tracks[track] == "Rock", seed=10 * k + m)
    song(root / "lmd_matched/T/R/A/TRAAAXX128F0000000/feed.mid", [60, 62])   # no label
    if broken:
        (root / "lmd_matched/T/R/A/TRAAAMQ128F1460CD3").mkdir(parents=True, exist_ok=True)
        (root / "lmd_matched/T/R/A/TRAAAMQ128F1460CD3/broken.mid").write_bytes(b"MThd\x00\x00\x00\x06junk")
    lines = ["# MSD tagtraum genre annotations (CD2), test fixture", *(f"{t}\t{g}" for t, g in tracks.items())]
    (root / "msd_tagtraum_cd2.cls").write_text("\n".join(lines) + "\n")
    return root


def test_lakh_cli_groups_matches_and_records_broken_files(tmp_path):
    root = lakh_fixture(tmp_path / "lakh")
    out = tmp_path / "lakh_cache"
    done = run_cli("lakh", "--root", root, "--out", out, "--workers", 2, "--valid-fraction", 0.2,
                   "--test-fraction", 0.2)
    assert done.returncode == 3, done.stderr          # complete, with a file skipped
    cache = open_cache(out)
    assert cache.classes == ["Electronic", "Jazz", "Rock"] and len(cache) == 9   # 10 listed, 1 broken
    assert [f["source"] for f in cache.failures] == ["lmd_matched/T/R/A/TRAAAMQ128F1460CD3/broken.mid"]
    assert "unreadable MIDI" in cache.failures[0]["reason"]
    by_track = {}
    for item in cache.items:                          # matches of one song share a split
        assert by_track.setdefault(item.group, item.split) == item.split
    assert cache.config.beat_resolution == 4 and cache.meta["feature_shape"] == [128]
    one = prepare("lakh", root, tmp_path / "one", workers=1, progress=False, one_per_track=True,
                  min_per_class=2, features={"drums": "channel"})
    assert len(one) == 6 and one.classes == ["Electronic", "Rock"]
    assert one.meta["feature_shape"] == [2, 128]


def test_lakh_needs_a_label_file(tmp_path):
    root = lakh_fixture(tmp_path / "lakh", broken=False)
    (root / "msd_tagtraum_cd2.cls").unlink()
    with pytest.raises(ValueError, match="--genres"):
        prepare("lakh", root, tmp_path / "c", workers=1, progress=False)
    (root / "labels.tsv").write_text("not a track id\tRock\n")
    with pytest.raises(ValueError, match="TRACKID"):
        prepare("lakh", root, tmp_path / "c", workers=1, progress=False)


def midi_folder(root: Path) -> Path:
    for label, base in (("low", 36), ("high", 72)):
        for k in range(5):
            song(root / label / f"piece {k} é.mid", [base + k, base + k + 4, base + k + 7], seed=k)
    (root / "low" / "empty.mid").write_bytes(b"")
    return root


def test_folder_and_csv_with_piano_rolls(tmp_path):
    root = midi_folder(tmp_path / "midi")
    assert main(["folder", "--root", str(root), "--out", str(tmp_path / "f"), "--kind", "pianoroll",
                 "--fs", "10", "--workers", "1", "--quiet"]) == 3      # complete, one file skipped
    cache = open_cache(tmp_path / "f")
    assert len(cache) == 10 and cache.classes == ["high", "low"] and cache.meta["feature_shape"] == [128]
    assert cache.failures == [{"source": "low/empty.mid", "reason": "not a MIDI file (it does not start with 'MThd')"}]
    with open(root / "list.csv", "w", newline="") as fh:
        fh.write("path,label,split\n")
        for k in range(5):
            fh.write(f"low/piece {k} é.mid,low,{'test' if k == 4 else 'train'}\n")
            fh.write(f"high/piece {k} é.mid,high,{'test' if k == 4 else 'train'}\n")
    assert main(["csv", "--root", str(root / "list.csv"), "--out", str(tmp_path / "c"), "--kind",
                 "pianoroll", "--beat-resolution", "2", "--pitch-range", "piano", "--workers", "1",
                 "--quiet"]) == 0
    cache = open_cache(tmp_path / "c")
    assert cache.meta["splits"] == {"test": 2, "train": 8} and cache.meta["feature_shape"] == [88]
    with pytest.raises(CacheError, match="beat_resolution: 2 != 4"):
        prepare("csv", root / "list.csv", tmp_path / "c", {"kind": "pianoroll", "beat_resolution": 4,
                                                           "pitch_range": "piano"}, progress=False)


def test_interrupted_midi_build_resumes_to_the_same_cache(tmp_path, monkeypatch):
    root = midi_folder(tmp_path / "midi")
    features = {"kind": "pianoroll", "fs": 10.0}
    whole = prepare("folder", root, tmp_path / "whole", features, workers=1, progress=False, shard_items=3)
    real = prepare_module.extract_in_order

    def dies_after_five(paths, config, workers, **options):
        for k, result in enumerate(real(paths, config, workers, **options)):
            if k == 5:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(prepare_module, "extract_in_order", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        prepare("folder", root, tmp_path / "cut", features, workers=1, progress=False, shard_items=3)
    assert (tmp_path / "cut.partial").exists() and not (tmp_path / "cut").exists()
    monkeypatch.setattr(prepare_module, "extract_in_order", real)
    resumed = prepare("folder", root, tmp_path / "cut", features, workers=1, progress=False, shard_items=3)
    assert resumed.meta["build"]["resumed"] > 0
    assert resumed.items == whole.items and resumed.failures == whole.failures
    for i in range(len(whole)):
        np.testing.assert_array_equal(resumed.features(i), whole.features(i))
