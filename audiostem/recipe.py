"""Training recipes: a typed schema, YAML loading, dotted ``key=value`` overrides.

A recipe is plain data (a YAML file) that names a feature cache, a model and a schedule::

    seed: 0
    out_dir: runs/folk
    data:
      cache: ${AUDIOSTEM_CACHE:-~/.cache/audiostem/caches}/folk_roll
      prepare: {source: folk, root: ~/.cache/audiostem-data/folk_midi}
      crop_frames: 128
    model: {stem: deep3, body: narrow}
    train: {max_epochs: 20, lr: 0.003}

:func:`load_recipe` reads it as plain data at bounded cost (:mod:`audiostem.yamlio`: no object
tags, no aliases, capped size and depth), applies overrides such
as ``model.stem=resnet7 train.max_epochs=5`` (values parsed as YAML, so ``[1, 2]`` is a list
and ``{cv: 5}`` a mapping) and validates the result. Every error names the field path and
what would be right. Paths take ``~``, ``$VAR`` and ``${VAR:-default}``.

The full key reference is in ``docs/training.md``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError,
                      field_validator, model_validator)

from .yamlio import load_yaml, yaml_error

if TYPE_CHECKING:
    from data_prep.cache import FeatureCache

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
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"   # package data; the repository's recipes/ links here


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the field and the fix."""


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
class Model(_Strict):
    """The classifier: a stem (the subject of the study), a body and a head (``build_model``)."""

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
    model: Model = Field(default_factory=Model, description="the classifier: stem, body and head (next rows)")
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
        return None if v is None else expand_path(v)

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


def key_table() -> str:
    """The Markdown table of every recipe key, its default and its description, from the schema
    (docs/training.md holds it; a test keeps the two the same). Regenerate it with
    ``python -c "from audiostem.recipe import key_table; print(key_table())"``."""
    lines = ["| key | default | meaning |", "|---|---|---|"]

    def shown(field) -> str:
        extra = field.json_schema_extra or {}
        if "shown" in extra:
            return extra["shown"]
        if field.is_required():
            return "required"
        value = field.get_default(call_default_factory=True)
        if isinstance(value, _Toggle):
            return "off"
        if isinstance(value, BaseModel):          # a section: its keys follow
            return ""
        if value is None:
            return "none"
        return f"`{value if isinstance(value, str) else json.dumps(value)}`"

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            lines.append(f"| `{prefix}{name}` | {shown(field)} | {field.description or ''} |")
            for sub in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    walk(sub, f"{prefix}{name}.")
    walk(Recipe, "")
    return "\n".join(lines)


# --- loading ----------------------------------------------------------------------------------
def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[(["a", "b"], 1), (["c"], [1, 2])]`` (values as YAML)."""
    out = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key.strip()):
            raise RecipeError(f"override {text!r}: expected dotted.key=value, e.g. train.max_epochs=5")
        try:
            parsed = load_yaml(value, f"override {key}") if value.strip() else None
        except yaml.YAMLError as e:
            raise RecipeError(f"override {text!r}: the value is not valid YAML ({yaml_error(e)})") from None
        out.append((key.strip().split("."), parsed))
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``dotted.key=value`` in a copy of ``data``, creating mappings on the way."""
    import copy
    data = copy.deepcopy(data)
    for keys, value in parse_overrides(overrides):
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is "
                                  f"{child!r}, not a mapping")
            node = child
        node[keys[-1]] = value
    return data


def _format_errors(error: ValidationError, data: dict) -> list[str]:
    lines = []
    for e in error.errors():
        loc = [str(p) for p in e["loc"]]
        # Union members add their type name to the location ("str", "list[int]", ...): drop it.
        loc = [p for p in loc if not re.fullmatch(r"(str|int|float|bool|dict\[.*\]|list\[.*\]|[A-Z]\w*)", p)
               or p.isdigit()]
        path = ".".join(loc)
        if e["type"] == "extra_forbidden":
            parent = _schema_at(loc[:-1])
            valid = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
            lines.append(f"{path}: unknown key{valid}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "value_error" and re.match(rf"{re.escape(path)}[.:]", msg):
                lines.append(msg)            # the validator named a deeper field itself
            elif path.endswith(".features") and msg.startswith("features."):
                lines.append(f"{path.removesuffix('features')}{msg}")
            else:
                shown = "" if e["type"] == "value_error" else f", got {e.get('input')!r}"
                lines.append(f"{path}: {msg}{shown}")
    return list(dict.fromkeys(lines))


def _schema_at(path: list[str]) -> Optional[type[BaseModel]]:
    """The pydantic model class at a dotted path of :class:`Recipe`, if there is one."""
    cls: Any = Recipe
    for key in path:
        field = cls.model_fields.get(key) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = getattr(ann, "__args__", (ann,))
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if cls is None:
            return None
    return cls


def validate_recipe(data: Any, source: str = "recipe", out_name: str = "recipe") -> Recipe:
    """Validate plain data against the schema and check the model builds. Raises
    :class:`RecipeError` listing every problem as ``source: field.path: message``."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError("\n".join(f"{source}: {line}" for line in _format_errors(e, data))) from None
    if recipe.out_dir is None:
        recipe.out_dir = os.path.join("runs", out_name)
    check_model(recipe, source)
    return recipe


def check_model(recipe: Recipe, source: str = "recipe") -> None:
    """Build the recipe's model once (tiny, on CPU) so a bad stem, override, body or head is
    reported before any data is touched."""
    from .models import build_model
    from .stems import list_stems
    m = recipe.model
    if isinstance(m.stem, str) and m.stem not in list_stems() and m.stem != "native":
        raise RecipeError(f"{source}: model.stem: unknown stem {m.stem!r}; valid stems: "
                          f"{', '.join(list_stems())}, native (a timm: or torchvision: body's own), "
                          "or an inline spec (a mapping with 'layers')")
    try:
        build_model(stem=m.stem, body=m.body, num_classes=2, in_channels=1, head=m.head,
                    stem_overrides=dict(m.stem_args), dropout=m.dropout)
        if m.pretrained:
            if not (isinstance(m.body, str) and ":" in m.body):
                raise ValueError(f"pretrained: the body {m.body!r} has no pretrained weights; "
                                 "only a timm: or torchvision: body has")
            from .bodies import pretrained_file
            pretrained_file(m.body)            # weights on disk, or an error naming where it looked
    except FileNotFoundError as e:
        raise RecipeError(f"{source}: {e}") from None
    except (ValueError, TypeError) as e:
        msg = str(e)
        field = ("model.stem_args" if "override" in msg else
                 "model.body" if msg.startswith(("body", "replace_stem")) else
                 "model.pretrained" if msg.startswith("pretrained") else
                 "model.head" if msg.startswith("head") else "model.stem")
        msg = msg.removeprefix("body: ").removeprefix("head: ").removeprefix("pretrained: ").removeprefix("stem: ")
        raise RecipeError(f"{source}: {field}: {msg}") from None


def find_recipe(path: Union[str, Path]) -> Path:
    """A recipe file: the path itself, or the shipped ``audiostem/recipes/NAME.yaml`` for a bare name."""
    p = Path(path)
    if p.exists():
        return p
    shipped = RECIPES_DIR / f"{p.name}.yaml" if not p.suffix else None
    if shipped is not None and shipped.exists():
        return shipped
    names = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.exists() else []
    hint = f"; shipped recipes: {', '.join(names)}" if names else ""
    raise RecipeError(f"{path}: no such recipe file{hint}")


def load_recipe(path: Union[str, Path], overrides: Optional[list[str]] = None) -> Recipe:
    """Load a YAML recipe (plain data at bounded cost: :func:`audiostem.yamlio.load_yaml`, which
    refuses aliases, deep nesting and huge files), apply ``dotted.key=value`` overrides and validate.

    Args:
        path: a recipe file, or the name of a shipped recipe (``folk`` -> ``recipes/folk.yaml``).
        overrides: e.g. ``["model.stem=resnet7", "train.max_epochs=5", "data.folds=[1]"]``.

    Raises:
        RecipeError: naming the file, the field path and the valid choices.
    """
    path = find_recipe(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {yaml_error(e)}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                          f"save the recipe as UTF-8") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e.strerror})") from None
    return validate_recipe(apply_overrides(data or {}, list(overrides or [])), str(path), path.stem)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None)


def open_data(recipe: Recipe) -> Optional[FeatureCache]:
    """Open the recipe's cache, checked against the recipe; ``None`` when the cache is missing
    and ``data.prepare`` says how to build it.

    Raises :class:`RecipeError` when the cache is missing and no ``data.prepare`` section
    exists (saying which command builds it), or when ``data.features`` differs from the
    feature config the cache was built with (naming the differing fields);
    :class:`data_prep.CacheError` when the cache is damaged (naming the file and the command
    that rebuilds it).
    """
    from data_prep.cache import cache_exists, open_cache, partial_path
    cache = Path(recipe.data.cache)
    if not cache_exists(cache):
        if recipe.data.prepare is not None:
            return None
        partial = partial_path(cache)
        what = "an interrupted build is at " + str(partial) if partial.exists() else "it does not exist"
        raise RecipeError(
            f"data.cache: no feature cache at {cache} ({what}). Build it with\n"
            f"  python -m data_prep SOURCE --root DATASET_FOLDER --out {cache}\n"
            "(`python -m data_prep --help` lists the sources), or add a data.prepare section "
            "(source, root, options) so that training builds it.")
    opened = open_cache(cache)           # CacheError naming a damaged file and the rebuild command
    problem = opened.mismatch(recipe.data.features, "recipe") if recipe.data.features is not None else None
    if problem:
        raise RecipeError(f"data.features: {problem}. Rebuild the cache with these features "
                          "(python -m data_prep ... --force, or another data.cache), or remove data.features.")
    return opened
