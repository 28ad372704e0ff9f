"""The built-in ``polyphony`` dataset: excerpts of polyphonic scores from music21's corpus.

Nothing is downloaded: ``music21`` ships the scores. Five style classes, each also one ensemble
and one period (a confound: a model may tell the ensembles apart by range and texture rather
than by style)::

    palestrina   Palestrina mass movements (Humdrum), 4-6 voices, c. 1560-1590
    bach         Bach four-part chorales (MusicXML), c. 1710-1750; BWV 846 (a prelude) left out
    monteverdi   Monteverdi madrigals, books 3-5 (MusicXML), 5 voices, 1592-1605
    trecento     Italian 14th-century songs and mass movements (MusicXML), 2-4 voices
    quartet      Classical string-quartet movements: Haydn op. 1/1 and op. 74/1, Mozart K. 80,
                 155, 156, 458, Beethoven op. 18, 59, 74, 132, 133 (MusicXML)

:func:`build_polyphony` writes::

    ROOT/pieces/<class>/<piece>.mid      each score, all voices in one track (the converted cache)
    ROOT/<class>/<piece>_b<start>.mid    the excerpts (the items)
    ROOT/manifest.csv                    path,label,split,fold,group,piece,source,start_beat,n_notes
    ROOT/polyphony.json                  what was asked for and what was built (counts, skips)

How a score becomes MIDI: music21 parses it; every note of every part (chords as their notes,
tied notes merged, grace notes left out, repeats not expanded) is written at its offset in
quarter notes, at a fixed 120 quarter notes per minute, velocity 80, program 0, in one track:
tempo, dynamics and instruments would name the class. Parsing is the slow part (a quartet
movement takes seconds), so each score's MIDI is saved as soon as it is converted (in
``ROOT.partial/pieces/``, where an interrupted build resumes) and published in ``ROOT/pieces/``,
where a rebuild with other excerpt settings (same music21 version) reads it instead of parsing.

Excerpts: a score is cut at quarter-note offsets 0, L, 2L, ... into windows of ``L =
excerpt_beats`` quarter notes (default 32: 128 frames at 4 frames per beat, 8 bars of 4/4,
4 bars of Palestrina's 4/2). Only whole windows with at least 8 note onsets are kept; a note
sounding across a window's edge is cut there. Each score gives at most ``per_piece`` windows,
evenly spaced over it. Scores are taken in the order of a hash of their path until a class has
``per_class`` excerpts; every class is then cut to the smallest class's count, so the classes
are balanced by capping (no weighting is needed).

Groups and splits: the ``group`` of an excerpt is its work, so that related scores never
straddle splits: the mass (Palestrina: sections of one mass are separate files), the BWV number
(Bach: the variants of one chorale), the quartet (movements of one quartet), else the file.
Groups are split 70/15/15 per class (:func:`data_prep.splits.group_split`, seeded) and dealt
into 5 folds (``fold`` 1-5, the same way) for cross-validation by work. The output is
byte-identical from run to run for a given music21 version (``polyphony.json`` records it).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .discover import shown
from .fileio import write_atomic
from .folk import corpus_dir
from .midi_file import one_track_midi
from .score_excerpts import excerpts, midi_notes, score_notes
from .workers import cpu_count, pool as worker_pool

COLLECTIONS = {
    "palestrina": ["palestrina/*.krn"],
    "bach": ["bach/bwv*.mxl", "bach/bwv*.xml"],
    "monteverdi": ["monteverdi/madrigal.*.mxl"],
    "trecento": ["trecento/*.xml", "trecento/*.mxl"],
    "quartet": ["haydn/*/*.mxl", *(f"mozart/{k}/*.mxl" for k in ("k80", "k155", "k156", "k458")),
                "beethoven/*.mxl", "beethoven/*/*.mxl"],
}
LEFT_OUT = re.compile(r"^bach/bwv846\.mxl$|_old\.")     # a keyboard prelude; an older copy
DEFAULT_CLASSES = tuple(COLLECTIONS)
DEFAULT_ROOT = Path("~/.cache/audiostem/data/polyphony_midi")
SPLIT_FRACTIONS = {"train": 0.70, "valid": 0.15, "test": 0.15}
N_FOLDS = 5
FORMAT = 1                   # bump when the conversion changes, so old folders are rebuilt
MANIFEST_FIELDS = ("path", "label", "split", "fold", "group", "piece", "source", "start_beat", "n_notes")



@dataclass(frozen=True)
class Piece:
    """One score file of the corpus."""
    label: str
    source: str              # the file, relative to music21's corpus folder
    piece_id: str            # the file name made safe ("opus74no1_movement1"), unique per class
    group: str               # the work it belongs to ("quartet:haydn/opus74no1")


# -- listing pieces ----------------------------------------------------------------------------

def work_of(label: str, source: str, head: str = "") -> str:
    """The work a score belongs to (see the module docstring); ``head`` is the start of the
    file's text (Palestrina's Humdrum header names the mass in ``!!!OPR:``)."""
    path = Path(source)
    if label == "palestrina":
        m = re.search(r"^!!!OPR:\s*(.+?)\s*$", head, re.M)
        if m:
            return f"{label}:{m.group(1)}"
    if label == "bach":
        m = re.match(r"(bwv\d+)", path.stem)
        if m:
            return f"{label}:{m.group(1)}"
    if label == "quartet" and len(path.parts) > 2:        # composer/work/movementN.mxl
        return f"{label}:{path.parent.as_posix()}"
    return f"{label}:{Path(*path.parts[1:]).with_suffix('').as_posix()}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def list_pieces(classes: Sequence[str], collections: Optional[dict] = None) -> dict[str, list[Piece]]:
    """Every score of every class, in hash order (the order they are taken in).

    ``collections`` maps class names to glob patterns under the corpus folder (default
    :data:`COLLECTIONS`). Raises ``ValueError`` for an unknown class or one without files."""
    collections = COLLECTIONS if collections is None else collections
    root = corpus_dir()
    out = {}
    for label in classes:
        if label not in collections:
            raise ValueError(f"unknown polyphony class {label!r}; choose from {', '.join(collections)}")
        files = sorted({p for pattern in collections[label] for p in root.glob(pattern) if p.is_file()})
        pieces, stems = [], set()
        for f in files:
            source = f.relative_to(root).as_posix()
            if LEFT_OUT.search(source) or f.with_suffix("") in stems:   # one score in two formats
                continue
            stems.add(f.with_suffix(""))
            head = f.read_text(encoding="latin-1")[:2000] if f.suffix == ".krn" else ""
            parts = Path(source).with_suffix("").parts      # quartets: composer_work_movement
            name = "_".join(parts if len(parts) > 2 or label == "quartet" else parts[1:])
            pieces.append(Piece(label, source, _safe(name), work_of(label, source, head)))
        if not pieces:
            raise ValueError(f"music21's corpus at {shown(root)} has no files for {label!r} "
                             f"({', '.join(collections[label])}); is music21 fully installed?")
        out[label] = sorted(pieces, key=lambda p: _digest(p.source))
    return out


def _digest(text: str) -> str:
    return hashlib.sha1(f"polyphony:{text}".encode()).hexdigest()


# -- one score to MIDI ----------------------------------------------------------------------------

def _convert(job: tuple[str, Optional[bytes]]) -> tuple[Optional[bytes], str]:
    """``(source, cached MIDI or None)`` -> ``(MIDI of the whole score, "")`` or ``(None, reason)``."""
    source, cached = job
    if cached is not None:
        return cached, ""
    try:
        notes = score_notes(corpus_dir() / source)
    except Exception as e:                  # music21 raises many kinds on odd files
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if not notes:
        return None, "no notes"
    return one_track_midi(notes, "voices"), ""


# -- the dataset -------------------------------------------------------------------------------

def _request(per_class: int, per_piece: int, excerpt_beats: int, classes: Sequence[str],
             collections: Optional[dict]) -> dict:
    import music21

    request = {"format": FORMAT, "per_class": per_class, "per_piece": per_piece,
               "excerpt_beats": excerpt_beats, "classes": list(classes), "music21": music21.__version__}
    if collections is not None:
        request["collections"] = {k: list(v) for k, v in collections.items() if k in classes}
    return request


def build_polyphony(root: os.PathLike | str = DEFAULT_ROOT, per_class: int = 500, per_piece: int = 12,
                    excerpt_beats: int = 32, classes: Sequence[str] = DEFAULT_CLASSES, *,
                    collections: Optional[dict] = None, workers: Optional[int] = None,
                    force: bool = False, progress: bool = True) -> Path:
    """Build the polyphony MIDI dataset in ``root`` (see the module docstring); return ``root``.

    Args:
        root: the output folder.
        per_class: excerpts per class at most; every class is cut to the smallest class's count.
        per_piece: excerpts per score at most, evenly spaced over it.
        excerpt_beats: excerpt length in quarter notes (frames = beats x ``beat_resolution``).
        classes: class names from ``collections``.
        collections: class -> glob patterns under music21's corpus folder (default
            :data:`COLLECTIONS`; tests give a few files).
        workers: parsing processes (default: the usable cores). The output does not depend on it.
        force: rebuild even if ``root`` holds this very build.

    A folder already built with the same settings and music21 version is left as it is; one
    built with other settings is rebuilt (reusing its converted scores in ``pieces/``); any other
    non-empty folder is refused (``ValueError``), never deleted. Published atomically (built in
    ``ROOT.partial``, then renamed). Raises ``ValueError`` for bad settings, or when a class has
    no usable excerpt.
    """
    root = Path(root).expanduser()
    classes = list(dict.fromkeys(classes))
    if per_class < 1 or per_piece < 1 or excerpt_beats < 1 or len(classes) < 2:
        raise ValueError(f"need per_class, per_piece and excerpt_beats >= 1 and at least two classes, "
                         f"got {per_class}, {per_piece}, {excerpt_beats} and {classes}")
    request = _request(per_class, per_piece, excerpt_beats, classes, collections)
    marker = root / "polyphony.json"
    built: dict = {}
    if marker.exists():
        built = _read_json(marker)
        if built.get("request") == request and (root / "manifest.csv").exists() and not force:
            return root
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{shown(root)} is not empty and holds no polyphony dataset (no polyphony.json); "
                         f"choose an empty or new folder for the polyphony dataset")
    candidates = list_pieces(classes, collections)
    # converted scores are kept in ROOT.partial/pieces as they come (an interrupted build resumes
    # from them), and read from ROOT/pieces of an earlier build, for the same music21 and FORMAT
    version = {"format": FORMAT, "music21": request["music21"]}
    old = built.get("request", {})
    partial = root.with_name(root.name + ".partial")
    if partial.exists() and _read_json(partial / "pieces.json") != version:
        shutil.rmtree(partial)
    (partial / "pieces").mkdir(parents=True, exist_ok=True)
    (partial / "pieces.json").write_text(json.dumps(version, sort_keys=True) + "\n", encoding="utf-8")
    stores = [partial / "pieces"] + ([root / "pieces"] if {k: old.get(k) for k in version} == version else [])
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    started = time.perf_counter()
    say(f"building the polyphony MIDI dataset in {shown(root)} from music21's corpus "
        f"(up to {per_class} excerpts of {excerpt_beats} beats x {len(classes)} classes) ...")
    pieces, rows, report = _select_and_convert(candidates, per_class, per_piece, excerpt_beats, workers,
                                               stores, say)
    kept = {partial / "pieces.json"} | {partial / "pieces" / p.label / f"{p.piece_id}.mid" for p, _ in pieces}
    for path in sorted(partial.rglob("*"), reverse=True):      # only what this build uses is published
        if path.is_file() and path not in kept:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for label in classes:
        (partial / label).mkdir(parents=True, exist_ok=True)
    for row in rows:
        (partial / row["path"]).write_bytes(row.pop("midi"))
    from .splits import group_split

    keys, labels, groups = [r["path"] for r in rows], [r["label"] for r in rows], [r["group"] for r in rows]
    splits = group_split(keys, labels, groups, SPLIT_FRACTIONS, seed=0)
    folds = group_split(keys, labels, groups, {str(k): 1.0 for k in range(1, N_FOLDS + 1)}, seed=1)
    for row, split, fold in zip(rows, splits, folds):
        row["split"], row["fold"] = split, int(fold)
    rows.sort(key=lambda r: r["path"])
    text = io.StringIO()
    writer = csv.DictWriter(text, MANIFEST_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (partial / "manifest.csv").write_bytes(text.getvalue().encode("utf-8"))
    for label in classes:
        report[label]["groups"] = len({r["group"] for r in rows if r["label"] == label})
        report[label]["splits"] = {s: sum(1 for r in rows if r["label"] == label and r["split"] == s)
                                   for s in SPLIT_FRACTIONS}
    (partial / "polyphony.json").write_text(json.dumps({"request": request, "built": report}, indent=1,
                                                       sort_keys=True) + "\n", encoding="utf-8")
    (partial / "pieces.json").unlink()
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, root)
    counts = {label: report[label]["excerpts"] for label in classes}
    scores = {label: report[label]["pieces"] for label in classes}
    say(f"built {shown(root)}: excerpts {counts}, from scores {scores} "
        f"(see polyphony.json), {time.perf_counter() - started:.1f} s")
    return root


def _select_and_convert(pieces: dict[str, list[Piece]], per_class: int, per_piece: int, beats: int,
                        workers: Optional[int], stores: list[Path], say
                        ) -> tuple[list[tuple[Piece, bytes]], list[dict], dict]:
    """Convert scores class by class in hash order, in rounds, until each class has ``per_class``
    excerpts (or runs out), then cut every class to the smallest count. Which scores are taken
    is decided in a fixed order, so the result does not depend on ``workers``. A score's MIDI is
    read from the first of ``stores`` that has it, else converted; either way it is saved in
    ``stores[0]`` at once."""
    import music21  # noqa: F401  (imported once here, inherited by forked workers)

    report = {label: {"candidates": len(ps), "pieces": 0, "excerpts": 0, "failed": 0, "too_short": 0,
                      "reasons": {}} for label, ps in pieces.items()}
    taken: dict[str, list[dict]] = {label: [] for label in pieces}
    converted: dict[str, list[tuple[Piece, bytes]]] = {label: [] for label in pieces}
    position = {label: 0 for label in pieces}
    n_workers = max(1, workers or cpu_count())
    pool = worker_pool(n_workers) if n_workers > 1 else None
    try:
        while True:
            # a class that ran out caps the others (every class is cut to the smallest count)
            target = min([per_class] + [len(taken[label]) for label, ps in pieces.items()
                                        if position[label] >= len(ps)])
            batch = []
            for label, ps in pieces.items():
                need = target - len(taken[label])
                if need > 0 and position[label] < len(ps):
                    done = report[label]["pieces"] + report[label]["too_short"] + report[label]["failed"]
                    rate = len(taken[label]) / done if done and taken[label] else per_piece
                    n = max(n_workers, int(need / rate) + 2)          # a few spare for short scores
                    batch += ps[position[label]:position[label] + n]
                    position[label] += n
            if not batch:
                break
            jobs = [(p.source, _cached(stores, p)) for p in batch]
            results = pool.imap(_convert, jobs, chunksize=1) if pool else map(_convert, jobs)
            for piece, (data, reason) in zip(batch, results):
                rep = report[piece.label]
                saved = stores[0] / piece.label / f"{piece.piece_id}.mid"
                if data is not None and not saved.exists():
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(saved, data)
                if len(taken[piece.label]) >= target:
                    continue
                if data is None:
                    rep["failed"] += 1
                    key = reason.split(":")[0]
                    rep["reasons"][key] = rep["reasons"].get(key, 0) + 1
                    continue
                windows = excerpts(midi_notes(data), beats, per_piece)
                if not windows:
                    rep["too_short"] += 1
                    continue
                converted[piece.label].append((piece, data))
                rep["pieces"] += 1
                for start, notes in windows[:target - len(taken[piece.label])]:
                    taken[piece.label].append({
                        "path": f"{piece.label}/{piece.piece_id}_b{start:04d}.mid", "label": piece.label,
                        "group": piece.group, "piece": piece.piece_id, "source": piece.source,
                        "start_beat": start, "n_notes": len(notes), "midi": one_track_midi(notes, "voices")})
            done = {label: len(rows) for label, rows in taken.items()}
            say(f"  excerpts so far: {done}")
    finally:
        if pool:
            pool.close()
            pool.join()
    empty = [label for label, rows in taken.items() if not rows]
    if empty:
        raise ValueError(f"no usable excerpt of {beats} beats for {empty} (see the reasons: "
                         f"{ {label: report[label]['reasons'] for label in empty} })")
    n = min(len(rows) for rows in taken.values())
    rows, kept_pieces = [], []
    for label in pieces:
        kept = taken[label][:n]
        used = {r["piece"] for r in kept}
        rows += kept
        kept_pieces += [(p, d) for p, d in converted[label] if p.piece_id in used]
        report[label].update(excerpts=len(kept), pieces=len(used), available=len(taken[label]))
    return kept_pieces, rows, report


def _cached(stores: list[Path], piece: Piece) -> Optional[bytes]:
    for store in stores:
        path = store / piece.label / f"{piece.piece_id}.mid"
        if path.is_file():
            return path.read_bytes()
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_prep.polyphony [--root ROOT] [--per-class N] [--per-piece N]
    [--excerpt-beats B] [--classes a,b,...]``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.polyphony",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"output folder (default {DEFAULT_ROOT})")
    parser.add_argument("--per-class", type=int, default=500, help="excerpts per class at most (default 500)")
    parser.add_argument("--per-piece", type=int, default=12, help="excerpts per score at most (default 12)")
    parser.add_argument("--excerpt-beats", type=int, default=32, help="excerpt length in quarter notes (default 32)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                        help=f"comma-separated, from {', '.join(COLLECTIONS)}")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        build_polyphony(args.root, args.per_class, args.per_piece, args.excerpt_beats,
                        [c.strip() for c in args.classes.split(",") if c.strip()],
                        workers=args.workers, force=args.force)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
