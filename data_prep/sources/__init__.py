"""Source adapters: turn a dataset on disk into a list of labelled files.

A source knows one dataset layout (GTZAN, ESC-50, a folder per class, a CSV manifest, MAESTRO...)
and nothing about features. It declares its command-line options, a default feature config,
and lists :class:`SourceItem` records; :func:`data_prep.prepare.prepare` does the rest.

Writing one::

    from data_prep.sources import Source, SourceItem, register_source

    @register_source
    class MyData(Source):
        name = "mydata"
        kind = "audio"                                  # 'audio', 'midi' or 'any'
        description = "My recordings (one line for --help)"
        default_features = {"kind": "logmel", "sample_rate": 16000}

        def add_arguments(self, parser):
            parser.add_argument("--min-duration", type=float, default=0.0)

        def items(self, args):
            # args.root (Path), args.features (the resolved feature config), your options
            return [SourceItem(path, label="dog", split="train") for path in ...]

Sources must not declare required options (``--root`` is common to all), so that
``prepare("mydata", root, out)`` works from Python with the defaults. Modules in this package
are imported on first lookup, so a new module registers itself by being here.

Splits are the strings ``"train"``, ``"valid"`` and ``"test"``; datasets evaluated by
cross-validation (ESC-50, UrbanSound8K) give every item its ``fold`` instead and leave
``split`` empty unless asked (``--test-fold``). :func:`stratified_split` and
:func:`group_split` give deterministic seeded splits for datasets that have none.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..discover import MIDI_EXTENSIONS
from ..splits import DEFAULT_FRACTIONS, group_split, stratified_split
from .base import (_SOURCES, SPLITS, Listing, Source, SourceItem, file_extensions, fractions_from,
                   register_source, split_arguments)

_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def available_sources() -> dict[str, Source]:
    """All registered sources, by name (sorted)."""
    _load_builtin()
    return dict(sorted(_SOURCES.items()))


def get_source(name: str) -> Source:
    """The source registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    sources = available_sources()
    if name not in sources:
        raise ValueError(f"unknown source {name!r}; available: {', '.join(sources)}")
    return sources[name]


__all__ = ["DEFAULT_FRACTIONS", "Listing", "MIDI_EXTENSIONS", "SPLITS", "Source", "SourceItem",
           "available_sources", "file_extensions", "fractions_from", "get_source", "group_split",
           "register_source", "split_arguments", "stratified_split"]
