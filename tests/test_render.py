"""python -m data_prep render: MIDI dataset -> audio dataset (pitch, labels, splits, resume)."""
import csv
import importlib.util
import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from data_prep import prepare
from data_prep.__main__ import main
from data_prep.render import instrument_name, parse_programs, render_dataset, render_midi

SR = 16000


def melody(path, pitches, seconds=0.4, program=0):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(90, p, k * seconds, (k + 1) * seconds) for k, p in enumerate(pitches)]
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def folk_like(root):
    """A MIDI dataset in the folk layout: ROOT/<label>/<tune>.mid + manifest.csv with splits."""
    rows = []
    for label, base in (("irish", 62), ("chinese", 67)):
        for k, split in enumerate(("train", "train", "valid", "test")):
            melody(root / label / f"tune{k}_X1.mid", [base + k, base + 2, base + 4, base + 5])
            rows.append({"path": f"{label}/tune{k}_X1.mid", "label": label, "split": split,
                         "tune_id": f"tune{k}_X1"})
    (root / "irish" / "broken_X9.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    rows.append({"path": "irish/broken_X9.mid", "label": "irish", "split": "train", "tune_id": "broken_X9"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "split", "tune_id"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def pitch_of(audio, sr=SR):
    spectrum = np.abs(np.fft.rfft(audio[: sr // 2] * np.hanning(sr // 2)))
    return 69 + 12 * np.log2(np.argmax(spectrum) * 2 / 440)      # bins of 2 Hz


def test_programs_by_number_and_name():
    assert parse_programs("0,40,flute,trumpet") == [0, 40, 73, 56]
    assert parse_programs("nylon") == [24] and instrument_name(40) == "violin"
    with pytest.raises(ValueError, match="matches"):
        parse_programs("piano")
    with pytest.raises(ValueError, match="twice"):
        parse_programs("40,violin")


@pytest.mark.parametrize("program", [0, 40, 73])
def test_rendered_pitch_is_the_midi_pitch(tmp_path, program):
    """The soundfont's samples are played at the right pitch for the program (A4 = 440 Hz)."""
    path = melody(tmp_path / "a.mid", [69], seconds=1.0)
    audio = render_midi(path, sample_rate=SR, program=program)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), rel=1e-3)
    assert abs(pitch_of(audio) - 69) < 0.5


def test_render_options_and_bad_inputs(tmp_path):
    path = melody(tmp_path / "m.mid", [60, 64, 67, 72], seconds=0.5)
    short = render_midi(path, sample_rate=SR, max_seconds=0.75)
    assert len(short) == int(0.75 * SR)
    piano, violin = render_midi(path, sample_rate=SR, program=0), render_midi(path, sample_rate=SR, program=40)
    assert not np.allclose(piano[:SR], violin[:SR])
    np.testing.assert_array_equal(render_midi(path, sample_rate=SR), render_midi(path, sample_rate=SR))
    with pytest.raises(ValueError, match="not a MIDI file"):
        render_midi(b"RIFF....WAVEfmt ", sample_rate=SR)
    late = pretty_midi.PrettyMIDI(str(path))
    for note in late.instruments[0].notes:
        note.start, note.end = note.start + 2, note.end + 2
    with pytest.raises(ValueError, match="no notes to render in the first 1 s"):
        render_midi(late, sample_rate=SR, max_seconds=1)
    with pytest.raises(ValueError, match="soundfont"):
        render_midi(path, tmp_path / "missing.sf2", sample_rate=SR)


def test_render_cli_labels_splits_resume_and_settings(tmp_path):
    root = folk_like(tmp_path / "midi")
    out = tmp_path / "audio"
    args = ["render", "--root", str(root), "--out", str(out), "--sample-rate", str(SR), "--workers", "2",
            "--quiet"]
    assert main(args) == 0
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["label"] for r in rows} == {"irish", "chinese"}
    assert {r["path"]: r["split"] for r in rows}["irish/tune2_X1.wav"] == "valid"
    report = json.loads((out / "render.json").read_text())
    assert [f["source"] for f in report["failed"]] == ["irish/broken_X9.mid"]
    info = sf.info(str(out / "irish/tune0_X1.wav"))
    assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
    first = {p.name: p.read_bytes() for p in sorted(out.rglob("*.wav"))}
    (out / "chinese/tune3_X1.wav").unlink()                     # an interrupted run
    render_dataset(root, out, sample_rate=SR, workers=1, progress=False)
    again = {p.name: p.read_bytes() for p in sorted(out.rglob("*.wav"))}
    assert again == first                                        # resumed, deterministic
    assert json.loads((out / "render.json").read_text())["this_run"] == 1
    assert main([*args[:-1], "--sample-rate", "22050", "--quiet"]) == 1   # other settings: refused
    assert main([*args, "--max-seconds", "1", "--force"]) == 0
    assert max(float(r["seconds"]) for r in csv.DictReader(open(out / "manifest.csv"))) <= 1.0


def test_render_cli_bad_program_is_an_argument_error(tmp_path, capsys):
    args = ["render", "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    for bad in (["--programs", "violin,kazoo"], ["--program", "violin,flute"]):
        with pytest.raises(SystemExit) as exit:
            main([*args, *bad])
        assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "kazoo" in err and "--program takes one program" in err
    assert not (tmp_path / "out").exists()


def test_instrument_dataset_is_one_command_away(tmp_path):
    root = folk_like(tmp_path / "midi")
    out = tmp_path / "instruments"
    summary = render_dataset(root, out, programs=parse_programs("violin,flute,acoustic_grand_piano"),
                             sample_rate=SR, max_seconds=1.0, workers=2, progress=False)
    assert summary["rendered"] == 24
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == {"violin", "flute", "acoustic_grand_piano"}
    assert (out / "violin" / "irish__tune0_X1.wav").exists()
    by_group = {}
    for r in rows:                           # one tune: one split, whatever the instrument
        assert by_group.setdefault(r["group"], r["split"]) == r["split"]
    cache = prepare("csv", out / "manifest.csv", tmp_path / "cache",
                    {"kind": "logmel", "sample_rate": SR, "n_fft": 512, "hop_length": 256, "n_mels": 32},
                    workers=1, progress=False)
    assert len(cache) == 24 and cache.classes == ["acoustic_grand_piano", "flute", "violin"]


@pytest.mark.skipif(importlib.util.find_spec("fluidsynth") is None, reason="pyfluidsynth not installed")
def test_fluidsynth_when_present(tmp_path):
    path = melody(tmp_path / "a.mid", [69], seconds=1.0)
    try:
        audio = render_midi(path, sample_rate=SR, program=40, synth="fluidsynth")
    except ValueError as e:                  # the Python package without the C library
        pytest.skip(str(e))
    assert abs(pitch_of(audio) - 69) < 0.5


def test_a_second_render_of_one_out_is_refused(tmp_path):
    from data_prep.cache_files import CacheLock

    root = tmp_path / "midi"
    from fixtures import write_midi
    write_midi(root / "a" / "x.mid", 60, seconds=1.0)
    out = tmp_path / "audio"
    with CacheLock(out):                                      # another render holds it
        with pytest.raises(ValueError, match=r"audio is being rendered by pid \d+"):
            render_dataset(root, out, sample_rate=SR, workers=1, progress=False)
    assert not out.exists()
