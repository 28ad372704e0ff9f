"""What the files under a dataset folder are: items to read, files skipped (with a reason), or
operating-system leftovers that are ignored.

One rule decides for every regular file (:func:`classify`), so that a build can account for
all of them (``prepared + skipped + ignored = files under the root``):

- **ignored**: leftovers of operating systems, archivers and file managers, and hidden files
  (:func:`is_leftover`): ``__MACOSX/``, AppleDouble ``._*`` files, ``.DS_Store``,
  ``Thumbs.db``, ``desktop.ini``, ``$RECYCLE.BIN/``, any name or folder starting with ``.``;
- **candidate**: a file the readers will try: a known extension of the family (audio or MIDI),
  or content that looks like it (:func:`sniff`: ``take2.wave``, an ``.m4a``, a WAV without
  extension, a MIDI file named ``.bin``), or content no signature here names that a decoder
  recognises (:func:`decodable`). Whether it is readable is the reader's to say;
- **skipped**: anything else, with what it is (``a JPEG image``, ``text``, ``a MIDI file``...).

Feature caches under the root (an ``--out`` inside ``--root``: the cache, its ``.partial`` build,
its lock file) are data_prep's own output, not the dataset's files: the ``folder`` source has
:func:`walk` leave them out.

File names are kept as Python gives them: bytes that are not UTF-8 (old archives, Windows code
pages) come back as surrogate escapes, which open fine but cannot be written as UTF-8 text;
:func:`text_name` turns them into visible ``\\xNN`` escapes for manifests and messages. A name
may also hold a newline, a carriage return or a tab (Linux allows any byte but ``/`` and NUL):
:func:`shown` is how every message of data_prep and audiostem writes a name or path, so that the
message stays one line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Optional, Union

#: Names (case-insensitive) of files and folders written by operating systems, not by people.
LEFTOVER_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db",
                            "desktop.ini", "$recycle.bin", "system volume information",
                            "lost+found", "icon\r", "@eadir", "#recycle", "#snapshot"})

#: File extensions that libsndfile reads (``soundfile.available_formats``, lower case).
SNDFILE_EXTENSIONS = (".wav", ".wave", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif",
                      ".aiff", ".aifc", ".au", ".snd", ".w64", ".caf", ".rf64", ".sd2", ".voc",
                      ".wve", ".nist", ".sph", ".ircam", ".paf", ".pvf", ".xi", ".8svx", ".svx")
#: More audio extensions, read through FFmpeg (PyAV) when it is installed.
FFMPEG_EXTENSIONS = (".m4a", ".m4b", ".mp4", ".aac", ".adts", ".alac", ".wma", ".asf", ".webm",
                     ".weba", ".mka", ".mkv", ".wv", ".ape", ".amr", ".3gp", ".ac3", ".eac3",
                     ".dts", ".mp2", ".mpga", ".spx", ".tta", ".ra", ".mov", ".avi", ".m4v",
                     ".dsf", ".dff", ".mpc", ".gsm", ".oma", ".aa3")
AUDIO_EXTENSIONS = tuple(dict.fromkeys(SNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS))
MIDI_EXTENSIONS = (".mid", ".midi", ".kar", ".smf", ".rmi")

# (offset, magic bytes, family, what it is); RIFF and FORM containers are told apart below.
_MAGIC = [
    (0, b"MThd", "midi", "a MIDI file"),
    (0, b"fLaC", "audio", "FLAC audio"),
    (0, b"OggS", "audio", "Ogg audio"),
    (0, b"ID3", "audio", "MP3 audio"),
    (0, b".snd", "audio", "Sun/NeXT audio"),
    (0, b"caff", "audio", "Core Audio (CAF)"),
    (0, b"RF64", "audio", "RF64 (WAV) audio"),
    (0, b"BW64", "audio", "BW64 (WAV) audio"),
    (0, b"riff\x2e\x91\xcf\x11", "audio", "Wave64 audio"),
    (4, b"ftyp", "audio", "MP4/M4A audio"),
    (0, b"\x1a\x45\xdf\xa3", "audio", "Matroska/WebM audio"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "audio", "ASF/WMA audio"),
    (0, b"wvpk", "audio", "WavPack audio"),
    (0, b"MAC ", "audio", "Monkey's Audio"),
    (0, b"#!AMR", "audio", "AMR audio"),
    (0, b"Creative Voice File", "audio", "VOC audio"),
    (0, b"NIST_1A", "audio", "NIST SPHERE audio"),
    (0, b"\x0b\x77", "audio", "AC-3 audio"),
    (0, b"TTA1", "audio", "TTA audio"),
    (0, b"\xff\xd8\xff", "other", "a JPEG image"),
    (0, b"\x89PNG", "other", "a PNG image"),
    (0, b"GIF8", "other", "a GIF image"),
    (0, b"%PDF", "other", "a PDF document"),
    (0, b"PK\x03\x04", "other", "a ZIP archive (extract it first)"),
    (0, b"\x1f\x8b", "other", "a gzip archive (extract it first)"),
    (0, b"7z\xbc\xaf\x27\x1c", "other", "a 7-Zip archive (extract it first)"),
    (0, b"Rar!", "other", "a RAR archive (extract it first)"),
    (257, b"ustar", "other", "a tar archive (extract it first)"),
    (0, b"\x93NUMPY", "other", "a NumPy array"),
    (0, b"\x89HDF", "other", "an HDF5 file"),
    (0, b"SQLite format 3", "other", "an SQLite database"),
    (0, b"\x00\x05\x16\x07", "other", "AppleDouble metadata"),
]
_CONTAINERS = {(b"RIFF", b"WAVE"): ("audio", "WAV audio"), (b"RIFX", b"WAVE"): ("audio", "WAV audio"),
               (b"RIFF", b"RMID"): ("midi", "a RIFF MIDI (RMID) file"),
               (b"RIFF", b"AVI "): ("audio", "AVI video"), (b"RIFF", b"WEBP"): ("other", "a WebP image"),
               (b"FORM", b"AIFF"): ("audio", "AIFF audio"), (b"FORM", b"AIFC"): ("audio", "AIFF-C audio"),
               (b"FORM", b"8SVX"): ("audio", "8SVX audio")}
SNIFF_BYTES = 512


def is_leftover(rel: Path) -> bool:
    """True for a path (relative to the dataset root) that an OS, archiver, file manager or NAS
    left: any part hidden (``.DS_Store``, ``._1.wav``, ``.git/``), a known leftover name
    (``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``, Synology's ``@eaDir/``...,
    case-insensitive), or an Office lock file (``~$name``)."""
    return any(part.startswith(".") or part.lower() in LEFTOVER_NAMES or part.startswith("~$")
               for part in rel.parts)


def sniff(head: bytes) -> tuple[str, str]:
    """``(family, what)`` of a file from its first bytes: family ``audio``, ``midi``, ``other``
    (a known non-audio format, or text) or ``unknown``; ``what`` names the format."""
    if not head:
        return "other", "an empty file (0 bytes)"
    for offset, magic, family, what in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return family, what
    if len(head) >= 12 and (head[:4], head[8:12]) in _CONTAINERS:
        return _CONTAINERS[head[:4], head[8:12]]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head[:3] == b"\xef\xbb\xbf":
        return "other", "text"
    if head[0] == 0xFF and head[1:2] and head[1] & 0xE0 == 0xE0:
        return "audio", "MPEG audio (MP3/AAC)"
    if _looks_like_text(head):
        return "other", "text"
    return "unknown", "of unknown format"


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:         # not just a character cut at the end of the sample
            text = head.decode("latin-1")
        else:
            text = head[:e.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    return printable >= 0.95 * len(text)


def read_head(path: Path, n: int = SNIFF_BYTES) -> Optional[bytes]:
    """The first ``n`` bytes of ``path``, or ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return None


def classify(path: Path, midi: bool) -> Optional[str]:
    """``None`` when ``path`` is a candidate for the family (MIDI when ``midi``, else audio), or
    the reason it is skipped. Leftovers are the caller's to drop first (:func:`is_leftover`).

    A file named with a known extension, or one that cannot be opened (a broken link, no
    permission), is a candidate without being opened here: its reader says what is wrong."""
    known = MIDI_EXTENSIONS if midi else AUDIO_EXTENSIONS
    if path.suffix.lower() in known:
        return None
    head = read_head(path)
    if head is None:
        return None
    family, what = sniff(head)
    if family == ("midi" if midi else "audio") or (family == "unknown" and not midi and decodable(path)):
        return None
    if family == "midi":
        return "a MIDI file: add --kind pianoroll to read MIDI"
    if family == "audio":
        return f"{what}, not MIDI: choose an audio --kind (such as logmel) to read it"
    if family == "unknown":
        return f"not {'MIDI' if midi else 'audio'}: content {what}" + (
            f", extension {path.suffix!r}" if path.suffix else ", no extension")
    return f"not {'MIDI' if midi else 'audio'} ({what})"


def decodable(path: Path) -> bool:
    """True when libsndfile or FFmpeg (PyAV, when installed) recognises ``path`` as audio from
    its header: what decides for content no signature here names."""
    import soundfile as sf

    try:
        sf.info(str(path))
        return True
    except Exception:            # noqa: BLE001 - any refusal means "not this decoder's"
        pass
    try:
        import av
    except ImportError:
        return False
    try:
        with av.open(str(path), mode="r") as container:
            return bool(container.streams.audio)
    except Exception:            # noqa: BLE001
        return False


def text_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes of a file name that are not UTF-8 (which Python keeps
    as surrogate escapes) are written ``\\xNN``, e.g. ``caf\\xe9_take1.wav``. Other names are
    returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")      # control characters, line separators


def shown(name: Union[str, bytes, os.PathLike, None]) -> str:
    """``name`` (a file or folder name, a path, a label) as a message writes it: as it is, or,
    when it holds a control character (newline, carriage return, tab, escape...) or a Unicode
    line separator, as Python's ``repr`` (``'dog/bad\\nname.wav'``), so that the message stays
    one line and names the file exactly."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return repr(text) if _BREAKS.search(text) else text


def walk(root: Path, errors: Optional[list] = None, leave_out: Optional[Callable[[Path], bool]] = None):
    """Every file under ``root`` as ``(path, path relative to root)``, recursively, in sorted
    order. Links are followed (a class folder may be a link to elsewhere), each real folder once
    (a link back up the tree is not a loop); links to nothing are included, for their reader to
    report; pipes and devices (which a reader would wait on forever) are not files here. Folders
    and files for which ``leave_out(path)`` is true are not listed (nor walked into): the
    ``folder`` source leaves out what data_prep itself wrote (:func:`data_prep.cache.is_cache_output`).
    Folders that cannot be listed are appended to ``errors`` as ``(path, reason)``."""
    leave_out = leave_out or (lambda path: False)
    seen = set()

    def failed(error: OSError) -> None:
        if errors is not None and error.filename is not None:
            errors.append((Path(error.filename), f"cannot list this folder ({error.strerror or error})"))

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=failed):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        base = Path(folder)
        dirs[:] = [d for d in sorted(dirs) if not leave_out(base / d)]
        for name in sorted(files):
            path = base / name
            if leave_out(path):
                continue
            if path.is_file() or (path.is_symlink() and not path.exists()):   # no FIFOs, devices
                yield path, path.relative_to(root)
