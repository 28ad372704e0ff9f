"""Audio preparation speed and memory: data_prep against a plain librosa loop.

    python benchmarks/prep_audio.py [--files 100] [--repeats 3] [--memory-files 100 1000]

On the same generated 30-s 22.05 kHz WAV clips (16-bit, tones + noise, all different):

- A, data_prep: ``prepare("folder", ...)`` end to end: decode + resample + log-mel (128 bands,
  n_fft 2048, hop 512, dB ref=max, top_db 80) + float16 cache write, ``--workers`` processes;
- B, librosa: ``librosa.load(path, sr=22050)`` + ``librosa.feature.melspectrogram`` +
  ``librosa.power_to_db(ref=np.max)``, one file at a time, nothing written; as it runs by
  default (BLAS and OpenMP may use every core) and with one thread (``OMP_NUM_THREADS=1``...).

Each measurement runs in a child process (so ``ru_maxrss`` is its own peak), A and B
interleaved ``--repeats`` times; librosa's numba functions are warmed before B is timed. It prints
audio-seconds per second for both, the ratio of the medians, and peak memory (the main process
and the largest worker) of A at each of ``--memory-files``, to show it does not grow with the
dataset. ``--hot-path`` first times the candidate single-clip implementations on one thread
(how the hot path was chosen), in a child with one thread and glibc told to keep freed pages.
Runs vary by about 15%; compare figures from one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = 22050
SECONDS = 30.0
FEATURES = {"kind": "logmel", "sample_rate": SR, "n_fft": 2048, "hop_length": 512, "n_mels": 128}


# -- data -------------------------------------------------------------------------------------------
def make_clips(folder: Path, n: int) -> Path:
    """``n`` different 30-s clips in ``folder/c0..c4/`` (a folder dataset); reuses existing ones."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(SR * SECONDS)) / SR
    for i in range(n):
        path = folder / f"c{i % 5}" / f"clip{i:05d}.wav"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        freqs = rng.uniform(80, 4000, 3)
        x = sum(0.2 * np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in freqs)
        x = x + 0.05 * rng.standard_normal(t.size)
        sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    return folder


def subset(folder: Path, n: int, into: Path) -> Path:
    """A folder dataset of the first ``n`` clips, as symlinks."""
    if into.exists():
        shutil.rmtree(into)
    for i in range(n):
        src = folder / f"c{i % 5}" / f"clip{i:05d}.wav"
        dst = into / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return into


# -- the two contenders (run in a child process) ---------------------------------------------------
def run_data_prep(root: Path, out: Path, workers: int) -> dict:
    import numpy as np

    from data_prep import AudioFeatures, prepare
    from data_prep.features import compute_features

    compute_features(np.zeros(SR, np.float32), AudioFeatures(**FEATURES))       # imports, caches
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    cache = prepare("folder", root, out, FEATURES, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    assert not cache.failures, cache.failures
    return {"seconds": seconds, "files": len(cache), "audio_seconds": cache.meta["build"]["audio_hours"] * 3600}


def run_librosa(root: Path) -> dict:
    import librosa
    import numpy as np

    warm = np.random.default_rng(0).standard_normal(SR).astype(np.float32)       # numba, caches
    librosa.power_to_db(librosa.feature.melspectrogram(y=warm, sr=SR), ref=np.max)
    paths = sorted(root.rglob("*.wav"))
    start = time.perf_counter()
    audio = 0.0
    for path in paths:
        y, sr = librosa.load(path, sr=SR)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
        librosa.power_to_db(mel, ref=np.max)
        audio += len(y) / sr
    return {"seconds": time.perf_counter() - start, "files": len(paths), "audio_seconds": audio}


def child_main(args: argparse.Namespace) -> None:
    if args.child == "clips":
        make_clips(Path(args.root), args.files)
        return
    if args.child == "hot-path":
        hot_path()
        return
    result = (run_data_prep(Path(args.root), Path(args.out), args.workers) if args.child == "data_prep"
              else run_librosa(Path(args.root)))
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["worker_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
# glibc otherwise maps every block over 32 MB afresh (and pays for zeroed pages each time):
# what a batch of eight 30-s clips needs; the workers of data_prep set the same with mallopt
GLIBC_KEEP_PAGES = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}


def child(which: str, root: Path, out: Path = Path(), workers: int = 1, files: int = 0,
          env: dict = None) -> str:
    """Run one step in a fresh child process. The driver stays small (no numpy, torch or
    librosa), because Linux carries a parent's peak RSS into ``ru_maxrss`` of its children."""
    cmd = [sys.executable, __file__, "--child", which, "--root", str(root), "--out", str(out),
           "--workers", str(workers), "--files", str(files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"{which} failed:\n{proc.stderr}")
    return proc.stdout


def measure(which: str, root: Path, out: Path, workers: int, env: dict = None) -> dict:
    return json.loads(child(which, root, out, workers, env=env).strip().splitlines()[-1])


# -- single-clip implementations: how the hot path was chosen ---------------------------------------
def hot_path(repeats: int = 20) -> None:
    import librosa
    import numpy as np
    import torch

    from data_prep import AudioFeatures
    from data_prep.features import compute_features

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(int(SR * SECONDS))).astype(np.float32)
    batch = np.stack([y] * 8)
    fb = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128))
    window = torch.hann_window(2048)
    config = AudioFeatures(**FEATURES)

    def librosa_logmel():
        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR), ref=np.max)

    def torch_stft_dense(x=y):
        spec = torch.stft(torch.from_numpy(x), 2048, 512, window=window, pad_mode="constant",
                          return_complex=True)
        mel = fb @ spec.abs().square()
        db = 10 * torch.log10(mel.clamp(min=1e-10))
        return torch.maximum(db - db.amax(dim=(-2, -1), keepdim=True), torch.tensor(-80.0))

    def torch_stft_dense_batched():
        torch_stft_dense(batch)

    def ours():
        compute_features(y, config)

    candidates = [("librosa melspectrogram + power_to_db", librosa_logmel, 1),
                  ("torch.stft + dense mel matmul", torch_stft_dense, 1),
                  ("torch.stft + dense matmul, batch of 8", torch_stft_dense_batched, 8),
                  ("data_prep: rfft of frames + blocked mel", ours, 1)]
    print(f"single-clip log-mel, one thread (torch, BLAS, OpenMP), {SECONDS:.0f}-s clip at {SR} Hz, "
          f"median of {repeats}:")
    for name, fn, per_call in candidates:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) / per_call)
        print(f"  {name:42s} {statistics.median(times) * 1000:7.2f} ms per clip")


# -- driver ----------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=100, help="clips in the timed runs (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved A/B rounds (default 3)")
    p.add_argument("--workers", type=int, default=2, help="data_prep worker processes (default 2)")
    p.add_argument("--memory-files", type=int, nargs="*", default=[100, 1000],
                   help="dataset sizes for the peak-memory runs of data_prep (default 100 1000)")
    p.add_argument("--hot-path", action="store_true", help="also time single-clip implementations")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to keep the generated clips (default: a temporary folder; "
                        "1,000 clips take 1.3 GB)")
    p.add_argument("--child", choices=("data_prep", "librosa", "clips", "hot-path"), help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="prep_audio_bench_"))
    try:
        n_all = max([args.files, *args.memory_files])
        print(f"generating {n_all} clips of {SECONDS:.0f} s at {SR} Hz in {work} ...", flush=True)
        clips = work / "clips"
        child("clips", clips, files=n_all)
        if args.hot_path:
            print(child("hot-path", clips, env={**ONE_THREAD, **GLIBC_KEEP_PAGES}), end="")
        if not args.repeats:
            return
        timed = subset(clips, args.files, work / "timed")
        print(f"\nend to end on {args.files} clips ({args.files * SECONDS / 3600:.2f} h of audio), "
              f"{os.cpu_count()} CPUs, data_prep with {args.workers} workers:")
        contenders = {"data_prep": ("data_prep", None), "librosa": ("librosa", None),
                      "librosa, 1 thread": ("librosa", ONE_THREAD)}
        rates = {name: [] for name in contenders}
        for r in range(args.repeats):
            for name, (which, env) in contenders.items():
                res = measure(which, timed, work / "cache", args.workers, env)
                rate = res["audio_seconds"] / res["seconds"]
                rates[name].append(rate)
                workers = (f" + largest worker {res['worker_maxrss_mb']:.0f} MB" if which == "data_prep" else "")
                print(f"  round {r + 1} {name:17s} {res['seconds']:7.2f} s  {rate:7.0f} audio-s/s  "
                      f"peak {res['maxrss_mb']:4.0f} MB{workers}", flush=True)
        ours = statistics.median(rates["data_prep"])
        print(f"median data_prep: {ours:.0f} audio-s/s")
        for name in list(contenders)[1:]:
            theirs = statistics.median(rates[name])
            print(f"median {name}: {theirs:.0f} audio-s/s -> data_prep is {ours / theirs:.2f}x")

        if args.memory_files:
            print("\npeak memory of data_prep (decode + log-mel + write) by dataset size:")
        for n in args.memory_files:
            res = measure("data_prep", subset(clips, n, work / f"mem{n}"), work / "cache", args.workers)
            print(f"  {n:5d} files ({n * SECONDS / 3600:5.2f} h): main {res['maxrss_mb']:6.0f} MB, "
                  f"largest worker {res['worker_maxrss_mb']:6.0f} MB, "
                  f"{res['audio_seconds'] / res['seconds']:.0f} audio-s/s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
