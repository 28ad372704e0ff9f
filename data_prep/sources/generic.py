"""The generic sources: ``folder`` (one sub-folder per class) and ``csv`` (a manifest).

Both list audio files, or MIDI files when the feature kind is ``pianoroll``.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path
from typing import Optional

from . import (MIDI_EXTENSIONS, Source, SourceItem, file_extensions, fractions_from, group_split,
               register_source, split_arguments)

_SPLIT_NAMES = {"train": "train", "training": "train",
                "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid",
                "test": "test", "testing": "test", "eval": "test", "evaluation": "test"}


def normalise_split(value: str, where: str = "") -> str:
    """Map common split spellings (``validation``, ``val``, ``dev``, ``eval``...) to
    ``train`` / ``valid`` / ``test``; ``""`` stays ``""``."""
    key = value.strip().lower()
    if not key:
        return ""
    if key not in _SPLIT_NAMES:
        raise ValueError(f"{where}unknown split {value!r}; use train, valid or test "
                         f"(or one of {sorted(_SPLIT_NAMES)})")
    return _SPLIT_NAMES[key]


def item_id(path: Path, root: Path) -> str:
    """Default item id: the path relative to ``root`` without its suffix, with ``/``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return rel.with_suffix("").as_posix()


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursively, sorted) whose suffix is in ``extensions``
    (case-insensitive), skipping hidden files and folders (``.DS_Store``, ``._x.wav``)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in extensions and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _no_files_message(root: Path, extensions: tuple[str, ...]) -> str:
    from ..audio import AUDIO_EXTENSIONS

    hint = ""
    if root.is_dir():
        found = {p.suffix.lower() for p in root.rglob("*")}
        if extensions != MIDI_EXTENSIONS and found & set(MIDI_EXTENSIONS):
            hint = " (it has MIDI files: add --kind pianoroll)"
        elif extensions == MIDI_EXTENSIONS and found & set(AUDIO_EXTENSIONS):
            hint = " (it has audio files: choose an audio --kind such as logmel)"
    return f"no files with extensions {', '.join(extensions)} under {root}{hint}"


def assign_splits(items: list[SourceItem], args: argparse.Namespace, groups: Optional[list[str]] = None
                  ) -> list[SourceItem]:
    """Give items without a split one from the seeded (group-aware) stratified split of the
    :func:`~data_prep.sources.split_arguments` options; items with a fold and no split keep
    an empty split (cross-validation) unless ``--test-fold`` is set."""
    test_fold = getattr(args, "test_fold", None)
    if test_fold is not None:
        folds = {it.fold for it in items}
        if test_fold not in folds:
            raise ValueError(f"--test-fold {test_fold}: no item has that fold "
                             f"(folds: {sorted(f for f in folds if f is not None)})")
        return [it if it.split else _replace(it, split="test" if it.fold == test_fold else "train")
                for it in items]
    need = [i for i, it in enumerate(items) if not it.split and it.fold is None]
    if not need:
        return items
    groups = groups or [it.group for it in items]
    splits = group_split([items[i].id or str(items[i].path) for i in need],
                         [items[i].label for i in need], [groups[i] for i in need],
                         fractions_from(args), args.seed)
    out = list(items)
    for i, split in zip(need, splits):
        out[i] = _replace(items[i], split=split)
    return out


def _replace(item: SourceItem, **changes) -> SourceItem:
    from dataclasses import replace

    return replace(item, **changes)


@register_source
class FolderSource(Source):
    name = "folder"
    kind = "any"
    description = "one sub-folder per class (ROOT/CLASS/**/file), or ROOT/SPLIT/CLASS/**/file"
    default_features = {"kind": "logmel"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        split_arguments(parser, group_help=(
            "a regular expression on the file name (without suffix) whose first group (or whole "
            "match) is the item's group: files of one group never straddle splits, e.g. "
            "'^[^_]+' for SPEAKER_take.wav"))
        parser.add_argument("--test-fold", type=int, default=None, help=argparse.SUPPRESS)

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = Path(args.root)
        extensions = file_extensions(args.features)
        if not root.is_dir():
            raise ValueError(f"--root {root}: not a folder")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        split_layout = bool(subdirs) and all(p.name.lower() in _SPLIT_NAMES for p in subdirs)
        pattern = re.compile(args.group_by) if args.group_by else None
        items = []
        for top in subdirs:
            split = normalise_split(top.name) if split_layout else ""
            class_dirs = sorted(p for p in top.iterdir() if p.is_dir()) if split_layout else [top]
            for class_dir in class_dirs:
                if class_dir.name.startswith("."):
                    continue
                for path in list_files(class_dir, extensions):
                    group = ""
                    if pattern:
                        m = pattern.search(path.stem)
                        group = (m.group(1) if m.groups() else m.group(0)) if m else ""
                    items.append(SourceItem(path, class_dir.name, split, None, group, item_id(path, root)))
        if not items:
            raise ValueError(_no_files_message(root, extensions) +
                             " (expected ROOT/CLASS/files or ROOT/train|valid|test/CLASS/files)")
        return assign_splits(items, args)


@register_source
class CsvSource(Source):
    name = "csv"
    kind = "any"
    description = "a CSV manifest with columns path,label[,split][,fold][,group]"
    default_features = {"kind": "logmel"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--manifest", default="manifest.csv", metavar="CSV",
                            help="the manifest, relative to ROOT (default manifest.csv; or give the "
                                 "CSV file itself as --root). Relative paths in it are relative "
                                 "to its folder")
        parser.add_argument("--path-column", default="path", help="column of file paths (default path)")
        parser.add_argument("--label-column", default="label", help="column of labels (default label)")
        parser.add_argument("--split-column", default="split",
                            help="column of splits (default split), e.g. split_xsf of gm_instruments")
        parser.add_argument("--other-splits", default="", metavar="A,B",
                            help="split values kept as they are besides train/valid/test, e.g. "
                                 "real,unused: their items are cached but not trained on")
        split_arguments(parser, group_help=(
            "column whose value groups items that must stay in one split (default: the 'group' "
            "column when present), e.g. speaker or recording id"))
        parser.add_argument("--test-fold", type=int, default=None, metavar="K",
                            help="with a fold column and no split column: fold K is the test "
                                 "split and the others train (default: keep folds, no split)")
        parser.add_argument("--fold-column", default="fold", metavar="COLUMN",
                            help="column whose values are the cross-validation folds (default fold, "
                                 "when present): whole numbers are the folds themselves; any other "
                                 "values (a soundfont, a game) are numbered 1..K in sorted order")

    def items(self, args: argparse.Namespace) -> list[SourceItem]:
        root = Path(args.root)
        manifest = root if root.is_file() else root / args.manifest
        if not manifest.is_file():
            raise ValueError(f"no manifest at {manifest}: give --manifest or point --root at the CSV")
        base = manifest.parent
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
        others = set(args.other_splits.split(",") if isinstance(args.other_splits, str)
                     else args.other_splits) - {""}
        for column in (args.path_column, args.label_column) + (
                (args.split_column,) if args.split_column != "split" else ()):
            if column not in header:
                raise ValueError(f"{manifest}: no column {column!r} (columns: {header}); "
                                 f"see --path-column / --label-column")
        group_col = args.group_by or ("group" if "group" in header else None)
        if group_col and group_col not in header:
            raise ValueError(f"{manifest}: --group-by {group_col!r} is not a column (columns: {header})")
        fold_of = fold_numbers(rows, args.fold_column, header, manifest)
        items = []
        for line, row in enumerate(rows, start=2):
            where = f"{manifest}:{line}: "
            raw_path, label = row[args.path_column].strip(), row[args.label_column].strip()
            if not raw_path or not label:
                raise ValueError(f"{where}empty {args.path_column!r} or {args.label_column!r}")
            path = Path(raw_path)
            path = path if path.is_absolute() else base / path
            fold_value = fold_of.get((row.get(args.fold_column) or "").strip())
            split = (row.get(args.split_column) or "").strip()
            split = split if split in others else normalise_split(split, where)
            items.append(SourceItem(path, label, split,
                                    fold_value, (row.get(group_col) or "").strip() if group_col else "",
                                    item_id(path, base)))
        if not items:
            raise ValueError(f"{manifest}: no rows")
        return assign_splits(items, args)


def fold_numbers(rows: list[dict], column: str, header: list, manifest: Path) -> dict[str, int]:
    """Fold number of each value of ``column``: whole numbers stand for themselves; when any
    value is not one, the distinct values are numbered 1..K in sorted order (printed, so the
    numbers can be read back). An empty value has no fold. No such column: ``{}``, unless it
    was asked for by name (``ValueError``)."""
    if column not in header:
        if column != "fold":
            raise ValueError(f"{manifest}: --fold-column {column!r} is not a column (columns: {header})")
        return {}
    values = sorted({(r.get(column) or "").strip() for r in rows} - {""})
    if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        return {v: int(v) for v in values}
    if column == "fold":
        bad = next(v for v in values if not re.fullmatch(r"[+-]?\d+", v))
        raise ValueError(f"{manifest}: fold must be an integer, got {bad!r} (or name the column with "
                         f"--fold-column to number its values)")
    numbers = {v: k for k, v in enumerate(values, start=1)}
    print(f"csv: folds from column {column!r}: " + ", ".join(f"{k}={v}" for v, k in numbers.items()),
          file=sys.stderr)
    return numbers
