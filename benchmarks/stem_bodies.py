"""What does an audiostem stem cost inside a timm body? Training-step time of deep3 against the
body's native stem, on CPU.

    python benchmarks/stem_bodies.py [--bodies timm:resnet18 timm:efficientnet_b0] [--stem deep3]
                                     [--input 1 88 128] [--batch-size 16] [--rounds 5] [--steps 3]
                                     [--threads N]

For each body, two models (``--stem``, and ``native``: the body's own stem with its first conv
summed to one channel) train on the same random batch: forward, cross-entropy, backward, SGD
step (``timing.step_time`` beside this script: the fastest of ``--steps`` steps after a warm-up step).
The two models of a body are measured side by side, interleaved round by round (A B, then B A,
...) so that a shared machine's load drifting over time hits both alike; each round gives a paired
ratio stem / native, and the median of those ratios is reported with their range, beside the
median step times and the forward FLOPs of each model. On a shared machine use ``--threads 1``:
two threads on two busy cores mostly wait for each other.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from audiostem import build_model, describe_model
from timing import step_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", nargs="+", default=["timm:resnet18", "timm:efficientnet_b0"])
    parser.add_argument("--stem", default="deep3")
    parser.add_argument("--input", nargs=3, type=int, default=[1, 88, 128], metavar=("C", "F", "T"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(args.input)
    configs = [(body, stem) for body in args.bodies for stem in (args.stem, "native")]
    torch.manual_seed(0)
    models = {c: build_model(c[1], c[0], num_classes=10, in_channels=shape[0]) for c in configs}
    flops = {c: describe_model(m, shape, receptive_field=False)["flops"] for c, m in models.items()}
    times: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    ratios: dict[str, list[float]] = {body: [] for body in args.bodies}
    for r in range(args.rounds):
        for body in args.bodies:
            pair = (args.stem, "native") if r % 2 == 0 else ("native", args.stem)   # A B, then B A
            for stem in pair:
                times[(body, stem)].append(step_time(models[(body, stem)], shape, args.batch_size, args.steps))
            ratios[body].append(times[(body, args.stem)][-1] / times[(body, "native")][-1])
    threads = torch.get_num_threads()
    print(f"training step, batch {args.batch_size} x {'x'.join(map(str, shape))}, CPU ({threads} "
          f"thread{'s' * (threads != 1)}), {args.rounds} interleaved rounds (median; ratio: median of "
          "the rounds' paired ratios, with their range):")
    for body in args.bodies:
        mine, native = (statistics.median(times[(body, s)]) for s in (args.stem, "native"))
        rs = ratios[body]
        print(f"  {body}: {args.stem} {mine:.3f} s, native {native:.3f} s, {args.stem} / native "
              f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f}); forward GFLOPs per item "
              f"{flops[(body, args.stem)] / 1e9:.2f} vs {flops[(body, 'native')] / 1e9:.2f}")


if __name__ == "__main__":
    main()
