"""Decoding, channel handling, resampling and the checks of data_prep.audio."""
import hashlib

import numpy as np
import pytest
import soundfile as sf

from data_prep import AudioFeatures, BadInputError, extract_file, load_audio
from data_prep.audio import decode, fit_channels, resample

SR = 22050


def noise(seconds=0.5, channels=1, seed=0):
    return (np.random.default_rng(seed).uniform(-0.9, 0.9, (int(SR * seconds), channels))).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"),
                                         ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
                                         ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("AIFF", "PCM_S8"),
                                         ("AU", "PCM_16"), ("OGG", "VORBIS")])
def test_decode_any_bit_depth_equals_soundfile_float(tmp_path, fmt, subtype):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, noise(channels=3), SR, format=fmt, subtype=subtype)
    samples, rate = decode(path)
    ref, _ = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SR and samples.dtype == np.float32 and samples.shape == (3, len(ref))
    assert np.array_equal(samples, ref.T)


def test_decoded_arrays_have_canonical_strides(tmp_path):
    """A (1, n) view with stride 4 on its first axis is "contiguous" yet made torch 25x slower."""
    sf.write(tmp_path / "m.wav", noise(), SR, subtype="PCM_16")
    for rate in (None, 16000):
        samples = load_audio(tmp_path / "m.wav", rate).samples
        assert samples.strides == (samples.shape[1] * 4, 4)


def test_channels_mixed_or_kept():
    x = np.stack([np.ones(10), -np.ones(10), 3 * np.ones(10)]).astype(np.float32)
    assert np.allclose(fit_channels(x, mono=True), 1.0) and fit_channels(x).shape == (1, 10)
    assert fit_channels(x, mono=False, channels=2).shape == (2, 10)
    assert np.array_equal(fit_channels(x[:1], mono=False, channels=2), np.stack([x[0], x[0]]))


def test_load_audio_matches_librosa_load_and_checksums_bytes(tmp_path):
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "stereo 44k ü.wav"
    sf.write(path, noise(channels=2), 44100, subtype="PCM_16")
    audio = load_audio(path, sample_rate=SR)
    ref, _ = librosa.load(path, sr=SR)
    assert audio.samples.shape == (1, ref.size)
    assert np.abs(audio.samples[0] - ref).max() < 1e-6
    assert audio.checksum == "sha1:" + hashlib.sha1(path.read_bytes()).hexdigest()
    assert audio.duration == pytest.approx(len(noise()) / 44100)
    x = noise(channels=2)
    assert np.allclose(resample(x.T, 44100, 16000), librosa.resample(x.T, orig_sr=44100, target_sr=16000,
                                                                      res_type="soxr_hq"), atol=1e-6)


def write_bad(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, noise(), SR, subtype="PCM_16")
    data = good.read_bytes()
    files = {"empty.wav": b"", "garbage.wav": bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8)),
             "text.flac": b"this is not audio at all\n" * 20, "header_only.wav": data[:44],
             "truncated.wav": data[:30]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    nan = noise()
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    inf = noise()
    inf[5] = np.inf
    sf.write(tmp_path / "inf.wav", inf, SR, subtype="FLOAT")
    return files


@pytest.mark.parametrize("name,reason", [("empty.wav", "empty file"), ("garbage.wav", "not a readable audio file"),
                                         ("text.flac", "not a readable audio file"),
                                         ("header_only.wav", "empty audio"),
                                         ("truncated.wav", "not a readable audio file"),
                                         ("nan.wav", "NaN or Inf"), ("inf.wav", "NaN or Inf"),
                                         ("missing.wav", "cannot read")])
def test_bad_files_raise_with_name_and_reason(tmp_path, name, reason):
    write_bad(tmp_path)
    with pytest.raises(BadInputError, match=reason) as info:
        extract_file(tmp_path / name, AudioFeatures(n_mels=32))
    assert name in str(info.value)


def test_silence_is_handled(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(SR // 2, np.float32), SR)
    out = extract_file(tmp_path / "silence.wav", AudioFeatures(n_mels=32))
    assert out.shape == (1 + (SR // 2) // 512, 32) and np.all(out == 0)


def test_float_samples_far_outside_one_say_so(tmp_path):
    """A float WAV whose values are far outside [-1, 1] (a DSP bug, a bad conversion) overflows
    the float32 power spectrum: the reason names the peak, not only 'features are not finite'.
    Values such as int16 written as floats (up to 32768) are still read."""
    sf.write(tmp_path / "int16_as_float.wav", noise() * 65536, SR, subtype="FLOAT")
    assert np.isfinite(extract_file(tmp_path / "int16_as_float.wav", AudioFeatures(n_mels=32))).all()
    huge = noise() * 1e20
    huge[0] = 1e20
    sf.write(tmp_path / "huge.wav", huge, SR, subtype="FLOAT")
    with pytest.raises(BadInputError, match=r"huge.wav: sample values up to 1e\+20 .far outside \[-1, 1\]. "
                                            r"overflow the float32 spectrum"):
        extract_file(tmp_path / "huge.wav", AudioFeatures(n_mels=32))
