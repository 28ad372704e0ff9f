"""Command line of the stem study.

    python -m audiostem.study STUDY.yaml [--jobs N] [--cells GLOB ...] [--retries N]
    python -m audiostem.study STUDY.yaml --plan [FILE] [--raw] [--all]
    python -m audiostem.study STUDY.yaml --dry-run
    python -m audiostem.study report STUDY.yaml [--bootstrap N] [--cells GLOB ...]
    python -m audiostem.study export STUDY.yaml DEST [--cells GLOB ...]

A study with a ``tune`` section runs its tuning cells (``_tune/...``) first; its main cells exist
once they have all finished and the choices are made (see docs/study.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from data_prep import CacheError

from .grid import Study, StudyError, load_study
from ..run_folder import RunFolderError, is_finished
from .runner import (check_cell, describe, export_cells, main_cells, prepare_caches, run_all, run_order, select,
                     write_plan)
from .tuning import choices_path, tuning_cells, unchosen_main_cells

EPILOG = """examples:
  python -m audiostem.study studies/smoke.yaml --jobs 2      train every unfinished cell
  python -m audiostem.study studies/stem_study.yaml --plan cells.txt   one command per cell
  parallel -j 4 < cells.txt                                 ... run them anywhere
  python -m audiostem.study report studies/stem_study.yaml  report.md, results.csv, plots
  python -m audiostem.study export studies/stem_study.yaml kept/   finished cells' small files
  python -m audiostem.study studies/stem_study_v2.yaml --cells '_tune/*'   only the tuning cells
"""


def _check_recipes(study, cells) -> None:
    missing = sorted({c.recipe for c in cells if not Path(c.recipe).is_file()})
    if missing:
        raise StudyError(f"recipe file(s) not found: {', '.join(missing)} "
                         f"(paths are relative to the current folder, {Path.cwd()})")


def _echo(message: str) -> None:
    print(message, file=sys.stderr)


def _cells(study: Study, patterns: Optional[Sequence[str]]) -> tuple[list, list]:
    """The study's cells matching ``patterns`` in run order (its tuning cells, then the main cells
    of the groups whose choices are made), and the main cells still waiting for their choices."""
    main = main_cells(study, _echo)
    ready = {c.name for c in main}
    waiting = [c for c in unchosen_main_cells(study) if c.name not in ready]
    cells = select(tuning_cells(study) + main, patterns, pending=bool(waiting))
    return run_order(study, cells), waiting


def _waiting(study: Study, cells: list, out) -> int:
    """--dry-run: the main cells that wait for their tuning choices, recipes checked without them."""
    errors = [(c, e) for c in cells for e in [None if is_finished(c.out_dir) else check_cell(study, c)] if e]
    print(f"{len(cells)} main cells wait for their tuning choices ({choices_path(study)}), made when the tuning "
          f"cells they depend on have finished; their recipes, checked without the tuned values: "
          f"{len(errors)} INVALID" + "".join(f"\nINVALID   {c.name}\n          {e}" for c, e in errors), file=out)
    return len(errors)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m audiostem.study", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Train the cells of a stem study (datasets x stems x seeds), "
                                            "or plan them for a batch system. "
                                            "`python -m audiostem.study report STUDY.yaml` writes the report.")
    p.add_argument("study", help="the study file (YAML)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="training runs in parallel (default 1)")
    p.add_argument("--cells", nargs="+", metavar="GLOB", help="only cells whose name matches, e.g. 'folk/*'")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a failed cell in this invocation (default 1)")
    p.add_argument("--plan", nargs="?", const="-", metavar="FILE",
                   help="write one shell command per unfinished cell to FILE (default stdout) and exit")
    p.add_argument("--raw", action="store_true", help="with --plan: bare train commands instead of runner calls")
    p.add_argument("--all", action="store_true", help="with --plan: include finished cells")
    p.add_argument("--dry-run", action="store_true", help="list every cell's status and command, checking each cell's recipe; run nothing")
    p.add_argument("--prepare", action="store_true",
                   help="only build the feature caches the cells need (do this once before --plan jobs start)")
    args = p.parse_args(argv)
    try:
        study = load_study(args.study)
        if args.plan is None and not args.dry_run and not args.prepare:
            if args.jobs < 1:
                raise StudyError(f"--jobs must be at least 1, got {args.jobs}")
            _check_recipes(study, select(tuning_cells(study) + unchosen_main_cells(study), args.cells))
            result = run_all(study, args.cells, jobs=args.jobs, retries=args.retries)
            return _summarise(study, result)
        cells, waiting = _cells(study, args.cells)
        if args.dry_run:
            invalid = describe(study, cells, sys.stdout)
            return 1 if invalid + (_waiting(study, waiting, sys.stdout) if waiting else 0) else 0
        _check_recipes(study, cells)
        if args.prepare:
            return 1 if prepare_caches(study, cells, lambda m: print(m, file=sys.stderr)) else 0
        if args.plan is not None:
            todo = cells if args.all else [c for c in cells if not is_finished(c.out_dir)]
            if args.plan == "-":
                write_plan(study, Path(args.study), todo, sys.stdout, raw=args.raw)
            else:
                try:
                    with open(args.plan, "w") as fh:
                        n = write_plan(study, Path(args.study), todo, fh, raw=args.raw)
                except OSError as err:
                    raise StudyError(f"--plan: cannot write {args.plan} ({err.strerror})") from None
                print(f"wrote {n} commands to {args.plan}", file=sys.stderr)
            if waiting:
                print(f"{len(waiting)} main cells wait for their tuning cells: plan again once those have finished "
                      f"(the runner that finishes the last of them writes the choices)", file=sys.stderr)
            return 0
    except (ValueError, CacheError) as err:    # StudyError, and the recipe's own errors
        print(f"error: {err}", file=sys.stderr)
        return 2


def _summarise(study: Study, result: dict) -> int:
    failed = result["failed"]
    print(f"[study {study.name}] {result['finished']} trained, {result['skipped']} already finished, "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
          + (f"; {result['waiting']} main cells wait for the tuning cells" if result.get("waiting") else ""),
          file=sys.stderr)
    return 1 if failed else 0


def report_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m audiostem.study report",
                                description="Aggregate the finished cells of a study into "
                                            "OUT_DIR/report/: report.md, results.csv, plots.")
    p.add_argument("study", help="the study file (YAML)")
    p.add_argument("--out", help="report folder (default OUT_DIR/report)")
    p.add_argument("--bootstrap", type=int, help="bootstrap replicates (default: the study's, 10000)")
    p.add_argument("--cells", nargs="+", metavar="GLOB",
                   help="only cells whose name matches, e.g. 'folk_audio/*/seed[01]' to leave out a seed "
                        "that not every stem has finished (the others are neither read nor listed)")
    args = p.parse_args(argv)
    from .report import write_report
    try:
        study = load_study(args.study)
        if args.bootstrap:
            study.bootstrap = args.bootstrap
        path = write_report(study, args.out, args.cells)
    except (StudyError, RunFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def export_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m audiostem.study export",
                                description="Copy the small files of the finished cells (metrics, history, "
                                            "test predictions, recipe; no checkpoints) to DEST, in the layout "
                                            "of OUT_DIR/runs: to keep a study's results, or to merge cells run "
                                            "elsewhere (copy them into OUT_DIR/runs and the runner skips them).")
    p.add_argument("study", help="the study file (YAML)")
    p.add_argument("dest", help="the folder to copy to")
    p.add_argument("--cells", nargs="+", metavar="GLOB", help="only cells whose name matches")
    args = p.parse_args(argv)
    try:
        study = load_study(args.study)
        cells = _cells(study, args.cells)[0]      # + every tuning cell: the choices rest on them
        n, damaged = export_cells(study, tuning_cells(study) + [c for c in cells if c.point is None], Path(args.dest))
    except (StudyError, RunFolderError) as err:     # RunFolderError: a damaged tuning cell (the choices read it)
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in damaged:
        print(f"not exported, DAMAGED {line}", file=sys.stderr)
    print(f"exported {n} finished cells to {args.dest}" + (f"; {len(damaged)} damaged cells left out" if damaged else ""))
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
