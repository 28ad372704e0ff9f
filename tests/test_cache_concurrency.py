"""The cache under concurrent use and damage: one writer at a time (a lock naming its holder,
never stale after kill -9), a rebuild that never changes a cache under its readers and never
deletes the old one before the new one is complete, and damaged files named on open."""
import json
import os
import pickle
import shlex
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import CacheError, CacheWriter, open_cache, verify_cache
from data_prep import cache_files
from data_prep.cache_files import meta_checksum
from data_prep.prepare import prepare
from fixtures import synthetic_cache, write_midi

ROLL = ["--kind", "pianoroll", "--fs", "8"]

# A prep through the CLI whose extraction is slowed down, so that another process can be started
# (or this one killed) while it holds the lock, even on a fast machine.
SLOW_PREP = textwrap.dedent("""
    import importlib, sys, time
    E = importlib.import_module("data_prep.extract")
    real = E.extract_one
    def slow(path, config=None):
        time.sleep(0.15)
        return real(path, config)
    E.extract_one = slow
    from data_prep.__main__ import main
    sys.exit(main(sys.argv[1:]))
""")


def midi_root(root: Path, n: int = 12) -> Path:
    for i in range(n):
        write_midi(root / ("low" if i % 2 else "high") / f"t{i:02d}.mid", 48 + 24 * (i % 2) + i % 5, seconds=2.0)
    return root


def prep_args(root, out, *extra):
    return ["folder", "--root", str(root), "--out", str(out), "--workers", "1", "--quiet", *ROLL, *extra]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], capture_output=True,
                          text=True, **kw)


def start_slow(root, out):
    return subprocess.Popen([sys.executable, "-c", SLOW_PREP, *prep_args(root, out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_lock(proc, out):
    """Until ``proc`` holds the lock of ``out`` (its pid is in the lock file)."""
    lock = out.with_name(out.name + ".lock")
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        assert time.time() < deadline, "the build never took the lock"
        time.sleep(0.01)


def same_cache(a, b):
    assert a.items == b.items and a.meta["stats"] == b.meta["stats"]
    for i in range(len(a)):
        assert np.array_equal(a.features(i), b.features(i))


@pytest.fixture(scope="module")
def midi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("midi")
    root = midi_root(tmp / "data")
    reference = prepare("folder", root, tmp / "reference", {"kind": "pianoroll", "fs": 8}, workers=1,
                        progress=False)
    return root, reference


def test_a_second_prep_is_refused_at_once_naming_the_holder(midi, tmp_path):
    root, reference = midi
    out = tmp_path / "c"
    first = start_slow(root, out)
    try:
        wait_for_lock(first, out)
        second = cli(*prep_args(root, out), timeout=120)
        assert second.returncode == 1
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert f"is being built by pid {first.pid} on host {socket.gethostname()}" in message
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    same_cache(open_cache(out), reference)                 # the first build was not disturbed
    assert cli("verify", out).returncode == 0


def test_two_preps_started_together_end_with_one_whole_cache(midi, tmp_path):
    root, reference = midi
    out = tmp_path / "c"
    procs = [subprocess.Popen([sys.executable, "-m", "data_prep", *prep_args(root, out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(rc == 0 for rc, _ in results)
    for rc, err in results:          # the loser (if they overlapped) is refused, never half-done
        assert rc == 0 or (rc == 1 and "is being built by pid" in err and "Traceback" not in err), err
    same_cache(open_cache(out), reference)
    assert not list(tmp_path.glob("c.partial")) and not list(tmp_path.glob("c.old-*"))


def test_a_killed_build_leaves_no_stale_lock(midi, tmp_path):
    root, reference = midi
    out = tmp_path / "c"
    first = start_slow(root, out)
    wait_for_lock(first, out)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    again = cli(*prep_args(root, out), timeout=300)
    assert again.returncode == 0, again.stderr
    same_cache(open_cache(out), reference)


def test_a_second_writer_in_one_process_is_refused_and_the_lock_is_released(tmp_path):
    cfg = open_cache(synthetic_cache(tmp_path / "a").path).config
    writer = CacheWriter(tmp_path / "c", cfg, {"name": "t"})
    with pytest.raises(CacheError, match=f"is being built by pid {os.getpid()}"):
        CacheWriter(tmp_path / "c", cfg, {"name": "t"})
    writer.close()
    CacheWriter(tmp_path / "c", cfg, {"name": "t"}).close()


def test_without_file_system_locks_a_lock_file_with_stale_detection(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*a):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    out = tmp_path / "c"
    held = tmp_path / "c.lock.held"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}))
    lock = cache_files.CacheLock(out).acquire()             # its holder is dead: stale, taken over
    assert json.loads(held.read_text())["pid"] == os.getpid()
    lock.release()
    assert not held.exists()
    held.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(cache_files.CacheBusyError, match=f"pid 1 on host elsewhere.*remove {held}"):
        cache_files.CacheLock(out).acquire()


def test_a_rebuild_never_changes_the_cache_under_a_reader(tmp_path):
    old = synthetic_cache(tmp_path / "c", per_class=12, seed=0)
    reader = open_cache(tmp_path / "c")
    first = np.array(reader.features(0))                    # shard 0 is open (memory-mapped)
    worker = pickle.loads(pickle.dumps(reader))             # as a DataLoader worker gets it
    synthetic_cache(tmp_path / "c", per_class=12, seed=1, frames=(30, 40))   # the rebuild
    assert np.array_equal(reader.features(0), first)        # what was open stays the old build
    with pytest.raises(CacheError, match="rebuilt .* while it was being read"):
        reader.check_build()
    with pytest.raises(CacheError, match="rebuilt .* while it was being read"):
        worker.features(0)                                  # a shard opened after the swap: refused
    new = open_cache(tmp_path / "c")
    assert new.build_id != old.build_id and not np.array_equal(new.features(0), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.lock"]


def test_a_force_rebuild_whose_sources_all_fail_keeps_the_old_cache(midi, tmp_path):
    root, reference = midi
    out = tmp_path / "c"
    before = prepare("folder", root, out, {"kind": "pianoroll", "fs": 8}, workers=1, progress=False)
    for f in root.rglob("*.mid"):                            # a copy of the data set, all broken
        broken = tmp_path / "broken" / f.relative_to(root)
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_bytes(b"MThd garbage")
    with pytest.raises(CacheError, match="no usable item"):
        prepare("folder", tmp_path / "broken", out, {"kind": "pianoroll", "fs": 8}, force=True, workers=1,
                progress=False)
    after = open_cache(out)
    assert after.build_id == before.build_id
    same_cache(after, reference)
    CacheWriter(out, after.config, {"name": "t"}).close()     # and the lock was released


def test_shards_are_not_executable(tmp_path):
    old = os.umask(0o022)
    try:
        cache = synthetic_cache(tmp_path / "c")
    finally:
        os.umask(old)
    for f in (cache.path / "shards").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


# --- damage ---------------------------------------------------------------------------------------
def test_a_truncated_meta_json_is_named_in_prep_and_in_training(midi, tmp_path):
    root, _ = midi
    out = tmp_path / "c"
    prepare("folder", root, out, {"kind": "pianoroll", "fs": 8}, workers=1, progress=False)
    meta = out / "meta.json"
    meta.write_bytes(meta.read_bytes()[:1000])
    with pytest.raises(CacheError, match=rf"{meta}: damaged \(truncated or not JSON"):
        open_cache(out)
    prep = cli(*prep_args(root, out), timeout=120)
    assert prep.returncode == 1 and f"{meta}: damaged" in prep.stderr
    assert len(prep.stderr.strip().splitlines()) == 1
    import yaml
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"cache": str(out), "crop_frames": 16}, "out_dir": str(tmp_path / "run")}))
    train = subprocess.run([sys.executable, "-m", "audiostem.train", str(recipe)], capture_output=True, text=True)
    assert train.returncode == 2 and f"{meta}: damaged" in train.stderr and "Traceback" not in train.stderr
    forced = cli(*prep_args(root, out, "--force"), timeout=120)     # --force rebuilds it
    assert forced.returncode == 0, forced.stderr
    assert open_cache(out)


@pytest.mark.parametrize("damage", ["truncated", "header", "missing", "manifest"])
def test_damaged_files_are_named_with_the_command_that_rebuilds_them(midi, tmp_path, damage):
    root, reference = midi
    out = tmp_path / "c"
    prepare("folder", root, out, {"kind": "pianoroll", "fs": 8}, workers=1, progress=False, shard_items=4)
    shard = out / "shards" / "00001.npy"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    elif damage == "header":                # a whole-looking file whose header says 0 frames
        data = np.load(shard)
        np.save(shard, data[:0])
    elif damage == "missing":
        shard.unlink()
    else:
        shard = out / "manifest.csv"
        shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(CacheError) as err:
        open_cache(out)
    message = str(err.value)
    assert f"{shard}:" in message and "\n" not in message
    command = message.split("Rebuild it with: ")[1]
    assert "--force" in command and "--kind pianoroll" in command
    prep = cli(*prep_args(root, out), timeout=120)                # not "up to date"
    assert prep.returncode == 1 and f"{shard}:" in prep.stderr
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "data_prep"]
    rebuilt = subprocess.run([sys.executable, *argv[1:], "--quiet"], capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    same_cache(open_cache(out), reference)


def test_verify_checks_the_content_checksums(tmp_path):
    cache = synthetic_cache(tmp_path / "c", per_class=4)
    ok = cli("verify", cache.path)
    assert ok.returncode == 0 and "ok" in ok.stdout and "files match their checksums" in ok.stdout
    shard = cache.path / "shards" / "00000.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF                                        # same size: opening cannot tell
    shard.write_bytes(bytes(data))
    assert open_cache(cache.path)
    bad = cli("verify", cache.path)
    assert bad.returncode == 1
    assert f"{shard}: checksum differs" in bad.stderr and "Rebuild it with" in bad.stderr


@pytest.mark.parametrize("edit", ["two classes swapped", "stats", "features"])
def test_a_meta_json_edited_by_hand_is_refused(tmp_path, edit):
    """Every field of meta.json decides what a model learns (labels, normalisation, features), and
    a consistent-looking edit passes every size check; its recorded checksum does not."""
    cache = synthetic_cache(tmp_path / "c", per_class=4)
    meta_path = cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    if edit == "two classes swapped":
        meta["classes"][:2] = meta["classes"][1::-1]
    elif edit == "stats":
        meta["stats"]["mean"][0] += 1.0
    else:
        meta["features"]["hop_length"] = meta["features"].get("hop_length", 512) * 2
    meta_path.write_text(json.dumps(meta, indent=1))
    for attempt in (lambda: open_cache(cache.path), lambda: verify_cache(cache.path)):
        with pytest.raises(CacheError) as err:
            attempt()
        assert f"{meta_path}: altered since its build" in str(err.value)
        assert "\n" not in str(err.value) and "Rebuild it with" in str(err.value)
    assert cli("verify", cache.path).returncode == 1


def test_a_meta_json_without_its_checksum_is_read_as_built_before_it(tmp_path):
    cache = synthetic_cache(tmp_path / "c", per_class=4)
    meta_path = cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["meta_sha256"]
    meta_path.write_text(json.dumps(meta, indent=1))
    assert len(open_cache(cache.path)) == len(cache)
    ok = cli("verify", cache.path)
    assert ok.returncode == 0 and "meta.json unchecked (built before it had a checksum" in ok.stdout


@pytest.mark.parametrize("edit", ["no classes", "bad features", "manifest column", "unknown label"])
def test_consistent_looking_but_wrong_files_are_named_too(tmp_path, edit):
    """Edits whose meta.json checksum was made to match (or caches built before it had one)."""
    cache = synthetic_cache(tmp_path / "c", per_class=4)
    meta_path, manifest = cache.path / "meta.json", cache.path / "manifest.csv"
    meta = json.loads(meta_path.read_text())

    def write_meta():
        meta["meta_sha256"] = meta_checksum(meta)
        meta_path.write_text(json.dumps(meta))

    if edit == "no classes":
        del meta["classes"]
    elif edit == "bad features":
        meta["features"]["n_mels"] = -3
    write_meta()
    damaged = meta_path
    if edit in ("manifest column", "unknown label"):
        text = manifest.read_text()
        text = text.replace("offset", "ofset", 1) if edit == "manifest column" else text.replace(",a,", ",zebra,", 1)
        meta["files"]["manifest.csv"]["bytes"] = len(text.encode())
        write_meta()
        manifest.write_text(text)
        damaged = manifest
    with pytest.raises(CacheError, match=rf"{damaged}: damaged \(") as err:
        open_cache(cache.path)
    assert "\n" not in str(err.value) and "Rebuild it with" in str(err.value)


def test_an_out_folder_that_is_not_a_cache_is_never_replaced(tmp_path):
    mine = tmp_path / "music"
    mine.mkdir()
    (mine / "song.wav").write_bytes(b"precious")
    cfg = open_cache(synthetic_cache(tmp_path / "a").path).config
    with pytest.raises(CacheError, match="music exists and is not a feature cache"):
        CacheWriter(mine, cfg, {"name": "t"})
    assert (mine / "song.wav").read_bytes() == b"precious"


def test_a_rebuild_without_an_atomic_exchange_still_replaces_the_cache(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) is missing (macOS, old kernels) the swap is two renames."""
    monkeypatch.setattr(cache_files, "_exchange", lambda a, b: False)
    old = synthetic_cache(tmp_path / "c", seed=0)
    new = synthetic_cache(tmp_path / "c", seed=1)
    assert new.build_id != old.build_id and open_cache(tmp_path / "c").build_id == new.build_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.lock"]


def test_a_swap_killed_half_way_leaves_a_partial_that_the_next_build_discards(tmp_path):
    old = synthetic_cache(tmp_path / "c", seed=0)
    os.rename(tmp_path / "c", tmp_path / "c.partial")        # as after an exchange, before the clean-up
    synthetic_cache(tmp_path / "x", seed=0)
    os.rename(tmp_path / "x", tmp_path / "c")
    new = synthetic_cache(tmp_path / "c", seed=2)              # starts over, does not resume the old cache
    assert len(new) == len(old) and new.build_id != old.build_id
    assert not (tmp_path / "c.partial").exists()


def test_a_refused_writer_going_away_does_not_free_the_holders_lock(tmp_path):
    import gc

    cfg = open_cache(synthetic_cache(tmp_path / "a").path).config
    holder = CacheWriter(tmp_path / "c", cfg, {"name": "t"})
    for _ in range(2):                          # refused writers are created and dropped
        with pytest.raises(CacheError, match="is being built"):
            CacheWriter(tmp_path / "c", cfg, {"name": "t"})
        gc.collect()
    with pytest.raises(CacheError, match="is being built"):
        CacheWriter(tmp_path / "c", cfg, {"name": "t"})
    holder.close()
