"""What every source is made of: :class:`SourceItem`, :class:`Listing`, :class:`Source`, the
registry (:func:`register_source`) and the split options sources share. The source modules of
this package import it; users import the same names from :mod:`data_prep.sources`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..discover import AUDIO_EXTENSIONS, MIDI_EXTENSIONS

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SourceItem:
    """One input file and what is known about it.

    Attributes:
        path: the file.
        label: its class name.
        split: ``train``, ``valid``, ``test`` or ``""`` (none; see folds).
        fold: cross-validation fold number, or ``None``.
        group: items with the same non-empty group (a recording, a speaker, an artist, a tune)
            are kept in the same split by the split helpers.
        id: unique item id in the cache (``""``: the path relative to the root, without suffix).
    """

    path: Path
    label: str
    split: str = ""
    fold: Optional[int] = None
    group: str = ""
    id: str = ""


class Listing(list):
    """What :meth:`Source.items` may return instead of a plain list: the items, and what else the
    source found under the root, so that every file is accounted for in the build's summary.

    Attributes:
        skipped: ``(path, reason)`` of files that are not items (not audio, outside the layout).
        ignored: paths of operating-system leftovers and hidden files
            (:func:`data_prep.discover.is_leftover`).
    """

    def __init__(self, items=(), skipped=(), ignored=()):
        super().__init__(items)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self.ignored: list[Path] = list(ignored)


class Source:
    """Base class of a dataset adapter; subclass it and decorate with :func:`register_source`.

    Attributes:
        name: the command-line name (``python -m data_prep NAME``).
        kind: the inputs it lists: ``audio``, ``midi`` or ``any`` (decided by the feature kind).
        description: one line shown by ``python -m data_prep --help``.
        default_features: feature config fields used when the user gives none (a dict for
            :func:`data_prep.config.feature_config`).
        download: a :class:`data_prep.download.Archive` list, or a message string saying where
            to get the data, or ``None``.
        default_root: the ``--root`` used when none is given (``None``: ``--root`` is required).
        creates_root: ``items`` builds the dataset at ``root`` when it is missing (``folk``).
    """

    name: str = ""
    kind: str = "audio"
    description: str = ""
    default_features: dict = {"kind": "logmel"}
    download: Union[list, str, None] = None
    default_root: Optional[Path] = None
    creates_root: bool = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's options (never required ones) to ``parser``."""

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        """List the dataset's files. ``args.root`` is the dataset folder (a ``Path``),
        ``args.features`` the resolved feature config, plus this source's options. A source
        that looks at every file under the root returns a :class:`Listing`, naming the files
        it skipped and ignored.
        Raise ``ValueError`` with a helpful message when ``root`` does not hold the dataset."""
        raise NotImplementedError

    def resolve_root(self, root: Path) -> Path:
        """The folder ``items`` should read when the user pointed at ``root`` (override for
        layouts that accept a parent folder). Used to store a canonical root in the cache."""
        return root

    def __repr__(self) -> str:
        return f"<source {self.name}: {self.description}>"


_SOURCES: dict[str, Source] = {}
_loaded = False


def register_source(cls: type) -> type:
    """Class decorator: register an instance of a :class:`Source` subclass under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a source needs a name")
    if cls.kind not in ("audio", "midi", "any"):
        raise ValueError(f"{cls.__name__}: kind must be 'audio', 'midi' or 'any', got {cls.kind!r}")
    if cls.name in _SOURCES and type(_SOURCES[cls.name]).__qualname__ != cls.__qualname__:
        raise ValueError(f"source {cls.name!r} is registered twice "
                         f"({type(_SOURCES[cls.name]).__module__} and {cls.__module__})")
    _SOURCES[cls.name] = cls()
    return cls


def split_arguments(parser: argparse.ArgumentParser, group_help: Optional[str] = None) -> None:
    """Add ``--seed``, ``--valid-fraction``, ``--test-fraction`` (and ``--group-by`` when
    ``group_help`` is given) for sources that split with :func:`stratified_split`."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of each class in the valid split (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of each class in the test split (default 0.1)")
    if group_help:
        parser.add_argument("--group-by", default=None, metavar="WHAT", help=group_help)


def fractions_from(args: argparse.Namespace) -> dict[str, float]:
    """The split fractions given by the :func:`split_arguments` options."""
    valid, test = args.valid_fraction, args.test_fraction
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"--valid-fraction {valid} and --test-fraction {test} must be in [0, 1) "
                         f"and leave something for training")
    return {"train": 1 - valid - test, "valid": valid, "test": test}


def file_extensions(features) -> tuple[str, ...]:
    """The file extensions a generic source lists for a feature config: MIDI files for the
    ``pianoroll`` kind, audio files otherwise."""
    return MIDI_EXTENSIONS if getattr(features, "kind", "") == "pianoroll" else AUDIO_EXTENSIONS
