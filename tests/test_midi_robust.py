"""Bad MIDI files: a clear ValueError with the reason, or a bounded, sensible roll."""
import struct
import tracemalloc
import warnings

import mido
import numpy as np
import pretty_midi
import pytest
import symusic

from data_prep import PianoRollFeatures, piano_roll
from data_prep.midi import pianoroll_file

DEFAULT = PianoRollFeatures()
COMPAT = PianoRollFeatures(pretty_midi_compat=True)


def smf(path, tracks, tpq=480):
    """Write tracks of (absolute tick, mido message) with mido, as any tool would."""
    mf = mido.MidiFile(ticks_per_beat=tpq)
    for events in tracks:
        track, last = mido.MidiTrack(), 0
        for tick, msg in sorted(events, key=lambda e: e[0]):
            track.append(msg.copy(time=tick - last))
            last = tick
        mf.tracks.append(track)
    mf.save(str(path))
    return path


def on(tick, note, channel=0, velocity=90):
    return tick, mido.Message("note_on", note=note, velocity=velocity, channel=channel)


def off(tick, note, channel=0):
    return tick, mido.Message("note_off", note=note, channel=channel)


def tempo(tick, us_per_quarter):
    return tick, mido.MetaMessage("set_tempo", tempo=us_per_quarter)


@pytest.fixture
def good(tmp_path):
    return smf(tmp_path / "good.mid", [[on(0, 60), off(480, 60), on(480, 64), off(960, 64)]])


@pytest.mark.parametrize("config", [DEFAULT, COMPAT], ids=["default", "compat"])
@pytest.mark.parametrize("content, reason", [
    (b"", "not a MIDI file"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(100), "not a MIDI file"),
    ("naïve text with a .mid name\n".encode() * 20, "not a MIDI file"),
    (None, "unreadable MIDI"),                       # truncated, filled in below
])
def test_unreadable_files(tmp_path, good, config, content, reason):
    path = tmp_path / "bad file é.mid"
    path.write_bytes(good.read_bytes()[:40] if content is None else content)
    with pytest.raises(ValueError, match=reason):
        pianoroll_file(path, config)


def test_missing_file_and_header_problems(tmp_path, good):
    with pytest.raises(ValueError, match="cannot read"):
        pianoroll_file(tmp_path / "missing.mid", DEFAULT)
    data = bytearray(good.read_bytes())
    data[12:14] = b"\x00\x00"                          # 0 ticks per quarter note
    (tmp_path / "tpq0.mid").write_bytes(data)
    with pytest.raises(ValueError, match="ticks per quarter"):
        pianoroll_file(tmp_path / "tpq0.mid", DEFAULT)
    data[12:14] = b"\x9c\x28"                          # SMPTE division with -100 frames per second
    (tmp_path / "smpte.mid").write_bytes(data)
    with pytest.raises(ValueError, match="SMPTE time division 9c28 is not valid"):
        pianoroll_file(tmp_path / "smpte.mid", DEFAULT)      # valid SMPTE files: test_files_in_the_wild


@pytest.mark.parametrize("config", [DEFAULT, COMPAT], ids=["default", "compat"])
def test_no_notes_and_only_drums(tmp_path, config):
    empty = smf(tmp_path / "empty.mid", [[tempo(0, 500_000), (10, mido.MetaMessage("end_of_track"))]])
    with pytest.raises(ValueError, match="no notes"):
        pianoroll_file(empty, config)
    assert piano_roll(empty, pretty_midi_compat=config.pretty_midi_compat).shape == (0, 128)
    drums = smf(tmp_path / "drums.mid", [[on(0, 36, channel=9), off(100, 36, channel=9)]])
    with pytest.raises(ValueError, match="only drum notes"):
        pianoroll_file(drums, config)
    if not config.pretty_midi_compat:
        assert pianoroll_file(drums, PianoRollFeatures(drums="keep"))[:, 36].max() > 0


def test_absurd_tempos(tmp_path):
    fast = smf(tmp_path / "fast.mid", [[tempo(0, 1), on(0, 60), off(480 * 1000, 60), on(480 * 1000, 62),
                                        off(480 * 2000, 62)]])
    roll = pianoroll_file(fast, DEFAULT)        # 60 million bpm: 2000 beats in 2 ms
    assert roll.shape == (1, 128) and roll[0, 60] > 0 and roll[0, 62] > 0
    zero = smf(tmp_path / "zero.mid", [[tempo(0, 0), on(0, 60), off(960, 60)]])
    assert pianoroll_file(zero, DEFAULT).shape == (1, 128)
    slow = smf(tmp_path / "slow.mid", [[tempo(0, 0xFFFFFF), on(0, 60), off(480 * 10_000, 60)]])
    with pytest.warns(UserWarning, match="cut at max_frames=100000"):
        roll = pianoroll_file(slow, DEFAULT)    # 16.7 s per beat: 46 hours
    assert roll.shape == (100_000, 128)
    assert pianoroll_file(slow, PianoRollFeatures(beat_resolution=2)).shape == (20_000, 128)


def test_absurd_ticks_and_24_hour_file(tmp_path):
    day = 24 * 3600 * 2 * 480                  # ticks in 24 hours at 120 bpm
    path = smf(tmp_path / "day.mid", [[on(0, 60), off(480, 60), on(day, 62), off(day + 480, 62),
                                       on(2**27, 64), off(2**27 + 1, 64)]])
    tracemalloc.start()
    with pytest.warns(UserWarning, match="cut"):
        roll = pianoroll_file(path, DEFAULT)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert roll.shape == (100_000, 128) and roll[:, 62].sum() == 0 and roll[:50, 60].all()
    assert peak < 200 * 2**20
    with pytest.raises(ValueError, match="largest tick of 134217730"):  # pretty_midi refuses it
        pianoroll_file(path, PianoRollFeatures(pretty_midi_compat=True, max_frames=10**7))
    with pytest.raises(ValueError, match="max_frames"):
        pianoroll_file(smf(tmp_path / "hour.mid", [[on(0, 60), off(480, 60), on(3600 * 960, 62),
                                                    off(3600 * 960 + 1, 62)]]), COMPAT)


def test_end_before_start(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(90, 60, 1.0, 1.5), pretty_midi.Note(90, 62, 0.0, 0.5)]
    inst.notes[0].end = 0.5                     # pretty_midi's constructor refuses it; setters don't
    pm.instruments.append(inst)
    roll = piano_roll(pm, fs=10)
    assert roll[:, 60].sum() == 0 and np.flatnonzero(roll[:, 62]).tolist() == [0, 1, 2, 3, 4]
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(time=960, duration=-480, pitch=60, velocity=90))
    track.notes.append(symusic.Note(time=0, duration=480, pitch=62, velocity=90))
    score.tracks.append(track)
    roll = piano_roll(score, fs=10)
    assert roll[:, 60].sum() == 0 and roll[:, 62].sum() > 0


def _many_notes(groups):
    """A type-0 file of 128 x groups notes: 128 keys struck one tick apart, then let go, again."""
    events = np.zeros((groups, 256, 4), np.uint8)
    events[:, :, 0] = 1                                        # delta time: one tick
    events[:, :128, 1], events[:, 128:, 1] = 0x90, 0x80       # note on, note off
    events[:, :128, 2] = events[:, 128:, 2] = np.arange(128)
    events[:, :128, 3] = 64
    body = events.tobytes() + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96) + b"MTrk" + struct.pack(">I", len(body)) + body


def test_a_million_notes_in_bounded_time_and_memory(tmp_path):
    path = tmp_path / "million.mid"
    path.write_bytes(_many_notes(7813))              # 1,000,064 notes
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = pianoroll_file(path, DEFAULT)       # 2M ticks at 96 tpq, 120 bpm: 3 hours
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert roll.shape == (100_000, 128) and roll.max() == pytest.approx(64 / 127)
    assert peak < 400 * 2**20
    # piled up: every note lasts the whole file (work bounded by the roll, not by the notes)
    stacked = symusic.Score(96)
    track = symusic.Track(program=0)
    rng = np.random.default_rng(0)
    track.notes = symusic.core.NoteTickList.from_numpy(
        np.zeros(200_000, np.int32), np.full(200_000, 96 * 60, np.int32),
        rng.integers(0, 128, 200_000).astype(np.int8), rng.integers(1, 128, 200_000).astype(np.int8))
    stacked.tracks.append(track)
    roll = piano_roll(stacked, fs=100)            # 200,000 notes x 3,000 frames each
    assert roll.shape == (3000, 128) and roll.min() == pytest.approx(127 / 127, abs=0.1)


def test_no_note_in_range_or_before_max_frames_is_a_reason_not_a_roll(tmp_path):
    """Notes all outside the piano's keys, or all after ``max_frames``: the file is skipped with
    the reason. (They gave numpy's 'zero-size array to reduction operation maximum', and a roll
    of 100,000 silent frames stored as an item.)"""
    high = smf(tmp_path / "high.mid", [[on(0, 120), off(480, 120), on(480, 10), off(960, 10)]])
    with pytest.raises(ValueError, match=r"no note in pitch_range='piano' \(2 notes outside it\)"):
        pianoroll_file(high, PianoRollFeatures(pitch_range="piano"))
    with pytest.raises(ValueError, match=r"no note in pitch_range='piano' \(2 notes outside it\)"):
        pianoroll_file(high, PianoRollFeatures(pitch_range="piano", pretty_midi_compat=True))
    assert piano_roll(high, pitch_range="piano").shape == (0, 88)
    late = smf(tmp_path / "late.mid", [[on(10 * 480, 60), off(11 * 480, 60)]])       # at 5 s
    with pytest.raises(ValueError, match="every note starts after max_frames=40 .first at frame 50"):
        pianoroll_file(late, PianoRollFeatures(fs=10, max_frames=40))
    assert piano_roll(late, fs=10, max_frames=40).shape == (0, 128)
    assert pianoroll_file(late, PianoRollFeatures(fs=10, max_frames=60)).shape == (55, 128)


def test_a_cut_roll_is_a_build_warning_not_a_stray_python_warning(tmp_path):
    """A roll cut at max_frames is noted in the summary and meta.json, like a truncated WAV; it
    used to escape from the worker as a raw UserWarning with a line of source code."""
    import json
    import subprocess
    import sys

    for cls, pitch in (("a", 60), ("b", 70)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        smf(tmp_path / "data" / cls / "long.mid", [[on(0, pitch), off(480 * 20, pitch)]])   # 10 s
    run = subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(tmp_path / "data"),
                          "--out", str(tmp_path / "c"), "--kind", "pianoroll", "--fs", "10",
                          "--max-frames", "40", "--workers", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "UserWarning" not in run.stderr and "warning: a/long.mid: piano roll cut at max_frames=40" in run.stderr
    warned = json.loads((tmp_path / "c" / "meta.json").read_text())["build"]["warnings"]
    assert [w["source"] for w in warned] == ["a/long.mid", "b/long.mid"]


@pytest.mark.parametrize("config", [DEFAULT, COMPAT], ids=["default", "compat"])
def test_a_midi_file_is_hashed_from_the_bytes_it_was_read_from(tmp_path, monkeypatch, config):
    """The checksum in the cache must be that of the bytes the roll was made from, as for audio:
    MIDI was parsed from one read and hashed from a second, so a file rewritten in between (a
    sync client, an export still running) got the new file's checksum beside the old roll."""
    import hashlib

    from data_prep import extract, midi
    path = tmp_path / "a.mid"
    smf(path, [[on(0, 60), off(480, 60)]])
    original = path.read_bytes()
    read_pianoroll = midi.read_pianoroll

    def read_then_rewrite(*args, **kwargs):
        roll = read_pianoroll(*args, **kwargs)
        smf(path, [[on(0, 64), off(960, 64)]])
        return roll
    monkeypatch.setattr(midi, "read_pianoroll", read_then_rewrite)
    _, checksum, _, _ = extract.reader(config).read(str(path), config)
    assert checksum == "sha1:" + hashlib.sha1(original).hexdigest()
