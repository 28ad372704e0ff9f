"""The built-in folk dataset: ABC -> MIDI conversion, selection, splits, determinism."""
import csv
import json

import pytest
import symusic

from data_prep import folk
from data_prep.abc_midi import TICKS_PER_QUARTER, convert_tune, letter_key, tune_notes
from data_prep.folk import build_folk, split_tunes

CLASSES = list(folk.DEFAULT_CLASSES)


def test_tune_notes_repeats_ties_tuplets_chords_graces():
    abc = ('X:1\nT:t\nM:2/4\nL:1/8\nK:G\n'
           '|: GA B>c | d2-d2 |1 e2 e2 :|2 (3fga [ceg]2 || {ab}B2 z2 "Am"c2 |]\n')
    notes, length = tune_notes(abc)
    q = 480
    played = [(67, 0, q // 2), (69, q // 2, q // 2), (71, q, 3 * q // 4), (72, 7 * q // 4, q // 4),
              (74, 2 * q, 2 * q),                                   # tied d2-d2: one note
              (76, 4 * q, q), (76, 5 * q, q),                       # first ending
              (67, 6 * q, q // 2), (69, 13 * q // 2, q // 2), (71, 7 * q, 3 * q // 4),
              (72, 31 * q // 4, q // 4), (74, 8 * q, 2 * q),        # the repeat
              (78, 10 * q, q // 3), (79, 10 * q + q // 3, q // 3), (81, 10 * q + 2 * q // 3, q // 3),
              (72, 11 * q, q), (76, 11 * q, q), (79, 11 * q, q),    # chord; grace notes dropped
              (71, 12 * q, q), (72, 14 * q, q)]                     # rest; chord symbol silent
    assert sorted(notes) == sorted((s, d, p) for p, s, d in played)
    assert length == 15 * q


def test_first_voice_only_and_default_unit():
    abc = "X:1\nT:two voices\nM:C\nL:1/4\nK:C\n[V:1] cdef|\n[V:2] CDEF|\nV:1\ngabc'|\nV:2\nGABc|\n"
    assert [p for _, _, p in tune_notes(abc)[0]] == [72, 74, 76, 77, 79, 81, 83, 84]
    assert tune_notes("X:1\nT:no unit\nK:C\nabcd\n")[0][0] == (0, 240, 81)    # L:1/8


@pytest.mark.parametrize("abc, reason", [
    ("X:1\nT:a\nL:1/0\nK:C\nabcdefgabc|\n", "ZeroDivisionError"),
    ("X:1\nT:a\nM:4/4\nL:1/8\nK:C\nab/0cdefgab|\n", "ZeroDivisionError"),
    ("X:1\nT:short\nL:1/8\nK:C\nabc|\n", "too short"),
    ("X:1\nT:rests\nL:1/8\nK:C\nz8|z8|\n", "too short"),
])
def test_bad_tunes_are_reported_not_raised(abc, reason):
    data, info = convert_tune(abc)
    assert data is None and reason in info["reason"]


def test_midi_of_a_tune():
    data, info = convert_tune("X:1\nT:t\nM:3/4\nL:1/8\nK:D\nfed cBA|d2 f2 a2|fed cBA|d6|]\n", "3/4")
    score = symusic.Score.from_midi(data)
    assert score.tpq == TICKS_PER_QUARTER and score.tempos[0].qpm == pytest.approx(120)
    assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
    notes = score.tracks[0].notes
    assert [n.pitch for n in notes][:3] == [78, 76, 74] and {n.velocity for n in notes} == {80}
    assert info["n_notes"] == 16 and info["beats"] == 12


def test_split_tunes_ids_and_header():
    text = "% a book\nL:1/16\n\nX: 1\nT:One\nK:C\nabcd|\n\nX:1\nT:One again\nK:C\nefga|\n"
    tunes = split_tunes(text, "book/b1.abc", "scottish")
    assert [t.tune_id for t in tunes] == ["b1_X1", "b1_X1_2"]
    assert "L:1/16" in tunes[0].abc and tunes[1].fields["T"] == "One again"
    assert letter_key(tunes[0].abc) != letter_key(tunes[1].abc)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_is_deterministic_split_by_tune_and_deduplicated(tmp_path):
    a = build_folk(tmp_path / "a", per_class=12, classes=CLASSES, workers=2, progress=False)
    b = build_folk(tmp_path / "b", per_class=12, classes=CLASSES, workers=1, progress=False)
    assert _files(a) == _files(b)                                      # byte-identical
    with open(a / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["path", "label", "split", "tune_id"]
    assert {r["label"] for r in rows} == set(CLASSES) and len(rows) == 12 * len(CLASSES)
    for label in CLASSES:
        splits = [r["split"] for r in rows if r["label"] == label]
        assert set(splits) == {"train", "valid", "test"} and splits.count("train") >= 7
    groups = {}
    for r in rows:                                     # one title, one split
        assert groups.setdefault(r["group"], r["split"]) == r["split"]
        assert (a / r["path"]).read_bytes()[:4] == b"MThd"
    keys = [letter_key(t.abc) for t in _tunes_of(rows)]
    assert len(set(keys)) == len(keys)
    report = json.loads((a / "folk.json").read_text())
    assert report["request"]["per_class"] == 12
    assert all(report["built"][c]["written"] == 12 for c in CLASSES)


def _tunes_of(rows):
    wanted = {(r["label"], r["tune_id"]) for r in rows}
    tunes = folk.list_tunes(sorted({r["label"] for r in rows}))
    return [t for ts in tunes.values() for t in ts if (t.label, t.tune_id) in wanted]


def test_build_up_to_date_rebuild_and_refusal(tmp_path):
    root = build_folk(tmp_path / "f", per_class=3, classes=["chinese", "irish"], progress=False)
    stamp = (root / "manifest.csv").stat().st_mtime_ns
    build_folk(root, per_class=3, classes=["chinese", "irish"], progress=False)
    assert (root / "manifest.csv").stat().st_mtime_ns == stamp           # up to date: untouched
    build_folk(root, per_class=4, classes=["chinese", "irish"], progress=False)
    assert len((root / "manifest.csv").read_text().splitlines()) == 1 + 8
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("my files")
    with pytest.raises(ValueError, match="not empty"):
        build_folk(other, per_class=3, classes=["chinese", "irish"], progress=False)
    assert (other / "notes.txt").exists()
    with pytest.raises(ValueError, match="unknown folk class"):
        build_folk(tmp_path / "g", per_class=3, classes=["chinese", "martian"], progress=False)


def test_failing_tunes_are_skipped_and_counted(monkeypatch, tmp_path):
    real = folk.convert_tune

    def flaky(abc, meter=""):                 # what music21's stream export used to do
        if sum(abc.encode()) % 3 == 0:
            return None, {"reason": "StreamException: the object (<TimeSignature 2/4>) is "
                                    "already found in this Stream"}
        return real(abc, meter)

    monkeypatch.setattr(folk, "convert_tune", flaky)
    root = build_folk(tmp_path / "f", per_class=5, classes=["chinese", "german"], workers=1, progress=False)
    built = json.loads((root / "folk.json").read_text())["built"]
    failed = sum(built[c]["failed"] for c in ("chinese", "german"))
    assert failed >= 1 and built["chinese"]["written"] == built["german"]["written"] == 5
    assert all(r == "StreamException" for c in ("chinese", "german") for r in built[c]["reasons"])


def test_a_second_folk_build_of_one_root_is_refused_and_a_rebuild_swaps(tmp_path):
    from data_prep.cache_files import CacheLock

    root = tmp_path / "f"
    with CacheLock(root):                                    # another build holds the root
        with pytest.raises(ValueError, match=r"f is being built by pid \d+ on host"):
            build_folk(root, per_class=3, classes=["chinese", "irish"], progress=False)
    assert not root.exists() and not (tmp_path / "f.partial").exists()
    build_folk(root, per_class=3, classes=["chinese", "irish"], progress=False)
    before = (root / "manifest.csv").read_text()
    build_folk(root, per_class=4, classes=["chinese", "irish"], progress=False)   # rebuilt by a swap
    assert (root / "manifest.csv").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.lock"]
