"""``python -m data_prep SOURCE --root ROOT --out CACHE [options]``: prepare a feature cache.

``python -m data_prep --help`` lists the sources, ``python -m data_prep SOURCE --help`` their
options. ``python -m data_prep render ...`` renders a MIDI dataset to audio (see
``data_prep.render``); ``python -m data_prep verify CACHE`` checks a cache's checksums.

Exit status (``data_prep.cli.EXIT_*``): 0 when the cache is complete and holds every file found (operating
system leftovers such as ``.DS_Store`` are ignored), 3 when it is complete but some files were
skipped (the summary lists them with their reasons), 1 when no cache was written (nothing usable,
another config in the way, a download failed, the disk is full or read-only), 2 for bad
arguments, 130 when interrupted (run the same command again to resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Optional, Sequence

from .cache import CacheError
from .cli import EXIT_OK, EXIT_SKIPPED, run_resumable
from .config import AudioFeatures, PianoRollFeatures
from .discover import shown

_NONE = ("none", "null")


def _field_help(cls: type) -> dict[str, str]:
    """Per-field help from the ``Args:`` section of a config dataclass's docstring."""
    helps: dict[str, str] = {}
    doc = (cls.__doc__ or "").split("Args:", 1)[-1]
    current = None
    for line in doc.splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2).strip()
        elif current and line.startswith(" " * 12):
            helps[current] += " " + line.strip()
        elif line.strip() == "":
            current = None
    return {k: v.replace("``", "").replace("%", "%%") for k, v in helps.items()}


def _parser_type(hint, default):
    """An argparse ``type`` for a config field (``hint`` from ``typing.get_type_hints``): its
    base type, accepting ``none`` for optional fields."""
    args = typing.get_args(hint)
    optional = type(None) in args or default is None
    base = next((a for a in args if a is not type(None)), hint if not args else str)
    if base not in (int, float, str):
        base = type(default) if default is not None else str

    def convert(text: str):
        if optional and text.lower() in _NONE:
            return None
        return base(text)

    convert.__name__ = base.__name__        # argparse names the type in its errors
    return convert


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per feature config field (``--kind``, ``--sample-rate``, ``--n-mels``,
    ``--fs``, ``--beat-resolution``...); options not given stay out of the namespace, and
    ``none`` sets an optional field to ``None`` (``--top-db none``)."""
    seen = set()
    for cls, title in ((AudioFeatures, "audio feature options (kinds stft, mel, logmel, mfcc, cqt)"),
                       (PianoRollFeatures, "piano-roll feature options (kind pianoroll)")):
        group = parser.add_argument_group(title)
        helps = _field_help(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            flag = "--" + f.name.replace("_", "-")
            text = helps.get(f.name, "")
            text = text.rstrip(".")
            if f.name == "kind":
                group.add_argument(flag, dest="feature_kind", default=argparse.SUPPRESS,
                                   metavar="KIND", help="stft, mel, logmel, mfcc, cqt or pianoroll "
                                                        "(default: the source's)")
                continue
            if isinstance(f.default, bool):
                group.add_argument(flag, dest=f"feature_{f.name}", default=argparse.SUPPRESS,
                                   action=argparse.BooleanOptionalAction,
                                   help=f"{text} (default {f.default})")
            else:
                default = "none" if f.default is None else f.default
                group.add_argument(flag, dest=f"feature_{f.name}", default=argparse.SUPPRESS,
                                   type=_parser_type(hints[f.name], f.default),
                                   metavar=f.name.upper(), help=f"{text} (default {default})")


def _given_features(args: argparse.Namespace) -> dict:
    """The feature fields the user gave (options not given are absent from ``args``)."""
    return {k[len("feature_"):]: v for k, v in vars(args).items() if k.startswith("feature_")}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one sub-parser per source."""
    from .sources import available_sources

    sources = available_sources()
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Turn an audio or MIDI dataset into a feature cache (spectrograms or piano "
                    "rolls) for audiostem. Also: 'python -m data_prep render --help' renders "
                    "a MIDI dataset to audio.",
        epilog="Examples:\n"
               "  python -m data_prep gtzan --root ~/data/gtzan --out caches/gtzan\n"
               "  python -m data_prep esc50 --root ~/data/ESC-50 --out caches/esc50 --download\n"
               "  python -m data_prep folder --root my_sounds --out caches/mine --n-mels 64\n"
               "  python -m data_prep verify caches/mine      (check a cache's checksums)\n"
               "Run 'python -m data_prep SOURCE --help' for a source's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", title="sources")
    subparsers = {}
    for name, src in sources.items():
        defaults = ", ".join(f"{k}={v}" for k, v in src.default_features.items())
        p = sub.add_parser(name, help=f"[{src.kind}] {src.description}",
                           description=f"{src.description}. Default features: {defaults}.")
        subparsers[name] = p
        common = p.add_argument_group("where")
        default_root = getattr(src, "default_root", None)      # folk: built there on first use
        common.add_argument("--root", required=default_root is None, default=default_root, type=Path,
                            help="the dataset folder (created by --download when missing)"
                                 + (f"; default {default_root}" if default_root else ""))
        common.add_argument("--out", required=True, type=Path, help="the cache folder to write")
        run = p.add_argument_group("how")
        run.add_argument("--workers", type=int, default=None,
                         help="worker processes (default: all usable cores); 1 reads the files "
                              "in this process, where a file that crashes its decoder ends the build")
        run.add_argument("--force", action="store_true",
                         help="rebuild the cache even if it exists, with any config")
        run.add_argument("--download", action="store_true",
                         help="download and extract the dataset into --root first "
                              "(checksum-verified, resumable)" if src.download is not None
                         else argparse.SUPPRESS)
        run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
        own = p.add_argument_group(f"{name} options")
        src.add_arguments(own)
        add_feature_arguments(p)
    return parser, subparsers


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["render"]:
        from . import render

        return render.main(argv[1:]) or 0
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    parser, subparsers = build_parser()
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    from .prepare import prepare
    from .source_options import resolve_features, source_arguments
    from .sources import get_source

    src = get_source(args.source)
    options = {k: getattr(args, k) for k in vars(source_arguments(src))}
    try:
        config = resolve_features(src, _given_features(args))   # bad feature options: exit status 2
    except ValueError as e:
        subparsers[args.source].error(str(e))
    if args.download:
        from .download import download_source

        try:
            download_source(src, args.root)
        except (OSError, ValueError) as e:
            print(f"error: download failed: {e}", file=sys.stderr)
            return 1
    built = []
    status = run_resumable(lambda: built.append(prepare(
        src, args.root, args.out, config, force=args.force, workers=args.workers,
        progress=not args.quiet, **options)), args.out, errors=(CacheError, ValueError, TypeError))
    if status == EXIT_OK and built and built[0].failures:
        return EXIT_SKIPPED
    return status


def verify_main(argv: Sequence[str]) -> int:
    """``python -m data_prep verify CACHE...``: check every file of each cache against the
    size and SHA-256 its build recorded. Exit status 0 when all are whole, 1 otherwise."""
    from .cache import verify_cache

    parser = argparse.ArgumentParser(prog="python -m data_prep verify",
                                     description="Check that feature caches are whole: every file's "
                                                 "size and SHA-256 against what its build recorded.")
    parser.add_argument("caches", nargs="+", type=Path, metavar="CACHE")
    args = parser.parse_args(argv)
    status = 0
    for path in args.caches:
        try:
            cache = verify_cache(path)
        except CacheError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        files = cache.meta.get("files")
        what = (f"{len(files)} files match their checksums" if files else
                "sizes and headers whole (built before checksums were recorded: rebuild with "
                "--force to get them)")
        if files and "meta_sha256" not in cache.meta:
            what += ", meta.json unchecked (built before it had a checksum: rebuild with --force)"
        elif files:
            what += ", and meta.json its own"
        print(f"{shown(path)}: ok, build {cache.build_id[:12]}, {len(cache)} items; {what}")
    return status


if __name__ == "__main__":
    sys.exit(main())
