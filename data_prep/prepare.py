"""The preparation pipeline: a source's files -> features -> a feature cache.

:func:`prepare` is what ``python -m data_prep SOURCE --root ROOT --out CACHE`` runs:

1. resolve the feature config (the source's default, overridden by the user's fields);
2. stop at once if ``CACHE`` is already built with that config ("up to date"), refuse if it
   was built with another one (naming the fields) unless ``force``;
3. list the source's items (and, for sources that look at every file, the files they skipped
   and the OS leftovers they ignored: :mod:`data_prep.discover`), skip those an interrupted
   build already committed;
4. extract features in worker processes (which die with this process), consumed *in order*
   from a bounded window (so memory does not grow with the dataset and a resumed build writes
   the same shards), recording every unusable file with its reason instead of stopping;
5. publish the cache and print one summary: items prepared, files skipped with their reasons,
   files ignored, warnings about files read with a caveat (a truncated WAV).

:func:`extract_file` is the one-file entry point shared with prediction: it dispatches on the
config's kind to :func:`data_prep.features.extract_audio_file` or ``data_prep.midi.pianoroll_file``.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import mmap
import os
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from .cache import CacheError, FeatureCache, partial_failures
from .cache_writer import CacheWriter, check_existing, drop_unused_partial
from .config import AUDIO_KINDS, FeatureConfig, feature_config
from .discover import text_name
from .source_options import resolve_features, source_arguments
from .sources import Source, SourceItem, get_source
from .feature_stats import item_sums
from .workers import context, cpu_count, die_with, forks

FLOAT16_MAX = float(np.finfo(np.float16).max)
SLOT_BYTES = 32 * 2**20      # features up to this size come back from workers in shared memory


# -- one file -------------------------------------------------------------------------------------
def extract_file(path: Union[str, Path], config: Union[FeatureConfig, dict]) -> np.ndarray:
    """Features of one file as the cache stores them: ``(frames, *config.feature_shape)`` float32.

    Audio kinds (``stft``, ``mel``, ``logmel``, ``mfcc``, ``cqt``) decode and analyse audio;
    ``pianoroll`` reads MIDI. Raises ``ValueError`` (``BadInputError`` for audio) naming the
    file and the reason when it is unusable.
    """
    config = feature_config(config)
    if config.kind in AUDIO_KINDS:
        from .features import extract_audio_file

        return extract_audio_file(path, config)
    from .midi import pianoroll_file

    return np.asarray(pianoroll_file(path, config), dtype=np.float32)


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha1:" + h.hexdigest()


def _reason(error: BaseException, path: str) -> str:
    """An exception as a one-line reason, without repeating the file name."""
    text = " ".join(str(error).split()) or type(error).__name__
    for prefix in (f"{path}: ", f"{path}:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not isinstance(error, ValueError):      # BadInputError and ValueError explain themselves
        text = f"{type(error).__name__}: {text}"
    return text


_CONFIG: Optional[FeatureConfig] = None
_SLOTS: Optional[list] = None


def _extract(path: str, config: Optional[FeatureConfig] = None) -> tuple:
    """Worker task: ``("ok", float16 features, checksum, seconds, item_sums, warnings)`` or
    ``("fail", reason)``; ``warnings`` are notes about a file that was read (a truncated WAV)."""
    config = config or _CONFIG
    try:
        if config.kind in AUDIO_KINDS:
            from .features import extract_audio

            features, audio = extract_audio(path, config)
            checksum, seconds, notes = audio.checksum, audio.duration, audio.warnings
            if len(features) and np.abs(features).max() > FLOAT16_MAX:
                return ("fail", f"feature values up to {np.abs(features).max():.3g} overflow the "
                                f"float16 cache (max {FLOAT16_MAX:.0f}); use a dB kind or power=1")
            features = features.astype(np.float16)
        else:
            from .midi import pianoroll_file

            features = pianoroll_file(path, config, dtype=np.float16)
            checksum, seconds, notes = _sha1_file(Path(path)), None, []
        if len(features) == 0:
            return ("fail", "no frames")
        return ("ok", features, checksum, seconds, item_sums(features), notes)
    except Exception as e:      # one bad file is a recorded failure, never the end of the build
        return ("fail", _reason(e, path))


def _extract_to_slot(path: str, slot: Optional[int]) -> tuple:
    """Worker task: :func:`_extract`, with the features copied into shared-memory slot
    ``slot`` and only ``("slot", slot, shape)`` sent back. Through the pipe, a 6-MB piano roll
    is copied five times and cost the main process ~10 ms (measured), more than its writing."""
    result = _extract(path)
    if result[0] == "ok" and slot is not None and _SLOTS is not None:
        features = np.ascontiguousarray(result[1])
        if features.nbytes <= len(_SLOTS[slot]):
            _SLOTS[slot][:features.nbytes] = memoryview(features).cast("B")
            result = ("ok", ("slot", slot, features.shape), *result[2:])
    return result


def _from_slot(result: tuple, slots: Optional[list]) -> tuple:
    """A worker's result with features left in a slot turned into an array over that slot."""
    if result[0] != "ok" or not isinstance(result[1], tuple):
        return result
    _, slot, shape = result[1]
    features = np.frombuffer(slots[slot], np.float16, count=int(np.prod(shape))).reshape(shape)
    return ("ok", features, *result[2:])


def _init_worker(config: FeatureConfig, slots: Optional[list] = None, parent: int = 0) -> None:
    """Worker set-up: die with the parent (:func:`die_with`), one thread each (the workers are
    the parallelism), and malloc settings that keep large freed blocks for reuse instead of
    returning them to the kernel and paying for fresh zeroed pages on every file."""
    global _CONFIG, _SLOTS
    if parent:
        die_with(parent)
    _CONFIG, _SLOTS = config, slots
    if config.kind in AUDIO_KINDS:       # piano rolls never touch torch: don't pay its import
        import torch

        torch.set_num_threads(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)              # M_MMAP_MAX: no mmap'd chunks
        libc.mallopt(-1, 1 << 30)        # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass


# -- many files -----------------------------------------------------------------------------------
def _pool(workers: int, config: FeatureConfig, slots: Optional[list] = None) -> ProcessPoolExecutor:
    """Worker processes; ``slots`` (shared memory, inherited) only when they are forked."""
    return ProcessPoolExecutor(workers, mp_context=context(), initializer=_init_worker,
                               initargs=(config, slots, os.getpid()))


@contextmanager
def _one_torch_thread():
    """Per-file tensors are small: torch's thread pool costs more than it gives (on a busy
    2-core machine a 20x16 matmul took 7 ms with 2 threads, 9 us with one)."""
    if "torch" not in sys.modules:       # piano rolls never import torch: don't pay for it
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _preload(config: FeatureConfig) -> None:
    """Import the extraction code (torch; symusic, which the MIDI code imports when it first
    reads a file: 80 ms) once here, so forked workers start ready."""
    if config.kind in AUDIO_KINDS:
        from . import features  # noqa: F401
    else:
        try:
            from . import midi  # noqa: F401
            import symusic  # noqa: F401
        except ImportError:
            pass


def _isolated(path: str, config: FeatureConfig) -> tuple:
    """Run one file in a process of its own, to tell a crashing file from its neighbours."""
    with _pool(1, config) as pool:
        try:
            return pool.submit(_extract, path).result()
        except BrokenProcessPool:
            return ("fail", "the worker process died while reading this file (a decoder crash)")


def _results(paths: list[str], config: FeatureConfig, workers: int) -> Iterator[tuple]:
    """Results of ``_extract`` for ``paths``, in order, from at most ``2 * workers + 2``
    files in flight. If a worker dies (a crash in a native decoder) the file in question is
    retried alone and recorded as failed if it crashes again; the others are resubmitted.

    With forked workers, each file in flight has a slot of shared memory for its features, and
    the features yielded are a view of it: valid until the next result is asked for.
    """
    if workers <= 1:
        with _one_torch_thread():
            for path in paths:
                yield _extract(path, config)
        return
    window = 2 * workers + 2
    slots = [mmap.mmap(-1, SLOT_BYTES) for _ in range(window)] if forks() else None
    free = list(range(window)) if slots else [None] * window
    todo = iter(paths)
    pool = _pool(workers, config, slots)
    pending: deque = deque()
    try:
        while True:
            for path in todo:
                slot = free.pop()
                pending.append((path, slot, pool.submit(_extract_to_slot, path, slot)))
                if not free:
                    break
            if not pending:
                return
            path, slot, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                result = _isolated(path, config)
                pool = _pool(workers, config, slots)
                pending = deque((p, k, pool.submit(_extract_to_slot, p, k)) for p, k, _ in pending)
            yield _from_slot(result, slots)
            free.append(slot)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- the pipeline ---------------------------------------------------------------------------------
def _describe(source: Source, root: Path, args: argparse.Namespace) -> dict:
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
               if k not in ("root", "features")}
    return {"name": source.name, "root": str(root), "options": options}


def _source_key(path: Path, root: Path) -> str:
    """What the manifest's ``source`` column holds: the path relative to the dataset root
    (so a cache stays valid when the dataset moves), or absolute when outside it. Links are not
    resolved: a file in a class folder that is a link keeps its name under the root. A name that
    is not UTF-8 is written with ``\\xNN`` escapes (:func:`data_prep.discover.text_name`)."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        key = path.relative_to(root).as_posix()
    except ValueError:
        key = str(path)
    return text_name(key)


def _check_items(items: list[SourceItem], source: Source) -> None:
    if not items:
        raise ValueError(f"source {source.name!r} found no items")
    ids = Counter(it.id for it in items)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"source {source.name!r}: item ids must be unique; {dupes[0]!r} "
                         f"occurs {ids[dupes[0]]} times")


def prepare(source: Union[str, Source], root: Union[str, Path], out: Union[str, Path],
            features: Union[dict, FeatureConfig, None] = None, *, force: bool = False,
            workers: Optional[int] = None, progress: bool = True, shard_items: Optional[int] = None,
            **source_options: Any) -> FeatureCache:
    """Build (or resume, or confirm) the feature cache ``out`` from a dataset.

    Args:
        source: a registered source name (``gtzan``, ``folder``, ``csv``...) or a
            :class:`~data_prep.sources.Source`.
        root: the dataset folder (or file, for ``csv``).
        out: the cache folder to create.
        features: feature config fields over the source's defaults (a dict), or a config.
        force: rebuild even if ``out`` exists (with the same or another config).
        workers: worker processes (default: the usable CPU cores; 1 runs in this process).
        progress: show a progress bar and print the summary (to stderr).
        shard_items: close cache shards after this many items (default: the cache's).
        **source_options: the source's options by ``dest`` name, e.g. ``split="random"``.

    Returns:
        The opened :class:`~data_prep.cache.FeatureCache`. Its ``meta["build"]`` holds this
        run's summary (``written``, ``skipped``, ``resumed``, ``seconds``, ``audio_hours``,
        ``warnings``); ``failures`` every skipped file with its reason, ``meta["ignored"]`` the
        number of OS leftovers passed over and up to 20 of their names.

    Raises:
        ValueError: bad options, no dataset at ``root``, no items.
        CacheError: ``out`` holds another feature config (and not ``force``), no file
            was usable (the reasons are listed), or ``out`` cannot be written (a full or
            read-only disk: one line naming the path; the unfinished shard is removed).
    """
    started = time.perf_counter()
    src = get_source(source) if isinstance(source, str) else source
    root = Path(root).expanduser()
    if not root.exists() and not getattr(src, "creates_root", False):   # folk builds its root
        raise ValueError(f"--root {root}: no such file or folder")
    root = src.resolve_root(root)
    out = Path(out).expanduser()
    config = resolve_features(src, features)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)

    args = source_arguments(src, **source_options)
    args.root, args.features = root, config
    described = _describe(src, root, args)
    cache = check_existing(out, config, force=force, source=described)
    if cache is not None:
        ignored = cache.meta.get("ignored", {}).get("count", 0)
        say(f"{out} is up to date ({len(cache)} items, {config.kind}, {len(cache.failures)} "
            f"skipped, {ignored} ignored); nothing to do (use --force to rebuild)"
            + _failure_lines(cache.failures))
        return cache
    listing = src.items(args)
    items = [_as_text(it if it.id else _with_id(it, root)) for it in listing]
    _check_items(items, src)
    unlisted = [(_source_key(p, root), reason) for p, reason in getattr(listing, "skipped", [])]
    ignored = [_source_key(p, root) for p in getattr(listing, "ignored", [])]
    try:
        # Holds the cache's lock until finish (a second build is refused); with force, an
        # interrupted build is discarded, and the old cache stays until the new one replaces it.
        writer_options = {"shard_items": shard_items} if shard_items else {}
        writer = CacheWriter(out, config, described, restart=force, **writer_options)
        return _build(writer, items, unlisted, ignored, src, root, out, config, workers, progress,
                      started, say)
    except OSError as e:          # the disk: full, read-only, gone; the writer cleaned up after itself
        drop_unused_partial(out)
        raise CacheError(disk_error(e, out)) from None


def _build(writer: CacheWriter, items: list[SourceItem], unlisted: list[tuple[str, str]],
           ignored: list[str], src: Source, root: Path, out: Path, config: FeatureConfig,
           workers: Optional[int], progress: bool, started: float, say) -> FeatureCache:
    """Steps 4 and 5 of :func:`prepare`: extract what ``writer`` does not hold yet, publish."""
    for key, reason in unlisted:                 # skipped without being read
        if not writer.is_done(key):
            writer.add_failure(key, reason)
    keys = [_source_key(it.path, root) for it in items]
    todo = [(it, key) for it, key in zip(items, keys) if not writer.is_done(key)]
    resumed = len(items) - len(todo)
    n_workers = max(1, min(workers or cpu_count(), len(todo)))
    if resumed:
        say(f"resuming {out}: {resumed} of {len(items)} items were already done")

    written, skipped, warnings, seconds = 0, [], [], 0.0
    _preload(config)                         # before the bar starts, so its ETA is about files
    bar = _progress(len(items), resumed, src.name, progress)
    try:
        for (item, key), result in zip(todo, _results([str(it.path) for it, _ in todo], config, n_workers)):
            if result[0] == "ok":
                _, array, checksum, duration, sums, notes = result
                writer.add(array, id=item.id, source=key, label=item.label, split=item.split,
                           fold=item.fold, group=item.group, checksum=checksum, sums=sums)
                written += 1
                seconds += duration or 0.0
                warnings += [{"source": key, "warning": note} for note in notes]
            else:
                writer.add_failure(key, result[1])
                skipped.append({"source": key, "reason": result[1]})
                bar.set_postfix(skipped=len(skipped), refresh=False)
            bar.update(1)
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    build = {"written": written, "skipped": len(skipped), "resumed": resumed,
             "seconds": round(elapsed, 3), "audio_hours": round(seconds / 3600, 4),
             "workers": n_workers, "warnings": warnings}
    extra = {"build": build, "ignored": {"count": len(ignored), "examples": ignored[:20]}}
    try:
        cache = writer.finish(extra_meta=extra)
    except CacheError as e:
        raise CacheError(f"{e}{_failure_lines(partial_failures(out) or skipped)}") from None
    except UnicodeEncodeError:      # rows an older version wrote with raw non-UTF-8 names
        raise CacheError(f"{out.name}.partial holds file names that are not UTF-8 text, from an "
                         f"interrupted build of an older version; run the same command with "
                         f"--force to start it over") from None
    say(_summary(cache, build, elapsed, seconds))
    return cache


def disk_error(error: OSError, out: Path) -> str:
    """A one-line message for an ``OSError`` met while writing the cache ``out``: the path, what
    went wrong, and what to do."""
    where = error.filename if error.filename is not None else out
    text = f"cannot write {where}: {error.strerror or error}"
    if error.errno in (errno.EEXIST, errno.ENOTDIR) and Path(where).is_file():
        text = f"cannot write {where}: Not a directory (a file is in the way of --out)"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        text += ("; free some space or choose another --out, then run the same command again "
                 "(complete shards are kept and resumed)")
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        text += "; choose an --out where you can write"
    return text


def _as_text(item: SourceItem) -> SourceItem:
    """The item with its id, label and group as valid UTF-8 text (see :func:`text_name`)."""
    from dataclasses import replace

    return replace(item, id=text_name(item.id), label=text_name(item.label), group=text_name(item.group))


def _with_id(item: SourceItem, root: Path) -> SourceItem:
    from dataclasses import replace

    from .sources.generic import item_id

    return replace(item, id=item_id(item.path, root))


def _progress(total: int, initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="file", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, mininterval=0.5)


def _failure_lines(failures: list[dict], limit: int = 10) -> str:
    if not failures:
        return ""
    lines = [f"\n  {f['source']}: {f['reason']}" for f in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"\n  ... and {len(failures) - limit} more (meta.json lists them all)")
    return "".join(lines)


def _files(n: int) -> str:
    return f"{n} file{'s' * (n != 1)}"


def _summary(cache: FeatureCache, build: dict, elapsed: float, audio_seconds: float) -> str:
    """The one summary of a build: items prepared, files skipped (with reasons) and ignored,
    warnings about files that were read, and the speed."""
    failures = cache.failures
    ignored = cache.meta.get("ignored", {"count": 0, "examples": []})
    parts = [f"wrote {cache.path}: {len(cache)} items prepared, {_files(len(failures))} skipped, "
             f"{ignored['count']} ignored; {len(cache.classes)} classes, splits {cache.meta['splits']}"]
    if build["resumed"]:
        parts.append(f" ({build['written']} this run, {build['resumed']} resumed)")
    parts.append(_failure_lines(failures))
    if ignored["count"]:
        shown = ", ".join(ignored["examples"][:3]) + (", ..." if ignored["count"] > 3 else "")
        parts.append(f"\nignored {_files(ignored['count'])}: operating-system leftovers and hidden "
                     f"files ({shown})")
    for w in build.get("warnings", [])[:10]:
        parts.append(f"\n  warning: {w['source']}: {w['warning']}")
    if len(build.get("warnings", [])) > 10:
        parts.append(f"\n  ... and {len(build['warnings']) - 10} more warnings (meta.json lists them all)")
    rate = build["written"] / elapsed if elapsed else 0.0
    parts.append(f"\n{build['written']} files in {elapsed:.1f} s ({rate:.1f} files/s) "
                 f"with {build['workers']} worker{'s' * (build['workers'] > 1)}")
    if audio_seconds:
        parts.append(f"; {audio_seconds / 3600:.2f} h of audio, "
                     f"{audio_seconds / elapsed:.0f} audio-seconds/s")
    return "".join(parts)
