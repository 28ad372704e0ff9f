"""What does an audiostem stem cost inside a timm body? Training-step time of deep3 against the
body's native stem, on CPU.

    python benchmarks/stem_bodies.py [--bodies timm:resnet18 timm:efficientnet_b0] [--stem deep3]
                                     [--input 1 88 128] [--batch-size 16] [--rounds 5] [--steps 3]
                                     [--threads N]

For each body, two models (``--stem``, and ``native``: the body's own stem with its first conv
summed to one channel) train on the same random batch: forward, cross-entropy, backward, SGD
step (``audiostem.models.step_time``: the fastest of ``--steps`` steps after a warm-up step).
The configurations are measured side by side, interleaved round by round (A B C D, A B C D, ...)
so that a shared machine's load drifting over time hits all of them alike; the median over
rounds is reported, with the ratio stem / native and the forward FLOPs of each model.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from audiostem import build_model, describe_model
from audiostem.models import step_time


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
    for _ in range(args.rounds):
        for c in configs:
            times[c].append(step_time(models[c], shape, args.batch_size, args.steps))
    threads = torch.get_num_threads()
    print(f"training step, batch {args.batch_size} x {'x'.join(map(str, shape))}, CPU ({threads} threads), "
          f"median of {args.rounds} interleaved rounds:")
    for body in args.bodies:
        mine, native = (statistics.median(times[(body, s)]) for s in (args.stem, "native"))
        print(f"  {body}: {args.stem} {mine:.3f} s, native {native:.3f} s, ratio {mine / native:.2f}x "
              f"(forward GFLOPs per item {flops[(body, args.stem)] / 1e9:.2f} vs {flops[(body, 'native')] / 1e9:.2f})")


if __name__ == "__main__":
    main()
