"""One MIDI file to audio with a SoundFont synthesizer (used by :mod:`data_prep.render`, which
renders whole datasets).

The synthesizer is rustysynth (a SoundFont synthesizer in Rust, from the ``midirenderer`` wheel
on PyPI: no system library), rendering at 48 kHz, resampled with soxr; the soundfont defaults to
``TimGM6mb.sf2``, which ships inside ``pretty_midi``. ``synth="fluidsynth"`` uses FluidSynth
through ``pyfluidsynth`` when that and the FluidSynth library are installed. General MIDI
programs are named as labels by :func:`instrument_name`.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .discover import shown

PEAK = 10 ** (-1 / 20)                 # -1 dBFS
TAIL_SECONDS = 1.0                     # rendered after the last note, for its release


def default_soundfont() -> Path:
    """``TimGM6mb.sf2``, the General MIDI soundfont shipped inside the ``pretty_midi`` package."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise ValueError(f"pretty_midi's soundfont is missing ({shown(path)}); give one with --soundfont")
    return path


def instrument_name(program: int) -> str:
    """The General MIDI name of ``program`` as a label: 40 -> ``violin``, 0 -> ``acoustic_grand_piano``."""
    import pretty_midi

    return re.sub(r"[^a-z0-9]+", "_", pretty_midi.program_to_instrument_name(program).lower()).strip("_")


def parse_programs(text: str) -> list[int]:
    """``"0,40,violin,flute"`` -> General MIDI program numbers (names as :func:`instrument_name`
    gives them; a unique part of a name is enough: ``nylon`` -> 24)."""
    names = {instrument_name(p): p for p in range(128)}
    programs = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part.isdigit() and 0 <= int(part) <= 127:
            programs.append(int(part))
        elif part in names:
            programs.append(names[part])
        else:
            found = [n for n in names if part.replace(" ", "_") in n]
            if len(found) != 1:
                raise ValueError(f"program {part!r}: give 0-127 or a General MIDI name "
                                 f"({'matches ' + ', '.join(found) if found else 'e.g. violin, flute, trumpet, acoustic_grand_piano'})")
            programs.append(names[found[0]])
    if len(set(programs)) != len(programs):
        raise ValueError(f"programs {text!r} name one instrument twice")
    return programs


def render_midi(midi, soundfont: Union[str, os.PathLike, None] = None, sample_rate: int = 22050, *,
                program: Optional[int] = None, max_seconds: Optional[float] = None,
                synth: str = "rustysynth") -> np.ndarray:
    """Render one MIDI file (path, bytes or ``symusic.Score``) to mono float32 audio, peak -1 dBFS.

    Args:
        soundfont: an SF2/SF3 file (default :func:`default_soundfont`).
        program: play every pitched track with this General MIDI program (drums stay drums).
        max_seconds: render only the first seconds of the music (otherwise the whole file and
            ``TAIL_SECONDS`` after it, for the last release).
        synth: ``rustysynth`` (the ``midirenderer`` package) or ``fluidsynth`` (needs
            ``pip install pyfluidsynth`` and the FluidSynth library).

    Returns ``(samples,)`` float32; raises ``ValueError`` for unreadable or silent files.
    """
    import symusic

    from .midi_file import read_score

    score = read_score(midi).copy()
    if program is not None:
        for track in score.tracks:
            if not track.is_drum:
                track.program = program
    timed = score.to("second")
    if max_seconds is not None:                # notes that start in time; the audio is cut below
        timed = timed.clip(0, max_seconds, False)
    # a marker after the last note, or the synthesizer stops at the last note-off, cutting releases
    timed.markers.append(symusic.TextMeta(timed.end() + TAIL_SECONDS, "end", ttype="second"))
    score = timed.to("tick")
    if score.note_num() == 0:
        raise ValueError("no notes to render" + (f" in the first {max_seconds:g} s" if max_seconds else ""))
    audio = synthesizer(soundfont, sample_rate, synth)(score)
    if max_seconds is not None:
        audio = audio[:int(round(max_seconds * sample_rate))]
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if not np.isfinite(peak) or peak < 1e-6:
        raise ValueError("renders to silence (no sound for these programs in the soundfont?)")
    return (audio * (PEAK / peak)).astype(np.float32)


_SYNTHS: dict = {}
SYNTHS = ("rustysynth", "fluidsynth")


def synthesizer(soundfont, sample_rate: int, synth: str):
    """A function ``symusic.Score`` -> mono float32 audio at ``sample_rate``, cached per process.
    Raises ``ValueError`` naming a missing soundfont, an unknown ``synth`` or a missing package."""
    soundfont = Path(soundfont) if soundfont else default_soundfont()
    key = (str(soundfont), sample_rate, synth)
    if key in _SYNTHS:
        return _SYNTHS[key]
    if not soundfont.is_file():
        raise ValueError(f"--soundfont {soundfont}: no such file")
    if synth == "rustysynth":
        try:
            import midirenderer
        except ImportError:
            raise ValueError("rendering needs the midirenderer package (rustysynth): "
                             "pip install midirenderer") from None
        import soundfile as sf
        import soxr

        font = soundfont.read_bytes()

        def render(score):
            wav = midirenderer.render_wave_from(font, score.dumps_midi())
            audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if rate != sample_rate:
                audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
            return np.asarray(audio, np.float32)
    elif synth == "fluidsynth":
        try:
            import fluidsynth  # noqa: F401
            import pretty_midi
        except (ImportError, OSError) as e:
            raise ValueError(f"--synth fluidsynth needs pyfluidsynth and the FluidSynth library "
                             f"({e}); pip install pyfluidsynth, or use --synth rustysynth") from None

        def render(score):
            pm = pretty_midi.PrettyMIDI(io.BytesIO(score.dumps_midi()))
            return pm.fluidsynth(fs=sample_rate, synthesizer=str(soundfont)).astype(np.float32)
    else:
        raise ValueError(f"--synth must be one of {SYNTHS}, got {synth!r}")
    _SYNTHS[key] = render
    return render
