"""Reading audio files: decode with soundfile, mix or fit channels, resample with soxr, check.

Every function here works on plain numpy arrays laid out ``(channels, samples)``, float32 in
[-1, 1]. :func:`load_audio` is the one call the preparation pipeline makes per file; the
pieces it is made of are public so that users can run them on their own data.

Any file that cannot be turned into a usable signal raises :class:`BadInputError`, whose
message names the file and the reason (``empty audio (0 samples)``, ``NaN or Inf samples``,
``not a readable audio file: ...``).
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

#: File extensions read as audio (anything libsndfile can decode; MP3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".w64", ".caf", ".rf64")

# Integer subtypes decode much faster as integers than through libsndfile's float path; the
# scaled result is bit-identical to ``soundfile.read(..., dtype="float32")`` (tested).
_INT_READS = {"PCM_S8": ("int16", 2.0**-15), "PCM_U8": ("int16", 2.0**-15),
              "PCM_16": ("int16", 2.0**-15), "PCM_24": ("int32", 2.0**-31),
              "PCM_32": ("int32", 2.0**-31)}


class BadInputError(ValueError):
    """A file that cannot be turned into features; the message says which and why."""


@dataclass
class Audio:
    """A decoded file.

    Attributes:
        samples: ``(channels, samples)`` float32 waveform at ``sample_rate``.
        sample_rate: in Hz.
        checksum: ``sha1:<hex>`` of the file's bytes, as read.
        duration: length of the file in seconds (before any resampling).
    """

    samples: np.ndarray
    sample_rate: int
    checksum: str
    duration: float


def decode(data: Union[bytes, str, Path], name: str = "") -> tuple[np.ndarray, int]:
    """Decode audio bytes (or a path) with soundfile.

    Any bit depth and channel count that libsndfile reads (WAV, FLAC, OGG/Vorbis, Opus, MP3,
    AIFF, AU...). Returns ``(samples, sample_rate)`` with ``samples`` of shape
    ``(channels, samples)``, float32 in [-1, 1].

    Raises :class:`BadInputError` for anything libsndfile cannot read.
    """
    name = name or (str(data) if not isinstance(data, bytes) else "<bytes>")
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with sf.SoundFile(src) as f:
            dtype, scale = _INT_READS.get(f.subtype, ("float32", None))
            x = f.read(dtype=dtype, always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise BadInputError(f"{name}: not a readable audio file ({_short(e)})") from None
    if scale is not None:
        x = x.astype(np.float32)
        x *= np.float32(scale)
    # reshape gives canonical strides: a (1, n) transpose of (n, 1) keeps stride 4 on its first
    # axis, which numpy calls contiguous but which sends torch down slow paths (a pad took 25x)
    return np.ascontiguousarray(x.T).reshape(x.shape[1], -1), int(rate)


def _short(e: Exception) -> str:
    """libsndfile's own message, without soundfile's "Error opening <object at 0x...>" prefix
    (which would make failure records differ from run to run)."""
    text = getattr(e, "error_string", None) or str(e)
    text = re.sub(r"^Error opening <[^>]*>: ", "", text.strip())
    lines = text.splitlines()
    return lines[-1] if lines else type(e).__name__


def fit_channels(samples: np.ndarray, mono: bool = True, channels: int = 2) -> np.ndarray:
    """Mix ``(channels, samples)`` to mono (``(1, samples)``, the mean of the channels, as
    ``librosa.to_mono``), or fit it to exactly ``channels`` channels when ``mono`` is false:
    a file with fewer channels repeats them cyclically (mono -> both sides), one with more is cut.
    """
    if mono:
        return samples if samples.shape[0] == 1 else samples.mean(axis=0, keepdims=True)
    if samples.shape[0] == channels:
        return samples
    index = np.arange(channels) % samples.shape[0]
    return np.ascontiguousarray(samples[index])


def resample(samples: np.ndarray, orig_sr: int, target_sr: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``(..., samples)`` from ``orig_sr`` to ``target_sr`` Hz with soxr.

    ``quality="HQ"`` is librosa's default (``res_type="soxr_hq"``), so the result equals
    ``librosa.resample``'s.
    """
    if orig_sr == target_sr:
        return samples
    import soxr

    lead = samples.shape[:-1]
    flat = samples.reshape(-1, samples.shape[-1])
    out = soxr.resample(np.ascontiguousarray(flat.T), orig_sr, target_sr, quality=quality)
    out = np.asarray(out, dtype=samples.dtype).reshape(-1, flat.shape[0]).T
    return np.ascontiguousarray(out).reshape(*lead, -1)    # canonical strides, as above


def check_signal(samples: np.ndarray, name: str = "") -> None:
    """Raise :class:`BadInputError` for a signal that has no samples or non-finite samples.

    Silence is fine (its features are constant); so is a clip shorter than one analysis window
    (it is zero-padded to one frame).
    """
    prefix = f"{name}: " if name else ""
    if samples.size == 0:
        raise BadInputError(f"{prefix}empty audio (0 samples)")
    if not np.isfinite(samples).all():
        raise BadInputError(f"{prefix}NaN or Inf samples in the decoded audio")


def load_audio(path: Union[str, Path], sample_rate: Union[int, None] = None, mono: bool = True,
               channels: int = 2) -> Audio:
    """Read a file, checksum its bytes, decode, fit channels, resample, check.

    Args:
        path: the audio file.
        sample_rate: target rate in Hz (``None``: keep the file's rate).
        mono: mix to one channel; otherwise keep exactly ``channels`` (see :func:`fit_channels`).
        channels: channels kept when ``mono`` is false.

    Returns:
        :class:`Audio` with ``samples`` of shape ``(1 or channels, samples)`` float32.
        The same samples as ``librosa.load(path, sr=sample_rate, mono=mono)``.

    Raises:
        BadInputError: unreadable, empty or non-finite audio, with the file name and reason.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise BadInputError(f"{path}: empty file (0 bytes)")
    checksum = "sha1:" + hashlib.sha1(data).hexdigest()
    samples, rate = decode(data, str(path))
    del data
    duration = samples.shape[1] / rate
    check_signal(samples, str(path))
    samples = fit_channels(samples, mono, channels)
    if sample_rate is not None:
        samples = resample(samples, rate, sample_rate)
        rate = sample_rate
    check_signal(samples, str(path))
    return Audio(samples=samples, sample_rate=rate, checksum=checksum, duration=duration)
