"""The one way audiostem reads a checkpoint file: tensors and plain data only, verified first.

Every checkpoint the project did not just write in this process goes through
:func:`load_checkpoint`: ``--resume``, a run's own ``last.ckpt``, ``best.ckpt`` after training,
``evaluate``, ``predict`` and the study report's filter plots. Lightning's resume goes through it
too, by :class:`VerifiedCheckpointIO` (Lightning itself calls ``torch.load`` with
``weights_only=None``, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into a full unpickle).

What is trusted in a checkpoint: tensors and plain data (dicts, lists, strings, numbers), never
code. ``torch.load(weights_only=True)`` is passed explicitly, which the environment variable does
not override (torch >= 2.6; before 2.6 ``weights_only=True`` could itself be bypassed,
CVE-2025-32434, hence the dependency floor). Before unpickling, the zip container is checked:
every entry's bytes against its CRC-32 (``zipfile.testzip``), so a truncated file or altered
tensor bytes are named instead of used. The CRC catches damage (a short copy, a flipped bit,
a full disk), not a deliberate forgery: whoever can write a checkpoint can write any weights.
"""
from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch


class CheckpointError(ValueError):
    """A path that is not a usable audiostem checkpoint or run folder: missing, truncated,
    damaged, or holding pickled objects other than tensors and plain data."""


def verify_checkpoint(path: Union[str, Path]) -> Path:
    """Check that ``path`` is a whole torch zip checkpoint: every entry's bytes match its
    CRC-32. Reads the whole file. Returns the path; raises :class:`CheckpointError` naming
    the file (and the damaged entry)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as e:
        size = path.stat().st_size
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({size} bytes, {e}: the file was "
                              "cut short, e.g. by a full disk or a copy that did not finish, or is "
                              "not a torch checkpoint)") from None
    except (OSError, EOFError, zlib.error, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: the bytes of entry {bad!r} do not match "
                              "their CRC-32 (altered or corrupted on disk); it was not loaded")
    return path


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> dict:
    """Verify (:func:`verify_checkpoint`) and load a checkpoint with ``weights_only=True``.

    Args:
        path: a ``.ckpt``/``.pt`` file written by ``torch.save`` (Lightning's are).
        map_location: where tensors go, as for ``torch.load``.

    Returns the checkpoint dict. Raises :class:`CheckpointError` naming the file when it is
    missing, truncated, damaged, not a dict, or holds anything but tensors and plain data
    (nothing in it is run)."""
    path = verify_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        why = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise CheckpointError(f"{path}: refused: it holds pickled Python objects, not only tensors and plain "
                              f"data ({why.strip()}); audiostem never runs code from a checkpoint") from None
    except Exception as e:                       # noqa: BLE001 - any other unreadable file
        text = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {text})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def _lightning_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class VerifiedCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint I/O, loading through :func:`load_checkpoint` (verified,
        ``weights_only=True`` whatever the environment or the caller asks)."""

        def load_checkpoint(self, path, map_location: Optional[Callable] = None,
                            weights_only: Optional[bool] = None) -> dict:
            return load_checkpoint(path, map_location if map_location is not None else "cpu")

    return VerifiedCheckpointIO


def verified_checkpoint_io():
    """A Lightning ``CheckpointIO`` plugin (pass it in ``Trainer(plugins=[...])``) whose loads go
    through :func:`load_checkpoint`; saving is Lightning's own."""
    return _lightning_io()()
