"""The feature cache: the on-disk contract between ``data_prep`` and ``audiostem``.

One folder per prepared dataset::

    CACHE/
      meta.json            feature config, classes, per-bin train mean/std, versions, failures
      manifest.csv         one row per item: id, source, checksum, label, split, fold, group,
                           frames, shard, offset
      shards/00000.npy     float16 array (total_frames, *feature_shape); one item = one
      shards/00001.npy     contiguous slice [offset, offset + frames) of one shard
      ...

It is built in ``CACHE.partial/`` and swapped in when complete, so a folder named ``CACHE`` is
always whole, and a rebuild (``--force``) leaves the old cache in place until the new one is
complete. One build at a time: a writer holds ``CACHE.lock`` for the whole build and a second
one is refused, naming the holder (see :mod:`data_prep.cache_files`). While building, items are
appended to ``NNNNN.npy.tmp`` as they arrive (:mod:`data_prep.shard_file`), and a shard is
committed by renaming it to ``NNNNN.npy`` once it is on disk (fsync) and then writing
``NNNNN.json`` (its manifest rows, failures, warnings and per-bin sums for the statistics); a shard
without its ``.json`` is incomplete and is rebuilt. Items arrive in a deterministic order and
shards close at deterministic points, so a build that was killed and resumed ends with the same
cache as one that was not.

This module reads a cache (:func:`open_cache`, :class:`FeatureCache`, :class:`Item`) and answers
the questions other modules ask about one (:func:`cache_exists`, :func:`partial_failures`,
:meth:`FeatureCache.mismatch`); :mod:`data_prep.cache_writer` writes one. No other module opens
a cache's files by path.

Readers open shards with ``mmap_mode="r"``: many DataLoader workers and DDP ranks share the
page cache and nothing is loaded into memory until it is sliced.

Every build has a random ``build_id`` (in ``meta.json``), and ``meta.json`` records the size and
SHA-256 of every shard and of the manifest, and the SHA-256 of its own other fields
(``meta_sha256``). Opening a cache checks that every file is whole (``meta.json`` against its
checksum, sizes and ``.npy`` headers against the manifest: a stat and a 4-KB read per shard,
done every time); :func:`verify_cache` (``python -m data_prep verify CACHE``) also checks the checksums.
A reader remembers the build id it opened and checks it again after opening each shard
(:meth:`FeatureCache.check_build`), so a cache rebuilt under it is refused, not mixed in.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .cache_files import is_lock_file, meta_checksum, read_json, rebuild_command
from .config import FeatureConfig, config_diff, feature_config
from .discover import shown
from .shard_file import checksum_problems, shard_problems

FORMAT_VERSION = 1
MANIFEST_FIELDS = ("id", "source", "checksum", "label", "split", "fold", "group",
                   "frames", "shard", "offset")
FLOAT16_MAX = float(np.finfo(np.float16).max)      # 65504: the largest value the cache can hold


def to_float16(features: np.ndarray, what: str = "feature", advice: str = "") -> np.ndarray:
    """``features`` as the cache stores them: float16 (returned as it is when it is float16).

    Raises ``ValueError`` when a value would overflow float16 (larger than 65504 in magnitude):
    ``"WHAT values up to X overflow the float16 cache (max 65504)ADVICE"`` (``advice`` says what
    to change, e.g. ``"; use a dB kind or power=1"``)."""
    if features.dtype == np.float16:
        return features
    peak = float(np.abs(features).max()) if features.size else 0.0
    if peak > FLOAT16_MAX:
        raise ValueError(f"{what} values up to {peak:.3g} overflow the float16 cache "
                         f"(max {FLOAT16_MAX:.0f}){advice}")
    return features.astype(np.float16)


class CacheError(Exception):
    """A cache that is missing, incomplete, damaged, being built by another process, rebuilt
    while being read, or built with another feature config."""


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a cache: a row of ``manifest.csv``.

    Attributes:
        id: the item's id (unique in the cache).
        source: the file it was computed from, relative to the dataset root.
        checksum: ``sha1:...`` of the source file's bytes, the very bytes its features were made from.
        label: its class name (one of :attr:`FeatureCache.classes`).
        split: ``train``, ``valid``, ``test``, or ``""`` when the dataset has folds instead.
        fold: its cross-validation fold, or ``None``.
        group: items of one group (a speaker, a recording, a tune) stay in one split (``""``: none).
        frames: its number of frames (the first dimension of its features).
        shard: the shard file that holds it (``shards/NNNNN.npy``).
        offset: the frame where it starts in that shard.
    """
    id: str
    source: str
    checksum: str
    label: str
    split: str
    fold: Optional[int]
    group: str
    frames: int
    shard: int
    offset: int

    @classmethod
    def from_row(cls, row: dict) -> "Item":
        """An item from a manifest row (strings, as ``csv.DictReader`` gives them)."""
        return cls(id=row["id"], source=row["source"], checksum=row.get("checksum") or "",
                   label=row["label"], split=row["split"],
                   fold=int(row["fold"]) if row["fold"] not in ("", None) else None,
                   group=row.get("group") or "", frames=int(row["frames"]), shard=int(row["shard"]),
                   offset=int(row["offset"]))


def partial_path(path: Union[str, Path]) -> Path:
    """Where the cache ``path`` is built until it is complete: ``PATH.partial`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def cache_exists(path: Union[str, Path]) -> bool:
    """Whether a complete cache was published at ``path`` (it may still be damaged:
    :func:`open_cache` checks that)."""
    return (Path(path) / "meta.json").exists()


def is_cache_folder(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a folder a build of data_prep wrote: a published cache, a build in
    progress or interrupted (``CACHE.partial``), or an old cache a killed swap left
    (``CACHE.old-*``). Dataset listings leave such folders out (an ``--out`` inside ``--root``)."""
    path = Path(path)
    if not (path / "shards").is_dir():
        return False
    return (path / "meta.json").is_file() or (path / "build.json").is_file() or path.name.endswith(".partial")


def is_cache_output(path: Union[str, Path]) -> bool:
    """Whether ``path`` is something a build wrote: a cache folder (:func:`is_cache_folder`) or a
    cache's lock file. A dataset listing leaves these out (an ``--out`` inside ``--root``)."""
    return is_cache_folder(path) or is_lock_file(Path(path))


def partial_failures(path: Union[str, Path]) -> list[dict]:
    """The failures (``{"source", "reason"}``) recorded so far by the interrupted or unfinished
    build of the cache ``path``, in the order they were met; empty when there is none."""
    import json

    failures = []
    for record in sorted(partial_path(path).glob("shards/*.json")):
        try:
            failures += json.loads(record.read_text())["failures"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return failures


class FeatureCache:
    """Read access to a complete cache; see :func:`open_cache`.

    Attributes:
        path: the cache folder.
        meta: the parsed ``meta.json``.
        config: the :class:`~data_prep.config.AudioFeatures` or
            :class:`~data_prep.config.PianoRollFeatures` it was built with.
        classes: class names; an item's label index is ``classes.index(item.label)``
            (:meth:`label_index`).
        items: one :class:`Item` per item, in manifest order.
        build_id: the identity of this build (``meta["build_id"]``; for caches built before
            it existed, a digest of ``meta.json``). A rebuild gets a new one.

    Opening checks that the files are whole (see :func:`open_cache`); reading a shard the first
    time checks that the cache is still the build that was opened (:meth:`check_build`).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        for _ in range(3):              # a rebuild swapped in between reading meta and manifest
            self.meta, self.build_id = _read_meta(self.path)
            self.items: list[Item] = self._read_manifest()
            if _read_meta(self.path)[1] == self.build_id:
                break
        else:
            raise CacheError(f"{shown(self.path)}: rebuilt again and again while being opened; try later")
        needed: dict[int, int] = {}
        for it in self.items:
            needed[it.shard] = max(needed.get(it.shard, 0), it.offset + it.frames)
        problems = shard_problems(self.path, self.meta, needed)
        if problems:
            raise CacheError(_damaged(self.path, self.meta, problems))
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self._shards: dict[int, np.ndarray] = {}

    def _read_manifest(self) -> list[Item]:
        manifest = self.path / "manifest.csv"
        try:
            self.config = feature_config(self.meta["features"])
            self.classes: list[str] = list(self.meta["classes"])
            tuple(self.meta["feature_shape"]), self.meta["stats"]["mean"], self.meta["failures"]
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{shown(self.path / 'meta.json')}: damaged "
                                                              f"({type(e).__name__}: {' '.join(str(e).split())})"])) from None
        try:
            want = (self.meta.get("files") or {}).get("manifest.csv", {}).get("bytes")
            if want is not None and manifest.stat().st_size != want:
                raise ValueError(f"{manifest.stat().st_size} bytes, the build wrote {want}")
            with open(manifest, newline="", encoding="utf-8") as fh:
                rows = [Item.from_row(r) for r in csv.DictReader(fh)]
            unknown = sorted({r.label for r in rows} - set(self.classes))
            if unknown:
                raise ValueError(f"labels {unknown[:3]} are not in meta.json's classes")
            return rows
        except FileNotFoundError as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{shown(e.filename)}: missing"])) from None
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{shown(manifest)}: damaged ({type(e).__name__}: "
                                                              f"{' '.join(str(e).split())})"])) from None

    def check_build(self) -> None:
        """Raise :class:`CacheError` when the cache on disk is no longer the build this object
        opened (it was rebuilt since): reading on would mix two builds' features."""
        try:
            now = _read_meta(self.path)[1]
        except CacheError:
            now = None
        if now != self.build_id:
            raise CacheError(
                f"{shown(self.path)}: the cache was rebuilt (or removed) while it was being read (opened as "
                f"build {self.build_id[:12]}, now {now[:12] if now else 'none'}); results would mix two "
                "builds' features. Run again on the new cache (train with --restart)")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.path)!r}, items={len(self)}, classes={len(self.classes)}, "
                f"kind={self.config.kind!r}, feature_shape={tuple(self.meta['feature_shape'])})")

    def features(self, i: int) -> np.ndarray:
        """Item ``i``'s features, ``(frames, *feature_shape)`` float16, memory-mapped (read-only)."""
        item = self.items[i]
        shard = self._shards.get(item.shard)
        if shard is None:
            file = self.path / "shards" / f"{item.shard:05d}.npy"
            try:
                shard = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                self.check_build()
                raise CacheError(_damaged(self.path, self.meta, [f"{shown(file)}: cannot be read ({e})"])) from None
            self.check_build()          # after the open: the mapped file is this build's
            self._shards[item.shard] = shard
        return shard[item.offset:item.offset + item.frames]

    def label_index(self, i: int) -> int:
        """Index of item ``i``'s label in :attr:`classes`."""
        return self._class_index[self.items[i].label]

    def indices(self, split: Optional[str] = None, folds: Optional[Iterable[int]] = None) -> list[int]:
        """Indices of the items in ``split`` (any split when ``None``) and in ``folds``."""
        folds = None if folds is None else set(folds)
        return [i for i, it in enumerate(self.items)
                if (split is None or it.split == split) and (folds is None or it.fold in folds)]

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(mean, std)`` of the train split, each of shape ``feature_shape``."""
        s = self.meta["stats"]
        return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)

    @property
    def failures(self) -> list[dict]:
        """Sources that were skipped: ``[{"source": ..., "reason": ...}]``."""
        return self.meta["failures"]

    @property
    def splits(self) -> list[str]:
        """The split names its items have, sorted (``""`` for items of a folds-only dataset)."""
        return sorted({it.split for it in self.items})

    def mismatch(self, config: Union[FeatureConfig, dict], whose: str,
                 source: Optional[dict] = None) -> Optional[str]:
        """Whether this cache holds the features ``config`` describes: ``None`` when it does,
        else the one message that says so everywhere (a build, a recipe, a checkpoint):
        ``"PATH was built with another feature config (cache != WHOSE: field: a != b; ...)"``.

        Args:
            config: the feature config to compare (a dict is resolved first).
            whose: who asks, for the message (``recipe``, ``model``, ``this command``).
            source: also compare the source's name and options (``{"name", "options"}``, as
                :class:`~data_prep.cache_writer.CacheWriter` records them); the dataset root is
                not compared, so a cache stays valid when its dataset moves.
        """
        diff = config_diff(self.config, config)
        if source is not None:
            old = self.meta.get("source", {})
            if old.get("name") != source.get("name"):
                diff.append(f"source: {old.get('name')!r} != {source.get('name')!r}")
            old_opts, new_opts = old.get("options", {}), source.get("options", {})
            diff += [f"--{k.replace('_', '-')}: {old_opts.get(k)!r} != {new_opts.get(k)!r}"
                     for k in sorted(set(old_opts) | set(new_opts)) if old_opts.get(k) != new_opts.get(k)]
        if not diff:
            return None
        what = "feature config or source" if source is not None else "feature config"
        return f"{shown(self.path)} was built with another {what} (cache != {whose}: {'; '.join(diff)})"

    def __getstate__(self) -> dict:      # memory maps are reopened lazily in each process
        return {**self.__dict__, "_shards": {}}


def _read_meta(path: Path) -> tuple[dict, str]:
    """``(meta, build_id)`` of the cache at ``path``; :class:`CacheError` naming the file and
    the rebuild command when it is missing, damaged or of another format."""
    meta_path = path / "meta.json"
    if not meta_path.exists():
        hint = (" (an interrupted build: run the same data_prep command again to resume it)"
                if partial_path(path).exists() else "")
        raise CacheError(f"{shown(path)}: not a feature cache, no meta.json{hint}")
    try:
        raw = meta_path.read_bytes()
        meta = read_json(meta_path)
    except (OSError, ValueError) as e:
        raise CacheError(f"{e}; rebuild the cache with {rebuild_command(path, None)}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CacheError(f"{shown(path)}: cache format {meta.get('format')!r}, "
                         f"this version reads {FORMAT_VERSION}; rebuild it with --force")
    if "meta_sha256" in meta and meta["meta_sha256"] != meta_checksum(meta):
        raise CacheError(_damaged(path, meta, [f"{shown(meta_path)}: altered since its build (its content "
                                               f"no longer matches its meta_sha256: edited by hand)"]))
    return meta, str(meta.get("build_id") or "legacy-" + hashlib.sha256(raw).hexdigest()[:16])


def _damaged(path: Path, meta: Optional[dict], problems: list[str]) -> str:
    listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return f"{shown(path)}: damaged cache: {listed}. Rebuild it with: {rebuild_command(path, meta)}"


def open_cache(path: Union[str, Path]) -> FeatureCache:
    """Open a prepared feature cache for reading (see :class:`FeatureCache`).

    Raises :class:`CacheError` when there is no cache at ``path``, or when ``meta.json`` or
    ``manifest.csv`` is damaged, or a shard is missing, truncated or does not hold the frames
    the manifest places in it (sizes and headers: cheap, checked on every open); the message
    names each damaged file and the command that rebuilds the cache."""
    return FeatureCache(path)


def verify_cache(path: Union[str, Path]) -> FeatureCache:
    """Open the cache at ``path`` and check every file's SHA-256 against the one its build
    recorded (``meta["files"]``; reads every byte). Returns the cache; raises
    :class:`CacheError` naming each damaged file and the rebuild command. A cache built before
    checksums were recorded is checked for sizes only (say so with ``meta.get("files")``)."""
    cache = open_cache(path)
    problems = checksum_problems(cache.path, cache.meta)
    if problems:
        raise CacheError(_damaged(cache.path, cache.meta, problems))
    return cache
