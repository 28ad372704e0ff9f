"""A score as notes, and its excerpts (used by :mod:`data_prep.polyphony`): any file music21
reads (MusicXML, Humdrum, MIDI...) -> ``[(start tick, duration ticks, pitch)]`` at
:data:`~data_prep.midi_file.TICKS_PER_QUARTER`, every part together, and whole windows of a
number of beats out of them.
"""
from __future__ import annotations

import os

from .midi_file import TICKS_PER_QUARTER

MIN_ONSETS = 8               # an excerpt has at least this many note onsets

Notes = list  # [(start tick, duration ticks, pitch)], sorted


def score_notes(path: os.PathLike | str) -> Notes:
    """The notes of every part of a score as ``[(start tick, duration ticks, pitch)]``, sorted,
    at :data:`TICKS_PER_QUARTER` ticks per quarter note. Tied notes are merged, grace notes
    dropped, repeats played once as written. Raises whatever music21 raises on a bad file."""
    import music21

    score = music21.converter.parse(str(path))
    parts = list(score.parts) or [score]
    notes: list[list[int]] = []
    for part in parts:
        tied: dict[int, int] = {}              # pitch -> index of the note a tie continues
        for n in part.flatten().notes:
            length = n.duration.quarterLength
            if length <= 0 or n.duration.isGrace:
                continue
            start = round(float(n.offset) * TICKS_PER_QUARTER)
            end = round(float(n.offset + length) * TICKS_PER_QUARTER)
            tie = n.tie.type if n.tie is not None else None
            for p in n.pitches:
                pitch = int(round(p.ps))
                if not 0 <= pitch <= 127 or end <= start:
                    continue
                if tie in ("stop", "continue") and pitch in tied:
                    notes[tied[pitch]][1] = end - notes[tied[pitch]][0]
                    i = tied.pop(pitch)
                else:
                    i = len(notes)
                    notes.append([start, end - start, pitch])
                if tie in ("start", "continue"):
                    tied[pitch] = i
    return sorted(tuple(n) for n in notes)


def midi_notes(data: bytes) -> Notes:
    """The notes of a MIDI file written by :func:`one_track_midi` (a cached score)."""
    import symusic

    score = symusic.Score.from_midi(data)
    if score.ticks_per_quarter != TICKS_PER_QUARTER:
        raise ValueError(f"expected {TICKS_PER_QUARTER} ticks per quarter, got {score.ticks_per_quarter}")
    return sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes)


def excerpts(notes: Notes, beats: int, per_piece: int) -> list[tuple[int, Notes]]:
    """``[(start beat, notes shifted to start at 0)]``: the whole windows of ``beats`` quarter
    notes at offsets 0, beats, 2*beats ... with at least :data:`MIN_ONSETS` onsets, at most
    ``per_piece`` of them, evenly spaced (the first and last kept)."""
    span = beats * TICKS_PER_QUARTER
    end = max((s + d for s, d, _ in notes), default=0)
    windows = []
    for k in range(end // span):
        lo, hi = k * span, (k + 1) * span
        inside = [(max(s, lo) - lo, min(s + d, hi) - max(s, lo), p) for s, d, p in notes
                  if s < hi and s + d > lo]
        if sum(1 for s, _, _ in notes if lo <= s < hi) >= MIN_ONSETS:
            windows.append((k * beats, sorted(inside)))
    if len(windows) > per_piece:
        if per_piece == 1:
            keep = [len(windows) // 2]
        else:
            keep = sorted({round(i * (len(windows) - 1) / (per_piece - 1)) for i in range(per_piece)})
        windows = [windows[i] for i in keep]
    return windows
