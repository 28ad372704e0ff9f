"""Render a MIDI dataset to audio: the same music as a spectrogram and as a piano roll.

``python -m data_prep render --root MIDI_DATASET --out AUDIO_DATASET [options]`` reads a MIDI
dataset -- a folder with ``manifest.csv`` (``path,label[,split][,group|tune_id]``, as the folk
dataset has) or one sub-folder per class -- and writes::

    AUDIO_DATASET/<label>/<name>.wav     mono 16-bit WAV, peak at -1 dBFS
    AUDIO_DATASET/manifest.csv           path,label,split,group,origin,origin_label,program,
                                         instrument,seconds
    AUDIO_DATASET/render.json            the settings, and the files that failed and why

Labels stay those of the MIDI dataset, unless several ``--programs`` are given: then every file
is rendered once per General MIDI program and labelled by instrument (instrument
classification), with the tune as its ``group`` and its original split kept, so one melody
never straddles splits. Train on it with ``python -m data_prep csv --root OUT/manifest.csv``.

The synthesizer (:mod:`data_prep.synth`) is rustysynth (a SoundFont synthesizer in Rust, from
the ``midirenderer`` wheel on PyPI: no system library), rendering at 48 kHz, resampled with soxr;
the soundfont defaults to ``TimGM6mb.sf2``, which ships inside ``pretty_midi``. ``--synth
fluidsynth`` uses FluidSynth through ``pyfluidsynth`` when that and the FluidSynth library are
installed.
(symusic's own synthesizer is not used: in symusic 0.6.0 it cannot return its buffer, and in
0.5.9 it plays SF2 soundfonts at wrong pitches -- TimGM6mb's piano two octaves up, its violin
one -- being right only with MuseScore's SF3.) Rendering is deterministic, parallel over files,
skips files that fail (recorded with the reason), and resumes: outputs that exist are kept, so
an interrupted run continues where it stopped. Settings different from those of an existing
``OUT`` are refused (``--force`` starts over).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .cli import run_resumable
from .discover import shown
from .fileio import stray_temporaries, write_atomic
from .synth import SYNTHS, default_soundfont, instrument_name, parse_programs, render_midi, synthesizer
from .workers import context, cpu_count, die_with

FORMAT = 1
MANIFEST_FIELDS = ("path", "label", "split", "group", "origin", "origin_label", "program",
                   "instrument", "seconds")


# -- datasets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    source: str               # the MIDI file, relative to the dataset root
    label: str
    split: str
    group: str
    origin_label: str
    program: Optional[int]
    out: str                  # the WAV file, relative to OUT


def list_midi_dataset(root: Path) -> list[tuple[str, str, str, str]]:
    """``(path relative to root, label, split, group)`` of every MIDI file of a dataset: the
    rows of ``root/manifest.csv`` (:func:`~data_prep.sources.midi_datasets.read_dataset_manifest`;
    an item without a group is its own), or the files of one sub-folder per class."""
    from .sources import MIDI_EXTENSIONS
    from .sources.generic import list_files
    from .sources.midi_datasets import read_dataset_manifest

    if (root / "manifest.csv").is_file():
        return [(it.path.relative_to(root).as_posix(), it.label, it.split, it.group or it.id)
                for it in read_dataset_manifest(root)]
    if not root.is_dir():
        raise ValueError(f"--root {shown(root)}: no such folder")
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in list_files(class_dir, MIDI_EXTENSIONS):
            rel = path.relative_to(root).as_posix()
            items.append((rel, class_dir.name, "", Path(rel).with_suffix("").as_posix()))
    if not items:
        raise ValueError(f"--root {shown(root)}: no manifest.csv and no MIDI files in class sub-folders")
    return items


def plan_jobs(items, programs: Sequence[Optional[int]]) -> list[Job]:
    """One job per file and program, with its output name and label."""
    jobs = []
    by_instrument = len(programs) > 1
    for rel, label, split, group in items:
        stem = Path(rel).with_suffix("").as_posix()
        if stem.startswith(label + "/"):
            stem = stem[len(label) + 1:]
        name = stem.replace("/", "__")
        for program in programs:
            if by_instrument:
                out_label = instrument_name(program)
                out = f"{out_label}/{label}__{name}.wav"
            else:
                out_label, out = label, f"{label}/{name}.wav"
            jobs.append(Job(rel, out_label, split, group, label, program, out))
    seen: dict[str, str] = {}
    for job in jobs:
        if seen.setdefault(job.out, job.source) != job.source:
            raise ValueError(f"{shown(job.source)} and {shown(seen[job.out])} would both be written to "
                             f"{shown(job.out)}")
    return jobs


_WORKER: dict = {}


def _init(settings: dict, parent: int = 0) -> None:
    if parent:
        die_with(parent)            # a worker never outlives a killed render
    _WORKER.update(settings)


def _render_job(job: Job) -> tuple[str, Union[float, str]]:
    """Worker: render and write one job; ``("ok", seconds)`` or ``("fail", reason)``."""
    import soundfile as sf

    s = _WORKER
    try:
        audio = render_midi(s["root"] / job.source, s["soundfont"], s["sample_rate"],
                            program=job.program, max_seconds=s["max_seconds"], synth=s["synth"])
        out = s["out"] / job.out
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda fh: sf.write(fh, audio, s["sample_rate"], subtype="PCM_16", format="WAV"))
        return "ok", len(audio) / s["sample_rate"]
    except Exception as e:      # one bad file is a recorded failure, never the end of the run
        text = " ".join(str(e).split()) or type(e).__name__
        return "fail", text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"


def render_dataset(root: Union[str, os.PathLike], out: Union[str, os.PathLike], *,
                   soundfont: Union[str, os.PathLike, None] = None,
                   programs: Optional[Sequence[int]] = None, sample_rate: int = 22050,
                   max_seconds: Optional[float] = None, synth: str = "rustysynth",
                   workers: Optional[int] = None, force: bool = False, progress: bool = True) -> dict:
    """Render every file of the MIDI dataset ``root`` into the audio dataset ``out`` (see the
    module docstring). Returns the summary also written to ``out/render.json``.

    One render of ``out`` at a time: a second one, in any process, is refused (``ValueError``
    naming the holder) while ``OUT.lock`` is held, so that neither deletes the other's files."""
    from .cache_files import CacheBusyError, CacheLock

    lock = CacheLock(Path(out).expanduser(), busy="being rendered by {holder} (lock {lock}); one render "
                     "at a time: wait for it to finish, or stop it and run this command again (it resumes)")
    try:
        lock.acquire()
    except CacheBusyError as e:
        raise ValueError(str(e)) from None
    try:
        return _render_dataset(root, out, soundfont=soundfont, programs=programs, sample_rate=sample_rate,
                               max_seconds=max_seconds, synth=synth, workers=workers, force=force,
                               progress=progress)
    finally:
        lock.release()


def _render_dataset(root: Union[str, os.PathLike], out: Union[str, os.PathLike], *,
                    soundfont: Union[str, os.PathLike, None] = None,
                    programs: Optional[Sequence[int]] = None, sample_rate: int = 22050,
                    max_seconds: Optional[float] = None, synth: str = "rustysynth",
                    workers: Optional[int] = None, force: bool = False, progress: bool = True) -> dict:
    root, out = Path(root).expanduser(), Path(out).expanduser()
    soundfont = Path(soundfont).expanduser() if soundfont else default_soundfont()
    if not soundfont.is_file():
        raise ValueError(f"--soundfont {soundfont}: no such file")
    if sample_rate < 8000 or sample_rate > 96000:
        raise ValueError(f"--sample-rate must be in 8000..96000, got {sample_rate}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"--max-seconds must be positive, got {max_seconds}")
    programs = list(programs) if programs else [None]
    settings = {"format": FORMAT, "soundfont": soundfont.name, "soundfont_bytes": soundfont.stat().st_size,
                "programs": programs, "sample_rate": sample_rate, "max_seconds": max_seconds,
                "synth": synth, "peak_dbfs": -1.0}
    _check_out(out, settings, force)
    jobs = plan_jobs(list_midi_dataset(root), programs)
    synthesizer(soundfont, sample_rate, synth)             # fail early on a bad synth or soundfont
    out.mkdir(parents=True, exist_ok=True)
    for stale in stray_temporaries(out, "*.wav"):          # left by a run that was killed
        stale.unlink()
    (out / "render.json").write_text(json.dumps({"settings": settings}, indent=1) + "\n")
    todo = [j for j in jobs if not (out / j.out).exists()]
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    if len(todo) < len(jobs):
        say(f"resuming {shown(out)}: {len(jobs) - len(todo)} of {len(jobs)} files are already rendered")
    started = time.perf_counter()
    state = {"root": root, "out": out, "soundfont": soundfont, "sample_rate": sample_rate,
             "max_seconds": max_seconds, "synth": synth}
    results = dict(zip(todo, _run(todo, state, workers, progress)))
    rows, failures = [], []
    import soundfile as sf

    for job in jobs:
        status, value = results.get(job, ("ok", None))
        if status == "fail":
            failures.append({"source": job.source, "program": job.program, "reason": value})
            continue
        seconds = value if value is not None else sf.info(str(out / job.out)).duration
        rows.append({"path": job.out, "label": job.label, "split": job.split, "group": job.group,
                     "origin": job.source, "origin_label": job.origin_label,
                     "program": "" if job.program is None else job.program,
                     "instrument": "" if job.program is None else instrument_name(job.program),
                     "seconds": round(seconds, 3)})
    if not rows:
        raise ValueError(f"no file could be rendered ({len(failures)} failed, e.g. "
                         f"{shown(failures[0]['source'])}: {failures[0]['reason']})" if failures else "no files")
    rows.sort(key=lambda r: r["path"])
    text = io.StringIO()
    writer = csv.DictWriter(text, MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "manifest.csv").write_text(text.getvalue(), encoding="utf-8")
    summary = {"settings": settings, "rendered": len(rows), "this_run": len(todo) - len(failures),
               "failed": failures, "audio_hours": round(sum(r["seconds"] for r in rows) / 3600, 4)}
    (out / "render.json").write_text(json.dumps(summary, indent=1) + "\n")
    elapsed = time.perf_counter() - started
    say(f"rendered {shown(out)}: {len(rows)} files in {len({r['label'] for r in rows})} classes, "
        f"{summary['audio_hours']:.2f} h of audio, {len(failures)} failed"
        + "".join(f"\n  {shown(f['source'])}: {f['reason']}" for f in failures[:10])
        + f"\n{len(todo)} files in {elapsed:.1f} s")
    return summary


def _check_out(out: Path, settings: dict, force: bool) -> None:
    marker = out / "render.json"
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise ValueError(f"--out {shown(out)} is not empty and was not written by render; "
                             f"choose a new folder")
        old = json.loads(marker.read_text()).get("settings")
        if old != settings:
            if not force:
                diff = [f"{k}: {old.get(k)!r} != {settings[k]!r}" for k in settings
                        if not old or old.get(k) != settings[k]]
                raise ValueError(f"{shown(out)} was rendered with other settings ({'; '.join(diff)}); "
                                 f"use --force to start over or choose another --out")
        if force:
            shutil.rmtree(out)


def _run(jobs: list[Job], state: dict, workers: Optional[int], progress: bool):
    """Results of :func:`_render_job` in order, in ``workers`` processes."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="render", unit="file", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    n = max(1, min(workers or cpu_count(), len(jobs)))
    try:
        if n == 1:
            _init(state)
            for job in jobs:
                yield _render_job(job)
                bar.update(1)
            return
        with context().Pool(n, initializer=_init, initargs=(state, os.getpid())) as pool:
            for result in pool.imap(_render_job, jobs, chunksize=4):
                yield result
                bar.update(1)
    finally:
        bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data_prep render ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep render", description=__doc__.split("\n\n")[0],
        epilog="examples:\n"
               "  python -m data_prep render --root ~/.cache/audiostem/data/folk_midi --out folk_audio\n"
               "  python -m data_prep render --root ~/.cache/audiostem/data/folk_midi --out instruments \\\n"
               "      --programs acoustic_grand_piano,violin,flute,trumpet --max-seconds 10\n"
               "  python -m data_prep csv --root instruments/manifest.csv --out caches/instruments",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path,
                        help="the MIDI dataset: a folder with manifest.csv, or one sub-folder per class")
    parser.add_argument("--out", required=True, type=Path, help="the audio dataset folder to write")
    parser.add_argument("--soundfont", type=Path, default=None,
                        help="an SF2/SF3 soundfont (default: TimGM6mb.sf2 from pretty_midi)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--program", default=None, metavar="N",
                       help="play every pitched track with this General MIDI program (number or name)")
    which.add_argument("--programs", default=None, metavar="A,B,...",
                       help="render every file once per program; labels become instrument names")
    parser.add_argument("--sample-rate", type=int, default=22050, help="Hz (default 22050)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="render only the first S seconds of each file")
    parser.add_argument("--synth", choices=SYNTHS, default="rustysynth",
                        help="synthesizer (default rustysynth, from the midirenderer package; "
                             "fluidsynth needs pyfluidsynth and the FluidSynth library)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="start over if OUT has other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    try:
        programs = parse_programs(args.programs or args.program) if (args.programs or args.program) else None
    except ValueError as e:
        parser.error(str(e))
    if args.program and len(programs) != 1:
        parser.error("--program takes one program; use --programs for several")
    return run_resumable(lambda: render_dataset(
        args.root, args.out, soundfont=args.soundfont, programs=programs, sample_rate=args.sample_rate,
        max_seconds=args.max_seconds, synth=args.synth, workers=args.workers, force=args.force,
        progress=not args.quiet), args.out)


if __name__ == "__main__":
    sys.exit(main())
