"""The data side of training: windows, crops, normalisation, folds, samplers and augmentations."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from audiostem import augment as aug
from audiostem.data import (CacheDataModule, EpochSampler, RandomCrops, ShardSampler, Windows, assign_folds,
                            clip_windows, crop_frames, input_stats, resolve_splits, to_cft, window_starts)
from audiostem.recipe import RecipeError, validate_recipe
from data_prep import Item
from fixtures import synthetic_cache


def recipe_for(cache, **data):
    return validate_recipe({"data": {"cache": str(cache), "crop_frames": 16, "batch_size": 4, **data}})


def test_window_starts_cover_the_clip():
    assert window_starts(10, 16, 16) == [0]
    assert window_starts(16, 16, 8) == [0]
    assert window_starts(40, 16, 16) == [0, 16, 24]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]


def test_layout_is_channels_bins_frames_and_short_clips_are_padded():
    x = np.arange(5 * 3, dtype=np.float16).reshape(5, 3)          # (frames, bins)
    assert to_cft(x).shape == (1, 3, 5) and to_cft(x)[0, 2, 4] == x[4, 2]
    multi = np.zeros((5, 2, 3), np.float16)                       # (frames, channels, bins)
    multi[1, 1, 2] = 7
    assert to_cft(multi).shape == (2, 3, 5) and to_cft(multi)[1, 2, 1] == 7
    pad = torch.full((1, 3), -1.0)
    out = crop_frames(x, 2, 6, pad)
    assert out.shape == (1, 3, 6)
    assert torch.equal(out[..., :3], to_cft(x[2:])) and (out[..., 3:] == -1).all()


def test_input_stats_modes():
    mean, std = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 2.0])
    s = input_stats(mean, std, "per_bin", "logmel")
    assert s["std"].tolist() == [[1.0, 1.0, 2.0]]                  # a constant bin keeps std 1
    assert s["pad"].tolist() == [[0.0, 1.0, 2.0]]                  # spectrogram silence = the bin mean
    g = input_stats(mean, std, "global", "pianoroll")
    assert torch.allclose(g["mean"], torch.full((1, 3), 1.0)) and (g["std"] == g["std"][0, 0]).all()
    assert g["pad"].tolist() == [[0.0, 0.0, 0.0]]                  # piano-roll silence = 0
    x = np.stack([mean, mean + std]).astype(np.float16)
    w = clip_windows(x, 4, 4, s)
    assert w.shape == (1, 1, 3, 4) and torch.allclose(w[0, 0, :, 0], torch.zeros(3))


def test_random_crops_depend_only_on_seed_epoch_and_item(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=4)
    stats = input_stats(*cache.stats, "per_bin", "logmel")
    ds = RandomCrops(cache, list(range(len(cache))), 16, stats, seed=1)
    a, b = ds[(3, 0)][0], ds[(3, 0)][0]
    assert torch.equal(a, b) and a.shape == (1, 16, 16)
    assert not torch.equal(a, ds[(3, 1)][0])                                         # another epoch, another crop
    loader = lambda workers: torch.utils.data.DataLoader(ds, batch_size=4, sampler=EpochSampler(len(ds), 1),
                                                         num_workers=workers)
    one, two = next(iter(loader(0))), next(iter(loader(2)))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_samplers_split_work_between_ranks():
    ranks = [list(EpochSampler(10, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)
    assert {p for r in ranks for p, _ in r} == set(range(10))
    shards = [list(ShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))


def test_windows_give_clip_ids(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=2, frames=(20, 40))
    stats = input_stats(*cache.stats, "per_bin", "logmel")
    ds = Windows(cache, [0, 3], 16, 8, stats)
    assert ds.n_clips == 2
    clips = [ds[n][2] for n in range(len(ds))]
    assert clips == sorted(clips) and set(clips) == {0, 1}
    assert all(ds[n][1] == cache.label_index([0, 3][ds[n][2]]) for n in range(len(ds)))


def test_splits_and_folds(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=10)
    (split,) = resolve_splits(cache, recipe_for(tmp_path / "cache"))
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (18, 6, 6)
    with pytest.raises(RecipeError, match=r"data\.val_split: no item .* has split 'dev'.*\['test', 'train', 'valid'\]"):
        resolve_splits(cache, recipe_for(tmp_path / "cache", val_split="dev"))
    (nov,) = resolve_splits(cache, recipe_for(tmp_path / "cache", val_split=None))
    assert nov["val"] == []
    # k folds made from a cache without folds: stratified, every item tested once
    runs = resolve_splits(cache, recipe_for(tmp_path / "cache", folds={"cv": 5}))
    assert [r["fold"] for r in runs] == [1, 2, 3, 4, 5]
    assert sorted(sum((r["test"] for r in runs), [])) == list(range(len(cache)))
    for r in runs:
        assert not set(r["train"]) & set(r["val"]) and not set(r["train"]) & set(r["test"])
        assert len(r["train"]) + len(r["val"]) + len(r["test"]) == len(cache)
    with pytest.raises(RecipeError, match=r"data\.folds: the cache .* has no folds"):
        resolve_splits(cache, recipe_for(tmp_path / "cache", folds=[1]))


def test_the_cache_folds_are_used(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=10, folds=5)
    runs = resolve_splits(cache, recipe_for(tmp_path / "cache", folds=[2, 5]))
    assert [r["fold"] for r in runs] == [2, 5]
    assert all(cache.items[i].fold == 3 for i in runs[0]["val"])       # validation: the next fold
    assert all(cache.items[i].fold == 1 for i in runs[1]["val"])
    with pytest.raises(RecipeError, match=r"data\.folds\.cv: the cache .* has 5 folds"):
        resolve_splits(cache, recipe_for(tmp_path / "cache", folds={"cv": 10}))
    with pytest.raises(RecipeError, match=r"data\.folds: fold 7 is not in the cache's folds \[1, 2, 3, 4, 5\]"):
        resolve_splits(cache, recipe_for(tmp_path / "cache", folds=[7]))
    dm = CacheDataModule(cache, recipe_for(tmp_path / "cache", folds=[2]), runs[0])
    assert dm.stats["mean"].shape == (1, 16)


def test_validation_held_out_from_the_training_folds(tmp_path):
    # leave-one-out folds (a soundfont, a game): validation is part of every training fold,
    # stratified by (label, fold), a group on one side, never the test fold
    cache = synthetic_cache(tmp_path / "cache", per_class=40, folds=4, group_size=2)
    recipe = recipe_for(tmp_path / "cache", folds={"cv": 4, "val": "train", "val_fraction": 0.25})
    runs = resolve_splits(cache, recipe)
    assert [r["fold"] for r in runs] == [1, 2, 3, 4]
    for r in runs:
        test_fold = r["fold"]
        assert {cache.items[i].fold for i in r["test"]} == {test_fold}
        assert sorted(r["train"] + r["val"]) == [i for i, it in enumerate(cache.items) if it.fold != test_fold]
        strata = {}
        for i in r["val"]:
            key = (cache.items[i].label, cache.items[i].fold)
            strata[key] = strata.get(key, 0) + 1
        assert set(strata) == {(c, f) for c in "abc" for f in range(1, 5) if f != test_fold}
        assert all(2 <= n <= 4 for n in strata.values())             # about 25% of 10 items each
        groups = lambda idx: {cache.items[i].group for i in idx}  # noqa: E731
        assert not groups(r["train"]) & groups(r["val"])
    assert resolve_splits(cache, recipe) == runs                      # the same for one seed ...
    other = resolve_splits(cache, validate_recipe({**recipe.to_dict(), "seed": 1}))
    assert other[0]["val"] != runs[0]["val"]                          # ... and another for another
    # one group per (label, fold): nothing can be held out, said with the field to change
    whole = synthetic_cache(tmp_path / "whole", per_class=8, folds=4, group_size=8)
    whole.items = [replace(it, group=f"{it.label}{it.fold}") for it in whole.items]
    with pytest.raises(RecipeError, match=r"data\.folds\.val: .* left no validation item"):
        resolve_splits(whole, recipe_for(tmp_path / "whole", folds={"cv": 4, "val": "train"}))
    with pytest.raises(RecipeError, match="val_fraction"):
        recipe_for(tmp_path / "cache", folds={"cv": 4, "val": "train", "val_fraction": 1.5})


def test_assign_folds_keeps_groups_together():
    items = [Item(id=str(n), source=f"{n}.wav", checksum="", label="a" if n % 2 else "b", split="", fold=None,
                  group=f"g{n // 4}", frames=10, shard=0, offset=10 * n) for n in range(40)]
    folds = assign_folds(items, 4, seed=0)
    by_group = {}
    for it, f in zip(items, folds):
        by_group.setdefault((it.label, it.group), set()).add(f)
    assert all(len(f) == 1 for f in by_group.values()) and set(folds) == {1, 2, 3, 4}


def test_pitch_shift_only_for_rolls_and_cqt(tmp_path):
    cache = synthetic_cache(tmp_path / "cache", per_class=5)
    split = resolve_splits(cache, recipe_for(tmp_path / "cache"))[0]
    with pytest.raises(RecipeError, match=r"augment\.pitch_shift: .*'logmel'"):
        CacheDataModule(cache, validate_recipe({"data": {"cache": str(tmp_path / "cache")},
                                                "augment": {"pitch_shift": True}}), split)


def test_augmentations():
    x = torch.zeros(1, 8, 10)
    x[0, 3, :] = 0.5
    up = aug.pitch_shift(x, 2)
    assert up[0, 5].eq(0.5).all() and up[0, 3].eq(0).all() and up.shape == x.shape
    assert aug.pitch_shift(x, -4)[0, 0].eq(0) .all() and aug.pitch_shift(x, -3)[0, 0].eq(0.5).all()
    assert aug.pitch_shift(x, 20).eq(0).all()
    assert aug.gain(x, 6, "pianoroll").max() == pytest.approx(0.5 * 10 ** 0.3)
    assert aug.gain(torch.ones(2, 2), 20, "pianoroll").max() == 1.0          # velocities stay <= 1
    assert torch.equal(aug.gain(x, 3, "logmel"), x + 3)
    assert aug.gain(torch.ones(1, 1), 20, "stft").item() == pytest.approx(10)
    ramp = torch.arange(10.0).expand(1, 8, 10)
    assert aug.time_shift(ramp, 3)[0, 0, 3] == 0
    g = torch.Generator().manual_seed(0)
    masked = aug.spec_augment(torch.ones(2, 16, 32), g, freq_masks=1, freq_width=16, time_masks=1, time_width=32)
    assert masked.shape == (2, 16, 32) and torch.equal(masked[0], masked[1])  # channels masked alike
    xb, yb = torch.randn(4, 1, 2, 2), torch.eye(4)
    mx, my = aug.mixup(xb, yb, 0.7, torch.tensor([1, 0, 3, 2]))
    assert torch.allclose(mx[0], 0.7 * xb[0] + 0.3 * xb[1]) and torch.allclose(my.sum(1), torch.ones(4))
    module = aug.SpecAugment(1, 4, 1, 4).eval()
    assert torch.equal(module(xb), xb)
