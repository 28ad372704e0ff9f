"""Stems in the models people already use: timm and torchvision bodies.

``replace_stem`` finds the stem of a timm or torchvision classifier (its layers before the first
stage), measures what the first stage expects (channels and stride) and puts an audiostem stem
there, adapted to it. ``library_body`` builds such a classifier by name for a recipe
(``model.body: timm:resnet18`` or ``torchvision:efficientnet_b0``)::

    import timm, audiostem
    model = timm.create_model("efficientnet_b0", num_classes=10)
    audiostem.replace_stem(model, "octave", in_channels=1, coord=True)
    model(torch.randn(2, 1, 88, 128)).shape          # (2, 10)

The stem is found by layout, not by class, so other models with the same layout work too:

====================  ====================================  ==========================================
layout (attributes)   timm                                  torchvision
====================  ====================================  ==========================================
conv1, bn1, act1 /    ResNet (resnet*, ResNet-D resnet*d,   ResNet, ResNeXt, Wide ResNet
relu, maxpool         tiered resnet10t, SE-ResNet, ...)
conv_stem, bn1        EfficientNet, MobileNetV3, V2, ...
stem                  ConvNeXt, RegNet, CSPNet, ...         RegNet
features[0]                                                 EfficientNet, MobileNetV3, V2, ConvNeXt
====================  ====================================  ==========================================
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .geometry import output_stride
from .stems import FreqCoord, Stem, build_stem, list_stems, normalize_spec, stem_overrides
from .stems.spec import with_stride

# Each layout: the attribute paths of a stem, in forward order. The first layout whose paths all
# exist (and whose first module holds a Conv2d) is the model's stem; ``features.0`` only when it is
# a block (conv-norm-activation), not a bare conv.
LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("conv1", "bn1", "act1", "maxpool"),     # timm ResNet family
    ("conv1", "bn1", "relu", "maxpool"),     # torchvision ResNet family
    ("conv_stem", "bn1"),                    # timm EfficientNet / MobileNet family
    ("stem",),                               # timm ConvNeXt, RegNet, ...; torchvision RegNet
    ("features.0",),                         # torchvision EfficientNet, MobileNet, ConvNeXt
)
LIBRARIES = ("timm", "torchvision")


def _get(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, nn.Module) else None


def _first_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def find_stem(model: nn.Module) -> tuple[str, ...]:
    """The attribute paths of ``model``'s stem (see ``LAYOUTS``), e.g. ``("conv1", "bn1", "act1",
    "maxpool")`` for a timm ResNet.

    Raises ``ValueError`` naming the model's class and the attributes looked for."""
    for layout in LAYOUTS:
        modules = [_get(model, p) for p in layout]
        if all(m is not None for m in modules) and _first_conv(modules[0]) is not None:
            if layout == ("features.0",) and isinstance(modules[0], nn.Conv2d):
                continue             # a bare first conv of a plain stack (VGG, AlexNet) is no stem
            return layout
    looked = "; ".join(" + ".join(layout) for layout in LAYOUTS)
    raise ValueError(f"replace_stem: cannot find the stem of a {type(model).__name__} (looked for the attributes "
                     f"{looked}, the first holding a Conv2d); supported: timm and torchvision ResNet, "
                     "EfficientNet, MobileNetV3, ConvNeXt and RegNet, and models laid out like them")


class NativeStem(nn.Sequential):
    """A body's own stem layers gathered in one module (sharing their parameters), as ``stem_of``
    gives them: ``(batch, C, F, T) -> (batch, C', F / s, T / s)``."""


class ProjectedStem(nn.Module):
    """An audiostem stem followed by a 1x1 conv + BatchNorm to the channels a body expects:
    ``(batch, C, F, T) -> (batch, out_channels, F / stride[0], T / stride[1])``.
    ``spec``, ``stride`` and ``receptive_field`` are the stem's (a 1x1 conv changes neither)."""

    def __init__(self, stem: nn.Module, out_channels: int):
        super().__init__()
        self.stem = stem
        self.proj = nn.Sequential(nn.Conv2d(stem.out_channels, out_channels, 1, bias=False),
                                  nn.BatchNorm2d(out_channels))
        self.out_channels = out_channels
        self.spec = getattr(stem, "spec", None)
        self.stride = getattr(stem, "stride", None)
        self.receptive_field = getattr(stem, "receptive_field", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))


@torch.no_grad()
def _expects(stem: nn.Module, in_channels: int, where: str) -> tuple[int, tuple[int, int]]:
    """(channels, stride) of what ``stem`` gives the first stage, measured on zeros. Raises
    ``ValueError`` naming ``where`` when that is no ``(batch, channels, F, T)`` map (a transformer's
    patch embedding that puts channels last)."""
    param = next(stem.parameters(), torch.zeros(()))
    was = stem.training
    stem.eval()
    try:
        outs = [stem(torch.zeros(1, in_channels, n, n, device=param.device, dtype=param.dtype)) for n in (64, 128)]
    finally:
        stem.train(was)
    if any(o.ndim != 4 for o in outs) or outs[0].shape[1] != outs[1].shape[1]:
        raise ValueError(f"replace_stem: {where} does not give a (batch, channels, F, T) map: its dim 1 is "
                         f"{outs[0].shape[1]} for a 64 x 64 input and {outs[1].shape[1]} for 128 x 128 (its "
                         f"output is {tuple(outs[0].shape)}: channels last?); audiostem replaces convolutional "
                         "stems only")
    return int(outs[0].shape[1]), output_stride(stem, in_channels)


def _in_channels(stem: nn.Sequential) -> int:
    """Input channels of the stem layers ``stem`` (not counting a coord channel they add)."""
    first = stem[0]
    spec = getattr(first, "spec", None)
    if isinstance(spec, dict):
        return spec["in_channels"]
    return _first_conv(stem).in_channels - int(_has_coord(stem))


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> None:
    """Give ``conv`` ``in_channels`` input channels in place, its kernel adapted the way timm adapts
    pretrained RGB weights (``timm.models.adapt_input_conv``: summed over RGB for one channel,
    repeated and scaled by ``3 / in_channels`` for more)."""
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise ValueError(f"stem: cannot change the input channels of a grouped first conv ({conv})")
    from timm.models import adapt_input_conv
    weight = adapt_input_conv(in_channels, conv.weight.detach(), base_chans=conv.in_channels)
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype))
    conv.in_channels = in_channels


def replace_stem(model: nn.Module, stem: str | dict | nn.Module, *, in_channels: Optional[int] = None,
                 verbose: bool = True, **stem_args: Any) -> nn.Module:
    """Replace the stem of a timm or torchvision classifier (in place) and return the model.

    The stem is the model's layers before its first stage (``find_stem``; e.g. ``conv1, bn1,
    act1, maxpool`` of a ResNet). What the first stage expects from it is measured: its output
    channels and stride (4 for ResNet and ConvNeXt, 2 for EfficientNet, MobileNetV3 and RegNet).
    The new stem is made to give exactly that: a preset gets ``out_channels`` = those channels
    (unless ``stem_args`` sets it) and its stride reduced where the body's is smaller
    (``audiostem.stems.spec.with_stride``: deep3 at stride 2 drops its max-pool); a stem that
    still has other channels is followed by a 1x1 conv + BatchNorm (``ProjectedStem``). The new
    stem goes in the first attribute; the others become ``nn.Identity``. The rest of the body is
    not touched.

    Args:
        model: a timm or torchvision classifier (or any model laid out like one, ``LAYOUTS``).
        stem: a preset name (``audiostem.list_stems()``), a stem spec dict, ``"native"`` (keep
            the model's own stem, its first conv adapted to ``in_channels`` the way timm adapts
            RGB weights: ``adapt_first_conv``), or an ``nn.Module`` with ``.out_channels`` (and
            ``.stride`` if it is not the body's).
        in_channels: input channels of the new stem, e.g. 1 for a spectrogram; default the
            model's (its first conv's input channels).
        verbose: print one line saying what was replaced by what (stderr).
        **stem_args: overrides for ``build_stem`` (``kernel_size``, ``width``, ``coord``, ...);
            with ``"native"`` only ``coord`` (a frequency-position channel before the first conv).

    Returns:
        ``model``, whose ``audiostem_stem`` attribute says what was replaced (plain data).

    Raises:
        ValueError: ``in_channels`` is not a positive int, the model's stem is not found (naming
            its class and the attributes looked for) or gives no ``(batch, channels, F, T)`` map
            (torchvision's Swin puts channels last), or the stem cannot be adapted (a stride that
            is not a multiple of the body's, unknown overrides, a module without ``.out_channels``).
    """
    if in_channels is not None and (not isinstance(in_channels, int) or isinstance(in_channels, bool)
                                    or in_channels < 1):
        raise ValueError(f"replace_stem: in_channels must be a positive int, got {in_channels!r}")
    paths = find_stem(model)
    old = nn.Sequential(*[model.get_submodule(p) for p in paths])
    in_channels = _in_channels(old) if in_channels is None else in_channels
    channels, stride = _expects(old, _in_channels(old), f"the stem of a {type(model).__name__} ({', '.join(paths)})")
    if stride == (1, 1):
        raise ValueError(f"replace_stem: the first layers of a {type(model).__name__} ({', '.join(paths)}) do not "
                         "downsample, so they are no stem audiostem can replace")
    record = {"model": type(model).__name__, "replaced": list(paths),
              "old": {"params": sum(p.numel() for p in old.parameters()), "channels": channels,
                      "stride": list(stride)}}
    if isinstance(stem, str) and stem == "native":
        new = _native(old, in_channels, **stem_args)
        name = "native"
    else:
        new = _adapted(stem, in_channels, channels, stride, stem_args)
        name = new.spec["name"] if isinstance(getattr(new, "spec", None), dict) else type(new).__name__
    model.set_submodule(paths[0], new)
    if name != "native":
        for path in paths[1:]:
            model.set_submodule(path, nn.Identity())
    kept = [model.get_submodule(p) for p in paths]
    spec = getattr(new, "spec", None)
    coord = spec["coord"] if isinstance(spec, dict) else bool(stem_args.get("coord", False))
    record["new"] = {"stem": name, "params": sum(p.numel() for m in kept for p in m.parameters()),
                     "in_channels": in_channels, "coord": coord, "projected": isinstance(new, ProjectedStem)}
    model.audiostem_stem = record
    if verbose:
        print(swap_line(record), file=sys.stderr)
    return model


def swap_line(record: dict) -> str:
    """One line saying what ``replace_stem`` replaced (from a model's ``audiostem_stem`` record)."""
    old, new = record["old"], record["new"]
    where = f"{record['model']} ({', '.join(record['replaced'])}: {old['params']:,} params, " \
            f"{old['channels']} channels at stride {old['stride'][0]})"
    inputs = f"{new['in_channels']} input channel{'s' * (new['in_channels'] != 1)}" \
             f"{' + a pitch/frequency-position channel' if new.get('coord') else ''}"
    if new["stem"] == "native":
        return f"audiostem: kept the stem of {where}, its first conv adapted to {inputs}"
    return (f"audiostem: replaced the stem of {where} by {new['stem']} ({new['params']:,} params, {inputs}"
            f"{', 1x1 projection' if new['projected'] else ''})")


def _has_coord(stem: nn.Sequential) -> bool:
    """Whether the stem layers start with a native stem that ``replace_stem`` gave a coord channel."""
    first = stem[0]
    return isinstance(first, nn.Sequential) and isinstance(next(iter(first.children()), None), FreqCoord)


def _native(old: nn.Sequential, in_channels: int, coord: bool = False, **rest: Any) -> nn.Module:
    if rest:
        raise ValueError(f"stem 'native': unknown override {sorted(rest)[0]!r}; the native stem takes only coord")
    if not isinstance(coord, bool):
        raise ValueError(f"stem 'native': override 'coord' must be true or false, got {coord!r}")
    first = old[0]
    if _has_coord(old):
        first = first[1]
    adapt_first_conv(_first_conv(first), in_channels + int(coord))
    return nn.Sequential(OrderedDict(coord=FreqCoord(), stem=first)) if coord else first


def _adapted(stem: str | dict | nn.Module, in_channels: int, channels: int, stride: tuple[int, int],
             stem_args: dict) -> nn.Module:
    """An audiostem stem giving ``channels`` at ``stride``."""
    if isinstance(stem, nn.Module):
        if stem_args:
            raise ValueError("stem_args: only a preset name or spec can take overrides, not a module")
        have = getattr(stem, "out_channels", None)
        if not isinstance(have, int):
            raise ValueError(f"stem: a {type(stem).__name__} needs an int attribute .out_channels")
        if tuple(getattr(stem, "stride", stride)) != tuple(stride):
            raise ValueError(f"stem: a {type(stem).__name__} with stride {tuple(stem.stride)} cannot replace "
                             f"this stem, whose body expects stride {tuple(stride)}")
        return stem if have == channels else ProjectedStem(stem, channels)
    args = dict(stem_args)
    if isinstance(stem, str) and stem in list_stems() and "out_channels" in stem_overrides(stem):
        args.setdefault("out_channels", channels)
    built = build_stem(stem, in_channels, **args)
    if built.stride != tuple(stride):
        built = Stem(normalize_spec(with_stride(built.spec, stride)))
    return built if built.out_channels == channels else ProjectedStem(built, channels)


# --- library bodies by name -----------------------------------------------------------------------
def library_body(body: str, num_classes: int, in_channels: int, pretrained: bool = False,
                 dropout: float = 0.0) -> nn.Module:
    """A timm or torchvision classifier from ``"timm:<name>"`` or ``"torchvision:<name>"``, with
    ``num_classes`` logits and ``in_channels`` input channels (its first conv adapted the way timm
    adapts RGB weights), randomly initialised unless ``pretrained``.

    ``pretrained`` loads the library's ImageNet weights only from local files (see
    :func:`pretrained_file`); nothing is downloaded. ``dropout`` is the classifier's dropout
    (timm's ``drop_rate``; torchvision models that take ``dropout``).

    Raises ``ValueError`` starting ``body:`` for an unknown library or model name, and
    ``FileNotFoundError`` naming where it looked when pretrained weights are not on disk.
    """
    try:
        check_library_body(body)
    except ValueError as e:
        raise ValueError(f"body: {e}") from None
    library, _, name = body.partition(":")
    if library == "timm":
        import timm
        overlay = {"file": str(pretrained_file(body))} if pretrained else None
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                                 drop_rate=dropout, pretrained_cfg_overlay=overlay)
    import torchvision
    kwargs = {"dropout": dropout} if dropout else {}
    try:
        model = torchvision.models.get_model(name, **kwargs)
    except TypeError:
        raise ValueError(f"body: torchvision's {name} takes no dropout; use model.dropout: 0 "
                         "or a timm: body") from None
    if pretrained:
        model.load_state_dict(torch.load(pretrained_file(body), map_location="cpu", weights_only=True))
    _set_num_classes(model, num_classes)
    adapt_first_conv(_first_conv(model), in_channels)
    return model


def check_library_body(body: str) -> None:
    """Check that ``"timm:<name>"`` or ``"torchvision:<name>"`` names a classifier the library
    knows (``timm.is_model``, ``torchvision.models.list_models``), without building it.

    Raises ``ValueError`` naming the library and how to list its models."""
    library, _, name = body.partition(":")
    if library not in LIBRARIES or not name:
        raise ValueError(f"{body!r}: a library body is timm:<name> or torchvision:<name>")
    if library == "timm":
        import timm
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r} (timm.list_models('*{name[:6]}*') lists similar names)")
        return
    import torchvision
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {name!r} "
                         "(torchvision.models.list_models() lists them)")


def _set_num_classes(model: nn.Module, num_classes: int) -> None:
    """Replace a torchvision classifier's last Linear layer by one with ``num_classes`` outputs."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if last.out_features != num_classes:
        model.set_submodule(name, nn.Linear(last.in_features, num_classes))


def pretrained_file(body: str) -> Path:
    """The local file of a library body's pretrained weights; never downloads.

    timm: the Hugging Face hub cache (``huggingface_hub.try_to_load_from_cache`` of the model's
    ``hf_hub_id``, ``model.safetensors`` or ``pytorch_model.bin``; ``$HF_HOME``), then the torch hub
    cache (``torch.hub.get_dir()/checkpoints``, the file name of its ``url``). torchvision: the
    torch hub cache (``$TORCH_HOME``), the file name of the default weights' URL. Download the
    weights once where there is a network (``timm.create_model(name, pretrained=True)`` or
    ``torchvision.models.get_model(name, weights="DEFAULT")``).

    Raises ``FileNotFoundError`` naming every place it looked.
    """
    library, _, name = body.partition(":")
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    looked = []
    if library == "timm":
        import timm
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise FileNotFoundError(f"model.pretrained: timm has no pretrained weights for {name!r}")
        if cfg.hf_hub_id:
            for filename in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str):
                    return Path(found)
            looked.append(f"{HF_HUB_CACHE} ({cfg.hf_hub_id})")
        url = cfg.url
    else:
        import torchvision
        try:
            url = torchvision.models.get_model_weights(name).DEFAULT.url
        except ValueError:
            raise FileNotFoundError(f"model.pretrained: torchvision has no pretrained weights for {name!r}") from None
    if url:
        path = hub / url.rsplit("/", 1)[-1]
        if path.exists():
            return path
        looked.append(str(path))
    raise FileNotFoundError(f"model.pretrained: no local weights for {body} (looked in {'; '.join(looked)}); "
                            "audiostem never downloads: fetch them once where there is a network, e.g. "
                            + (f"timm.create_model({name!r}, pretrained=True)" if library == "timm" else
                               f"torchvision.models.get_model({name!r}, weights='DEFAULT')"))
