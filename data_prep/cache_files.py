"""The writer's lock and the atomic swap of a feature cache, and the command that rebuilds one
(used by :mod:`data_prep.cache_writer` and :mod:`data_prep.cache`, which own the format; the
shard files themselves are :mod:`data_prep.shard_file`).

One writer, many readers. A build of ``CACHE`` holds an exclusive lock on ``CACHE.lock`` (a
small file beside the cache, kept between builds) from before it touches ``CACHE.partial/``
until ``CACHE`` is published, so a second build of the same cache is refused at once, with the
holder's pid, host and start time. Readers take no lock: a build never changes a published
cache in place, it fills ``CACHE.partial/`` and then swaps it with ``CACHE`` in one
``rename`` (see :func:`swap_in`), and readers check the cache's build id (``meta.json``) so
that they notice the swap instead of mixing two builds (see :mod:`data_prep.cache`).

The lock is a POSIX record lock (``fcntl.lockf``), not ``flock``: the kernel drops it when the
holding process dies (a ``kill -9`` leaves no stale lock), it is not inherited by the forked
worker processes (a worker that outlives its parent does not keep the cache locked), and NFS
(v4, or v3 with ``lockd``) carries it to every client that mounts the folder, so two machines
building one shared cache are refused alike. On NFS a client that dies keeps the lock until
its lease runs out (about 90 s on NFSv4). Where the file system has no locks at all (``ENOLCK``,
e.g. NFS mounted with ``nolock``, some FUSE file systems) the lock falls back to creating
``CACHE.lock.held`` exclusively; a holder that died on this host is detected by its pid and the
file is removed, but one that died on another host cannot be told from a live one, and the
message says which file to remove once that build is known to be gone.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

from .discover import shown


# --- one writer at a time -----------------------------------------------------------------------
_HELD: set[str] = set()       # lock files this process holds (POSIX locks do not exclude oneself)


class CacheBusyError(Exception):
    """Another process is writing the cache (raised as a ``CacheError`` by :mod:`data_prep.cache`)."""


def build_target(out: Path) -> Path:
    """The folder a build of cache ``out`` writes: ``out``, or where it points when it is a
    symbolic link (a cache kept on a larger disk), so that the cache is built, locked and
    published there and the link keeps working, instead of the link being replaced."""
    out = Path(out)
    return Path(os.path.realpath(out)) if out.is_symlink() else out


def lock_path(out: Path) -> Path:
    """The lock file of cache ``out``: ``OUT.lock`` beside it."""
    return out.with_name(out.name + ".lock")


def is_lock_file(path: Path) -> bool:
    """Whether ``path`` is a lock file :class:`CacheLock` wrote (``NAME.lock``, or
    ``NAME.lock.held`` on file systems without locks): not data, whatever folder it is in."""
    if not path.name.endswith((".lock", ".lock.held")):
        return False
    info = _read_info(path)
    return isinstance(info, dict) and {"pid", "host", "started", "cache"} <= set(info)


def _holder_text(info: Optional[dict]) -> str:
    if not info:
        return "another process (it has not written its pid yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')}, started {started}"


def _read_info(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def _alive_here(info: Optional[dict]) -> bool:
    """Whether the holder named by ``info`` runs on this host (unknown elsewhere: True)."""
    if not info or info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True
    return True


class CacheLock:
    """The exclusive writer lock of cache ``out`` (see the module docstring).

    :meth:`acquire` raises :class:`CacheBusyError` naming the holder when another process (or
    another writer in this process) holds it; :meth:`release` gives it back. Usable as a
    context manager.

    Args:
        out: what the lock guards (a cache folder, a dataset root, a run folder).
        path: the lock file (default ``OUT.lock`` beside ``out``).
        busy: what the refusal says after the holder: what to do meanwhile.
    """

    def __init__(self, out: Path, path: Optional[Path] = None, busy: Optional[str] = None):
        self.out = Path(out)
        self.path = Path(path) if path is not None else lock_path(self.out)
        self.busy = busy or ("being built by {holder} (lock {lock}); one build at a time: wait for it "
                             "to finish, or stop it and run this command again (it resumes)")
        self._fd: Optional[int] = None
        self._held_file: Optional[Path] = None
        self._held = False                   # this object holds it (not merely another writer)
        self._pid = os.getpid()              # a forked child's copy never releases its parent's lock

    def _info(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "cache": str(self.out)}).encode()

    def _busy(self, info: Optional[dict]) -> CacheBusyError:
        return CacheBusyError(f"{shown(self.out)} is " + self.busy.format(holder=_holder_text(info),
                                                                         lock=shown(self.path)))

    def acquire(self) -> "CacheLock":
        self._pid = os.getpid()
        key = str(self.path.resolve())
        if key in _HELD:
            raise self._busy(_read_info(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            import fcntl

            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:                          # no fcntl (Windows): the exclusive file
            os.close(fd)
            self._acquire_file()
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):     # held by another process
                os.close(fd)
                raise self._busy(_read_info(self.path)) from None
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            self._acquire_file()                     # a file system without record locks
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._info(), 0)
            self._fd = fd
        _HELD.add(key)
        self._held = True
        return self

    def _acquire_file(self) -> None:
        held = self.path.with_name(self.path.name + ".held")
        for _ in range(2):
            try:
                fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                info = _read_info(held)
                if info and not _alive_here(info):
                    held.unlink(missing_ok=True)    # its holder died on this host: stale
                    continue
                err = self._busy(info)
                raise CacheBusyError(f"{err} (this file system has no locks: if that build is "
                                     f"gone, remove {held})") from None
            os.write(fd, self._info())
            os.close(fd)
            self._held_file = held
            return
        raise self._busy(_read_info(held))

    def release(self) -> None:
        if not self._held or os.getpid() != self._pid:
            return
        if self._fd is not None:
            os.close(self._fd)                       # closing the file drops the lock
            self._fd = None
        if self._held_file is not None:
            self._held_file.unlink(missing_ok=True)
            self._held_file = None
        _HELD.discard(str(self.path.resolve()))
        self._held = False

    def __enter__(self) -> "CacheLock":
        return self.acquire()

    def __del__(self) -> None:           # a writer dropped without finish() or close()
        try:
            self.release()
        except Exception:                # noqa: BLE001 - interpreter shutdown
            pass

    def __exit__(self, *exc) -> None:
        self.release()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's ``renameat2(RENAME_EXCHANGE)``; False where it
    is not available (another OS, an old kernel or C library, a file system without it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(new: Path, out: Path, trash: Path) -> None:
    """Publish the complete folder ``new`` as ``out``. An existing ``out`` is exchanged with
    ``new`` in one atomic rename where the system allows it (readers see the old cache or the
    new one, never none), or else moved aside first (readers may see no cache for that
    instant); the old one is then moved to ``trash`` and deleted. Readers that still have old
    shards mapped keep reading them: the files live on until they are unmapped."""
    if not out.exists():
        os.replace(new, out)
        return
    if _exchange(new, out):
        os.replace(new, trash)                       # ``new`` now holds the old cache
    else:
        os.replace(out, trash)
        os.replace(new, out)
    shutil.rmtree(trash, ignore_errors=True)


# --- are the files whole? --------------------------------------------------------------------
def read_json(path: Path, what: str = "") -> dict:
    """Parse a cache's JSON file; ``ValueError`` with one line naming it when it is damaged."""
    try:
        obj = json.loads(path.read_bytes())
    except UnicodeDecodeError as e:
        raise ValueError(f"{shown(path)}: damaged{what} (not UTF-8 text: {e.reason})") from None
    except ValueError as e:
        raise ValueError(f"{shown(path)}: damaged{what} (truncated or not JSON: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{shown(path)}: damaged{what} (not a JSON object)")
    return obj


def meta_checksum(meta: dict) -> str:
    """SHA-256 of a cache's ``meta`` without its own ``meta_sha256`` field, as canonical JSON
    (sorted keys, no spaces): a build records it in ``meta.json``, and opening the cache checks
    it, so a ``meta.json`` edited by hand (classes, stats, feature config) is refused, not used."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rebuild_command(path: Path, meta: Optional[dict]) -> str:
    """The ``python -m data_prep`` command that rebuilds the cache at ``path`` (from its
    ``meta.json``: source, root, options and every feature field), or a generic one."""
    if not meta or not isinstance(meta.get("source"), dict) or "name" not in meta["source"]:
        return f"the data_prep command that built it, with --out {_quote(str(path))} --force"
    source = meta["source"]
    parts = ["python -m data_prep", source["name"]]
    if source.get("root"):
        parts += ["--root", _quote(str(source["root"]))]
    parts += ["--out", _quote(str(path)), "--force"]
    options, features = source.get("options") or {}, meta.get("features") or {}
    given_options, default_features = _source_defaults(source["name"], features.get("kind"))
    for key, value in options.items():
        if key in given_options and given_options[key] == value:
            continue
        if value is True:
            parts.append("--" + key.replace("_", "-"))
        elif value not in (None, False):
            parts += ["--" + key.replace("_", "-"), _quote(str(value))]
    for key, value in features.items():
        if key != "kind" and key in default_features and default_features[key] == value:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, _quote(str(value) if not isinstance(value, (list, tuple)) else
                                   ",".join(map(str, value)))]
    return " ".join(parts)


def _source_defaults(name: str, kind: Optional[str]) -> tuple[dict, dict]:
    """A source's option defaults and default feature config (empty when it is unknown), so
    that a rebuild command names only what differs from them."""
    try:
        from .source_options import resolve_features, source_arguments
        from .sources import get_source

        src = get_source(name)
        return vars(source_arguments(src)), resolve_features(src, {"kind": kind} if kind else {}).to_dict()
    except Exception:                    # noqa: BLE001 - then every field is named
        return {}, {}


def _quote(text: str) -> str:
    """``text`` as one shell word on one line: bash's ``$'...'`` with escapes when it holds a
    control character (a newline in a folder name), else :func:`shlex.quote`."""
    import shlex

    if shown(text) == text:
        return shlex.quote(text)
    text = text.replace("\\", "\\\\").replace("'", "\\'")
    # \n, \t, \x1b; U+0080-U+009F and the line separators as \uXXXX, which bash writes as UTF-8
    # (its \x85 would be the raw byte, another name)
    return "$'" + "".join(c if shown(c) == c else repr(c)[1:-1] if ord(c) < 0x80 else f"\\u{ord(c):04x}"
                          for c in text) + "'"
