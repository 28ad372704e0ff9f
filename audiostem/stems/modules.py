"""The torch modules a canonical stem spec turns into."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .spec import conv_padding, geometry


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each (f, t) position of a ``(batch, C, F, T)`` map
    (ConvNeXt style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FreqCoord(nn.Module):
    """Append one channel holding the relative frequency position (CoordConv style).

    ``(batch, C, F, T) -> (batch, C + 1, F, T)``; the new channel is ``-1`` at frequency bin 0
    (the lowest) rising linearly to ``+1`` at bin ``F - 1``, the same for every frame.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        pos = torch.linspace(-1.0, 1.0, f, device=x.device, dtype=x.dtype)
        return torch.cat([x, pos.view(1, 1, f, 1).expand(b, 1, f, t)], dim=1)


def _pool(p: dict) -> nn.Module:
    cls = nn.MaxPool2d if p["type"] == "max" else nn.AvgPool2d
    return cls(tuple(p["kernel"]), tuple(p["stride"]), tuple(p["padding"]))


def conv_layer(layer: dict, in_ch: int) -> nn.Sequential:
    """conv -> norm -> activation -> pool for one canonical conv layer."""
    kernel, dilation = layer["kernel"], layer["dilation"]
    padding = conv_padding(layer)
    ch, norm = layer["channels"], layer["norm"]
    conv = nn.Conv2d(in_ch, ch, tuple(kernel), tuple(layer["stride"]), tuple(padding), tuple(dilation),
                     bias=norm == "none")
    mods: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
    if norm == "batch":
        mods["norm"] = nn.BatchNorm2d(ch)
    elif norm == "layer":
        mods["norm"] = LayerNorm2d(ch)
    act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}.get(layer["activation"])
    if act is not None:
        mods["act"] = act()
    if "pool" in layer:
        mods["pool"] = _pool(layer["pool"])
    return nn.Sequential(mods)


class Parallel(nn.Module):
    """Run branches on the same input and concatenate their outputs on channels."""

    def __init__(self, branches: list[nn.Module], pool: nn.Module | None = None):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.pool = pool if pool is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        # An even kernel's 'same' padding gives one position fewer on an odd length (pons's 1x32
        # branch beside its 90x7 one), so maps one longer are cut to the shortest; more is a
        # padding mismatch. (Traced sizes are tensors: the comparisons hold for the traced shape.)
        f, t = min(o.shape[2] for o in outs), min(o.shape[3] for o in outs)
        if any(o.shape[2] > f + 1 or o.shape[3] > t + 1 for o in outs):
            shapes = sorted({(int(o.shape[2]), int(o.shape[3])) for o in outs})
            raise RuntimeError(f"stem branches give different (F, T) sizes {shapes} for input "
                               f"{tuple(x.shape)}; give them matching padding")
        return self.pool(torch.cat([o[:, :, :f, :t] for o in outs], dim=1))


def build_layers(layers: list[dict], in_ch: int) -> tuple[nn.Sequential, int]:
    """Modules for canonical layers; returns (modules, output channels)."""
    mods = []
    for layer in layers:
        if "branches" in layer:
            built = [build_layers(branch, in_ch) for branch in layer["branches"]]
            pool = _pool(layer["pool"]) if "pool" in layer else None
            mods.append(Parallel([m for m, _ in built], pool))
            in_ch = sum(ch for _, ch in built)
        else:
            mods.append(conv_layer(layer, in_ch))
            in_ch = layer["channels"]
    return nn.Sequential(*mods), in_ch


class Stem(nn.Module):
    """A stem built from a canonical spec: ``(batch, in_channels, F, T)`` ->
    ``(batch, out_channels, ~F / stride[0], ~T / stride[1])``.

    Attributes:
        spec: the canonical spec (plain data); ``build_stem(stem.spec)`` rebuilds this stem.
        out_channels: channels of the output map.
        stride: total stride ``(s_f, s_t)``.
        receptive_field: theoretical receptive field ``(rf_f, rf_t)`` in input bins/frames,
            not clipped by the input size. The coord channel changes neither.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.coord = FreqCoord() if spec["coord"] else nn.Identity()
        self.layers, self.out_channels = build_layers(spec["layers"], spec["in_channels"] + int(spec["coord"]))
        rf, stride = geometry(spec["layers"])
        self.receptive_field, self.stride = tuple(rf), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.coord(x))

    def extra_repr(self) -> str:
        return f"name={self.spec['name']!r}, stride={self.stride}, receptive_field={self.receptive_field}"
