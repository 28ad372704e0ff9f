"""The fast path from MIDI to cache: float16 rolls painted directly, features handed over from
worker processes in shared memory, statistics summed in the workers -- same cache as before."""

import numpy as np
import pytest
import symusic

from data_prep import PianoRollFeatures, open_cache, piano_roll, prepare
from data_prep.midi import pianoroll_file

from data_prep import extract as E
SLOT_BYTES = E.SLOT_BYTES


def song(seed, seconds=20, tpq=480):
    """A multi-track score: overlapping notes of one key, chords, drums, a sustain pedal."""
    rng = np.random.default_rng(seed)
    score = symusic.Score(tpq)
    ticks = seconds * 2 * tpq                               # 120 bpm
    for k, (program, drum) in enumerate([(0, False), (33, False), (40, False), (0, True)]):
        track = symusic.Track(program=program, is_drum=drum)
        n = int(rng.integers(40, 200))
        track.notes = symusic.core.NoteTickList.from_numpy(
            np.sort(rng.integers(0, ticks, n)).astype(np.int32),
            rng.integers(1, tpq * 2, n).astype(np.int32),
            rng.integers(30 + 10 * k, 60 + 10 * k, n).astype(np.int8),
            rng.integers(1, 128, n).astype(np.int8))
        if k == 0:
            for t in range(0, ticks, 3 * tpq):
                track.controls.append(symusic.ControlChange(t, 64, 127))
                track.controls.append(symusic.ControlChange(t + tpq, 64, 0))
        score.tracks.append(track)
    return score


OPTIONS = [{}, {"values": "binary"}, {"onsets": True}, {"overlap": "sum"},
           {"per_family": True, "drums": "channel", "onsets": True},
           {"pitch_range": "piano", "beat_resolution": 4, "pedal": False}]


@pytest.mark.parametrize("options", OPTIONS)
def test_float16_rolls_are_the_float32_rolls_as_float16(options):
    config = PianoRollFeatures(fs=50, **options)
    for seed in range(3):
        expected = pianoroll_file(song(seed), config).astype(np.float16)
        got = pianoroll_file(song(seed), config, dtype=np.float16)
        assert got.dtype == np.float16 and got.shape == expected.shape
        assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_float16_rolls_of_notes_piled_on_notes():
    """Painted from running sums (the bounded-work path), the float16 roll is the same too."""
    score = symusic.Score(96)
    track = symusic.Track(program=0)
    rng = np.random.default_rng(0)
    track.notes = symusic.core.NoteTickList.from_numpy(
        np.zeros(20_000, np.int32), np.full(20_000, 96 * 20, np.int32),
        rng.integers(0, 128, 20_000).astype(np.int8), rng.integers(1, 128, 20_000).astype(np.int8))
    score.tracks.append(track)
    for options in ({}, {"onsets": True}):
        config = PianoRollFeatures(fs=100, **options)
        expected = pianoroll_file(score, config).astype(np.float16)
        assert np.array_equal(pianoroll_file(score, config, dtype=np.float16), expected)


def test_summed_rolls_that_overflow_float16_are_refused():
    score = symusic.Score(96)
    track = symusic.Track(program=0)
    n = 70_000                                          # 70,000 x velocity 127 on one key
    track.notes = symusic.core.NoteTickList.from_numpy(
        np.zeros(n, np.int32), np.full(n, 96, np.int32), np.full(n, 60, np.int8), np.full(n, 127, np.int8))
    score.tracks.append(track)
    config = PianoRollFeatures(fs=10, overlap="sum")
    assert pianoroll_file(score, config).max() == pytest.approx(70_000)
    with pytest.raises(ValueError, match="overflow the float16 cache.*overlap='max'"):
        pianoroll_file(score, config, dtype=np.float16)


def folder(root, n=7):
    for i in range(n):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        song(i).dump_midi(root / "ab"[i % 2] / f"{i}.mid")
    return root


@pytest.mark.parametrize("slot_bytes", [SLOT_BYTES, 1000])      # shared memory; the pipe
def test_workers_give_the_cache_one_process_gives(tmp_path, monkeypatch, slot_bytes):
    root = folder(tmp_path / "midi")
    features = {"kind": "pianoroll", "fs": 50.0}
    one = prepare("folder", root, tmp_path / "one", features, workers=1, progress=False, shard_items=3)
    monkeypatch.setattr(E, "SLOT_BYTES", slot_bytes)
    handed_over = []
    real = E._from_slot
    monkeypatch.setattr(E, "_from_slot", lambda result, slots: handed_over.append(
        isinstance(result[1], tuple)) or real(result, slots))
    two = prepare("folder", root, tmp_path / "two", features, workers=2, progress=False, shard_items=3)
    assert two.items == one.items and len(one) == 7
    assert handed_over == [slot_bytes == SLOT_BYTES] * 7 or not E.forks()
    for i, item in enumerate(one.items):
        roll = piano_roll(root / item.source, fs=50).astype(np.float16)
        assert np.array_equal(one.features(i), roll) and np.array_equal(two.features(i), roll)
    assert two.meta["stats"] == one.meta["stats"]
    train = np.concatenate([one.features(i).astype(np.float64) for i in one.indices("train")])
    np.testing.assert_allclose(one.stats[0], train.mean(0), atol=1e-6)
    np.testing.assert_allclose(one.stats[1], train.std(0), atol=1e-6)
    for name in ("00000.npy", "00001.npy", "00002.npy"):
        assert (tmp_path / "one" / "shards" / name).read_bytes() == (tmp_path / "two" / "shards" / name).read_bytes()
    assert open_cache(tmp_path / "two").meta["build"]["workers"] == 2
