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
one is refused, naming the holder (see :mod:`data_prep.cache_files`). While building, items are appended to ``NNNNN.npy.tmp`` as they arrive, and a
shard is committed by renaming it to ``NNNNN.npy`` once it is on disk (fsync) and then writing
``NNNNN.json`` (its manifest rows, failures and per-bin sums for the statistics); a shard
without its ``.json`` is incomplete and is rebuilt. Items arrive in a deterministic order and
shards close at deterministic points, so a build that was killed and resumed ends with the same
cache as one that was not.

Readers open shards with ``mmap_mode="r"``: many DataLoader workers and DDP ranks share the
page cache and nothing is loaded into memory until it is sliced.

Every build has a random ``build_id`` (in ``meta.json``), and ``meta.json`` records the size and
SHA-256 of every shard and of the manifest. Opening a cache checks that every file is whole
(sizes and ``.npy`` headers against the manifest: a stat and a 4-KB read per shard, done every
time); :func:`verify_cache` (``python -m data_prep verify CACHE``) also checks the checksums.
A reader remembers the build id it opened and checks it again after opening each shard
(:meth:`FeatureCache.check_build`), so a cache rebuilt under it is refused, not mixed in.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import time
import uuid
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from .cache_files import (CacheBusyError, CacheLock, _file_record, _fsync_dir, _ShardFile, checksum_problems,
                          read_json, rebuild_command, shard_problems, swap_in)
from .config import FeatureConfig, config_diff, feature_config
from .stats import Sums, item_sums

FORMAT_VERSION = 1
MANIFEST_FIELDS = ("id", "source", "checksum", "label", "split", "fold", "group",
                   "frames", "shard", "offset")
SHARD_BYTES = 64 * 2**20   # close a shard once its features reach this size
SHARD_ITEMS = 2048         # ... or this many items


class CacheError(Exception):
    """A cache that is missing, incomplete, damaged, being built by another process, rebuilt
    while being read, or built with another feature config."""


def _named(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name when it has none (``os.write`` gives none)."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:             # a full or read-only disk: leave no temporary file behind
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from None


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _shard_record(shard_dir: Path, n: int) -> Optional[dict]:
    """The record of committed shard ``n`` of a partial build, or ``None`` when it is not
    committed (no record, or a record or shard that a crash left incomplete)."""
    record_path, npy = shard_dir / f"{n:05d}.json", shard_dir / f"{n:05d}.npy"
    try:
        record = json.loads(record_path.read_text())
        size = npy.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "rows" not in record or "failures" not in record:
        return None
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


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


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
        self.out = Path(out)
        self.config = feature_config(config)
        self.source = source
        self.classes = classes
        self.shard_bytes, self.shard_items = shard_bytes, shard_items
        self.dir = _partial(self.out)
        self.shard_dir = self.dir / "shards"
        self._rows: list[dict] = []         # rows of committed shards
        self._failures: list[dict] = []     # failures of committed shards
        self._sums: list[dict] = []         # per committed shard: {"train": Sums, "all": Sums}
        self._shard: Optional[_ShardFile] = None      # the shard being written
        self._pending: list[dict] = []                 # its rows
        self._pending_failures: list[dict] = []
        self._pending_sums = self._new_sums()
        self._done: set[str] = set()
        self.resumed_items = 0
        if self.out.is_dir() and any(self.out.iterdir()) and not any(
                (self.out / name).exists() for name in ("meta.json", "manifest.csv", "shards")):
            raise CacheError(f"{self.out} exists and is not a feature cache (no meta.json, manifest.csv or "
                             "shards/); a build would replace it: choose another --out, or remove it yourself")
        if self.out.exists() and not self.out.is_dir():
            raise CacheError(f"{self.out} is a file, not a cache folder; choose another --out")
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
            self._sums.append(self._load_sums(n, record))
            n += 1
        self._next_shard = n
        for stale in self.shard_dir.iterdir():     # an uncommitted shard, or temporary files
            if stale.suffix == ".tmp" or int(stale.name.split(".")[0]) >= n:
                stale.unlink()
        self._done = {r["source"] for r in self._rows} | {f["source"] for f in self._failures}
        self.resumed_items = len(self._done)

    def _new_sums(self) -> dict:
        return {"train": Sums(self.config.feature_shape), "all": Sums(self.config.feature_shape)}

    def _load_sums(self, shard: int, record: dict) -> dict:
        """A committed shard's sums, from its record (or from its data, for a shard written
        before records held them)."""
        if "sums" in record:
            return {k: Sums.from_json(v, self.config.feature_shape) for k, v in record["sums"].items()}
        sums = self._new_sums()
        data = np.load(self.shard_dir / f"{shard:05d}.npy", mmap_mode="r")
        for row in record["rows"]:
            x = data[row["offset"]:row["offset"] + row["frames"]]
            for key in ("train", "all") if row["split"] == "train" else ("all",):
                sums[key].add(len(x), *item_sums(x))
        return sums

    def is_done(self, source: str) -> bool:
        """True when a previous build already wrote (or failed) this source."""
        return source in self._done

    # -- adding items ------------------------------------------------------------------
    def add(self, features: np.ndarray, *, id: str, source: str, label: str,
            split: str = "", fold: Optional[int] = None, group: str = "", checksum: str = "",
            sums: Optional[tuple[np.ndarray, np.ndarray]] = None) -> None:
        """Add one item: ``features`` is ``(frames, *config.feature_shape)``, any float dtype
        (float16 is written as it is). It is written at once: the array may be reused after.

        ``sums``: :func:`item_sums` of ``features``, when a worker process already computed
        them; they are computed here otherwise.
        """
        shape = tuple(self.config.feature_shape)
        if features.ndim != 1 + len(shape) or tuple(features.shape[1:]) != shape or len(features) == 0:
            raise ValueError(f"{source}: features of shape {features.shape} do not match "
                             f"(frames>0, *{shape}) of the feature config")
        array = np.ascontiguousarray(features, dtype=np.float16)
        if self._shard is None:
            path = self.shard_dir / f"{self._next_shard:05d}.npy"
            try:
                self._shard = _ShardFile(path, shape)
            except OSError as e:
                raise _named(e, path) from None
        self._pending.append({"id": id, "source": source, "checksum": checksum, "label": label,
                              "split": split, "fold": "" if fold is None else int(fold),
                              "group": group, "frames": len(array), "shard": self._next_shard,
                              "offset": self._shard.frames})
        try:
            self._shard.append(array)
        except OSError as e:
            self._abort_shard(e)
        total, total_sq = item_sums(array) if sums is None else sums
        for key in ("train", "all") if split == "train" else ("all",):
            self._pending_sums[key].add(len(array), total, total_sq)
        if self._shard.nbytes >= self.shard_bytes or len(self._pending) >= self.shard_items:
            self._commit_shard()

    def add_failure(self, source: str, reason: str) -> None:
        """Record a source that could not be turned into features (it is skipped, not fatal)."""
        self._pending_failures.append({"source": source, "reason": reason})

    def _commit_shard(self) -> None:
        if not self._pending and not self._pending_failures:
            return
        name = f"{self._next_shard:05d}"
        try:
            self._shard = self._shard or _ShardFile(self.shard_dir / f"{name}.npy", self.config.feature_shape)
            file = self._shard.close()               # the data on disk first, then the record
        except OSError as e:
            self._abort_shard(e)
        try:
            _write_json(self.shard_dir / f"{name}.json",
                        {"rows": self._pending, "failures": self._pending_failures,
                         "sums": {k: v.to_json() for k, v in self._pending_sums.items()}, "file": file})
        except OSError as e:                         # the shard is not committed: remove its data
            self._shard.path.unlink(missing_ok=True)
            self._abort_shard(e)
        self._rows += self._pending
        self._failures += self._pending_failures
        self._sums.append(self._pending_sums)
        self._shard, self._pending, self._pending_failures = None, [], []
        self._pending_sums = self._new_sums()
        self._next_shard += 1

    def _abort_shard(self, error: OSError):
        """Drop the shard being written (its items are written again on resume) and raise
        ``error`` naming its file."""
        shard, self._shard = self._shard, None
        self._pending, self._pending_failures = [], []
        self._pending_sums = self._new_sums()
        if shard is not None:
            shard.abort()
        raise _named(error, shard.tmp if shard is not None else self.shard_dir) from None

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
            raise CacheError(f"{self.out}: no usable item was found "
                             f"({len(self._failures)} sources failed)")
        classes = self.classes or sorted({r["label"] for r in self._rows})
        unknown = sorted({r["label"] for r in self._rows} - set(classes))
        if unknown:
            raise CacheError(f"{self.out}: labels {unknown} are not in the class list {classes}")
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(self._rows)
        manifest = text.getvalue().encode("utf-8")
        _write_atomic(self.dir / "manifest.csv", lambda fh: fh.write(manifest))
        files = {"manifest.csv": {"bytes": len(manifest), "sha256": hashlib.sha256(manifest).hexdigest()}}
        for n in range(self._next_shard):
            record = _shard_record(self.shard_dir, n) or {}
            files[f"shards/{n:05d}.npy"] = record.get("file") or _file_record(self.shard_dir / f"{n:05d}.npy")
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
        _write_json(self.dir / "meta.json", meta)
        (self.dir / "build.json").unlink()
        _fsync_dir(self.dir)
        swap_in(self.dir, self.out, self.out.with_name(f"{self.out.name}.old-{meta['build_id'][:8]}"))
        _fsync_dir(self.out.parent)
        return open_cache(self.out)


def check_existing(out: Union[str, Path], config: FeatureConfig, force: bool = False,
                   source: Optional[dict] = None) -> Optional[str]:
    """Decide what to do about an existing cache at ``out`` before building it.

    Returns ``"up to date"`` when a complete, whole cache with the same feature config (and,
    when ``source`` is given, the same source name and options) exists, and ``None`` when a
    build should go ahead (no cache, a damaged one, or ``force``). Raises :class:`CacheError`
    naming the differing fields when they differ and ``force`` is false. Nothing is deleted
    here: a rebuild replaces the old cache only when the new one is complete
    (:meth:`CacheWriter.finish`). The dataset's root folder is not compared, so a cache stays
    valid when its dataset moves.
    """
    out = Path(out)
    if not (out / "meta.json").exists():
        return None
    try:
        meta = open_cache(out).meta
    except CacheError:
        if force:
            return None
        raise
    diff = config_diff(meta["features"], config)
    if source is not None:
        old = meta.get("source", {})
        if old.get("name") != source.get("name"):
            diff.append(f"source: {old.get('name')!r} != {source.get('name')!r}")
        old_opts, new_opts = old.get("options", {}), source.get("options", {})
        diff += [f"--{k.replace('_', '-')}: {old_opts.get(k)!r} != {new_opts.get(k)!r}"
                 for k in sorted(set(old_opts) | set(new_opts)) if old_opts.get(k) != new_opts.get(k)]
    if not diff:
        return None if force else "up to date"
    if not force:
        raise CacheError(f"{out} was built with another feature config or source "
                         f"({'; '.join(diff)}); use --force to rebuild it or choose another --out")
    return None


class FeatureCache:
    """Read access to a complete cache; see :func:`open_cache`.

    Attributes:
        path: the cache folder.
        meta: the parsed ``meta.json``.
        config: the :class:`~data_prep.config.AudioFeatures` or
            :class:`~data_prep.config.PianoRollFeatures` it was built with.
        classes: class names; an item's label index is ``classes.index(item["label"])``.
        items: one dict per item with ``id``, ``source``, ``checksum``, ``label``, ``split``,
            ``fold`` (int or ``None``), ``group``, ``frames``, ``shard``, ``offset``.
        build_id: the identity of this build (``meta["build_id"]``; for caches built before
            it existed, a digest of ``meta.json``). A rebuild gets a new one.

    Opening checks that the files are whole (see :func:`open_cache`); reading a shard the first
    time checks that the cache is still the build that was opened (:meth:`check_build`).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        for _ in range(3):              # a rebuild swapped in between reading meta and manifest
            self.meta, self.build_id = _read_meta(self.path)
            self.items: list[dict] = self._read_manifest()
            if _read_meta(self.path)[1] == self.build_id:
                break
        else:
            raise CacheError(f"{self.path}: rebuilt again and again while being opened; try later")
        problems = shard_problems(self.path, self.meta, self.items)
        if problems:
            raise CacheError(_damaged(self.path, self.meta, problems))
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self._shards: dict[int, np.ndarray] = {}

    def _read_manifest(self) -> list[dict]:
        manifest = self.path / "manifest.csv"
        try:
            self.config = feature_config(self.meta["features"])
            self.classes: list[str] = list(self.meta["classes"])
            tuple(self.meta["feature_shape"]), self.meta["stats"]["mean"], self.meta["failures"]
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{self.path / 'meta.json'}: damaged "
                                                              f"({type(e).__name__}: {' '.join(str(e).split())})"])) from None
        try:
            want = (self.meta.get("files") or {}).get("manifest.csv", {}).get("bytes")
            if want is not None and manifest.stat().st_size != want:
                raise ValueError(f"{manifest.stat().st_size} bytes, the build wrote {want}")
            with open(manifest, newline="", encoding="utf-8") as fh:
                rows = [_parse_row(r) for r in csv.DictReader(fh)]
            unknown = sorted({r["label"] for r in rows} - set(self.classes))
            if unknown:
                raise ValueError(f"labels {unknown[:3]} are not in meta.json's classes")
            return rows
        except FileNotFoundError as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{e.filename}: missing"])) from None
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(_damaged(self.path, self.meta, [f"{manifest}: damaged ({type(e).__name__}: "
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
                f"{self.path}: the cache was rebuilt (or removed) while it was being read (opened as "
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
        shard = self._shards.get(item["shard"])
        if shard is None:
            file = self.path / "shards" / f"{item['shard']:05d}.npy"
            try:
                shard = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                self.check_build()
                raise CacheError(_damaged(self.path, self.meta, [f"{file}: cannot be read ({e})"])) from None
            self.check_build()          # after the open: the mapped file is this build's
            self._shards[item["shard"]] = shard
        return shard[item["offset"]:item["offset"] + item["frames"]]

    def label_index(self, i: int) -> int:
        """Index of item ``i``'s label in :attr:`classes`."""
        return self._class_index[self.items[i]["label"]]

    def indices(self, split: Optional[str] = None, folds: Optional[Iterable[int]] = None) -> list[int]:
        """Indices of the items in ``split`` (any split when ``None``) and in ``folds``."""
        folds = None if folds is None else set(folds)
        return [i for i, it in enumerate(self.items)
                if (split is None or it["split"] == split) and (folds is None or it["fold"] in folds)]

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(mean, std)`` of the train split, each of shape ``feature_shape``."""
        s = self.meta["stats"]
        return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)

    @property
    def failures(self) -> list[dict]:
        """Sources that were skipped: ``[{"source": ..., "reason": ...}]``."""
        return self.meta["failures"]

    def __getstate__(self) -> dict:      # memory maps are reopened lazily in each process
        return {**self.__dict__, "_shards": {}}


def _parse_row(row: dict) -> dict:
    row["frames"] = int(row["frames"])
    row["shard"] = int(row["shard"])
    row["offset"] = int(row["offset"])
    row["fold"] = int(row["fold"]) if row["fold"] not in ("", None) else None
    return row


def _read_meta(path: Path) -> tuple[dict, str]:
    """``(meta, build_id)`` of the cache at ``path``; :class:`CacheError` naming the file and
    the rebuild command when it is missing, damaged or of another format."""
    meta_path = path / "meta.json"
    if not meta_path.exists():
        hint = (" (an interrupted build: run the same data_prep command again to resume it)"
                if _partial(path).exists() else "")
        raise CacheError(f"{path}: not a feature cache, no meta.json{hint}")
    try:
        raw = meta_path.read_bytes()
        meta = read_json(meta_path)
    except (OSError, ValueError) as e:
        raise CacheError(f"{e}; rebuild the cache with {rebuild_command(path, None)}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format {meta.get('format')!r}, "
                         f"this version reads {FORMAT_VERSION}; rebuild it with --force")
    return meta, str(meta.get("build_id") or "legacy-" + hashlib.sha256(raw).hexdigest()[:16])


def _damaged(path: Path, meta: Optional[dict], problems: list[str]) -> str:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return f"{path}: damaged cache: {shown}. Rebuild it with: {rebuild_command(path, meta)}"


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
