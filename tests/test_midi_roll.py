"""data_prep.piano_roll / pianoroll_file: layout, options, pretty_midi compatibility."""
import io

import numpy as np
import pretty_midi
import pytest
import symusic

from data_prep import PianoRollFeatures, piano_roll
from data_prep.midi import pianoroll_file


def midi_file(path, notes, *, tempo=120.0, pedal=(), bends=(), program=0, is_drum=False,
              extra=(), resolution=220):
    """Write a one-instrument file: notes are (pitch, start s, end s, velocity)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo, resolution=resolution)
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    inst.notes = [pretty_midi.Note(v, p, s, e) for p, s, e, v in notes]
    inst.control_changes = [pretty_midi.ControlChange(64, value, t) for t, value in pedal]
    inst.pitch_bends = [pretty_midi.PitchBend(b, t) for t, b in bends]
    pm.instruments.append(inst)
    pm.instruments.extend(extra)
    pm.write(str(path))
    return path


def random_file(path, seed, *, bends=True, pedal=True, drums=True, seconds=6.0):
    """Several instruments with overlapping notes, pedal, pitch bends and drums."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(rng.uniform(60, 180)))
    for k in range(int(rng.integers(1, 5))):
        drum = drums and k == 3
        inst = pretty_midi.Instrument(program=int(rng.integers(0, 128)), is_drum=drum)
        for _ in range(int(rng.integers(5, 60))):
            start = float(rng.uniform(0, seconds))
            end = start + float(rng.exponential(0.4)) + 0.001
            pitch = int(rng.integers(40, 50)) if rng.random() < 0.5 else int(rng.integers(0, 128))
            inst.notes.append(pretty_midi.Note(int(rng.integers(1, 128)), pitch, start, end))
        if pedal and rng.random() < 0.7:
            for t in np.sort(rng.uniform(0, seconds + 1, int(rng.integers(1, 8)))):
                inst.control_changes.append(
                    pretty_midi.ControlChange(64, int(rng.integers(0, 128)), float(t)))
        if bends and rng.random() < 0.6:
            for t in np.sort(rng.uniform(0, seconds, int(rng.integers(1, 6)))):
                inst.pitch_bends.append(pretty_midi.PitchBend(int(rng.integers(-8192, 8192)), float(t)))
        pm.instruments.append(inst)
    pm.write(str(path))
    return path


def test_layout_values_and_inputs(tmp_path):
    path = midi_file(tmp_path / "one.mid", [(60, 0.5, 1.0, 100)])
    roll = piano_roll(path, fs=10)
    assert roll.shape == (10, 128) and roll.dtype == np.float32     # (frames, pitches)
    assert np.flatnonzero(roll[:, 60]).tolist() == [5, 6, 7, 8, 9]
    np.testing.assert_allclose(roll[5, 60], 100 / 127, rtol=1e-6)
    assert roll.sum() == pytest.approx(5 * 100 / 127, rel=1e-5)
    # the same roll from a path, bytes, a PrettyMIDI and a symusic Score
    for other in (str(path), path.read_bytes(), pretty_midi.PrettyMIDI(str(path)), symusic.Score(str(path))):
        np.testing.assert_array_equal(piano_roll(other, fs=10), roll)
    binary = piano_roll(path, fs=10, values="binary", pitch_range="piano")
    assert binary.shape == (10, 88) and set(np.unique(binary)) == {0.0, 1.0}
    np.testing.assert_array_equal(binary[:, 60 - 21], roll[:, 60] > 0)


def test_beat_resolution_is_tempo_invariant(tmp_path):
    quarter = lambda bpm: 60 / bpm
    rolls = []
    for bpm in (60.0, 150.0):
        q = quarter(bpm)
        rolls.append(piano_roll(midi_file(tmp_path / f"{bpm}.mid",
                                          [(60, 0, q, 90), (64, q, 2.5 * q, 90), (67, 2 * q, 4 * q, 90)],
                                          tempo=bpm), beat_resolution=4))
    np.testing.assert_array_equal(rolls[0], rolls[1])
    assert rolls[0].shape == (16, 128)
    assert np.flatnonzero(rolls[0][:, 64]).tolist() == list(range(4, 10))


def test_short_notes_keep_one_frame_and_rounding(tmp_path):
    path = midi_file(tmp_path / "short.mid", [(60, 0.0, 0.01, 80), (62, 0.26, 0.44, 80)])
    roll = piano_roll(path, fs=10)
    assert np.flatnonzero(roll[:, 60]).tolist() == [0]
    assert np.flatnonzero(roll[:, 62]).tolist() == [3]              # 2.6 -> 3, 4.4 -> 4


def test_overlap_max_and_sum(tmp_path):
    second = pretty_midi.Instrument(program=40)
    second.notes = [pretty_midi.Note(100, 60, 0.0, 1.0)]
    path = midi_file(tmp_path / "overlap.mid", [(60, 0.5, 1.5, 40)], extra=[second])
    top = piano_roll(path, fs=10)
    total = piano_roll(path, fs=10, overlap="sum")
    np.testing.assert_allclose(top[5:10, 60], 100 / 127, rtol=1e-6)
    np.testing.assert_allclose(total[5:10, 60], 140 / 127, rtol=1e-6)
    np.testing.assert_allclose(total[10:15, 60], 40 / 127, rtol=1e-6)
    np.testing.assert_array_equal(top[:5], total[:5])


def test_sustain_pedal(tmp_path):
    path = midi_file(tmp_path / "pedal.mid", [(60, 0.0, 0.5, 90), (64, 0.1, 0.2, 90), (64, 0.8, 0.9, 90)],
                     pedal=[(0.25, 127), (1.2, 0)])
    held = piano_roll(path, fs=10)
    dry = piano_roll(path, fs=10, pedal=False)
    assert np.flatnonzero(dry[:, 60]).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(held[:, 60]).tolist() == list(range(12))  # held to the release at 1.2 s
    # 64 was let go before the pedal went down at 0.25 s: not held; its second strike is
    # let go while the pedal is down: held to 1.2 s
    assert np.flatnonzero(held[:, 64]).tolist() == [1] + list(range(8, 12))


def test_pedal_stops_at_the_next_strike_of_the_key(tmp_path):
    path = midi_file(tmp_path / "restrike.mid", [(60, 0.0, 0.2, 90), (60, 0.6, 0.7, 50)],
                     pedal=[(0.1, 127), (1.0, 0)])
    roll = piano_roll(path, fs=10)
    np.testing.assert_allclose(roll[:6, 60], 90 / 127, rtol=1e-6)    # held until re-struck
    np.testing.assert_allclose(roll[6:10, 60], 50 / 127, rtol=1e-6)


def test_drums_families_and_onsets(tmp_path):
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.05), pretty_midi.Note(100, 38, 0.5, 0.55)]
    path = midi_file(tmp_path / "band.mid", [(40, 0.0, 1.0, 127), (40, 1.0, 1.2, 64)],
                     program=33, extra=[drums])                        # 33: fingered bass
    dropped = piano_roll(path, fs=10)
    assert dropped[:, 36].sum() == 0 and dropped[:, 38].sum() == 0
    kept = piano_roll(path, fs=10, drums="keep")
    assert kept[0, 36] > 0 and kept[5, 38] > 0
    roll = piano_roll(path, fs=10, drums="channel", per_family=True, onsets=True)
    config = PianoRollFeatures(fs=10, drums="channel", per_family=True, onsets=True)
    assert roll.shape == (12, *config.feature_shape) == (12, 18, 128)
    assert np.flatnonzero(roll[:, 4, 40]).tolist() == list(range(12))  # family 4 = bass
    assert roll[:, [c for c in range(16) if c != 4]].sum() == 0
    assert roll[0, 16, 36] > 0 and roll[5, 16, 38] > 0                 # drums channel
    assert np.flatnonzero(roll[:, 17, 40]).tolist() == [0, 10]         # onsets
    np.testing.assert_allclose(roll[10, 17, 40], 64 / 127, rtol=1e-6)
    assert roll[0, 17, 36] > 0                                         # drum onsets too


@pytest.mark.parametrize("fs", [100, 31.25])
def test_compat_mode_is_pretty_midi(tmp_path, fs):
    for seed in range(25):
        path = str(random_file(tmp_path / f"r{seed}.mid", seed))
        expected = pretty_midi.PrettyMIDI(path).get_piano_roll(fs=fs).T
        got = piano_roll(path, fs=fs, pretty_midi_compat=True)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), path
    no_pedal = piano_roll(path, fs=fs, pretty_midi_compat=True, pedal=False)
    assert np.array_equal(no_pedal, pretty_midi.PrettyMIDI(path).get_piano_roll(fs, pedal_threshold=None).T)
    piano = piano_roll(path, fs=fs, pretty_midi_compat=True, pitch_range="piano")
    assert np.array_equal(piano, expected[:, 21:109])


def test_default_mode_matches_pretty_midi_on_the_frame_grid(tmp_path):
    """With notes on frame boundaries, no pedal and no bends, the fast path sums the same notes."""
    rng = np.random.default_rng(0)
    for seed in range(10):
        notes = []          # same-pitch notes of one instrument must not overlap: MIDI cannot
        for pitch in range(30, 40):                     # say which note-off ends which note-on
            t = int(rng.integers(0, 20))
            while t < 200:
                end = t + int(rng.integers(1, 30))
                notes.append((pitch, t / 32, end / 32, int(rng.integers(1, 128))))
                t = end + int(rng.integers(0, 10))
        # 1/32 s = 16 ticks, exactly (binary fractions): no rounding question on either side
        path = midi_file(tmp_path / f"grid{seed}.mid", notes, tempo=120.0, resolution=256)
        expected = pretty_midi.PrettyMIDI(str(path)).get_piano_roll(fs=32, pedal_threshold=None).T
        got = piano_roll(path, fs=32, overlap="sum", pedal=False) * 127
        np.testing.assert_allclose(got, expected[:len(got)], atol=1e-3)


def test_pianoroll_file_shapes(tmp_path):
    path = random_file(tmp_path / "r.mid", 3, drums=True)
    for options in ({}, {"beat_resolution": 4, "pitch_range": "piano"}, {"onsets": True},
                    {"per_family": True, "drums": "channel"}, {"pretty_midi_compat": True, "fs": 20}):
        config = PianoRollFeatures(**options)
        features = pianoroll_file(path, config)
        assert features.dtype == np.float32
        assert features.shape[1:] == config.feature_shape and len(features) > 0


def test_config_rules():
    with pytest.raises(ValueError, match="beat_resolution"):
        PianoRollFeatures(pretty_midi_compat=True, beat_resolution=4)
    with pytest.raises(ValueError, match="per_family"):
        PianoRollFeatures(pretty_midi_compat=True, per_family=True)
    with pytest.raises(ValueError, match="drums"):
        PianoRollFeatures(per_family=True, drums="keep")
    with pytest.raises(ValueError, match="max_frames"):
        PianoRollFeatures(max_frames=0)
    assert PianoRollFeatures(pretty_midi_compat=True).overlap == "sum"
    with pytest.raises(ValueError, match="values"):
        piano_roll(b"MThd", values="loud")
    with pytest.raises(TypeError, match="expected a path"):
        piano_roll(12)


def test_bytes_io_of_pretty_midi_write_round_trips(tmp_path):
    pm = pretty_midi.PrettyMIDI(str(random_file(tmp_path / "x.mid", 7)))
    buffer = io.BytesIO()
    pm.write(buffer)
    np.testing.assert_array_equal(piano_roll(buffer.getvalue()), piano_roll(pm))
