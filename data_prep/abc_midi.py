"""One folk tune from ABC notation to a one-track MIDI file (used by :mod:`data_prep.folk`).

music21's ABC tokenizer reads the tune (pitches with key signature and accidentals, lengths with
broken rhythms and tuplets, ties, chords); the notes are laid out in time here -- repeats and
first/second endings expanded, tied notes merged, grace notes and chord symbols left out -- and
written at a fixed 120 quarter notes per minute, velocity 80, program 0 (any tempo or dynamics
marking would tell the collections apart).
"""
from __future__ import annotations

import hashlib
import re
from fractions import Fraction
from typing import Optional

from .midi_file import TICKS_PER_QUARTER, one_track_midi

MIN_NOTES, MIN_BEATS = 8, 6.0
FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")      # an ABC header field line: "T: title"


def digest(text: str) -> str:
    """A stable hash of ``text`` (the folk dataset's order of tunes and melody keys)."""
    return hashlib.sha1(f"folk:{text}".encode()).hexdigest()


def letter_key(abc: str) -> str:
    """The tune's note letters in order (text only): equal for copies of one transcription."""
    body = [line for line in abc.split("\n") if line and not FIELD.match(line) and line[0] != "%"]
    text = re.sub(r'"[^"]*"|![^!]*!|%.*', "", "\n".join(body))
    return digest(re.sub(r"[^A-Ga-g]", "", text))


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
    return one_track_midi(notes, "melody", meter), {"n_notes": len(notes), "beats": round(beats, 3),
                                      "melody_key": digest(shape)}
