"""``--download``: fetch a dataset's public archive, verify it, resume it, extract it.

Downloads go to ``ROOT/.downloads/NAME.part`` and continue from where they stopped (HTTP
``Range``) after a dropped connection or an interrupted run; a server that ignores ranges makes
it start over. The finished file is checked against its published SHA-256 or MD5 (a mismatch
deletes it and fails), extracted into ``ROOT`` (refusing members that would land outside it),
and replaced by a ``NAME.done`` marker so the next run skips it.

Some archives have no published checksum (GitHub's generated ESC-50 zip, NSynth's tarballs):
for those the extracted layout is checked instead (``expect``), and the SHA-256 of what was
downloaded is printed for the record.
"""
from __future__ import annotations

import hashlib
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Optional

from .discover import shown

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive of a dataset.

    Attributes:
        url: where it is.
        filename: its file name in ``ROOT/.downloads``.
        sha256: published SHA-256 (hex), if any.
        md5: published MD5 (hex), if any (checked when there is no SHA-256).
        expect: a path relative to ``ROOT`` that exists once the archive is extracted.
    """

    url: str
    filename: str
    sha256: Optional[str] = None
    md5: Optional[str] = None
    expect: Optional[str] = None


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def download_source(source, root: Path, quiet: bool = False) -> None:
    """Download and extract every archive of ``source`` (a :class:`~data_prep.sources.Source`)
    into ``root``. Raises ``ValueError`` with a message saying where to get datasets that have
    no stable public archive, and ``OSError`` for network or disk failures."""
    spec = source.download
    if spec is None:
        raise ValueError(f"{source.name} has no download; put the files under --root yourself")
    if isinstance(spec, str):
        raise ValueError(f"{source.name} cannot be downloaded automatically. {spec}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for archive in spec:
        fetch_archive(archive, root, quiet=quiet)


def fetch_archive(archive: Archive, root: Path, quiet: bool = False, retries: int = 5) -> None:
    """Download (resuming), verify and extract ``archive`` into ``root``, once."""
    root = Path(root)
    downloads = root / ".downloads"
    done = downloads / f"{archive.filename}.done"
    path = downloads / archive.filename
    if done.exists():
        _say(f"{archive.filename}: already downloaded and extracted", quiet)
        return
    in_progress = path.exists() or path.with_name(path.name + ".part").exists()
    if archive.expect and (root / archive.expect).exists() and not in_progress:
        _say(f"{archive.filename}: {shown(root / archive.expect)} is already there; not downloading", quiet)
        return
    downloads.mkdir(parents=True, exist_ok=True)
    download(archive.url, path, sha256=archive.sha256, md5=archive.md5, quiet=quiet, retries=retries)
    _say(f"extracting {path.name} into {shown(root)}", quiet)
    extract(path, root)
    if archive.expect and not (root / archive.expect).exists():
        raise ValueError(f"{archive.filename} did not contain {archive.expect}; it is not the "
                         f"expected archive (kept at {shown(path)})")
    done.write_text(f"{archive.url}\n")
    path.unlink()


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: Optional[str], md5: Optional[str], quiet: bool) -> None:
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5) if md5 else ("sha256", None)
    actual = _digest(path, algorithm)
    if expected is None:
        _say(f"{path.name}: no published checksum; sha256 of the download is {actual}", quiet)
    elif actual != expected.lower():
        path.unlink()
        raise ValueError(f"{path.name}: {algorithm} checksum mismatch (expected {expected}, got "
                         f"{actual}); the download was deleted, run again to retry")


def download(url: str, dest: Path, sha256: Optional[str] = None, md5: Optional[str] = None,
             quiet: bool = False, retries: int = 5, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with HTTP ``Range`` requests.

    Retries up to ``retries`` times after a dropped connection, each time from where it
    stopped, then checks the checksum. Returns ``dest``.
    """
    dest = Path(dest)
    if dest.exists():
        _verify(dest, sha256, md5, quiet=True)
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _fetch(url, part, timeout, quiet):
                break
        except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code not in (408, 429, 500, 502, 503, 504):
                raise OSError(f"{url}: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                raise OSError(f"{url}: {e} (the partial download in {shown(part)} resumes on the next run)") from None
            delay = min(2 ** attempt, 30) if attempt else 0
            _say(f"{dest.name}: {e}; resuming in {delay} s", quiet)
            time.sleep(delay)
    part.replace(dest)
    _verify(dest, sha256, md5, quiet)
    return dest


def _fetch(url: str, part: Path, timeout: float, quiet: bool) -> bool:
    """One request: append to ``part`` from its current size. True when the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "audiostem-data_prep"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # nothing left to fetch: the part is whole
            return True
        raise
    with response:
        if have and response.status == 206:
            mode = "ab"
        else:                                # a fresh start, or a server that ignores Range
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        from tqdm import tqdm

        with open(part, mode) as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                          desc=part.name[:-5], disable=quiet, file=sys.stderr) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"connection closed at {size} of {total} bytes")
    return True


def extract(archive: Path, root: Path) -> None:
    """Extract a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` into ``root``; members with absolute
    paths or ``..`` that would land outside ``root`` are refused (``ValueError`` naming the
    archive and member). Tar archives go through Python's ``data`` extraction filter, which
    refuses links out of the root; on a Python without filters (before 3.10.12 and 3.11.4)
    only regular files and folders are extracted and any link or special member is refused."""
    root = Path(root).resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _inside(root, member.filename, archive)
            zf.extractall(root)
        return
    try:
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                _check_tar(tf, root, archive)          # before anything is written
                tf.extractall(root, filter="data")
            else:                               # Python without extraction filters (< 3.10.12, 3.11.4)
                _extract_plain(tf, root, archive)
    except tarfile.TarError as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise ValueError(f"{shown(archive)}: refused an unsafe member ({e})") from None
        raise ValueError(f"{shown(archive)}: not a zip or tar archive ({e})") from None


def _check_tar(tf: tarfile.TarFile, root: Path, archive: Path) -> None:
    """Refuse, before extracting anything, a member outside ``root``, a link whose target is
    outside it, and a member whose path goes through a link of the archive (``d/l -> ..``
    then ``d/l/../x``: each looks harmless alone, the filter only sees it once the link is on
    disk)."""
    links = set()
    for member in tf.getmembers():
        parts = Path(member.name).parts
        through = next((str(Path(*parts[:k])) for k in range(1, len(parts)) if str(Path(*parts[:k])) in links), None)
        if through is not None:
            raise ValueError(f"{shown(archive)}: member {member.name!r} goes through the link {through!r}; refused")
        _inside(root, member.name, archive)
        if member.issym():
            _inside(root, str(Path(member.name).parent / member.linkname), archive)
        elif member.islnk():
            _inside(root, member.linkname, archive)
        if member.issym() or member.islnk():
            links.add(str(Path(member.name)))


def _extract_plain(tf: tarfile.TarFile, root: Path, archive: Path) -> None:
    """Extract only regular files and folders, each inside ``root``, without the archive's
    permission bits or owners: any link (symbolic or hard), device or FIFO member refuses the
    archive before anything is written. A dataset needs none of them, and a link is how a
    later member escapes the root (``d/l -> ..`` then ``d/l/../x``; a hard link to an outside
    file that a later member overwrites)."""
    members = tf.getmembers()
    for member in members:
        if not (member.isfile() or member.isdir()):
            kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                    else "a device or FIFO")
            raise ValueError(f"{shown(archive)}: member {member.name!r} is {kind}; refused (this Python "
                             "has no tar extraction filters, so only files and folders are extracted)")
        _inside(root, member.name, archive)
    for member in members:
        tf.extract(member, root, set_attrs=False)


def _inside(root: Path, name: str, archive: Path) -> None:
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{shown(archive)}: member {name!r} would be extracted outside {shown(root)}; refused")
