"""The feature-cache contract: atomic publish, resume after a crash, stats, refusal of other configs."""
import json

import numpy as np
import pytest

from data_prep import CacheError, CacheWriter, AudioFeatures, cache_exists, check_existing, open_cache
from data_prep.cache import partial_failures
from data_prep.config import PianoRollFeatures, config_diff, feature_config

CFG = AudioFeatures(n_mels=8)
SOURCE = {"name": "test"}


def _items(n=10):
    rng = np.random.default_rng(0)
    for i in range(n):
        split = "train" if i < 6 else ("val" if i < 8 else "test")
        yield dict(id=f"x{i}", source=f"/data/x{i}.wav", label="ab"[i % 2], split=split,
                   fold=i % 3, checksum=f"c{i}"), rng.normal(size=(5 + i, 8)).astype(np.float32)


def _build(out, n=10, crash_after=None, **kw):
    writer = CacheWriter(out, CFG, SOURCE, **kw)
    for k, (item, x) in enumerate(_items(n)):
        if writer.is_done(item["source"]):
            continue
        if crash_after is not None and k == crash_after:
            return writer
        if k == 3:
            writer.add_failure("/data/bad.wav", "truncated file")
        writer.add(x, **item)
    return writer.finish()


def test_roundtrip_and_stats(tmp_path):
    cache = _build(tmp_path / "c", shard_items=3)
    assert len(cache) == 10 and cache.classes == ["a", "b"]
    assert not (tmp_path / "c.partial").exists()
    for i, (item, (source_item, x)) in enumerate(zip(cache.items, _items())):
        assert item.id == source_item["id"] and item.split == source_item["split"]
        np.testing.assert_array_equal(cache.features(i), x.astype(np.float16))
        assert cache.features(i).dtype == np.float16 and item.frames == len(x)
    assert cache.items[4].fold == 1 and cache.label_index(1) == 1
    assert cache.indices("val") == [6, 7]
    train = np.concatenate([cache.features(i).astype(np.float64) for i in cache.indices("train")])
    mean, std = cache.stats
    np.testing.assert_allclose(mean, train.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, train.std(0), atol=1e-5)
    assert cache.failures == [{"source": "/data/bad.wav", "reason": "truncated file"}]
    assert cache.config == CFG


def test_resume_after_crash_gives_the_same_cache(tmp_path):
    full = _build(tmp_path / "full", shard_items=3)
    _build(tmp_path / "c", crash_after=7, shard_items=3)      # dies with a shard half built
    assert not (tmp_path / "c").exists() and (tmp_path / "c.partial").exists()
    with pytest.raises(CacheError, match="interrupted build"):
        open_cache(tmp_path / "c")
    writer = CacheWriter(tmp_path / "c", CFG, SOURCE, shard_items=3)
    assert writer.resumed_items == 7                          # 6 items + 1 failure in two shards
    writer.close()                                            # one writer at a time
    resumed = _build(tmp_path / "c", shard_items=3)
    assert resumed.items == full.items and resumed.failures == full.failures
    for i in range(len(full)):
        np.testing.assert_array_equal(resumed.features(i), full.features(i))
    assert sorted(p.name for p in (tmp_path / "c" / "shards").iterdir()) == \
        sorted(p.name for p in (tmp_path / "full" / "shards").iterdir())


def test_partial_build_of_another_config_is_discarded(tmp_path):
    _build(tmp_path / "c", crash_after=5, shard_items=2)
    writer = CacheWriter(tmp_path / "c", AudioFeatures(n_mels=8, hop_length=256), SOURCE)
    assert writer.resumed_items == 0


def test_check_existing(tmp_path):
    _build(tmp_path / "c")
    assert check_existing(tmp_path / "c", CFG) is not None
    with pytest.raises(CacheError, match=r"hop_length: 512 != 256"):
        check_existing(tmp_path / "c", AudioFeatures(n_mels=8, hop_length=256))
    assert check_existing(tmp_path / "c", AudioFeatures(n_mels=8, hop_length=256), force=True) is None
    assert open_cache(tmp_path / "c")     # a rebuild replaces the old cache only when it is complete


def test_what_other_modules_ask_the_cache(tmp_path):
    out = tmp_path / "c"
    assert not cache_exists(out) and partial_failures(out) == []
    _build(out, crash_after=5, shard_items=2).close()           # interrupted after a failure
    assert not cache_exists(out)
    assert partial_failures(out) == [{"source": "/data/bad.wav", "reason": "truncated file"}]
    cache = _build(out, shard_items=2)
    assert cache_exists(out) and partial_failures(out) == []
    assert cache.mismatch(CFG, "recipe") is None and cache.mismatch(CFG.to_dict(), "model") is None
    # one message form, whoever asks; a dict is resolved against the defaults first
    assert cache.mismatch({"kind": "logmel", "n_mels": 8, "hop_length": 256}, "model") == (
        f"{out} was built with another feature config (cache != model: hop_length: 512 != 256)")
    assert cache.mismatch(CFG, "this command", {"name": "gtzan"}) == (
        f"{out} was built with another feature config or source (cache != this command: "
        "source: 'test' != 'gtzan')")


def test_the_writer_takes_a_resolved_config(tmp_path):
    with pytest.raises(TypeError, match="feature config object"):
        CacheWriter(tmp_path / "c", CFG.to_dict(), SOURCE)


def test_bad_features_and_empty_cache(tmp_path):
    writer = CacheWriter(tmp_path / "c", CFG, SOURCE)
    with pytest.raises(ValueError, match="x.wav.*do not match"):
        writer.add(np.zeros((4, 7)), id="x", source="x.wav", label="a")
    writer.add_failure("y.wav", "silence")
    with pytest.raises(CacheError, match="no usable item"):
        writer.finish()


def test_feature_config_errors():
    with pytest.raises(ValueError, match="features.n_mel: unknown field"):
        feature_config({"kind": "logmel", "n_mel": 64})
    with pytest.raises(ValueError, match="features.kind"):
        feature_config({"kind": "wavelet"})
    with pytest.raises(ValueError, match="features.hop_length: must be a positive integer"):
        AudioFeatures(hop_length=0)
    assert feature_config({"kind": "pianoroll", "onsets": True}).feature_shape == (2, 128)
    assert config_diff(CFG, CFG.to_dict()) == []
    roll = PianoRollFeatures(pitch_range="piano", per_family=True, drums="channel")
    assert roll.feature_shape == (17, 88)
    json.dumps(roll.to_dict())


def test_check_existing_compares_source_options(tmp_path):
    _build(tmp_path / "c")
    same = {"name": "test"}
    assert check_existing(tmp_path / "c", CFG, source=same) is not None
    with pytest.raises(CacheError, match=r"--split: None != 'random'"):
        check_existing(tmp_path / "c", CFG, source={"name": "test", "options": {"split": "random"}})
    with pytest.raises(CacheError, match=r"source: 'test' != 'gtzan'"):
        check_existing(tmp_path / "c", CFG, source={"name": "gtzan"})
