"""How CacheWriter writes: shards as np.save would, statistics from per-item sums, old records."""
import json
import os

import numpy as np
import pytest

from data_prep import CacheWriter, PianoRollFeatures, open_cache
from data_prep import shard_file
from data_prep.feature_stats import _float16_as_float64, item_sums

CFG = PianoRollFeatures(fs=10, pitch_range="piano", onsets=True)      # feature shape (2, 88)


def _items(n=9):
    rng = np.random.default_rng(1)
    for i in range(n):
        x = rng.normal(2.0, 3.0, size=(20 + 7 * i, 2, 88)).astype(np.float32)
        yield dict(id=f"x{i}", source=f"x{i}.mid", label="ab"[i % 2],
                   split="train" if i % 3 else "test"), x


def _build(out, **kw):
    writer = CacheWriter(out, CFG, {"name": "test"}, shard_items=4, **kw)
    for item, x in _items():
        if not writer.is_done(item["source"]):
            writer.add(x, **item)
    return writer.finish()


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("stage", [8192, None])
def test_shards_are_what_np_save_writes(tmp_path, monkeypatch, direct, stage):
    if stage:                                   # a small staging buffer: many aligned writes
        monkeypatch.setattr(shard_file.ShardFile, "STAGE", stage)
    if not direct:                              # as on macOS or tmpfs: through the page cache
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    cache = _build(tmp_path / "c")
    items = list(_items())
    for shard in sorted((tmp_path / "c" / "shards").glob("*.npy")):
        k = int(shard.stem)
        data = np.concatenate([x.astype(np.float16) for j, (_, x) in enumerate(items) if j // 4 == k])
        np.save(tmp_path / "expected.npy", data)
        assert shard.read_bytes() == (tmp_path / "expected.npy").read_bytes()
    assert [it.offset for it in cache.items[:5]] == [0, 20, 47, 81, 0]


def test_a_file_system_that_refuses_direct_writes(tmp_path, monkeypatch):
    import errno
    import fcntl

    write, pwrite, refused = os.write, os.pwrite, []

    def refuse_direct(call):
        def wrapped(fd, *args):
            if fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
                refused.append(fd)
                raise OSError(errno.EINVAL, "Invalid argument")
            return call(fd, *args)
        return wrapped

    monkeypatch.setattr(os, "write", refuse_direct(write))
    monkeypatch.setattr(os, "pwrite", refuse_direct(pwrite))
    cache = _build(tmp_path / "c")
    monkeypatch.undo()
    assert len(cache) == 9 and len(refused) == 3             # once per shard, then buffered
    expected = np.concatenate([x.astype(np.float16) for _, x in list(_items())[:4]])
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "shards" / "00000.npy"), expected)


def test_stats_are_the_train_frames_mean_and_std(tmp_path):
    cache = _build(tmp_path / "c")
    train = np.concatenate([cache.features(i).astype(np.float64) for i in cache.indices("train")])
    mean, std = cache.stats
    assert mean.shape == std.shape == (2, 88)
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, train.std(0), rtol=1e-6)


def test_float16_values_are_read_exactly():
    bits = np.arange(2**16, dtype=np.uint16)
    expected = bits.view(np.float16).astype(np.float64)
    for some, positive in ((bits, False), (bits[:0x7C00], True)):      # all; positive finite ones
        got = _float16_as_float64(some, np.empty(len(some), np.float64), positive)
        np.testing.assert_array_equal(got, expected[:len(some)])


def test_item_sums_of_every_float16_value():
    values = np.arange(2**16, dtype=np.uint16).view(np.float16)
    for values in (values[np.isfinite(values)], values[:0x7C00]):      # +-0 to 65504; 0 to 65504
        values = values[:len(values) // 4 * 4].reshape(-1, 2, 2)          # (frames, 2, 2)
        total, total_sq = item_sums(values)
        exact = values.astype(np.float64)
        np.testing.assert_allclose(total, exact.sum(0), atol=1e-12 * np.abs(exact).sum(0).max())
        np.testing.assert_allclose(total_sq, np.square(exact).sum(0), rtol=1e-12)
    assert item_sums(values.astype(np.float32))[0].shape == (2, 2)
    sparse = np.zeros((50, 10), np.float16)                # bins never used, at the ends too
    sparse[:, 3], sparse[::7, 6], sparse[1, 8] = 0.5, -2, -0.0
    total, total_sq = item_sums(sparse)
    assert np.array_equal(total, sparse.astype(np.float64).sum(0))
    assert np.array_equal(total_sq, np.square(sparse.astype(np.float64)).sum(0))
    assert not item_sums(np.zeros((0, 3), np.float16))[0].any()


def test_resuming_shards_written_without_sums(tmp_path):
    """Shard records of builds before per-shard sums still resume (their sums come from the data)."""
    full = _build(tmp_path / "full")
    writer = CacheWriter(tmp_path / "c", CFG, {"name": "test"}, shard_items=4)
    for item, x in list(_items())[:5]:
        writer.add(x, **item)                                    # shard 0 committed, shard 1 not
    writer.close()                                               # as if the process had died
    record_path = tmp_path / "c.partial" / "shards" / "00000.json"
    record = json.loads(record_path.read_text())
    del record["sums"]
    record_path.write_text(json.dumps(record))
    resumed = _build(tmp_path / "c")
    assert resumed.items == full.items
    np.testing.assert_allclose(resumed.stats[0], full.stats[0], rtol=1e-6)
    np.testing.assert_allclose(resumed.stats[1], full.stats[1], rtol=1e-6)
    assert open_cache(tmp_path / "c").meta["stats"]["over"] == "train"
