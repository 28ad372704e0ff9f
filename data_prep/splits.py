"""Deterministic, seeded train/valid/test splits for datasets that come without one.

:func:`stratified_split` divides every label's items by the given fractions; :func:`group_split`
does the same with groups (a tune, a speaker, a work) that never straddle splits. Both rank items
by a hash of the seed and their key, so a split is the same on every machine and Python version,
and adding items moves no existing one unless its class's counts change. Used by the dataset
sources (:mod:`data_prep.sources`) and by the built-in corpora (:mod:`data_prep.folk`,
:mod:`data_prep.polyphony`).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Optional, Sequence

DEFAULT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}


def seeded_rank(key: str, seed: int) -> str:
    """A seeded, platform-independent sort key: adding items never reshuffles the others."""
    return hashlib.sha1(f"{seed}:{key}".encode("utf-8", "surrogateescape")).hexdigest()


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Split ``n`` into integer counts proportional to ``fractions`` (largest remainder)."""
    total = sum(fractions.values())
    exact = {k: n * v / total for k, v in fractions.items()}
    counts = {k: int(v) for k, v in exact.items()}
    left = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], list(fractions).index(k)))[:left]:
        counts[k] += 1
    return counts


def _check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    bad = {k: v for k, v in fractions.items() if v < 0}
    if bad or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be non-negative with a positive sum, got {fractions}")
    return {k: v for k, v in fractions.items() if v > 0}


def stratified_split(keys: Sequence[str], labels: Sequence[str],
                     fractions: Optional[dict[str, float]] = None, seed: int = 0) -> list[str]:
    """Seeded stratified split: for every label, its items (ranked by a hash of ``seed`` and
    their ``key``) are divided by ``fractions`` (default train 0.8, valid 0.1, test 0.1).

    Returns the split name of each item, in input order. Deterministic across runs, machines
    and Python versions; adding items to the dataset moves no existing item between splits
    unless its class's counts change.
    """
    return group_split(keys, labels, keys, fractions, seed)


def group_split(keys: Sequence[str], labels: Sequence[str], groups: Sequence[str],
                fractions: Optional[dict[str, float]] = None, seed: int = 0) -> list[str]:
    """Like :func:`stratified_split`, but items sharing a group never straddle splits.

    Each group is filed under its most common label; per label, groups in seeded order go to
    the split furthest below its share of that label's items. An empty group means the item
    is a group of its own.
    """
    if not len(keys) == len(labels) == len(groups):
        raise ValueError("keys, labels and groups must have the same length")
    fractions = _check_fractions(dict(fractions or DEFAULT_FRACTIONS))
    members: dict[str, list[int]] = defaultdict(list)
    for i, (key, group) in enumerate(zip(keys, groups)):
        members[group or f"\0{key}"].append(i)
    by_label: dict[str, list[str]] = defaultdict(list)
    for group, idx in members.items():
        votes: dict[str, int] = defaultdict(int)
        for i in idx:
            votes[labels[i]] += 1
        by_label[max(sorted(votes), key=votes.get)].append(group)
    out = [""] * len(keys)
    names = list(fractions)
    for label, label_groups in by_label.items():
        label_groups.sort(key=lambda g: seeded_rank(g, seed))
        n_items = sum(len(members[g]) for g in label_groups)
        if all(len(members[g]) == 1 for g in label_groups):
            target = _allocate(n_items, fractions)    # exact counts when nothing is grouped
            order = [s for s in names for _ in range(target[s])]
            for g, split in zip(label_groups, order):
                out[members[g][0]] = split
            continue
        total = sum(fractions.values())
        filled = {s: 0 for s in names}
        for g in label_groups:
            size = len(members[g])
            split = max(names, key=lambda s: (n_items * fractions[s] / total - filled[s], -names.index(s)))
            filled[split] += size
            for i in members[g]:
                out[i] = split
    return out
