"""The built-in ``folk`` dataset: real folk melodies from the corpus inside the music21 package.

Nothing is downloaded: ``music21`` ships ABC transcriptions of the Essen Folksong Collection,
O'Neill's *Music of Ireland* (1850), Aird's *Airs* (1782-1803) and Ryan's *Mammoth Collection*
(1883). :func:`build_folk` turns them into a folder of MIDI files labelled by collection::

    ROOT/chinese/han1_X12.mid ...      one folder per class, one file per tune
    ROOT/manifest.csv                  path,label,split,tune_id,group,source,title,meter,key,
                                       n_notes,beats
    ROOT/folk.json                     what was asked for and what was built (counts, skips)

How a tune becomes MIDI (:mod:`data_prep.abc_midi`): music21's ABC tokenizer reads the tune
(pitches with key signature and accidentals, lengths with broken rhythms and tuplets, ties,
chords); we lay the notes out in time ourselves -- repeats and first/second endings expanded,
tied notes merged, grace notes and chord symbols left out -- and write a one-track file at a
fixed 120 quarter notes per minute, velocity 80, program 0 (any tempo or dynamics marking would
tell the collections apart). This
skips music21's stream building and MIDI export, which is slow and fails on some tunes
(a ``TimeSignature`` shared by two measures raises ``StreamException``); any tune that still
fails is skipped and counted, as are tunes shorter than 8 notes or 6 beats.

Selection and splits: tunes are taken in the order of a hash of their id, skipping repeats
(the same note-letter sequence, or the same melody transposed, already taken for this or an
earlier class), until ``per_class`` per class. Tunes are split 70/15/15 per class
(:func:`data_prep.sources.group_split`, seeded) with tunes of the same title kept in one split,
so variants of one song never straddle train and test. The output is byte-identical from run
to run for a given music21 version (``folk.json`` records it).
"""
from __future__ import annotations

import argparse
import csv
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
from .abc_midi import FIELD, convert_tune, digest, letter_key
from .discover import shown
from .workers import cpu_count, pool as worker_pool

COLLECTIONS = {
    "chinese": ["essenFolksong/han1.abc", "essenFolksong/han2.abc"],
    "german": [f"essenFolksong/{n}.abc" for n in ("erk10", "erk20", "erk30", "boehme10", "boehme20",
                                                   "fink0", "altdeu10", "altdeu20", "kinder0",
                                                   "zuccal0", "dva0")],
    "irish": ["oneills1850/*.abc"],
    "scottish": ["airdsAirs/*.abc"],
    "american": ["ryansMammoth/*.abc"],
    "luxembourg": ["essenFolksong/lux.abc"],
    "lorraine": ["essenFolksong/lot.abc"],
}
DEFAULT_CLASSES = ("chinese", "german", "irish", "scottish", "american")
DEFAULT_ROOT = Path("~/.cache/audiostem/data/folk_midi")
SPLIT_FRACTIONS = {"train": 0.70, "valid": 0.15, "test": 0.15}
FORMAT = 1                   # bump when the conversion changes, so old folders are rebuilt
MANIFESTFIELDS = ("path", "label", "split", "tune_id", "group", "source", "title", "meter", "key",
                   "n_notes", "beats")


@dataclass(frozen=True)
class Tune:
    """One tune of the corpus, as ABC text."""
    label: str
    tune_id: str             # "<file stem>_X<number>", unique in the corpus
    source: str              # the ABC file, relative to music21's corpus folder
    abc: str                 # the tune's own lines, with the file's header fields before them
    fields: dict             # first value of each header field (T, M, K, ...)


def corpus_dir() -> Path:
    """The ``corpus`` folder of the installed music21 package."""
    import music21

    return Path(music21.__file__).parent / "corpus"


# -- listing tunes ---------------------------------------------------------------------------

def split_tunes(text: str, source: str, label: str) -> list[Tune]:
    """The tunes of one ABC file (each starts at an ``X:`` line)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if re.match(r"^X:\s*\d+", line)]
    if not starts:
        return []
    header = [line for line in lines[:starts[0]] if FIELD.match(line) and line[0] not in "XT"]
    stem, seen, tunes = Path(source).stem, set(), []
    for k, i in enumerate(starts):
        block = lines[i:starts[k + 1] if k + 1 < len(starts) else len(lines)]
        number = re.match(r"^X:\s*(\d+)", block[0]).group(1)
        tune_id, n = f"{stem}_X{number}", 2
        while tune_id in seen:                                 # a number used twice in one file
            tune_id, n = f"{stem}_X{number}_{n}", n + 1
        seen.add(tune_id)
        fields: dict = {}
        for line in block:
            m = FIELD.match(line)
            if m and m.group(1) not in fields:
                fields[m.group(1)] = m.group(2).strip()
        # melody only: no tempo (Q:) and no abc2midi directives (%%MIDI ...)
        body = [line for line in block[1:] if not line.startswith(("Q:", "%%"))]
        tunes.append(Tune(label, tune_id, source, "\n".join([block[0], *header, *body]) + "\n", fields))
    return tunes


def list_tunes(classes: Sequence[str]) -> dict[str, list[Tune]]:
    """Every tune of every class, in hash order (the order they are taken in)."""
    root = corpus_dir()
    out = {}
    for label in classes:
        if label not in COLLECTIONS:
            raise ValueError(f"unknown folk class {label!r}; choose from {', '.join(COLLECTIONS)}")
        files = sorted(p for pattern in COLLECTIONS[label] for p in root.glob(pattern))
        if not files:
            raise ValueError(f"music21's corpus at {shown(root)} has no files for {label!r} "
                             f"({', '.join(COLLECTIONS[label])}); is music21 fully installed?")
        tunes = [t for f in files for t in split_tunes(f.read_text(encoding="latin-1"),
                                                        f.relative_to(root).as_posix(), label)]
        out[label] = sorted(tunes, key=lambda t: digest(t.tune_id))
    return out


def _convert(tune: Tune) -> tuple[Optional[bytes], dict]:
    return convert_tune(tune.abc, tune.fields.get("M", ""))


# -- the dataset -------------------------------------------------------------------------------

def _request(per_class: int, classes: Sequence[str]) -> dict:
    import music21

    return {"format": FORMAT, "per_class": per_class, "classes": list(classes),
            "music21": music21.__version__}


def _title_group(label: str, title: str, tune_id: str) -> str:
    key = re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()
    return f"{label}:{key}" if key else f"{label}:{tune_id}"


def build_folk(root: os.PathLike | str = DEFAULT_ROOT, per_class: int = 300,
               classes: Sequence[str] = DEFAULT_CLASSES, *, workers: Optional[int] = None,
               force: bool = False, progress: bool = True) -> Path:
    """Build the folk MIDI dataset in ``root`` (see the module docstring); return ``root``.

    A folder already built with the same ``per_class``, ``classes`` and music21 version is
    left as it is. A folder built with other settings is rebuilt; any other non-empty folder is
    refused (``ValueError``), never deleted. The work runs in ``workers`` processes (default:
    the usable cores) and is published atomically (built in ``ROOT.partial``, then swapped in).
    One build at a time: a second one, in any process, is refused (``ValueError`` naming the
    holder) while ``ROOT.lock`` is held.
    """
    root = Path(root).expanduser()
    classes = list(dict.fromkeys(classes))
    if per_class < 1 or len(classes) < 2:
        raise ValueError(f"need per_class >= 1 and at least two classes, got {per_class} and {classes}")
    request = _request(per_class, classes)
    if not force and _built(root, request):
        return root
    from .cache_files import CacheBusyError, CacheLock

    lock = CacheLock(root, busy="being built by {holder} (lock {lock}); one build at a time: wait for "
                                "it to finish, or stop it and run this command again")   # ROOT.lock
    try:
        lock.acquire()
    except CacheBusyError as e:
        raise ValueError(str(e)) from None
    try:
        if not force and _built(root, request):     # built by the process we waited for
            return root
        return _build_locked(root, request, per_class, classes, workers, progress)
    finally:
        lock.release()


def _built(root: Path, request: dict) -> bool:
    """Whether ``root`` holds a folk dataset built for ``request``."""
    try:
        built = json.loads((root / "folk.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(built, dict) and built.get("request") == request and (root / "manifest.csv").exists()


def _build_locked(root: Path, request: dict, per_class: int, classes: list[str], workers: Optional[int],
                  progress: bool) -> Path:
    marker = root / "folk.json"
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise ValueError(f"{shown(root)} is not empty and holds no folk dataset (no folk.json); "
                         f"choose an empty or new folder for the folk dataset")
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    started = time.perf_counter()
    say(f"building the folk MIDI dataset in {shown(root)} from music21's corpus "
        f"({per_class} tunes x {len(classes)} classes) ...")
    rows, report = _select_and_convert(list_tunes(classes), per_class, workers)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    for label in classes:
        (partial / label).mkdir(parents=True)
    for row in rows:
        (partial / row["path"]).write_bytes(row.pop("midi"))
    from .splits import group_split

    splits = group_split([r["tune_id"] for r in rows], [r["label"] for r in rows],
                         [r["group"] for r in rows], SPLIT_FRACTIONS, seed=0)
    for row, split in zip(rows, splits):
        row["split"] = split
    rows.sort(key=lambda r: r["path"])
    text = io.StringIO()
    writer = csv.DictWriter(text, MANIFESTFIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (partial / "manifest.csv").write_bytes(text.getvalue().encode("utf-8"))
    (partial / "folk.json").write_text(json.dumps({"request": request, "built": report}, indent=1,
                                                  sort_keys=True) + "\n", encoding="utf-8")
    from .cache_files import swap_in

    root.parent.mkdir(parents=True, exist_ok=True)
    swap_in(partial, root, root.with_name(root.name + ".old"))   # readers never see it half replaced
    counts = {label: report[label]["written"] for label in classes}
    skipped = sum(report[label]["failed"] for label in classes)
    say(f"built {shown(root)}: {counts}, {skipped} tunes skipped (see folk.json), "
        f"{time.perf_counter() - started:.1f} s")
    return root


def _select_and_convert(tunes: dict[str, list[Tune]], per_class: int,
                        workers: Optional[int]) -> tuple[list[dict], dict]:
    """Convert tunes class by class in hash order, in rounds, until each class has
    ``per_class`` (or runs out); repeats are skipped. Conversions run in parallel; which tunes
    are taken is decided in a fixed order, so the result does not depend on ``workers``."""
    from music21 import abcFormat  # noqa: F401  (imported once here, inherited by forked workers)

    seen_letters: set = set()
    seen_melodies: set = set()
    taken: dict[str, list[dict]] = {label: [] for label in tunes}
    report = {label: {"candidates": len(ts), "written": 0, "failed": 0, "repeats": 0,
                      "reasons": {}} for label, ts in tunes.items()}
    position = {label: 0 for label in tunes}
    # text repeats are dropped before converting anything
    unique: dict[str, list[Tune]] = {}
    for label, ts in tunes.items():
        unique[label] = []
        for t in ts:
            key = letter_key(t.abc)
            if key in seen_letters:
                report[label]["repeats"] += 1
                continue
            seen_letters.add(key)
            unique[label].append(t)
    n_workers = max(1, workers or cpu_count())
    pool = worker_pool(n_workers) if n_workers > 1 else None
    try:
        while True:
            batch = []
            for label, ts in unique.items():
                need = per_class - len(taken[label])
                if need > 0 and position[label] < len(ts):
                    n = need + need // 4 + 8           # a few spare for skips and repeats
                    batch += ts[position[label]:position[label] + n]
                    position[label] += n
            if not batch:
                break
            results = (pool.map(_convert, batch, chunksize=8) if pool
                       else [_convert(t) for t in batch])
            for tune, (data, info) in zip(batch, results):
                rep = report[tune.label]
                if len(taken[tune.label]) >= per_class:
                    continue
                if data is None:
                    rep["failed"] += 1
                    reason = info["reason"].split(":")[0] if ":" in info["reason"] else info["reason"]
                    reason = "too short" if reason.startswith("too short") else reason
                    rep["reasons"][reason] = rep["reasons"].get(reason, 0) + 1
                    continue
                if info["melody_key"] in seen_melodies:
                    rep["repeats"] += 1
                    continue
                seen_melodies.add(info["melody_key"])
                f = tune.fields
                taken[tune.label].append({
                    "path": f"{tune.label}/{tune.tune_id}.mid", "label": tune.label,
                    "tune_id": tune.tune_id, "group": _title_group(tune.label, f.get("T", ""), tune.tune_id),
                    "source": tune.source, "title": f.get("T", ""), "meter": f.get("M", ""),
                    "key": f.get("K", ""), "n_notes": info["n_notes"], "beats": info["beats"],
                    "midi": data})
                rep["written"] += 1
    finally:
        if pool:
            pool.close()
            pool.join()
    short = {label: len(rows) for label, rows in taken.items() if len(rows) < per_class}
    if short:
        raise ValueError(f"the corpus has too few usable tunes for per_class={per_class}: {short}")
    return [row for label in tunes for row in taken[label]], report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_prep.folk [--root ROOT] [--per-class N] [--classes a,b,...]``."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.folk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"output folder (default {DEFAULT_ROOT})")
    parser.add_argument("--per-class", type=int, default=300, help="tunes per class (default 300)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                        help=f"comma-separated, from {', '.join(COLLECTIONS)}")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        build_folk(args.root, args.per_class, args.classes.split(","), workers=args.workers, force=args.force)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
