"""How much does our training loop cost over a plain PyTorch loop, and is loading ever the bottleneck?

    python benchmarks/train_loop.py [--cache CACHE] [--stem deep3] [--body narrow] [--batch-size 32]
                                    [--crop 64] [--steps 40] [--rounds 3] [--threads N] [--workers 0]

In one run, on the same model, batch size and data (a feature cache: ``--cache``, or a synthetic
piano-roll cache shaped like the folk one, 88 pitches, written to a temporary folder):

1. **steps/s of our loop** (Lightning ``Trainer`` + ``ClassifierTask`` + ``CacheDataModule``, the
   History callback and the CSV/TensorBoard loggers of a real run; progress bar off) **against a
   plain PyTorch loop** (the same DataLoader, model, AdamW + one-cycle, cross-entropy with label
   smoothing: ``zero_grad / forward / backward / step``). Goal: within 5%.
2. both with ``channels_last`` off and on;
3. **DataLoader samples/s** (iterating the training loader alone) against **what the model
   consumes** (batch size x steps/s of the plain loop). Goal: the loader at least 5x faster.

Configurations are interleaved round by round (A B C D, A B C D, ...) so that a machine's load
drifting over time hits all of them alike; the median over rounds is reported. Only steady-state
steps count (the first ``--warmup`` steps of each measurement are excluded).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def synthetic_roll_cache(out: Path, n: int = 1500, classes: int = 5, seed: int = 0):
    """A piano-roll cache shaped like the folk one: 1500 items split 70/15/15, 88 pitches,
    64-1024 frames per item."""
    from data_prep import CacheWriter, PianoRollFeatures
    rng = np.random.default_rng(seed)
    config = PianoRollFeatures(beat_resolution=4, pitch_range="piano", values="binary")
    writer = CacheWriter(out, config, {"source": "benchmark"}, [f"c{k}" for k in range(classes)])
    for i in range(n):
        frames = int(rng.integers(64, 1024))
        x = np.zeros((frames, 88), np.float32)
        x[np.arange(frames), rng.integers(30, 70, frames)] = 1
        writer.add(x, id=str(i), source=f"{i}.mid", label=f"c{i % classes}",
                   split="train" if i % 20 < 14 else "valid" if i % 20 < 17 else "test")
    return writer.finish()


def make_recipe(cache: str, args: argparse.Namespace, channels_last: bool):
    from audiostem.recipe import validate_recipe
    return validate_recipe({
        "seed": 0, "out_dir": tempfile.mkdtemp(prefix="bench_run_"),
        "data": {"cache": cache, "crop_frames": args.crop, "batch_size": args.batch_size,
                 "num_workers": args.workers, "normalize": "global"},
        "model": {"stem": args.stem, "body": args.body, "channels_last": channels_last},
        "train": {"max_epochs": 1, "label_smoothing": 0.1},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "limit_train_batches": args.steps, "limit_val_batches": 0},
    })


def build(cache, recipe):
    from audiostem.data import CacheDataModule, resolve_splits
    from audiostem.task import ClassifierTask
    torch.manual_seed(0)
    dm = CacheDataModule(cache, recipe, resolve_splits(cache, recipe)[0])
    task = ClassifierTask(recipe.to_dict(), cache.classes, dm.in_channels, dm.bins)
    return dm, task


CLOCK = time.perf_counter      # or time.process_time (--clock cpu)


class StepTimer:
    """Times steps ``warmup .. end`` of a loop: call :meth:`tick` after every step."""

    def __init__(self, warmup: int):
        self.warmup, self.n, self.t0, self.t1 = warmup, 0, None, None

    def tick(self) -> None:
        self.n += 1
        if self.n == self.warmup:
            self.t0 = CLOCK()
        self.t1 = CLOCK()

    @property
    def steps_per_second(self) -> float:
        return (self.n - self.warmup) / (self.t1 - self.t0)


def lightning_loop(cache, recipe, warmup: int) -> float:
    """Steps/s of the training loop ``audiostem.train`` runs (without validation)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from audiostem.task import History
    dm, task = build(cache, recipe)
    timer = StepTimer(warmup)

    class Tick(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            timer.tick()

    out = Path(recipe.out_dir)
    trainer = pl.Trainer(max_epochs=1, logger=[CSVLogger(out, name="logs", version=""),
                                               TensorBoardLogger(out, name="logs", version="")],
                         callbacks=[History(out / "history.csv"), Tick()], enable_checkpointing=False,
                         num_sanity_val_steps=0, use_distributed_sampler=False, log_every_n_steps=50,
                         **recipe.trainer)
    trainer.fit(task, datamodule=dm)
    return timer.steps_per_second


def plain_loop(cache, recipe, warmup: int) -> float:
    """Steps/s of a hand-written loop over the same loader and model."""
    dm, task = build(cache, recipe)
    channels_last = recipe.model.channels_last
    model = task.model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = dm.train_dataloader()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.train.lr, total_steps=len(loader))
    timer = StepTimer(warmup)
    for step, (x, y) in enumerate(loader):
        if step == recipe.trainer["limit_train_batches"]:
            break
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=recipe.train.label_smoothing)
        loss.backward()
        opt.step()
        sched.step()
        timer.tick()
    return timer.steps_per_second


def loader_rate(cache, recipe, batches: int) -> float:
    """Samples/s of the training DataLoader alone."""
    dm, _ = build(cache, recipe)
    it = iter(dm.train_dataloader())
    next(it)                                   # start-up (workers) is not steady state
    t0, n = CLOCK(), 0
    for _ in range(batches):
        try:
            n += len(next(it)[0])
        except StopIteration:
            break
    return n / (CLOCK() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", help="a feature cache (default: a synthetic folk-shaped piano-roll cache)")
    p.add_argument("--stem", default="deep3")
    p.add_argument("--body", default="narrow")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=64, help="frames per example (default 64)")
    p.add_argument("--steps", type=int, default=40, help="steps per measurement (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="steps excluded at the start (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default); cpu: this process's CPU time, which neighbours on a "
                        "shared machine do not inflate (use it with --threads 1, where no thread spins)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    from audiostem.train import quiet_lightning
    quiet_lightning()
    warnings.filterwarnings("ignore")
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    import data_prep
    if args.cache:
        cache = data_prep.open_cache(args.cache)
    else:
        cache = synthetic_roll_cache(Path(tempfile.mkdtemp(prefix="bench_cache_")) / "cache")
    cache_path = str(cache.path)
    n_train = len(resolve_train(cache))
    args.steps = min(args.steps, n_train // args.batch_size)
    print(f"cache {cache_path}: {len(cache)} items ({n_train} train), input {cache.meta['feature_shape']} x "
          f"{args.crop} frames; model {args.stem} + {args.body}; batch {args.batch_size}; {args.steps} steps "
          f"({args.warmup} warm-up) x {args.rounds} rounds; torch threads {torch.get_num_threads()}, "
          f"DataLoader workers {args.workers}; {args.clock} clock", flush=True)
    configs = [(loop, cl) for cl in (False, True) for loop in ("lightning", "plain")]
    rates: dict = {c: [] for c in configs}
    loads: list[float] = []
    for r in range(args.rounds):
        for loop, cl in configs:
            recipe = make_recipe(cache_path, args, cl)
            fn = lightning_loop if loop == "lightning" else plain_loop
            rates[(loop, cl)].append(fn(cache, recipe, args.warmup))
        loads.append(loader_rate(cache, make_recipe(cache_path, args, False), args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{loop}{' channels_last' if cl else ''} {v[-1]:.2f} steps/s"
                                           for (loop, cl), v in rates.items())
              + f", loader {loads[-1]:.0f} samples/s", flush=True)
    med = {c: statistics.median(v) for c, v in rates.items()}
    result = {"steps_per_second": {f"{loop}{'_channels_last' if cl else ''}": round(v, 3) for (loop, cl), v in med.items()},
              "loader_samples_per_second": round(statistics.median(loads), 1)}
    print("\n| loop | channels_last | steps/s | samples/s | ours / plain |")
    print("|---|---|---|---|---|")
    for (loop, cl), v in med.items():
        ratio = v / med[("plain", cl)]
        print(f"| {loop} | {'on' if cl else 'off'} | {v:.2f} | {v * args.batch_size:.0f} | {ratio:.3f} |")
    consume = med[("plain", False)] * args.batch_size
    loader = statistics.median(loads)
    print(f"\nDataLoader: {loader:.0f} samples/s; the model consumes {consume:.0f} samples/s "
          f"(plain loop, channels_last off): loader / model = {loader / consume:.1f}x (goal >= 5x)")
    overhead = 1 - med[("lightning", False)] / med[("plain", False)]
    print(f"our loop vs plain PyTorch: {abs(100 * overhead):.1f}% {'slower' if overhead > 0 else 'faster'} "
          f"(goal: at most 5% slower); channels_last speed-up: plain loop "
          f"{med[('plain', True)] / med[('plain', False)]:.2f}x, ours {med[('lightning', True)] / med[('lightning', False)]:.2f}x")
    result.update({"loader_over_model": round(loader / consume, 2), "overhead": round(overhead, 4),
                   "args": vars(args), "torch_threads": torch.get_num_threads()})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def resolve_train(cache):
    return cache.indices(split="train")


if __name__ == "__main__":
    sys.exit(main())
