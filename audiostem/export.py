"""Export a trained audio classifier as one file: a waveform in, class probabilities out.

    python -m audiostem.export RUN_OR_CKPT --format onnx|torchscript [--out FILE] [--clip-seconds S]

The file holds the whole path from samples to probabilities, so it runs with onnxruntime alone
(ONNX) or torch alone (TorchScript), without audiostem, librosa or soundfile:

1. the run's feature front end, exactly as ``data_prep.compute_features`` computes the cache:
   framing (``center`` zero padding), windowed DFT, magnitude or power, mel filterbank, the dB
   conversion (``ref`` = the clip's peak for ``logmel``, 1 for ``mfcc``; ``amin``; ``top_db``
   below the clip's top), or ``log(mel + log_offset)``, the MFCC DCT;
2. the float16 rounding of the cache, the padding of short clips with the training silence, the
   normalisation with the training statistics;
3. the evaluation windows (``crop_frames`` every ``eval_hop`` frames, the last one aligned to the
   clip's end, one padded window for a clip shorter than a window), the model on every window;
4. the window logits averaged per clip, then a softmax: what ``evaluate`` and ``predict`` do.

Input ``waveform``: float32 ``(batch, samples)`` at the run's sample rate (``(batch, channels,
samples)`` for a run trained with ``mono: false``), any number of samples (0 is scored as
silence) and of clips (a batch of 0 gives ``(0, n_classes)``); another dtype, rank or channel
count is refused (``WaveformClassifier.check``); the rows of a batch are clips of the same length
(zero padding a clip changes its spectrogram). Outputs ``probabilities`` ``(batch, n_classes)``
and ``window_logits`` ``(batch, windows, n_classes)``.
Resampling stays outside: ``soxr.resample(x, file_rate, sample_rate)`` (what ``data_prep``
uses) or ``torchaudio.functional.resample``. The file's metadata holds the class names, the
feature config, the sample rate and the window sizes as JSON (ONNX ``metadata_props`` key
``audiostem``; TorchScript extra file ``audiostem.json``).

Not exportable, with an error that says so: piano-roll runs (their input is a MIDI file, and
note events to frames is not a tensor operation) and ``cqt`` runs (librosa's multirate CQT,
with its recursive resampling, is not reproduced inside a graph).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from data_prep.discover import shown

from .inference import CheckpointError, load_classifier, one_line_warnings, warn_if_unfinished
from .run_folder import find_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXPORTABLE_KINDS = ("stft", "mel", "logmel", "mfcc")


class ExportError(ValueError):
    """A run that cannot be exported, or an export that failed its check."""


class WaveformClassifier(nn.Module):
    """A trained classifier with its feature front end and evaluation windows in front.

    ``forward(waveform)``: ``(batch, samples)`` float32 at ``features["sample_rate"]`` (or
    ``(batch, channels, samples)`` for a ``mono: false`` run; ``batch`` may be 0) ->
    ``(probabilities (batch, n_classes), window_logits (batch, windows, n_classes))``; raises
    ``ValueError`` (``check``) for another dtype, rank or channel count. Equal to ``predict`` on the same
    samples (tested to 1e-3 in probability). Written with plain tensor ops and integer shape
    arithmetic only, so that ``torch.jit.script`` and ``torch.onnx.export(dynamo=True)`` both
    keep the number of samples dynamic.

    Args:
        model: the trained ``(windows, C, F, crop_frames) -> (windows, n_classes)`` classifier.
        features: the run's feature config as a dict (an exportable audio kind).
        stats: ``{"mean", "std", "pad"}``, each ``(C, F)``, from the checkpoint.
        crop_frames, eval_hop: the evaluation window and hop, in frames.
    """

    def __init__(self, model: nn.Module, features: dict, stats: dict[str, torch.Tensor],
                 crop_frames: int, eval_hop: int):
        super().__init__()
        from data_prep.config import feature_config
        from data_prep.features import _window, dct_matrix, mel_filterbank

        c = feature_config(features)
        refuse_unexportable(c.to_dict())
        self.model = model
        self.kind, self.mono, self.sample_rate = c.kind, c.mono, c.sample_rate
        self.n_fft, self.hop_length, self.center = c.n_fft, c.hop_length, c.center
        self.crop, self.eval_hop = crop_frames, eval_hop
        self.power = float(c.power)
        self.amin = float(c.amin)
        self.top_db = -1.0 if c.top_db is None else float(c.top_db)          # < 0: no clipping
        self.log_offset = -1.0 if c.log_offset is None else float(c.log_offset)  # < 0: dB
        n_bins = c.n_fft // 2 + 1
        mel = torch.zeros(0, 0)
        lo, hi = 0, n_bins
        if c.kind != "stft":
            weights = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, float(c.fmin),
                                     None if c.fmax is None else float(c.fmax), c.htk, c.mel_norm)
            used = np.flatnonzero(weights.any(axis=0))      # the DFT bins any band reads
            lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
            mel = torch.from_numpy(np.ascontiguousarray(weights[:, lo:hi].T))   # (bins used, n_mels)
        self.lo, self.hi = lo, hi
        self.register_buffer("window", _window(c.window, c.win_length or c.n_fft, c.n_fft).float())
        self.register_buffer("mel", mel)
        self.register_buffer("dct", dct_matrix(c.n_mfcc, c.n_mels).T.float().contiguous()
                             if c.kind == "mfcc" else torch.zeros(0, 0))     # (n_mels, n_mfcc)
        for name in ("mean", "std", "pad"):
            self.register_buffer(name, stats[name].float().clone())         # (C, F)

    def check(self, waveform: torch.Tensor) -> None:
        """Refuse what would be scored wrongly or fail deep inside: another dtype (int16 PCM is 32768
        times too loud), rank or channel count. onnxruntime checks dtype and rank itself."""
        layout = "(batch, samples)" if self.mono else f"(batch, channels, samples) with {self.mean.shape[0]} channels"
        if waveform.dtype != torch.float32:
            raise ValueError(f"waveform: expected float32 samples in [-1, 1] shaped {layout}, got another dtype "
                             "(int16 PCM: divide it by 32768)")
        if waveform.dim() != (2 if self.mono else 3):
            raise ValueError(f"waveform: expected float32 samples shaped {layout}, got shape {list(waveform.shape)}"
                             " (one clip x: x[None])")
        if not self.mono and waveform.shape[1] != self.mean.shape[0]:
            raise ValueError(f"waveform: expected float32 samples shaped {layout}, got {waveform.shape[1]} channels")

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, [channels,] samples)`` -> cache features ``(batch, C, F, frames)`` float32
        (before the float16 rounding), as ``data_prep.compute_features``."""
        x = waveform.unsqueeze(1) if self.mono else waveform                 # (B, C, L)
        if self.center:
            x = nn.functional.pad(x, (self.n_fft // 2, self.n_fft // 2))
        x = nn.functional.pad(x, (0, max(self.n_fft - x.shape[-1], 0)))     # one frame at least
        n_frames = (x.shape[-1] - self.n_fft) // self.hop_length + 1
        index = (torch.arange(n_frames, device=x.device)[:, None] * self.hop_length
                 + torch.arange(self.n_fft, device=x.device)[None, :]).reshape(-1)
        frames = x.index_select(2, index).reshape(-1, self.n_fft) * self.window   # (B * C * T, n_fft)
        # one frame of zeros more, dropped after: MKL's FFT fails on no frames at all (a batch of 0
        # clips), and an `if` on the batch size would not stay dynamic in the ONNX export
        frames = torch.cat([frames, frames.new_zeros(1, self.n_fft)])
        spec = torch.view_as_real(torch.fft.rfft(frames)[:-1, self.lo:self.hi])
        power = (spec[..., 0].square() + spec[..., 1].square()).reshape(
            x.shape[0], x.shape[1], n_frames, self.hi - self.lo)               # (B, C, T, bins used)
        if self.kind == "stft":
            return power.sqrt().transpose(2, 3)
        if self.power != 2.0:
            power = power.sqrt().pow(self.power)
        s = power @ self.mel                                                 # (B, C, T, n_mels)
        if self.kind == "logmel" or self.kind == "mfcc":
            if self.log_offset > 0:
                s = torch.log(s + self.log_offset)
            else:
                db = 10.0 * torch.log10(s.clamp(min=self.amin))
                if self.kind == "logmel":                                    # ref = the clip's peak
                    peak = s.amax(dim=(1, 2, 3), keepdim=True).clamp(min=self.amin)
                    db = db - 10.0 * torch.log10(peak)
                if self.top_db >= 0:
                    db = torch.maximum(db, db.amax(dim=(1, 2, 3), keepdim=True) - self.top_db)
                s = db
            if self.kind == "mfcc":
                s = s @ self.dct
        return s.transpose(2, 3)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(waveform)
        x = self.features(waveform).half().float()          # the cache stores float16
        batch, frames = x.shape[0], x.shape[3]
        # silence after the clip, enough for any window (the same padding as predict)
        x = torch.cat([x, self.pad[None, :, :, None].expand(batch, -1, -1, self.crop)], dim=3)
        x = (x - self.mean[None, :, :, None]) / self.std[None, :, :, None]
        # window starts as data.window_starts: 0, hop, 2 hop, ... and the end-aligned one
        span = max(frames - self.crop, 0)
        n_windows = (span + self.eval_hop - 1) // self.eval_hop + 1
        starts = (torch.arange(n_windows, device=x.device) * self.eval_hop).clamp(max=span)
        index = (starts[:, None] + torch.arange(self.crop, device=x.device)[None, :]).reshape(-1)
        w = x.index_select(3, index).reshape(batch, x.shape[1], x.shape[2], n_windows, self.crop)
        w = w.permute(0, 3, 1, 2, 4).reshape(batch * n_windows, x.shape[1], x.shape[2], self.crop)
        logits = self.model(w)
        logits = logits.reshape(batch, n_windows, logits.shape[-1])      # no -1: batch may be 0
        return torch.softmax(logits.mean(dim=1), dim=1), logits


def refuse_unexportable(features: dict) -> None:
    """Raise :class:`ExportError` saying why a run with this feature config cannot be exported."""
    kind = features.get("kind")
    if kind == "pianoroll":
        raise ExportError("features.kind: pianoroll runs read MIDI files, and turning note events into "
                          "a piano roll is not a tensor operation, so it cannot go inside the exported "
                          "graph; classify MIDI with python -m audiostem.predict")
    if kind == "cqt":
        raise ExportError("features.kind: cqt features are librosa's multirate CQT (the signal is "
                          "resampled down an octave at a time), which is not reproduced inside the graph "
                          f"with the features' parity; exportable kinds: {', '.join(EXPORTABLE_KINDS)}")
    if kind not in EXPORTABLE_KINDS:
        raise ExportError(f"features.kind: {kind!r} cannot be exported; exportable kinds: "
                          f"{', '.join(EXPORTABLE_KINDS)}")


def waveform_classifier(checkpoint: Union[str, Path]) -> tuple[WaveformClassifier, dict]:
    """``(WaveformClassifier in eval mode on CPU, metadata dict)`` for a checkpoint or run folder.
    Raises :class:`~audiostem.inference.CheckpointError` or :class:`ExportError`."""
    model, payload = load_classifier(checkpoint, "cpu")
    refuse_unexportable(payload.features)
    model = model.to(memory_format=torch.contiguous_format)
    wrapped = WaveformClassifier(model, payload.features, payload.stats_tensors(), payload.crop_frames,
                                 payload.eval_hop).eval().requires_grad_(False)
    f = payload.features
    meta = {"format_version": 1, "classes": list(payload.classes), "features": f,
            "sample_rate": f["sample_rate"], "channels": 1 if f["mono"] else f["channels"],
            "crop_frames": payload.crop_frames, "eval_hop": payload.eval_hop,
            "normalize": payload.normalize, "checkpoint": str(find_checkpoint(checkpoint)),
            "input": "waveform: float32 (batch, samples) at sample_rate" if f["mono"] else
                     "waveform: float32 (batch, channels, samples) at sample_rate",
            "outputs": ["probabilities: (batch, n_classes)", "window_logits: (batch, windows, n_classes)"]}
    return wrapped, meta


def _example(meta: dict, seconds: float) -> torch.Tensor:
    n = max(1, round(seconds * meta["sample_rate"]))
    shape = (1, n) if meta["features"]["mono"] else (1, meta["channels"], n)
    return 0.1 * torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def export_onnx(wrapped: WaveformClassifier, meta: dict, out: Path, example: torch.Tensor) -> None:
    """Write ``wrapped`` as ONNX (``torch.onnx.export(dynamo=True)``, batch and samples dynamic),
    with ``meta`` as JSON under the ``audiostem`` metadata key."""
    import onnx

    dims = {0: torch.export.Dim("batch"), example.ndim - 1: torch.export.Dim("samples", min=1)}
    program = torch.onnx.export(wrapped, (example,), dynamo=True, dynamic_shapes={"waveform": dims},
                                input_names=["waveform"], output_names=["probabilities", "window_logits"],
                                verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "audiostem", json.dumps(meta)
    onnx.save_model(proto, str(out))


def export_torchscript(wrapped: WaveformClassifier, meta: dict, out: Path, example: torch.Tensor) -> None:
    """Write ``wrapped`` as TorchScript: the model traced on a batch of windows (``example`` is not
    needed: the scripted front end and windowing keep every size dynamic), the front end and
    windowing scripted around it; ``meta`` as the extra file ``audiostem.json``."""
    c, f = wrapped.mean.shape
    model = wrapped.model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")  # docs/training.md says it
        # every window has the traced shape, so sizes the trace fixes (pons's branch cut) hold for all
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            wrapped.model = torch.jit.trace(model, torch.randn(3, c, f, wrapped.crop), check_trace=False)
        try:
            scripted = torch.jit.script(wrapped)
        finally:
            wrapped.model = model
        torch.jit.save(scripted, str(out), _extra_files={"audiostem.json": json.dumps(meta)})


def run_exported(path: Path, fmt: str, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, window_logits)`` of an exported file on a float32 waveform batch, with
    onnxruntime (one thread) or ``torch.jit.load``."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        probs, logits = session.run(None, {"waveform": waveform})
        return probs, logits
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        module = torch.jit.load(str(path))
    with torch.no_grad():
        probs, logits = module(torch.from_numpy(waveform))
    return probs.numpy(), logits.numpy()


def export(checkpoint: Union[str, Path], fmt: str = "onnx", out: Optional[Union[str, Path]] = None,
           clip_seconds: float = 10.0) -> Path:
    """Export a run (a run folder or a ``.ckpt``) to one file and check it.

    Args:
        checkpoint: the run folder (its ``checkpoints/best.ckpt``) or a checkpoint file.
        fmt: ``onnx`` or ``torchscript``.
        out: the file to write, or a folder to write it in (default: next to the checkpoint,
            ``best.onnx`` or ``best.torchscript.pt``). Written to ``OUT.partial`` and renamed
            when checked.
        clip_seconds: length of the example clip that ONNX export traces with and that both
            formats are checked on (the file takes any length).
    Returns the path written. Raises :class:`ExportError` for a run that cannot be exported, a
    missing ``audiostem[export]`` extra, a model torch cannot export, or a file whose output
    differs from the model in this process by more than 1e-4 (on the example clip, a clip
    shorter than a window and a batch of 0 clips). A run folder that has not finished (no ``metrics.json``) gives a
    ``UserWarning``: its checkpoint is the best so far.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 0 < clip_seconds < float("inf"):
        raise ExportError(f"--clip-seconds: must be positive and finite, got {clip_seconds!r}")
    wrapped, meta = waveform_classifier(checkpoint)
    warn_if_unfinished(checkpoint, "exporting")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise ExportError(f"ONNX export needs the export extra ({e.name} is missing): "
                              "pip install 'audiostem[export]'") from None
        if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 6):
            raise ExportError(f"ONNX export needs torch >= 2.6 (torch.onnx.export(dynamo=True) with dynamic "
                              f"shapes), this is torch {torch.__version__}; or use --format torchscript")
    ckpt = find_checkpoint(checkpoint)
    out = Path(out) if out is not None else ckpt.parent
    if out.is_dir():
        out = out / (ckpt.stem + FORMATS[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    example = _example(meta, clip_seconds)
    try:
        (export_onnx if fmt == "onnx" else export_torchscript)(wrapped, meta, partial, example)
    except Exception as e:                       # noqa: BLE001 - torch.onnx/jit raise many kinds
        partial.unlink(missing_ok=True)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"{shown(out)}: the {fmt} export failed ({type(e).__name__}: {first}); nothing written") from e
    short = example[..., :max(1, wrapped.hop_length * wrapped.crop // 3)]
    for clip in (example, short, example[:0]):
        with torch.no_grad():
            expected = wrapped(clip)[0].numpy()
        got = run_exported(partial, fmt, clip.numpy())[0]
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-4):
            partial.unlink(missing_ok=True)
            what = f"a {clip.shape[-1]}-sample clip" if len(clip) else "a batch of 0 clips"
            raise ExportError(f"{shown(out)}: the exported {fmt} file gives other probabilities than the model "
                              f"on {what} ({got} != {expected}); not written")
    os.replace(partial, out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiostem.export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="a run folder or a .ckpt file")
    parser.add_argument("--format", dest="fmt", choices=list(FORMATS), default="onnx",
                        help="onnx (default; runs with onnxruntime) or torchscript (runs with torch alone; "
                             "torch marks TorchScript deprecated)")
    parser.add_argument("--out", help="the file to write (default: next to the checkpoint, "
                                      "best.onnx or best.torchscript.pt)")
    parser.add_argument("--clip-seconds", type=float, default=10.0,
                        help="length of the example clip the export traces with and checks the file "
                             "on (default 10; the file takes any length)")
    args = parser.parse_args(argv)
    one_line_warnings()
    try:
        out = export(args.checkpoint, args.fmt, args.out, args.clip_seconds)
    except (CheckpointError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {shown(e.filename or args.out)}: cannot write the exported file ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"wrote {shown(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
