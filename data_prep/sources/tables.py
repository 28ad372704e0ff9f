"""Text files that datasets ship beside their audio or MIDI: CSV manifests (``csv``'s own, ESC-50's
``meta/esc50.csv``, UrbanSound8K's, MAESTRO's, the folk and polyphony ``manifest.csv``) and plain
lists (Lakh genre files, Speech Commands' split lists). Every source reads them here, so that a
row cut short, a missing column, a blank row or a file in a code page gets the same one-line
answer naming the file, the line and the fix, whichever dataset it belongs to.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Optional

from ..discover import shown

_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def text_encoding(raw: bytes) -> str:
    """The encoding of a text file as spreadsheets write them: a byte-order mark (UTF-8, UTF-16,
    UTF-32: Excel's "CSV UTF-8" and "Unicode Text"), UTF-16 without one (every other byte NUL),
    else UTF-8."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name
    head = raw[:1000]
    if len(head) >= 4 and head.count(0) >= len(head) // 3:
        return "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
    return "utf-8"


def read_text(path: Path, encoding: Optional[str] = "auto", option: Optional[str] = None) -> str:
    """The text of ``path``, decoded as :func:`text_encoding` detects (``encoding="auto"``) or
    as ``encoding``, without a byte-order mark. Raises ``ValueError`` naming the file, line and
    byte when it cannot be decoded; ``option`` is the command-line option that gives another
    encoding, when the source has one (``--encoding``)."""
    raw = path.read_bytes()
    name = text_encoding(raw) if encoding in ("auto", "", None) else encoding
    try:
        text = raw.decode(name)
    except LookupError:
        raise ValueError(f"{option or 'encoding'} {encoding!r} is not an encoding Python knows "
                         f"(e.g. utf-8, utf-16, cp1252, latin-1, mac_roman)") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        fix = (f" or give its encoding with {option}, e.g. cp1252 (Windows, Western Europe) or "
               f"mac_roman" if option else "")
        raise ValueError(f"{shown(path)}:{line}: not {name} text (byte 0x{raw[e.start]:02x}); save it as "
                         f"UTF-8 (Excel: 'CSV UTF-8'){fix}") from None
    return text.lstrip("\ufeff")


class Row(dict):
    """A CSV row, column -> value (``None`` for a column the row is too short to hold), that
    knows its ``line`` in the file (the last, for a row whose quoted field spans lines)."""
    line = 0


def _blank(values: dict) -> bool:
    fields = [v for k, v in values.items() if k is not None] + list(values.get(None) or [])
    return not any(v and v.strip() for v in fields)


def read_table(path: Path, encoding: Optional[str] = "auto",
               option: Optional[str] = None) -> tuple[list[str], list[Row]]:
    """``(header, rows)`` of a CSV file as spreadsheets save it: any encoding of
    :func:`read_text`, and the delimiter of its header line (``,``, ``;`` as in European
    locales, tab, ``|``, or Excel's ``sep=X`` line). Blank rows (empty lines, lines of spaces,
    rows of empty cells such as ``,,,``) are left out. Each :class:`Row` knows its line, for
    messages. Raises ``ValueError`` naming the file and line: when it cannot be decoded (and the
    encoding to use), or is not CSV there."""
    text = read_text(path, encoding, option)
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first.count) if any(c in first for c in ",;\t|") else ","
    hint, skipped = first.strip().lower(), 0
    if len(hint) == 5 and hint.startswith("sep="):         # Excel's "sep=;" line before the header
        delimiter, text = first.strip()[4], text.split("\n", 1)[1] if "\n" in text else ""
        skipped = 1
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, done = [], 0
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        done = reader.line_num + skipped
        for values in reader:
            done = reader.line_num + skipped
            if _blank(values):
                continue
            row = Row(values)
            row.line = done
            rows.append(row)
    except csv.Error as e:
        raise ValueError(f"{shown(path)}:{done + 1}: {e}; a field that starts with a quote (\") and never "
                         f"closes it takes in the lines after it") from None
    return header, rows


def read_manifest(path: Path, required: tuple[str, ...], encoding: Optional[str] = "auto",
                  option: Optional[str] = None, hint: str = "") -> tuple[list[str], list[Row]]:
    """:func:`read_table`, checked and cleaned for a source: every column of ``required`` is in
    the header, every row gives each of them a value that is not empty, and no row holds a value
    past the header's last column. Values come stripped, ``""`` for a column a row is too short
    to reach; empty fields past the header (spreadsheets end rows in delimiters: ``a.wav,x,,``)
    hold nothing and are left out. Raises ``ValueError`` naming the file, the line and what to
    give: a missing column (``hint`` is added, e.g. the option that names another column), a row
    cut short, a value past the header (most often a value holding the delimiter, unquoted), an
    empty required value, or no rows."""
    header, rows = read_table(path, encoding, option)
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{shown(path)}: no column {missing[0]!r} (columns: {', '.join(header) or 'none'})"
                         + (f"; expected {', '.join(required)}" if len(required) > 1 else "") + hint)
    names = [repr(c) for c in required]
    wanted = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    for row in rows:
        where = f"{shown(path)}:{row.line}: "
        if any(row[c] is None for c in required):
            n = sum(v is not None for k, v in row.items() if k is not None)
            raise ValueError(f"{where}{n} field{'s' * (n != 1)}, the header has {len(header)} "
                             f"({', '.join(header)}); give each row a value for {wanted}")
        past = row.pop(None, None) or []
        values = [v.strip() for v in past if v.strip()]
        if values:
            n = len(header) + len(past)
            raise ValueError(f"{where}{n} fields, the header has {len(header)} ({', '.join(header)}); "
                             f"{values[0]!r} is past its last column: quote a value that holds the "
                             f"delimiter (\"a, b\"), or name the column in the header")
        for column, value in row.items():
            row[column] = (value or "").strip()
        empty = [c for c in required if not row[c]]
        if empty:
            raise ValueError(f"{where}empty {empty[0]!r}; give each row a value for {wanted}")
    if not rows:
        raise ValueError(f"{shown(path)}: no rows below its header")
    return header, rows


def whole_number(row: Row, column: str, path: Path) -> Optional[int]:
    """``row[column]`` (a :func:`read_manifest` row) as an int, ``None`` when empty; ``ValueError``
    naming the file, line and value when it is not a whole number."""
    value = row.get(column) or ""
    if not value:
        return None
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ValueError(f"{shown(path)}:{row.line}: {column!r} must be a whole number, got {value!r}")
    return int(value)
