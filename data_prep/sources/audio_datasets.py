"""Adapters for public audio classification datasets, each in its published file layout.

- ``gtzan``: ten genre folders; the fault-filtered split of Kereliuk & Sturm by default.
- ``esc50``: ``meta/esc50.csv`` and ``audio/``; five folds.
- ``urbansound8k``: ``metadata/UrbanSound8K.csv`` and ``audio/foldN/``; ten folds.
- ``speechcommands``: v2, one folder per word, ``validation_list.txt`` / ``testing_list.txt``.
- ``nsynth``: ``nsynth-{train,valid,test}/examples.json`` and ``audio/``; instrument family.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from ..discover import is_leftover, shown
from ..download import Archive
from ..splits import seeded_rank
from .base import Source, SourceItem, register_source, split_arguments
from .generic import assign_splits, item_id
from .tables import read_manifest, read_text, whole_number

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
                "reggae", "rock")


def find_root(root: Path, is_root: Callable[[Path], bool], what: str, depth: int = 2) -> Path:
    """``root`` itself or the first folder below it (up to ``depth`` levels, sorted) that
    ``is_root``; ``ValueError`` saying what was expected otherwise."""
    level = [root]
    for _ in range(depth + 1):
        for folder in level:
            if is_root(folder):
                return folder
        level = [p for folder in level if folder.is_dir()
                 for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    raise ValueError(f"--root {shown(root)}: no {what} found in it or in its sub-folders")


def _test_fold_argument(parser: argparse.ArgumentParser, n: int) -> None:
    parser.add_argument("--test-fold", type=int, default=None, metavar="K",
                        help=f"make fold K (1..{n}) the test split and the others train "
                             f"(default: keep the {n} folds for cross-validation, no split)")


# -- GTZAN ------------------------------------------------------------------------------------------
def gtzan_filtered_split() -> dict[str, str]:
    """``{"blues.00012": "test", ...}``: the 930 files of the fault-filtered GTZAN split
    (Kereliuk, Sturm & Larsen 2015; the lists torchaudio's GTZAN loader ships), 443 train,
    197 valid, 290 test. The 70 files left out are repetitions, distortions or mislabels."""
    lists = json.loads((Path(__file__).with_name("gtzan_filtered.json")).read_text())
    return {name: split for split in ("train", "valid", "test") for name in lists[split]}


@register_source
class Gtzan(Source):
    name = "gtzan"
    kind = "audio"
    description = "GTZAN genres (10 x 100 30-s clips); fault-filtered split by default"
    default_features = {"kind": "logmel", "sample_rate": 22050, "n_fft": 2048, "hop_length": 512,
                        "n_mels": 128}
    download = ("GTZAN has no stable public archive (its original host, opihi.cs.uvic.ca, is "
                "gone). Copies are on Kaggle ('GTZAN Dataset - Music Genre Classification', folder "
                "Data/genres_original) and on the Hugging Face Hub (marsyas/gtzan, genres.tar.gz). "
                "Download one, extract it, and pass the folder as --root (the folder of the ten "
                "genre folders, or any folder above it).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--split", choices=("filtered", "random"), default="filtered",
                            help="filtered: the fault-filtered artist-conditional split of "
                                 "Kereliuk & Sturm (443/197/290 files; the other 70 are left out); "
                                 "random: all 1000 files, stratified and seeded (default filtered)")
        split_arguments(parser)

    def resolve_root(self, root: Path) -> Path:
        return find_root(root, lambda p: all((p / g).is_dir() for g in GTZAN_GENRES),
                         "folder of the ten GTZAN genre folders (blues/ ... rock/)")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = self.resolve_root(Path(args.root))
        found = {}
        for genre in GTZAN_GENRES:
            for path in sorted((root / genre).iterdir()):
                if path.suffix.lower() in (".wav", ".au") and path.name.startswith(f"{genre}."):
                    found.setdefault(path.name.rsplit(".", 1)[0], path)
        if args.split == "random":
            items = [SourceItem(path, name.split(".")[0], id=name) for name, path in sorted(found.items())]
            return assign_splits(items, args)
        items = []
        for name, split in sorted(gtzan_filtered_split().items()):
            genre = name.split(".")[0]
            path = found.get(name, root / genre / f"{name}.wav")   # a missing file is reported
            items.append(SourceItem(path, genre, split, id=name))
        return items


# -- ESC-50 -----------------------------------------------------------------------------------------
@register_source
class Esc50(Source):
    name = "esc50"
    kind = "audio"
    description = "ESC-50 environmental sounds (2000 5-s clips, 50 classes, 5 folds)"
    default_features = {"kind": "logmel", "sample_rate": 22050, "n_fft": 2048, "hop_length": 512,
                        "n_mels": 128}
    download = [Archive("https://github.com/karolpiczak/ESC-50/archive/master.zip",
                        "ESC-50-master.zip", expect="ESC-50-master/meta/esc50.csv")]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--esc10", action="store_true",
                            help="only the ESC-10 subset (10 classes, 400 clips)")
        _test_fold_argument(parser, 5)

    def resolve_root(self, root: Path) -> Path:
        return find_root(root, lambda p: (p / "meta" / "esc50.csv").is_file(), "meta/esc50.csv")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = self.resolve_root(Path(args.root))
        table, items = root / "meta" / "esc50.csv", []
        for row in read_manifest(table, ("filename", "fold", "category"))[1]:
            if args.esc10 and row.get("esc10", "").lower() != "true":
                continue
            path = root / "audio" / row["filename"]
            items.append(SourceItem(path, row["category"], "", whole_number(row, "fold", table),
                                    row.get("src_file", ""), Path(row["filename"]).stem))
        return assign_splits(items, args)


# -- UrbanSound8K -----------------------------------------------------------------------------------
@register_source
class UrbanSound8k(Source):
    name = "urbansound8k"
    kind = "audio"
    description = "UrbanSound8K (8732 clips <= 4 s, 10 classes, 10 folds; mixed rates/channels)"
    default_features = {"kind": "logmel", "sample_rate": 22050, "n_fft": 2048, "hop_length": 512,
                        "n_mels": 128}
    download = [Archive("https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz",
                        "UrbanSound8K.tar.gz", md5="9aa69802bbf37fb986f71ec1483a196e",
                        expect="UrbanSound8K/metadata/UrbanSound8K.csv")]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _test_fold_argument(parser, 10)

    def resolve_root(self, root: Path) -> Path:
        return find_root(root, lambda p: (p / "metadata" / "UrbanSound8K.csv").is_file(),
                         "metadata/UrbanSound8K.csv")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = self.resolve_root(Path(args.root))
        table, items = root / "metadata" / "UrbanSound8K.csv", []
        for row in read_manifest(table, ("slice_file_name", "fsID", "fold", "class"))[1]:
            fold = whole_number(row, "fold", table)
            path = root / "audio" / f"fold{fold}" / row["slice_file_name"]
            items.append(SourceItem(path, row["class"], "", fold, row["fsID"],
                                    Path(row["slice_file_name"]).stem))
        return assign_splits(items, args)


# -- Speech Commands v2 -----------------------------------------------------------------------------
@register_source
class SpeechCommands(Source):
    name = "speechcommands"
    kind = "audio"
    description = "Speech Commands v2 (105,829 1-s words, 35 classes; its validation/testing lists)"
    default_features = {"kind": "logmel", "sample_rate": 16000, "n_fft": 512, "win_length": 400,
                        "hop_length": 160, "n_mels": 64}
    download = [Archive("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                        "speech_commands_v0.02.tar.gz",
                        sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                        expect="validation_list.txt")]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--words", default=None, metavar="W1,W2,...",
                            help="keep only these words (default: all 35)")
        parser.add_argument("--unknown", action="store_true",
                            help="with --words: label the other words '_unknown_' instead of "
                                 "dropping them (the classic 12-class task, without 'silence')")

    def resolve_root(self, root: Path) -> Path:
        return find_root(root, lambda p: (p / "validation_list.txt").is_file()
                         and (p / "testing_list.txt").is_file(),
                         "Speech Commands folder (validation_list.txt, testing_list.txt)")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = self.resolve_root(Path(args.root))
        splits = {}
        for split, listing in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
            for line in read_text(root / listing).split():
                splits[line.strip()] = split
        words = set(args.words.split(",")) if args.words else None
        items = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name.startswith(("_", ".")):          # _background_noise_
                continue
            label = folder.name
            if words is not None and label not in words:
                if not args.unknown:
                    continue
                label = "_unknown_"
            for path in sorted(folder.glob("*.wav")):
                if is_leftover(Path(path.name)):             # macOS's ._x.wav beside x.wav
                    continue
                rel = f"{folder.name}/{path.name}"
                speaker = path.name.split("_nohash_")[0]
                items.append(SourceItem(path, label, splits.get(rel, "train"), None, speaker,
                                        rel[:-4]))
        if not items:
            raise ValueError(f"{shown(root)}: no word folders with .wav files")
        return items


# -- NSynth -----------------------------------------------------------------------------------------
def _read_examples(path: Path, key: str, label: str) -> dict[str, dict]:
    """NSynth's ``examples.json``: note name -> its attributes, each with ``key`` (the label).
    ``ValueError`` naming the file when it is not that."""
    try:
        examples = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{shown(path)}: not JSON ({e}); download or extract it again") from None
    if not isinstance(examples, dict):
        raise ValueError(f"{shown(path)}: expected a JSON object of notes ({{note: {{{key!r}: ..., ...}}}}), "
                         f"got a {type(examples).__name__}")
    for note, meta in examples.items():
        if not isinstance(meta, dict) or not isinstance(meta.get(key), str) or not meta[key]:
            raise ValueError(f"{shown(path)}: note {note!r} has no {key!r} (--label {label})")
    return examples


_NSYNTH_LABELS = {"family": "instrument_family_str", "source": "instrument_source_str",
                  "instrument": "instrument_str"}


@register_source
class NSynth(Source):
    name = "nsynth"
    kind = "audio"
    description = "NSynth notes (4-s, 16 kHz; labels: instrument family by default)"
    default_features = {"kind": "logmel", "sample_rate": 16000, "n_fft": 1024, "hop_length": 256,
                        "n_mels": 128}
    download = [Archive(f"http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{s}.jsonwav.tar.gz",
                        f"nsynth-{s}.jsonwav.tar.gz", expect=f"nsynth-{s}/examples.json")
                for s in ("valid", "test", "train")]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--label", choices=sorted(_NSYNTH_LABELS), default="family",
                            help="what to classify: instrument family (11 classes), source "
                                 "(acoustic/electronic/synthetic) or instrument (default family)")
        parser.add_argument("--max-per-class", type=int, default=None, metavar="N",
                            help="keep at most N notes per class and split (a seeded, "
                                 "deterministic subset; the train split has 289,205 notes)")
        parser.add_argument("--seed", type=int, default=0, help="seed of --max-per-class (default 0)")

    def _split_dirs(self, root: Path) -> list[tuple[str, Path]]:
        named = {"train": "nsynth-train", "valid": "nsynth-valid", "test": "nsynth-test"}
        if (root / "examples.json").is_file():      # pointed at one split's folder
            split = next((s for s, n in named.items() if root.name == n), "")
            return [(split, root)]
        return [(s, root / n) for s, n in named.items() if (root / n / "examples.json").is_file()]

    def resolve_root(self, root: Path) -> Path:
        return find_root(root, lambda p: bool(self._split_dirs(p)),
                         "nsynth-train/, nsynth-valid/ or nsynth-test/ folder with examples.json")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = self.resolve_root(Path(args.root))
        key = _NSYNTH_LABELS[args.label]
        items = []
        for split, folder in self._split_dirs(root):
            examples = _read_examples(folder / "examples.json", key, args.label)
            chosen = sorted(examples)
            if args.max_per_class:
                by_class: dict[str, list[str]] = {}
                for note in chosen:
                    by_class.setdefault(examples[note][key], []).append(note)
                chosen = sorted(n for notes in by_class.values()
                                for n in sorted(notes, key=lambda n: seeded_rank(n, args.seed))[:args.max_per_class])
            for note in chosen:
                meta = examples[note]
                items.append(SourceItem(folder / "audio" / f"{note}.wav", meta[key], split, None,
                                        meta.get("instrument_str", ""), item_id(folder / note, root)))
        return items
