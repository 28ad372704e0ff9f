"""data_prep: turn audio and MIDI datasets into feature caches for audiostem.

Files and signals only, never models. See ``python -m data_prep --help``.
"""
from .cache import CacheError, CacheWriter, FeatureCache, check_existing, open_cache
from .config import AudioFeatures, PianoRollFeatures, config_diff, feature_config

__all__ = ["AudioFeatures", "CacheError", "CacheWriter", "FeatureCache", "PianoRollFeatures",
           "check_existing", "config_diff", "feature_config", "open_cache"]
