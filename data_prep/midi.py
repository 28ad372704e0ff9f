"""MIDI files to piano rolls (pitch x time), the ``pianoroll`` feature kind.

Layout: a roll is ``(frames, bins)`` float32, or ``(frames, channels, bins)`` when the options ask
for several channels -- time first, like every feature in the cache. (``pretty_midi`` returns
``(128, frames)``: transpose it to compare.) Bins are MIDI pitches, 0..127 (``pitch_range='full'``)
or the 88 piano keys 21..108 (``'piano'``). Channels, in this order: one per General MIDI
instrument family when ``per_family`` (:data:`GM_FAMILIES`, else one channel for every pitched
instrument), then drums when ``drums='channel'``, then note onsets when ``onsets``.

Two implementations:

- the default: ``symusic`` (a C++ MIDI parser) reads the notes, and NumPy paints them. A frame is
  ``1 / fs`` seconds, or ``1 / beat_resolution`` quarter notes for a tempo-invariant roll. A note
  covers frames ``round(start * rate)`` up to ``round(end * rate)`` (at least one frame, so short
  notes never vanish); overlapping notes of one pitch keep their loudest velocity (``overlap='max'``)
  or add up (``'sum'``). Pitch bends are ignored: a roll holds notes.
- ``pretty_midi_compat=True``: ``pretty_midi`` itself, so the roll is exactly
  ``pretty_midi.PrettyMIDI(path).get_piano_roll(fs).T`` (raw velocity sums, pitch bends blended
  into neighbouring bins, drums silent), float64. About 100 times slower.

Bad files raise ``ValueError`` saying why (not MIDI, truncated, no notes, absurd header ...).
Memory is bounded by ``max_frames``: longer files are cut there (the default mode) or refused
(the compat mode, which cannot cut without changing pretty_midi's numbers).
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Any, Union

import numpy as np

from .cache import to_float16
from .config import PianoRollFeatures
from .discover import shown
from .midi_file import MidiInput, read_score, smf_bytes

GM_FAMILIES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble",
               "brass", "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic",
               "percussive", "sound_effects")
PIANO_KEYS = (21, 109)              # A0 .. C8, as a half-open pitch range
SUSTAIN = 64                        # the sustain pedal controller; value >= 64 is "down"
COMPAT_MAX_BYTES = 2**30            # pretty_midi holds one float64 roll per instrument at once
_CHUNK_CELLS = 4 * 2**20            # notes are painted in chunks of this many (frame, pitch) cells



def piano_roll(midi: MidiInput, fs: float = 100.0, *, beat_resolution: Union[int, None] = None,
               pitch_range: str = "full", values: str = "velocity", overlap: str = "max",
               onsets: bool = False, pedal: bool = True, drums: str = "drop",
               per_family: bool = False, pretty_midi_compat: bool = False,
               max_frames: Union[int, None] = 100_000) -> np.ndarray:
    """A MIDI file as a piano roll, ``(frames, bins)`` or ``(frames, channels, bins)``.

    Args:
        midi: a path, the bytes of a ``.mid`` file, a ``pretty_midi.PrettyMIDI`` or a
            ``symusic.Score``.
        fs: frames per second (ignored when ``beat_resolution`` is set).
        beat_resolution: frames per quarter note instead, for a tempo-invariant roll.
        pitch_range: ``full`` (128 bins, MIDI pitch 0 at bin 0) or ``piano`` (88 bins, A0 = 21
            at bin 0); notes outside the range are dropped.
        values: ``velocity`` (velocity / 127, in [0, 1]) or ``binary`` (1 where a note sounds).
        overlap: ``max`` or ``sum`` of overlapping notes of one pitch and channel.
        onsets: add a channel holding each note's value at its first frame only.
        pedal: sustain pedal (CC 64 >= 64) holds a released note until the pedal is released
            or the same key is struck again.
        drums: ``drop`` drum tracks (MIDI channel 10), ``keep`` them among the pitched notes
            (at their GM drum key), or give them their own ``channel``.
        per_family: one channel per General MIDI family (program // 8, :data:`GM_FAMILIES`).
        pretty_midi_compat: return ``pretty_midi``'s own roll, transposed to ``(frames, 128)``
            (or ``(frames, 88)`` with ``pitch_range='piano'``), float64; see
            :class:`~data_prep.config.PianoRollFeatures` for the options it rules out.
        max_frames: longest roll returned (``None``: no limit); later notes are cut off.

    Returns:
        float32 array (float64 in compat mode). A file without any (kept) note gives 0 frames.

    Raises:
        ValueError: the input is not a readable MIDI file, or the options are invalid.
    """
    config = PianoRollFeatures(fs=fs, beat_resolution=beat_resolution, pitch_range=pitch_range,
                               values=values, overlap=overlap, onsets=onsets, pedal=pedal,
                               drums=drums, per_family=per_family, max_frames=max_frames,
                               pretty_midi_compat=pretty_midi_compat)
    return _roll(midi, config)[0]


def pianoroll_file(path: Union[str, os.PathLike], config: PianoRollFeatures,
                   dtype: Any = np.float32) -> np.ndarray:
    """The ``pianoroll`` features of one file for the cache: ``(frames, *config.feature_shape)``.

    ``dtype=np.float16`` gives the values the cache stores (``float16(float32 roll)``), painted
    directly in float16 when the roll is a maximum of notes: NumPy's float32 -> float16
    conversion of a 4-minute roll took longer than reading and painting it.

    Raises ``ValueError`` naming the reason when the file gives no usable roll (unreadable, no
    notes, only drums that ``config.drums`` drops, every note after ``max_frames`` ...), so the
    pipeline can skip and record it. A roll cut at ``max_frames`` gives a ``UserWarning``.
    """
    roll, notes = read_pianoroll(path, config, dtype)
    for note in notes:
        warnings.warn(f"{shown(path)}: {note}", stacklevel=2)
    return roll


def read_pianoroll(midi: MidiInput, config: PianoRollFeatures,
                   dtype: Any = np.float32) -> tuple[np.ndarray, list[str]]:
    """:func:`pianoroll_file`, returning the notes about how the file was read (a roll cut at
    ``max_frames``) instead of warning: the pipeline records them with the build, as it does a
    truncated WAV's (``meta["build"]["warnings"]``)."""
    float16 = np.dtype(dtype) == np.float16
    roll, info = _roll(midi, config, float16)
    silent = config.pretty_midi_compat and not roll.any()      # pretty_midi's roll, sliced to 88 keys
    if len(roll) == 0 or silent or not (info["notes"] or config.drums != "drop"):
        if info.get("drum_notes") and config.drums == "drop" and not info["notes"]:
            raise ValueError(f"only drum notes ({info['drum_notes']}), which drums='drop' removes")
        if info.get("late") is not None:
            raise ValueError(f"every note starts after max_frames={config.max_frames} (first at frame "
                             f"{info['late']}); raise max_frames to read it")
        if info.get("notes"):
            raise ValueError(f"no note in pitch_range={config.pitch_range!r} "
                             f"({info['notes']} notes outside it)")
        raise ValueError("no notes")
    notes = []
    if info.get("cut"):
        notes.append(f"piano roll cut at max_frames={config.max_frames} "
                     f"(the file would give {info['cut']} frames)")
    if float16 and roll.dtype != np.float16:     # (float32 first: float64 in compat mode)
        roll = to_float16(np.asarray(roll, np.float32), "piano-roll",
                          ": too many notes sum up; use overlap='max'")
    return np.asarray(roll, dtype=dtype).reshape(len(roll), *config.feature_shape), notes


# -- the default implementation ---------------------------------------------------------------

def _roll(midi: MidiInput, config: PianoRollFeatures, float16: bool = False) -> tuple[np.ndarray, dict]:
    """The roll and what was found (``notes``, ``drum_notes``, ``cut``); float32 (float64 in
    compat mode), or float16 when asked and it can be painted so."""
    if config.pretty_midi_compat:
        return _compat_roll(midi, config)
    score = read_score(midi)
    notes, info = _note_table(score, config)
    return _paint(notes, config, float16), info


def _tick_to_seconds(ticks: np.ndarray, score) -> np.ndarray:
    """Seconds at each tick under the score's tempo map (120 bpm before the first tempo)."""
    tpq = score.ticks_per_quarter
    tempos = score.tempos.numpy()
    t = np.asarray(tempos["time"], np.int64)
    mspq = np.asarray(tempos["mspq"], np.float64)
    order = np.argsort(t, kind="stable")
    t, mspq = t[order], mspq[order]
    if len(t) == 0 or t[0] > 0:
        t, mspq = np.r_[0, t], np.r_[500_000.0, mspq]
    keep = np.r_[t[1:] != t[:-1], True]            # several tempos at one tick: the last wins
    t, mspq = t[keep], mspq[keep]
    sec_per_tick = mspq / (1e6 * tpq)
    seg_start = np.r_[0.0, np.cumsum(np.diff(t) * sec_per_tick[:-1])]
    i = np.searchsorted(t, ticks, side="right") - 1
    return seg_start[i] + (ticks - t[i]) * sec_per_tick[i]


def _pedal_ends(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, controls) -> np.ndarray:
    """Note ends (ticks) extended to the release of a sustain pedal held when the key was let go,
    but not past the next strike of the same key."""
    c = controls.numpy()
    sel = c["number"] == SUSTAIN
    if not sel.any() or len(start) == 0:
        return end
    t = np.asarray(c["time"][sel], np.int64)
    down = c["value"][sel] >= 64
    order = np.argsort(t, kind="stable")
    t, down = t[order], down[order]
    was_down = np.r_[False, down[:-1]]
    presses, releases = t[down & ~was_down], t[~down & was_down]
    if len(releases) < len(presses):               # never released: held to the last note end
        releases = np.r_[releases, max(int(end.max()), int(presses[-1]))]
    i = np.searchsorted(presses, end, side="right") - 1
    held = i >= 0
    held[held] &= end[held] < releases[i[held]]
    if not held.any():
        return end
    order = np.lexsort((start, pitch))              # the next strike of the same key
    next_start = np.full(len(start), np.iinfo(np.int64).max)
    same = pitch[order][1:] == pitch[order][:-1]
    next_start[order[:-1][same]] = start[order][1:][same]
    extended = np.minimum(releases[np.maximum(i, 0)], next_start)
    return np.where(held, np.maximum(end, extended), end)


def _note_table(score, config: PianoRollFeatures) -> tuple[dict, dict]:
    """Every kept note as arrays: start and end frame, pitch bin, channel, velocity."""
    lo, hi = PIANO_KEYS if config.pitch_range == "piano" else (0, 128)
    n_inst = 16 if config.per_family else 1
    parts: list[tuple[np.ndarray, ...]] = []
    info = {"notes": 0, "drum_notes": 0}
    for track in score.tracks:
        n = track.notes.numpy()
        if len(n["time"]) == 0:
            continue
        info["drum_notes" if track.is_drum else "notes"] += len(n["time"])
        if track.is_drum and config.drums == "drop":
            continue
        start = np.asarray(n["time"], np.int64)
        duration = np.asarray(n["duration"], np.int64)
        pitch = np.asarray(n["pitch"], np.int64)
        ok = (duration >= 0) & (pitch >= lo) & (pitch < hi)    # end < start: not a note
        start, end, pitch = start[ok], start[ok] + duration[ok], pitch[ok]
        velocity = np.asarray(n["velocity"], np.int64)[ok]
        if config.pedal and not track.is_drum:
            end = _pedal_ends(start, end, pitch, track.controls)
        if track.is_drum and config.drums == "channel":
            channel = n_inst
        else:
            channel = min(int(track.program), 127) // 8 if config.per_family else 0
        parts.append((start, end, pitch - lo, np.full(len(start), channel), velocity))
    empty = np.zeros(0, np.int64)
    nothing = {"start": empty, "end": empty, "pitch": empty, "channel": empty, "velocity": empty,
               "frames": 0}
    if not parts:
        return nothing, info
    start, end, pitch, channel, velocity = (np.concatenate(x) for x in zip(*parts))
    if not len(start):                              # every note outside pitch_range
        return nothing, info
    ticks = np.concatenate([start, end])
    if config.beat_resolution:
        frames = ticks * (config.beat_resolution / score.ticks_per_quarter)
    else:
        frames = _tick_to_seconds(ticks, score) * config.fs
    longest, raw = float(frames.max()), frames
    limit = config.max_frames if config.max_frames is not None else 2**62
    frames = np.floor(np.minimum(frames, limit + 1.0) + 0.5).astype(np.int64)
    start_f, end_f = frames[:len(start)], frames[len(start):]
    end_f = np.maximum(end_f, start_f + 1)
    n_frames = int(end_f.max())
    if config.max_frames is not None and n_frames > config.max_frames:
        info["cut"] = f"{longest:.0f}"
        n_frames = config.max_frames
        keep = start_f < n_frames
        if not keep.any():                          # not a roll of silence: no roll
            info["late"] = f"{float(raw[:len(start)].min()):.0f}"
            return nothing, info
        start_f, end_f = start_f[keep], np.minimum(end_f[keep], n_frames)
        pitch, channel, velocity = pitch[keep], channel[keep], velocity[keep]
    return {"start": start_f, "end": end_f, "pitch": pitch, "channel": channel,
            "velocity": velocity, "frames": n_frames}, info


def _paint(notes: dict, config: PianoRollFeatures, float16: bool = False) -> np.ndarray:
    """Paint the note table into a ``(frames, channels, bins)`` roll, squeezed to one channel.

    Float32, or with ``float16`` (unless notes add up) float16 painted directly: each note
    paints the bit pattern of its float16 value, and the loudest still wins because positive
    float16 numbers are ordered like their bit patterns.
    """
    channels, bins = config.channels, config.bins
    start, end = notes["start"], notes["end"]
    n_frames = notes["frames"]
    velocity = config.values == "velocity"
    value = notes["velocity"] if velocity else np.ones_like(notes["velocity"])
    summing = velocity and config.overlap == "sum"
    scale = np.float32(1 / 127) if velocity else np.float32(1)
    float16 = float16 and not summing
    cell = np.int32 if summing else np.uint16 if float16 else np.uint8
    if float16:                                 # the float16 bits of float32(value) * scale
        value = (np.arange(256, dtype=np.float32) * scale).astype(np.float16).view(np.uint16)[value]
    row = notes["channel"] * bins + notes["pitch"]          # offset of (channel, pitch) in a frame
    n_cells = n_frames * channels * bins
    n_levels = 1 if summing or not velocity else int(np.count_nonzero(np.bincount(value)))
    # Painting note by note costs ~7 ns per (note, frame); by levels ~20 ns per (level, cell).
    # Take the cheaper, so that notes piled on notes (a million-note file) stay bounded by the roll.
    if int((end - start).sum()) <= 2 * n_levels * n_cells + _CHUNK_CELLS:
        grid = _paint_notes(start, end, row, value, n_cells, channels * bins, cell)
    else:
        grid = _paint_levels(start, end, row, value, n_frames, channels * bins, cell)
    grid = grid.reshape(n_frames, channels, bins)
    if config.onsets and len(start):
        np.maximum.at(grid[:, channels - 1], (start, notes["pitch"]), value.astype(cell))
    if float16:
        roll = grid.view(np.float16)
    else:
        roll = grid.astype(np.float32)
        if velocity:
            roll *= scale
    return roll[:, 0] if channels == 1 else roll


def _paint_notes(start, end, row, value, n_cells, frame_cells, cell) -> np.ndarray:
    """Write every (frame, row) cell of every note: fast when notes overlap little. Cells of
    dtype ``cell`` add values up when it is int32, else keep the largest."""
    summing = cell == np.int32
    grid = np.zeros(n_cells, cell)
    length = end - start
    index = np.int32 if n_cells < 2**31 else np.int64
    # cell of step k (counted over the whole chunk) of note j: base_j + (k - first_j) * frame_cells
    base = (start * frame_cells + row).astype(index)
    ends = np.cumsum(length)
    splits = np.searchsorted(ends, np.arange(_CHUNK_CELLS, ends[-1] if len(ends) else 0, _CHUNK_CELLS))
    edges = np.unique(np.r_[0, splits + 1, len(start)].clip(0, len(start)))
    for a, b in zip(edges[:-1], edges[1:]):      # bounded memory: ~_CHUNK_CELLS cells at a time
        ln = length[a:b]
        first = (np.cumsum(ln) - ln).astype(index)
        cells = np.repeat(base[a:b] - first * frame_cells, ln)
        cells += np.arange(len(cells), dtype=index) * index(frame_cells)
        if summing:
            np.add.at(grid, cells, np.repeat(value[a:b].astype(np.int32), ln))
        else:
            np.maximum.at(grid, cells, np.repeat(value[a:b].astype(cell), ln))
    return grid


def _paint_levels(start, end, row, value, n_frames, frame_cells, cell) -> np.ndarray:
    """The same roll from running sums of note starts (+1) and ends (-1): with the notes of each
    value added loudest first, a cell takes the first value that covers it. Costs
    O(notes + values x cells), whatever the number and length of the notes."""
    delta = np.zeros((n_frames + 1) * frame_cells, np.int32)
    on, off = start * frame_cells + row, end * frame_cells + row
    if cell == np.int32:
        np.add.at(delta, on, value.astype(np.int32))
        np.add.at(delta, off, -value.astype(np.int32))
        return np.cumsum(delta.reshape(n_frames + 1, frame_cells), axis=0)[:-1].reshape(-1)
    grid = np.zeros((n_frames, frame_cells), cell)
    cover = np.empty((n_frames + 1, frame_cells), np.int32)
    value = value.astype(np.int64)
    order = np.argsort(-value, kind="stable")
    levels, first = np.unique(-value[order], return_index=True)
    for level, group in zip(-levels, np.split(order, first[1:])):
        np.add.at(delta, on[group], 1)
        np.add.at(delta, off[group], -1)
        np.cumsum(delta.reshape(n_frames + 1, frame_cells), axis=0, out=cover)
        grid[(cover[:-1] > 0) & (grid == 0)] = level
    return grid.reshape(-1)


# -- the pretty_midi-compatible implementation ------------------------------------------------

def _compat_roll(midi: MidiInput, config: PianoRollFeatures) -> tuple[np.ndarray, dict]:
    """``pretty_midi.PrettyMIDI(midi).get_piano_roll(fs).T``, with pretty_midi doing the work."""
    import pretty_midi

    if isinstance(midi, pretty_midi.PrettyMIDI):
        pm = midi
    else:
        data = smf_bytes(midi)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # tempo events on other tracks
                pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
        except Exception as e:                   # mido and pretty_midi raise many kinds
            raise ValueError(f"unreadable MIDI for pretty_midi ({type(e).__name__}: {e})") from None
    instruments = [i for i in pm.instruments if i.notes]
    info = {"notes": sum(len(i.notes) for i in instruments if not i.is_drum),
            "drum_notes": sum(len(i.notes) for i in instruments if i.is_drum)}
    frames = int(config.fs * max((i.get_end_time() for i in instruments), default=0.0))
    if config.max_frames is not None and frames > config.max_frames:
        raise ValueError(f"the roll would have {frames} frames, more than max_frames="
                         f"{config.max_frames}; pretty_midi_compat cannot cut a roll without "
                         f"changing its values: raise max_frames or use the default mode")
    if frames * 128 * 8 * (len(instruments) + 1) > COMPAT_MAX_BYTES:
        raise ValueError(f"pretty_midi would need {frames * 128 * 8 * (len(instruments) + 1) / 2**30:.1f}"
                         f" GiB for {len(instruments)} instruments x {frames} frames "
                         f"(limit {COMPAT_MAX_BYTES / 2**30:.0f} GiB); use the default mode")
    roll = pm.get_piano_roll(fs=config.fs, pedal_threshold=64 if config.pedal else None).T
    if config.pitch_range == "piano":
        roll = roll[:, PIANO_KEYS[0]:PIANO_KEYS[1]]
    return roll, info
