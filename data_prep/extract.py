"""One file -> the features the cache stores (float16), and many files in worker processes, in
order. The feature kind is looked up once, in :data:`READERS`: audio kinds (``stft``, ``mel``,
``logmel``, ``mfcc``, ``cqt``) decode and analyse audio (:mod:`data_prep.features`),
``pianoroll`` reads MIDI (:mod:`data_prep.midi`).

:func:`extract_file` is the one-file entry point shared with prediction; :func:`extract_one`
is what a worker of :func:`data_prep.prepare.prepare` runs for each file, and
:func:`extract_in_order` runs it over many files.
"""
from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import sys
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np

from .cache import to_float16
from .config import AUDIO_KINDS, FeatureConfig, feature_config
from .discover import shown
from .feature_stats import item_sums
from .workers import context, die_with, forks

SLOT_BYTES = 32 * 2**20      # features up to this size come back from workers in shared memory


# -- one file -------------------------------------------------------------------------------------
def _read_audio(path: str, config: FeatureConfig) -> tuple:
    from .features import extract_audio

    features, audio = extract_audio(path, config)
    features = to_float16(features, "feature", "; use a dB kind or power=1")
    return features, audio.checksum, audio.duration, audio.warnings


def _read_midi(path: str, config: FeatureConfig) -> tuple:
    from .midi import read_pianoroll
    from .midi_file import read_file

    data = read_file(path)          # one read: the roll and its checksum come from the same bytes
    roll, notes = read_pianoroll(data, config, dtype=np.float16)
    return roll, "sha1:" + hashlib.sha1(data).hexdigest(), None, notes


def _preload_audio() -> None:
    from . import features  # noqa: F401


def _preload_midi() -> None:
    try:
        from . import midi  # noqa: F401
        import symusic  # noqa: F401
    except ImportError:
        pass


@dataclass(frozen=True)
class Reader:
    """How one family of feature kinds reads a file.

    Attributes:
        read: ``(path, config) -> (float16 features (frames, *feature_shape), checksum,
            seconds of audio or None, notes about the file)``; raises on an unusable file.
        preload: imports its code, so that forked workers start ready.
        torch: whether it computes with torch (workers then use one torch thread each).
    """
    read: Callable[[str, FeatureConfig], tuple]
    preload: Callable[[], None]
    torch: bool


READERS = {"audio": Reader(_read_audio, _preload_audio, torch=True),
           "midi": Reader(_read_midi, _preload_midi, torch=False)}


def reader(config: FeatureConfig) -> Reader:
    """The :class:`Reader` of ``config``'s kind."""
    return READERS["audio" if config.kind in AUDIO_KINDS else "midi"]


def extract_file(path: Union[str, Path], config: Union[FeatureConfig, dict]) -> np.ndarray:
    """Features of one file exactly as the cache stores them: ``(frames, *config.feature_shape)``
    float16.

    Audio kinds (``stft``, ``mel``, ``logmel``, ``mfcc``, ``cqt``) decode and analyse audio;
    ``pianoroll`` reads MIDI. Raises ``ValueError`` (``BadInputError``, naming the file, for
    audio) with the reason when it is unusable, or when its values overflow float16. A file read
    with a caveat (a truncated WAV) gives a ``UserWarning`` saying so.
    """
    config = feature_config(config)
    features, _, _, notes = reader(config).read(str(path), config)
    for note in notes:
        warnings.warn(f"{shown(path)}: {note}", stacklevel=2)
    return features


def _reason(error: BaseException, path: str) -> str:
    """An exception as a one-line reason, without repeating the file name (written as
    :func:`~data_prep.discover.shown` writes it)."""
    text = str(error)
    for prefix in (f"{shown(path)}: ", f"{shown(path)}:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = " ".join(text.split()) or type(error).__name__
    if not isinstance(error, ValueError):      # BadInputError and ValueError explain themselves
        text = f"{type(error).__name__}: {text}"
    return text


_CONFIG: Optional[FeatureConfig] = None
_SLOTS: Optional[list] = None


def extract_one(path: str, config: Optional[FeatureConfig] = None) -> tuple:
    """Worker task: ``("ok", float16 features, checksum, seconds, item_sums, warnings)`` or
    ``("fail", reason)``; ``warnings`` are notes about a file that was read (a truncated WAV)."""
    config = config or _CONFIG
    try:
        features, checksum, seconds, notes = reader(config).read(path, config)
        if len(features) == 0:
            return ("fail", "no frames")
        return ("ok", features, checksum, seconds, item_sums(features), notes)
    except Exception as e:      # one bad file is a recorded failure, never the end of the build
        return ("fail", _reason(e, path))


def _extract_to_slot(path: str, slot: Optional[int]) -> tuple:
    """Worker task: :func:`extract_one`, with the features copied into shared-memory slot
    ``slot`` and only ``("slot", slot, shape)`` sent back. Through the pipe, a 6-MB piano roll
    is copied five times and cost the main process ~10 ms (measured), more than its writing."""
    result = extract_one(path)
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
    if reader(config).torch:             # piano rolls never touch torch: don't pay its import
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


def preload(config: FeatureConfig) -> None:
    """Import the extraction code (torch; symusic, which the MIDI code imports when it first
    reads a file: 80 ms) once here, so forked workers start ready."""
    reader(config).preload()


def _isolated(path: str, config: FeatureConfig) -> tuple:
    """Run one file in a process of its own, to tell a crashing file from its neighbours."""
    with _pool(1, config) as pool:
        try:
            return pool.submit(extract_one, path).result()
        except BrokenProcessPool:
            return ("fail", "the worker process died while reading this file (a decoder crash)")


def extract_in_order(paths: list[str], config: FeatureConfig, workers: int,
                     in_process: Optional[bool] = None) -> Iterator[tuple]:
    """Results of :func:`extract_one` for ``paths``, in order, from at most ``2 * workers + 2``
    files in flight. If a worker dies (a crash in a native decoder) the file in question is
    retried alone and recorded as failed if it crashes again; the others are resubmitted.
    ``in_process`` (default: when ``workers <= 1``) reads the files in this process instead:
    no worker to start, but a crashing decoder takes this process with it.

    With forked workers, each file in flight has a slot of shared memory for its features, and
    the features yielded are a view of it: valid until the next result is asked for.
    """
    if in_process if in_process is not None else workers <= 1:
        with _one_torch_thread():
            for path in paths:
                yield extract_one(path, config)
        return
    workers = max(1, workers)
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
