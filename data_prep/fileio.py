"""Writing files so that a reader never sees half of one: the one atomic-write helper of the
project (``data_prep`` for its caches and datasets, ``audiostem`` for its run folders).

A file is written to a temporary file beside it (``.NAME.PID.THREAD.tmp``: unique per process and
thread, so two writers of one path, such as parallel study runners, never mix their bytes),
flushed and ``fsync``-ed, then renamed over ``NAME`` in one step (``os.replace``): a crash leaves
the old file or the new one, never a mixture, and at worst a stray ``*.tmp`` (see
:func:`stray_temporaries`).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], object]]


def named_error(error: OSError, path: Union[str, Path]) -> OSError:
    """``error`` with ``path`` as its file name when it has none (``os.write`` gives none)."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


class FileTooLarge(ValueError):
    """A file larger than the caller reads whole; ``size`` is its size in bytes."""

    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


def read_whole(path: Union[str, Path], limit: int) -> bytes:
    """The bytes of ``path`` in one read (hash and parse these, not a second read: the file may
    change in between). Raises :class:`FileTooLarge` for a file over ``limit`` bytes, checked
    before reading, and ``OSError`` when it cannot be read."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise FileTooLarge(size)
    return path.read_bytes()


def write_atomic(path: Union[str, Path], content: Content) -> None:
    """Write ``content`` to ``path`` atomically (tmp file, fsync, rename).

    Args:
        path: the file to write; its folder must exist.
        content: ``bytes``, ``str`` (written as UTF-8), or a function that writes into the open
            binary file (``lambda fh: np.save(fh, x)``).

    Raises:
        OSError: the disk is full, read-only or gone, naming ``path`` (the temporary file is
            removed; an older ``path`` is left as it was).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:             # a full or read-only disk: leave no temporary file behind
        tmp.unlink(missing_ok=True)
        raise type(e)(e.errno, e.strerror or str(e), str(path)) from None     # the file, not its temporary
    except BaseException:            # interrupted (KeyboardInterrupt): no temporary file either
        tmp.unlink(missing_ok=True)
        raise


def temporary_name(path: Union[str, Path]) -> Path:
    """The temporary file :func:`write_atomic` writes ``path`` through (this process and thread)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def stray_temporaries(folder: Union[str, Path], pattern: str = "*") -> list[Path]:
    """Temporary files that killed writers of ``folder/pattern`` left behind (recursively)."""
    return sorted(p for p in Path(folder).rglob(f".{pattern}.*.tmp") if p.is_file())


def fsync_dir(path: Union[str, Path]) -> None:
    """Put a folder's entries (renames, new files) on disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
