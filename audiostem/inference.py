"""Trained classifiers outside training: load a checkpoint, score whole clips.

A checkpoint written by ``audiostem.train`` holds, besides the weights, a
:class:`~audiostem.checkpoint.CheckpointPayload`: the resolved recipe, the class list, the
feature config of the cache, the normalisation statistics and the crop/window sizes. That is
everything needed to turn a new file into the model's input exactly as in training, so nothing
else is read.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch

from data_prep.discover import shown

from .checkpoint import CheckpointError, CheckpointPayload, load_checkpoint
from .metrics import add_windows, mean_window_logits
from .models import use_channels_last
from .recipe_schema import ModelConfig
from .run_folder import METRICS_FILE, find_checkpoint, is_finished

__all__ = ["CheckpointError", "UnfinishedRunWarning", "clip_logits", "device_arg", "find_checkpoint", "load_classifier",
           "one_line_warnings", "positive_int",
           "warn_if_unfinished"]


class UnfinishedRunWarning(UserWarning):
    """A command uses the best checkpoint so far of a run that has not finished."""


def one_line_warnings() -> None:
    """For the command-line tools: print this package's warnings as one ``warning: ...`` line
    (not Python's file, line and source-line format); other warnings keep theirs."""
    default = warnings.formatwarning

    def format(message, category, filename, lineno, line=None):
        if issubclass(category, UnfinishedRunWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)
    warnings.formatwarning = format


def warn_if_unfinished(path: Union[str, Path], doing: str, folds: Sequence[Path] = ()) -> None:
    """An :class:`UnfinishedRunWarning` (a ``UserWarning``, pointing at the caller's caller) when ``path`` is a run folder that has
    not finished (no ``metrics.json``: interrupted, or still training), whose checkpoint is only
    the best so far; nothing for a finished run or a checkpoint file. ``doing`` is what the
    command does with it (``"scoring"``, ``"predicting with"``, ``"exporting"``); ``folds`` are
    the fold folders used in its place (evaluate pools a cross-validation run's folds)."""
    if not Path(path).is_dir() or is_finished(path):
        return
    unfinished = [f.name for f in folds if not is_finished(f)]
    what = (f"the best checkpoints so far of {', '.join(f.name for f in folds)}"
            + (f" ({', '.join(unfinished)} unfinished)" if unfinished else "") + " only"
            if folds else "its best checkpoint so far")
    warnings.warn(f"{shown(path)}: training has not finished (no {METRICS_FILE}): {doing} {what}", UnfinishedRunWarning,
                  stacklevel=3)


def load_classifier(path: Union[str, Path],
                    device: Union[str, torch.device] = "cpu") -> tuple[torch.nn.Module, CheckpointPayload]:
    """Rebuild a trained model from a checkpoint file or run folder (its ``best.ckpt``), verified
    and loaded with ``weights_only=True`` (:func:`audiostem.checkpoint.load_checkpoint`: no pickled
    code runs, damaged bytes are refused). Returns ``(model in eval mode on device, payload)``;
    raises :class:`CheckpointError` naming the file when it is not a whole audiostem checkpoint."""
    path = find_checkpoint(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{shown(path)}: not an audiostem checkpoint (no 'audiostem' or 'state_dict' entry); "
                              "train one with python -m audiostem.train")
    payload = CheckpointPayload.from_checkpoint(ckpt, path)
    try:
        m = payload.recipe["model"]
        # the recipe training validated, rebuilt as it is; the weights come from the checkpoint
        model = ModelConfig.trusted(m).build(len(payload.classes), payload.input_shape[0], pretrained=False)
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
        text = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{shown(path)}: its model does not rebuild from what it stores "
                              f"({type(e).__name__}: {text})") from None
    model = model.to(device).eval()
    if use_channels_last(m.get("channels_last", False), device):
        model = model.to(memory_format=torch.channels_last)     # convs then run NHWC whatever the input
    return model, payload


@torch.no_grad()
def clip_logits(model: torch.nn.Module, batches: Iterable, n_clips: int,
                device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Mean window logits per clip, ``(n_clips, num_classes)``, from batches of
    ``(x (batch, C, F, T), clip (batch,))`` (extra leading items such as labels are ignored:
    the last element is the clip index)."""
    sums, counts = None, torch.zeros(n_clips)
    for batch in batches:
        x, clip = batch[0], batch[-1]
        logits = model(x.to(device)).float().cpu()
        if sums is None:
            sums = torch.zeros(n_clips, logits.shape[1])
        add_windows(sums, counts, logits, clip)
    if sums is None:
        raise ValueError("clip_logits: no windows to score")
    return mean_window_logits(sums, counts)


# --- argparse types of the evaluate and predict commands (argparse turns their errors into one line)
def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def device_arg(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ..."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as e:    # no driver, no such index, not built in
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise argparse.ArgumentTypeError(f"{text}: not available here ({first}); use --device cpu") from None
    return text
