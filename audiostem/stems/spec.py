"""The declarative stem spec: validation, canonical form and receptive-field arithmetic.

A spec is plain data (what a YAML file holds). Example, the ``resnet7`` preset::

    name: resnet7
    in_channels: 1        # optional, default 1
    coord: false          # optional: append a frequency-position channel before the first conv
    out_channels: 64      # optional: checked against what the layers produce
    layers:
      - kernel: [7, 7]    # int or [kh, kw] (frequency, time); required
        channels: 64      # output channels; required
        stride: [2, 2]    # int or [sf, st]; default 1
        dilation: 1       # int or [df, dt]; default 1
        padding: same     # 'same' = dilation * (k - 1) // 2 per axis, or int / [pf, pt]
        norm: batch       # batch | layer (over channels, ConvNeXt style) | none
        activation: relu  # relu | gelu | silu | none
        pool: {type: max, kernel: 3, stride: 2}   # optional; type default max, stride default
                                                  # kernel, padding default (kernel - 1) // 2

A layer may instead hold parallel branches, each a list of layers; the branch outputs are
concatenated on channels (all branches must have the same total stride)::

      - branches:
          - [{kernel: [90, 7], channels: 16, stride: 2}]
          - [{kernel: [1, 32], channels: 16, stride: [1, 2], pool: {kernel: [2, 1]}}]
        pool: {type: max, kernel: 3, stride: 2}   # optional, applied after the concatenation

Order inside a layer: conv -> norm -> activation -> pool. The conv has a bias only when
``norm`` is ``none``. This module is pure Python (no torch) so specs can be checked anywhere.
"""

from __future__ import annotations

from typing import Any

NORMS = ("batch", "layer", "none")
ACTIVATIONS = ("relu", "gelu", "silu", "none")
POOLS = ("max", "avg")
SPEC_KEYS = ("name", "in_channels", "coord", "out_channels", "layers")
LAYER_KEYS = ("kernel", "channels", "stride", "dilation", "padding", "norm", "activation", "pool", "in_channels")
BRANCH_KEYS = ("branches", "pool", "in_channels")
POOL_KEYS = ("type", "kernel", "stride", "padding")


def _fail(path: str, message: str, value: Any) -> None:
    shown = tuple(value) if isinstance(value, list) else value
    raise ValueError(f"{path}: {message}, got {shown!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(value: Any, path: str, minimum: int) -> list[int]:
    """An int or a 2-sequence of ints >= minimum, as [f, t]."""
    if _is_int(value):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)):
        _fail(path, "must be an int or a pair of ints (frequency, time)", value)
    if min(value) < minimum:
        word = "positive ints" if minimum == 1 else f"ints >= {minimum}"
        _fail(path, f"must be {word}", value)
    return [int(value[0]), int(value[1])]


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        _fail(path, f"must be one of {', '.join(choices)}", value)
    return value


def _check_keys(d: Any, path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        _fail(path, "must be a mapping", d)
    for key in d:
        if key not in allowed:
            raise ValueError(f"{path}.{key}: unknown key; valid keys are {', '.join(allowed)}")


def _pool(p: Any, path: str) -> dict:
    _check_keys(p, path, POOL_KEYS)
    if "kernel" not in p:
        raise ValueError(f"{path}.kernel: required key missing")
    kernel = _pair(p["kernel"], f"{path}.kernel", 1)
    stride = _pair(p.get("stride", kernel), f"{path}.stride", 1)
    padding = _pair(p.get("padding", [(k - 1) // 2 for k in kernel]), f"{path}.padding", 0)
    if any(2 * pad > k for pad, k in zip(padding, kernel)):
        _fail(f"{path}.padding", "must be at most half the pool kernel", padding)
    return {"type": _choice(p.get("type", "max"), f"{path}.type", POOLS),
            "kernel": kernel, "stride": stride, "padding": padding}


def _layer(layer: Any, path: str, in_ch: int) -> tuple[dict, int]:
    """Validate one layer given its input channels; return (canonical layer, output channels)."""
    if isinstance(layer, dict) and "branches" in layer:
        return _branches(layer, path, in_ch)
    _check_keys(layer, path, LAYER_KEYS)
    _check_in_channels(layer, path, in_ch)
    for key in ("kernel", "channels"):
        if key not in layer:
            raise ValueError(f"{path}.{key}: required key missing")
    channels = layer["channels"]
    if not _is_int(channels) or channels < 1:
        _fail(f"{path}.channels", "must be a positive int", channels)
    out = {
        "kernel": _pair(layer["kernel"], f"{path}.kernel", 1),
        "channels": channels,
        "stride": _pair(layer.get("stride", 1), f"{path}.stride", 1),
        "dilation": _pair(layer.get("dilation", 1), f"{path}.dilation", 1),
        "padding": layer.get("padding", "same"),
        "norm": _choice(layer.get("norm", "batch"), f"{path}.norm", NORMS),
        "activation": _choice(layer.get("activation", "relu"), f"{path}.activation", ACTIVATIONS),
    }
    if isinstance(out["padding"], str) and out["padding"] != "same":
        _fail(f"{path}.padding", "must be 'same', an int or a pair of ints", out["padding"])
    if out["padding"] != "same":
        out["padding"] = _pair(out["padding"], f"{path}.padding", 0)
    if layer.get("pool") is not None:
        out["pool"] = _pool(layer["pool"], f"{path}.pool")
    return out, channels


def _branches(layer: dict, path: str, in_ch: int) -> tuple[dict, int]:
    _check_keys(layer, path, BRANCH_KEYS)
    _check_in_channels(layer, path, in_ch)
    branches = layer["branches"]
    if not isinstance(branches, (list, tuple)) or len(branches) < 1:
        _fail(f"{path}.branches", "must be a non-empty list of layer lists", branches)
    out_branches, total, strides = [], 0, []
    for b, branch in enumerate(branches):
        bpath = f"{path}.branches[{b}]"
        layers, ch = _layers(branch, bpath, in_ch)
        out_branches.append(layers)
        total += ch
        strides.append(geometry(layers)[1])
    if any(s != strides[0] for s in strides):
        _fail(f"{path}.branches", "all branches must have the same total stride", strides)
    out = {"branches": out_branches}
    if layer.get("pool") is not None:
        out["pool"] = _pool(layer["pool"], f"{path}.pool")
    return out, total


def _check_in_channels(layer: dict, path: str, in_ch: int) -> None:
    if "in_channels" in layer and layer["in_channels"] != in_ch:
        raise ValueError(f"{path}.in_channels: the previous layer gives {in_ch} channels, "
                         f"got {layer['in_channels']!r}")


def _layers(layers: Any, path: str, in_ch: int) -> tuple[list[dict], int]:
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        _fail(path, "must be a non-empty list of layers", layers)
    out = []
    for i, layer in enumerate(layers):
        canonical, in_ch = _layer(layer, f"{path}[{i}]", in_ch)
        out.append(canonical)
    return out, in_ch


def normalize_spec(spec: Any, path: str = "stem") -> dict:
    """Validate a stem spec and return its canonical form (every default filled in,
    every pair as a ``[f, t]`` list), a dict of lists/ints/str/bools only.

    Raises ``ValueError`` whose message starts with the field path, e.g.
    ``stem.layers[1].kernel: must be positive ints, got (-3, 3)``.
    """
    _check_keys(spec, path, SPEC_KEYS)
    if "layers" not in spec:
        raise ValueError(f"{path}.layers: required key missing")
    in_ch = spec.get("in_channels", 1)
    if not _is_int(in_ch) or in_ch < 1:
        _fail(f"{path}.in_channels", "must be a positive int", in_ch)
    coord = spec.get("coord", False)
    if not isinstance(coord, bool):
        _fail(f"{path}.coord", "must be true or false", coord)
    name = spec.get("name", "custom")
    if not isinstance(name, str):
        _fail(f"{path}.name", "must be a string", name)
    layers, out_ch = _layers(spec["layers"], f"{path}.layers", in_ch + int(coord))
    if "out_channels" in spec and spec["out_channels"] != out_ch:
        raise ValueError(f"{path}.out_channels: the layers produce {out_ch} channels, "
                         f"got {spec['out_channels']!r}")
    return {"name": name, "in_channels": in_ch, "coord": coord, "out_channels": out_ch, "layers": layers}


def geometry(layers: list[dict]) -> tuple[list[int], list[int]]:
    """Theoretical receptive field and total stride ``([rf_f, rf_t], [s_f, s_t])`` of
    canonical layers, not clipped by any input size (zero padding counts as input).

    Walking forward, output unit ``i`` of the layers so far sees the input interval
    ``[i * jump + lo, i * jump + hi]`` on each axis; a window of size k, dilation d, stride s
    and padding p maps it to ``lo - p * jump``, ``hi + (d * (k - 1) - p) * jump``,
    ``jump * s``. Parallel branches see the union of their intervals.
    """
    lo, hi, jump = _extent(layers, [0, 0], [0, 0], [1, 1])
    return [h - l + 1 for l, h in zip(lo, hi)], jump


def _extent(layers: list[dict], lo: list[int], hi: list[int], jump: list[int]) -> tuple[list, list, list]:
    lo, hi, jump = list(lo), list(hi), list(jump)

    def window(kernel: list[int], stride: list[int], padding: list[int], dilation: list[int]) -> None:
        for a in range(2):
            lo[a] -= padding[a] * jump[a]
            hi[a] += (dilation[a] * (kernel[a] - 1) - padding[a]) * jump[a]
            jump[a] *= stride[a]

    for layer in layers:
        if "branches" in layer:
            parts = [_extent(branch, lo, hi, jump) for branch in layer["branches"]]
            lo = [min(p[0][a] for p in parts) for a in range(2)]
            hi = [max(p[1][a] for p in parts) for a in range(2)]
            jump = parts[0][2]
        else:
            window(layer["kernel"], layer["stride"], conv_padding(layer), layer["dilation"])
        if "pool" in layer:
            pool = layer["pool"]
            window(pool["kernel"], pool["stride"], pool["padding"], [1, 1])
    return lo, hi, jump


def conv_padding(layer: dict) -> list[int]:
    """A canonical conv layer's padding as ``[p_f, p_t]`` ('same' = dilation * (k - 1) // 2)."""
    if layer["padding"] == "same":
        return [d * (k - 1) // 2 for k, d in zip(layer["kernel"], layer["dilation"])]
    return list(layer["padding"])


def with_stride(spec: dict, stride: tuple[int, int] | list[int]) -> dict:
    """A canonical spec changed so that its total stride is ``stride = (s_f, s_t)``, for a body
    whose own stem has a smaller stride (EfficientNet, MobileNetV3 and RegNet stems have 2, the
    presets 4).

    The stride is taken out from the end: walking the layers backwards (a layer's pool before its
    conv; every branch of a parallel layer alike), each window's stride on an axis is divided by
    what is left to remove. A pool left with stride 1 on both axes is dropped (deep3 at stride 2
    is then three convs, the first with stride 2). Kernels, padding and channels stay as they are.

    Raises ``ValueError`` when the spec's stride is not a multiple of ``stride`` on an axis (it
    cannot be made larger this way: give a spec with more stride).
    """
    import copy
    spec = copy.deepcopy(spec)
    have = geometry(spec["layers"])[1]
    factors = []
    for axis, (h, want) in enumerate(zip(have, stride)):
        if not _is_int(want) or want < 1 or h % want:
            raise ValueError(f"stem {spec.get('name', 'custom')!r}: its stride {tuple(have)} cannot be reduced "
                             f"to {tuple(stride)} (axis {axis} must divide {h}); give a stem with stride "
                             f"{tuple(stride)} or a multiple of it")
        factors.append(h // want)
    _reduce(spec["layers"], factors)
    return spec


def _reduce(layers: list[dict], factors: list[int]) -> list[int]:
    """Divide strides from the end of ``layers`` by ``factors`` (per axis), in place; return what
    could not be removed."""
    import math
    factors = list(factors)

    def cut(window: dict) -> None:
        for a in range(2):
            g = math.gcd(window["stride"][a], factors[a])
            window["stride"][a] //= g
            factors[a] //= g

    for layer in reversed(layers):
        if "pool" in layer:
            cut(layer["pool"])
            if layer["pool"]["stride"] == [1, 1]:
                del layer["pool"]
        if "branches" in layer:
            left = [_reduce(branch, factors) for branch in layer["branches"]]
            factors = left[0]
        else:
            cut(layer)
    return factors
