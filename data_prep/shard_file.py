"""The ``.npy`` shard files of a feature cache (used by :mod:`data_prep.cache_writer` and
:mod:`data_prep.cache`, which own the format): writing one shard without holding it in memory,
and checking that a cache's shards (and manifest) are the files its build wrote.

A shard is a plain ``.npy`` file (``np.load(..., mmap_mode="r")`` reads it) of float16 frames
``(total_frames, *feature_shape)``; one item is a contiguous slice of it.
"""
from __future__ import annotations

import errno
import hashlib
import io
import mmap
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .discover import shown


class ShardFile:
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
        self.sha256 = hashlib.sha256()                   # of the data after the header
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:                                             # 0o666: data, not executable (umask applies)
            self.fd = os.open(self.tmp, flags | getattr(os, "O_DIRECT", 0), 0o666)
        except OSError:                                  # e.g. EINVAL on tmpfs
            self.fd = os.open(self.tmp, flags, 0o666)
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
        self.sha256.update(data)
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

    def close(self) -> dict:
        """Write the real header, put the file on disk, and only then name it ``.npy``.
        Returns what ``meta.json`` records of it: ``{"bytes", "data_sha256"}``."""
        size = self.flushed + self.fill
        if self.fill:                                    # the last, partial block: padded, cut below
            padded = -(-self.fill // self.BLOCK) * self.BLOCK
            self.stage[self.fill:padded] = bytes(padded - self.fill)
            self._flush(padded)
        if self._header_into(self.first) != self.data_start:   # cannot happen with NumPy's padding
            raise RuntimeError(f"{shown(self.tmp)}: the .npy header changed size")
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
        return {"bytes": size, "data_sha256": self.sha256.hexdigest()}

    def abort(self) -> None:
        """Give up this shard after an error (a full disk): close it and remove its file."""
        for close in (lambda: self.fd >= 0 and os.close(self.fd), self.stage.close, self.first.close):
            try:
                close()
            except (OSError, ValueError, BufferError):
                pass
        self.tmp.unlink(missing_ok=True)


def file_record(path: Path) -> dict:
    """``{"bytes", "data_sha256"}`` of a shard on disk (the digest of the data after the header)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "data_sha256": h.hexdigest()}



def shard_problems(path: Path, meta: dict, needed: dict[int, int]) -> list[str]:
    """What is wrong with the shards of the cache at ``path``: missing files, sizes that differ
    from ``meta["files"]`` (caches built before it existed: from the ``.npy`` header), headers
    that do not hold the frames the manifest places in them (``needed``: shard number -> the
    frames it must hold at least). A stat and one 4-KB read per shard. Returns one line per
    damaged file (empty: all whole)."""
    recorded = meta.get("files") or {}
    shape = tuple(meta.get("feature_shape") or ())
    problems = []
    for n in sorted(set(needed) | {int(k[7:12]) for k in recorded if k.startswith("shards/")}):
        name = f"shards/{n:05d}.npy"
        file = path / name
        try:
            size = file.stat().st_size
            with open(file, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                header = npy_header(fh, version)
                start = fh.tell()
        except FileNotFoundError:
            problems.append(f"{shown(file)}: missing")
            continue
        except (OSError, ValueError) as e:
            problems.append(f"{shown(file)}: damaged (not a .npy file: {' '.join(str(e).split())})")
            continue
        rows, dtype = header[0], np.dtype(header[2])
        want = recorded.get(name, {}).get("bytes")
        full = start + int(np.prod(rows, dtype=np.int64)) * dtype.itemsize
        if want is not None and size != want:
            problems.append(f"{shown(file)}: {size} bytes, the build wrote {want} (truncated or altered)")
        elif size != full:
            problems.append(f"{shown(file)}: {size} bytes, its header says {full} (truncated)")
        elif dtype != np.float16 or (shape and tuple(rows[1:]) != shape) or (rows and rows[0] < needed.get(n, 0)):
            problems.append(f"{shown(file)}: holds {tuple(rows)} {dtype}, the manifest needs at least "
                            f"({needed.get(n, 0)}, {', '.join(map(str, shape))}) float16")
    return problems


def checksum_problems(path: Path, meta: dict) -> list[str]:
    """Files of the cache at ``path`` whose SHA-256 differs from ``meta["files"]`` (shards: of
    the data after the ``.npy`` header). Reads every byte. One line per file that differs."""
    problems = []
    for name, record in sorted((meta.get("files") or {}).items()):
        file = path / name
        h = hashlib.sha256()
        try:
            with open(file, "rb") as fh:
                if name.endswith(".npy"):
                    version = np.lib.format.read_magic(fh)
                    npy_header(fh, version)
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        except (OSError, ValueError) as e:
            problems.append(f"{shown(file)}: cannot be read ({' '.join(str(e).split())})")
            continue
        want = record.get("data_sha256") or record.get("sha256")
        if h.hexdigest() != want:
            problems.append(f"{shown(file)}: checksum differs from the one its build recorded (damaged or altered)")
    return problems



def npy_header(fh, version: tuple) -> tuple:
    """``(shape, fortran_order, dtype)`` of an open ``.npy`` file after its magic string."""
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)

