"""The recipe schema: typed sections with a description on every field.

:class:`Recipe` is what a YAML recipe validates into (:func:`audiostem.recipe.load_recipe`);
docs/training.md's key table is generated from these descriptions
(:func:`audiostem.recipe_doc.key_table`). ``recipe.model`` (:class:`ModelConfig`) builds the
classifier: ``recipe.model.build(num_classes, in_channels)``.
"""
from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator, model_validator

METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_loss")
# Trainer arguments the run itself sets; a recipe cannot pass them through.
MANAGED_TRAINER_KEYS = ("max_epochs", "logger", "callbacks", "default_root_dir", "enable_checkpointing",
                        "use_distributed_sampler", "num_sanity_val_steps")
# lightning.Trainer arguments a recipe may pass through (kept here, not read from lightning, so that
# checking a recipe does not import it; tests/test_recipe.py checks the list against lightning).
TRAINER_KEYS = ("accelerator", "strategy", "devices", "num_nodes", "precision", "fast_dev_run", "min_epochs",
                "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "limit_predict_batches", "overfit_batches", "val_check_interval",
                "check_val_every_n_epoch", "log_every_n_steps", "enable_progress_bar", "enable_model_summary",
                "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "deterministic",
                "benchmark", "inference_mode", "profiler", "detect_anomaly", "barebones", "plugins",
                "sync_batchnorm", "reload_dataloaders_every_n_epochs", "enable_autolog_hparams",
                "model_registry")


def expand_path(value: str) -> str:
    """Expand ``${VAR:-default}``, ``$VAR`` / ``${VAR}`` and a leading ``~`` in a path."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), value)
    value = os.path.expandvars(value)
    left = re.search(r"\$\{?\w+", value)
    if left:
        raise ValueError(f"environment variable {left.group(0).lstrip('${')} is not set in {value!r} "
                         "(set it, or give a default: ${VAR:-default})")
    return os.path.expanduser(value)


def _not_bool(expected: str):
    def check(value: Any) -> Any:
        if isinstance(value, bool):        # YAML's true/yes/on: pydantic would take it as 1
            raise ValueError(f"expected {expected}, got {str(value).lower()}")
        return value
    return BeforeValidator(check)


# Numbers as recipes must give them: an integer field takes an integer (not true, 2.5 or "3"); a
# float field a finite number (not .inf, .nan or true; YAML's 3e-3, read as text, is fine).
Int = Annotated[int, _not_bool("an integer"), Strict()]
Float = Annotated[float, _not_bool("a number"), Field(allow_inf_nan=False)]
SEED_MAX = 2**32 - 1                       # numpy's seeds; Lightning's seed_everything takes this range


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Toggle(_Strict):
    """An augmentation that is off or on; ``true``/``false`` alone is short for ``{enabled: ...}``."""

    enabled: bool = Field(False, description="on or off")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


# --- data -------------------------------------------------------------------------------------
class Prepare(_Strict):
    """How to build the cache when it is missing: ``data_prep.prepare(source, root, cache, ...)``."""

    source: str = Field(
        description=(
            "a `data_prep` source: `folk`, `folder`, `csv`, `gtzan`, `esc50`, `urbansound8k`, "
            "`speechcommands`, `nsynth`, `maestro`, `lakh` (`python -m data_prep --help`)"))
    root: Optional[str] = Field(None, description="the dataset folder (or manifest) given to the source")
    options: dict[str, Any] = Field(default_factory=dict,
        description=(
            "the source's options by name, e.g. `{split: filtered}`, `{min_per_class: 20}`, "
            "`{other_splits: real}`"))
    workers: Optional[Int] = Field(None, ge=1,
        description="processes that extract features", json_schema_extra={'shown': "all cores"})

    @field_validator("root")
    @classmethod
    def _expand(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else expand_path(v)

    @model_validator(mode="after")
    def _options(self) -> "Prepare":
        """The source exists and takes these options, with values of the right types."""
        from data_prep.source_options import source_arguments
        from data_prep.sources import get_source

        try:
            source_arguments(get_source(self.source), **self.options)
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        return self


class CrossValidation(_Strict):
    """k-fold cross-validation: each test fold once, trained on the others."""

    cv: Int = Field(ge=2, description=(
        "number of folds: the cache's own folds (ESC-50: 5, UrbanSound8K: 10), or seeded "
        "stratified folds made from a cache that has none (items of one `group` stay together)"))
    test: Optional[list[Int]] = Field(None, json_schema_extra={"shown": "all"}, description=(
        "the test folds to run (`[2]` runs only fold 2, e.g. one study cell per fold)"))
    val: Literal["next", "none", "train"] = Field("next", description=(
        "validation: `next` (the fold after the test fold; training gets the rest), `none`, or "
        "`train`: a held-out part of the training folds, `val_fraction` of every (label, fold) "
        "stratum, items of one `group` on one side, seeded by `seed` (for leave-one-out folds "
        "such as a soundfont or a game, so that validation is neither the test domain nor one "
        "other fold)"))
    val_fraction: Float = Field(0.15, gt=0, lt=1, description=(
        "the held-out part of the training folds when `val: train` (rounded per stratum: at 0.15 "
        "a (label, fold) with fewer than 4 items gives none)"))


class Data(_Strict):
    """Where the features come from and how they are batched and split."""

    cache: str = Field(description="the feature cache folder (`python -m data_prep ... --out CACHE`)")
    prepare: Optional[Prepare] = Field(None,
        description=(
            "how to build the cache when it is missing; without it a missing cache is an error that "
            "says which command builds it"))
    features: Optional[dict[str, Any]] = Field(None,
        description=(
            "the feature config (`data_prep.feature_config` fields). Used to build the cache; if the "
            "cache exists and was built with another config, training is refused with the differing "
            "fields"))
    normalize: Literal["per_bin", "global", "none"] = Field("per_bin",
        description=(
            "`per_bin` (each frequency/pitch bin to mean 0, std 1 with the cache's train statistics),"
            " `global` (one mean/std per channel: keeps bins comparable, use it for piano rolls and "
            "pitch shifts), `none`"))
    crop_frames: Int = Field(128, ge=1,
        description=(
            "frames per training example (a random crop of each item, every epoch; shorter items are "
            "padded with silence) and per evaluation window"))
    eval_hop: Optional[Int] = Field(None, ge=1,
        description=(
            "frames between evaluation windows; the last window is aligned to the clip's end, so "
            "every frame is seen"), json_schema_extra={'shown': "`crop_frames`"})
    batch_size: Int = Field(32, ge=1, description="examples per step (per device under DDP)")
    num_workers: Int = Field(0, ge=0,
        description="DataLoader worker processes; they share the memory-mapped cache")
    train_split: str = Field("train",
        description=(
            "the cache's split names for the three roles (`data_prep` writes `train`, `valid`, "
            "`test`)"))
    val_split: Optional[str] = Field("valid", description="`null`: no validation (the last epoch's model is kept)")
    test_split: Optional[str] = Field("test", description="`null`: no test split")
    folds: Optional[Union[list[Int], CrossValidation]] = Field(None,
        description=(
            "cross-validation instead of splits: a list of the cache's fold numbers to use as test "
            "folds, or a mapping (next rows)"))

    @field_validator("cache")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)

    @field_validator("features")
    @classmethod
    def _features(cls, v: Optional[dict]) -> Optional[dict]:
        if v is None:
            return None
        from data_prep.config import feature_config
        return feature_config(v).to_dict()   # fills defaults; raises "features.<field>: ..."


# --- model ------------------------------------------------------------------------------------
class ModelConfig(_Strict):
    """The classifier: a stem (the subject of the study), a body and a head. Validated here from the
    registries' own declarations (stem names, each preset's override names and types, bodies,
    heads) without building a model; :meth:`build` makes the model (``build_model``)."""

    stem: Union[str, dict[str, Any]] = Field("deep3", description=(
        "a preset name (`audiostem.list_stems()`), an inline stem spec (`{layers: [...]}`, see "
        "`docs/stems.md`), or `native` with a library body: the body's own stem, its first conv "
        "adapted to the cache's channels the way timm adapts RGB weights (summed for one channel)"))
    stem_args: dict[str, Any] = Field(default_factory=dict, description=(
        "the preset's overrides, e.g. `{kernel_size: 5, width: 8, depth: 2, coord: true}`"))
    body: Union[str, dict[str, Any]] = Field("narrow", description=(
        "`narrow` (32-64-128, CPU-sized), `resnet10`, `resnet18`, `{widths: [...], depths: [...]}`, "
        "or a library body `timm:<name>` / `torchvision:<name>` (any classifier the library knows; "
        "input channels and classes from the cache; its stem replaced by `model.stem`, adapted to "
        "the channels and stride the body expects: \"Your own model\" in `docs/stems.md`)"))
    pretrained: bool = Field(False, description=(
        "`true`: a library body starts from the library's ImageNet weights, read from the local "
        "Hugging Face or torch hub cache only; nothing is downloaded, and a missing file is an "
        "error naming where it looked"))
    head: str = Field("avg", description=(
        "`avg` (global average) or `freq_time` (max over frequency, mean over time); a library "
        "body keeps its own head (`avg`)"))
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier")
    channels_last: Union[bool, Literal["auto"]] = Field("auto", description=(
        "NHWC memory format: `auto` turns it on when training on CPU, where it measured about 1.2x "
        "faster (Figures, below); `true` / `false` force it"))

    @model_validator(mode="after")
    def _buildable(self) -> "ModelConfig":
        """Stem, stem_args, body, head and pretrained fit together (``models.check_model_args``);
        the error names the field, e.g. ``model.stem_args.kernel_size: ...``."""
        from .models import ModelConfigError, check_model_args
        try:
            check_model_args(self.stem, self.body, self.head, self.stem_args, self.pretrained)
        except ModelConfigError as e:
            raise ValueError(f"model.{e.field}: {e.detail}") from None
        return self

    @classmethod
    def trusted(cls, data: dict[str, Any]) -> "ModelConfig":
        """The ``model`` section of a recipe that was validated when it was written (a run
        folder's ``recipe.yaml``, a checkpoint's stored recipe), taken as it is: nothing is
        checked again; a damaged section fails in :meth:`build`."""
        return cls.model_construct(**{k: v for k, v in data.items() if k in cls.model_fields})

    def build(self, num_classes: int, in_channels: int, *, pretrained: Optional[bool] = None):
        """The classifier ``(batch, in_channels, F, T) -> (batch, num_classes)`` logits this section
        describes: :func:`audiostem.models.build_model` with ``stem``, ``body``, ``head``,
        ``stem_args`` (as ``stem_overrides``), ``dropout`` and ``pretrained``. The one place a recipe
        becomes a model (training, evaluation, prediction, export, the study).

        Args:
            num_classes: logits (the cache's classes).
            in_channels: input channels of the features (1 for a spectrogram or piano roll).
            pretrained: override ``self.pretrained``; ``False`` when the weights come from a
                checkpoint anyway (so the library's weight file need not be on disk).

        Raises:
            ValueError: what only a built model shows (a stem's stride that a library body
                cannot take, a torchvision model without dropout), naming the field.
            FileNotFoundError: pretrained weights not on disk, naming where it looked.
        """
        from .models import build_model
        return build_model(stem=self.stem, body=self.body, num_classes=num_classes, in_channels=in_channels,
                           head=self.head, stem_overrides=dict(self.stem_args), dropout=self.dropout,
                           pretrained=self.pretrained if pretrained is None else pretrained)


# --- training ---------------------------------------------------------------------------------
class EarlyStopping(_Toggle):
    """Early stopping on a validation metric (the same metric always picks the best checkpoint)."""

    enabled: bool = Field(False, description="stop when `metric` has not improved for `patience` epochs")
    metric: Literal[METRICS] = Field("val_accuracy",
        description=(
            "the validation metric that picks the best checkpoint (always) and stops training (when "
            "enabled): `val_accuracy`, `val_balanced_accuracy`, `val_macro_f1`, `val_loss`"))
    patience: Int = Field(10, ge=1, description="epochs")


class Train(_Strict):
    """The optimiser, learning-rate schedule and early stopping."""

    max_epochs: Int = Field(30, ge=1, description="epochs")
    optimizer: Literal["adamw", "sgd"] = Field("adamw",
        description=(
            "`adamw` or `sgd` (Nesterov momentum); weight decay applies to conv/linear weights, not "
            "to norms and biases"))
    lr: Float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: Float = Field(0.01, ge=0,
        description="AdamW / SGD weight decay (on conv and linear weights only)")
    momentum: Float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    schedule: Literal["onecycle", "cosine", "none"] = Field("onecycle",
        description="`onecycle`, `cosine` (linear warm-up then cosine to 0) or `none`, stepped every batch")
    warmup: Float = Field(0.1, ge=0, lt=1, description="fraction of the steps spent warming up")
    label_smoothing: Float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping,
        description="`true`/`false` or a mapping (next rows)")


class SpecAugment(_Toggle):
    """SpecAugment (Park et al. 2019): frequency and time masks after normalisation."""

    freq_masks: Int = Field(2, ge=0, description="number of frequency masks ...")
    freq_width: Int = Field(8, ge=1, description="... each of up to this many bins")
    time_masks: Int = Field(2, ge=0, description="number of time masks ...")
    time_width: Int = Field(16, ge=1, description="... each of up to this many frames")


class PitchShift(_Toggle):
    """Transposition of piano rolls and CQT features."""

    max_semitones: Int = Field(3, ge=1, description="largest transposition, semitones")


class Gain(_Toggle):
    """A random level change."""

    max_db: Float = Field(6.0, gt=0, description="largest level change, dB")


class TimeShift(_Toggle):
    """A circular shift of each crop in time."""

    max_frames: Optional[Int] = Field(None, ge=1,
        description="largest shift, frames (`null`: a quarter of the crop)")


class Mixup(_Toggle):
    """mixup (Zhang et al. 2018) of batch pairs, with soft targets."""

    alpha: Float = Field(0.2, gt=0, description="lambda ~ Beta(alpha, alpha)")


class Augment(_Strict):
    """Training-time augmentation; every kind is off unless enabled."""

    specaugment: SpecAugment = Field(default_factory=SpecAugment,
        description=(
            "frequency and time masks after normalisation (Park et al. 2019); `true` or a mapping "
            "(next rows)"))
    pitch_shift: PitchShift = Field(default_factory=PitchShift,
        description=(
            "transpose by up to `max_semitones` (piano rolls; CQT by `bins_per_octave / 12` bins per "
            "semitone); refused for other features"))
    gain: Gain = Field(default_factory=Gain,
        description=(
            "a random level change of up to `max_db` dB, applied as the feature kind needs (added to "
            "dB features, a factor on magnitudes and velocities)"))
    time_shift: TimeShift = Field(default_factory=TimeShift,
        description="circular shift of each crop by up to `max_frames` (default a quarter of the crop)")
    mixup: Mixup = Field(default_factory=Mixup,
        description="mixup of batch pairs with soft targets (Zhang et al. 2018)")


class Recipe(_Strict):
    """A training recipe: a seed, a run folder and the sections below. Every field carries its
    description; :func:`key_table` renders them as docs/training.md's table of every key."""

    seed: Int = Field(0, ge=0, le=SEED_MAX,
        description=(
            "seeds model init, crops, augmentation, shuffling and fold assignment: a CPU run repeats "
            "exactly"))
    out_dir: Optional[str] = Field(None,
        description="the run folder (below)", json_schema_extra={'shown': "`runs/<recipe name>`"})
    data: Data = Field(
        description=(
            "where the features come from: the cache, how to build it, crops, batches, splits or "
            "folds (next rows)"))
    model: ModelConfig = Field(default_factory=ModelConfig, description="the classifier: stem, body and head (next rows)")
    train: Train = Field(default_factory=Train, description="the optimiser and schedule (next rows)")
    augment: Augment = Field(default_factory=Augment,
        description="training-time augmentation, all off by default (next rows)")
    trainer: dict[str, Any] = Field(default_factory=dict,
        description=(
            "passed to `lightning.Trainer`: `accelerator`, `devices`, `num_nodes`, `strategy`, "
            "`precision` (`bf16-mixed` on a GPU), `gradient_clip_val`, `accumulate_grad_batches`, "
            "`limit_train_batches`, `enable_progress_bar`, ... (any Trainer argument except those the"
            " run sets itself: `max_epochs`, `logger`, `callbacks`, `default_root_dir`, "
            "`enable_checkpointing`, `use_distributed_sampler`, `num_sanity_val_steps`)"))

    @field_validator("out_dir")
    @classmethod
    def _expand(cls, v: Optional[str]) -> Optional[str]:
        v = None if v is None else expand_path(v)
        if v is not None and not v.strip():        # '' or an environment variable set but empty
            raise ValueError("empty: give a run folder such as runs/NAME (an empty value would make the current "
                             "directory the run folder, and --restart would clear its checkpoints/ and logs/)")
        return v

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict) -> dict:
        for key in v:
            if key in MANAGED_TRAINER_KEYS:
                raise ValueError(f"trainer.{key}: set by audiostem itself, not by a recipe"
                                 + (" (use train.max_epochs)" if key == "max_epochs" else ""))
            if key not in TRAINER_KEYS:
                raise ValueError(f"trainer.{key}: not a lightning.Trainer argument; valid: {', '.join(TRAINER_KEYS)}")
        return v

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what ``recipe.yaml`` in a run folder holds)."""
        return self.model_dump(mode="json")
