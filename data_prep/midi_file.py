"""MIDI files: reading them as they are found in the wild (used by :mod:`data_prep.midi` for
piano rolls and :mod:`data_prep.synth` for rendering): RIFF MIDI, headers before ``MThd``, long
header chunks, foreign chunks, tracks without End of Track, SMPTE timing -- all made into a
Standard MIDI File (:func:`standard_midi`) before symusic or pretty_midi parses it. A file that
is not MIDI, too large or unreadable raises ``ValueError`` saying why.

And writing the one-track files of the built-in datasets (:func:`one_track_midi`: folk,
polyphony), at a fixed tempo and velocity: any tempo or dynamics marking would tell their
classes apart.
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any, Union

from .discover import shown
from .fileio import FileTooLarge, read_whole

MAX_FILE_BYTES = 64 * 2**20         # real MIDI files are kilobytes; the largest known, a few MB
TICKS_PER_QUARTER = 480             # the built-in datasets' files: 480 ticks per quarter note,
TEMPO_QPM = 120.0                   # 120 quarter notes per minute,
VELOCITY = 80                       # every note at velocity 80, program 0

MidiInput = Union[str, os.PathLike, bytes, bytearray, Any]   # a path, bytes, a PrettyMIDI or a symusic Score


def read_file(path: Union[str, os.PathLike]) -> bytes:
    """The bytes of a MIDI file as they are on disk, in one read (hash these, not a second read:
    the file may change in between). ``ValueError`` when it cannot be read or is larger than
    :data:`MAX_FILE_BYTES` (checked before reading)."""
    try:
        return read_whole(path, MAX_FILE_BYTES)
    except FileTooLarge as e:
        raise ValueError(f"{e.size / 2**20:.0f} MiB is too large for a MIDI file "
                         f"(limit {MAX_FILE_BYTES // 2**20} MiB)") from None
    except OSError as e:
        raise ValueError(f"cannot read {shown(path)}: {e.strerror or e}") from None


def _midi_bytes(midi: MidiInput) -> bytes:
    pm = sys.modules.get("pretty_midi")
    if pm is not None and isinstance(midi, pm.PrettyMIDI):
        buffer = io.BytesIO()
        midi.write(buffer)
        return buffer.getvalue()
    if isinstance(midi, (bytes, bytearray, memoryview)):
        data = bytes(midi)
    elif isinstance(midi, (str, os.PathLike)):
        data = read_file(midi)
    else:
        raise TypeError(f"expected a path, bytes, a pretty_midi.PrettyMIDI or a symusic.Score, "
                        f"got {type(midi).__name__}")
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{len(data) / 2**20:.0f} MiB is too large for a MIDI file")
    return standard_midi(data)


def _standard_chunks(data: bytes) -> bytes:
    """``data`` (starting ``MThd``) with a 6-byte header, its ``MTrk`` chunks only, each ending
    with an End of Track event; the bytes unchanged when they already are so. A track chunk
    whose length runs past the end of the file is left as it is (the parser reports it)."""
    header_len = int.from_bytes(data[4:8], "big")
    pos = 8 + header_len
    tracks, changed = [], header_len != 6
    while pos + 8 <= len(data):
        chunk, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        body = data[pos + 8:pos + 8 + length]
        pos += 8 + length
        if chunk != b"MTrk":
            changed = True
            continue
        if len(body) == length and not body.endswith(b"\xff\x2f\x00"):
            body += b"\x00\xff\x2f\x00"                # delta 0, End of Track
            changed = True
        tracks.append(body if len(body) == length or changed else data[pos - 8 - length:pos])
    if not changed or header_len < 6:
        return data
    return (b"MThd\x00\x00\x00\x06" + data[8:14]
            + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks))


def standard_midi(data: bytes) -> bytes:
    """A Standard MIDI File with metrical timing (ticks per quarter note) for what readers
    expect, from the variants found in the wild:

    - a RIFF MIDI file (``.rmi``, ``RIFF....RMID``): the SMF in its ``data`` chunk;
    - a file with a header before ``MThd`` (MacBinary's 128 bytes): what starts at ``MThd``;
    - a header chunk longer than 6 bytes (the standard lets later versions add fields), chunks
      other than ``MTrk`` (Yamaha XF's ``XFIH``...: readers must skip them), a track without its
      End of Track event: the standard form (:func:`_standard_chunks`);
    - SMPTE time division (a negative frames-per-second byte -24, -25, -29 (29.97 drop-frame)
      or -30 and ticks per frame, e.g. ``0xE728``: 25 fps x 40 = 1000 ticks per second): the
      same events, with ``round(fps) x ticks per frame`` ticks per quarter note and one tempo
      that makes a quarter note last ``round(fps) / fps`` seconds; tempo events, which SMPTE
      time ignores (SMF 1.0, "Time Division"), are dropped. Timing in seconds is unchanged.

    Other bytes are returned unchanged (the parser then says what is wrong).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        at = data.find(b"data", 12)
        if at > 0:
            data = data[at + 8:at + 8 + int.from_bytes(data[at + 4:at + 8], "little")]
    start = data.find(b"MThd", 0, 512)
    if start > 0:
        data = data[start:]
    if data[:4] != b"MThd" or len(data) < 14:
        return data
    data = _standard_chunks(data)
    if not data[12] & 0x80:
        return data
    fps = {232: 24.0, 231: 25.0, 227: 30000 / 1001, 226: 30.0}.get(data[12])
    per_frame = data[13]
    if fps is None or per_frame == 0:
        raise ValueError(f"SMPTE time division {data[12:14].hex()} is not valid (frames per "
                         f"second must be -24, -25, -29 or -30, ticks per frame positive)")
    import mido

    try:
        smf = mido.MidiFile(file=io.BytesIO(data[:12] + b"\x01\xe0" + data[14:]))
    except Exception as e:                   # noqa: BLE001  (mido raises many kinds)
        raise ValueError(f"unreadable MIDI with SMPTE timing ({type(e).__name__}: {e})") from None
    smf.ticks_per_beat = round(fps) * per_frame
    for track in smf.tracks:
        carry = 0
        kept = []
        for msg in track:
            if msg.type == "set_tempo":
                carry += msg.time
                continue
            kept.append(msg.copy(time=msg.time + carry))
            carry = 0
        track[:] = kept
    tempo = round(1e6 * round(fps) / fps)            # microseconds per quarter note
    if smf.tracks:
        smf.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    out = io.BytesIO()
    smf.save(file=out)
    return out.getvalue()


def smf_bytes(midi: MidiInput) -> bytes:
    """The Standard MIDI File bytes of ``midi`` (:func:`_midi_bytes`); ``ValueError`` when they
    are not a MIDI file."""
    data = _midi_bytes(midi)
    if data[:4] != b"MThd":
        raise ValueError("not a MIDI file (it does not start with 'MThd')")
    return data


def read_score(midi: MidiInput):
    """Parse MIDI with symusic into a tick-based ``symusic.Score``; ``ValueError`` if unreadable."""
    import symusic

    if isinstance(midi, symusic.core.ScoreTick):
        score = midi
    elif isinstance(midi, (symusic.core.ScoreQuarter, symusic.core.ScoreSecond)):
        score = midi.to("tick")
    else:
        data = smf_bytes(midi)
        try:
            score = symusic.Score.from_midi(data)
        except RuntimeError as e:            # symusic reports every parse error this way
            reason = str(e).replace("MiniMidi: ", "").replace(": iostream error", "")
            raise ValueError(f"unreadable MIDI ({reason}; the file is probably truncated "
                             f"or corrupt)") from None
    if score.ticks_per_quarter <= 0:
        raise ValueError(f"MIDI header gives {score.ticks_per_quarter} ticks per quarter note; "
                         f"a valid file has a positive value")
    return score


def one_track_midi(notes, track: str, meter: str = "") -> bytes:
    """A one-track MIDI file (program 0) of ``notes`` (``(start tick, duration ticks, pitch)``,
    at :data:`TICKS_PER_QUARTER`) at :data:`TEMPO_QPM` and :data:`VELOCITY`; ``meter`` (``"6/8"``)
    adds a time signature when it is a valid one; ``track`` names the track."""
    import re

    import symusic

    score = symusic.Score(TICKS_PER_QUARTER)
    score.tempos.append(symusic.Tempo(time=0, qpm=TEMPO_QPM))
    m = re.match(r"^\s*(\d+)\s*/\s*(\d+)", meter or "")
    if m and int(m.group(1)) > 0 and int(m.group(2)) in (1, 2, 4, 8, 16, 32):
        score.time_signatures.append(symusic.TimeSignature(time=0, numerator=int(m.group(1)),
                                                           denominator=int(m.group(2))))
    midi_track = symusic.Track(name=track, program=0, is_drum=False)
    for start, duration, pitch in notes:
        midi_track.notes.append(symusic.Note(time=start, duration=duration, pitch=pitch, velocity=VELOCITY))
    score.tracks.append(midi_track)
    return score.dumps_midi()
