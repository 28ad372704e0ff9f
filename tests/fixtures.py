"""Tiny generated data for the training tests: feature caches written directly, and datasets in
the file layouts of the real ones (audio and MIDI), all small enough for seconds of CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from data_prep import AudioFeatures, CacheWriter, PianoRollFeatures

SR = 8000
AUDIO_FEATURES = {"kind": "logmel", "sample_rate": SR, "n_fft": 256, "hop_length": 128, "n_mels": 16}
ROLL_FEATURES = {"kind": "pianoroll", "fs": 8.0, "pitch_range": "piano"}


def synthetic_cache(out: Path, classes: Sequence[str] = ("a", "b", "c"), per_class: int = 12, bins: int = 16,
                    frames: tuple[int, int] = (24, 64), kind: str = "logmel", folds: Optional[int] = None,
                    seed: int = 0, group_size: Optional[int] = None):
    """A cache whose class ``k`` has a band of energy around bin ``(k + 1) * bins / (n + 1)`` on
    noise, learnable in a few steps. Splits 60/20/20 per class, or ``folds`` folds (no split);
    with ``group_size``, items ``j`` of one class with equal ``j // group_size`` share a group."""
    rng = np.random.default_rng(seed)
    if kind == "pianoroll":
        config = PianoRollFeatures(**{**ROLL_FEATURES})
        bins = config.bins
    else:
        config = AudioFeatures(**{**AUDIO_FEATURES, "n_mels": bins})
    writer = CacheWriter(out, config, {"source": "synthetic", "seed": seed}, list(classes))
    for k, label in enumerate(classes):
        centre = (k + 1) * bins // (len(classes) + 1)
        for j in range(per_class):
            n = int(rng.integers(frames[0], frames[1] + 1))
            if kind == "pianoroll":
                x = np.zeros((n, bins), np.float32)
                pitches = centre + rng.integers(-3, 4, size=n)
                x[np.arange(n), pitches] = rng.uniform(0.5, 1.0, size=n)
            else:
                x = rng.normal(-40, 5, size=(n, bins)).astype(np.float32)
                x[:, max(centre - 1, 0):centre + 2] += 20
            if folds:
                split, fold = "", j % folds + 1
            else:
                split, fold = ("train" if j < 0.6 * per_class else "valid" if j < 0.8 * per_class else "test"), None
            group = f"{label}_g{j // group_size}" if group_size else ""
            writer.add(x, id=f"{label}_{j:03d}", source=f"{label}/{j:03d}.wav", label=label, split=split, fold=fold,
                       group=group)
    return writer.finish()


def tone(freq: float, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, freq: float, seconds: float = 0.5, sr: int = SR) -> Path:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(freq, seconds, sr), sr, subtype="PCM_16")
    return path


def write_midi(path: Path, pitch: int, seconds: float = 4.0, step: float = 0.25, program: int = 0) -> Path:
    """A monophonic MIDI file: notes around ``pitch`` every ``step`` seconds."""
    import pretty_midi
    path.parent.mkdir(parents=True, exist_ok=True)
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=program)
    for n, t in enumerate(np.arange(0, seconds, step)):
        p = pitch + (0, 2, 4, 5, 7, 5, 4, 2)[n % 8]
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=int(p), start=float(t), end=float(t + step * 0.9)))
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


# --- datasets in the file layouts of the real ones (for tests/test_recipes_e2e.py) --------------
def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    import csv
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def folder_layout(root: Path, classes: Sequence[str] = ("cat", "dog"), per_class: int = 10) -> Path:
    """``root/<class>/<n>.wav``."""
    for k, c in enumerate(classes):
        for n in range(per_class):
            write_wav(root / c / f"{c}_{n}.wav", 300 * (k + 1) + 20 * n, seconds=0.4)
    return root


def gtzan_layout(root: Path, per_split: tuple[int, int, int] = (2, 1, 1)) -> Path:
    """``root/<genre>/<genre>.000NN.wav`` for a few files of each split of the filtered lists
    (the other listed files are missing, which the source reports and skips)."""
    from data_prep.sources.audio_datasets import GTZAN_GENRES, gtzan_filtered_split
    listed = gtzan_filtered_split()
    for k, genre in enumerate(GTZAN_GENRES):
        for split, count in zip(("train", "valid", "test"), per_split):
            names = sorted(n for n, s in listed.items() if s == split and n.startswith(genre + "."))[:count]
            for n, name in enumerate(names):
                write_wav(root / genre / f"{name}.wav", 200 + 150 * k + 10 * n, seconds=0.4)
    return root


def esc50_layout(root: Path, classes: Sequence[str] = ("dog", "rain"), folds: int = 5) -> Path:
    """``root/meta/esc50.csv`` + ``root/audio/<fold>-<src>-A-<target>.wav``, one clip per class
    and fold."""
    rows = []
    for target, c in enumerate(classes):
        for fold in range(1, folds + 1):
            name = f"{fold}-{1000 + 10 * target + fold}-A-{target}.wav"
            write_wav(root / "audio" / name, 400 + 500 * target + 10 * fold, seconds=0.4)
            rows.append([name, fold, target, c, "True", 1000 + 10 * target + fold, "A"])
    _write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file",
                                             "take"], rows)
    return root


def urbansound8k_layout(root: Path, classes: Sequence[str] = ("siren", "drilling")) -> Path:
    """``root/metadata/UrbanSound8K.csv`` + ``root/audio/fold<k>/<fsID>-<class>-0-<n>.wav`` for
    10 folds; mixed sample rates and a stereo file, as in the real data."""
    import soundfile as sf
    rows = []
    for cid, c in enumerate(classes):
        for fold in range(1, 11):
            fs_id = 100 * cid + fold
            name = f"{fs_id}-{cid}-0-0.wav"
            path = root / "audio" / f"fold{fold}" / name
            if fold == 3:                                  # 44.1 kHz stereo
                path.parent.mkdir(parents=True, exist_ok=True)
                x = tone(500 + 700 * cid, 0.3, 44100)
                sf.write(path, np.stack([x, x], 1), 44100)
            else:
                write_wav(path, 500 + 700 * cid + fold, seconds=0.3)
            rows.append([name, fs_id, 0.0, 0.3, 1, fold, cid, c])
    _write_csv(root / "metadata" / "UrbanSound8K.csv",
               ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


def speechcommands_layout(root: Path, words: Sequence[str] = ("yes", "no", "up")) -> Path:
    """``root/<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt``, ``testing_list.txt``
    and a ``_background_noise_`` folder that is not a class."""
    val, test = [], []
    for k, w in enumerate(words):
        for s in range(5):
            rel = f"{w}/spk{s:02d}_nohash_0.wav"
            write_wav(root / rel, 300 + 400 * k + 15 * s, seconds=0.3, sr=16000)
            (val if s == 3 else test if s == 4 else []).append(rel)
    write_wav(root / "_background_noise_" / "white_noise.wav", 100, seconds=0.5, sr=16000)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


def folk_layout(root: Path, classes: Sequence[str] = ("irish", "chinese"), per_class: int = 5) -> Path:
    """A folk MIDI folder as ``data_prep.folk`` writes it: ``root/<class>/<tune>.mid`` and
    ``root/manifest.csv`` (path,label,split,tune_id)."""
    rows = []
    for k, c in enumerate(classes):
        for n in range(per_class):
            rel = f"{c}/tune{n}.mid"
            write_midi(root / rel, 60 + 5 * k + n, seconds=4, step=0.25 if k else 0.5)
            rows.append([rel, c, ("train", "train", "train", "valid", "test")[n % 5], f"{c}{n}"])
    _write_csv(root / "manifest.csv", ["path", "label", "split", "tune_id"], rows)
    return root


def maestro_layout(root: Path, composers: Sequence[str] = ("Bach", "Chopin"), per_composer: int = 5) -> Path:
    """``root/maestro-v3.0.0.csv`` + ``root/2018/<name>.midi``."""
    rows = []
    for k, c in enumerate(composers):
        for n in range(per_composer):
            rel = f"2018/{c}_{n}.midi"
            write_midi(root / rel, 50 + 10 * k + n, seconds=4, step=0.2 + 0.2 * k)
            rows.append([c, f"Piece {n}", ("train", "train", "train", "validation", "test")[n % 5], 2018, rel,
                         rel.replace(".midi", ".wav"), 4.0])
    _write_csv(root / "maestro-v3.0.0.csv", ["canonical_composer", "canonical_title", "split", "year",
                                             "midi_filename", "audio_filename", "duration"], rows)
    return root


def lakh_layout(root: Path, genres: Sequence[str] = ("Rock", "Jazz"), per_genre: int = 10) -> Path:
    """``root/<A>/<B>/<C>/TR<16>/<md5>.mid`` (LMD-matched) + ``root/msd_tagtraum_cd2.cls``, with a
    drum track in every song."""
    import pretty_midi
    lines = ["# MSD tagtraum CD2 (test fixture)"]
    for k, g in enumerate(genres):
        for n in range(per_genre):
            track = f"TR{'ABCDEFGH'[k]}{n:015d}"
            path = write_midi(root / track[2] / track[3] / track[4] / track / f"{k}{n:031x}.mid", 55 + 7 * k,
                              seconds=4, step=0.25)
            pm = pretty_midi.PrettyMIDI(str(path))
            drums = pretty_midi.Instrument(program=0, is_drum=True)
            drums.notes += [pretty_midi.Note(velocity=100, pitch=36 + 2 * k, start=t, end=t + 0.1)
                            for t in np.arange(0, 4, 0.5)]
            pm.instruments.append(drums)
            pm.write(str(path))
            lines.append(f"{track}\t{g}")
    (root / "msd_tagtraum_cd2.cls").write_text("\n".join(lines) + "\n")
    return root


def manifest_layout(root: Path, extra_splits: dict[str, str], classes: Sequence[str] = ("flute", "piano"),
                    per_class: int = 6, sr: int = 16000) -> Path:
    """A builder-style audio dataset: ``root/<label>/<n>.wav`` + ``root/manifest.csv`` with
    ``path,label,split`` and extra split columns given as ``{column: value of the last item}``
    (e.g. ``split_xsf`` of gm_instruments, the ``real`` rows of espeak_digits)."""
    rows = []
    for k, c in enumerate(classes):
        for n in range(per_class):
            rel = f"{c}/{c}_{n}.wav"
            write_wav(root / rel, 300 + 600 * k + 20 * n, seconds=0.5, sr=sr)
            split = ("train", "train", "train", "valid", "test", "train")[n % 6]
            extra = [value if n == per_class - 1 else split for value in extra_splits.values()]
            rows.append([rel, c, split, *extra])
    columns = list(extra_splits)
    if "split" in columns:                     # an extra value of the split column itself
        header = ["path", "label", "split"]
        rows = [[r[0], r[1], r[3]] for r in rows]
    else:
        header = ["path", "label", "split", *columns]
    _write_csv(root / "manifest.csv", header, rows)
    return root


def columns_layout(root: Path, columns: dict, classes: Sequence[str] = ("flute", "piano"),
                   per_class: int = 6, seconds: float = 0.5, sr: int = 16000) -> Path:
    """A builder-style audio dataset with any manifest columns: ``root/<label>/<n>.wav`` and
    ``root/manifest.csv`` with ``path,label`` and one column per ``columns`` entry, whose value
    for item ``n`` of class ``c`` is ``fn(c, n)`` (a soundfont, a game fold, a phrase group)."""
    rows = []
    for k, c in enumerate(classes):
        for n in range(per_class):
            rel = f"{c}/{c}_{n}.wav"
            write_wav(root / rel, 300 + 600 * k + 20 * n, seconds=seconds, sr=sr)
            rows.append([rel, c, *(fn(c, n) for fn in columns.values())])
    _write_csv(root / "manifest.csv", ["path", "label", *columns], rows)
    return root
