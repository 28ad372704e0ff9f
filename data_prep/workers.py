"""Worker processes of data_prep: how many, how they start, and that they die with their parent.

Every process pool of data_prep (feature extraction in :mod:`prepare`, MIDI rendering in
:mod:`render`, the folk and polyphony corpus builds) takes its size, start method and worker
set-up from here, so that a ``kill -9`` of a build never leaves workers running.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask), else all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def forks() -> bool:
    """Whether workers start by ``fork`` (Linux): they then inherit the parent's memory."""
    return "fork" in multiprocessing.get_all_start_methods()


def context() -> multiprocessing.context.BaseContext:
    """The start method of every pool: ``fork`` where there is one (fast, shares memory), else ``spawn``."""
    return multiprocessing.get_context("fork" if forks() else "spawn")


def die_with(parent: int) -> None:
    """End this worker when the process ``parent`` ends, even by ``kill -9`` (which gives the
    pool no chance to stop its workers): Linux's ``PR_SET_PDEATHSIG``, else a thread that
    watches the parent's pid. The initializer of every worker pool of data_prep calls it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:          # 1: PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent:            # the parent died before the signal was armed
        os._exit(1)


def pool(workers: int):
    """A ``multiprocessing`` pool whose workers only :func:`die_with` this process."""
    return context().Pool(workers, initializer=die_with, initargs=(os.getpid(),))
