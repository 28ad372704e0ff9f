"""Faults injected into prep runs: a killed parent, a full disk, a read-only or impossible --out.
Each must end in a one-line error that names the path (never a traceback), leave no temporary
file behind, and never cost the work already done."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import open_cache
from data_prep.__main__ import main

SR = 16000
CLI = ["--sample-rate", str(SR), "--n-fft", "512", "--hop-length", "160", "--n-mels", "40"]


def make_root(root: Path, n: int = 3, seconds: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sf.write(root / cls / f"{i}.wav", rng.uniform(-0.3, 0.3, int(SR * seconds)).astype(np.float32), SR,
                     subtype="PCM_16")
    return root


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_parent_and_check_workers(proc: subprocess.Popen, workers: set) -> None:
    """``kill -9`` the parent only (as `kill -9 PID` does) and check its workers end with it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "workers outlived their parent"


def end_session(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the test's own process session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass



SLOW_PREP = textwrap.dedent("""
    import importlib, json, os, sys, time
    E = importlib.import_module("data_prep.extract")
    real = E.extract_one
    def slow(path, config=None):
        with open(sys.argv[3], "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.5)
        return real(path, config)
    E.extract_one = slow
    from data_prep.prepare import prepare
    prepare("folder", sys.argv[1], sys.argv[2], json.loads(sys.argv[4]), workers=2, progress=False)
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("kind", ["logmel", "pianoroll"])
def test_kill_9_of_prep_takes_its_workers_with_it(tmp_path, kind):
    root = make_root(tmp_path / "data", n=6, seconds=0.2)
    if kind == "pianoroll":
        from fixtures import write_midi
        for cls, base in (("a", 40), ("b", 70)):
            for i in range(6):
                write_midi(root / cls / f"{i}.mid", base + i, seconds=1.0)
    pids = tmp_path / "pids"
    features = {"kind": "pianoroll", "fs": 10} if kind == "pianoroll" else {"sample_rate": SR, "n_mels": 40}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREP, str(root), str(tmp_path / "c"), str(pids),
                             json.dumps(features)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workers: set = set()
        deadline = time.time() + 90
        while len(workers) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the workers never started"
            time.sleep(0.05)
            workers = set(map(int, pids.read_text().split())) - {proc.pid} if pids.exists() else set()
        kill_parent_and_check_workers(proc, workers)
    finally:
        end_session(proc)


OTHER_POOLS = textwrap.dedent("""
    import multiprocessing, os, sys, time
    if sys.argv[2] == "pool":                            # the folk and polyphony builds' pool
        from data_prep.workers import pool as worker_pool
        pool = worker_pool(2)
    else:
        from data_prep import render, workers
        pool = workers.context().Pool(2, initializer=render._init, initargs=({}, os.getpid()))
    pool.map(abs, range(4))                              # the workers are up and initialised
    pool.map_async(time.sleep, [100, 100], chunksize=1)  # and busy: they would not notice an EOF
    time.sleep(0.5)
    with open(sys.argv[1], "w") as fh:
        fh.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    time.sleep(120)
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("pool", ["pool", "render"])
def test_every_worker_pool_dies_with_its_parent(tmp_path, pool):
    pids = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", OTHER_POOLS, str(pids), pool], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (pids.exists() and pids.read_text()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the pool never started"
            time.sleep(0.05)
        workers = set(map(int, pids.read_text().split()))
        assert len(workers) == 2
        kill_parent_and_check_workers(proc, workers)
    finally:
        end_session(proc)


def test_full_disk_is_one_line_leaves_no_temp_file_and_resumes(tmp_path, monkeypatch, capsys):
    """ENOSPC from every raw write under --out (what a full disk gives the shard writer)."""
    if not Path("/proc/self/fd").exists():
        pytest.skip("reads /proc/self/fd")
    root = make_root(tmp_path / "data")
    full = tmp_path / "full"
    real_write, real_pwrite = os.write, os.pwrite

    def under_out(fd: int) -> bool:           # the build's files (the lock beside them is tiny)
        return os.readlink(f"/proc/self/fd/{fd}").startswith(str(full / "cache.partial"))

    def write(fd, data):
        if under_out(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def pwrite(fd, data, offset):
        if under_out(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwrite", pwrite)
    argv = ["folder", "--root", str(root), "--out", str(full / "cache"), "--workers", "1", "--quiet", *CLI]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"error: cannot write {full}/cache.partial/shards/00000.npy" in err
    assert "No space left on device; free some space" in err
    left = list(full.iterdir())                     # nothing left behind but the lock file (kept:
    assert [p.name for p in left] == ["cache.lock"] and left[0].stat().st_size < 4096   # see cache_files)
    monkeypatch.undo()                                   # space freed: the same command finishes
    assert main(argv) == 0 and len(open_cache(full / "cache")) == 6


def test_a_disk_that_fills_mid_build_keeps_the_complete_shards(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").exists():
        pytest.skip("reads /proc/self/fd")
    from data_prep import CacheError, prepare

    root = make_root(tmp_path / "data")
    out = tmp_path / "out" / "cache"
    real_write = os.write

    def write(fd, data):          # the first shard fits, the second does not
        if os.readlink(f"/proc/self/fd/{fd}").endswith("00001.npy.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    features = {"sample_rate": SR, "n_fft": 512, "hop_length": 160, "n_mels": 40}
    with pytest.raises(CacheError, match=r"cannot write .*00001\.npy\.tmp: No space left on device"):
        prepare("folder", root, out, features, workers=1, progress=False, shard_items=2)
    shards = out.with_name("cache.partial") / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["00000.json", "00000.npy"]
    monkeypatch.undo()
    cache = prepare("folder", root, out, features, workers=1, progress=False, shard_items=2)
    assert len(cache) == 6 and cache.meta["build"]["resumed"] == 2


@contextmanager
def tmpfs(path: Path, options: str):
    """A real small or read-only file system (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def run_cli(root: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(root), "--out", str(out),
                           "--workers", "1", "--quiet", *CLI, *extra], capture_output=True, text=True)


def test_a_real_full_file_system(tmp_path):
    root = make_root(tmp_path / "data")
    with tmpfs(tmp_path / "small", "size=512k") as small:
        # linear spectra of 257 bins: 6 x 101 frames x 257 x 2 bytes = 311 KB; with --n-fft 2048, 1.2 MB
        done = run_cli(root, small / "cache", "--kind", "stft", "--n-fft", "2048")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"error: cannot write {small}/cache.partial/shards/")
        assert "No space left on device" in done.stderr and done.stderr.count("\n") == 1
        assert [p.name for p in small.iterdir()] == ["cache.lock"]   # nothing left behind but the lock file
        assert shutil.disk_usage(small).used < 64 * 1024          # the disk is not left full
        assert run_cli(root, small / "cache").returncode == 0      # what fits, builds


def test_read_only_and_impossible_out(tmp_path):
    root = make_root(tmp_path / "data", n=1)
    (tmp_path / "a file").write_text("x")
    done = run_cli(root, tmp_path / "a file" / "cache")
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert f"cannot write {tmp_path}/a file" in done.stderr and "Not a directory" in done.stderr
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        done = run_cli(root, ro / "cache")
        assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
        assert f"cannot write {ro}/cache." in done.stderr and "Read-only file system" in done.stderr   # its lock or .partial
        assert "choose an --out where you can write" in done.stderr


def test_out_that_is_a_link_builds_where_it_points(tmp_path):
    """``--out caches/x`` where ``caches/x`` links to a folder on a larger disk: the cache is built
    and published there, the link stays a link (it used to be replaced by a folder on the link's
    disk, with a dangling ``x.old-*`` link left behind for good), and a second build through the
    link or the target is the same cache."""
    root = make_root(tmp_path / "data", n=1)
    (tmp_path / "big").mkdir()
    (tmp_path / "caches").mkdir()
    link = tmp_path / "caches" / "x"
    link.symlink_to(tmp_path / "big" / "x")                 # nothing there yet
    assert run_cli(root, link).returncode == 0
    assert run_cli(root, link, "--force").returncode == 0
    assert link.is_symlink() and open_cache(tmp_path / "big" / "x").build_id == open_cache(link).build_id
    assert sorted(p.name for p in (tmp_path / "caches").iterdir()) == ["x"]
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["x", "x.lock"]
    built = open_cache(link).build_id
    assert run_cli(root, tmp_path / "big" / "x").returncode == 0 and open_cache(link).build_id == built


@pytest.mark.parametrize("out", [".", "..", "/", "sub/.."])
def test_out_without_a_name_says_what_would_be_right(tmp_path, out):
    root = make_root(tmp_path / "data", n=1)
    (tmp_path / "work" / "sub").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "data_prep", "folder", "--root", str(root), "--out", out,
                           "--workers", "1", "--quiet", *CLI], capture_output=True, text=True,
                          cwd=tmp_path / "work", env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"--out {out}: name the cache folder" in done.stderr
