"""The named preset stems.

Every preset, by default, maps ``(batch, C, F, T)`` to ``(batch, 64, F / 4, T / 4)`` (for F, T
multiples of 4), so the same body can follow any of them. Each is a function of its
overrides returning a spec (see ``audiostem.stems.spec``); ``coord`` is added by ``build_stem``.
Axes are (frequency or pitch, time) throughout.
"""

from __future__ import annotations

from typing import Any

from .registry import register_stem

MAX_POOL = {"type": "max", "kernel": 3, "stride": 2}  # ResNet's 3x3 stride-2 max-pool, padding 1


def conv(kernel: int | list[int], channels: int, stride: int | list[int] = 1, **kw: Any) -> dict:
    """One conv layer of a spec (defaults: 'same' padding, batch norm, ReLU)."""
    return {"kernel": kernel, "channels": channels, "stride": stride, **kw}


def _at_least(value: int, minimum: int, name: str) -> int:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an int >= {minimum}, got {value!r}")
    return value


@register_stem
def resnet7(kernel_size: int | list[int] = 7, out_channels: int = 64) -> dict:
    """ResNet's stem: one k x k stride-2 conv (64 filters), BN-ReLU, 3x3 stride-2 max-pool.

    Source: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    Overrides: ``kernel_size`` (7), ``out_channels`` (64; also the filter count).
    """
    return {"layers": [conv(kernel_size, out_channels, 2, pool=MAX_POOL)]}


@register_stem
def deep3(kernel_size: int | list[int] = 3, width: int = 32, depth: int = 3, out_channels: int = 64) -> dict:
    """The deep stem: ``depth`` k x k convs (32, 32, 64), the first with stride 2, then a
    3x3 stride-2 max-pool.

    Source: ResNet-C in He et al., "Bag of Tricks for Image Classification with Convolutional
    Neural Networks", CVPR 2019; also the stem of fastai's XResNet (stem sizes 32, 32, 64).
    Overrides: ``kernel_size`` (3), ``width`` (32: filters of every conv but the last),
    ``depth`` (3: number of convs, >= 1; with 1 it is a single conv to ``out_channels``),
    ``out_channels`` (64).
    """
    _at_least(depth, 1, "deep3 depth")
    channels = [width] * (depth - 1) + [out_channels]
    layers = [conv(kernel_size, ch, 2 if i == 0 else 1) for i, ch in enumerate(channels)]
    layers[-1]["pool"] = MAX_POOL
    return {"layers": layers}


@register_stem
def wide5(kernel_size: int | list[int] = 5, width: int = 16, depth: int = 1, out_channels: int = 64) -> dict:
    """fast.ai's wider first layer: a 5x5 stride-2 conv with few filters, then ``depth``
    3x3 convs to 64 channels, then a 3x3 stride-2 max-pool.

    Source: fast.ai "Deep Learning from the Foundations" (2019, lessons 10-11, J. Howard): a
    3x3 kernel on one input channel sees 9 numbers, so 8 or more filters cannot carry more
    than their input; a 5x5 kernel sees 25, so the first layer should use 5x5 and keep its
    filter count at or below what its inputs carry.

    Matching 64 channels at stride 4: the 5x5 conv has 25 inputs (one channel), so it gets
    ``width`` = 16 <= 25 filters; the next conv is 3x3 over 16 channels (144 inputs) and can
    carry the 64 output channels; the max-pool gives the second factor 2 of stride.
    Overrides: ``kernel_size`` (5), ``width`` (16; keep it <= kernel_size**2 * in_channels
    to follow the rule), ``depth`` (1: number of 3x3 convs after the first, >= 1),
    ``out_channels`` (64).
    """
    _at_least(depth, 1, "wide5 depth")
    layers = [conv(kernel_size, width, 2)] + [conv(3, out_channels) for _ in range(depth)]
    layers[-1]["pool"] = MAX_POOL
    return {"layers": layers}


def _tall_height(n_freq: int, fraction: float) -> int:
    _at_least(n_freq, 1, "n_freq")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction!r}")
    return max(1, round(fraction * n_freq))


@register_stem
def tall(kernel_size: int = 7, width: int = 32, n_freq: int = 128, fraction: float = 0.7,
         out_channels: int = 64) -> dict:
    """Frequency-tall "timbral" filters: a (round(fraction * n_freq) x 7) stride-2 conv,
    BN-ReLU, 3x3 stride-2 max-pool, then a 1x1 conv to 64 channels.

    Source: Pons, Slizovskaia, Gong, Gomez, Serra, "Timbre analysis of music audio signals with
    convolutional neural networks", EUSIPCO 2017 (filters 0.4F-0.9F tall, a few frames wide).
    The height is fixed when the stem is built: 90 bins for the default ``n_freq`` = 128 and
    ``fraction`` = 0.7. Pass ``n_freq`` = your number of bins (e.g. 64) to keep the fraction.
    Overrides: ``kernel_size`` (7: width in frames), ``width`` (32 filters), ``n_freq`` (128),
    ``fraction`` (0.7), ``out_channels`` (64).
    """
    height = _tall_height(n_freq, fraction)
    return {"layers": [conv([height, kernel_size], width, 2, pool=MAX_POOL), conv(1, out_channels)]}


@register_stem
def temporal(kernel_size: int = 32, width: int = 32, out_channels: int = 64) -> dict:
    """Time-wide filters: a (1 x 32) conv with stride (1, 2), BN-ReLU, a max-pool over
    4 bins x 3 frames with stride (4, 2), then a 1x1 conv to 64 channels.

    Source: Pons and Serra, "Designing efficient architectures for modeling temporal features
    with convolutional neural networks", ICASSP 2017 (1 x n filters, n = 32 ... 165 frames).
    The conv keeps frequency stride 1 so that no bin is skipped by the 1-bin-tall kernel;
    the pool gives the frequency stride 4.
    Overrides: ``kernel_size`` (32 frames), ``width`` (32 filters), ``out_channels`` (64).
    """
    pool = {"type": "max", "kernel": [4, 3], "stride": [4, 2], "padding": [0, 1]}
    return {"layers": [conv([1, kernel_size], width, [1, 2], pool=pool), conv(1, out_channels)]}


@register_stem
def pons(width: int = 32, n_freq: int = 128, fraction: float = 0.7, out_channels: int = 64) -> dict:
    """Tall and wide filters in parallel, concatenated on channels: a timbral branch
    (round(0.7 * n_freq) x 7, stride 2) and a temporal branch (1 x 32, stride (1, 2), then a
    2 x 1 max-pool), each with half of ``width`` filters; then a 3x3 stride-2 max-pool and a
    1x1 conv to 64 channels.

    Source: the musicnn front end, Pons, Nieto, Prockup, Schmidt, Ehmann, Serra, "End-to-end
    learning for music audio tagging at scale", ISMIR 2018, whose branches pool away the
    frequency axis; here both keep a 2D map at the same stride so they can be concatenated.
    Overrides: ``width`` (32, split evenly), ``n_freq`` (128), ``fraction`` (0.7), ``out_channels`` (64).
    """
    _at_least(width, 2, "pons width")
    timbral = [conv([_tall_height(n_freq, fraction), 7], width // 2, 2)]
    temporal_ = [conv([1, 32], width - width // 2, [1, 2], pool={"type": "max", "kernel": [2, 1]})]
    return {"layers": [{"branches": [timbral, temporal_], "pool": MAX_POOL}, conv(1, out_channels)]}


@register_stem
def octave(kernel_size: int = 3, width: int = 32, height: int = 13, out_channels: int = 64) -> dict:
    """Octave-tall filters for piano rolls: a (13 x 3) stride-2 conv, BN-ReLU, 3x3 stride-2
    max-pool, then a 1x1 conv to 64 channels.

    Source: music theory rather than one paper: 13 pitch bins (semitones) span unison to
    octave, so one filter sees every interval within an octave, and moving it by 12 bins
    moves it by an octave. Overrides: ``kernel_size`` (3 frames), ``width`` (32 filters),
    ``height`` (13 pitch bins; 12 is the other common choice), ``out_channels`` (64).
    """
    return {"layers": [conv([height, kernel_size], width, 2, pool=MAX_POOL), conv(1, out_channels)]}


@register_stem
def patch4(kernel_size: int | list[int] = 4, out_channels: int = 64) -> dict:
    """Patchify: one 4x4 stride-4 conv (non-overlapping patches) to 64 channels, then a
    LayerNorm over channels, no activation.

    Source: ConvNeXt, Liu et al., "A ConvNet for the 2020s", CVPR 2022 (4x4 stride-4 stem +
    LayerNorm), after ViT's patch embedding (Dosovitskiy et al., ICLR 2021).
    Overrides: ``kernel_size`` (4; larger gives overlapping patches, padded by
    max(0, (k - 3) // 2) so the output stays F/4 x T/4), ``out_channels`` (64).
    """
    padding = max(0, (kernel_size - 3) // 2) if isinstance(kernel_size, int) else "same"
    return {"layers": [conv(kernel_size, out_channels, 4, padding=padding, norm="layer", activation="none")]}
