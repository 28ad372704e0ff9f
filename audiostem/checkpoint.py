"""The one way audiostem reads a checkpoint file: tensors and plain data only, verified first;
and what audiostem stores in it beside the weights (:class:`CheckpointPayload`).

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

import dataclasses
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from data_prep.discover import shown
from data_prep.fileio import write_atomic


class CheckpointError(ValueError):
    """A path that is not a usable audiostem checkpoint or run folder: missing, truncated,
    damaged, or holding pickled objects other than tensors and plain data."""


def verify_checkpoint(path: Union[str, Path]) -> Path:
    """Check that ``path`` is a whole torch zip checkpoint: every entry's bytes match its
    CRC-32. Reads the whole file. Returns the path; raises :class:`CheckpointError` naming
    the file (and the damaged entry)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{shown(path)}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as e:
        size = path.stat().st_size
        raise CheckpointError(f"{shown(path)}: truncated or not a checkpoint ({size} bytes, {e}: the file was "
                              "cut short, e.g. by a full disk or a copy that did not finish, or is "
                              "not a torch checkpoint)") from None
    except (OSError, EOFError, zlib.error, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"{shown(path)}: damaged checkpoint ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{shown(path)}: damaged checkpoint: the bytes of entry {bad!r} do not match "
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
        raise CheckpointError(f"{shown(path)}: refused: it holds pickled Python objects, not only tensors and plain "
                              f"data ({why.strip()}); audiostem never runs code from a checkpoint") from None
    except Exception as e:                       # noqa: BLE001 - any other unreadable file
        text = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{shown(path)}: cannot be read as a checkpoint ({type(e).__name__}: {text})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{shown(path)}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def _lightning_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class VerifiedCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint I/O, loading through :func:`load_checkpoint` (verified,
        ``weights_only=True`` whatever the environment or the caller asks) and saving through
        :func:`~data_prep.fileio.write_atomic`: the new file is written beside the old one and
        renamed over it. (Lightning writes to the system temporary folder and moves the file; when
        that is another file system the move truncates the old checkpoint and copies into it, so a
        full disk left neither the old checkpoint nor the new one.)"""

        def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
            if storage_options is not None:
                raise TypeError("audiostem saves checkpoints to local files only: storage_options is not supported")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            data = io.BytesIO()         # torch's own writer turns a failed write into a RuntimeError
            torch.save(checkpoint, data)
            write_atomic(path, data.getbuffer())

        def load_checkpoint(self, path, map_location: Optional[Callable] = None,
                            weights_only: Optional[bool] = None) -> dict:
            return load_checkpoint(path, map_location if map_location is not None else "cpu")

    return VerifiedCheckpointIO


def verified_checkpoint_io():
    """A Lightning ``CheckpointIO`` plugin (pass it in ``Trainer(plugins=[...])``) whose loads go
    through :func:`load_checkpoint` and whose saves are atomic beside the file."""
    return _lightning_io()()


# --- what audiostem stores in a checkpoint --------------------------------------------------------
PAYLOAD_KEY = "audiostem"      # the checkpoint dict's entry that holds the payload


@dataclass
class CheckpointPayload:
    """The plain data every audiostem checkpoint carries beside the weights, under
    ``ckpt["audiostem"]``: everything needed to rebuild the model and to turn a new file into
    its input exactly as in training, so that evaluating, predicting and exporting read nothing
    else. Stored as a plain dict (:meth:`to_dict`), in the same keys and order since the first
    release, so checkpoints written before this class existed load unchanged.

    Attributes:
        recipe: the resolved recipe as plain data (``Recipe.to_dict()``; what ``recipe.yaml`` holds).
        classes: class names in label-index order (the model's output columns).
        input_shape: ``[channels, bins, crop_frames]``, one training input without the batch axis.
        features: the cache's feature config (``data_prep`` ``FeatureConfig.to_dict()``).
        feature_shape: the cache's ``meta.json`` ``feature_shape``, ``[channels, bins]``.
        stats: ``{"mean", "std", "pad"}``, each ``(channels, bins)`` as nested lists: the
            normalisation statistics of the training items and the padding value of short clips.
        normalize: the recipe's ``data.normalize`` (``per_bin``, ``global`` or ``none``).
        crop_frames: frames per window (training crop and evaluation window).
        eval_hop: frames between evaluation windows of one clip.
        fold: the test fold of a cross-validation run, else None.
        cache: the path of the feature cache it was trained on.
        cache_build_id: the ``build_id`` of that cache's build (None in checkpoints written
            before 2026-11-30, which did not record it).
    """
    recipe: dict
    classes: list
    input_shape: list
    features: dict
    feature_shape: list
    stats: dict
    normalize: str
    crop_frames: int
    eval_hop: int
    fold: Optional[int]
    cache: str
    cache_build_id: Optional[str] = None

    def to_dict(self) -> dict:
        """The payload as stored: a dict in field order (``cache_build_id`` left out when None,
        as old checkpoints have it)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["cache_build_id"] is None:
            del out["cache_build_id"]
        return out

    @classmethod
    def from_dict(cls, data: Any, path: Union[str, Path]) -> "CheckpointPayload":
        """Check and wrap a stored payload. Keys this version does not know are ignored.
        Raises :class:`CheckpointError` naming ``path`` and every missing or malformed field."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{shown(path)}: not an audiostem checkpoint (no {PAYLOAD_KEY!r} entry); "
                                  "train one with python -m audiostem.train")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"{shown(path)}: its {PAYLOAD_KEY!r} entry lacks {', '.join(missing)} (damaged, or "
                                  "not written by python -m audiostem.train); train the model again")
        bad = [f"{k} {data.get(k)!r:.60} ({want})" for k, ok, want in _PAYLOAD_CHECKS if not ok(data.get(k))]
        if bad:
            raise CheckpointError(f"{shown(path)}: its {PAYLOAD_KEY!r} entry has malformed fields: {'; '.join(bad)} "
                                  "(damaged, or not written by python -m audiostem.train); train the model again")
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path: Union[str, Path]) -> "CheckpointPayload":
        """The payload of a loaded checkpoint dict (:func:`load_checkpoint`); :class:`CheckpointError`
        naming ``path`` when there is none or it is malformed."""
        return cls.from_dict(ckpt.get(PAYLOAD_KEY), path)

    def stats_tensors(self) -> dict:
        """``stats`` as float32 tensors, each ``(channels, bins)``."""
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.stats.items()}


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _ints(n: Optional[int]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and (n is None or len(v) == n) and all(_int(1)(x) for x in v)


_PAYLOAD_CHECKS: tuple = (
    ("recipe", lambda v: isinstance(v, dict), "a mapping"),
    ("classes", lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(c, str) for c in v),
     "a list of class names"),
    ("input_shape", _ints(3), "[channels, bins, frames]"),
    ("features", lambda v: isinstance(v, dict) and "kind" in v, "a feature config mapping"),
    ("feature_shape", _ints(None), "a list of sizes"),
    ("stats", lambda v: isinstance(v, dict) and {"mean", "std", "pad"} <= set(v)
     and all(isinstance(x, list) for x in v.values()), "mean, std and pad as nested lists"),
    ("normalize", lambda v: isinstance(v, str), "per_bin, global or none"),
    ("crop_frames", _int(1), "an integer >= 1"),
    ("eval_hop", _int(1), "an integer >= 1"),
    ("fold", lambda v: v is None or _int(0)(v), "a fold number or null"),
    ("cache", lambda v: isinstance(v, str), "a path"),
    ("cache_build_id", lambda v: v is None or isinstance(v, str), "a build id or absent"),
)
