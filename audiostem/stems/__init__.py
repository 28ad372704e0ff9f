"""Stems: the first layers of a 2D CNN on spectrograms or piano rolls.

A stem maps ``(batch, in_channels, F, T)`` to ``(batch, out_channels, F / s_f, T / s_t)``.
Build one from a preset name or a declarative spec (format: ``audiostem.stems.spec``)::

    from audiostem import build_stem, describe_stem
    stem = build_stem("deep3", kernel_size=5, coord=True)
    describe_stem(stem, (1, 128, 256))   # params, flops, receptive_field, stride, out_shape

``python -m audiostem.stems`` prints a markdown table of every preset.
"""

from . import presets as _presets  # noqa: F401  (registers the presets)
from .modules import FreqCoord, Stem
from .registry import (StemArgError, build_stem, describe_stem, list_stems, register_stem, stem_defaults,
                       stem_overrides, stem_spec)
from .spec import geometry, normalize_spec

__all__ = ["FreqCoord", "Stem", "StemArgError", "build_stem", "describe_stem", "geometry", "list_stems", "normalize_spec",
           "register_stem", "stem_defaults", "stem_overrides", "stem_spec"]
