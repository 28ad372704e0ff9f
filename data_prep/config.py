"""Feature configurations: the exact recipe that turns one file into a ``(frames, ...)`` array.

A feature config is stored in a cache's ``meta.json``, in training recipes and in checkpoints.
Two caches hold the same features exactly when their configs compare equal, so every field
that changes the numbers lives here, and nothing else does.

- :class:`AudioFeatures` — spectrogram kinds (``stft``, ``mel``, ``logmel``, ``mfcc``, ``cqt``)
  computed by :mod:`data_prep.features`.
- :class:`PianoRollFeatures` — the ``pianoroll`` kind computed by :mod:`data_prep.midi`.

Use :func:`feature_config` to turn a plain dict (from YAML or JSON) into one of them, and
:func:`config_diff` to say which fields differ between two configs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

AUDIO_KINDS = ("stft", "mel", "logmel", "mfcc", "cqt")
MIDI_KINDS = ("pianoroll",)


def _fail(field: str, message: str) -> None:
    raise ValueError(f"features.{field}: {message}")


@dataclass(frozen=True)
class AudioFeatures:
    """How to compute a spectrogram-like feature from an audio file.

    Args:
        kind: ``stft`` (linear magnitude), ``mel`` (mel power), ``logmel`` (mel power in dB),
            ``mfcc`` or ``cqt`` (constant-Q magnitude in dB).
        sample_rate: rate in Hz every file is resampled to before analysis.
        n_fft: FFT size in samples.
        hop_length: hop between frames in samples (frames per second = sample_rate / hop_length).
        win_length: window length in samples (``None``: ``n_fft``).
        window: window name understood by ``scipy.signal.get_window`` (``hann``, ``hamming``...).
        center: pad the signal by ``n_fft // 2`` on both sides so frame ``t`` is centred at
            ``t * hop_length`` (librosa's default).
        n_mels: number of mel bands (``mel``, ``logmel``, ``mfcc``).
        fmin: lowest frequency in Hz (mel bands and CQT; for ``cqt`` 0 means C1 = 32.70 Hz).
        fmax: highest frequency in Hz of the mel bands (``None``: ``sample_rate / 2``).
        power: exponent of the magnitude before the mel filterbank (2 = power, 1 = magnitude).
        htk: use the HTK mel scale instead of Slaney's (librosa's ``htk``; torchaudio's default
            is ``mel_scale="htk", norm=None``).
        mel_norm: ``slaney`` (each band scaled to constant energy, librosa's default) or
            ``None`` (triangles peak at 1).
        top_db: dynamic range kept by the dB conversion, relative to the clip's peak
            (``None``: no clipping). Applies to ``logmel``, ``mfcc`` and ``cqt``.
        amin: floor of the power before the log, ``10 * log10(max(amin, x))`` (CQT magnitudes
            are floored at ``sqrt(amin)``).
        log_offset: ``logmel`` and ``mfcc`` only: when set, ``log(mel + log_offset)`` (natural
            log) replaces the dB conversion (``top_db`` and ``amin`` are then unused).
        n_mfcc: number of cepstral coefficients (``mfcc``).
        n_bins: number of CQT bins (``cqt``).
        bins_per_octave: CQT resolution (``cqt``).
        mono: mix every file to one channel; ``False`` keeps ``channels`` channels.
        channels: channels kept when ``mono`` is false (files with fewer are repeated, more are cut).
    """

    kind: str = "logmel"
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: Union[int, None] = None
    window: str = "hann"
    center: bool = True
    n_mels: int = 128
    fmin: float = 0.0
    fmax: Union[float, None] = None
    power: float = 2.0
    htk: bool = False
    mel_norm: Union[str, None] = "slaney"
    top_db: Union[float, None] = 80.0
    amin: float = 1e-10
    log_offset: Union[float, None] = None
    n_mfcc: int = 40
    n_bins: int = 84
    bins_per_octave: int = 12
    mono: bool = True
    channels: int = 2

    def __post_init__(self) -> None:
        if self.kind not in AUDIO_KINDS:
            _fail("kind", f"must be one of {AUDIO_KINDS}, got {self.kind!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "n_bins",
                     "bins_per_octave", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                _fail(name, f"must be a positive integer, got {value!r}")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            _fail("win_length", f"must be in 1..n_fft={self.n_fft}, got {self.win_length!r}")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < nyquist:
            _fail("fmin", f"must be in [0, sample_rate/2={nyquist}), got {self.fmin!r}")
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            _fail("fmax", f"must be in (fmin={self.fmin}, sample_rate/2={nyquist}], got {self.fmax!r}")
        if self.top_db is not None and self.top_db <= 0:
            _fail("top_db", f"must be positive or null, got {self.top_db!r}")
        if self.amin <= 0:
            _fail("amin", f"must be positive, got {self.amin!r}")
        if self.power <= 0:
            _fail("power", f"must be positive, got {self.power!r}")
        if self.mel_norm not in ("slaney", None):
            _fail("mel_norm", f"must be 'slaney' or null, got {self.mel_norm!r}")
        if self.log_offset is not None and self.log_offset <= 0:
            _fail("log_offset", f"must be positive or null, got {self.log_offset!r}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            _fail("n_mfcc", f"must be at most n_mels={self.n_mels}, got {self.n_mfcc!r}")
        if self.kind == "cqt":
            top = (self.fmin or 32.70319566257483) * 2 ** ((self.n_bins - 1) / self.bins_per_octave)
            if top >= nyquist:
                _fail("n_bins", f"the top CQT bin ({top:.0f} Hz) must be below sample_rate/2="
                                f"{nyquist}: lower n_bins or fmin, or raise sample_rate")

    @property
    def bins(self) -> int:
        """Number of feature bins per frame."""
        return {"stft": self.n_fft // 2 + 1, "mel": self.n_mels, "logmel": self.n_mels,
                "mfcc": self.n_mfcc, "cqt": self.n_bins}[self.kind]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one frame: ``(bins,)``, or ``(channels, bins)`` when ``mono`` is false."""
        return (self.bins,) if self.mono else (self.channels, self.bins)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PianoRollFeatures:
    """How to turn a MIDI file into a piano roll (pitch x time).

    Args:
        kind: always ``pianoroll``.
        fs: frames per second of a time-based roll.
        beat_resolution: frames per beat of a beat-synchronous (tempo-invariant) roll;
            when set, ``fs`` is ignored.
        pitch_range: ``full`` (128 MIDI pitches) or ``piano`` (the 88 keys, 21..108).
        values: ``velocity`` (velocity / 127, in [0, 1]) or ``binary`` (1 where a note sounds).
        overlap: how overlapping notes of one pitch combine: ``max`` (default) or ``sum``
            (pretty_midi's behaviour).
        onsets: add a channel that is 1 at the first frame of every note.
        pedal: extend notes held by the sustain pedal (CC 64 >= 64).
        drums: ``drop`` drum tracks, ``keep`` them in the roll, or put them in their own ``channel``.
        per_family: one channel per General MIDI instrument family (16 families) instead of one
            channel for all instruments.
        max_frames: longest roll kept, in frames (``None``: no limit). Longer files are cut
            there, which bounds memory: a roll takes about ``frames * channels * bins * 5``
            bytes while it is built (64 MB for 100,000 frames of one 128-bin channel).
        pretty_midi_compat: reproduce ``pretty_midi.PrettyMIDI(path).get_piano_roll(fs)`` exactly
            (sum of raw velocities 0..127, pitch bends applied, sustain pedal applied as pretty_midi
            does unless ``pedal`` is false, drums silent). ``overlap`` is then always ``sum``;
            ``beat_resolution``, ``values='binary'``, ``onsets``, ``drums`` other than ``drop``
            and ``per_family`` are not available. Files longer than ``max_frames`` are refused
            rather than cut.
    """

    kind: str = "pianoroll"
    fs: float = 100.0
    beat_resolution: Union[int, None] = None
    pitch_range: str = "full"
    values: str = "velocity"
    overlap: str = "max"
    onsets: bool = False
    pedal: bool = True
    drums: str = "drop"
    per_family: bool = False
    max_frames: Union[int, None] = 100_000
    pretty_midi_compat: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MIDI_KINDS:
            _fail("kind", f"must be 'pianoroll', got {self.kind!r}")
        if not self.fs > 0:
            _fail("fs", f"must be positive, got {self.fs!r}")
        if self.beat_resolution is not None and (
                not isinstance(self.beat_resolution, int) or self.beat_resolution <= 0):
            _fail("beat_resolution", f"must be a positive integer or null, got {self.beat_resolution!r}")
        choices = {"pitch_range": ("full", "piano"), "values": ("velocity", "binary"),
                   "overlap": ("max", "sum"), "drums": ("drop", "keep", "channel")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                _fail(name, f"must be one of {valid}, got {getattr(self, name)!r}")
        if self.max_frames is not None and (
                not isinstance(self.max_frames, int) or isinstance(self.max_frames, bool)
                or self.max_frames <= 0):
            _fail("max_frames", f"must be a positive integer or null, got {self.max_frames!r}")
        if self.per_family and self.drums == "keep":
            _fail("drums", "'keep' puts drum notes among pitched ones, which per_family cannot "
                           "assign to a family; use 'channel' or 'drop'")
        if self.pretty_midi_compat:
            lacking = {"beat_resolution": None, "values": "velocity", "onsets": False,
                       "drums": "drop", "per_family": False}
            for name, default in lacking.items():
                if getattr(self, name) != default:
                    _fail(name, f"pretty_midi_compat needs {name}={default!r} "
                                f"(pretty_midi has no such option), got {getattr(self, name)!r}")
            object.__setattr__(self, "overlap", "sum")     # pretty_midi sums overlapping notes

    @property
    def bins(self) -> int:
        return 88 if self.pitch_range == "piano" else 128

    @property
    def channels(self) -> int:
        n = 16 if self.per_family else 1
        return n + (self.drums == "channel") + self.onsets

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one frame: ``(bins,)`` or ``(channels, bins)`` with several channels."""
        return (self.bins,) if self.channels == 1 else (self.channels, self.bins)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FeatureConfig = Union[AudioFeatures, PianoRollFeatures]


def feature_config(spec: Union[dict, FeatureConfig, None] = None, **overrides: Any) -> FeatureConfig:
    """Build a feature config from a plain dict (``kind`` picks the class) plus overrides.

    Raises ``ValueError`` naming an unknown field and listing the valid ones.
    """
    if isinstance(spec, (AudioFeatures, PianoRollFeatures)):
        spec = spec.to_dict()
    spec = {**(spec or {}), **{k: v for k, v in overrides.items() if v is not None}}
    kind = spec.get("kind", "logmel")
    if kind in MIDI_KINDS:
        cls = PianoRollFeatures
    elif kind in AUDIO_KINDS:
        cls = AudioFeatures
    else:
        raise ValueError(f"features.kind: must be one of {AUDIO_KINDS + MIDI_KINDS}, got {kind!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ValueError(f"features.{unknown[0]}: unknown field for kind {kind!r}; valid fields: {valid}")
    return cls(**spec)


def config_diff(a: Union[dict, FeatureConfig], b: Union[dict, FeatureConfig]) -> list[str]:
    """Fields whose values differ, as ``"name: a_value != b_value"`` strings (empty when equal).
    A dict is resolved first (missing fields take their defaults); a config is compared as it is."""
    da, db = (x.to_dict() if isinstance(x, (AudioFeatures, PianoRollFeatures)) else feature_config(x).to_dict()
              for x in (a, b))
    return [f"{k}: {da.get(k)!r} != {db.get(k)!r}" for k in sorted(set(da) | set(db))
            if da.get(k) != db.get(k)]
