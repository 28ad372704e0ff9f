"""Batches from a feature cache: splits and folds, normalisation, crops and windows.

The cache stores each item as ``(frames, bins)`` or ``(frames, channels, bins)`` float16; the
model sees ``(batch, channels, bins, frames)``: frequency or pitch on the H axis, time on W.

- Training draws one random crop of ``crop_frames`` per item per epoch (short items are
  padded with silence), augments it and normalises it. Every random draw is a function of
  (seed, epoch, item), so a run is the same with any number of DataLoader workers and after a
  resume.
- Evaluation cuts every clip into windows of ``crop_frames`` every ``eval_hop`` frames (the last
  one aligned to the clip's end) and returns the clip index of each window, so the task can
  average window logits per clip.

Workers and DDP ranks share the memory-mapped shards; only the sliced frames are read.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from data_prep.cache import Item
from data_prep.discover import shown
from torch.utils.data import DataLoader, Dataset, Sampler

from . import augment as aug
from .recipe import CrossValidation, Recipe, RecipeError

Split = dict[str, Any]   # {"fold": int | None, "train": [...], "val": [...], "test": [...]}


# --- pure helpers -------------------------------------------------------------------------------
def to_cft(x: np.ndarray) -> torch.Tensor:
    """Cache frames ``(frames, bins)`` or ``(frames, C, bins)`` -> float32 ``(C, bins, frames)``."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = t.unsqueeze(1) if t.ndim == 2 else t
    return t.permute(1, 2, 0).contiguous()


def window_starts(frames: int, crop: int, hop: int) -> list[int]:
    """Start frames of the evaluation windows of a clip: every ``hop`` frames while a whole
    window fits, plus one window aligned to the clip's end (one window for a short clip)."""
    if frames <= crop:
        return [0]
    starts = list(range(0, frames - crop + 1, hop))
    if starts[-1] != frames - crop:
        starts.append(frames - crop)
    return starts


def crop_frames(x: np.ndarray, start: int, length: int, pad: torch.Tensor) -> torch.Tensor:
    """Frames ``[start, start + length)`` of raw cache features as ``(C, F, length)``; past the end
    of the clip the ``(C, F)`` column ``pad`` (silence) is repeated."""
    t = to_cft(x[start:start + length])
    if t.shape[-1] < length:
        t = torch.cat([t, pad.unsqueeze(-1).expand(*pad.shape, length - t.shape[-1])], dim=-1)
    return t


def input_stats(mean: np.ndarray, std: np.ndarray, mode: str, kind: str) -> dict[str, torch.Tensor]:
    """Normalisation and padding as ``(C, F)`` tensors from per-bin train statistics.

    Args:
        mean, std: per-bin statistics of shape ``feature_shape`` (``(bins,)`` or ``(C, bins)``).
        mode: ``per_bin`` (each bin to mean 0, std 1), ``global`` (one mean and std for all
            bins of a channel: keeps the relative level of bins, which pitch shifts need), or
            ``none``.
        kind: the feature kind; silence (the padding) is 0 for piano rolls and the bin mean
            for spectrograms.
    Returns ``{"mean", "std", "pad"}``; constant bins get std 1.
    """
    mean = torch.as_tensor(np.asarray(mean, np.float32)).reshape(-1, np.shape(mean)[-1])
    std = torch.as_tensor(np.asarray(std, np.float32)).reshape(-1, np.shape(std)[-1])
    pad = torch.zeros_like(mean) if kind == "pianoroll" else mean.clone()
    if mode == "global":
        m = mean.mean(dim=1, keepdim=True)
        var = (std**2 + mean**2).mean(dim=1, keepdim=True) - m**2
        mean, std = m.expand_as(pad).clone(), var.clamp(min=0).sqrt().expand_as(pad).clone()
    elif mode == "none":
        mean, std = torch.zeros_like(pad), torch.ones_like(pad)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return {"mean": mean, "std": std, "pad": pad}


def normalize(x: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(x - mean) / std`` for ``(..., C, F, T)`` with ``(C, F)`` statistics."""
    return (x - stats["mean"].unsqueeze(-1)) / stats["std"].unsqueeze(-1)


def clip_windows(x: np.ndarray, crop: int, hop: int, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """All evaluation windows of one clip of raw features, normalised: ``(windows, C, F, crop)``."""
    return torch.stack([normalize(crop_frames(x, s, crop, stats["pad"]), stats)
                        for s in window_starts(len(x), crop, hop)])


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python runs)."""
    digest = hashlib.blake2b(np.asarray(parts, np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# --- datasets and samplers ----------------------------------------------------------------------
@dataclass
class Augmentation:
    """The per-example training augmentations of a recipe, applied to raw ``(C, F, T)`` features
    (gain, pitch shift, time shift) and, after normalisation, SpecAugment masks."""

    recipe_augment: Any
    kind: str
    feature_config: dict
    crop: int

    def raw(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        a = self.recipe_augment
        if a.gain.enabled:
            db = (torch.rand(1, generator=g).item() * 2 - 1) * a.gain.max_db
            x = aug.gain(x, db, self.kind, self.feature_config.get("power", 2.0),
                         self.feature_config.get("n_mels", 128))
        if a.pitch_shift.enabled:
            k = a.pitch_shift.max_semitones
            semitones = int(torch.randint(-k, k + 1, (1,), generator=g))
            per_semitone = 1 if self.kind == "pianoroll" else self.feature_config["bins_per_octave"] // 12
            x = aug.pitch_shift(x, semitones * per_semitone, fill=0.0 if self.kind == "pianoroll"
                                else float(x.min()))
        if a.time_shift.enabled:
            k = a.time_shift.max_frames or self.crop // 4
            x = aug.time_shift(x, int(torch.randint(-k, k + 1, (1,), generator=g)))
        return x

    def normalized(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = self.recipe_augment.specaugment
        if s.enabled:
            x = aug.spec_augment(x, g, s.freq_masks, s.freq_width, s.time_masks, s.time_width)
        return x


class RandomCrops(Dataset):
    """Training examples: a random ``crop``-frame crop of each item, augmented and normalised.

    Indexed by ``(position, epoch)`` pairs (see :class:`EpochSampler`); returns
    ``(x (C, F, crop) float32, label int)``.
    """

    def __init__(self, cache, indices: list[int], crop: int, stats: dict, seed: int,
                 augmentation: Optional[Augmentation] = None):
        self.cache, self.indices, self.crop, self.stats = cache, indices, crop, stats
        self.seed, self.augmentation = seed, augmentation

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        pos, epoch = key
        i = self.indices[pos]
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i))
        feats = self.cache.features(i)
        room = len(feats) - self.crop
        start = int(torch.randint(0, room + 1, (1,), generator=g)) if room > 0 else 0
        x = crop_frames(feats, start, self.crop, self.stats["pad"])
        if self.augmentation is not None:
            x = self.augmentation.raw(x, g)
        x = normalize(x, self.stats)
        if self.augmentation is not None:
            x = self.augmentation.normalized(x, g)
        return x, self.cache.label_index(i)


class Windows(Dataset):
    """Evaluation examples: every window of every item. Returns
    ``(x (C, F, crop) float32, label int, clip int)`` where ``clip`` indexes :attr:`indices`."""

    def __init__(self, cache, indices: list[int], crop: int, hop: int, stats: dict):
        self.cache, self.indices, self.crop, self.stats = cache, indices, crop, stats
        self.windows = [(c, s) for c, i in enumerate(indices)
                        for s in window_starts(cache.items[i].frames, crop, hop)]

    @property
    def n_clips(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, int, int]:
        clip, start = self.windows[n]
        i = self.indices[clip]
        x = crop_frames(self.cache.features(i), start, self.crop, self.stats["pad"])
        return normalize(x, self.stats), self.cache.label_index(i), clip


class EpochSampler(Sampler):
    """Shuffled ``(position, epoch)`` pairs, the order a function of (seed, epoch); with
    ``world_size`` > 1 each rank takes every ``world_size``-th of the order, padded by
    repetition to equal length (like ``DistributedSampler``)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size, self.epoch = n, seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[:len(self) * self.world_size - self.n]
        return iter([(p, self.epoch) for p in order[self.rank::self.world_size]])


class ShardSampler(Sampler):
    """A contiguous, unpadded share of ``range(n)`` for one rank (evaluation: every window is
    seen exactly once over all ranks, so summed logits are exact)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.range = range(n * rank // world_size, n * (rank + 1) // world_size)

    def __len__(self) -> int:
        return len(self.range)

    def __iter__(self) -> Iterator[int]:
        return iter(self.range)


# --- splits and folds ---------------------------------------------------------------------------
def assign_folds(items: list[Item], k: int, seed: int) -> list[int]:
    """Stratified folds ``1..k`` for items without any: per label, groups of items (the ``group``
    field, or each item alone) are shuffled with ``seed`` and dealt round-robin."""
    folds = [0] * len(items)
    rng = np.random.default_rng(seed)
    by_label: dict[str, dict[str, list[int]]] = {}
    for n, it in enumerate(items):
        by_label.setdefault(it.label, {}).setdefault(it.group or f"#{n}", []).append(n)
    offset = 0
    for label in sorted(by_label):
        groups = [by_label[label][g] for g in sorted(by_label[label])]
        for j, p in enumerate(rng.permutation(len(groups))):
            for n in groups[p]:
                folds[n] = (offset + j) % k + 1
        offset += len(groups)
    return folds


def resolve_splits(cache, recipe: Recipe) -> list[Split]:
    """The train/val/test item indices of each run: one run for fixed splits, one per test
    fold for cross-validation. Raises :class:`RecipeError` naming ``data.*`` when a split is
    empty or a fold does not exist."""
    d = recipe.data
    if d.folds is None:
        out: Split = {"fold": None}
        for role, name in (("train", d.train_split), ("val", d.val_split), ("test", d.test_split)):
            out[role] = cache.indices(split=name) if name is not None else []
            if name is not None and not out[role]:
                present = cache.splits
                hint = ("; set it to null to train without one" if role != "train" else "")
                raise RecipeError(f"data.{role}_split: no item of {cache.path} has split {name!r}; "
                                  f"its splits are {present}{hint}")
        return [out]
    cv = d.folds if isinstance(d.folds, CrossValidation) else CrossValidation(cv=2, test=list(d.folds))
    folds = [it.fold for it in cache.items]
    present = sorted({f for f in folds if f is not None})
    if isinstance(d.folds, CrossValidation):
        if not present:
            folds = assign_folds(cache.items, cv.cv, recipe.seed)
            present = list(range(1, cv.cv + 1))
        elif len(present) != cv.cv:
            raise RecipeError(f"data.folds.cv: the cache {shown(cache.path)} has {len(present)} folds "
                              f"{present}, not {cv.cv}")
    elif not present:
        raise RecipeError(f"data.folds: the cache {shown(cache.path)} has no folds; use data.folds={{cv: K}} "
                          "to make K stratified folds")
    runs = []
    for test in cv.test or present:
        if test not in present:
            raise RecipeError(f"data.folds: fold {test} is not in the cache's folds {present}")
        val = present[(present.index(test) + 1) % len(present)] if cv.val == "next" else None
        run = {"fold": test,
               "train": [i for i, f in enumerate(folds) if f not in (test, val)],
               "val": [i for i, f in enumerate(folds) if f == val],
               "test": [i for i, f in enumerate(folds) if f == test]}
        if not run["train"]:
            raise RecipeError(f"data.folds: test fold {test}" + (f" and validation fold {val}" if val is not None else "")
                              + f" leave no training item among the folds {present}; use more folds "
                              "(data.folds.cv), or val: train (a held-out part of the training folds) or none")
        if cv.val == "train":
            run["train"], run["val"] = held_out(cache.items, run["train"], folds, cv.val_fraction, recipe.seed)
            if not run["val"]:
                raise RecipeError(f"data.folds.val: holding out {cv.val_fraction} of the training folds "
                                  f"of test fold {test} left no validation item (each label and fold has "
                                  f"one group only?); raise data.folds.val_fraction or use val: next")
        runs.append(run)
    return runs


def held_out(items: list[Item], indices: list[int], folds: list, fraction: float,
             seed: int) -> tuple[list[int], list[int]]:
    """``(train, val)``: ``indices`` split so that ``val`` holds about ``fraction`` of every
    (label, fold) stratum, items of one ``group`` on one side (seeded by ``seed``; the split of
    :func:`data_prep.sources.group_split`)."""
    from data_prep.sources import group_split

    chosen = [items[i] for i in indices]
    sides = group_split([it.id for it in chosen], [f"{it.label}|{folds[i]}" for i, it in zip(indices, chosen)],
                        [it.group for it in chosen], {"train": 1 - fraction, "valid": fraction},
                        seed=seed)
    return ([i for i, s in zip(indices, sides) if s == "train"],
            [i for i, s in zip(indices, sides) if s == "valid"])


def train_stats(cache, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std over the frames of ``indices`` (float64, shape ``feature_shape``),
    summed as the cache sums its own train statistics (:mod:`data_prep.feature_stats`)."""
    from data_prep.feature_stats import Sums, item_sums

    sums = Sums(cache.config.feature_shape)
    for i in indices:
        x = cache.features(i)
        sums.add(len(x), *item_sums(x))
    return sums.mean_std()


# --- the data module ----------------------------------------------------------------------------
class CacheDataModule(pl.LightningDataModule):
    """Loaders over one run of :func:`resolve_splits` of a cache.

    Args:
        cache: an open :class:`data_prep.FeatureCache`.
        recipe: the validated recipe (``data.*`` and ``augment.*`` are used).
        split: one entry of ``resolve_splits(cache, recipe)``.

    Attributes: ``stats`` (the ``(C, F)`` normalisation/padding tensors), ``in_channels``,
    ``bins``, ``num_classes``, ``eval_hop``.
    """

    def __init__(self, cache, recipe: Recipe, split: Split):
        super().__init__()
        self.cache, self.recipe, self.split = cache, recipe, split
        d = recipe.data
        self.crop = d.crop_frames
        self.eval_hop = d.eval_hop or d.crop_frames
        kind = cache.config.kind
        mean, std = cache.stats if split["fold"] is None else train_stats(cache, split["train"])
        self.stats = input_stats(mean, std, d.normalize, kind)
        self.in_channels, self.bins = self.stats["mean"].shape
        self.num_classes = len(cache.classes)
        if recipe.augment.pitch_shift.enabled and kind not in ("pianoroll", "cqt"):
            raise RecipeError(f"augment.pitch_shift: transposes piano rolls or CQT bins; the cache "
                              f"{shown(cache.path)} holds {kind!r} features")
        a = recipe.augment
        raw_on = any(t.enabled for t in (a.gain, a.pitch_shift, a.time_shift, a.specaugment))
        self.augmentation = Augmentation(a, kind, cache.config.to_dict(), self.crop) if raw_on else None

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, dataset: Dataset, sampler: Sampler, batch_size: int, drop_last: bool = False) -> DataLoader:
        workers = self.recipe.data.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0, drop_last=drop_last,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        ds = RandomCrops(self.cache, self.split["train"], self.crop, self.stats, self.recipe.seed, self.augmentation)
        bs = self.recipe.data.batch_size
        return self._loader(ds, EpochSampler(len(ds), self.recipe.seed, rank, world), bs,
                            drop_last=len(ds) // world > bs)

    def eval_dataset(self, role: str) -> Windows:
        return Windows(self.cache, self.split[role], self.crop, self.eval_hop, self.stats)

    def _eval_loader(self, role: str) -> DataLoader:
        rank, world = self._rank()
        ds = self.eval_dataset(role)
        return self._loader(ds, ShardSampler(len(ds), rank, world), self.recipe.data.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
