"""The built-in polyphony dataset: score -> notes, excerpts, works as groups, selection, determinism."""
import csv
import json

import pytest
import symusic

from data_prep import polyphony
from data_prep.__main__ import main
from data_prep.midi_file import TICKS_PER_QUARTER
from data_prep.polyphony import build_polyphony, list_pieces, work_of
from data_prep.score_excerpts import excerpts, score_notes

# a few small scores of two classes (the real classes parse for minutes)
SMALL = {"bach": [f"bach/bwv{n}.mxl" for n in range(250, 255)],
         "palestrina": [f"palestrina/Agnus_0{n}.krn" for n in range(1, 6)]}
Q = TICKS_PER_QUARTER


def test_score_notes_all_voices_chords_ties_no_graces(tmp_path):
    krn = tmp_path / "two.krn"          # Humdrum: two voices, a tie, a chord, a grace note, a rest
    krn.write_text("**kern\t**kern\n*M4/4\t*M4/4\n=1\t=1\n8qa\t.\n4c\t[2e\n4d\t.\n2g\t2e]\n"
                   "=2\t=2\n1CC 1GG\t1r\n*-\t*-\n")
    assert score_notes(krn) == [(0, Q, 60), (0, 4 * Q, 64), (Q, Q, 62), (2 * Q, 2 * Q, 67),
                                (4 * Q, 4 * Q, 36), (4 * Q, 4 * Q, 43)]


def test_excerpts_whole_windows_cut_notes_and_spread():
    notes = [(k * Q // 2, Q // 2, 60 + k % 5) for k in range(80)]            # 40 beats of eighths
    notes.append((6 * Q, 4 * Q, 40))                                          # held across beat 8
    windows = excerpts(notes, 8, per_piece=10)
    assert [start for start, _ in windows] == [0, 8, 16, 24, 32]              # no partial window
    first, second = windows[0][1], windows[1][1]
    assert (6 * Q, 2 * Q, 40) in first and (0, 2 * Q, 40) in second          # cut at the edge
    assert all(0 <= s and s + d <= 8 * Q for s, d, _ in first)
    assert [s for s, _ in excerpts(notes, 8, per_piece=3)] == [0, 16, 32]    # evenly spaced
    assert [s for s, _ in excerpts(notes, 8, per_piece=1)] == [16]
    sparse = [(0, 8 * Q, 60)] * 3 + notes[16:]                                # 3 onsets in beats 0-8
    assert [s for s, _ in excerpts(sparse, 8, per_piece=10)][0] == 8


def test_works_group_related_scores():
    assert work_of("palestrina", "palestrina/Agnus_01.krn", "!!!OPR: Missa Brevis\n") == "palestrina:Missa Brevis"
    assert work_of("bach", "bach/bwv248.23-2.mxl") == work_of("bach", "bach/bwv248.9-s.mxl") == "bach:bwv248"
    assert work_of("quartet", "haydn/opus74no1/movement2.mxl") == "quartet:haydn/opus74no1"
    assert work_of("quartet", "beethoven/opus132.mxl") == "quartet:opus132"
    assert work_of("trecento", "trecento/PMFC_04-Cara mi donna.xml") == "trecento:PMFC_04-Cara mi donna"


def test_every_default_class_has_scores_and_unique_ids():
    pieces = list_pieces(polyphony.DEFAULT_CLASSES)
    assert all(len(ps) >= 40 for ps in pieces.values())
    assert "bach/bwv846.mxl" not in {p.source for p in pieces["bach"]}       # a prelude, not a chorale
    assert len({p.group for p in pieces["palestrina"]}) < len(pieces["palestrina"])   # masses
    for ps in pieces.values():
        assert len({p.piece_id for p in ps}) == len(ps)
    with pytest.raises(ValueError, match="unknown polyphony class 'jazz'"):
        list_pieces(["bach", "jazz"])


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root):
    with open(root / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_build_is_deterministic_balanced_and_split_by_work(tmp_path, monkeypatch):
    kw = dict(per_class=9, per_piece=2, excerpt_beats=16, classes=list(SMALL), collections=SMALL,
              progress=False)
    a = build_polyphony(tmp_path / "a", workers=2, **kw)
    b = build_polyphony(tmp_path / "b", workers=1, **kw)
    assert _files(a) == _files(b)                                       # byte-identical
    rows = _rows(a)
    assert list(rows[0]) == list(polyphony.MANIFEST_FIELDS)
    assert {lab: sum(r["label"] == lab for r in rows) for lab in SMALL} == {"bach": 9, "palestrina": 9}
    for lab in SMALL:                                                   # every split, one work in one
        splits = {r["group"]: set() for r in rows if r["label"] == lab}
        for r in rows:
            if r["label"] == lab:
                splits[r["group"]].add(r["split"])
        assert all(len(s) == 1 for s in splits.values())
        assert set().union(*splits.values()) == {"train", "valid", "test"}
    folds = {}
    for r in rows:
        folds.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds.values()) and set().union(*folds.values()) <= set("12345")
    score = symusic.Score.from_midi((a / rows[0]["path"]).read_bytes())
    assert score.tpq == Q and score.tempos[0].qpm == pytest.approx(120) and len(score.tracks) == 1
    notes = score.tracks[0].notes
    assert {n.velocity for n in notes} == {80} and max(n.time + n.duration for n in notes) <= 16 * Q
    assert len({n.pitch for n in notes}) > 4                            # all the voices
    report = json.loads((a / "polyphony.json").read_text())
    assert report["built"]["bach"]["excerpts"] == 9 and report["request"]["excerpt_beats"] == 16
    assert build_polyphony(a, workers=1, **kw) == a and _files(a) == _files(b)     # up to date: kept
    # other excerpt settings reuse the converted scores in pieces/: nothing is parsed again
    monkeypatch.setattr(polyphony, "score_notes", lambda path: pytest.fail(f"parsed {path} again"))
    build_polyphony(a, workers=1, **{**kw, "per_piece": 1, "per_class": 20})
    rows = _rows(a)
    assert all(sum(r["piece"] == p for r in rows) == 1 for p in {r["piece"] for r in rows})
    assert sum(r["label"] == "bach" for r in rows) == sum(r["label"] == "palestrina" for r in rows) == 5


def test_an_interrupted_build_resumes_from_its_converted_scores(tmp_path, monkeypatch):
    kw = dict(per_class=4, per_piece=2, excerpt_beats=16, classes=list(SMALL), collections=SMALL,
              workers=1, progress=False)
    real, parsed = polyphony.score_notes, []

    def stop_after_one(path):
        if parsed:
            raise KeyboardInterrupt
        parsed.append(str(path))
        return real(path)

    monkeypatch.setattr(polyphony, "score_notes", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        build_polyphony(tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()
    assert len(list((tmp_path / "r.partial" / "pieces").rglob("*.mid"))) == 1        # the work done is kept
    again = []
    monkeypatch.setattr(polyphony, "score_notes", lambda path: again.append(str(path)) or real(path))
    resumed = build_polyphony(tmp_path / "r", **kw)
    assert parsed[0] not in again and again                                          # not parsed twice
    monkeypatch.setattr(polyphony, "score_notes", real)
    assert _files(resumed) == _files(build_polyphony(tmp_path / "fresh", **kw))      # the same result
    assert not (tmp_path / "r.partial").exists()


def test_bad_folders_and_settings_are_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no polyphony dataset"):
        build_polyphony(tmp_path / "mine", classes=list(SMALL), collections=SMALL, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="at least two classes"):
        build_polyphony(tmp_path / "x", classes=["bach"], progress=False)


def test_source_lists_a_folder_built_elsewhere_and_the_cli_builds_a_cache(tmp_path, capsys):
    root = build_polyphony(tmp_path / "midi", per_class=4, per_piece=2, excerpt_beats=16, classes=list(SMALL),
                           collections=SMALL, workers=1, progress=False)
    (root / "polyphony.json").unlink()            # as if built by another tool: listed as it is
    assert main(["polyphony", "--root", str(root), "--out", str(tmp_path / "cache"), "--workers", "1",
                 "--quiet"]) == 0
    assert "listing" in capsys.readouterr().err
    from data_prep import open_cache

    cache = open_cache(tmp_path / "cache")
    assert len(cache) == 8 and cache.meta["features"]["beat_resolution"] == 4
    assert all(it.group.startswith(it.label + ":") and it.fold in range(1, 6) for it in cache.items)
    assert max(it.frames for it in cache.items) <= 64                  # 16 beats x 4 frames
