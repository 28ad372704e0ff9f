"""data_prep: turn audio and MIDI datasets into feature caches for audiostem.

Files and signals only, never models. See ``python -m data_prep --help``.
"""
from .cache import CacheError, FeatureCache, Item, cache_exists, open_cache, verify_cache
from .cache_writer import CacheWriter, check_existing
from .config import AudioFeatures, PianoRollFeatures, config_diff, feature_config
from .folk import build_folk
from .polyphony import build_polyphony
from .midi import piano_roll, pianoroll_file
from .render import render_dataset
from .synth import render_midi
from .audio import BadInputError, load_audio
from .extract import extract_file
from .prepare import prepare

# The spectral functions import torch; load them on first use so the CLI starts fast.
_FEATURES = ("amplitude_to_db", "compute_features", "cqt", "extract_audio_file", "logmel",
             "mel_filterbank", "mel_spectrogram", "mfcc", "power_to_db", "stft_magnitude")


def __getattr__(name: str):
    if name in _FEATURES:
        from . import features
        return getattr(features, name)
    raise AttributeError(f"module 'data_prep' has no attribute {name!r}")

__all__ = ["AudioFeatures", "CacheError", "CacheWriter", "FeatureCache", "Item", "PianoRollFeatures",
           "cache_exists", "check_existing", "config_diff", "feature_config", "open_cache", "verify_cache", "piano_roll",
           "pianoroll_file", "build_folk", "build_polyphony", "render_dataset", "render_midi",
           "BadInputError", "extract_file", "load_audio", "prepare", *_FEATURES]
