"""Writing a feature cache: :class:`CacheWriter` builds ``CACHE.partial/`` shard by shard and
publishes it as ``CACHE``; :func:`check_existing` decides, before a build, whether one is needed.
The format is described in :mod:`data_prep.cache`, which reads it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import sys
import time
import uuid
from glob import escape as glob_escape
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .cache import (FORMAT_VERSION, MANIFEST_FIELDS, CacheError, FeatureCache, cache_exists, open_cache,
                    partial_path)
from .cache_files import CacheBusyError, CacheLock, build_target, meta_checksum, swap_in
from .config import AudioFeatures, FeatureConfig, PianoRollFeatures
from .discover import shown
from .feature_stats import Sums, item_sums
from .fileio import fsync_dir, named_error, write_atomic
from .shard_file import ShardFile, file_record

SHARD_BYTES = 64 * 2**20   # close a shard once its features reach this size
SHARD_ITEMS = 2048         # ... or this many items


def _write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


def _shard_record(shard_dir: Path, n: int) -> Optional[dict]:
    """The record of committed shard ``n`` of a partial build, or ``None`` when it is not
    committed (no record, or a record or shard that a crash left incomplete)."""
    record_path, npy = shard_dir / f"{n:05d}.json", shard_dir / f"{n:05d}.npy"
    try:
        record = json.loads(record_path.read_text())
        size = npy.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not {"rows", "failures", "sums"} <= set(record):
        return None                  # (a record without sums, of an older version: rebuilt)
    if "file" in record and record["file"].get("bytes") != size:
        return None
    return record


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
    for name in ("audiostem", "numpy", "soundfile", "soxr", "librosa", "torch", "torchaudio",
                 "pretty_midi", "symusic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class CacheWriter:
    """Writes items into ``OUT.partial/`` shard by shard and publishes ``OUT`` on :meth:`finish`.

    Args:
        out: the cache folder to create.
        config: the feature config every item was computed with.
        source: a JSON-able description of where the items came from (adapter name, root,
            options); stored in ``meta.json``. A partial build made from another source or
            config is discarded, not resumed.
        classes: the class list, in label-index order (``None``: sorted labels of the items).

        restart: discard an interrupted build instead of resuming it (``--force``). A complete
            cache at ``out`` is never touched before :meth:`finish` replaces it.

    An ``out`` that is a symbolic link is built where it points (:func:`build_target`).

    The writer holds the cache's lock from here until :meth:`finish` or :meth:`close` (it is
    a context manager); a second writer of the same cache, in this process or another, is
    refused with a :class:`CacheError` naming the holder.

    Call :meth:`is_done` to skip sources a previous, interrupted build already wrote, then
    :meth:`add` / :meth:`add_failure` for every remaining source *in the same order as
    before*, then :meth:`finish`.
    """

    def __init__(self, out: Union[str, Path], config: FeatureConfig, source: dict,
                 classes: Optional[list[str]] = None, *,
                 shard_bytes: int = SHARD_BYTES, shard_items: int = SHARD_ITEMS, restart: bool = False):
        if Path(out).name in ("", ".", ".."):          # ., /, x/..: no name for OUT.partial
            raise CacheError(f"--out {shown(out)}: name the cache folder (e.g. --out caches/NAME): it is built "
                             f"beside it, in NAME.partial, and swapped in when complete")
        self.out = build_target(Path(out))
        if not isinstance(config, (AudioFeatures, PianoRollFeatures)):
            raise TypeError(f"config: a feature config object, not {type(config).__name__} "
                            "(data_prep.feature_config(fields) makes one)")
        self.config = config
        self.source = source
        self.classes = classes
        self.shard_bytes, self.shard_items = shard_bytes, shard_items
        self.dir = partial_path(self.out)
        self.shard_dir = self.dir / "shards"
        self._rows: list[dict] = []         # rows of committed shards
        self._failures: list[dict] = []     # failures of committed shards
        self._warnings: list[dict] = []     # notes about items of committed shards
        self._sums: list[dict] = []         # per committed shard: {"train": Sums, "all": Sums}
        self._shard: Optional[ShardFile] = None      # the shard being written
        self._pending: list[dict] = []                 # its rows
        self._pending_failures: list[dict] = []
        self._pending_warnings: list[dict] = []
        self._pending_sums = self._new_sums()
        self._done: set[str] = set()
        self.resumed_items = 0
        if self.out.is_dir() and any(self.out.iterdir()) and not any(
                (self.out / name).exists() for name in ("meta.json", "manifest.csv", "shards")):
            raise CacheError(f"{shown(self.out)} exists and is not a feature cache (no meta.json, manifest.csv or "
                             "shards/); a build would replace it: choose another --out, or remove it yourself")
        if self.out.exists() and not self.out.is_dir():
            raise CacheError(f"{shown(self.out)} is a file, not a cache folder; choose another --out")
        self._lock = CacheLock(self.out)
        try:
            self._lock.acquire()
        except CacheBusyError as e:
            raise CacheError(str(e)) from None
        try:
            self._open(restart)
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Stop without publishing: release the lock, keep ``OUT.partial`` for a resume."""
        if self._shard is not None:               # the shard being written is not committed
            self._shard.abort()
            self._shard = None
        self._lock.release()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- set-up and resume -------------------------------------------------------------
    def _open(self, restart: bool) -> None:
        header = {"format": FORMAT_VERSION, "features": self.config.to_dict(), "source": self.source}
        header_path = self.dir / "build.json"
        for trash in self.out.parent.glob(f"{glob_escape(self.out.name)}.old-*"):
            shutil.rmtree(trash, ignore_errors=True)       # left by a swap that was killed
        if self.dir.exists():
            try:
                old = json.loads(header_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != header or restart:
                shutil.rmtree(self.dir)      # a partial build of something else: start over
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if not header_path.exists():
            _write_json(header_path, header)
        n = 0
        while (record := _shard_record(self.shard_dir, n)) is not None:
            self._rows += record["rows"]
            self._failures += record["failures"]
            self._warnings += record.get("warnings", [])      # (records of older versions have none)
            self._sums.append({k: Sums.from_json(v, self.config.feature_shape)
                               for k, v in record["sums"].items()})
            n += 1
        self._next_shard = n
        for stale in self.shard_dir.iterdir():     # an uncommitted shard, or temporary files
            if stale.suffix == ".tmp" or int(stale.name.split(".")[0]) >= n:
                stale.unlink()
        self._done = {r["source"] for r in self._rows} | {f["source"] for f in self._failures}
        self.resumed_items = len(self._done)

    def _new_sums(self) -> dict:
        return {"train": Sums(self.config.feature_shape), "all": Sums(self.config.feature_shape)}

    def is_done(self, source: str) -> bool:
        """True when a previous build already wrote (or failed) this source."""
        return source in self._done

    # -- adding items ------------------------------------------------------------------
    def add(self, features: np.ndarray, *, id: str, source: str, label: str,
            split: str = "", fold: Optional[int] = None, group: str = "", checksum: str = "",
            sums: Optional[tuple[np.ndarray, np.ndarray]] = None, warnings: Sequence[str] = ()) -> None:
        """Add one item: ``features`` is ``(frames, *config.feature_shape)``, any float dtype
        (float16 is written as it is). It is written at once: the array may be reused after.

        ``sums``: :func:`item_sums` of ``features``, when a worker process already computed
        them; they are computed here otherwise. ``warnings``: notes about how the file was read
        (a truncated WAV), kept with the item's shard so that a resumed build still has them
        (:attr:`warnings`).
        """
        shape = tuple(self.config.feature_shape)
        if features.ndim != 1 + len(shape) or tuple(features.shape[1:]) != shape or len(features) == 0:
            raise ValueError(f"{shown(source)}: features of shape {features.shape} do not match "
                             f"(frames>0, *{shape}) of the feature config")
        array = np.ascontiguousarray(features, dtype=np.float16)
        if self._shard is None:
            path = self.shard_dir / f"{self._next_shard:05d}.npy"
            try:
                self._shard = ShardFile(path, shape)
            except OSError as e:
                raise named_error(e, path) from None
        self._pending.append({"id": id, "source": source, "checksum": checksum, "label": label,
                              "split": split, "fold": "" if fold is None else int(fold),
                              "group": group, "frames": len(array), "shard": self._next_shard,
                              "offset": self._shard.frames})
        try:
            self._shard.append(array)
        except OSError as e:
            self._abort_shard(e)
        self._pending_warnings += [{"source": source, "warning": w} for w in warnings]
        total, total_sq = item_sums(array) if sums is None else sums
        for key in ("train", "all") if split == "train" else ("all",):
            self._pending_sums[key].add(len(array), total, total_sq)
        if self._shard.nbytes >= self.shard_bytes or len(self._pending) >= self.shard_items:
            self._commit_shard()

    def add_failure(self, source: str, reason: str) -> None:
        """Record a source that could not be turned into features (it is skipped, not fatal)."""
        self._pending_failures.append({"source": source, "reason": reason})

    @property
    def warnings(self) -> list[dict]:
        """``{"source", "warning"}`` of every item added, by this build or the interrupted ones
        it resumes, in item order."""
        return self._warnings + self._pending_warnings

    def _commit_shard(self) -> None:
        if not self._pending and not self._pending_failures:
            return
        name = f"{self._next_shard:05d}"
        try:
            self._shard = self._shard or ShardFile(self.shard_dir / f"{name}.npy", self.config.feature_shape)
            file = self._shard.close()               # the data on disk first, then the record
        except OSError as e:
            self._abort_shard(e)
        try:
            _write_json(self.shard_dir / f"{name}.json",
                        {"rows": self._pending, "failures": self._pending_failures,
                         "warnings": self._pending_warnings,
                         "sums": {k: v.to_json() for k, v in self._pending_sums.items()}, "file": file})
        except OSError as e:                         # the shard is not committed: remove its data
            self._shard.path.unlink(missing_ok=True)
            self._abort_shard(e)
        self._rows += self._pending
        self._failures += self._pending_failures
        self._warnings += self._pending_warnings
        self._sums.append(self._pending_sums)
        self._shard, self._pending, self._pending_failures, self._pending_warnings = None, [], [], []
        self._pending_sums = self._new_sums()
        self._next_shard += 1

    def _abort_shard(self, error: OSError):
        """Drop the shard being written (its items are written again on resume) and raise
        ``error`` naming its file."""
        shard, self._shard = self._shard, None
        self._pending, self._pending_failures, self._pending_warnings = [], [], []
        self._pending_sums = self._new_sums()
        if shard is not None:
            shard.abort()
        raise named_error(error, shard.tmp if shard is not None else self.shard_dir) from None

    # -- publishing --------------------------------------------------------------------
    def finish(self, extra_meta: Optional[dict] = None) -> "FeatureCache":
        """Commit the last shard, compute train statistics, write manifest and meta, publish
        (replacing an older cache at ``out`` in one step), and release the lock.

        Raises :class:`CacheError` when no item was usable or a label is not a class; the
        older cache, if any, is then left as it was, and the lock is released."""
        try:
            self._commit_shard()
            return self._publish(extra_meta)
        finally:
            self._lock.release()

    def _publish(self, extra_meta: Optional[dict]) -> "FeatureCache":
        if not self._rows:
            raise CacheError(f"{shown(self.out)}: no usable item was found "
                             f"({len(self._failures)} sources failed)")
        classes = self.classes or sorted({r["label"] for r in self._rows})
        unknown = sorted({r["label"] for r in self._rows} - set(classes))
        if unknown:
            raise CacheError(f"{shown(self.out)}: labels {unknown} are not in the class list {classes}")
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(self._rows)
        manifest = text.getvalue().encode("utf-8")
        write_atomic(self.dir / "manifest.csv", manifest)
        files = {"manifest.csv": {"bytes": len(manifest), "sha256": hashlib.sha256(manifest).hexdigest()}}
        for n in range(self._next_shard):
            record = _shard_record(self.shard_dir, n) or {}
            files[f"shards/{n:05d}.npy"] = record.get("file") or file_record(self.shard_dir / f"{n:05d}.npy")
        over = "train" if any(r["split"] == "train" for r in self._rows) else "all"
        total = Sums(self.config.feature_shape)
        for shard in self._sums:                   # in shard order: a resumed build adds alike
            total.add(shard[over].frames, shard[over].sum, shard[over].sum_sq)
        mean, std = total.mean_std()
        meta = {
            "format": FORMAT_VERSION,
            "build_id": uuid.uuid4().hex,
            "features": self.config.to_dict(),
            "feature_shape": list(self.config.feature_shape),
            "dtype": "float16",
            "classes": classes,
            "n_items": len(self._rows),
            "n_frames": int(sum(r["frames"] for r in self._rows)),
            "splits": {s: sum(r["split"] == s for r in self._rows)
                       for s in sorted({r["split"] for r in self._rows})},
            "stats": {"mean": mean.tolist(), "std": std.tolist(),
                      "over": over},
            "source": self.source,
            "failures": self._failures,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            **(extra_meta or {}),
        }
        meta["meta_sha256"] = meta_checksum(meta)
        _write_json(self.dir / "meta.json", meta)
        (self.dir / "build.json").unlink()
        fsync_dir(self.dir)
        swap_in(self.dir, self.out, self.out.with_name(f"{self.out.name}.old-{meta['build_id'][:8]}"))
        fsync_dir(self.out.parent)
        return open_cache(self.out)


def check_existing(out: Union[str, Path], config: FeatureConfig, force: bool = False,
                   source: Optional[dict] = None) -> Optional[FeatureCache]:
    """Decide what to do about an existing cache at ``out`` before building it.

    Returns the opened cache when a complete, whole cache with the same feature config (and,
    when ``source`` is given, the same source name and options) exists: it is up to date.
    Returns ``None`` when a build should go ahead (no cache, or ``force``). Raises
    :class:`CacheError` naming the differing fields when they differ (or naming the damaged file
    when the cache is damaged) and ``force`` is false. Nothing is deleted here: a rebuild
    replaces the old cache only when the new one is complete (:meth:`CacheWriter.finish`). The
    dataset's root folder is not compared, so a cache stays valid when its dataset moves.
    """
    if force or not cache_exists(out):
        return None
    cache = open_cache(out)
    problem = cache.mismatch(config, "this command", source)
    if problem:
        raise CacheError(f"{problem}; use --force to rebuild it or choose another --out")
    return cache


def drop_unused_partial(out: Union[str, Path]) -> None:
    """Remove the unfinished build of ``out`` when it holds no committed shard (no work to keep:
    after a build that failed at once, e.g. on a read-only disk)."""
    partial = partial_path(out)
    if partial.is_dir() and not any(partial.glob("shards/*.json")):
        shutil.rmtree(partial, ignore_errors=True)
