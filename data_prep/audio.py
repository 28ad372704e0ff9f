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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from .audio_headers import fix_wav_sizes, truncation_note
from .discover import AUDIO_EXTENSIONS, SNIFF_BYTES, shown, sniff  # noqa: F401  (AUDIO_EXTENSIONS: re-exported)
from .fileio import FileTooLarge, read_whole

# Integer subtypes decode much faster as integers than through libsndfile's float path; the
# scaled result is bit-identical to ``soundfile.read(..., dtype="float32")`` (tested).
_INT_READS = {"PCM_S8": ("int16", 2.0**-15), "PCM_U8": ("int16", 2.0**-15),
              "PCM_16": ("int16", 2.0**-15), "PCM_24": ("int32", 2.0**-31),
              "PCM_32": ("int32", 2.0**-31)}


# A memory guard: a file is read whole (its checksum and its decoding see the same bytes), then
# decoded to float32, several times its size. 4 GiB (and the 8 bytes of a RIFF header) is the
# largest plain WAV; a larger file (RF64, Wave64, FLAC...) is a long recording to cut into clips.
MAX_FILE_BYTES = 2**32 + 8


class BadInputError(ValueError):
    """A file that cannot be turned into features; the message says which and why."""


def read_file(path: Union[str, Path]) -> bytes:
    """The bytes of an audio file, in one read. Raises :class:`BadInputError` naming the file
    when it cannot be read, is larger than :data:`MAX_FILE_BYTES` (checked before reading), or
    does not fit in memory."""
    try:
        return read_whole(path, MAX_FILE_BYTES)
    except FileTooLarge as e:
        raise BadInputError(f"{shown(path)}: {e.size / 2**30:.1f} GiB is more than the 4 GiB an audio file may "
                            "have here (files are read and decoded whole): cut it into clips") from None
    except OSError as e:
        raise BadInputError(f"{shown(path)}: cannot read ({e.strerror or e})") from None
    except MemoryError:
        raise BadInputError(f"{shown(path)}: not enough memory to read it") from None


@dataclass
class Audio:
    """A decoded file.

    Attributes:
        samples: ``(channels, samples)`` float32 waveform at ``sample_rate``.
        sample_rate: in Hz.
        checksum: ``sha1:<hex>`` of the file's bytes, as read.
        duration: length of the file in seconds (before any resampling).
        warnings: notes about how it was read (a truncated file, a header without sizes).
    """

    samples: np.ndarray
    sample_rate: int
    checksum: str
    duration: float
    warnings: list[str] = field(default_factory=list)


def decode(data: Union[bytes, str, Path], name: str = "") -> tuple[np.ndarray, int]:
    """Decode audio bytes (or a path): libsndfile (soundfile), then FFmpeg (PyAV) for what
    libsndfile cannot read.

    libsndfile reads WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, AU, CAF... at any bit depth and
    channel count; FFmpeg adds AAC/ALAC (``.m4a``, ``.mp4``), WMA, WebM/Matroska, WavPack, APE,
    AMR, AC-3... when PyAV is installed (``pip install av``). A WAV whose header gives 0 data
    bytes (a streaming writer that never closed the file) is read to its end, as ``sox
    --ignore-length`` and FFmpeg do. Returns ``(samples, sample_rate)`` with ``samples`` of shape
    ``(channels, samples)``, float32 in [-1, 1].

    Raises :class:`BadInputError` for anything neither can read, with both reasons.
    """
    samples, rate, _ = decode_with_notes(data, name)
    return samples, rate


def decode_with_notes(data: Union[bytes, str, Path], name: str = "") -> tuple[np.ndarray, int, list[str]]:
    """:func:`decode`, also returning notes about what was read: a file cut short of what its
    header promises (WAV, AIFF, CAF, AU, Wave64: :mod:`data_prep.audio_headers`) or cut inside
    its compressed stream (FLAC, Ogg... read up to the cut by FFmpeg), a header without sizes."""
    name = shown(name or (str(data) if not isinstance(data, bytes) else "<bytes>"))
    if not isinstance(data, bytes):
        data = read_file(data)
    try:
        return _decode_with_notes(data, name)
    except MemoryError:
        raise BadInputError(f"{name}: not enough memory to decode its {len(data) / 2**20:.0f} MiB") from None


def _decode_with_notes(data: bytes, name: str) -> tuple[np.ndarray, int, list[str]]:
    data, notes = fix_wav_sizes(data)
    try:
        samples, rate, promised = _sndfile(data)
        wav = data[:4] in (b"RIFF", b"RIFX") and data[8:12] == b"WAVE"   # sizes checked above
        if samples.shape[1] or wav or not _av():    # 0 samples: FFmpeg may know better
            cut = truncation_note(data, samples.shape[1] / rate)
            if cut is None and samples.shape[1] < promised:      # what libsndfile itself knows
                cut = (f"truncated: the header promises {promised / rate:.3f} s, the file holds "
                       f"{samples.shape[1] / rate:.3f} s (read as the shorter clip)")
            return samples, rate, notes + ([cut] if cut else [])
        problem = None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        problem = f"libsndfile: {_short(e).rstrip('.')}"
    family, what = sniff(data[:SNIFF_BYTES])
    if family == "other":                        # text, an image, an archive...
        problem = f"it is {what}; {problem}"
    av = _av()
    if av is None:
        raise BadInputError(f"{name}: not a readable audio file ({problem}; other formats such as "
                            f"AAC/.m4a, WMA or WebM need FFmpeg: pip install av)")
    try:
        decoded = _ffmpeg(av, data)
    except Exception as e:     # noqa: BLE001 (PyAV raises FFmpegError, ValueError, IndexError...)
        cut = truncation_note(data, 0.0)     # an Ogg file cut before its first page of audio
        if problem is None:    # libsndfile read 0 samples, FFmpeg nothing at all: keep the 0
            return samples, rate, notes + ([cut] if cut else [])
        text = re.sub(r"^\[Errno -?\d+\] ", "", " ".join(str(e).split()).replace(": '<none>'", ""))
        raise BadInputError(f"{name}: not a readable audio file ({cut + '; ' if cut else ''}{problem}; "
                            f"FFmpeg: {text})") from None
    samples, rate, more = decoded
    if problem is None and samples.shape[1]:
        notes.append(f"the header gives 0 samples (a writer that never closed the file?); "
                     f"read the {samples.shape[1] / rate:.3f} s that follow with FFmpeg")
    cut = truncation_note(data, samples.shape[1] / rate) if samples.shape[1] else None
    return samples, rate, notes + ([cut] if cut and not more else []) + more


def _av():
    """PyAV (FFmpeg's decoders), or ``None`` when it is not installed."""
    try:
        import av
    except ImportError:
        return None
    return av


def _sndfile(data: bytes) -> tuple[np.ndarray, int, int]:
    """libsndfile's ``(samples, rate, frames the header promises)``."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        dtype, scale = _INT_READS.get(f.subtype, ("float32", None))
        x = f.read(dtype=dtype, always_2d=True)
        rate = f.samplerate
        promised = 0 if f.format in ("MP3", "MPEG", "OGG") else f.frames   # theirs are estimates
    if scale is not None:
        x = x.astype(np.float32)
        x *= np.float32(scale)
    # reshape gives canonical strides: a (1, n) transpose of (n, 1) keeps stride 4 on its first
    # axis, which numpy calls contiguous but which sends torch down slow paths (a pad took 25x)
    return np.ascontiguousarray(x.T).reshape(x.shape[1], -1), int(rate), int(promised)


def _ffmpeg(av, data: bytes) -> tuple[np.ndarray, int, list[str]]:
    """FFmpeg's decoding of the first audio stream, as float32 ``(channels, samples)``, its rate
    and notes. A decoding error after some audio (a cut FLAC or Ogg file) ends the clip there,
    with a note; an error before any audio is raised."""
    notes = []
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ValueError(f"no audio stream in this {container.format.long_name or 'file'}")
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        to_float = av.AudioResampler(format="fltp")     # same layout and rate, planar float
        blocks = []
        try:
            for frame in container.decode(stream):
                blocks += [f.to_ndarray() for f in to_float.resample(frame)]
        except Exception as e:       # noqa: BLE001
            if not blocks:
                raise
            text = re.sub(r"^\[Errno -?\d+\] ", "", " ".join(str(e).split()))
            done = sum(b.shape[1] for b in blocks) / rate
            notes.append(f"truncated or damaged: decoding stopped at {done:.3f} s ({text}); "
                         f"read as the shorter clip")
        blocks += [f.to_ndarray() for f in to_float.resample(None)]
        channels = max(stream.codec_context.channels, 1)
    if not blocks:
        return np.zeros((channels, 0), np.float32), int(rate), notes
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32), int(rate), notes


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
    prefix = f"{shown(name)}: " if name else ""
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
    data = read_file(path)
    if not data:
        raise BadInputError(f"{shown(path)}: empty file (0 bytes)")
    checksum = "sha1:" + hashlib.sha1(data).hexdigest()
    samples, rate, notes = decode_with_notes(data, str(path))
    del data
    try:
        return _finish(path, samples, rate, checksum, notes, sample_rate, mono, channels)
    except MemoryError:
        raise BadInputError(f"{shown(path)}: not enough memory for its {samples.shape[1] / rate:.0f} s of "
                            f"{samples.shape[0]}-channel audio at {rate} Hz") from None


def _finish(path: Path, samples: np.ndarray, rate: int, checksum: str, notes: list[str],
            sample_rate: Union[int, None], mono: bool, channels: int) -> Audio:
    duration = samples.shape[1] / rate
    if samples.size == 0 and notes:           # empty because it was cut: say so
        raise BadInputError(f"{shown(path)}: empty audio (0 samples): {notes[-1]}")
    check_signal(samples, str(path))
    samples = fit_channels(samples, mono, channels)
    if sample_rate is not None:
        samples = resample(samples, rate, sample_rate)
        rate = sample_rate
    check_signal(samples, str(path))
    return Audio(samples=samples, sample_rate=rate, checksum=checksum, duration=duration,
                 warnings=notes)
