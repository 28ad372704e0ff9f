"""What the data_prep commands share: their exit status, and how a resumable build is run.

``python -m data_prep SOURCE`` and ``python -m data_prep render`` both build something that a
second run resumes; :func:`run_resumable` turns what can go wrong into one line and an exit
status, so that neither command prints a traceback for a user's file or disk.
"""
from __future__ import annotations

import sys
from typing import Callable

from .discover import shown

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def run_resumable(work: Callable[[], object], out, errors: tuple = (ValueError,)) -> int:
    """Run a resumable command's ``work``; the exit status: 0, 1 for a user error or a disk
    error (printed on one line), 130 on Ctrl-C (with how to resume ``out``). Shared by prepare
    and render."""
    try:
        work()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:          # the disk or a file, outside any one item: one line, no traceback
        where = f"{shown(e.filename)}: " if e.filename is not None else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume {shown(out)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
