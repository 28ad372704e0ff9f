"""The built-in ``folk`` dataset: real folk melodies from the corpus inside the music21 package.

Nothing is downloaded: ``music21`` ships ABC transcriptions of the Essen Folksong Collection,
O'Neill's *Music of Ireland* (1850), Aird's *Airs* (1782-1803) and Ryan's *Mammoth Collection*
(1883). :func:`build_folk` turns them into a folder of MIDI files labelled by collection::

    ROOT/chinese/han1_X12.mid ...      one folder per class, one file per tune
    ROOT/manifest.csv                  path,label,split,tune_id,group,source,title,meter,key,
                                       n_notes,beats
    ROOT/folk.json                     what was asked for and what was built (counts, skips)

How a tune becomes MIDI: music21's ABC tokenizer reads the tune (pitches with key signature and
accidentals, lengths with broken rhythms and tuplets, ties, chords); we lay the notes out in
time ourselves -- repeats and first/second endings expanded, tied notes merged, grace notes and
chord symbols left out -- and write a one-track file at a fixed 120 quarter notes per minute,
velocity 80, program 0 (any tempo or dynamics marking would tell the collections apart). This
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
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence
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
TICKS_PER_QUARTER = 480
TEMPO_QPM = 120.0
VELOCITY = 80
MIN_NOTES, MIN_BEATS = 8, 6.0
FORMAT = 1                   # bump when the conversion changes, so old folders are rebuilt
MANIFEST_FIELDS = ("path", "label", "split", "tune_id", "group", "source", "title", "meter", "key",
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

_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")


def split_tunes(text: str, source: str, label: str) -> list[Tune]:
    """The tunes of one ABC file (each starts at an ``X:`` line)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if re.match(r"^X:\s*\d+", line)]
    if not starts:
        return []
    header = [line for line in lines[:starts[0]] if _FIELD.match(line) and line[0] not in "XT"]
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
            m = _FIELD.match(line)
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
            raise ValueError(f"music21's corpus at {root} has no files for {label!r} "
                             f"({', '.join(COLLECTIONS[label])}); is music21 fully installed?")
        tunes = [t for f in files for t in split_tunes(f.read_text(encoding="latin-1"),
                                                        f.relative_to(root).as_posix(), label)]
        out[label] = sorted(tunes, key=lambda t: _digest(t.tune_id))
    return out


def _digest(text: str) -> str:
    return hashlib.sha1(f"folk:{text}".encode()).hexdigest()


def letter_key(abc: str) -> str:
    """The tune's note letters in order (text only): equal for copies of one transcription."""
    body = [line for line in abc.split("\n") if line and not _FIELD.match(line) and line[0] != "%"]
    text = re.sub(r'"[^"]*"|![^!]*!|%.*', "", "\n".join(body))
    return _digest(re.sub(r"[^A-Ga-g]", "", text))


# -- one tune to MIDI ------------------------------------------------------------------------

def _midi_pitch(name: str) -> int:
    m = re.fullmatch(r"([A-G])([#-]*)(\d+)", name)
    if not m:
        from music21 import pitch

        return int(round(pitch.Pitch(name).ps))
    step = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[m.group(1)]
    return 12 * (int(m.group(3)) + 1) + step + m.group(2).count("#") - m.group(2).count("-")


def tune_events(abc: str) -> list:
    """The tune as a flat list: ``(pitches, ticks, tie)`` for notes, chords and rests
    (pitches ``()``), and the strings ``start``, ``end``, ``first``, ``second`` for repeat
    marks, in written order. Uses music21's ABC tokenizer; only the first voice is kept."""
    from music21 import abcFormat

    if not re.search(r"^[LM]:", abc, re.M):             # ABC's default unit without a meter
        abc = re.sub(r"^(X:.*)$", r"\1\nL:1/8", abc, count=1, flags=re.M)
    handler = abcFormat.ABCHandler()
    handler.process(abc)
    events: list = []
    first_voice, skipping = None, False
    for token in handler.tokens:
        # a voice starts at "V:1" on its own line, or inline as "[V:1]" (which the tokenizer
        # reads as an empty chord)
        m = re.match(r"^\[?V:\s*([^\]\s]*)", token.src.strip())
        if m and isinstance(token, (abcFormat.ABCMetadata, abcFormat.ABCChord)):
            first_voice = m.group(1) if first_voice is None else first_voice
            skipping = m.group(1) != first_voice
        elif isinstance(token, abcFormat.ABCMetadata):
            continue
        elif skipping:
            continue
        elif isinstance(token, abcFormat.ABCBar):
            if token.barType == "repeat" and token.repeatForm in ("start", "end"):
                events.append(token.repeatForm)
            elif token.repeatForm in ("first", "second"):
                events.append(token.repeatForm)
        elif isinstance(token, abcFormat.ABCNote) and not token.inGrace:
            length = Fraction(token.quarterLength) * TICKS_PER_QUARTER
            if token.activeTuplet is not None:
                length *= Fraction(token.activeTuplet.tupletMultiplier())
            length = round(length)                     # 480 ticks: halves, thirds, fifths exact
            if isinstance(token, abcFormat.ABCChord):
                pitches = tuple(_midi_pitch(t.pitchName) for t in token.subTokens
                                if isinstance(t, abcFormat.ABCNote) and t.pitchName)
                if not pitches:
                    continue            # an inline field such as [K:G]: no note, no time
            else:
                pitches = () if token.isRest else (_midi_pitch(token.pitchName),)
            events.append((pitches, length, token.tie))
    return events


def expand_repeats(events: list) -> list:
    """Play repeats as a musician would: ``|: A :|`` twice, ``|: A |1 B :|2 C`` as A B A C,
    ``:|`` without ``|:`` from the beginning (or the previous repeat's end)."""
    out: list = []
    section, first_ending = 0, None
    for e in events:
        if e == "start":
            section, first_ending = len(out), None
        elif e == "first":
            first_ending = len(out)
        elif e == "second":
            pass
        elif e == "end":
            out.extend(out[section:first_ending if first_ending is not None else len(out)])
            section, first_ending = len(out), None
        else:
            out.append(e)
    return out


def tune_notes(abc: str) -> tuple[list[tuple[int, int, int]], int]:
    """``[(start tick, duration ticks, pitch)]`` of the tune and its length in ticks."""
    notes: list[list[int]] = []
    tied: dict[int, int] = {}            # pitch -> index of the note a tie continues
    now = 0
    for pitches, length, tie in expand_repeats(tune_events(abc)):
        start, end = now, now + length
        now = end
        next_tied = {}
        for p in pitches:
            if not 0 <= p <= 127 or end <= start:
                continue
            if tie in ("stop", "continue") and p in tied:
                i = tied[p]
                notes[i][1] = end - notes[i][0]               # a tie lengthens the held note
            else:
                i = len(notes)
                notes.append([start, end - start, p])
            if tie in ("start", "continue"):
                next_tied[p] = i
        tied = next_tied
    return [tuple(n) for n in notes], now


def midi_bytes(notes: list[tuple[int, int, int]], meter: str = "") -> bytes:
    """A one-track MIDI file of the notes at the fixed tempo, velocity and program."""
    import symusic

    score = symusic.Score(TICKS_PER_QUARTER)
    score.tempos.append(symusic.Tempo(time=0, qpm=TEMPO_QPM))
    m = re.match(r"^\s*(\d+)\s*/\s*(\d+)", meter or "")
    if m and int(m.group(1)) > 0 and int(m.group(2)) in (1, 2, 4, 8, 16, 32):
        score.time_signatures.append(symusic.TimeSignature(time=0, numerator=int(m.group(1)),
                                                           denominator=int(m.group(2))))
    track = symusic.Track(name="melody", program=0, is_drum=False)
    for start, duration, pitch in notes:
        track.notes.append(symusic.Note(time=start, duration=duration, pitch=pitch, velocity=VELOCITY))
    score.tracks.append(track)
    return score.dumps_midi()


def convert_tune(abc: str, meter: str = "") -> tuple[Optional[bytes], dict]:
    """ABC text of one tune -> ``(MIDI bytes, info)``, or ``(None, {"reason": ...})``."""
    try:
        notes, length = tune_notes(abc)
    except Exception as e:                  # music21 raises many kinds on odd transcriptions
        return None, {"reason": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
    beats = length / TICKS_PER_QUARTER
    if len(notes) < MIN_NOTES or beats < MIN_BEATS:
        return None, {"reason": f"too short ({len(notes)} notes, {beats:g} beats)"}
    intervals = [b[2] - a[2] for a, b in zip(notes, notes[1:])]
    shape = ",".join(f"{i}:{n[1]}" for i, n in zip(intervals, notes[1:]))
    return midi_bytes(notes, meter), {"n_notes": len(notes), "beats": round(beats, 3),
                                      "melody_key": _digest(shape)}


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
        raise ValueError(f"{root} is not empty and holds no folk dataset (no folk.json); "
                         f"choose an empty or new folder for the folk dataset")
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    started = time.perf_counter()
    say(f"building the folk MIDI dataset in {root} from music21's corpus "
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
    writer = csv.DictWriter(text, MANIFEST_FIELDS, lineterminator="\n", extrasaction="ignore")
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
    say(f"built {root}: {counts}, {skipped} tunes skipped (see folk.json), "
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
