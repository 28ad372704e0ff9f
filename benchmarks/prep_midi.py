"""Piano-roll preparation against pretty_midi, on the same files, in one run.

    python benchmarks/prep_midi.py [--files 120] [--workers 2] [--rounds 2] [--dir DIR]

Makes ``--files`` multi-track MIDI files of 3-5 minutes (8 instruments, drums, sustain pedal,
pitch-bend bursts, overlapping notes; about 9,000 notes each) unless ``--dir`` already holds
them, then times, interleaved over ``--rounds`` rounds (baseline, ours, ours, baseline ...):

- baseline: ``pretty_midi.PrettyMIDI(path).get_piano_roll(fs=100)``, one file at a time;
- ours: ``data_prep.prepare("folder", ...)`` with ``{"kind": "pianoroll", "fs": 100}``, end to end:
  listing, reading (symusic), rolls, float16, writing the cache (fsync'd shards), train stats;
- ours, rolls only: :func:`data_prep.piano_roll` in ``--workers`` processes, nothing written;
- ours end to end with the Lakh source's config (4 frames per beat: a 25x smaller cache), for
  scale -- not the same output as the baseline.

It prints files/s, minutes of music per second, and the ratio to the baseline, and checks on
``--verify`` files that the ``pretty_midi_compat`` mode gives pretty_midi's roll exactly, both
from :func:`data_prep.piano_roll` and read back from a cache (float16 of the same values).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_song(path: Path, seed: int) -> int:
    """A 3-5 minute song: 7 pitched instruments and drums; returns its number of notes."""
    import pretty_midi

    rng = np.random.default_rng(seed)
    seconds = float(rng.uniform(180, 300))
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(rng.uniform(80, 160)))
    n = 0
    for k in range(8):
        drums = k == 7
        inst = pretty_midi.Instrument(program=int(rng.integers(0, 120)), is_drum=drums)
        rate, t = float(rng.uniform(2, 7)), 0.0
        low = int(rng.integers(28, 72))
        while t < seconds:
            t += float(rng.exponential(1 / rate))
            for _ in range(1 if drums or rng.random() < 0.7 else int(rng.integers(2, 4))):
                pitch = int(rng.choice([35, 36, 38, 42, 46, 49])) if drums else low + int(rng.integers(0, 24))
                end = t + (0.05 if drums else float(rng.exponential(0.35)) + 0.02)
                inst.notes.append(pretty_midi.Note(int(rng.integers(40, 120)), pitch, t, end))
        if k == 0:                                           # a piano with sustain pedal
            inst.program = 0
            for t in np.arange(0, seconds, float(rng.uniform(2, 4))):
                inst.control_changes += [pretty_midi.ControlChange(64, 127, float(t)),
                                         pretty_midi.ControlChange(64, 0, float(t) + 1.5)]
        if k == 1:                                           # a guitar with bend bursts
            for t in np.arange(5, seconds, 20.0):
                for j, b in enumerate((0, 1024, 2048, 4096, 2048, 0)):
                    inst.pitch_bends.append(pretty_midi.PitchBend(b, float(t) + 0.05 * j))
        n += len(inst.notes)
        pm.instruments.append(inst)
    pm.write(str(path))
    return n


def ensure_files(folder: Path, count: int) -> list[Path]:
    """``count`` songs in ``folder/songs/`` (made once, reused by later runs)."""
    target = folder / "songs"
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / f"song{i:04d}.mid" for i in range(count)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"making {len(missing)} MIDI files in {target} ...", flush=True)
        with multiprocessing.get_context("fork").Pool() as pool:
            pool.starmap(make_song, [(p, int(p.stem[4:])) for p in missing])
    return paths


def baseline(paths: list[Path]) -> float:
    import pretty_midi

    start = time.perf_counter()
    for path in paths:
        pretty_midi.PrettyMIDI(str(path)).get_piano_roll(fs=100)
    return time.perf_counter() - start


SAME = {"kind": "pianoroll", "fs": 100.0}
BEATS = {"kind": "pianoroll", "beat_resolution": 4}


def ours(root: Path, out: Path, workers: int, features: dict = SAME) -> float:
    from data_prep import prepare

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    prepare("folder", root, out, features, workers=workers, progress=False)
    return time.perf_counter() - start


def _roll_frames(path: str) -> int:
    from data_prep import piano_roll

    return len(piano_roll(path, fs=100))


def rolls_only(paths: list[Path], workers: int) -> float:
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_roll_frames, [str(p) for p in paths], chunksize=4)
    return time.perf_counter() - start


def verify(paths: list[Path], work: Path) -> int:
    """Compat rolls equal pretty_midi's, directly and through a cache; returns files checked."""
    import pretty_midi

    from data_prep import open_cache, piano_roll, prepare

    root = work / "verify"
    (root / "songs").mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, root / "songs" / p.name)
    cache = prepare("folder", root, work / "verify_cache", {"kind": "pianoroll", "fs": 100.0,
                                                           "pretty_midi_compat": True},
                    workers=2, progress=False, force=True)
    by_source = {item["source"]: i for i, item in enumerate(cache.items)}
    for p in paths:
        expected = pretty_midi.PrettyMIDI(str(p)).get_piano_roll(fs=100).T
        got = piano_roll(p, fs=100, pretty_midi_compat=True)
        if got.dtype != expected.dtype or not np.array_equal(got, expected):
            raise SystemExit(f"compat roll differs from pretty_midi for {p}")
        stored = np.asarray(open_cache(cache.path).features(by_source[f"songs/{p.name}"]))
        if not np.array_equal(stored, expected.astype(np.float16)):
            raise SystemExit(f"cached compat roll differs from pretty_midi's (as float16) for {p}")
    return len(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--verify", type=int, default=12, help="files checked in compat mode")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "audiostem_bench_midi")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pretty_midi
    import symusic

    paths = ensure_files(args.dir, args.files)
    root = args.dir
    scores = [symusic.Score(str(p)) for p in paths]
    notes = sum(s.note_num() for s in scores)
    minutes = sum(s.to("second").end() for s in scores) / 60
    del scores
    print(f"{len(paths)} files, {notes / len(paths):.0f} notes and {minutes / len(paths):.1f} min "
          f"of music each on average; {os.cpu_count()} CPUs, {args.workers} workers; "
          f"pretty_midi {pretty_midi.__version__}, symusic {symusic.__version__}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="prep_midi_"))
    times: dict[str, list[float]] = {"pretty_midi": [], "ours": [], "rolls": [], "beats": []}
    try:
        ours(root, work / "warm", args.workers)                      # imports, page cache
        for r in range(args.rounds):
            order = ["pretty_midi", "ours", "rolls", "beats"]
            for name in (order if r % 2 == 0 else order[::-1]):
                if name == "pretty_midi":
                    seconds = baseline(paths)
                elif name == "ours":
                    seconds = ours(root, work / "cache", args.workers)
                elif name == "beats":
                    seconds = ours(root, work / "beats", args.workers, BEATS)
                else:
                    seconds = rolls_only(paths, args.workers)
                times[name].append(seconds)
                print(f"round {r + 1}: {name:12s} {seconds:7.2f} s  {len(paths) / seconds:7.1f} files/s",
                      flush=True)
        checked = verify(paths[:args.verify], work)
        cache_mb = sum(f.stat().st_size for f in (work / "cache").rglob("*")) / 2**20
        beats_mb = sum(f.stat().st_size for f in (work / "beats").rglob("*")) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["pretty_midi"])
    print(f"\nmedian over {args.rounds} rounds ({len(paths)} files, {minutes:.0f} min of music):")
    for name, label in (("pretty_midi", "pretty_midi get_piano_roll, one file at a time"),
                        ("ours", f"data_prep end to end (cache written, {cache_mb:.0f} MB), {args.workers} workers"),
                        ("rolls", f"data_prep.piano_roll only, {args.workers} workers"),
                        ("beats", f"data_prep end to end, beat_resolution=4 ({beats_mb:.0f} MB)")):
        t = statistics.median(times[name])
        print(f"  {label:66s} {len(paths) / t:7.1f} files/s  {minutes / t:7.1f} min/s  "
              f"x{base / t:5.1f}")
    print(f"compat mode identical to pretty_midi on {checked} files (directly and from the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
