"""Piano-roll preparation against pretty_midi, on the same files, in one run.

    python benchmarks/prep_midi.py [--files 120] [--workers 2] [--rounds 2] [--dir DIR] [--disk]

Makes ``--files`` multi-track MIDI files of 3-5 minutes (8 instruments, drums, sustain pedal,
pitch-bend bursts, overlapping notes; about 9,000 notes each) unless ``--dir`` already holds
them, then times, interleaved over ``--rounds`` rounds (baseline, ours, ours, baseline ...):

- baseline: ``pretty_midi.PrettyMIDI(path).get_piano_roll(fs=100)``, one file at a time;
- ours: ``data_prep.prepare("folder", ...)`` with ``{"kind": "pianoroll", "fs": 100}``, end to end:
  listing, reading (symusic), float16 rolls, train statistics, writing the cache (fsync'd shards);
- ours, rolls only: :func:`data_prep.piano_roll` in ``--workers`` processes, nothing written;
- ours end to end with the Lakh source's config (4 frames per beat: a 25x smaller cache), for
  scale -- not the same output as the baseline.

Each timed run is a child process (imports done before the clock starts) that reports its wall
time and the CPU time of all its processes, workers included. It prints files/s, minutes of music
per second, the ratio to the baseline, CPU milliseconds per file, and the load average (other
jobs on the machine slow the contenders unequally: read the CPU times too), and checks on
``--verify`` files that the ``pretty_midi_compat`` mode gives pretty_midi's roll exactly, both
from :func:`data_prep.piano_roll` and read back from a cache (float16 of the same values).
``--disk`` also times writing and fsync'ing 1 GiB (what the cache writer does), for scale.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
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


def dataset(folder: Path, count: int) -> Path:
    """A folder dataset of exactly the first ``count`` songs (symbolic links), for ``prepare``."""
    root = folder / f"first{count}"
    (root / "songs").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        link = root / "songs" / f"song{i:04d}.mid"
        if not link.is_symlink():
            link.symlink_to(folder / "songs" / link.name)
    return root


def baseline(paths: list[Path]) -> None:
    import pretty_midi

    for path in paths:
        pretty_midi.PrettyMIDI(str(path)).get_piano_roll(fs=100)


SAME = {"kind": "pianoroll", "fs": 100.0}
BEATS = {"kind": "pianoroll", "beat_resolution": 4}


def ours(root: Path, out: Path, workers: int, features: dict = SAME) -> None:
    from data_prep import prepare

    prepare("folder", root, out, features, workers=workers, progress=False)


def _roll_frames(path: str) -> int:
    from data_prep import piano_roll

    return len(piano_roll(path, fs=100))


def rolls_only(paths: list[Path], workers: int) -> None:
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_roll_frames, [str(p) for p in paths], chunksize=4)


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def child_main(name: str, folder: Path, files: int, out: Path, workers: int) -> None:
    """One timed run (in a child process): prints ``{"seconds": wall, "cpu": all processes}``."""
    import pretty_midi  # noqa: F401  (imports before the clock)

    import data_prep.midi  # noqa: F401
    from data_prep import prepare  # noqa: F401

    root = dataset(folder, files)
    paths = sorted((root / "songs").glob("*.mid"))
    start, cpu = time.perf_counter(), _cpu_seconds()
    if name == "pretty_midi":
        baseline(paths)
    elif name == "ours":
        ours(root, out, workers)
    elif name == "beats":
        ours(root, out, workers, BEATS)
    else:
        rolls_only(paths, workers)
    seconds = time.perf_counter() - start
    for process in multiprocessing.active_children():     # end the workers, to count their CPU
        process.join()
    print(json.dumps({"seconds": seconds, "cpu": _cpu_seconds() - cpu}))


def timed(name: str, folder: Path, files: int, out: Path, workers: int) -> dict:
    if out.exists():            # the last round's cache: deleted before the clock starts, and
        shutil.rmtree(out)      # synced, so that freeing its blocks is not charged to this round
    os.sync()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--dir", str(folder),
                           "--files", str(files), "--out", str(out), "--workers", str(workers)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def disk_speed(folder: Path, gib: float = 1.0) -> str:
    """Write ``gib`` GiB in 64-MiB fsync'd files, as the cache writer does (page cache dropped
    after each fsync, or kept), and read it back: what the disk gives, for scale."""
    import numpy as np

    block = np.ones(32 * 2**20, np.float16)
    lines = []
    for drop in (True, False):
        start = time.perf_counter()
        for i in range(int(gib * 16)):
            with open(folder / f"disk{i}.bin", "wb") as fh:
                fh.write(memoryview(block).cast("B"))
                fh.flush()
                os.fsync(fh.fileno())
                if drop:
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        seconds = time.perf_counter() - start
        for i in range(int(gib * 16)):
            (folder / f"disk{i}.bin").unlink()
        lines.append(f"  write + fsync {gib:.0f} GiB, page cache {'dropped' if drop else 'kept   '}: "
                     f"{gib * 1024 / seconds:6.0f} MB/s")
    return "\n".join(lines)


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
    parser.add_argument("--disk", action="store_true", help="also time fsync'd writes to the disk")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.child:
        child_main(args.child, args.dir, args.files, args.out, args.workers)
        return 0
    import pretty_midi
    import symusic

    paths = ensure_files(args.dir, args.files)
    dataset(args.dir, args.files)
    scores = [symusic.Score(str(p)) for p in paths]
    notes = sum(s.note_num() for s in scores)
    minutes = sum(s.to("second").end() for s in scores) / 60
    del scores
    print(f"{len(paths)} files, {notes / len(paths):.0f} notes and {minutes / len(paths):.1f} min "
          f"of music each on average; {os.cpu_count()} CPUs, {args.workers} workers; "
          f"pretty_midi {pretty_midi.__version__}, symusic {symusic.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="prep_midi_"))
    runs: dict[str, list[dict]] = {"pretty_midi": [], "ours": [], "rolls": [], "beats": []}
    outs = {"ours": work / "cache", "beats": work / "beats"}
    try:
        timed("ours", args.dir, args.files, work / "warm", args.workers)      # page cache, .pyc
        for r in range(args.rounds):
            order = ["pretty_midi", "ours", "rolls", "beats"]
            for name in (order if r % 2 == 0 else order[::-1]):
                run = timed(name, args.dir, args.files, outs.get(name, work / "none"), args.workers)
                runs[name].append(run)
                print(f"round {r + 1}: {name:12s} {run['seconds']:7.2f} s  "
                      f"{len(paths) / run['seconds']:7.1f} files/s  CPU {run['cpu']:6.2f} s  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        checked = verify(paths[:args.verify], work)
        cache_mb = sum(f.stat().st_size for f in (work / "cache").rglob("*")) / 2**20
        beats_mb = sum(f.stat().st_size for f in (work / "beats").rglob("*")) / 2**20
        disk = disk_speed(work) if args.disk else ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(r["seconds"] for r in runs["pretty_midi"])
    print(f"\nmedian over {args.rounds} rounds ({len(paths)} files, {minutes:.0f} min of music; "
          f"load average {os.getloadavg()[0]:.1f} at the end):")
    print(f"  {'':66s} {'files/s':>13s} {'min/s':>11s} {'ratio':>6s} {'CPU ms/file':>12s}")
    for name, label in (("pretty_midi", "pretty_midi get_piano_roll, one file at a time"),
                        ("ours", f"data_prep end to end (cache written, {cache_mb:.0f} MB), {args.workers} workers"),
                        ("rolls", f"data_prep.piano_roll only, {args.workers} workers"),
                        ("beats", f"data_prep end to end, beat_resolution=4 ({beats_mb:.0f} MB)")):
        t = statistics.median(r["seconds"] for r in runs[name])
        cpu = statistics.median(r["cpu"] for r in runs[name])
        print(f"  {label:66s} {len(paths) / t:7.1f} files/s  {minutes / t:7.1f} min/s  "
              f"x{base / t:5.1f} {cpu / len(paths) * 1000:9.1f}")
    print(f"compat mode identical to pretty_midi on {checked} files (directly and from the cache)")
    if disk:
        print(f"disk (for scale, {cache_mb:.0f} MB is what the fs=100 cache writes):\n{disk}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
