"""Exporting a trained audio classifier as one ONNX or TorchScript file (waveform in,
probabilities out), checked against ``python -m audiostem.predict`` in a process without audiostem."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from audiostem.export import ExportError, WaveformClassifier, export, main as export_main
from audiostem.recipe import load_recipe
from audiostem.train import train
from data_prep.config import feature_config
from data_prep.features import compute_features
from fixtures import AUDIO_FEATURES, SR, write_wav

MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: the ONNX export "
                                                      "needs pip install 'audiostem[export]' (make install does it)")
CROP, HOP = 16, 8          # frames; one frame is 128 samples at 8 kHz


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    x[n // 2: n // 2 + n // 8] = 0.0                 # a silent stretch: amin and top_db at work
    return x.astype(np.float32)


@pytest.mark.parametrize("config", [
    AUDIO_FEATURES,
    {"kind": "stft", "sample_rate": SR, "n_fft": 128, "hop_length": 64},
    {"kind": "mel", "sample_rate": SR, "n_fft": 256, "hop_length": 100, "n_mels": 20, "power": 1.0, "htk": True,
     "mel_norm": None, "fmax": 3000.0},
    {"kind": "mfcc", "sample_rate": SR, "n_fft": 256, "hop_length": 128, "n_mels": 24, "n_mfcc": 13},
    {"kind": "logmel", "sample_rate": SR, "n_fft": 256, "hop_length": 64, "win_length": 200, "window": "hamming",
     "center": False, "n_mels": 16, "log_offset": 1e-6},
    {**AUDIO_FEATURES, "mono": False, "channels": 2, "top_db": None},
])
def test_the_torch_front_end_matches_data_prep(config):
    c = feature_config(config)
    channels = 1 if c.mono else c.channels
    stats = {"mean": torch.zeros(channels, c.bins), "std": torch.ones(channels, c.bins),
             "pad": torch.zeros(channels, c.bins)}
    front = WaveformClassifier(torch.nn.Identity(), c.to_dict(), stats, CROP, HOP)
    for n in (50, 256, 1000, 9000):
        x = _signal(n) if c.mono else np.stack([_signal(n), 0.5 * _signal(n, seed=1)])
        expected = compute_features(x, c)                             # (frames, [C,] F)
        expected = expected[:, None] if c.mono else expected
        got = front.features(torch.from_numpy(x)[None])[0].permute(2, 0, 1).numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
def test_a_stereo_run_takes_channels_and_windows_as_predict_does(fmt, tmp_path):
    """forward = the predict pipeline (cache features as float16, clip_windows, mean logits, softmax),
    here for a stereo linear-magnitude run with an untrained model; the file runs it the same."""
    from audiostem.data import clip_windows
    from audiostem.export import export_onnx, export_torchscript, run_exported
    from audiostem.models import build_model
    c = feature_config({"kind": "stft", "sample_rate": SR, "n_fft": 128, "hop_length": 64, "mono": False})
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(2, c.bins, generator=g)
    stats = {"mean": mean, "std": 0.5 + torch.rand(2, c.bins, generator=g), "pad": mean}
    model = build_model("resnet7", {"widths": [8], "depths": [1]}, 3, in_channels=2,
                        stem_overrides={"out_channels": 8}).eval()
    front = WaveformClassifier(model, c.to_dict(), stats, CROP, HOP).eval().requires_grad_(False)
    out = tmp_path / f"stereo.{fmt}"
    (export_onnx if fmt == "onnx" else export_torchscript)(front, {}, out, torch.zeros(1, 2, 3000))
    for n in (100, 15 * 64, 5000):
        x = np.stack([_signal(n), _signal(n, seed=1)])
        windows = clip_windows(compute_features(x, c).astype(np.float16), CROP, HOP, stats)
        with torch.no_grad():
            expected = torch.softmax(model(windows).mean(0), 0).numpy()
            probs, logits = front(torch.from_numpy(x)[None])
        assert logits.shape == (1, len(windows), 3)
        np.testing.assert_allclose(probs[0].numpy(), expected, atol=1e-5)
        batch = run_exported(out, fmt, np.stack([x, 0.5 * x]))[0]           # a batch of two clips
        np.testing.assert_allclose(batch[0], expected, atol=1e-5)
        assert np.abs(batch[1] - batch[0]).max() > 1e-6                      # each clip its own peak, windows


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
@pytest.mark.parametrize("mono", [True, False])
def test_an_empty_batch_gives_empty_probabilities(fmt, mono, tmp_path):
    """A batch of 0 clips (a server's batch that happened to be empty) gives (0, n_classes)
    probabilities, in the model and in the file; it ended in 'MKL FFT error: ... Inconsistent
    configuration parameters' (eager and TorchScript). The input checks still hold for it."""
    from audiostem.export import export_onnx, export_torchscript, run_exported
    from audiostem.models import build_model
    c = feature_config({**AUDIO_FEATURES, "mono": mono, "channels": 2})
    channels = 1 if mono else 2
    stats = {"mean": torch.zeros(channels, c.bins), "std": torch.ones(channels, c.bins),
             "pad": torch.zeros(channels, c.bins)}
    model = build_model("deep3", {"widths": [8], "depths": [1]}, 3, in_channels=channels,
                        stem_overrides={"width": 8}).eval()
    front = WaveformClassifier(model, c.to_dict(), stats, CROP, HOP).eval().requires_grad_(False)
    out = tmp_path / f"m.{fmt}"
    (export_onnx if fmt == "onnx" else export_torchscript)(front, {}, out, torch.zeros((1, 3000) if mono else (1, 2, 3000)))
    empty = np.zeros((0, 900) if mono else (0, 2, 900), np.float32)
    with torch.no_grad():
        probs, logits = front(torch.from_numpy(empty))
    assert probs.shape == (0, 3) and logits.shape == (0, 1, 3)
    probs, logits = run_exported(out, fmt, empty)
    assert probs.shape == (0, 3) and logits.shape == (0, 1, 3)
    with pytest.raises(Exception, match=r"waveform: expected float32|expected: \(tensor\(float\)\)"):   # onnxruntime's own
        run_exported(out, fmt, empty.astype(np.float64))
    if not mono:
        with pytest.raises(Exception, match="waveform: expected float32 .* got 3 channels"):
            front(torch.zeros(0, 3, 900))


def test_every_stem_preset_exports_to_torchscript(tmp_path):
    """Tracing meets every stem (parallel branches, CoordConv) and the file equals the model in eager mode."""
    from audiostem import list_stems
    from audiostem.export import export_torchscript, run_exported
    from audiostem.models import build_model
    c = feature_config({**AUDIO_FEATURES, "n_mels": 32})
    stats = {"mean": torch.full((1, 32), -40.0), "std": torch.full((1, 32), 15.0), "pad": torch.full((1, 32), -40.0)}
    x = np.stack([_signal(3000), _signal(3000, seed=1)])
    for name in list_stems():
        model = build_model(name, {"widths": [8], "depths": [1]}, 3, stem_overrides={"coord": True}).eval()
        front = WaveformClassifier(model, c.to_dict(), stats, 32, HOP).eval().requires_grad_(False)
        export_torchscript(front, {}, tmp_path / f"{name}.pt", torch.zeros(0))
        with torch.no_grad():
            expected = front(torch.from_numpy(x))[0].numpy()
        np.testing.assert_allclose(run_exported(tmp_path / f"{name}.pt", "torchscript", x)[0], expected, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("mono", [True, False])
def test_a_waveform_of_another_dtype_or_shape_is_refused_naming_it(mono, tmp_path):
    """int16 PCM read as it is (soundfile's dtype='int16') is 32768 times too loud: on a feature kind
    without a peak reference that is other probabilities, silently; onnxruntime refuses it itself."""
    from audiostem.export import export_torchscript
    c = feature_config({"kind": "mel", "sample_rate": SR, "n_fft": 128, "hop_length": 64, "n_mels": 8,
                        "mono": mono, "channels": 2})
    channels = 1 if mono else 2
    stats = {"mean": torch.zeros(channels, 8), "std": torch.ones(channels, 8), "pad": torch.zeros(channels, 8)}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    front = WaveformClassifier(model, c.to_dict(), stats, CROP, HOP).eval()
    with torch.no_grad():
        model(torch.zeros(1, channels, 8, CROP))
    front.requires_grad_(False)
    export_torchscript(front, {}, tmp_path / "m.pt", torch.zeros(0))
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    good = torch.zeros((1, 900) if mono else (1, 2, 900))
    assert front(good)[0].shape == scripted(good)[0].shape == (1, 3)
    bad = {"dtype": (good * 32767).short(), "dtype ": good.double(), "shape": good[0], "shape ": good[None]}
    if not mono:
        bad["channels"] = torch.zeros(1, 3, 900)
    for what, x in bad.items():
        for module in (front, scripted):
            with pytest.raises(Exception, match=rf"waveform: .*float32.*\(batch, {'' if mono else 'channels, '}"
                                                rf"samples\).*got .*{what.strip()}") as e:
                module(x)
            assert str(e.value).splitlines()[-1].startswith(("waveform: ", "builtins.ValueError: waveform: "))


@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
def test_pons_on_an_odd_window_exports_to_torchscript(tmp_path):
    """pons's branches differ by one frame on an odd window and are cut to match; the trace keeps
    that for its one window shape, quietly."""
    from audiostem.export import export_torchscript, run_exported
    from audiostem.models import build_model
    c = feature_config({**AUDIO_FEATURES, "n_mels": 32})
    stats = {"mean": torch.full((1, 32), -40.0), "std": torch.full((1, 32), 15.0), "pad": torch.full((1, 32), -40.0)}
    model = build_model("pons", {"widths": [8], "depths": [1]}, 3, stem_overrides={"n_freq": 32}).eval()
    front = WaveformClassifier(model, c.to_dict(), stats, 33, HOP).eval().requires_grad_(False)
    export_torchscript(front, {}, tmp_path / "pons.pt", torch.zeros(0))
    x = np.stack([_signal(6000), _signal(6000, seed=1)])
    with torch.no_grad():
        expected = front(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(run_exported(tmp_path / "pons.pt", "torchscript", x)[0], expected, atol=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny audio run (1 epoch) with evaluation windows that overlap."""
    tmp = tmp_path_factory.mktemp("export")
    for n in range(6):
        write_wav(tmp / "data" / "low" / f"l{n}.wav", 200 + 10 * n, seconds=0.6)
        write_wav(tmp / "data" / "high" / f"h{n}.wav", 2000 + 50 * n, seconds=0.6)
    recipe = {"out_dir": str(tmp / "run"), "seed": 0,
              "data": {"cache": str(tmp / "cache"), "features": AUDIO_FEATURES, "crop_frames": CROP,
                       "eval_hop": HOP, "batch_size": 4, "test_split": None,
                       "prepare": {"source": "folder", "root": str(tmp / "data"), "workers": 1}},
              "model": {"stem": "resnet7", "stem_args": {"out_channels": 8}, "body": {"widths": [8], "depths": [1]}},
              "train": {"max_epochs": 1, "lr": 0.01},
              "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    train(load_recipe(tmp / "r.yaml"))
    return tmp / "run"


# frames = 1 + samples // 128: 7 frames (< one window), 16 (exactly one), 94 (windows at 0, 8, ..., 72 and an
# end-aligned one at 78), 48 (windows at 0, 8, ..., 32: the end-aligned one is a regular one)
CLIP_SAMPLES = {"short": 900, "one": 15 * 128, "many": 12000, "even": 47 * 128}

RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np, soundfile as sf
    fmt, path, *wavs = sys.argv[1:]
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["audiostem"])
        run = lambda x: session.run(["probabilities"], {"waveform": x})[0]
    else:
        import torch
        files = {"audiostem.json": ""}
        module = torch.jit.load(path, _extra_files=files)
        meta = json.loads(files["audiostem.json"])
        run = lambda x: module(torch.from_numpy(x))[0].numpy()
    out = {}
    for wav in wavs:
        x, sr = sf.read(wav, dtype="float32")
        assert sr == meta["sample_rate"], (sr, meta["sample_rate"])
        out[wav] = dict(zip(meta["classes"], run(x[None]).ravel().tolist()))
    assert not any(m.split(".")[0] in ("audiostem", "data_prep") for m in sys.modules), "imported audiostem"
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def clips(run, tmp_path_factory):
    import soundfile as sf
    tmp = tmp_path_factory.mktemp("clips")
    paths = []
    for k, (name, n) in enumerate(CLIP_SAMPLES.items()):
        paths.append(tmp / f"{name}.wav")
        sf.write(paths[-1], _signal(n, seed=k) * (1.0 if k % 2 else 0.5), SR, subtype="FLOAT")
    done = subprocess.run([sys.executable, "-m", "audiostem.predict", str(run), *map(str, paths), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {r["file"]: r for r in json.loads(done.stdout)}


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
def test_the_exported_file_matches_predict_without_audiostem(run, clips, fmt, tmp_path):
    out = tmp_path / f"model.{fmt}"
    assert export_main([str(run), "--format", fmt, "--out", str(out), "--clip-seconds", "2"]) == 0
    done = subprocess.run([sys.executable, "-c", RUNNER, fmt, str(out), *clips], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    windows = {name: clips[name]["windows"] for name in clips}
    assert sorted(windows.values()) == [1, 1, 5, 11]
    spread = [max(p["probabilities"].values()) for p in clips.values()]
    assert max(spread) - min(spread) > 0.01          # the clips give the model different things to say
    for wav, predicted in clips.items():
        assert exported[wav] == pytest.approx(predicted["probabilities"], abs=1e-3), wav


def test_predict_on_no_files_is_no_results(run):
    """The in-process path on empty input: no files, no results (the exported file's batch of 0
    clips is checked by export itself, and above)."""
    from audiostem.predict import predict_files
    assert predict_files(run, []) == []


def test_the_default_output_sits_next_to_the_checkpoint_and_keeps_the_metadata(run):
    out = export(run, "torchscript", clip_seconds=0.5)
    assert out == run / "checkpoints" / "best.torchscript.pt"
    files = {"audiostem.json": ""}
    module = torch.jit.load(str(out), _extra_files=files)
    meta = json.loads(files["audiostem.json"])
    assert meta["classes"] == ["high", "low"] and meta["features"]["n_mels"] == AUDIO_FEATURES["n_mels"]
    assert meta["sample_rate"] == SR and (meta["crop_frames"], meta["eval_hop"]) == (CROP, HOP)
    probs, logits = module(torch.zeros(3, 4000))                         # a batch of 3 clips
    assert probs.shape == (3, 2) and logits.shape == (3, 3, 2)   # 32 frames: windows at 0, 8, 16
    assert torch.allclose(probs.sum(1), torch.ones(3))


@pytest.mark.parametrize("kind, why", [("cqt", "multirate CQT"), ("pianoroll", "read MIDI files")])
def test_runs_that_cannot_be_exported_are_refused_with_the_reason(run, tmp_path, capsys, kind, why):
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["audiostem"]["features"] = feature_config({"kind": kind}).to_dict()
    torch.save(ckpt, tmp_path / "other.ckpt")
    assert export_main([str(tmp_path / "other.ckpt"), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: features.kind:") and why in err
    assert not list(tmp_path.glob("other.torchscript.pt*"))             # nothing half-written
    with pytest.raises(ExportError, match=why):
        export(tmp_path / "other.ckpt", "onnx")


def test_bad_arguments_are_one_line_errors(run, tmp_path, capsys):
    assert export_main([str(tmp_path / "nowhere"), "--format", "torchscript"]) == 2
    assert "no such checkpoint file or run folder" in capsys.readouterr().err
    assert export_main([str(run), "--format", "torchscript", "--clip-seconds", "0"]) == 2
    assert "--clip-seconds: must be positive" in capsys.readouterr().err
    assert export_main([str(run), "--format", "torchscript", "--clip-seconds", "inf"]) == 2    # was OverflowError
    assert "--clip-seconds: must be positive and finite, got inf" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert export_main([str(run), "--format", "torchscript", "--out", str(tmp_path / "file" / "m.pt")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'file'}")
    assert export_main([str(run), "--format", "torchscript", "--out", str(tmp_path), "--clip-seconds", "0.5"]) == 0
    assert (tmp_path / "best.torchscript.pt").exists() and not list(tmp_path.glob("*.partial"))
