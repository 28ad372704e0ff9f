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
                    seed: int = 0):
    """A cache whose class ``k`` has a band of energy around bin ``(k + 1) * bins / (n + 1)`` on
    noise, learnable in a few steps. Splits 60/20/20 per class, or ``folds`` folds (no split)."""
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
            writer.add(x, id=f"{label}_{j:03d}", source=f"{label}/{j:03d}.wav", label=label, split=split, fold=fold)
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
