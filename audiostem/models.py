"""Classifiers: a stem, a ResNet-style body of BasicBlocks, and a pooling head.

``(batch, in_channels, F, T)`` --stem--> ``(batch, C_stem, F/4, T/4)`` --body-->
``(batch, widths[-1], F/(4 * 2**(n_stages - 1)), ...)`` --head--> ``(batch, num_classes)`` logits.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .stems import Stem, StemArgError, build_stem, list_stems, stem_spec

# name -> (widths per stage, BasicBlocks per stage); every stage after the first halves F and T.
BODIES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet18": ((64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet10": ((64, 128, 256, 512), (1, 1, 1, 1)),
    "narrow": ((32, 64, 128), (1, 1, 1)),
}
HEADS = ("avg", "freq_time")


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN with a ReLU between, plus a shortcut (a 1x1
    conv-BN when channels or stride change), then ReLU.
    ``(batch, in_ch, F, T) -> (batch, out_ch, F / stride, T / stride)``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + self.shortcut(x))


class AudioResNet(nn.Module):
    """stem -> stages of BasicBlocks -> head.

    Args:
        stem: any module with ``.out_channels`` mapping ``(batch, in_channels, F, T)`` to
            ``(batch, out_channels, F', T')``.
        widths: output channels of each stage.
        depths: BasicBlocks in each stage; stage 0 keeps the stem's stride, each later stage
            halves F and T in its first block.
        num_classes: size of the logits.
        head: ``avg`` (mean over frequency and time) or ``freq_time`` (max over frequency,
            then mean over time: "is this pattern present at some pitch, and how often").
        dropout: dropout before the final linear layer.
        zero_init_last: start each block's last BN at gamma 0 so blocks begin as identities
            (Goyal et al. 2017).

    Attributes: ``stem``, ``stages`` (nn.Sequential), ``num_features`` (= widths[-1]),
    ``fc``. ``model.stem`` may be replaced by any module with the same ``out_channels``.
    """

    def __init__(self, stem: nn.Module, widths: tuple[int, ...], depths: tuple[int, ...], num_classes: int,
                 head: str = "avg", dropout: float = 0.0, zero_init_last: bool = True):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head: must be one of {', '.join(HEADS)}, got {head!r}")
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ValueError(f"body: widths {tuple(widths)} and depths {tuple(depths)} must be non-empty, "
                             "of equal length, with depths >= 1")
        self.stem = stem
        blocks, in_ch = [], _out_channels(stem)
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stage = [BasicBlock(in_ch if j == 0 else width, width, 2 if i > 0 and j == 0 else 1) for j in range(depth)]
            blocks.append(nn.Sequential(*stage))
            in_ch = width
        self.stages = nn.Sequential(*blocks)
        self.head = head
        self.num_features = in_ch
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.stages.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, F, T) -> (batch, num_features, F', T')``: stem and body."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(batch, num_features, F', T') -> (batch, num_classes)`` logits, or the pooled
        ``(batch, num_features)`` vector if ``pre_logits``."""
        if self.head == "avg":
            x = x.mean(dim=(2, 3))
        else:  # freq_time
            x = x.amax(dim=2).mean(dim=2)
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, F, T) -> (batch, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))


def _out_channels(stem: nn.Module) -> int:
    ch = getattr(stem, "out_channels", None)
    if not isinstance(ch, int) or ch < 1:
        raise ValueError(f"stem: a {type(stem).__name__} needs an int attribute .out_channels "
                         f"(the channels it outputs), got {ch!r}")
    return ch


def use_channels_last(setting: bool | str, device: str | torch.device) -> bool:
    """The recipe's ``model.channels_last`` (``True``, ``False`` or ``"auto"``) on ``device``: ``"auto"``
    turns NHWC on for CPU, where it measured about 1.2x faster (docs/training.md), off elsewhere."""
    return setting is True or (setting == "auto" and torch.device(device).type == "cpu")


def build_model(stem: str | dict | nn.Module = "deep3", body: str | dict = "narrow", num_classes: int = 10,
                in_channels: int = 1, head: str = "avg", *, stem_overrides: dict[str, Any] | None = None,
                dropout: float = 0.0, zero_init_last: bool = True, pretrained: bool = False) -> nn.Module:
    """Build a classifier ``(batch, in_channels, F, T) -> (batch, num_classes)`` logits.

    Args:
        stem: a preset name (``audiostem.list_stems()``), a stem spec dict, or any
            ``nn.Module`` with ``.out_channels`` (used as is; ``in_channels`` is then ignored);
            with a library body also ``native``: the body's own stem, its first conv adapted to
            ``in_channels`` (``audiostem.bodies.adapt_first_conv``).
        body: ``narrow`` (widths 32, 64, 128 x 1 block each: CPU-sized, for studies),
            ``resnet10`` (64, 128, 256, 512 x 1), ``resnet18`` (64, 128, 256, 512 x 2), or a
            dict ``{"widths": [...], "depths": [...]}``: an ``AudioResNet`` whose first stage
            takes ``stem.out_channels`` as input. Or a library body ``timm:<name>`` or
            ``torchvision:<name>`` (any classifier the library knows; its stem replaced by
            ``audiostem.replace_stem``, which adapts channels and stride to the body).
        num_classes: number of logits.
        in_channels: input channels given to ``build_stem`` (1 for a spectrogram).
        head: ``avg`` (global average pooling) or ``freq_time`` (max over frequency, then
            mean over time); a library body keeps its own head (``avg`` only).
        stem_overrides: keyword overrides for ``build_stem`` (e.g. ``{"kernel_size": 5}``).
        dropout: dropout probability before the final linear layer.
        zero_init_last: zero-init the last BN of each block (audiostem bodies).
        pretrained: load a library body's ImageNet weights from local files
            (``audiostem.bodies.pretrained_file``; nothing is downloaded).

    Raises:
        ValueError: ``num_classes`` or ``in_channels`` not a positive int; starting ``body:``,
            ``head:`` or ``stem``, naming the valid choices
            (:class:`ModelConfigError` from :func:`check_model_args`, which checks everything
            that needs no model built, or an error of the library body or ``replace_stem``).
        FileNotFoundError: pretrained weights not on disk, naming where it looked.
    """
    check_model_args(stem, body, head, stem_overrides, pretrained)
    for name, count in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{name}: must be a positive int, got {count!r}")
    if isinstance(body, str) and ":" in body:
        return _library_model(stem, body, num_classes, in_channels, head, dict(stem_overrides or {}),
                              dropout, pretrained)
    if not isinstance(stem, nn.Module):
        stem = build_stem(stem, in_channels, **(stem_overrides or {}))
    widths, depths = BODIES[body] if isinstance(body, str) else (tuple(body["widths"]), tuple(body["depths"]))
    return AudioResNet(stem, widths, depths, num_classes, head, dropout, zero_init_last)


class ModelConfigError(ValueError):
    """A model configuration that cannot be built. ``field`` is the recipe's ``model.*`` key at
    fault (``stem``, ``stem_args``, ``stem_args.<name>``, ``body``, ``head``, ``pretrained``),
    ``detail`` the message without it; ``str()`` is the message ``build_model`` raises."""

    def __init__(self, field: str, detail: str, message: Optional[str] = None):
        self.field, self.detail = field, detail
        self.message = message or f"{field.split('.')[0]}: {detail}"
        super().__init__(self.message)


def check_model_args(stem: str | dict | nn.Module, body: str | dict, head: str = "avg",
                     stem_overrides: Optional[dict[str, Any]] = None, pretrained: bool = False) -> None:
    """Check ``build_model``'s arguments without building anything: the body's name (for a
    ``timm:``/``torchvision:`` body, that the library knows it) or its widths and depths, the
    head, ``pretrained`` (only a library body has weights), and the stem: a preset name, a spec
    or ``native``, and its overrides' names, types and values
    (:func:`audiostem.stems.stem_spec`, from the preset's signature).

    What needs the body built is left to :func:`build_model`: whether a stem's stride fits a
    library body, whether a torchvision model takes a dropout. Whether pretrained weights are on
    disk is :func:`audiostem.bodies.pretrained_file`.

    Raises:
        ModelConfigError: naming the field (``e.field``) and the valid choices.
    """
    overrides = dict(stem_overrides or {})
    library = isinstance(body, str) and ":" in body
    if head not in HEADS:
        raise ModelConfigError("head", f"must be one of {', '.join(HEADS)}, got {head!r}")
    if library:
        from .bodies import check_library_body
        try:
            check_library_body(body)
        except ValueError as e:
            raise ModelConfigError("body", str(e)) from None
        if head != "avg":
            raise ModelConfigError("head", f"a library body ({body}) keeps its own head, global average "
                                   f"pooling: use head avg, got {head!r}")
    elif isinstance(body, str):
        if body not in BODIES:
            raise ModelConfigError("body", f"unknown body {body!r}; valid bodies: {', '.join(BODIES)}")
    elif isinstance(body, dict) and set(body) == {"widths", "depths"}:
        widths, depths = body["widths"], body["depths"]
        if not (_int_list(widths, 1) and _int_list(depths, 1) and len(widths) == len(depths)):
            raise ModelConfigError("body", f"widths {widths!r} and depths {depths!r} must be non-empty lists of "
                                   "positive integers, of equal length")
    else:
        raise ModelConfigError("body", f"must be one of {', '.join(BODIES)} or a dict with keys widths, depths; "
                               f"got {body!r}")
    if pretrained and not library:
        raise ModelConfigError("pretrained", f"the body {body!r} has no pretrained weights; only a timm: or "
                               "torchvision: body has", f"body: {body!r} has no pretrained weights; only a timm: "
                               "or torchvision: body has")
    if isinstance(stem, nn.Module):
        if overrides:
            raise ModelConfigError("stem_args", "only a preset name or spec can take overrides, not a module",
                                   "stem_overrides: only a preset name or spec can take overrides, not a module")
        return
    if isinstance(stem, str) and stem == "native":
        if not library:
            raise ModelConfigError("stem", f"'native' keeps a timm: or torchvision: body's own stem; the "
                                   f"audiostem body {body!r} has none (choose a preset: {', '.join(list_stems())})")
        unknown = sorted(set(overrides) - {"coord"})
        if unknown:
            raise ModelConfigError("stem_args", f"stem 'native': unknown override {unknown[0]!r}; the native stem "
                                   "takes only coord", f"stem 'native': unknown override {unknown[0]!r}; the "
                                   "native stem takes only coord")
        if not isinstance(overrides.get("coord", False), bool):
            raise ModelConfigError("stem_args.coord", f"must be true or false, got {overrides['coord']!r}")
        return
    if isinstance(stem, str) and stem not in list_stems():
        raise ModelConfigError("stem", f"unknown stem {stem!r}; valid stems: {', '.join(list_stems())}, native "
                               "(a timm: or torchvision: body's own), or an inline spec (a mapping with 'layers')")
    try:
        stem_spec(stem, **overrides)
    except StemArgError as e:
        field = "stem" if e.is_spec else "stem_args" if e.key is None else f"stem_args.{e.key}"
        raise ModelConfigError(field, str(e), str(e)) from None


def _int_list(value: Any, minimum: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value))


def _library_model(stem: str | dict | nn.Module, body: str, num_classes: int, in_channels: int, head: str,
                   stem_overrides: dict[str, Any], dropout: float, pretrained: bool) -> nn.Module:
    from .bodies import library_body, replace_stem
    native = isinstance(stem, str) and stem == "native"
    coord = bool(stem_overrides.get("coord", False)) if native else False
    model = library_body(body, num_classes, in_channels + int(coord), pretrained, dropout)
    return replace_stem(model, stem, in_channels=in_channels, verbose=False, **stem_overrides)


def stem_of(model: nn.Module) -> nn.Module:
    """The stem of an audiostem, timm or torchvision classifier as one module: ``model.stem`` of an
    :class:`AudioResNet`, the audiostem stem :func:`bodies.replace_stem` put in, or the model's own
    stem layers (a :class:`bodies.NativeStem`)."""
    from .bodies import NativeStem, ProjectedStem, find_stem
    if isinstance(model, AudioResNet):
        return model.stem
    modules = [model.get_submodule(p) for p in find_stem(model)]
    if isinstance(modules[0], (Stem, ProjectedStem)) and all(isinstance(m, nn.Identity) for m in modules[1:]):
        return modules[0]
    return NativeStem(*modules)


def describe_model(model: nn.Module, input_shape: tuple[int, int, int] = (1, 128, 256),
                   receptive_field: bool = True) -> dict:
    """Size and geometry of a whole classifier (audiostem, timm or torchvision) for one input of
    ``input_shape = (C, F, T)``, so that models with different stems or bodies compare like with like.

    Returns a dict: ``params`` (trainable), ``flops`` (one forward pass at batch 1, counted by
    ``torch.utils.flop_counter.FlopCounterMode``: a multiply-add is 2), ``out_shape`` (C', F', T'
    of the last feature map, before pooling), ``stride`` (its output stride (f, t)),
    ``receptive_field`` ((f, t) in input bins/frames, ``None`` if not asked for or wider than 4096;
    measured by ``audiostem.geometry.receptive_field``, which costs a float64 forward and backward
    pass per doubling of its probe input) and ``stem`` (``describe_stem`` of the model's stem).
    Raises ``ValueError`` naming ``input_shape`` unless it is three positive ints.
    """
    from .geometry import feature_map, output_stride
    from .geometry import receptive_field as measure_rf
    from .stems import describe_stem
    from .stems.registry import check_input_shape
    from torch.utils.flop_counter import FlopCounterMode
    input_shape = check_input_shape(input_shape)
    param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
            fmap = feature_map(model, x)
            with FlopCounterMode(display=False) as counter:
                model(x)
    finally:
        model.train(was)
    return {
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": int(counter.get_total_flops()),
        "out_shape": tuple(fmap.shape[1:]),
        "stride": output_stride(model, input_shape[0]),
        "receptive_field": measure_rf(model, input_shape[0]) if receptive_field else None,
        "stem": describe_stem(stem_of(model), input_shape),
    }
