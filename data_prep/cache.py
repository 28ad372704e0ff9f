"""The feature cache: the on-disk contract between ``data_prep`` and ``audiostem``.

One folder per prepared dataset::

    CACHE/
      meta.json            feature config, classes, per-bin train mean/std, versions, failures
      manifest.csv         one row per item: id, source, checksum, label, split, fold, group,
                           frames, shard, offset
      shards/00000.npy     float16 array (total_frames, *feature_shape); one item = one
      shards/00001.npy     contiguous slice [offset, offset + frames) of one shard
      ...

It is built in ``CACHE.partial/`` and renamed when complete, so a folder named ``CACHE`` is
always whole. While building, items are appended to ``NNNNN.npy.tmp`` as they arrive, and a
shard is committed by renaming it to ``NNNNN.npy`` once it is on disk (fsync) and then writing
``NNNNN.json`` (its manifest rows, failures and per-bin sums for the statistics); a shard
without its ``.json`` is incomplete and is rebuilt. Items arrive in a deterministic order and
shards close at deterministic points, so a build that was killed and resumed ends with the same
cache as one that was not.

Readers open shards with ``mmap_mode="r"``: many DataLoader workers and DDP ranks share the
page cache and nothing is loaded into memory until it is sliced.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import mmap
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from .config import FeatureConfig, config_diff, feature_config
from .stats import Sums, item_sums

FORMAT_VERSION = 1
MANIFEST_FIELDS = ("id", "source", "checksum", "label", "split", "fold", "group",
                   "frames", "shard", "offset")
SHARD_BYTES = 64 * 2**20   # close a shard once its features reach this size
SHARD_ITEMS = 2048         # ... or this many items


class CacheError(Exception):
    """A cache that is missing, incomplete, or built with another feature config."""


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


class _ShardFile:
    """A shard being written: items are appended as raw float16 bytes behind a ``.npy`` header
    that :meth:`close` rewrites with the final number of frames. NumPy pads a header so that
    its first dimension can grow to any size in place, so the file is exactly what ``np.save``
    of the concatenated items would write, without holding the shard in memory.

    Where the file system allows it (Linux, not tmpfs) the file is written with ``O_DIRECT``,
    from an aligned staging buffer in whole 4-KiB blocks: the disk reads the bytes from that
    buffer, with no copy into the page cache, which was the costliest CPU work of a piano-roll
    build (a 728-MB cache: 0.3 s of CPU buffered, 0.15 s direct; see docs/midi.md). Elsewhere the
    same blocks go through the page cache.
    """
    BLOCK = 4096                 # O_DIRECT alignment of offsets, lengths and buffer addresses
    STAGE = 8 * 2**20

    def __init__(self, path: Path, feature_shape: tuple[int, ...]):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.feature_shape, self.frames, self.nbytes = feature_shape, 0, 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            self.fd = os.open(self.tmp, flags | getattr(os, "O_DIRECT", 0))
        except OSError:                                  # e.g. EINVAL on tmpfs
            self.fd = os.open(self.tmp, flags)
        self.stage = mmap.mmap(-1, self.STAGE)           # page-aligned, reused for the whole shard
        self.first = mmap.mmap(-1, self.BLOCK)           # the first block, kept for the header
        self.flushed = 0                                 # file bytes written before the stage
        self.fill = self._header_into(self.stage)
        self.data_start = self.fill

    def _header_into(self, block: mmap.mmap) -> int:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
            "shape": (self.frames, *self.feature_shape)})
        block[:header.tell()] = header.getbuffer()
        return header.tell()

    def append(self, array: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        done = 0
        while done < len(data):
            n = min(len(data) - done, self.STAGE - self.fill)
            self.stage[self.fill:self.fill + n] = data[done:done + n]
            self.fill += n
            done += n
            if self.fill == self.STAGE:
                self._flush(self.STAGE)
        self.frames += len(array)
        self.nbytes += array.nbytes

    def _flush(self, length: int) -> None:
        """Write the first ``length`` bytes of the stage (a whole number of blocks, all it holds)."""
        if self.flushed == 0:
            self.first[:] = self.stage[:self.BLOCK]
        with memoryview(self.stage) as stage:
            view = stage[:length]
            try:
                while len(view):
                    view = view[self._write(view):]
            finally:
                view.release()
        self.flushed += length
        self.fill = 0

    def _write(self, view: memoryview, offset: Optional[int] = None) -> int:
        try:
            return os.write(self.fd, view) if offset is None else os.pwrite(self.fd, view, offset)
        except OSError as e:     # a file system that opens O_DIRECT files but refuses the writes
            direct = getattr(os, "O_DIRECT", 0)
            if e.errno != errno.EINVAL or not direct:
                raise
            import fcntl

            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            if not flags & direct:
                raise
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~direct)
            return self._write(view, offset)

    def close(self) -> None:
        """Write the real header, put the file on disk, and only then name it ``.npy``."""
        size = self.flushed + self.fill
        if self.fill:                                    # the last, partial block: padded, cut below
            padded = -(-self.fill // self.BLOCK) * self.BLOCK
            self.stage[self.fill:padded] = bytes(padded - self.fill)
            self._flush(padded)
        if self._header_into(self.first) != self.data_start:   # cannot happen with NumPy's padding
            raise RuntimeError(f"{self.tmp}: the .npy header changed size")
        self._write(memoryview(self.first), 0)
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        try:
            # On disk: let the kernel reuse the pages (if any were used) for the next shard rather
            # than find fresh memory for every shard (3-4x faster writes here, see docs/midi.md).
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (AttributeError, OSError):              # not on macOS; only a hint anyway
            pass
        os.close(self.fd)
        self.fd = -1
        self.stage.close()
        self.first.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Give up this shard after an error (a full disk): close it and remove its file."""
        for close in (lambda: self.fd >= 0 and os.close(self.fd), self.stage.close, self.first.close):
            try:
                close()
            except (OSError, ValueError, BufferError):
                pass
        self.tmp.unlink(missing_ok=True)


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

    Call :meth:`is_done` to skip sources a previous, interrupted build already wrote, then
    :meth:`add` / :meth:`add_failure` for every remaining source *in the same order as
    before*, then :meth:`finish`.
    """

    def __init__(self, out: Union[str, Path], config: FeatureConfig, source: dict,
                 classes: Optional[list[str]] = None, *,
                 shard_bytes: int = SHARD_BYTES, shard_items: int = SHARD_ITEMS):
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
        self._open()

    # -- set-up and resume -------------------------------------------------------------
    def _open(self) -> None:
        header = {"format": FORMAT_VERSION, "features": self.config.to_dict(), "source": self.source}
        header_path = self.dir / "build.json"
        if header_path.exists():
            try:
                old = json.loads(header_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != header:
                shutil.rmtree(self.dir)      # a partial build of something else: start over
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if not header_path.exists():
            _write_json(header_path, header)
        n = 0
        while (self.shard_dir / f"{n:05d}.json").exists() and (self.shard_dir / f"{n:05d}.npy").exists():
            record = json.loads((self.shard_dir / f"{n:05d}.json").read_text())
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
            self._shard.close()                      # the data on disk first, then the record
        except OSError as e:
            self._abort_shard(e)
        try:
            _write_json(self.shard_dir / f"{name}.json",
                        {"rows": self._pending, "failures": self._pending_failures,
                         "sums": {k: v.to_json() for k, v in self._pending_sums.items()}})
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
        """Commit the last shard, compute train statistics, write manifest and meta, publish."""
        self._commit_shard()
        if not self._rows:
            raise CacheError(f"{self.out}: no usable item was found "
                             f"({len(self._failures)} sources failed)")
        classes = self.classes or sorted({r["label"] for r in self._rows})
        unknown = sorted({r["label"] for r in self._rows} - set(classes))
        if unknown:
            raise CacheError(f"{self.out}: labels {unknown} are not in the class list {classes}")
        with open(self.dir / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(self._rows)
        over = "train" if any(r["split"] == "train" for r in self._rows) else "all"
        total = Sums(self.config.feature_shape)
        for shard in self._sums:                   # in shard order: a resumed build adds alike
            total.add(shard[over].frames, shard[over].sum, shard[over].sum_sq)
        mean, std = total.mean_std()
        meta = {
            "format": FORMAT_VERSION,
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
            **(extra_meta or {}),
        }
        _write_json(self.dir / "meta.json", meta)
        (self.dir / "build.json").unlink()
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.dir, self.out)
        return open_cache(self.out)


def check_existing(out: Union[str, Path], config: FeatureConfig, force: bool = False,
                   source: Optional[dict] = None) -> Optional[str]:
    """Decide what to do about an existing cache at ``out`` before building it.

    Returns ``"up to date"`` when a complete cache with the same feature config (and, when
    ``source`` is given, the same source name and options) exists, and ``None`` when a build
    should go ahead (no cache, or ``force`` removed the old one). Raises :class:`CacheError`
    naming the differing fields when they differ and ``force`` is false. The dataset's root
    folder is not compared, so a cache stays valid when its dataset moves.
    """
    out = Path(out)
    if not (out / "meta.json").exists():
        return None
    meta = json.loads((out / "meta.json").read_text())
    diff = config_diff(meta["features"], config)
    if source is not None:
        old = meta.get("source", {})
        if old.get("name") != source.get("name"):
            diff.append(f"source: {old.get('name')!r} != {source.get('name')!r}")
        old_opts, new_opts = old.get("options", {}), source.get("options", {})
        diff += [f"--{k.replace('_', '-')}: {old_opts.get(k)!r} != {new_opts.get(k)!r}"
                 for k in sorted(set(old_opts) | set(new_opts)) if old_opts.get(k) != new_opts.get(k)]
    if not diff:
        if force:
            shutil.rmtree(out)
            return None
        return "up to date"
    if not force:
        raise CacheError(f"{out} was built with another feature config or source "
                         f"({'; '.join(diff)}); use --force to rebuild it or choose another --out")
    shutil.rmtree(out)
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
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            hint = (" (an interrupted build: run the same data_prep command again to resume it)"
                    if _partial(self.path).exists() else "")
            raise CacheError(f"{self.path}: not a feature cache, no meta.json{hint}")
        self.meta: dict = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"{self.path}: cache format {self.meta.get('format')!r}, "
                             f"this version reads {FORMAT_VERSION}; rebuild it with --force")
        self.config = feature_config(self.meta["features"])
        self.classes: list[str] = list(self.meta["classes"])
        with open(self.path / "manifest.csv", newline="", encoding="utf-8") as fh:
            self.items: list[dict] = [_parse_row(r) for r in csv.DictReader(fh)]
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self._shards: dict[int, np.ndarray] = {}

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
            shard = np.load(self.path / "shards" / f"{item['shard']:05d}.npy", mmap_mode="r")
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


def open_cache(path: Union[str, Path]) -> FeatureCache:
    """Open a prepared feature cache for reading (see :class:`FeatureCache`)."""
    return FeatureCache(path)
