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

Reading the files (step 4, by kind, in worker processes) is :mod:`data_prep.extract`.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Union

from .cache import CacheError, FeatureCache, partial_failures
from .cache_files import build_target
from .cache_writer import CacheWriter, check_existing, drop_unused_partial
from .config import FeatureConfig
from .discover import shown, text_name
from .extract import extract_in_order, preload
from .source_options import resolve_features, source_arguments
from .sources import Source, SourceItem, get_source
from .workers import cpu_count


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
        workers: worker processes (default: the usable CPU cores). 1 reads the files in this
            process, where a file that crashes its decoder ends the build; otherwise (the
            default on a one-core machine too) a crash costs that one file.
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
        raise ValueError(f"--root {shown(root)}: no such file or folder")
    root = src.resolve_root(root)
    out = build_target(Path(out).expanduser())          # a link: the folder it points to
    config = resolve_features(src, features)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)

    args = source_arguments(src, **source_options)
    args.root, args.features = root, config
    described = _describe(src, root, args)
    cache = check_existing(out, config, force=force, source=described)
    if cache is not None:
        ignored = cache.meta.get("ignored", {}).get("count", 0)
        say(f"{shown(out)} is up to date ({len(cache)} items, {config.kind}, {len(cache.failures)} "
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
        say(f"resuming {shown(out)}: {resumed} of {len(items)} items were already done")

    written, skipped, seconds = 0, [], 0.0
    preload(config)                          # before the bar starts, so its ETA is about files
    bar = _progress(len(items), resumed, src.name, progress)
    try:
        results = extract_in_order([str(it.path) for it, _ in todo], config, n_workers,
                                   in_process=workers == 1)      # only when asked: no crash isolation
        for (item, key), result in zip(todo, results):
            if result[0] == "ok":
                _, array, checksum, duration, sums, notes = result
                writer.add(array, id=item.id, source=key, label=item.label, split=item.split,
                           fold=item.fold, group=item.group, checksum=checksum, sums=sums,
                           warnings=notes)
                written += 1
                seconds += duration or 0.0
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
             "workers": n_workers, "warnings": writer.warnings}      # resumed items' too
    extra = {"build": build, "ignored": {"count": len(ignored), "examples": ignored[:20]}}
    try:
        cache = writer.finish(extra_meta=extra)
    except CacheError as e:
        raise CacheError(f"{e}{_failure_lines(partial_failures(out) or skipped)}") from None
    except UnicodeEncodeError:      # rows an older version wrote with raw non-UTF-8 names
        raise CacheError(f"{shown(out.name + '.partial')} holds file names that are not UTF-8 text, from an "
                         f"interrupted build of an older version; run the same command with "
                         f"--force to start it over") from None
    say(_summary(cache, build, elapsed, seconds))
    return cache


def disk_error(error: OSError, out: Path) -> str:
    """A one-line message for an ``OSError`` met while writing the cache ``out``: the path, what
    went wrong, and what to do."""
    where = error.filename if error.filename is not None else out
    text = f"cannot write {shown(where)}: {error.strerror or error}"
    if error.errno in (errno.EEXIST, errno.ENOTDIR) and Path(where).is_file():
        text = f"cannot write {shown(where)}: Not a directory (a file is in the way of --out)"
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
    lines = [f"\n  {shown(f['source'])}: {f['reason']}" for f in failures[:limit]]
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
    parts = [f"wrote {shown(cache.path)}: {len(cache)} items prepared, {_files(len(failures))} skipped, "
             f"{ignored['count']} ignored; {len(cache.classes)} classes, splits {cache.meta['splits']}"]
    if build["resumed"]:
        parts.append(f" ({build['written']} this run, {build['resumed']} resumed)")
    parts.append(_failure_lines(failures))
    if ignored["count"]:
        examples = ", ".join(map(shown, ignored["examples"][:3])) + (", ..." if ignored["count"] > 3 else "")
        parts.append(f"\nignored {_files(ignored['count'])}: operating-system leftovers and hidden "
                     f"files ({examples})")
    for w in build.get("warnings", [])[:10]:
        parts.append(f"\n  warning: {shown(w['source'])}: {w['warning']}")
    if len(build.get("warnings", [])) > 10:
        parts.append(f"\n  ... and {len(build['warnings']) - 10} more warnings (meta.json lists them all)")
    rate = build["written"] / elapsed if elapsed else 0.0
    parts.append(f"\n{build['written']} files in {elapsed:.1f} s ({rate:.1f} files/s) "
                 f"with {build['workers']} worker{'s' * (build['workers'] > 1)}")
    if audio_seconds:
        parts.append(f"; {audio_seconds / 3600:.2f} h of audio, "
                     f"{audio_seconds / elapsed:.0f} audio-seconds/s")
    return "".join(parts)
