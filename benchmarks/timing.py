"""Timing helpers shared by the benchmark scripts (not part of the audiostem API)."""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import nn


def step_time(model: nn.Module, input_shape: tuple[int, int, int] = (1, 128, 256), batch: int = 32,
              steps: int = 5, autocast: Optional[torch.dtype] = None) -> float:
    """Seconds of one SGD training step (forward, cross-entropy, backward, update) on a batch of
    ``batch`` random inputs of ``input_shape = (C, F, T)``: the fastest of ``steps`` steps after
    one warm-up step (the fastest, because a shared machine only ever adds time). ``autocast``:
    run forward and loss under ``torch.autocast("cpu", dtype=autocast)`` (e.g. ``torch.bfloat16``;
    Lightning's ``precision: bf16-mixed`` on CPU)."""
    x = torch.randn(batch, *input_shape)
    with torch.no_grad():
        classes = model.eval()(x[:1]).shape[1]
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])
