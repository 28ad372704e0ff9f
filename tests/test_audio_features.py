"""Spectral features against librosa's definitions, and the config -> cache-layout path.

Tolerances (float32 throughout): filterbanks and linear spectra agree to 1e-5 of their peak,
dB values (log-mel, CQT) to 1e-3 dB, MFCCs to 1e-3 (values of order 10-100).
"""
import numpy as np
import pytest
import torch

from data_prep import AudioFeatures
from data_prep import features as F

SR = 22050


@pytest.fixture(scope="module")
def clip():
    t = np.arange(int(SR * 1.5)) / SR
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa")


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


@pytest.mark.parametrize("kw", [{}, {"htk": True, "norm": None}, {"fmin": 50.0, "fmax": 8000.0, "n_mels": 40}])
def test_mel_filterbank_matches_librosa(librosa, kw):
    ours = F.mel_filterbank(SR, 2048, kw.get("n_mels", 128), kw.get("fmin", 0.0), kw.get("fmax"),
                            kw.get("htk", False), kw.get("norm", "slaney"))
    assert ours.shape == (kw.get("n_mels", 128), 1025) and ours.dtype == np.float32
    assert rel_err(ours, librosa.filters.mel(sr=SR, n_fft=2048, **kw)) < 1e-5


@pytest.mark.parametrize("kw", [{}, {"window": "hamming", "win_length": 1024, "hop_length": 256},
                                {"n_fft": 512, "hop_length": 128, "center": False}])
def test_stft_magnitude_matches_librosa(librosa, clip, kw):
    ours = F.stft_magnitude(clip, **kw)
    ref = np.abs(librosa.stft(clip, pad_mode="constant", **kw))
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) < 1e-5


def test_mel_logmel_mfcc_cqt_match_librosa(librosa, clip):
    mel = librosa.feature.melspectrogram(y=clip, sr=SR)
    assert rel_err(F.mel_spectrogram(clip, SR), mel) < 1e-5
    assert np.abs(F.logmel(clip, SR) - librosa.power_to_db(mel, ref=np.max)).max() < 1e-3
    assert np.abs(F.power_to_db(mel, top_db=None) - librosa.power_to_db(mel, top_db=None)).max() < 1e-3
    assert np.abs(F.mfcc(clip, SR, n_mfcc=30) - librosa.feature.mfcc(y=clip, sr=SR, n_mfcc=30)).max() < 1e-3
    ours = F.cqt(clip, SR, n_bins=48)
    ref = librosa.amplitude_to_db(np.abs(librosa.cqt(clip, sr=SR, n_bins=48)), ref=np.max)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "boxcar", "bartlett"])
def test_windows_are_scipy_periodic_windows(window):
    from scipy.signal import get_window

    padded = F._window(window, 400, 512).numpy()
    assert np.allclose(padded[56:456], get_window(window, 400, fftbins=True)) and not padded[:56].any()


def test_dct_matrix_is_scipy_orthonormal_dct():
    from scipy.fft import dct

    x = np.random.default_rng(1).standard_normal(16)
    assert np.allclose(F.dct_matrix(5, 16).numpy() @ x, dct(x, type=2, norm="ortho")[:5])


def test_tensor_in_tensor_out_and_batches(clip):
    batch = torch.from_numpy(np.stack([clip, 0.5 * clip]))
    out = F.logmel(batch, SR, n_mels=64, top_db=None)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 64, 1 + clip.size // 512)
    # the dB reference is the peak of the whole input, as librosa: half amplitude = -6 dB
    assert torch.allclose(out[0] - out[1], torch.full_like(out[0], 20 * np.log10(2)), atol=1e-3)
    assert F.mel_spectrogram(clip.astype(np.float64), SR).dtype == np.float64


def test_power_to_db_silence_and_top_db():
    assert np.all(F.power_to_db(np.zeros((4, 5)), ref="max") == 0)
    db = F.power_to_db(np.array([1.0, 1e-3, 1e-12]), top_db=40)
    assert np.allclose(db, [0, -30, -40])
    with pytest.raises(ValueError, match="ref"):
        F.power_to_db(np.ones(3), ref="peak")


def test_log_offset_convention(clip):
    mel = F.mel_spectrogram(clip, SR, n_mels=32)
    assert np.allclose(F.logmel(clip, SR, n_mels=32, log_offset=1e-6), np.log(mel + 1e-6), atol=1e-5)


@pytest.mark.parametrize("kind", ["stft", "mel", "logmel", "mfcc", "cqt"])
@pytest.mark.parametrize("mono", [True, False])
def test_compute_features_shapes(clip, kind, mono):
    config = AudioFeatures(kind=kind, n_mels=32, n_mfcc=13, n_bins=36, n_fft=512, hop_length=256,
                           mono=mono, channels=2)
    wave = clip if mono else np.stack([clip, clip[::-1]])
    out = F.compute_features(wave, config)
    assert out.dtype == np.float32
    assert out.shape == (1 + clip.size // 256, *config.feature_shape)
    assert np.isfinite(out).all()


def test_compute_features_equals_public_functions(clip):
    config = AudioFeatures(kind="logmel", n_mels=40, fmin=20.0, fmax=9000.0, top_db=60.0)
    ours = F.compute_features(clip, config)
    ref = F.logmel(clip, SR, n_mels=40, fmin=20.0, fmax=9000.0, top_db=60.0).T
    assert np.array_equal(ours, ref)


def test_long_signals_are_analysed_in_blocks_with_the_same_result(clip, monkeypatch):
    whole = F.logmel(clip, SR, n_fft=512, hop_length=128)
    monkeypatch.setattr(F, "FRAMES_PER_BLOCK", 7)
    assert np.allclose(F.logmel(clip, SR, n_fft=512, hop_length=128), whole, atol=1e-4)
    assert F.stft_magnitude(clip, center=False).shape == (1025, 1 + (clip.size - 2048) // 512)


def test_shorter_than_one_window_gives_one_frame():
    tiny = np.ones(100, np.float32) * 0.1
    assert F.compute_features(tiny, AudioFeatures(center=False)).shape == (1, 128)
    assert F.compute_features(tiny, AudioFeatures()).shape == (1, 128)


def test_config_rejects_impossible_cqt_and_mfcc():
    with pytest.raises(ValueError, match="n_bins"):
        AudioFeatures(kind="cqt", sample_rate=8000, n_bins=96)
    with pytest.raises(ValueError, match="n_mfcc"):
        AudioFeatures(kind="mfcc", n_mels=20, n_mfcc=40)
