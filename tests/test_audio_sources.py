"""Dataset adapters, each on a tiny fixture generated in the dataset's published layout."""
import ast
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import prepare
from data_prep.__main__ import main
from data_prep.sources import available_sources
from data_prep.sources.audio_datasets import GTZAN_GENRES, gtzan_filtered_split

FEATURES = {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 16, "win_length": None}


def clip(path: Path, seconds=0.05, sr=8000, channels=1, subtype="PCM_16", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(sr * seconds), channels)).astype(np.float32)
    sf.write(path, x, sr, subtype=subtype)


def run(source, root, out, **options):
    return prepare(source, root, out, FEATURES, workers=1, progress=False, **options)


def test_all_audio_sources_are_registered():
    assert {"gtzan", "esc50", "urbansound8k", "speechcommands", "nsynth", "folder", "csv"} <= set(available_sources())


def test_gtzan_filtered_lists_are_the_published_ones():
    split = gtzan_filtered_split()
    assert Counter(split.values()) == {"train": 443, "valid": 197, "test": 290}
    assert {name.split(".")[0] for name in split} == set(GTZAN_GENRES)
    # the same lists as torchaudio's loader (read from its source: importing it is slow)
    spec = importlib.util.find_spec("torchaudio")
    if spec is None:
        pytest.skip("torchaudio is not installed")
    module = ast.parse((Path(spec.origin).parent / "datasets" / "gtzan.py").read_text())
    lists = {node.targets[0].id: ast.literal_eval(node.value) for node in module.body
             if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "").startswith("filtered_")}
    for name in ("train", "valid", "test"):
        assert sorted(lists[f"filtered_{name}"]) == sorted(n for n, s in split.items() if s == name)


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    """Kaggle's layout, Data/genres_original/GENRE/GENRE.000NN.wav, with its unreadable jazz.00054."""
    base = tmp_path_factory.mktemp("gtzan")
    genres = base / "Data" / "genres_original"
    for g in GTZAN_GENRES:
        for i in range(100):
            clip(genres / g / f"{g}.{i:05d}.wav", seconds=0.02, seed=i)
    (genres / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(100))
    return base


def test_gtzan_filtered_split_from_a_parent_folder(gtzan_root, tmp_path):
    cache = run("gtzan", gtzan_root, tmp_path / "cache")
    assert len(cache) == 929 and cache.meta["splits"] == {"test": 290, "train": 442, "valid": 197}
    assert cache.failures == [{"source": "jazz/jazz.00054.wav", "reason": cache.failures[0]["reason"]}]
    assert "not a readable audio file" in cache.failures[0]["reason"]
    assert cache.meta["source"]["root"].endswith("genres_original")
    blues = next(it for it in cache.items if it.id == "blues.00012")
    assert blues.split == "test" and blues.label == "blues"


def test_gtzan_random_split_via_cli(gtzan_root, tmp_path, capsys):
    argv = ["gtzan", "--root", str(gtzan_root / "Data" / "genres_original"), "--out", str(tmp_path / "c"),
            "--split", "random", "--seed", "1", "--workers", "1", "--quiet"]
    # 3: the cache is complete, and a file (the unreadable jazz.00054) was skipped
    assert main(argv + [f"--{k.replace('_', '-')}={v}" for k, v in FEATURES.items()]) == 3
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["n_items"] == 999 and meta["splits"] == {"test": 100, "train": 799, "valid": 100}


def test_gtzan_wrong_root_says_what_it_expected(tmp_path):
    with pytest.raises(ValueError, match="ten GTZAN genre folders"):
        run("gtzan", tmp_path, tmp_path / "cache")


def write_esc50(root: Path):
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category, esc10 in ((0, "dog", "True"), (1, "rooster", "False")):
            for take in "AB":
                name = f"{fold}-{100 + target}{fold}-{take}-{target}.wav"
                clip(root / "audio" / name, 0.05, 44100)
                rows.append(f"{name},{fold},{target},{category},{esc10},{100 + target}{fold},{take}")
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def test_esc50_folds_groups_esc10_and_test_fold(tmp_path):
    write_esc50(tmp_path / "ESC-50-master")
    cache = run("esc50", tmp_path, tmp_path / "cache")
    assert len(cache) == 20 and cache.classes == ["dog", "rooster"]
    assert sorted({it.fold for it in cache.items}) == [1, 2, 3, 4, 5]
    assert {it.split for it in cache.items} == {""} and cache.meta["stats"]["over"] == "all"
    assert len(cache.indices(folds=[2])) == 4
    first = cache.items[0]
    assert first.group == first.id.split("-")[1]         # src_file: takes of one recording
    esc10 = run("esc50", tmp_path / "ESC-50-master", tmp_path / "esc10", esc10=True, test_fold=5)
    assert esc10.classes == ["dog"] and esc10.meta["splits"] == {"test": 2, "train": 8}


def test_urbansound8k_mixed_rates_channels_and_depths(tmp_path):
    root = tmp_path / "UrbanSound8K"
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    formats = [(44100, 2, "PCM_16"), (48000, 1, "PCM_24"), (96000, 2, "FLOAT"), (11025, 1, "PCM_U8"),
               (22050, 1, "PCM_16"), (8000, 2, "PCM_16")]
    for i, (sr, channels, subtype) in enumerate(formats):
        fold, cls = 1 + i % 3, ("siren", "dog_bark")[i % 2]
        name = f"{1000 + i // 2}-{i % 2}-0-{i}.wav"
        clip(root / "audio" / f"fold{fold}" / name, 0.25, sr, channels, subtype, seed=i)
        rows.append(f"{name},{1000 + i // 2},0,0.25,1,{fold},{i % 2},{cls}")
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")
    cache = run("urbansound8k", tmp_path, tmp_path / "cache")
    assert len(cache) == 6 and not cache.failures
    assert {it.frames for it in cache.items} == {1 + 2000 // 128}     # 0.25 s at 8 kHz
    assert sorted({it.fold for it in cache.items}) == [1, 2, 3]
    assert {it.group for it in cache.items} == {"1000", "1001", "1002"}


def test_speechcommands_lists_speakers_and_words(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    for word in ("yes", "no", "wow"):
        for speaker in ("aa11", "bb22", "cc33"):
            clip(root / word / f"{speaker}_nohash_0.wav", 0.05, 16000)
    clip(root / "_background_noise_" / "white_noise.wav", 0.1, 16000)
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.wav\nwow/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc33_nohash_0.wav\nno/cc33_nohash_0.wav\nwow/cc33_nohash_0.wav\n")
    cache = run("speechcommands", tmp_path, tmp_path / "cache")
    assert cache.classes == ["no", "wow", "yes"] and len(cache) == 9
    assert {(it.group, it.split) for it in cache.items} == {("aa11", "train"), ("bb22", "valid"),
                                                                 ("cc33", "test")}
    assert not any("background" in it.source for it in cache.items)
    subset = run("speechcommands", root, tmp_path / "subset", words="yes,no", unknown=True)
    assert subset.classes == ["_unknown_", "no", "yes"]


def test_nsynth_family_source_and_subset(tmp_path):
    for split in ("train", "valid", "test"):
        folder = tmp_path / f"nsynth-{split}"
        examples = {}
        for fam, source in (("bass", "electronic"), ("flute", "acoustic")):
            for k in range(3):
                note = f"{fam}_{source}_{k:03d}-0{60 + k}-100"
                clip(folder / "audio" / f"{note}.wav", 0.05, 16000, seed=k)
                examples[note] = {"note_str": note, "instrument_family_str": fam,
                                  "instrument_source_str": source, "instrument_str": f"{fam}_{source}_{k:03d}",
                                  "pitch": 60 + k}
        (folder / "examples.json").write_text(json.dumps(examples))
    cache = run("nsynth", tmp_path, tmp_path / "cache")
    assert cache.classes == ["bass", "flute"] and cache.meta["splits"] == {"test": 6, "train": 6, "valid": 6}
    by_source = run("nsynth", tmp_path / "nsynth-valid", tmp_path / "valid", label="source", max_per_class=2)
    assert by_source.classes == ["acoustic", "electronic"] and len(by_source) == 4
    assert {it.split for it in by_source.items} == {"valid"}
