"""Spectral features: pure functions on numpy arrays or torch tensors, librosa's definitions.

Public functions take a waveform ``(..., samples)`` and return ``(..., bins, frames)`` like
librosa and torchaudio; a numpy input gives a numpy output, a tensor input a tensor (on its
device). They match librosa (tested): ``center=True`` pads with zeros (librosa's
``pad_mode="constant"``), windows come from ``scipy.signal.get_window``, mel filterbanks use
the Slaney scale and area normalisation (``htk=False, norm="slaney"``), dB is
``10 * log10(max(amin, S)) - 10 * log10(max(amin, ref))`` clipped to ``top_db`` below the peak.

=================  ==========================================  ===========================
config ``kind``    function                                    values
=================  ==========================================  ===========================
``stft``           :func:`stft_magnitude`                      linear magnitude
``mel``            :func:`mel_spectrogram`                     mel power (``power=2``)
``logmel``         :func:`logmel`                              mel power in dB, ref = peak
``mfcc``           :func:`mfcc`                                DCT-II (ortho) of mel dB
``cqt``            :func:`cqt` (librosa's CQT)                 magnitude in dB, ref = peak
=================  ==========================================  ===========================

:func:`compute_features` and :func:`extract_audio_file` apply an
:class:`~data_prep.config.AudioFeatures` and return the cache layout ``(frames, *feature_shape)``.
They run the same code frames-first, skipping the transposes, with the mel filterbank applied
in blocks of adjacent bands (:class:`MelFilterbank`), which is several times cheaper than the
dense product because each band covers a few FFT bins only.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from .audio import BadInputError, load_audio
from .discover import shown
from .config import AudioFeatures

Array = Union[np.ndarray, torch.Tensor]
Ref = Union[float, str, Callable]

C1_HZ = 32.70319566257483   # librosa.note_to_hz("C1"), the default lowest CQT bin


# -- array plumbing ---------------------------------------------------------------------------
def _tensor(x: Array) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)``; numpy input is shared, not copied, when it is float and laid
    out canonically (a ``(1, n)`` view with stride 1 on its first axis is "contiguous" to numpy
    and torch alike, yet sends torch's kernels down paths 25x slower: it is copied)."""
    was_numpy = not isinstance(x, torch.Tensor)
    if was_numpy:
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating)):
            x = x.astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not (x.is_floating_point() or x.is_complex()):
        x = x.float()
    expected = 1
    for size, stride in zip(reversed(x.shape), reversed(x.stride())):
        if stride != expected:
            x = x.clone(memory_format=torch.contiguous_format)
            break
        expected *= size
    return x, was_numpy


def _out(x: torch.Tensor, was_numpy: bool) -> Array:
    return x.numpy() if was_numpy else x


# -- windows and frames -----------------------------------------------------------------------
_TORCH_WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window,
                  "blackman": torch.blackman_window}


@lru_cache(maxsize=16)
def _window(window: str, win_length: int, n_fft: int) -> torch.Tensor:
    """The periodic window (``scipy.signal.get_window(window, win_length, fftbins=True)``),
    centred in ``n_fft`` samples. The common ones are built by torch: importing scipy.signal
    takes seconds."""
    if window in _TORCH_WINDOWS:
        w = _TORCH_WINDOWS[window](win_length, periodic=True, dtype=torch.float64).numpy()
    elif window in ("boxcar", "rectangular", "ones"):
        w = np.ones(win_length)
    else:
        from scipy.signal import get_window

        w = np.asarray(get_window(window, win_length, fftbins=True), dtype=np.float64)
    left = (n_fft - win_length) // 2
    w = np.pad(w, (left, n_fft - win_length - left))    # centred in the FFT frame, as librosa
    return torch.from_numpy(w)


FRAMES_PER_BLOCK = 4096   # long signals are analysed this many frames at a time


def _spectral_frames(x: torch.Tensor, n_fft: int, hop_length: int, win_length: Union[int, None],
                     window: str, center: bool, reduce: Callable[[torch.Tensor], torch.Tensor]
                     ) -> torch.Tensor:
    """``reduce`` of the complex STFT, frames first: ``(..., samples) -> (..., frames, k)``.

    ``reduce`` maps a complex block ``(..., frames, n_fft // 2 + 1)`` to ``(..., frames, k)``
    (a magnitude, a mel filterbank...). Signals longer than :data:`FRAMES_PER_BLOCK` frames are
    analysed block by block, so the frame and spectrum temporaries stay near 70 MB however long
    the file is. A signal shorter than one window is zero-padded to one frame (librosa raises).
    """
    if center:
        x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    if x.shape[-1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    w = _window(window, win_length or n_fft, n_fft).to(x.device, x.dtype)
    n_frames = 1 + (x.shape[-1] - n_fft) // hop_length
    blocks = []
    for start in range(0, n_frames, FRAMES_PER_BLOCK):
        stop = min(n_frames, start + FRAMES_PER_BLOCK)
        part = x[..., start * hop_length:(stop - 1) * hop_length + n_fft]
        blocks.append(reduce(torch.fft.rfft(part.unfold(-1, n_fft, hop_length) * w)))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-2)


def _magnitude(spec: torch.Tensor, power: float, inplace: bool = False) -> torch.Tensor:
    """``|spec| ** power``; the square of a complex is computed without a square root, in
    ``spec``'s own memory when ``inplace`` (about half the time: no 2x-sized temporary)."""
    if power == 2.0:
        parts = torch.view_as_real(spec)
        parts = parts.square_() if inplace else parts.square()
        return parts[..., 0] + parts[..., 1]
    mag = spec.abs()
    return mag if power == 1.0 else mag.pow(power)


def stft_magnitude(waveform: Array, n_fft: int = 2048, hop_length: int = 512,
                   win_length: Union[int, None] = None, window: str = "hann", center: bool = True,
                   power: float = 1.0) -> Array:
    """STFT magnitude ``|X| ** power``: ``(..., samples) -> (..., n_fft // 2 + 1, frames)``.

    Equals ``np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
    window=window, center=center, pad_mode="constant")) ** power``.
    Frames: ``1 + samples // hop_length`` when ``center``.
    """
    x, was_numpy = _tensor(waveform)
    mag = _spectral_frames(x, n_fft, hop_length, win_length, window, center,
                           lambda spec: _magnitude(spec, power, inplace=True))
    return _out(mag.transpose(-1, -2), was_numpy)


# -- mel scale and filterbank -----------------------------------------------------------------
_SLANEY_HZ_PER_MEL = 200.0 / 3     # linear part: 0..1000 Hz is 0..15 mel
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0   # log part: 27 mels per factor 6.4 in frequency


def hz_to_mel(hz: Union[float, np.ndarray], htk: bool = False) -> np.ndarray:
    """Hz to mel: the Slaney (Auditory Toolbox) scale, or HTK's ``2595 log10(1 + f / 700)``."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log, linear)


def mel_to_hz(mel: Union[float, np.ndarray], htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = mel * _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, log, linear)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: Union[float, None] = None, htk: bool = False,
                   norm: Union[str, None] = "slaney") -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` float32, as ``librosa.filters.mel``.

    Band ``m`` rises from mel point ``m`` to ``m + 1`` and falls to ``m + 2``, with
    ``n_mels + 2`` points equally spaced in mel between ``fmin`` and ``fmax`` (Hz, default
    ``sample_rate / 2``). ``norm="slaney"`` scales each band by ``2 / bandwidth_hz`` (constant
    energy per band); ``None`` leaves peaks at 1. The result is read-only (it is cached).
    """
    if norm not in ("slaney", None):
        raise ValueError(f"mel_filterbank: norm must be 'slaney' or None, got {norm!r}")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    bin_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    points_hz = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(points_hz)
    to_point = points_hz[:, None] - bin_hz[None, :]     # distance from each bin up to each point
    rising = -to_point[:-2] / widths[:-1, None]
    falling = to_point[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (points_hz[2:] - points_hz[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


class MelFilterbank:
    """A mel filterbank applied frames-first in blocks of adjacent bands.

    ``fb(power)`` maps ``(..., frames, n_fft // 2 + 1) -> (..., frames, n_mels)``, equal to
    ``power @ weights.T`` where ``weights`` is :func:`mel_filterbank`; each block of
    ``block`` bands multiplies only the FFT bins it covers.
    """

    def __init__(self, weights: np.ndarray, block: int = 16):
        self.n_mels, self.n_bins = weights.shape
        self.blocks: list[tuple[int, int, torch.Tensor]] = []
        for start in range(0, self.n_mels, block):
            w = weights[start:start + block]
            used = np.flatnonzero(w.any(axis=0))
            lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)
            self.blocks.append((lo, hi, torch.from_numpy(np.ascontiguousarray(w[:, lo:hi].T))))

    def __call__(self, power: torch.Tensor) -> torch.Tensor:
        parts = [power[..., lo:hi] @ w.to(power.device, power.dtype) for lo, hi, w in self.blocks]
        return torch.cat(parts, dim=-1)


@lru_cache(maxsize=16)
def _mel_filterbank_blocks(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                           fmax: Union[float, None], htk: bool, norm: Union[str, None]) -> MelFilterbank:
    return MelFilterbank(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm))


def _mel_frames(x: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int,
                win_length: Union[int, None], window: str, center: bool, n_mels: int, fmin: float,
                fmax: Union[float, None], power: float, htk: bool, norm: Union[str, None]) -> torch.Tensor:
    fb = _mel_filterbank_blocks(sample_rate, n_fft, n_mels, float(fmin),
                                None if fmax is None else float(fmax), htk, norm)
    return _spectral_frames(x, n_fft, hop_length, win_length, window, center,
                            lambda spec: fb(_magnitude(spec, power, inplace=True)))


def mel_spectrogram(waveform: Array, sample_rate: int = 22050, n_fft: int = 2048,
                    hop_length: int = 512, win_length: Union[int, None] = None,
                    window: str = "hann", center: bool = True, n_mels: int = 128,
                    fmin: float = 0.0, fmax: Union[float, None] = None, power: float = 2.0,
                    htk: bool = False, norm: Union[str, None] = "slaney") -> Array:
    """Mel spectrogram ``(..., samples) -> (..., n_mels, frames)``: :func:`mel_filterbank`
    applied to ``|STFT| ** power``. Equals ``librosa.feature.melspectrogram`` with the same
    arguments and ``pad_mode="constant"``.
    """
    x, was_numpy = _tensor(waveform)
    mel = _mel_frames(x, sample_rate, n_fft, hop_length, win_length, window, center, n_mels,
                      fmin, fmax, power, htk, norm)
    return _out(mel.transpose(-1, -2), was_numpy)


# -- decibels ---------------------------------------------------------------------------------
def _ref_value(s: torch.Tensor, ref: Ref) -> float:
    """The reference of a dB conversion: a number, ``"max"`` (of ``s``) or a callable of ``s``."""
    if isinstance(ref, str):
        if ref != "max":
            raise ValueError(f"ref must be a number, 'max' or a callable, got {ref!r}")
        return s.max().item() if s.numel() else 1.0
    return float(ref(s)) if callable(ref) else float(ref)


def _db(s: torch.Tensor, ref: Ref, amin: float, top_db: Union[float, None]) -> torch.Tensor:
    ref_value = _ref_value(s, ref)
    db = torch.log10(s.clamp(min=amin)).mul_(10.0)
    db -= 10.0 * math.log10(max(amin, abs(ref_value)))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be non-negative or None, got {top_db!r}")
        db = db.clamp_(min=db.max().item() - top_db)
    return db


def power_to_db(S: Array, ref: Ref = 1.0, amin: float = 1e-10,
                top_db: Union[float, None] = 80.0) -> Array:
    """Power to decibels, as ``librosa.power_to_db``: ``10 log10(max(amin, S) / max(amin, ref))``,
    then values more than ``top_db`` below the maximum are raised to it.

    ``ref`` is a number, ``"max"`` (the maximum of ``S``, so the peak is 0 dB) or a callable
    of ``S``. The maximum is taken over the whole array, as librosa does.
    """
    s, was_numpy = _tensor(S)
    if s.is_complex():
        s = _magnitude(s, 2.0)
    return _out(_db(s, ref, amin, top_db), was_numpy)


def amplitude_to_db(S: Array, ref: Ref = 1.0, amin: float = 1e-5,
                    top_db: Union[float, None] = 80.0) -> Array:
    """Magnitude to decibels, as ``librosa.amplitude_to_db``: ``power_to_db(S**2, ref**2, amin**2)``."""
    s, was_numpy = _tensor(S)
    s = s.abs()
    return _out(_db(s.square(), _ref_value(s, ref) ** 2, amin ** 2, top_db), was_numpy)


def _log(mel: torch.Tensor, ref: Ref, amin: float, top_db: Union[float, None],
         log_offset: Union[float, None]) -> torch.Tensor:
    if log_offset is not None:
        return torch.log(mel + log_offset)
    return _db(mel, ref, amin, top_db)


def logmel(waveform: Array, sample_rate: int = 22050, n_fft: int = 2048, hop_length: int = 512,
           win_length: Union[int, None] = None, window: str = "hann", center: bool = True,
           n_mels: int = 128, fmin: float = 0.0, fmax: Union[float, None] = None,
           power: float = 2.0, htk: bool = False, norm: Union[str, None] = "slaney",
           ref: Ref = "max", amin: float = 1e-10, top_db: Union[float, None] = 80.0,
           log_offset: Union[float, None] = None) -> Array:
    """Log-mel spectrogram ``(..., samples) -> (..., n_mels, frames)``, in dB.

    ``power_to_db(mel_spectrogram(...), ref=ref, amin=amin, top_db=top_db)``: with the default
    ``ref="max"`` the loudest bin of the clip is 0 dB and everything is in ``[-top_db, 0]``.
    With ``log_offset`` set, returns ``log(mel + log_offset)`` (natural log) instead, the other
    common convention; ``ref``, ``amin`` and ``top_db`` are then unused.
    """
    x, was_numpy = _tensor(waveform)
    mel = _mel_frames(x, sample_rate, n_fft, hop_length, win_length, window, center, n_mels,
                      fmin, fmax, power, htk, norm)
    return _out(_log(mel, ref, amin, top_db, log_offset).transpose(-1, -2), was_numpy)


# -- MFCC -------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(n_out, n_in)`` float64: row ``k`` is
    ``sqrt(2 / n_in) cos(pi k (n + 1/2) / n_in)``, row 0 scaled by ``1 / sqrt(2)``
    (``scipy.fft.dct(x, type=2, norm="ortho")[:n_out] == dct_matrix(n_out, n_in) @ x``)."""
    n = np.arange(n_in) + 0.5
    k = np.arange(n_out)[:, None]
    basis = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * n / n_in)
    basis[0] /= np.sqrt(2.0)
    return torch.from_numpy(basis)


def _mfcc_frames(mel: torch.Tensor, n_mfcc: int, ref: Ref, amin: float,
                 top_db: Union[float, None], log_offset: Union[float, None] = None) -> torch.Tensor:
    if n_mfcc > mel.shape[-1]:
        raise ValueError(f"n_mfcc={n_mfcc} must be at most n_mels={mel.shape[-1]}")
    db = _log(mel, ref, amin, top_db, log_offset)
    return db @ dct_matrix(n_mfcc, mel.shape[-1]).T.to(db.device, db.dtype)


def mfcc(waveform: Array, sample_rate: int = 22050, n_mfcc: int = 20, n_fft: int = 2048,
         hop_length: int = 512, win_length: Union[int, None] = None, window: str = "hann",
         center: bool = True, n_mels: int = 128, fmin: float = 0.0,
         fmax: Union[float, None] = None, power: float = 2.0, htk: bool = False,
         norm: Union[str, None] = "slaney", ref: Ref = 1.0, amin: float = 1e-10,
         top_db: Union[float, None] = 80.0) -> Array:
    """MFCC ``(..., samples) -> (..., n_mfcc, frames)``, as ``librosa.feature.mfcc``:
    the orthonormal DCT-II of ``power_to_db(mel_spectrogram(...), ref=1.0, top_db=80)`` over
    mel bands, first ``n_mfcc`` coefficients.
    """
    x, was_numpy = _tensor(waveform)
    mel = _mel_frames(x, sample_rate, n_fft, hop_length, win_length, window, center, n_mels,
                      fmin, fmax, power, htk, norm)
    return _out(_mfcc_frames(mel, n_mfcc, ref, amin, top_db).transpose(-1, -2), was_numpy)


# -- CQT --------------------------------------------------------------------------------------
def cqt(waveform: Array, sample_rate: int = 22050, hop_length: int = 512,
        fmin: Union[float, None] = None, n_bins: int = 84, bins_per_octave: int = 12,
        window: str = "hann", db: bool = True, ref: Ref = "max", amin: float = 1e-5,
        top_db: Union[float, None] = 80.0) -> Array:
    """Constant-Q transform ``(..., samples) -> (..., n_bins, frames)`` by ``librosa.cqt``.

    Returns ``amplitude_to_db(|C|, ref=ref, amin=amin, top_db=top_db)`` when ``db`` (the
    ``cqt`` feature kind), else the magnitude ``|C|``. ``fmin`` defaults to C1 (32.70 Hz).
    Frames: ``1 + samples // hop_length``.
    """
    import librosa

    x, was_numpy = _tensor(waveform)
    y = x.detach().cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # "n_fft too large" for clips shorter than a filter
        c = np.abs(librosa.cqt(y, sr=sample_rate, hop_length=hop_length, fmin=fmin or C1_HZ,
                               n_bins=n_bins, bins_per_octave=bins_per_octave, window=window))
    out = torch.from_numpy(np.ascontiguousarray(c.astype(y.dtype, copy=False)))
    if db:
        out = amplitude_to_db(out, ref=ref, amin=amin, top_db=top_db)
    return out.numpy() if was_numpy else out.to(x.device)


# -- configs to cache layout ------------------------------------------------------------------
def compute_features(waveform: Array, config: AudioFeatures) -> np.ndarray:
    """Apply a feature config to a waveform already at ``config.sample_rate``.

    Args:
        waveform: ``(samples,)`` or ``(channels, samples)``; one channel when ``config.mono``,
            ``config.channels`` otherwise.
        config: the :class:`~data_prep.config.AudioFeatures` recipe.

    Returns:
        ``(frames, *config.feature_shape)`` float32: ``(frames, bins)`` or
        ``(frames, channels, bins)``. dB kinds are referenced to the peak over all channels.
    """
    x, _ = _tensor(waveform)
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if not x.is_floating_point():
        raise ValueError(f"waveform must be real, got {x.dtype}")
    x = x.float()
    c = config
    if c.kind == "cqt":
        # amin is a floor on power; on magnitudes that is sqrt(amin) (1e-5, librosa's default)
        out = cqt(x, c.sample_rate, c.hop_length, c.fmin or None, c.n_bins, c.bins_per_octave,
                  c.window, True, "max", math.sqrt(c.amin), c.top_db).transpose(-1, -2)
    elif c.kind == "stft":
        out = _spectral_frames(x, c.n_fft, c.hop_length, c.win_length, c.window, c.center,
                               lambda spec: _magnitude(spec, 1.0))
    else:
        mel = _mel_frames(x, c.sample_rate, c.n_fft, c.hop_length, c.win_length, c.window,
                          c.center, c.n_mels, c.fmin, c.fmax, c.power, c.htk, c.mel_norm)
        if c.kind == "logmel":
            out = _log(mel, "max", c.amin, c.top_db, c.log_offset)
        elif c.kind == "mfcc":
            out = _mfcc_frames(mel, c.n_mfcc, 1.0, c.amin, c.top_db, c.log_offset)
        else:
            out = mel
    out = out.numpy().astype(np.float32, copy=False)         # (channels, frames, bins)
    return out[0] if c.mono else np.ascontiguousarray(out.transpose(1, 0, 2))


def extract_audio(path: Union[str, Path], config: AudioFeatures) -> tuple[np.ndarray, "object"]:
    """Like :func:`extract_audio_file`, also returning the :class:`~data_prep.audio.Audio`
    record (checksum, duration) with its samples dropped."""
    audio = load_audio(path, config.sample_rate, config.mono, config.channels)
    try:
        features = compute_features(audio.samples, config)
    except (RuntimeError, ValueError) as e:
        raise BadInputError(f"{shown(path)}: feature extraction failed ({e})") from None
    if not np.isfinite(features).all():
        peak = float(np.abs(audio.samples).max())      # the samples are finite (load_audio checks)
        if peak > 1e6:
            raise BadInputError(f"{shown(path)}: sample values up to {peak:.3g} (far outside [-1, 1]) overflow "
                                f"the float32 spectrum; the file is damaged or was written unscaled")
        raise BadInputError(f"{shown(path)}: features are not finite")
    audio.samples = audio.samples[:, :0]
    return features, audio


def extract_audio_file(path: Union[str, Path], config: AudioFeatures) -> np.ndarray:
    """Decode, resample and analyse one audio file with ``config``.

    Returns ``(frames, *config.feature_shape)`` float32, before the cache's float16 rounding
    (:func:`data_prep.extract_file` gives the float16 values a cache stores).
    Raises :class:`~data_prep.audio.BadInputError` (a ``ValueError``) naming the file and the
    reason when it is unusable: unreadable, empty, NaN/Inf samples. A file read with a
    caveat (truncated: shorter than its header says) gives a ``UserWarning`` saying so.
    """
    features, audio = extract_audio(path, config)
    for note in audio.warnings:               # e.g. a truncated WAV, read as the shorter clip
        warnings.warn(f"{shown(path)}: {note}", stacklevel=2)
    return features
