"""audiostem: audio and music classification with configurable 2D CNN stems."""

__version__ = "0.1.0"

from .bodies import replace_stem
from .models import build_model, describe_model
from .stems import build_stem, describe_stem, list_stems, register_stem

__all__ = ["__version__", "build_model", "build_stem", "describe_model", "describe_stem", "list_stems",
           "register_stem", "replace_stem"]
