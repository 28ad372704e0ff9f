"""Does bf16 autocast make CPU training steps faster? float32 against bf16 autocast for the same
model, measured side by side.

    python benchmarks/cpu_precision.py [--body resnet18] [--stem deep3] [--input 1 64 128]
                                       [--batch-size 32] [--rounds 5] [--steps 3] [--threads 1]

One model (``audiostem.build_model(stem, body)``, channels_last as training uses it) takes
training steps (``timing.step_time`` beside this script: forward, cross-entropy, backward, SGD
step; the fastest of ``--steps`` after a warm-up) in float32 and under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (what Lightning's ``precision: bf16-mixed`` does
on CPU), interleaved round by round (A B, then B A, ...) so that a shared machine's load drifting
over time hits both alike. Prints the median step times and the median of the rounds' paired
ratios float32 / bf16 with their range. bf16 pays off only on CPUs with bf16 dot-product
instructions (avx512_bf16 or AMX); elsewhere it is slower. It changes the numerics, so a study
compares stems within one precision.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from audiostem import build_model
from timing import step_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", default="resnet18")
    parser.add_argument("--stem", default="deep3")
    parser.add_argument("--input", nargs=3, type=int, default=[1, 64, 128], metavar=("C", "F", "T"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.input)
    torch.manual_seed(0)
    model = build_model(args.stem, args.body, num_classes=10, in_channels=shape[0]).to(
        memory_format=torch.channels_last)
    modes = {"float32": None, "bf16": torch.bfloat16}
    times: dict[str, list[float]] = {m: [] for m in modes}
    ratios = []
    for r in range(args.rounds):
        for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            times[mode].append(step_time(model, shape, args.batch_size, args.steps, autocast=modes[mode]))
        ratios.append(times["float32"][-1] / times["bf16"][-1])
    print(f"training step of {args.stem} + {args.body}, batch {args.batch_size} x {'x'.join(map(str, shape))}, "
          f"CPU ({args.threads} thread{'s' * (args.threads != 1)}), {args.rounds} interleaved rounds:")
    print(f"  float32 {statistics.median(times['float32']):.3f} s, bf16 autocast {statistics.median(times['bf16']):.3f} s; "
          f"float32 / bf16 {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
