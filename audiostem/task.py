"""The classification task: model, loss, optimiser, schedule and clip-level metrics.

Training sees random crops; validation and test see every window of a clip and average the
window logits per clip (:func:`audiostem.metrics.add_windows`, as ``inference.clip_logits``
does), then score clips with torchmetrics. Under DDP each rank sums the logits of its share of
the windows and the sums are all-reduced, so the clip scores are exact whatever the number of
ranks.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, EarlyStopping
import torch
import torch.nn.functional as F

from . import augment as aug
from . import run_folder
from .checkpoint import PAYLOAD_KEY, CheckpointPayload
from .data import derive_seed
from .metrics import add_windows, classification_metrics, mean_window_logits
from .models import use_channels_last
from .recipe import RecipeError
from .recipe_schema import ModelConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only, not on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total: int, warmup: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup * total`` steps, then cosine to 0."""
    w = int(warmup * total)
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def model_for_input(cfg: ModelConfig, num_classes: int, input_shape: tuple[int, int, int]) -> torch.nn.Module:
    """``cfg.build(num_classes, C)`` for inputs of ``input_shape = (C, F, T)`` (channels, bins,
    frames), with the checks that only the data allows, each one line naming the recipe field
    (:class:`~audiostem.recipe.RecipeError`): a stem ``n_freq`` above the input's bins (kernels
    taller than the input), a stem that does not fit a library body, and an input too small for the
    model (one forward pass of zeros)."""
    c, f, t = input_shape
    if isinstance(cfg.stem, str) and cfg.stem != "native":
        from .stems import stem_defaults
        n_freq = cfg.stem_args.get("n_freq", stem_defaults(cfg.stem).get("n_freq"))
        if isinstance(n_freq, int) and n_freq > f:
            raise RecipeError(f"model.stem_args.n_freq: {n_freq} is more than the input's {f} bins, so the "
                              f"{cfg.stem} stem's kernels would be taller than its input; set "
                              f"model.stem_args.n_freq: {f}")
    try:
        model = cfg.build(num_classes, c)
    except ValueError as e:
        raise RecipeError(f"model: {cfg.stem if isinstance(cfg.stem, str) else 'the inline stem'} on the body "
                          f"{cfg.body}: {e}") from None
    param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, f, t, dtype=param.dtype))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"model.stem: an input of {f} bins x {t} frames ({c} channel{'s' * (c != 1)}) is too "
                          f"small for the stem {cfg.stem!r} on the body {cfg.body!r} ({first}); give more frames "
                          "(data.crop_frames) or choose a stem with less stride") from None
    finally:
        model.train(was)
    return model


class ClassifierTask(pl.LightningModule):
    """A stem + body + head classifier trained with a recipe's ``model.*`` and ``train.*``.

    Args:
        payload: what every checkpoint stores beside the weights: the resolved recipe
            (``payload.recipe``), the classes in label-index order, the input shape
            ``(C, F, T)`` of ``(batch, C, F, T)``, the feature config and normalisation
            statistics that ``predict`` needs to rebuild the input.

    Attributes after a validation/test epoch: ``results[stage]`` = ``{"logits": (clips, classes),
    "target": (clips,), "metrics": classification_metrics(...)}``.
    """

    def __init__(self, payload: CheckpointPayload):
        super().__init__()
        recipe, classes = payload.recipe, payload.classes
        self.recipe, self.classes, self.payload = recipe, list(classes), payload
        m, t = recipe["model"], recipe["train"]
        self.input_shape = tuple(payload.input_shape)
        self.model = model_for_input(ModelConfig.trusted(m), len(classes), self.input_shape)
        self.channels_last = m["channels_last"] is True      # "auto" is decided in setup(), on the device
        self.train_cfg, self.mixup_cfg = t, recipe["augment"]["mixup"]
        self.seed = recipe["seed"]
        self.results: dict[str, dict] = {}
        self._sums: Optional[torch.Tensor] = None
        self._counts: Optional[torch.Tensor] = None
        self._loss_sum = self._loss_n = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, F, T) -> (batch, num_classes)`` logits."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def setup(self, stage: str) -> None:
        self.channels_last = use_channels_last(self.recipe["model"]["channels_last"],
                                               self.trainer.strategy.root_device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._loss_sum = self._loss_n = 0.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every random draw of a step (mixup, dropout) follows from (seed, step, rank), so a
        # resumed run repeats an uninterrupted one.
        torch.manual_seed(derive_seed(self.seed, self.global_step, self.global_rank))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        smoothing = self.train_cfg["label_smoothing"]
        if self.mixup_cfg["enabled"]:
            n = len(self.classes)
            target = F.one_hot(y, n).float() * (1 - smoothing) + smoothing / n
            alpha = self.mixup_cfg["alpha"]
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            x, target = aug.mixup(x, target, lam, torch.randperm(len(x), device=x.device))
            loss = torch.sum(-target * F.log_softmax(self(x).float(), dim=1), dim=1).mean()
        else:
            loss = F.cross_entropy(self(x).float(), y, label_smoothing=smoothing)
        self._loss_sum = self._loss_sum + loss.detach() * len(x)    # a tensor: no device sync per step
        self._loss_n += len(x)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    @property
    def epoch_train_loss(self) -> float:
        """Mean training loss over this rank's examples of the current epoch."""
        return float(self._loss_sum) / max(self._loss_n, 1)

    def configure_optimizers(self) -> Any:
        t = self.train_cfg
        groups = param_groups(self.model, t["weight_decay"])
        if t["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=t["lr"], momentum=t["momentum"], nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=t["lr"])
        if t["schedule"] == "none":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if t["schedule"] == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t["lr"], total_steps=total,
                                                        pct_start=max(t["warmup"], 1e-3))
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, t["warmup"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- clip-level evaluation -----------------------------------------------------------------
    def _start_eval(self, dataloaders: Any) -> None:
        loader = dataloaders[0] if isinstance(dataloaders, (list, tuple)) else dataloaders
        ds = loader.dataset
        self._sums = torch.zeros(ds.n_clips, len(self.classes), device=self.device)
        self._counts = torch.zeros(ds.n_clips, device=self.device)
        self._targets = torch.tensor([ds.cache.label_index(i) for i in ds.indices], dtype=torch.long)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        x, y, clip = batch
        add_windows(self._sums, self._counts, self(x), clip)

    def _end_eval(self, stage: str) -> dict[str, Any]:
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        counts = self.trainer.strategy.reduce(self._counts, reduce_op="sum")
        logits = mean_window_logits(sums, counts).cpu()
        metrics = classification_metrics(logits, self._targets, self.classes)
        self.results[stage] = {"logits": logits, "target": self._targets, "metrics": metrics}
        prefix = "val" if stage == "val" else "test"
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "loss"):
            self.log(f"{prefix}_{key}", metrics[key], prog_bar=key == "accuracy", sync_dist=True)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_eval(self.trainer.val_dataloaders)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval(self.trainer.test_dataloaders)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[PAYLOAD_KEY] = self.payload.to_dict()


# --- the epoch history ---------------------------------------------------------------------------
class StayStopped(EarlyStopping):
    """Lightning's ``EarlyStopping``, which also stops a run resumed after it had stopped:
    Lightning restores the callback's counters (``stopped_epoch``) but not the trainer's
    ``should_stop``, so such a run trained on. Its state is stored under ``EarlyStopping``'s key,
    so checkpoints written with either resume with the other."""

    @property
    def state_key(self) -> str:
        return "EarlyStopping" + repr({"monitor": self.monitor, "mode": self.mode})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped_epoch > 0:
            trainer.should_stop = True


class History(Callback):
    """Writes the run folder's ``history.csv`` (one row per epoch, :data:`run_folder.HISTORY_FIELDS`)
    and measures training time and throughput. Its state travels in the checkpoints, so a
    resumed run keeps the rows of earlier epochs."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = []
        self.train_seconds = 0.0      # time in the training part of epochs (loading included)
        self.fit_seconds = 0.0        # wall time of whole epochs, validation included
        self.samples = 0

    def state_dict(self) -> dict:
        return {"rows": self.rows, "train_seconds": self.train_seconds, "fit_seconds": self.fit_seconds,
                "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.train_seconds, self.fit_seconds, self.samples = (state["train_seconds"], state["fit_seconds"],
                                                              state["samples"])

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._val_seconds = 0.0
        self._samples = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._samples += len(batch[0]) * trainer.world_size

    def on_validation_epoch_start(self, trainer, module) -> None:
        self._tv = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if hasattr(self, "_t0"):
            self._val_seconds += time.perf_counter() - self._tv

    def on_train_epoch_end(self, trainer: pl.Trainer, module: ClassifierTask) -> None:
        seconds = time.perf_counter() - self._t0
        self.fit_seconds += seconds
        self.train_seconds += seconds - self._val_seconds
        self.samples += self._samples
        loss = float(trainer.strategy.reduce(torch.tensor(module.epoch_train_loss, device=module.device)))
        val = module.results.get("val", {}).get("metrics", {}) if self._val_seconds else {}
        self.rows.append({
            "epoch": trainer.current_epoch + 1, "train_loss": round(loss, 6),
            "val_loss": _round(val.get("loss")), "val_accuracy": _round(val.get("accuracy")),
            "val_macro_f1": _round(val.get("macro_f1")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"], "seconds": round(seconds, 3),
            "val_balanced_accuracy": _round(val.get("balanced_accuracy")),
        })
        if trainer.is_global_zero:
            run_folder.write_history(self.run_dir, self.rows)


def _round(x: Optional[float]) -> Any:
    return "" if x is None else round(float(x), 6)
