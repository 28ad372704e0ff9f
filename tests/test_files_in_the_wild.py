"""Dataset folders as people have them: odd names, OS leftovers, unlisted and misnamed formats,
header-size faults, spreadsheet encodings, MIDI timing variants. Every file is prepared, skipped
with a reason, or ignored; inputs are built here, in temporary folders."""
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from data_prep import extract_file, open_cache, prepare
from data_prep.audio import load_audio
from data_prep.discover import classify, is_leftover, sniff, text_name
from data_prep.midi import pianoroll_file
from data_prep.config import PianoRollFeatures

SR = 8000
FEATURES = {"sample_rate": SR, "n_fft": 256, "hop_length": 128, "n_mels": 16}
CLI_FEATURES = ["--sample-rate", str(SR), "--n-fft", "256", "--hop-length", "128", "--n-mels", "16"]


def wav_bytes(seconds=0.25, freq=440.0, fmt="WAV", subtype="PCM_16", channels=1) -> bytes:
    t = np.arange(int(SR * seconds)) / SR
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, 1) if channels > 1 else x, SR, format=fmt, subtype=subtype)
    return buf.getvalue()


def m4a_bytes(seconds=0.25, container_format="ipod", codec="aac") -> bytes:
    """Audio encoded by FFmpeg (PyAV): AAC in an M4A container by default."""
    av = pytest.importorskip("av")
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        sample_format = stream.codec_context.format.name
        samples = (x * 32767).astype(np.int16) if sample_format.startswith("s16") else x
        if sample_format.startswith("s32"):
            samples = (x * 2**31).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(samples[None], format=sample_format, layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


def midi_bytes(notes=((60, 0, 480), (64, 480, 960)), ticks_per_beat=480, tempo=500_000) -> bytes:
    mf = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    mf.tracks.append(track)
    events = [(0, mido.MetaMessage("set_tempo", tempo=tempo))]
    for pitch, start, end in notes:
        events += [(start, mido.Message("note_on", note=pitch, velocity=100)),
                   (end, mido.Message("note_off", note=pitch, velocity=0))]
    now = 0
    for at, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=at - now))
        now = at
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def put(root: Path, rel, data: bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), rel if isinstance(rel, bytes) else os.fsencode(rel))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4000)


def wild_root(root: Path) -> dict:
    """A class-folder root with every kind of file; returns what should become of each."""
    good = wav_bytes()
    for cls in ("birds", "cars"):
        for i in range(2):
            put(root, f"{cls}/{i}.wav", wav_bytes(freq=300 + 100 * i))
    items = {f"{c}/{i}.wav" for c in ("birds", "cars") for i in range(2)}
    put(root, b"birds/caf\xe9_take1.wav", good)                            # not UTF-8 (Latin-1)
    put(root, "birds/Take 3 – ünï.WAV", good)                              # UTF-8, upper-case suffix
    put(root, "birds/take2.wave", good)                                     # unlisted extension
    put(root, "birds/field recording", good)                                # no extension at all
    put(root, "cars/engine.aifc.bak", wav_bytes(fmt="AIFF"))               # misnamed: content decides
    put(root, "cars/horn.flac", wav_bytes(fmt="FLAC"))
    items |= {"birds/caf\\xe9_take1.wav", "birds/Take 3 – ünï.WAV", "birds/take2.wave",
              "birds/field recording", "cars/engine.aifc.bak", "cars/horn.flac"}
    skipped = {
        "README.txt": "not in a class folder",
        "cars/cover.jpg": "not audio (a JPEG image)",
        "cars/notes.md": "not audio (text)",
        "cars/song.mid": "a MIDI file: add --kind pianoroll",
        "cars/data.bin": "not audio: content of unknown format",
        "cars/bad.wav": "not a readable audio file (it is text",
    }
    put(root, "README.txt", b"recorded in 2019\n")
    put(root, "cars/cover.jpg", b"\xff\xd8\xff\xe0" + bytes(200))
    put(root, "cars/notes.md", "# Notizen über Autos\n".encode())
    put(root, "cars/song.mid", midi_bytes())
    put(root, "cars/data.bin", bytes(range(256)) * 4)
    put(root, "cars/bad.wav", b"this is not a wav file\n")
    ignored = {"__MACOSX/birds/._0.wav", "birds/._1.wav", ".DS_Store", "cars/Thumbs.db",
               "birds/desktop.ini", ".hidden/x.wav", "cars/.git/config", "$RECYCLE.BIN/x.wav",
               "cars/~$notes.docx"}
    for rel in ignored:
        put(root, rel, APPLEDOUBLE if "._" in rel else good if rel.endswith(".wav") else b"x")
    return {"items": items, "skipped": skipped, "ignored": ignored}


def test_every_file_is_prepared_skipped_or_ignored(tmp_path):
    expected = wild_root(tmp_path / "data")
    cache = prepare("folder", tmp_path / "data", tmp_path / "cache", FEATURES, workers=1, progress=False)
    assert {it.source for it in cache.items} == expected["items"]
    reasons = {f["source"]: f["reason"] for f in cache.failures}
    assert set(reasons) == set(expected["skipped"])
    for source, reason in expected["skipped"].items():
        assert reason in reasons[source], (source, reasons[source])
    assert cache.meta["ignored"]["count"] == len(expected["ignored"])
    assert set(cache.meta["ignored"]["examples"]) == expected["ignored"]
    n_files = sum(len(files) for _, _, files in os.walk(tmp_path / "data"))
    assert len(cache) + len(cache.failures) + cache.meta["ignored"]["count"] == n_files
    assert cache.classes == ["birds", "cars"]
    latin1 = next(it for it in cache.items if it.source == "birds/caf\\xe9_take1.wav")
    assert latin1.id == "birds/caf\\xe9_take1" and latin1.label == "birds"
    with open(tmp_path / "cache" / "manifest.csv", encoding="utf-8") as fh:   # valid UTF-8 text
        assert "caf\\xe9_take1" in fh.read()


def test_cli_summary_and_exit_status_say_what_happened(tmp_path):
    wild_root(tmp_path / "data")
    base = [sys.executable, "-m", "data_prep", "folder", "--root", str(tmp_path / "data"),
            "--workers", "2", *CLI_FEATURES]
    run = subprocess.run(base + ["--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr                          # complete, some files skipped
    assert "10 items prepared, 6 files skipped, 9 ignored" in run.stderr
    assert "cars/cover.jpg: not audio (a JPEG image)" in run.stderr
    assert "Traceback" not in run.stderr
    again = subprocess.run(base + ["--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert again.returncode == 3 and "up to date" in again.stderr and "6 skipped, 9 ignored" in again.stderr
    clean = tmp_path / "clean"
    for i in range(2):
        put(clean, f"a/{i}.wav", wav_bytes())
        put(clean, f"b/{i}.wav", wav_bytes(freq=600))
    put(clean, "__MACOSX/a/._0.wav", APPLEDOUBLE)
    put(clean, ".DS_Store", b"\0\0\0\1Bud1")
    run = subprocess.run(base[:5] + [str(clean), "--out", str(tmp_path / "c2"), *base[6:]],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr                          # leftovers do not count as skips
    assert "4 items prepared, 0 files skipped, 2 ignored" in run.stderr


@pytest.mark.parametrize("leftover", ["__MACOSX/train/dog/._1.wav", "train/dog/._1.wav", ".DS_Store",
                                      "Thumbs.db", "train/desktop.ini", ".Trashes/501/x.wav"])
def test_split_layout_survives_os_leftovers_and_odd_names(tmp_path, leftover):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("dog", "cat"):
            for i in range(2):
                put(root, f"{split}/{cls}/{i}.wav", wav_bytes(freq=200 + 50 * i))
    put(root, b"train/cat/\xe9t\xe9.wav", wav_bytes())                  # a Latin-1 name in a split layout
    put(root, leftover, APPLEDOUBLE)
    out = tmp_path / "cache"
    cache = prepare("folder", root, out, FEATURES, workers=1, progress=False)
    assert cache.classes == ["cat", "dog"] and cache.meta["splits"] == {"test": 4, "train": 5}
    assert cache.failures == [] and cache.meta["ignored"]["count"] == 1
    again = prepare("folder", root, out, FEATURES, workers=1, progress=False)     # not stuck
    assert len(again) == 9


def test_discovery_rule():
    assert all(is_leftover(Path(p)) for p in ("__MACOSX/a/x.wav", "a/._x.wav", ".DS_Store", "a/Thumbs.db",
                                              "a/DESKTOP.INI", ".git/HEAD", "a/.ipynb_checkpoints/x.wav",
                                              "System Volume Information/x", "a/~$book.xlsx"))
    assert not any(is_leftover(Path(p)) for p in ("a/x.wav", "a/_x.wav", "a/x..wav", "macosx/x.wav"))
    assert sniff(wav_bytes())[0] == "audio" and sniff(wav_bytes(fmt="FLAC"))[0] == "audio"
    assert sniff(b"MThd\0\0\0\6")[0] == "midi" and sniff(b"RIFF\0\0\0\0RMIDdata")[0] == "midi"
    assert sniff(b"\x00\x05\x16\x07" + bytes(20)) == ("other", "AppleDouble metadata")
    assert sniff("path,label\n".encode("utf-16")) == ("other", "text")
    assert sniff(b"") == ("other", "an empty file (0 bytes)")
    assert text_name(os.fsdecode(b"caf\xe9")) == "caf\\xe9" and text_name("café") == "café"


def test_midi_roots_find_midi_by_content(tmp_path):
    root = tmp_path / "midi"
    for cls, base in (("low", 40), ("high", 70)):
        put(root, f"{cls}/a.mid", midi_bytes(((base, 0, 480),)))
        put(root, f"{cls}/b.MID", midi_bytes(((base + 2, 0, 480),)))
    put(root, "high/exported_from_daw", midi_bytes(((75, 0, 960),)))          # no extension
    put(root, "low/old.rmi", b"RIFF" + struct.pack("<I", 0) + b"RMID" + b"data"
        + struct.pack("<I", len(midi_bytes())) + midi_bytes())
    put(root, "low/take.wav", wav_bytes())
    put(root, "low/._a.mid", APPLEDOUBLE)
    cache = prepare("folder", root, tmp_path / "c", {"kind": "pianoroll", "fs": 10}, workers=1, progress=False)
    assert {it.source for it in cache.items} == {"low/a.mid", "low/b.MID", "high/a.mid", "high/b.MID",
                                                    "high/exported_from_daw", "low/old.rmi"}
    assert [f["source"] for f in cache.failures] == ["low/take.wav"]
    assert "WAV audio, not MIDI: choose an audio --kind" in cache.failures[0]["reason"]
    assert cache.meta["ignored"]["count"] == 1


# -- decoders -------------------------------------------------------------------------------------
def test_ffmpeg_reads_what_libsndfile_cannot(tmp_path, monkeypatch):
    path = put(tmp_path, "x.m4a", m4a_bytes())
    audio = load_audio(path, 16000)
    assert audio.samples.shape[0] == 1 and 0.2 < audio.samples.shape[1] / 16000 < 0.4
    assert np.abs(audio.samples).max() > 0.1
    import data_prep.audio as A

    monkeypatch.setattr(A, "_av", lambda: None)                     # PyAV not installed
    with pytest.raises(ValueError, match=r"x.m4a: not a readable audio file \(libsndfile: .*pip install av"):
        load_audio(path)


@pytest.mark.parametrize("container_format,codec,ext", [("adts", "aac", ".aac"), ("ipod", "alac", ".m4a"),
                                                        ("ogg", "libopus", ".opus"), ("webm", "libopus", ".webm"),
                                                        ("mp3", "libmp3lame", ".mp3")])
def test_compressed_formats_with_or_without_their_extension(tmp_path, container_format, codec, ext):
    data = m4a_bytes(0.5, container_format, codec)
    for name in (f"clip{ext}", "clip_without_extension"):
        path = put(tmp_path, name, data)
        assert classify(path, midi=False) is None, name
        audio = load_audio(path, 16000)
        assert 0.4 < audio.samples.shape[1] / 16000 < 0.7 and np.abs(audio.samples).max() > 0.1, name


def zero_sizes(data: bytes, riff: bool = True) -> bytes:
    """A WAV as a streaming writer leaves it before it closes: data (and RIFF) size 0."""
    out = bytearray(data)
    at = out.index(b"data")
    out[at + 4:at + 8] = bytes(4)
    if riff:
        out[4:8] = bytes(4)
    return bytes(out)


@pytest.mark.parametrize("riff", [True, False], ids=["riff+data", "data"])
@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_24", 2), ("FLOAT", 1), ("PCM_U8", 1)])
def test_wav_with_zero_sizes_is_read_to_its_end(tmp_path, riff, subtype, channels):
    path = put(tmp_path, "stream.wav", zero_sizes(wav_bytes(0.5, subtype=subtype, channels=channels), riff))
    audio = load_audio(path, mono=False, channels=channels)
    assert audio.samples.shape == (channels, SR // 2)
    assert "0 data bytes" in audio.warnings[0]


def test_an_empty_wav_with_metadata_after_its_data_chunk_stays_empty(tmp_path):
    empty = bytearray(wav_bytes(0.0))
    info = b"INFOINAM" + struct.pack("<I", 6) + b"title\0"
    empty += b"LIST" + struct.pack("<I", len(info)) + info
    empty[4:8] = struct.pack("<I", len(empty) - 8)
    with pytest.raises(ValueError, match="empty audio"):
        load_audio(put(tmp_path, "empty.wav", bytes(empty)))


@pytest.mark.parametrize("fmt,subtype,seconds", [("WAV", "PCM_16", 1), ("WAV", "PCM_24", 1), ("AIFF", "PCM_16", 1),
                                                  ("CAF", "PCM_16", 1), ("W64", "PCM_16", 1), ("AU", "PCM_16", 1),
                                                  ("FLAC", "PCM_16", 5)])
def test_a_cut_file_is_read_shorter_with_a_warning(tmp_path, fmt, subtype, seconds):
    """A partial download or copy: the header promises more than the file holds."""
    whole = wav_bytes(seconds, fmt=fmt, subtype=subtype)
    assert load_audio(put(tmp_path, f"whole.{fmt.lower()}", whole)).warnings == []
    if fmt in ("CAF", "FLAC"):
        pytest.importorskip("av")                # libsndfile refuses these cut; FFmpeg reads them
    cut = put(tmp_path, f"cut.{fmt.lower()}", whole[:len(whole) // 2])
    audio = load_audio(cut)
    assert 0.2 * seconds * SR < audio.samples.shape[1] < 0.6 * seconds * SR
    assert audio.warnings and audio.warnings[0].startswith("truncated"), audio.warnings
    with pytest.warns(UserWarning, match=f"cut.{fmt.lower()}: truncated"):    # what predict sees
        extract_file(cut, FEATURES)


def test_aiff_with_zero_sizes_is_read(tmp_path):
    aiff = bytearray(wav_bytes(0.5, fmt="AIFF"))
    ssnd, comm = aiff.index(b"SSND"), aiff.index(b"COMM")
    aiff[ssnd + 4:ssnd + 8] = bytes(4)
    aiff[comm + 10:comm + 14] = bytes(4)                                # 0 sample frames
    assert load_audio(put(tmp_path, "stream.aiff", bytes(aiff))).samples.shape[1] == SR // 2


def test_prepare_reports_warnings_and_zero_size_wavs(tmp_path):
    root = tmp_path / "data"
    put(root, "a/ok.wav", wav_bytes())
    put(root, "a/stream.wav", zero_sizes(wav_bytes(0.5)))
    put(root, "b/cut.wav", wav_bytes(1.0)[:3000])
    run = subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(root), "--out",
                          str(tmp_path / "c"), "--workers", "1", *CLI_FEATURES], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "warning: b/cut.wav: truncated" in run.stderr and "warning: a/stream.wav: the WAV header" in run.stderr
    cache = open_cache(tmp_path / "c")
    frames = {it.source: it.frames for it in cache.items}
    assert frames["a/stream.wav"] == 1 + (SR // 2) // 128
    assert len(cache.meta["build"]["warnings"]) == 2


# -- CSV manifests --------------------------------------------------------------------------------
ROWS = [("sounds/é1.wav", "chat", "train"), ("sounds/é2.wav", "chien", "train"),
        ("sounds/é3.wav", "chat", "test"), ("sounds/é4.wav", "chien", "test")]


def write_manifest(root: Path, encoding: str, delimiter: str = ",", bom: bytes = b"") -> Path:
    for i, (rel, _, _) in enumerate(ROWS):
        put(root, rel, wav_bytes(freq=300 + 100 * i))
    text = "".join(delimiter.join(row) + "\r\n" for row in [("path", "label", "split"), *ROWS])
    path = root / "labels.csv"
    path.write_bytes(bom + text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding,delimiter,bom", [
    ("utf-16", "\t", b""),                 # Excel "Unicode Text": UTF-16 LE with a BOM, tabs
    ("utf-16", ",", b""),
    ("utf-16-le", ",", b""),               # no BOM
    ("utf-16-be", ";", b""),
    ("utf-32", ",", b""),
    ("utf-8", ";", b"\xef\xbb\xbf"),       # Excel "CSV UTF-8" in a European locale
    ("utf-8", ",", b""),
])
def test_manifest_in_the_encodings_spreadsheets_write(tmp_path, encoding, delimiter, bom):
    manifest = write_manifest(tmp_path / "d", encoding, delimiter, bom)
    cache = prepare("csv", manifest, tmp_path / "c", FEATURES, workers=1, progress=False)
    assert len(cache) == 4 and cache.classes == ["chat", "chien"] and cache.failures == []


def test_manifest_with_a_sep_line_and_names_in_the_other_unicode_form(tmp_path):
    """Excel's "sep=;" first line; names composed in the CSV (é) and decomposed on disk (e + U+0301,
    as macOS writes them)."""
    import unicodedata

    root = tmp_path / "d"
    for i, (rel, _, _) in enumerate(ROWS):
        put(root, unicodedata.normalize("NFD", rel), wav_bytes(freq=300 + 100 * i))
    text = "sep=;\r\n" + "".join(";".join(row) + "\r\n" for row in [("path", "label", "split"), *ROWS])
    (root / "labels.csv").write_text(unicodedata.normalize("NFC", text), encoding="utf-8")
    cache = prepare("csv", root / "labels.csv", tmp_path / "c", FEATURES, workers=1, progress=False)
    assert len(cache) == 4 and cache.failures == []


@pytest.mark.parametrize("name", ["@eaDir/x.wav@SynoEAStream", "a/#recycle/0.wav", "a/~$draft.wav",
                                  "a/.AppleDouble/0.wav", "a/Icon\r"])
def test_more_leftovers_are_ignored(tmp_path, name):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        put(root, f"{cls}/0.wav", wav_bytes())
    put(root, name, APPLEDOUBLE)
    cache = prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False)
    assert len(cache) == 2 and cache.failures == [] and cache.meta["ignored"]["count"] == 1


def test_manifest_in_a_code_page_names_the_file_and_the_fix(tmp_path):
    manifest = write_manifest(tmp_path / "d", "cp1252")
    run = subprocess.run([sys.executable, "-m", "data_prep", "csv", "--root", str(manifest), "--out",
                          str(tmp_path / "c"), "--workers", "1", *CLI_FEATURES], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"{manifest}:2: not utf-8 text (byte 0xe9)" in run.stderr and "--encoding" in run.stderr
    cache = prepare("csv", manifest, tmp_path / "c", FEATURES, workers=1, progress=False, encoding="cp1252")
    assert len(cache) == 4 and cache.failures == []


# -- MIDI timing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("division,fps", [(b"\xe8\x28", 24), (b"\xe7\x28", 25), (b"\xe3\x50", 30000 / 1001),
                                          (b"\xe2\x04", 30)])
def test_smpte_time_division_is_read_in_seconds(tmp_path, division, fps):
    """The roll of an SMPTE file equals that of the same notes at the same seconds in a
    metrical file (times in the middle of frames, so rounding cannot move them)."""
    seconds = ((60, 0.0, 1.03), (67, 1.03, 2.53))
    per_second = fps * division[1]                                    # SMPTE ticks per second
    data = bytearray(midi_bytes([(p, round(a * per_second), round(b * per_second)) for p, a, b in seconds],
                                tempo=250_000))                      # a tempo event: SMPTE ignores it
    data[12:14] = division
    smpte = put(tmp_path, "smpte.mid", bytes(data))
    metrical = put(tmp_path, "ppq.mid", midi_bytes([(p, round(a * 960), round(b * 960)) for p, a, b in seconds]))
    for compat in (False, True):
        config = PianoRollFeatures(fs=10, pretty_midi_compat=compat)
        roll = pianoroll_file(smpte, config)
        assert np.array_equal(roll, pianoroll_file(metrical, config)), compat
        assert roll[5].argmax() == 60 and roll[20].argmax() == 67 and roll[12, 60] == 0


def test_midi_wrappers_and_container_variants_are_read(tmp_path):
    """Each variant gives the roll of the plain file, with either reader."""
    plain = midi_bytes()
    put(tmp_path, "plain.mid", plain)
    rmid = b"RIFF" + struct.pack("<I", 12 + len(plain)) + b"RMID" + b"data" + struct.pack("<I", len(plain)) + plain
    macbinary = bytes(128) + plain
    track = plain.index(b"MTrk")
    body = plain[track + 8:]
    assert body.endswith(b"\x00\xff\x2f\x00")
    variants = {
        "song.rmi": rmid, "mac.mid": macbinary,
        "format2.mid": plain[:8] + b"\x00\x02" + plain[10:],
        "xf.mid": plain[:14] + b"XFIH" + struct.pack(">I", 4) + b"abcd" + plain[14:],      # an alien chunk
        "header8.mid": plain[:4] + struct.pack(">I", 8) + plain[8:14] + b"\0\0" + plain[14:],
        "no_eot.mid": plain[:track] + b"MTrk" + struct.pack(">I", len(body) - 4) + body[:-4],
    }
    for name, data in variants.items():
        for compat in (False, True):
            config = PianoRollFeatures(fs=10, pretty_midi_compat=compat)
            assert np.array_equal(pianoroll_file(put(tmp_path, name, data), config),
                                  pianoroll_file(tmp_path / "plain.mid", config)), (name, compat)


def test_classify_names_what_a_file_is(tmp_path):
    assert classify(put(tmp_path, "x.wave", wav_bytes()), midi=False) is None
    assert classify(put(tmp_path, "x.pdf", b"%PDF-1.4\n"), midi=False) == "not audio (a PDF document)"
    assert "extract it first" in classify(put(tmp_path, "x.zip", b"PK\x03\x04" + bytes(30)), midi=False)
    assert classify(put(tmp_path, "x.mid", b""), midi=True) is None        # named MIDI: the reader says why
    for fmt in ("IRCAM", "PAF", "NIST"):                  # no signature listed: a decoder recognises it
        path = put(tmp_path, f"{fmt}.dat", wav_bytes(fmt=fmt))
        assert classify(path, midi=False) is None and load_audio(path).samples.shape[1] == SR // 4


def test_links_loops_and_twins(tmp_path):
    """A class folder that is a link, a link back up the tree, a link to nothing, and one
    recording in two formats (same id without suffix)."""
    elsewhere = tmp_path / "elsewhere"
    put(elsewhere, "0.wav", wav_bytes())
    put(elsewhere, "1.wav", wav_bytes(freq=500))
    root = tmp_path / "data"
    put(root, "a/x.wav", wav_bytes())
    put(root, "a/x.flac", wav_bytes(fmt="FLAC"))
    (root / "b").symlink_to(elsewhere, target_is_directory=True)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "gone.wav").symlink_to(tmp_path / "nothing.wav")
    os.mkfifo(root / "a" / "pipe.wav")                          # a reader would wait on it forever
    (root / "a" / "zeros.wav").symlink_to("/dev/zero")           # ... or read it forever
    cache = prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False)
    assert sorted(it.id for it in cache.items) == ["a/x.flac", "a/x.wav", "b/0", "b/1"]
    assert [f["source"] for f in cache.failures] == ["a/gone.wav"]
    assert "cannot read" in cache.failures[0]["reason"]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        put(root, f"{cls}/0.wav", wav_bytes())
    put(root, "b/locked/1.wav", wav_bytes())
    real = os.scandir

    def scandir(path="."):                   # what a folder without read permission gives (not root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    cache = prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False)
    assert len(cache) == 2
    assert cache.failures == [{"source": "b/locked", "reason": "cannot list this folder (Permission denied)"}]


def test_a_partial_build_left_with_raw_non_utf8_names_says_how_to_get_unstuck(tmp_path):
    """What an older version left: shard records whose sources are raw (surrogate-escaped) names;
    the build then stops with a one-line way out instead of failing the same way forever."""
    from data_prep import CacheError, CacheWriter
    from data_prep.prepare import _describe, resolve_features, source_arguments
    from data_prep.sources import get_source

    root = tmp_path / "data"
    for cls in ("a", "b"):
        put(root, f"{cls}/0.wav", wav_bytes())
    src, config = get_source("folder"), resolve_features(get_source("folder"), FEATURES)
    args = source_arguments(src)
    args.root, args.features = root, config
    writer = CacheWriter(tmp_path / "c", config, _describe(src, root, args), shard_items=1)
    x = np.zeros((3, config.feature_shape[0]), np.float32)
    writer.add(x, id=os.fsdecode(b"a/caf\xe9"), source=os.fsdecode(b"a/caf\xe9.wav"), label="a", split="train")
    writer.close()                                # the old build stopped: its lock is gone, its shards stay
    with pytest.raises(CacheError, match="--force to start it over"):
        prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False)
    assert len(prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False, force=True)) == 2


def test_a_cache_inside_the_root_is_not_part_of_the_dataset(tmp_path):
    """``--out`` inside ``--root`` (and other caches there): a rebuild or a resumed build walks
    the cache's own files. They are neither items nor skipped files, and they must not turn a
    ROOT/SPLIT/CLASS layout into a ROOT/CLASS one (classes 'train' and 'test')."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("dog", "cat"):
            put(root, f"{split}/{cls}/0.wav", wav_bytes(freq=300 if cls == "dog" else 900))
    first = prepare("folder", root, root / "cache", FEATURES, workers=1, progress=False)
    (root / "cache.partial" / "shards").mkdir(parents=True)          # what a killed build leaves
    (root / "cache.partial" / "build.json").write_text("{}")
    rebuilt = prepare("folder", root, root / "cache", FEATURES, workers=1, progress=False, force=True)
    other = prepare("folder", root, root / "train" / "other", FEATURES, workers=1, progress=False)
    for cache in (first, rebuilt, other):
        assert cache.classes == ["cat", "dog"] and cache.meta["splits"] == {"test": 2, "train": 2}
        assert cache.failures == [] and cache.meta["ignored"]["count"] == 0


def test_a_folder_without_audio_beside_the_splits_keeps_the_split_layout(tmp_path):
    """Datasets ship ``metadata/``, ``docs/`` or ``images/`` beside ``train/`` and ``test/``: a top
    folder with nothing to read says nothing about the layout (it used to make the classes
    'train' and 'test', without a word)."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("dog", "cat"):
            put(root, f"{split}/{cls}/0.wav", wav_bytes(freq=300 if cls == "dog" else 900))
    put(root, "docs/notes.txt", b"recorded in 2019\n")
    put(root, "metadata/labels.csv", b"file,label\n")
    cache = prepare("folder", root, tmp_path / "cache", FEATURES, workers=1, progress=False)
    assert cache.classes == ["cat", "dog"] and cache.meta["splits"] == {"test": 2, "train": 2}
    assert {f["source"] for f in cache.failures} == {"docs/notes.txt", "metadata/labels.csv"}


def test_item_ids_stay_unique_whatever_the_names(tmp_path):
    """A recording kept as ``take.wav``, ``take.mp3`` and a converted ``take.mp3.wav``: the ids
    that keep their suffix to tell the first two apart must not collide with the third's (the
    whole build stopped on 'item ids must be unique'). A manifest may list one recording in two
    formats too, as a folder may hold them."""
    root = tmp_path / "data"
    for name in ("take.wav", "take.flac", "take.flac.wav", "x.wav"):
        put(root, f"a/{name}", wav_bytes(fmt="FLAC" if name.endswith(".flac") else "WAV"))
    put(root, "b/y.wav", wav_bytes(freq=900))
    cache = prepare("folder", root, tmp_path / "c", FEATURES, workers=1, progress=False)
    ids = [it.id for it in cache.items]
    assert len(ids) == len(set(ids)) == 5 and cache.failures == []
    put(root, "m.csv", b"path,label\na/take.wav,a\na/take.flac,a\nb/y.wav,b\n")
    cache = prepare("csv", root / "m.csv", tmp_path / "c2", FEATURES, workers=1, progress=False)
    assert sorted(it.id for it in cache.items) == ["a/take.flac", "a/take.wav", "b/y"]


@pytest.mark.parametrize("rows, message", [
    (b"path,label\na/x.wav,a\nb/y.wav,b\na/x.wav,b\n", "m.csv:4: a/x.wav is listed again (first on line 2)"),
    (b"path,label\na/x.wav,a\nb/y.wav\n", "m.csv:3: 1 field, the header has 2"),
    (b"path,label,split\na/x.wav,a,train\n\nb/y.wav,b,test,extra\n",                          # a field too many
     "m.csv:4: 4 fields, the header has 3 (path, label, split); 'extra' is past its last column"),
    (b'sep=;\npath;label\n"a/x.wav";"a; b"\r\nb/y.wav;b;;c\n', "m.csv:4: 4 fields, the header has 2"),
    (b'path,label\n"a/x.wav",a\n"b/\ny.wav",b,c\n', "m.csv:4: 3 fields, the header has 2"),   # a quoted newline
    (b"path,label\n\na/x.wav,a\n\nb/y.wav,\n", "m.csv:5: empty 'label'"),                  # blank lines
    (b"sep=;\npath;label\na/x.wav;a\nb/y.wav;\n", "m.csv:4: empty 'label'"),                 # Excel's sep line
    (b'path,label\n"a/x.wav,a\n' + b"b/y.wav,b\n" * 14000,                                    # a quote never closed
     'm.csv:2: field larger than field limit (131072); a field that starts with a quote (") and never'),
])
def test_manifest_rows_that_cannot_be_items_name_their_line(tmp_path, rows, message):
    root = tmp_path / "data"
    put(root, "a/x.wav", wav_bytes())
    put(root, "b/y.wav", wav_bytes(freq=900))
    put(root, "m.csv", rows)
    run = subprocess.run([sys.executable, "-m", "data_prep", "csv", "--root", str(root / "m.csv"),
                          "--out", str(tmp_path / "c"), *CLI_FEATURES], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert message in run.stderr, run.stderr


def test_a_group_by_that_is_not_a_regular_expression_is_one_line(tmp_path):
    put(tmp_path / "data", "a/x.wav", wav_bytes())
    run = subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(tmp_path / "data"),
                          "--out", str(tmp_path / "c"), "--group-by", "(take", *CLI_FEATURES],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "error: --group-by '(take' is not a regular expression (missing ), unterminated subpattern" in run.stderr


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_a_cut_ogg_file_says_it_is_cut(tmp_path, subtype):
    """Ogg keeps no length in its header, so a partial download was read shorter without a word;
    its last page is cut and has no end-of-stream flag, which says so. Cut before its first page
    of audio, the reason says it is cut rather than 'empty audio'."""
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 10 * SR).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise, SR, format="OGG", subtype=subtype)
    whole = buf.getvalue()
    assert load_audio(put(tmp_path, "whole.ogg", whole)).warnings == []
    audio = load_audio(put(tmp_path, "cut.ogg", whole[:len(whole) // 2]))
    assert 2 * SR < audio.samples.shape[1] < 8 * SR
    assert len(audio.warnings) == 1 and audio.warnings[0].startswith("truncated: the Ogg stream ends inside a page")
    first_audio_page = whole.index(b"OggS", whole.index(b"OggS", 1) + 1)      # after the header pages
    with pytest.raises(ValueError, match=": truncated: the Ogg stream ends inside a page|"
                                         r"\(truncated: the Ogg stream ends inside a page"):
        load_audio(put(tmp_path, "headers.ogg", whole[:first_audio_page + 40]))


# -- every dataset's own manifest -------------------------------------------------------------------
# (source, manifest under the root, its header, a good row)
DATASET_MANIFESTS = {
    "maestro": ("maestro-v3.0.0.csv", "canonical_composer,canonical_title,split,year,midi_filename",
                "Bach,Prelude,train,2018,a.midi"),
    "esc50": ("meta/esc50.csv", "filename,fold,target,category,esc10,src_file,take",
              "1-1-A-0.wav,1,0,dog,True,11,A"),
    "urbansound8k": ("metadata/UrbanSound8K.csv", "slice_file_name,fsID,start,end,salience,fold,classID,class",
                     "1-0-0-0.wav,1,0,0.25,1,1,0,dog"),
    "folk": ("manifest.csv", "path,label,split,fold", "a.mid,irish,train,1"),
    "polyphony": ("manifest.csv", "path,label,split,fold", "a.mid,bach,train,1"),
}
# (what is wrong with the row after the good one, what the message says: {m} is the manifest)
MANIFEST_FAULTS = [
    ("cut short", "{m}:3: 1 field, the header has"),
    ("a field too many", "{m}:3: {n} fields, the header has {h} ("),
    ("a required value empty", "{m}:3: empty "),
    ("a fold that is no number", "{m}:3: 'fold' must be a whole number, got 'one'"),
    ("a code page", "{m}:3: not utf-8 text (byte 0xe9); save it as UTF-8"),
]


def _fault_row(source: str, fault: str, good: str) -> bytes:
    fields = good.split(",")
    if fault == "cut short":
        return b"x\n"
    if fault == "a field too many":          # a value with a comma, not quoted
        return (",".join(fields) + ",extra\n").encode()
    if fault == "a code page":
        return (",".join(fields[:-1] + ["é"]) + "\n").encode("cp1252")
    if fault == "a fold that is no number":
        column = DATASET_MANIFESTS[source][1].split(",").index("fold")
        fields[column] = "one"
    else:                                    # the label column empty
        label = {"maestro": 0, "esc50": 3, "urbansound8k": 7, "folk": 1, "polyphony": 1}[source]
        fields[label] = ""
    return (",".join(fields) + "\n").encode()


@pytest.mark.parametrize("source", sorted(DATASET_MANIFESTS))
@pytest.mark.parametrize("fault, message", MANIFEST_FAULTS)
def test_every_dataset_manifest_names_the_bad_row(tmp_path, capsys, source, fault, message):
    """What the csv source says of a bad row, every source that reads a published manifest says:
    the file, the line and what is wrong, in one line. maestro ended in 'unsupported operand
    type(s) for /' (a row cut short), esc50 in an AttributeError traceback, urbansound8k and esc50
    in 'invalid literal for int()' and "'utf-8' codec can't decode byte" without a file name."""
    from data_prep.__main__ import main

    rel, header, good = DATASET_MANIFESTS[source]
    if fault == "a fold that is no number" and "fold" not in header.split(","):
        pytest.skip(f"{source} has no fold column")
    root = tmp_path / "data"
    manifest = put(root, rel, f"{header}\n{good}\n".encode() + _fault_row(source, fault, good))
    status = main([source, "--root", str(root), "--out", str(tmp_path / "c"), "--workers", "1"])
    err = capsys.readouterr().err
    width = len(header.split(","))
    assert status == 1 and message.format(m=manifest, n=width + 1, h=width) in err, err
    assert "--encoding" not in err, err          # only the csv source has that option


@pytest.mark.parametrize("source", sorted(DATASET_MANIFESTS))
def test_every_dataset_manifest_names_a_missing_column(tmp_path, capsys, source):
    from data_prep.__main__ import main

    rel, header, good = DATASET_MANIFESTS[source]
    columns, values = header.split(","), good.split(",")
    gone = {"maestro": "canonical_composer", "esc50": "category", "urbansound8k": "class",
            "folk": "label", "polyphony": "label"}[source]
    keep = [i for i, c in enumerate(columns) if c != gone]
    text = ",".join(columns[i] for i in keep) + "\n" + ",".join(values[i] for i in keep) + "\n"
    manifest = put(tmp_path / "data", rel, text.encode())
    status = main([source, "--root", str(tmp_path / "data"), "--out", str(tmp_path / "c"), "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1 and f"{manifest}: no column {gone!r} (columns: " in err, err


def test_blank_rows_of_a_manifest_are_no_rows(tmp_path):
    """Blank lines, lines of spaces and rows of empty cells (spreadsheets save ',,,' for a row
    once touched) carry nothing: they are skipped, and the rows after them keep their line."""
    from data_prep.sources.tables import read_manifest

    path = put(tmp_path, "m.csv", b"path,label,split\n\na.wav,x\n   \n,,\n , ,\nb.wav,y,test\n")
    header, rows = read_manifest(path, ("path", "label"))
    assert header == ["path", "label", "split"]
    assert [(r.line, r["path"], r["label"], r["split"]) for r in rows] == [(3, "a.wav", "x", ""),
                                                                          (7, "b.wav", "y", "test")]


def test_empty_fields_past_the_header_are_no_values(tmp_path):
    """Spreadsheets end rows in delimiters for cells once touched (``a.wav,x,,``): fields past the
    header that hold nothing are no values, so nothing is lost and the row is read; a quoted
    value holding the delimiter is one field."""
    from data_prep.sources.tables import read_manifest

    path = put(tmp_path, "m.csv", b'path,label\na.wav,x,\n"b, take 2.wav",y, ,\n')
    header, rows = read_manifest(path, ("path", "label"))
    assert [(r.line, r["path"], r["label"]) for r in rows] == [(2, "a.wav", "x"), (3, "b, take 2.wav", "y")]
    assert all(None not in r for r in rows)


@pytest.mark.parametrize("source, listing", [("lakh", "genres.cls"), ("speechcommands", "validation_list.txt")])
def test_dataset_lists_in_a_code_page_name_the_file(tmp_path, capsys, source, listing):
    """lakh's genre file and Speech Commands' split lists are text too: a code page ended in
    "'utf-8' codec can't decode byte 0xe9 in position 24" without the file's name."""
    from data_prep.__main__ import main

    root = tmp_path / "data"
    put(root, "TRAAAAW128F429D538.mid", midi_bytes())
    put(root, "yes/a_nohash_0.wav", wav_bytes())
    put(root, "testing_list.txt", b"")
    text = "TRAAAAW128F429D538\tRock\nTRAAABD128F429CF47\tÉlectronique\n" if source == "lakh" else \
        "yes/a_nohash_0.wav\nyes/é_nohash_0.wav\n"
    path = put(root, listing, text.encode("cp1252"))
    status = main([source, "--root", str(root), "--out", str(tmp_path / "c"), "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1 and f"{path}:2: not utf-8 text (byte 0x" in err, err


@pytest.mark.parametrize("text, message", [
    ('{"bass_001": {"instrument_family_str": "bass"', "examples.json: not JSON (Expecting"),
    ('["bass_001"]', "examples.json: expected a JSON object of notes"),
    ('{"bass_001": {"pitch": 60}}', "examples.json: note 'bass_001' has no 'instrument_family_str' (--label family)"),
])
def test_nsynth_examples_that_are_no_manifest_name_the_file(tmp_path, capsys, text, message):
    """NSynth's examples.json is its manifest: damaged JSON was "Expecting ',' delimiter: line 1
    column 46" without the file, a list "list indices must be integers", and a note without the
    label's key a KeyError traceback."""
    from data_prep.__main__ import main

    put(tmp_path / "nsynth-valid", "audio/bass_001.wav", wav_bytes())
    put(tmp_path / "nsynth-valid", "examples.json", text.encode())
    status = main(["nsynth", "--root", str(tmp_path), "--out", str(tmp_path / "c"), "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1 and message in err, err


def test_a_file_larger_than_any_wav_is_skipped_unread_and_memory_errors_are_named(tmp_path, monkeypatch):
    """A 5 GiB "WAV" (sparse: no disk used) is skipped before a byte of it is read, with the reason;
    a file that does not fit in memory while decoding is a one-line reason, not "MemoryError"."""
    for i in range(2):
        put(tmp_path / "data", f"a/{i}.wav", wav_bytes())
        put(tmp_path / "data", f"b/{i}.wav", wav_bytes(freq=600))
    huge = put(tmp_path / "data", "b/huge.wav", wav_bytes())
    os.truncate(huge, 5 * 2**30)
    cache = prepare("folder", tmp_path / "data", tmp_path / "cache", FEATURES, workers=1, progress=False)
    reasons = {f["source"]: f["reason"] for f in cache.failures}
    assert list(reasons) == ["b/huge.wav"] and len(cache) == 4
    assert "5.0 GiB is more than the 4 GiB" in reasons["b/huge.wav"] and "cut it into clips" in reasons["b/huge.wav"]

    import data_prep.audio as audio

    def no_memory(data):
        raise MemoryError()
    monkeypatch.setattr(audio, "_sndfile", no_memory)
    with pytest.raises(audio.BadInputError, match=r"0\.wav: not enough memory to decode its 0 MiB"):
        load_audio(tmp_path / "data" / "a" / "0.wav")


# -- names with control characters ----------------------------------------------------------------
def _escaped_everywhere(text: str) -> None:
    """Every name below ends in 'TAIL...' after a newline, carriage return or tab: each one is
    written escaped (``\\nTAIL``), never broken across lines."""
    import re
    assert "TAIL" in text, text
    assert "TAIL" not in re.sub(r"\\[nrt]TAIL", "", text), text
    assert not any(line.startswith("TAIL") for line in text.splitlines()), text


def test_names_with_control_characters_stay_on_one_line(tmp_path):
    """Linux allows any byte but '/' and NUL in a name: a newline, a carriage return or a tab in a
    file, class folder, manifest or --out name broke the one-line reports and errors (a skipped
    file's line split in two, its reason repeating the name with spaces for the newlines). Such
    names are written as Python's repr, and only such names."""
    root = tmp_path / "data"
    put(root, "dog/0.wav", wav_bytes())
    put(root, "cat/0.wav", wav_bytes(freq=900))
    put(root, "dog/ok\nTAILa.wav", wav_bytes())
    put(root, "cat\nTAILb/1.wav", wav_bytes(freq=900))                # a class folder
    put(root, "dog/bad\nTAILc\r.wav", b"not audio at all, just text\n")
    put(root, "dog/notes\tTAILd.txt", b"recorded in 2019\n")
    put(root, "dog/cut\nTAILe.wav", wav_bytes(seconds=1.0)[:3000])      # read, with a warning
    put(root, "dog/._x\nTAILf.wav", APPLEDOUBLE)                         # ignored
    out = tmp_path / "cache\nTAILg"
    command = [sys.executable, "-m", "data_prep", "folder", "--root", str(root), "--out", str(out),
               "--workers", "1", *CLI_FEATURES]
    for again in (False, True):                                         # the build, then 'up to date'
        run = subprocess.run(command, capture_output=True, text=True)
        assert run.returncode == 3 and "Traceback" not in run.stderr, run.stderr
        _escaped_everywhere(run.stderr)
        assert "\n  'dog/bad\\nTAILc\\r.wav': not a readable audio file (it is text;" in run.stderr
        assert "\n  'dog/notes\\tTAILd.txt': not audio (text)" in run.stderr
        assert again or "\n  warning: 'dog/cut\\nTAILe.wav': truncated" in run.stderr
    assert open_cache(out).classes == ["cat", "cat\nTAILb", "dog"]       # the data keeps the names
    run = subprocess.run([sys.executable, "-m", "data_prep", "verify", str(out)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith(f"{str(out)!r}: ok"), run.stdout
    # errors naming a manifest, a row's path, a root
    listing = put(tmp_path / "lists\nTAILh", "m.csv", b'path,label\n"dog/ok\nTAILa.wav",a\n"dog/ok\nTAILa.wav",b\n')
    for args in (["csv", "--root", str(listing)], ["folder", "--root", str(tmp_path / "none\nTAILi")]):
        run = subprocess.run([sys.executable, "-m", "data_prep", *args, "--out", str(tmp_path / "c"), *CLI_FEATURES],
                             capture_output=True, text=True)
        assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
        _escaped_everywhere(run.stderr)
    # names without control characters are written as they are
    put(tmp_path / "plain", "a b/é.wav", b"text")
    put(tmp_path / "plain", "c/0.wav", wav_bytes())
    run = subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(tmp_path / "plain"),
                          "--out", str(tmp_path / "c2"), "--workers", "1", *CLI_FEATURES], capture_output=True, text=True)
    assert "\n  a b/é.wav: not a readable audio file (it is text;" in run.stderr, run.stderr
