"""What the headers of uncompressed audio files promise, against what the file holds.

Writers that stream (recorders, DAWs, ``sox -t wav -``) write a header with sizes of 0 or
``0xFFFFFFFF`` and fill them in when they close the file; a writer that never closed it leaves
the placeholder. A file cut short (a partial download or copy) keeps a header that promises
more than follows. libsndfile reads the first as empty and the second silently as shorter;
these functions find both:

- :func:`fix_wav_sizes` gives a WAV whose ``data`` size is 0 the size of what follows (as
  ``sox --ignore-length`` and FFmpeg read it);
- :func:`promised_bytes` returns ``(promised, present)`` bytes of sample data for WAV (RIFF,
  RIFX, RF64/BW64), Wave64, AIFF/AIFF-C, CAF and AU/SND, so that a caller can say when a file
  is truncated;
- :func:`ogg_is_cut` tells an Ogg file (Vorbis, Opus, FLAC in Ogg) that ends inside a page or
  without its end-of-stream page: Ogg keeps no length in a header, but a whole stream ends with
  a page that says so.
"""
from __future__ import annotations

import struct
from typing import Iterator, Optional

_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_UNKNOWN = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, -1)       # "until the end of the file"


def _chunks(data: bytes, pos: int, order: str, even: bool = True) -> Iterator[tuple[bytes, int, int]]:
    """``(id, size, body offset)`` of the 4-byte-id, 4-byte-size chunks from ``pos``."""
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack(order + "I", data[pos + 4:pos + 8])[0]
        yield chunk, size, pos + 8
        pos += 8 + size + (size & 1 if even else 0)


def _only_chunks(data: bytes, pos: int, order: str) -> bool:
    """True when the bytes from ``pos`` to the end are whole chunks with text ids (a ``LIST``
    after a really empty ``data`` chunk), not audio."""
    for chunk, size, body in _chunks(data, pos, order):
        if not all(32 <= c < 127 for c in chunk) or body + size > len(data):
            return False
        if body + size + (size & 1) >= len(data):
            return True
    return False


def fix_wav_sizes(data: bytes) -> tuple[bytes, list[str]]:
    """A WAV (RIFF/RIFX) whose ``data`` chunk has size 0 but is followed by audio, with the size
    of what follows (whole sample frames) and a note saying so; other files come back as they
    are, with no note."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return data, []
    order = "<" if data[:4] == b"RIFF" else ">"
    block_align = byte_rate = 0
    for chunk, size, body in _chunks(data, 12, order):
        if chunk == b"fmt " and size >= 16 and body + 16 <= len(data):
            byte_rate, block_align = struct.unpack(order + "IH", data[body + 8:body + 14])
        if chunk == b"data":
            available = len(data) - body
            available -= available % block_align if block_align else 0
            if size != 0 or available <= 0 or _only_chunks(data, body, order):
                return data, []
            fixed = bytearray(data)
            fixed[body - 4:body] = struct.pack(order + "I", available)
            fixed[4:8] = struct.pack(order + "I", min(len(data) - 8, 0xFFFFFFFF))
            length = f"{available / byte_rate:.3f} s" if byte_rate else f"{available} bytes"
            return bytes(fixed), [f"the WAV header gives 0 data bytes (a writer that never closed "
                                  f"the file); read the {length} that follow"]
    return data, []


def promised_bytes(data: bytes) -> Optional[tuple[int, int]]:
    """``(bytes of sample data the header promises, bytes of it in the file)`` for WAV, RF64,
    Wave64, AIFF, CAF and AU files; ``None`` for other formats, or when the header leaves the
    size open (streaming placeholders)."""
    head, form = data[:4], data[8:12]
    found = None
    if head in (b"RIFF", b"RIFX") and form == b"WAVE":
        order = "<" if head == b"RIFF" else ">"
        found = next(((size, len(data) - body) for chunk, size, body in _chunks(data, 12, order)
                      if chunk == b"data"), None)
    elif head in (b"RF64", b"BW64") and form == b"WAVE":
        chunks = dict((c, (s, b)) for c, s, b in _chunks(data, 12, "<"))
        if b"ds64" in chunks and b"data" in chunks:
            ds64 = chunks[b"ds64"][1]
            found = (struct.unpack("<Q", data[ds64 + 8:ds64 + 16])[0], len(data) - chunks[b"data"][1])
    elif head == b"FORM" and form in (b"AIFF", b"AIFC"):
        found = next(((size - 8, len(data) - body - 8) for chunk, size, body in _chunks(data, 12, ">")
                      if chunk == b"SSND"), None)
    elif head == b".snd" and len(data) >= 12:
        offset, size = struct.unpack(">II", data[4:12])
        found = (size, len(data) - offset)
    elif head == b"caff":
        pos = 8
        while pos + 12 <= len(data):
            chunk, size = data[pos:pos + 4], struct.unpack(">q", data[pos + 4:pos + 12])[0]
            if chunk == b"data":
                found = (size - 4 if size >= 0 else -1, len(data) - pos - 16)
                break
            if size < 0:
                break
            pos += 12 + size
    elif data[:16] == _W64_RIFF:
        pos = 40
        while pos + 24 <= len(data):
            size = struct.unpack("<Q", data[pos + 16:pos + 24])[0]
            if data[pos:pos + 4] == b"data":
                found = (size - 24, len(data) - pos - 24)
                break
            if size < 24:
                break
            pos += size + (-size % 8)
    if found is None or found[0] in _UNKNOWN or found[0] < 0:
        return None
    return found


def ogg_is_cut(data: bytes) -> bool:
    """True when ``data``, an Ogg file, ends inside a page or with a page that is not an
    end-of-stream page (a partial download or copy). Bytes after the last whole page that are
    not a page (a tag a tagger appended) leave the question open: False."""
    pos, last_flags = 0, None
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
        segments = data[pos + 26]
        if pos + 27 + segments > len(data):
            return True
        end = pos + 27 + segments + sum(data[pos + 27:pos + 27 + segments])
        if end > len(data):
            return True
        last_flags, pos = data[pos + 5], end
    if pos < len(data):
        return data[pos:pos + 4] == b"OggS"[:len(data) - pos]     # a page header cut short
    return last_flags is not None and not last_flags & 0x04


def truncation_note(data: bytes, seconds: float) -> Optional[str]:
    """A note when the header of ``data`` promises more sample data than the file holds, or an
    Ogg file is cut (:func:`ogg_is_cut`); ``seconds``: the duration that was read from it."""
    if data[:4] == b"OggS":
        if not ogg_is_cut(data):
            return None
        return ("truncated: the Ogg stream ends inside a page, without its end-of-stream page; "
                + (f"read as the {seconds:.3f} s before the cut" if seconds else
                   "no whole page of audio before the cut"))
    sizes = promised_bytes(data)
    if sizes is None or not 0 < sizes[1] < sizes[0]:
        return None
    promised, present = sizes
    return (f"truncated: the header promises {seconds * promised / present:.3f} s, the file holds "
            f"{seconds:.3f} s (read as the shorter clip)")
