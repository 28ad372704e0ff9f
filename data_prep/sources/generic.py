"""The generic sources: ``folder`` (one sub-folder per class) and ``csv`` (a manifest).

Both list audio files, or MIDI files when the feature kind is ``pianoroll``. ``folder`` accounts
for every file under its root (an item, skipped with a reason, or ignored: see
:mod:`data_prep.discover`); ``csv`` reads manifests as spreadsheets save them
(:func:`data_prep.sources.tables.read_manifest`).
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Optional

from ..cache import is_cache_output
from ..discover import classify, is_leftover, shown, text_name, walk
from ..splits import group_split
from .base import Listing, Source, SourceItem, fractions_from, register_source, split_arguments
from .tables import read_manifest

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


def unique_ids(items: list[SourceItem], base: Path) -> list[SourceItem]:
    """``items`` with ids no two files share. Default ids drop the suffix, so ``x.wav`` beside
    ``x.flac`` share one: such ids become the file's path (relative to ``base``) with its
    suffix, again until none is shared (``take.wav`` and ``take.flac`` beside ``take.flac.wav``,
    whose id without suffix is ``take.flac``). One path listed twice keeps its shared id."""
    while True:
        counts = Counter(it.id for it in items)
        renamed = [_replace(it, id=text_name(_relative(it.path, base))) if counts[it.id] > 1 else it
                   for it in items]
        if renamed == items:
            return items
        items = renamed


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursively, sorted) whose suffix is in ``extensions``
    (case-insensitive), without operating-system leftovers and hidden files
    (:func:`data_prep.discover.is_leftover`: ``__MACOSX/``, ``._x.wav``, ``.DS_Store``...)."""
    return sorted(p for p, rel in walk(folder)
                  if p.suffix.lower() in extensions and not is_leftover(rel))


def _no_files_message(root: Path, midi: bool, skipped: list, ignored: list) -> str:
    what = "MIDI" if midi else "audio"
    text = (f"no {what} files under {shown(root)} (expected ROOT/CLASS/files or "
            f"ROOT/train|valid|test/CLASS/files)")
    if skipped or ignored:
        text += f"; {len(skipped)} files skipped, {len(ignored)} ignored"
        text += "".join(f"\n  {shown(text_name(str(p.relative_to(root))))}: {reason}"
                        for p, reason in skipped[:5])
    return text


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


def _on_disk(path: Path) -> Path:
    """``path``, or the same name in the other Unicode normal form when only that exists (macOS
    writes decomposed names, é as e + U+0301; spreadsheets and other systems composed ones)."""
    if path.exists():
        return path
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, str(path)))
        if other != path and other.exists():
            return other
    return path


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

    def items(self, args: argparse.Namespace) -> Listing:
        """Every regular file under the root is an item, skipped (with the reason) or ignored
        (an OS leftover); see :mod:`data_prep.discover`. The layout is ``ROOT/SPLIT/CLASS/**``
        when every top folder holding files to read is a split name, ``ROOT/CLASS/**``
        otherwise (a ``docs/`` or ``metadata/`` folder beside ``train/`` changes nothing)."""
        root = Path(args.root)
        midi = getattr(args.features, "kind", "") == "pianoroll"
        if not root.is_dir():
            raise ValueError(f"--root {shown(root)}: not a folder")
        unlistable: list = []
        files = sorted(walk(root, unlistable, leave_out=is_cache_output))    # an --out inside --root
        ignored = [p for p, rel in files if is_leftover(rel)]
        files = [(p, rel) for p, rel in files if not is_leftover(rel)]
        reasons = {path: classify(path, midi) for path, rel in files if len(rel.parts) > 1}
        tops = {rel.parts[0] for path, rel in files if len(rel.parts) > 1 and reasons[path] is None}
        split_layout = bool(tops) and all(t.lower() in _SPLIT_NAMES for t in tops)
        depth = 3 if split_layout else 2          # parts of ROOT/[SPLIT/]CLASS/file
        try:
            pattern = re.compile(args.group_by) if args.group_by else None
        except re.error as e:
            raise ValueError(f"--group-by {args.group_by!r} is not a regular expression ({e}); "
                             f"e.g. '^[^_]+' for SPEAKER_take.wav") from None
        items, skipped = [], [(p, why) for p, why in unlistable if not is_leftover(p.relative_to(root))]
        for path, rel in files:
            if len(rel.parts) < depth:
                skipped.append((path, "not in a class folder (ROOT/CLASS/file"
                                      + (", here ROOT/SPLIT/CLASS/file)" if split_layout else ")")))
                continue
            reason = reasons[path]
            if reason:
                skipped.append((path, reason))
                continue
            group = ""
            if pattern:
                m = pattern.search(path.stem)
                group = (m.group(1) if m.groups() else m.group(0)) if m else ""
            split = normalise_split(rel.parts[0]) if split_layout else ""
            items.append(SourceItem(path, text_name(rel.parts[depth - 2]), split, None,
                                    text_name(group), text_name(item_id(path, root))))
        if not items:
            raise ValueError(_no_files_message(root, midi, skipped, ignored))
        return Listing(assign_splits(unique_ids(items, root), args), skipped, ignored)


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
        parser.add_argument("--encoding", default=None,
                            help="the manifest's text encoding (default: detected: UTF-8, UTF-16 "
                                 "with or without a byte-order mark, UTF-32 with one, as "
                                 "spreadsheets save them), e.g. cp1252")
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
            raise ValueError(f"no manifest at {shown(manifest)}: give --manifest or point --root at the CSV")
        base = manifest.parent
        header, rows = read_manifest(manifest, (args.path_column, args.label_column), args.encoding,
                                     "--encoding", "; see --path-column / --label-column")
        others = set(args.other_splits.split(",") if isinstance(args.other_splits, str)
                     else args.other_splits) - {""}
        if args.split_column != "split" and args.split_column not in header:
            raise ValueError(f"{shown(manifest)}: no column {args.split_column!r} (columns: {', '.join(header)}); "
                             f"see --split-column")
        group_col = args.group_by or ("group" if "group" in header else None)
        if group_col and group_col not in header:
            raise ValueError(f"{shown(manifest)}: --group-by {group_col!r} is not a column (columns: {header})")
        fold_of = fold_numbers(rows, args.fold_column, header, manifest)
        items, lines = [], {}
        for row in rows:
            line = row.line
            where = f"{shown(manifest)}:{line}: "
            raw_path, label = row[args.path_column], row[args.label_column]
            path = Path(raw_path)
            path = _on_disk(path if path.is_absolute() else base / path)
            if lines.setdefault(path, line) != line:
                raise ValueError(f"{where}{shown(raw_path)} is listed again (first on line {lines[path]}); "
                                 f"list each file once")
            fold_value = fold_of.get(row.get(args.fold_column, ""))
            split = row.get(args.split_column, "")
            split = split if split in others else normalise_split(split, where)
            items.append(SourceItem(path, label, split, fold_value, row.get(group_col, "") if group_col else "",
                                    item_id(path, base)))
        return assign_splits(unique_ids(items, base), args)


def fold_numbers(rows: list[dict], column: str, header: list, manifest: Path) -> dict[str, int]:
    """Fold number of each value of ``column``: whole numbers stand for themselves; when any
    value is not one, the distinct values are numbered 1..K in sorted order (printed, so the
    numbers can be read back). An empty value has no fold. No such column: ``{}``, unless it
    was asked for by name (``ValueError``)."""
    if column not in header:
        if column != "fold":
            raise ValueError(f"{shown(manifest)}: --fold-column {column!r} is not a column (columns: {header})")
        return {}
    values = sorted({(r.get(column) or "").strip() for r in rows} - {""})
    if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        return {v: int(v) for v in values}
    if column == "fold":
        bad = next(v for v in values if not re.fullmatch(r"[+-]?\d+", v))
        raise ValueError(f"{shown(manifest)}: fold must be an integer, got {bad!r} (or name the column with "
                         f"--fold-column to number its values)")
    numbers = {v: k for k, v in enumerate(values, start=1)}
    print(f"csv: folds from column {column!r}: " + ", ".join(f"{k}={shown(v)}" for v, k in numbers.items()),
          file=sys.stderr)
    return numbers
