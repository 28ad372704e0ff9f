"""Bad inputs, interrupted builds, crashing decoders: never a crash, never a half-written cache."""
import csv
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import open_cache, prepare

SR = 8000
FEATURES = {"sample_rate": SR, "n_fft": 256, "hop_length": 128, "n_mels": 16}


def noise(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)


def make_messy(root: Path) -> dict:
    """A folder dataset with every kind of bad file; returns the expected failure reasons."""
    good = root / "ünï cödé"
    bad = root / "bad ones"
    good.mkdir(parents=True)
    bad.mkdir()
    sf.write(good / "a file with spaces ✓.wav", noise(2000), SR, subtype="PCM_16")
    sf.write(good / "stereo 48k.flac", np.stack([noise(4800), noise(4800, 1)], 1), 48000)
    sf.write(good / "silence.wav", np.zeros(1600, np.float32), SR)
    sf.write(good / "ten samples.wav", noise(10), SR)
    full = good / "a file with spaces ✓.wav"
    (good / "cut in the data.wav").write_bytes(full.read_bytes()[:1000])       # header claims more
    sf.write(bad / "nan.wav", np.where(np.arange(800) == 7, np.nan, noise(800)).astype(np.float32), SR,
             subtype="FLOAT")
    sf.write(bad / "inf.wav", np.where(np.arange(800) == 7, np.inf, noise(800)).astype(np.float32), SR,
             subtype="FLOAT")
    (bad / "zero.wav").write_bytes(b"")
    (bad / "garbage.mp3").write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 5000, np.uint8)))
    (bad / "readme.ogg").write_text("not audio, despite the name\n")
    (bad / "cut in the header.wav").write_bytes(full.read_bytes()[:20])
    sf.write(bad / "no frames.wav", np.zeros(0, np.float32), SR)
    return {"bad ones/nan.wav": "NaN or Inf", "bad ones/inf.wav": "NaN or Inf",
            "bad ones/zero.wav": "empty file (0 bytes)", "bad ones/garbage.mp3": "not a readable audio file",
            "bad ones/readme.ogg": "not a readable audio file",
            "bad ones/cut in the header.wav": "not a readable audio file",
            "bad ones/no frames.wav": "empty audio (0 samples)"}


def test_every_bad_input_is_skipped_with_its_reason(tmp_path):
    expected = make_messy(tmp_path / "data")
    cache = prepare("folder", tmp_path / "data", tmp_path / "cache", FEATURES, workers=1, progress=False)
    reasons = {f["source"]: f["reason"] for f in cache.failures}
    assert set(reasons) == set(expected)
    for source, reason in expected.items():
        assert reason in reasons[source], (source, reasons[source])
    written = {it.source: it for it in cache.items}
    assert set(written) == {f"ünï cödé/{n}" for n in ("a file with spaces ✓.wav", "stereo 48k.flac", "silence.wav",
                                                       "ten samples.wav", "cut in the data.wav")}
    assert written["ünï cödé/ten samples.wav"].frames == 1
    assert written["ünï cödé/stereo 48k.flac"].frames == 1 + 800 // 128   # resampled to 8 kHz
    silence = cache.features(cache.items.index(written["ünï cödé/silence.wav"]))
    assert np.all(np.asarray(silence) == 0)
    assert all(np.isfinite(cache.features(i)).all() for i in range(len(cache)))
    assert not (tmp_path / "cache.partial").exists()


def _crashy(path, config=None):
    """A native decoder crash, as a worker process sees it (module-level: workers unpickle it)."""
    if path.endswith("crash.wav"):
        os._exit(11)
    return _crashy.real(path, config)


def test_a_worker_that_dies_costs_one_file_not_the_build(tmp_path, monkeypatch):
    E = importlib.import_module("data_prep.extract")

    root = tmp_path / "data"
    for i in range(6):
        (root / "c").mkdir(parents=True, exist_ok=True)
        sf.write(root / "c" / f"{i}.wav", noise(800, i), SR)
    (root / "c" / "crash.wav").write_bytes((root / "c" / "0.wav").read_bytes())
    monkeypatch.setattr(_crashy, "real", E.extract_one, raising=False)
    monkeypatch.setattr(E, "extract_one", _crashy)
    cache = prepare("folder", root, tmp_path / "cache", FEATURES, workers=2, progress=False)
    assert len(cache) == 6
    assert cache.failures == [{"source": "c/crash.wav",
                               "reason": "the worker process died while reading this file (a decoder crash)"}]


KILLABLE = textwrap.dedent("""
    import importlib, sys, time
    E = importlib.import_module("data_prep.extract")
    real = E.extract_one
    def slow(path, config=None):
        time.sleep(0.3)     # slow enough to be caught in the middle, even on a busy machine
        return real(path, config)
    E.extract_one = slow
    from data_prep.prepare import prepare
    prepare("folder", sys.argv[1], sys.argv[2], %r, workers=2, progress=False, shard_items=2)
""" % FEATURES)


def read_manifest(path: Path):
    with open(path / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_kill_9_then_resume_gives_the_same_cache(tmp_path):
    root = tmp_path / "data"
    make_messy(root)
    for i in range(10):
        sf.write(root / "ünï cödé" / f"extra {i}.wav", noise(1000 + 100 * i, i), SR)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(root), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out.with_name("killed.partial") / "shards"
    deadline = time.time() + 60
    while not (shards / "00002.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the build never got going"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and shards.exists()
    resumed = prepare("folder", root, out, FEATURES, workers=1, progress=False, shard_items=2)
    assert resumed.meta["build"]["resumed"] >= 4
    whole = prepare("folder", root, tmp_path / "whole", FEATURES, workers=1, progress=False, shard_items=2)
    assert read_manifest(out) == read_manifest(tmp_path / "whole")
    assert resumed.failures == whole.failures
    for i in range(len(whole)):
        assert np.array_equal(resumed.features(i), whole.features(i))
    assert resumed.meta["stats"] == whole.meta["stats"]
    truncated = [w["source"] for w in whole.meta["build"]["warnings"]]        # read before the kill too
    assert truncated == ["ünï cödé/cut in the data.wav"] and resumed.meta["build"]["warnings"] == whole.meta["build"]["warnings"]


def test_cli_twice_is_up_to_date_and_another_config_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    sf.write(root / "c" / "x.wav", noise(800), SR)
    base = [sys.executable, "-m", "data_prep", "folder", "--root", str(root), "--out", str(tmp_path / "c"),
            "--workers", "1", "--sample-rate", str(SR), "--n-fft", "256", "--hop-length", "128"]
    first = subprocess.run(base + ["--n-mels", "16"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "1 items" in first.stderr and "audio-seconds/s" in first.stderr
    second = subprocess.run(base + ["--n-mels", "16"], capture_output=True, text=True)
    assert second.returncode == 0 and "up to date" in second.stderr
    other = subprocess.run(base + ["--n-mels", "20", "--fmax", "3000"], capture_output=True, text=True)
    assert other.returncode == 1
    assert "fmax: None != 3000.0" in other.stderr and "n_mels: 16 != 20" in other.stderr
    forced = subprocess.run(base + ["--n-mels", "20", "--force"], capture_output=True, text=True)
    assert forced.returncode == 0 and open_cache(tmp_path / "c").config.n_mels == 20


CRASHY_ALONE = textwrap.dedent("""
    import importlib, os, sys
    E = importlib.import_module("data_prep.extract")
    real = E.extract_one
    def crashy(path, config=None):
        if path.endswith("crash.wav"):
            os._exit(11)                       # a native decoder crash
        return real(path, config)
    E.extract_one = crashy
    if sys.argv[3] == "one core":
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from data_prep.prepare import prepare
    try:
        cache = prepare("folder", sys.argv[1], sys.argv[2], %r, progress=False,
                        workers=None if sys.argv[3] == "one core" else 2)
        print(cache.failures)
    except Exception as e:                     # one file, and it failed: no cache, its reason
        print(e)
""" % FEATURES)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="sets the CPU affinity")
@pytest.mark.parametrize("how", ["one core", "one file to do"])
def test_a_crashing_file_costs_one_file_with_one_core_or_one_file_left(tmp_path, how):
    """Where one process would do (a one-core machine by default, or a single file to do, as
    when a resumed build has one left) the files were read in the main process, so a decoder
    crash ended the build, and every resume crashed again on the same file."""
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    sf.write(root / "c" / "crash.wav", noise(800), SR)
    if how == "one core":
        sf.write(root / "c" / "0.wav", noise(800), SR)
    run = subprocess.run([sys.executable, "-c", CRASHY_ALONE, str(root), str(tmp_path / "c"), how],
                         capture_output=True, text=True)
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert "the worker process died while reading this file" in run.stdout
