"""Augmentations for spectrograms and piano rolls.

Pure functions on tensors shaped ``(..., F, T)`` (frequency or pitch bins, frames) that take
their random draws as arguments, plus thin helpers that draw them from a ``torch.Generator``
so a training sample's augmentation is a function of (seed, epoch, item) alone.

- :func:`gain` — a level change in dB, applied the way the feature kind needs it
  (added to dB features, a factor on linear magnitudes and piano-roll velocities);
- :func:`pitch_shift` — transpose a piano roll (or a CQT) by whole bins, filling with silence;
- :func:`time_shift` — circular shift along time;
- :func:`mask_` / :func:`spec_augment` — SpecAugment frequency and time masks (Park et al. 2019);
- :func:`mixup` — convex combinations of batch pairs with soft targets (Zhang et al. 2018);
- :class:`SpecAugment` — the masks as an ``nn.Module`` for use in other pipelines.
"""
from __future__ import annotations

import math

import torch
from torch import nn

DB_KINDS = ("logmel", "cqt")


def gain(x: torch.Tensor, db: float, kind: str, power: float = 2.0, n_mels: int = 128) -> torch.Tensor:
    """Change the level of raw (not normalised) features by ``db`` decibels.

    Args:
        x: ``(..., F, T)`` features of one ``kind``.
        db: gain in dB (positive = louder).
        kind: the feature kind: ``logmel``/``cqt`` (dB: ``x + db``), ``mfcc`` (only the 0th
            coefficient moves, by ``db * sqrt(n_mels)`` for the orthonormal DCT), ``stft``
            (magnitude: ``x * 10**(db/20)``), ``mel`` (magnitude**power: ``x * 10**(db*power/20)``),
            ``pianoroll`` (velocity in [0, 1]: scaled and clipped to 1; binary rolls are unchanged
            in effect since a note stays 1).
        power, n_mels: of the feature config (``mel`` and ``mfcc``).
    """
    if kind in DB_KINDS:
        return x + db
    if kind == "mfcc":
        x = x.clone()
        x[..., 0, :] += db * math.sqrt(n_mels)
        return x
    if kind == "stft":
        return x * 10 ** (db / 20)
    if kind == "mel":
        return x * 10 ** (db * power / 20)
    if kind == "pianoroll":
        return (x * 10 ** (db / 20)).clamp(max=1.0)
    raise ValueError(f"gain: unknown feature kind {kind!r}")


def pitch_shift(x: torch.Tensor, bins: int, fill: float = 0.0) -> torch.Tensor:
    """Shift ``(..., F, T)`` up by ``bins`` frequency/pitch bins (down when negative); bins that
    come in are ``fill`` (silence), bins pushed past the edge are dropped."""
    if bins == 0:
        return x
    out = torch.full_like(x, fill)
    if abs(bins) < x.shape[-2]:
        if bins > 0:
            out[..., bins:, :] = x[..., :-bins, :]
        else:
            out[..., :bins, :] = x[..., -bins:, :]
    return out


def time_shift(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Circularly shift ``(..., F, T)`` later in time by ``frames`` (earlier when negative)."""
    return torch.roll(x, frames, dims=-1) if frames else x


def mask_(x: torch.Tensor, axis: int, start: int, width: int, value: float = 0.0) -> torch.Tensor:
    """Set ``width`` bins (``axis=-2``) or frames (``axis=-1``) from ``start`` to ``value``, in place."""
    if axis == -2:
        x[..., start:start + width, :] = value
    else:
        x[..., start:start + width] = value
    return x


def _draw_masks(size: int, n: int, max_width: int, g: torch.Generator) -> list[tuple[int, int]]:
    masks = []
    for _ in range(n):
        width = int(torch.randint(0, min(max_width, size) + 1, (1,), generator=g))
        start = int(torch.randint(0, size - width + 1, (1,), generator=g))
        masks.append((start, width))
    return masks


def spec_augment(x: torch.Tensor, g: torch.Generator, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_width: int = 16, value: float = 0.0) -> torch.Tensor:
    """SpecAugment masks on one normalised example ``(C, F, T)`` (returns a masked copy).

    Each of ``freq_masks`` masks covers a uniform ``[0, freq_width]`` bins at a uniform position
    (the same for every channel); likewise ``time_masks`` masks of up to ``time_width`` frames.
    ``value`` 0 is the training mean after normalisation.
    """
    x = x.clone()
    for start, width in _draw_masks(x.shape[-2], freq_masks, freq_width, g):
        mask_(x, -2, start, width, value)
    for start, width in _draw_masks(x.shape[-1], time_masks, time_width, g):
        mask_(x, -1, start, width, value)
    return x


def mixup(x: torch.Tensor, target: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with a permutation of itself.

    Args:
        x: ``(batch, C, F, T)`` inputs.
        target: ``(batch, num_classes)`` target distributions (one-hot or smoothed).
        lam: weight of the original example, in [0, 1] (draw it from Beta(alpha, alpha)).
        perm: ``(batch,)`` permutation giving each example its partner.
    Returns:
        ``(lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm])``.
    """
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]


class SpecAugment(nn.Module):
    """SpecAugment masks on a batch ``(batch, C, F, T)`` while training (identity in eval),
    each example drawn independently from the global RNG."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 16):
        super().__init__()
        self.args = dict(freq_masks=freq_masks, freq_width=freq_width, time_masks=time_masks,
                         time_width=time_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        return torch.stack([spec_augment(example, g, **self.args) for example in x])

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.args.items())
