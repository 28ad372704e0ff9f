"""MIDI datasets as piano-roll caches: the built-in ``folk`` and ``polyphony``, ``maestro`` and
``lakh``.

Every source here reads MIDI and defaults to a one-channel piano roll (DESIGN: a stem sees a
``1 x pitch x time`` image); any other piano-roll option can be given on the command line
(``--onsets``, ``--drums channel``, ``--fs 50`` ...).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from ..download import Archive
from ..discover import MIDI_EXTENSIONS, shown
from ..splits import group_split
from .base import Source, SourceItem, fractions_from, register_source, split_arguments
from .generic import list_files, normalise_split
from .tables import read_manifest, read_text, whole_number

# Folk melodies, whatever their tempo, on a sixteenth-note grid: 4 frames per quarter note (a
# 32-bar reel in 4/4 is 512 frames), the 88 piano keys (every tune fits), binary values (the
# files have one velocity, so velocity carries nothing).
FOLK_FEATURES = {"kind": "pianoroll", "beat_resolution": 4, "pitch_range": "piano", "values": "binary"}
# Piano performances: the tempo map of a recorded performance is meaningless, so frames are in
# seconds (20 per second: 50 ms, finer than most note durations), with velocity and pedal.
MAESTRO_FEATURES = {"kind": "pianoroll", "fs": 20.0, "pitch_range": "piano", "values": "velocity"}
# Multi-track songs: tempo-invariant sixteenth grid, all 128 pitches, drums dropped
# (``--drums channel`` gives them a channel of their own).
LAKH_FEATURES = {"kind": "pianoroll", "beat_resolution": 4, "pitch_range": "full", "values": "velocity"}


def _min_per_class(items: list[SourceItem], minimum: int, what: str) -> list[SourceItem]:
    counts = Counter(it.label for it in items)
    kept = [it for it in items if counts[it.label] >= minimum]
    if len({it.label for it in kept}) < 2:
        raise ValueError(f"fewer than two {what} have at least --min-per-class {minimum} items "
                         f"(counts: {dict(counts.most_common(8))}); lower --min-per-class")
    return kept


# -- folk ----------------------------------------------------------------------------------------

@register_source
class Folk(Source):
    name = "folk"
    kind = "midi"
    description = ("built in, no download: folk melodies by collection (Chinese, German, Irish, "
                   "Scottish, American) from music21's corpus, made into MIDI on first use")
    default_features = FOLK_FEATURES
    default_root = Path("~/.cache/audiostem/data/folk_midi")
    creates_root = True          # prepare() lets items() build a missing --root

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from ..folk import COLLECTIONS, DEFAULT_CLASSES

        parser.add_argument("--per-class", type=int, default=300, metavar="N",
                            help="tunes per class when building the MIDI folder (default 300)")
        parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES), metavar="A,B,...",
                            help=f"collections to use (default {','.join(DEFAULT_CLASSES)}; "
                                 f"also {', '.join(c for c in COLLECTIONS if c not in DEFAULT_CLASSES)})")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        from ..folk import build_folk

        root = Path(args.root).expanduser()
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        has_manifest = (root / "manifest.csv").is_file()
        if (root / "folk.json").exists() or not root.exists() or not any(root.iterdir()):
            build_folk(root, args.per_class, classes)
        elif not has_manifest:
            raise ValueError(f"--root {shown(root)} holds no folk dataset (no manifest.csv); give an empty "
                             f"or new folder and it is built there")
        else:                    # built elsewhere (e.g. the abc2midi script): use it as it is
            print(f"folk: listing {shown(root / 'manifest.csv')} as it is (not built by data_prep.folk, so "
                  f"--per-class and --classes do not apply)", file=sys.stderr)
        return read_dataset_manifest(root)


def read_dataset_manifest(root: Path) -> list[SourceItem]:
    """Items of a MIDI dataset folder with a ``manifest.csv`` (folk, polyphony, or one to render
    to audio): ``path,label`` (paths relative to ``root``), and when present ``split``, ``group``
    or ``tune_id``, and an integer ``fold``. Read as spreadsheets save CSV
    (:func:`~data_prep.sources.tables.read_manifest`). An item's id is its path without suffix.
    Raises ``ValueError`` naming the file and line of a bad row."""
    manifest = root / "manifest.csv"
    items = []
    for row in read_manifest(manifest, ("path", "label"))[1]:
        where = f"{shown(manifest)}:{row.line}: "
        items.append(SourceItem(root / row["path"], row["label"], normalise_split(row.get("split", ""), where),
                                whole_number(row, "fold", manifest), row.get("group") or row.get("tune_id", ""),
                                Path(row["path"]).with_suffix("").as_posix()))
    return items


# -- polyphony ----------------------------------------------------------------------------------

@register_source
class Polyphony(Source):
    name = "polyphony"
    kind = "midi"
    description = ("built in, no download: excerpts of polyphonic scores by style (Palestrina, Bach "
                   "chorales, Monteverdi, Trecento, Classical quartets) from music21's corpus")
    default_features = FOLK_FEATURES      # all voices on the sixteenth-note grid, 88 keys, binary
    default_root = Path("~/.cache/audiostem/data/polyphony_midi")
    creates_root = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from ..polyphony import COLLECTIONS

        parser.add_argument("--per-class", type=int, default=500, metavar="N",
                            help="excerpts per class at most; every class is cut to the smallest "
                                 "class's count (default 500)")
        parser.add_argument("--per-piece", type=int, default=12, metavar="N",
                            help="excerpts per score at most, evenly spaced (default 12)")
        parser.add_argument("--excerpt-beats", type=int, default=32, metavar="B",
                            help="excerpt length in quarter notes (default 32: 128 frames at "
                                 "--beat-resolution 4)")
        parser.add_argument("--classes", default=",".join(COLLECTIONS), metavar="A,B,...",
                            help=f"styles to use (default all: {','.join(COLLECTIONS)})")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        from ..polyphony import build_polyphony

        root = Path(args.root).expanduser()
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if (root / "polyphony.json").exists() or not root.exists() or not any(root.iterdir()):
            build_polyphony(root, args.per_class, args.per_piece, args.excerpt_beats, classes)
        elif not (root / "manifest.csv").is_file():
            raise ValueError(f"--root {shown(root)} holds no polyphony dataset (no manifest.csv); give an "
                             f"empty or new folder and it is built there")
        else:
            print(f"polyphony: listing {shown(root / 'manifest.csv')} as it is (no polyphony.json, so "
                  f"--per-class, --per-piece, --excerpt-beats and --classes do not apply)", file=sys.stderr)
        return read_dataset_manifest(root)


# -- MAESTRO -------------------------------------------------------------------------------------

@register_source
class Maestro(Source):
    name = "maestro"
    kind = "midi"
    description = "MAESTRO piano performances (v1-v3 CSV and split), composer classification"
    default_features = MAESTRO_FEATURES
    download = [Archive("https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/"
                        "maestro-v3.0.0-midi.zip", "maestro-v3.0.0-midi.zip",
                        expect="maestro-v3.0.0/maestro-v3.0.0.csv")]      # 58 MB, MIDI only

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--min-per-class", type=int, default=20, metavar="N",
                            help="keep composers with at least N performances (default 20)")
        parser.add_argument("--csv", default=None, metavar="FILE",
                            help="the metadata CSV (default: maestro-v*.csv in --root, newest)")

    def resolve_root(self, root: Path) -> Path:
        if root.is_dir() and not list(root.glob("maestro-v*.csv")):
            inner = sorted(p for p in root.glob("maestro-v*") if p.is_dir())
            if inner:
                return inner[-1]
        return root

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = Path(args.root)
        if args.csv:
            table = Path(args.csv) if Path(args.csv).is_absolute() else root / args.csv
        else:
            found = sorted(root.glob("maestro-v*.csv"))
            if not found:
                raise ValueError(f"--root {shown(root)}: no maestro-v*.csv (expected the unzipped "
                                 f"maestro-v3.0.0 folder)")
            table = found[-1]
        needed = ("canonical_composer", "split", "midi_filename")
        items = [SourceItem(root / r["midi_filename"], r["canonical_composer"],
                            normalise_split(r["split"], f"{shown(table)}:{r.line}: "), None, r.get("canonical_title", ""),
                            Path(r["midi_filename"]).with_suffix("").as_posix())
                 for r in read_manifest(table, needed)[1]]
        return _min_per_class(items, args.min_per_class, "composers")


# -- Lakh MIDI + genre labels ----------------------------------------------------------------------

_MSD_ID = re.compile(r"TR[A-Z0-9]{16}")


def read_genre_labels(path: Path) -> dict[str, str]:
    """MSD track id -> genre from a tagtraum / MASD / topMAGD style file: one
    ``TRACKID<TAB>GENRE[<TAB>...]`` per line, ``#`` comments (the first genre is used)."""
    labels = {}
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\t|\s{2,}|,", line)
        if len(parts) < 2 or not _MSD_ID.fullmatch(parts[0].strip()):
            raise ValueError(f"{shown(path)}:{number}: expected 'TRACKID<TAB>GENRE', got {line[:80]!r}")
        labels[parts[0].strip()] = parts[1].strip()
    if not labels:
        raise ValueError(f"{shown(path)}: no labels")
    return labels


def msd_id(path: Path) -> str:
    """The MSD track id of a Lakh MIDI file: the file name (``TR....mid``, LMD-aligned style) or
    its nearest folder named like one (``lmd_matched/A/B/C/TR..../md5.mid``); ``""`` if none."""
    for part in (path.stem, *(p.name for p in path.parents)):
        if _MSD_ID.fullmatch(part):
            return part
    return ""


@register_source
class Lakh(Source):
    name = "lakh"
    kind = "midi"
    description = "Lakh MIDI (LMD-matched) + an MSD genre label file, genre classification"
    default_features = LAKH_FEATURES
    download = ("Lakh MIDI: https://colinraffel.com/projects/lmd/ (lmd_matched.tar.gz); genre labels: "
                "tagtraum (www.tagtraum.com/msd_genre_datasets.html, msd_tagtraum_cd2.cls) or "
                "MASD/topMAGD (www.ifs.tuwien.ac.at/mir/msd/); give the label file with --genres")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--genres", default=None, metavar="FILE",
                            help="the genre label file (default: the one *.cls or *.tsv file in --root)")
        parser.add_argument("--one-per-track", action="store_true",
                            help="one MIDI file per MSD track (the best match when match_scores.json "
                                 "is in --root, else the first by name) instead of all matches")
        parser.add_argument("--min-per-class", type=int, default=1, metavar="N",
                            help="keep genres with at least N items (default 1)")
        split_arguments(parser)

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = Path(args.root)
        if args.genres:
            genre_file = Path(args.genres)
            genre_file = genre_file if genre_file.is_absolute() or genre_file.exists() else root / genre_file
        else:
            found = sorted(p for p in [*root.glob("*.cls"), *root.glob("*.tsv")] if p.is_file())
            if len(found) != 1:
                raise ValueError(f"give the genre label file with --genres (found {len(found)} "
                                 f"*.cls/*.tsv files in {shown(root)})")
            genre_file = found[0]
        if not genre_file.is_file():
            raise ValueError(f"--genres {shown(genre_file)}: no such file")
        genres = read_genre_labels(genre_file)
        files = list_files(root, MIDI_EXTENSIONS)
        by_track: dict[str, list[Path]] = {}
        for path in files:
            track = msd_id(path.relative_to(root))
            if track in genres:
                by_track.setdefault(track, []).append(path)
        if not by_track:
            raise ValueError(f"none of the {len(files)} MIDI files under {shown(root)} has an MSD track id "
                             f"(TR...) in {shown(genre_file.name)} ({len(genres)} labelled tracks)")
        if args.one_per_track:
            scores = _match_scores(root)
            by_track = {t: [max(ps, key=lambda p: scores.get(t, {}).get(p.stem, -1.0))]
                        for t, ps in by_track.items()}        # max keeps the first of equals
        items = [SourceItem(path, genres[track], "", None, track)
                 for track, paths in sorted(by_track.items()) for path in paths]
        items = _min_per_class(items, args.min_per_class, "genres")
        from .generic import item_id

        items = [SourceItem(it.path, it.label, it.split, None, it.group, item_id(it.path, root))
                 for it in items]
        splits = group_split([it.id for it in items], [it.label for it in items],
                             [it.group for it in items], fractions_from(args), args.seed)
        return [SourceItem(it.path, it.label, s, None, it.group, it.id) for it, s in zip(items, splits)]


def _match_scores(root: Path) -> dict:
    path = root / "match_scores.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{shown(path)}: not valid JSON ({e})") from None
