"""How long does an exported classifier take on a 10-s clip, on one CPU thread?

    python benchmarks/export_latency.py [RECIPE_OR_RUN] [--seconds 10] [--repeats 7]

RECIPE_OR_RUN is a recipe (default ``recipes/gtzan.yaml``: its feature config, windows and model,
with untrained weights and made-up statistics, since neither changes the time) or a trained run
folder. Both formats are written to a temporary folder by ``audiostem.export`` and run on one
thread (onnxruntime ``intra_op_num_threads=1``; ``torch.set_num_threads(1)``); the fastest and
the median of ``--repeats`` runs after a warm-up are printed (the fastest, because a shared
machine only ever adds time). docs/training.md ("Deploy") quotes the result.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiostem.export import WaveformClassifier, export_onnx, export_torchscript, waveform_classifier


def from_recipe(path: str) -> WaveformClassifier:
    from audiostem.recipe import load_recipe
    from data_prep.config import feature_config

    r = load_recipe(path)
    c = feature_config(r.data.features)
    channels = 1 if c.mono else c.channels
    model = r.model.build(10, channels, pretrained=False).eval()
    stats = {"mean": torch.full((channels, c.bins), -40.0), "std": torch.full((channels, c.bins), 15.0),
             "pad": torch.full((channels, c.bins), -40.0)}
    crop = r.data.crop_frames
    return WaveformClassifier(model, c.to_dict(), stats, crop, r.data.eval_hop or crop).eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default="recipes/gtzan.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    wrapped = waveform_classifier(args.source)[0] if Path(args.source).is_dir() else from_recipe(args.source)
    torch.set_num_threads(1)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        for fmt, write in (("onnx", export_onnx), ("torchscript", export_torchscript)):
            out = Path(tmp) / f"model.{fmt}"
            x = torch.from_numpy((0.1 * np.random.default_rng(0).standard_normal(
                (1, round(args.seconds * wrapped.sample_rate)) if wrapped.mono else
                (1, wrapped.mean.shape[0], round(args.seconds * wrapped.sample_rate)))).astype(np.float32))
            write(wrapped, {}, out, x)
            if fmt == "onnx":
                options = ort.SessionOptions()
                options.intra_op_num_threads = options.inter_op_num_threads = 1
                session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
                run = lambda: session.run(None, {"waveform": x.numpy()})        # noqa: E731
            else:
                module = torch.jit.load(str(out))
                run = lambda: module(x)                                         # noqa: E731
            run()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            print(f"{fmt:12s} {args.seconds:g}-s clip, 1 thread: fastest {min(times):.3f} s, median "
                  f"{statistics.median(times):.3f} s ({out.stat().st_size / 2**20:.1f} MiB file)")


if __name__ == "__main__":
    main()
