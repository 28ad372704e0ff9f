"""Receptive field and output stride of any network, measured rather than derived.

An audiostem ``Stem`` knows its geometry from its spec (``audiostem.stems.spec.geometry``); a
timm or torchvision body, or a whole classifier, does not. Here both are measured:

- **output stride**: the feature map of an input ``n`` bins long and one ``2n`` long differ by
  ``n / s`` positions, so ``s = n / (size(2n) - size(n))``, per axis;
- **receptive field**: the input positions that one output position depends on, found by the
  gradient method (Araujo, Norris, Sim, "Computing Receptive Fields of Convolutional Neural
  Networks", Distill 2019): back-propagate from the centre unit of the feature map and take the
  extent of the non-zero input gradient. The network is measured on a float64 copy whose
  weights are positive (so no ReLU cuts a path), whose norms are identities (running mean 0,
  variance 1), whose max-pools are average pools of the same window (a max routes its gradient
  to one input only), and in which global context (squeeze-excitation: a mean over all of F and
  T) passes no gradient. What is measured is then the theoretical receptive field of the
  convolution and pooling windows, the number ``Stem.receptive_field`` gives for a stem (zero
  padding counts as input), grown until it no longer touches the input's edges.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_GLOBAL_POOLS = (torch.Tensor.mean, torch.mean, torch.Tensor.amax, torch.amax,
                 nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d)


class _NoGlobalContext(TorchFunctionMode):
    """Detach the result of any global pooling to ``(batch, C, 1, 1)``: squeeze-excitation gates
    then scale the map without spreading the gradient over the whole input."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _GLOBAL_POOLS and isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2:] == (1, 1):
            return out.detach()
        return out


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last spatial map of ``model`` for ``x``, ``(batch, C, F', T')``: ``forward_features``
    where the model has it (timm models, audiostem's ``AudioResNet``), else the input of the last
    adaptive pooling the forward pass calls (torchvision classifiers), else the output itself."""
    if hasattr(model, "forward_features"):
        return model.forward_features(x)
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
             for m in model.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen[-1] if seen else out


def _probe_copy(model: nn.Module) -> nn.Module:
    """The float64, positive-weight, identity-norm, average-pool copy the gradient method runs on."""
    probe = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(0)
    for name, module in list(probe.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            avg = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
            probe.set_submodule(name, avg)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            for p in module.parameters(recurse=False):
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5) / fan_in)
    return probe


def _span(probe: nn.Module, in_channels: int, axis: int, length: int, other: int) -> tuple[int, bool]:
    """Receptive field on ``axis`` of the centre output unit for an input ``length`` long on that
    axis (``other`` on the other); and whether it reached an edge of the input."""
    shape = [1, in_channels, other, other]
    shape[2 + axis] = length
    device = next(probe.parameters(), torch.zeros(())).device
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5
    x = x.to(device).requires_grad_()
    with _NoGlobalContext():
        fmap = feature_map(probe, x)
    index = [0, slice(None), fmap.shape[2] // 2, fmap.shape[3] // 2]
    fmap[tuple(index)].sum().backward()
    touched = (x.grad[0].abs().sum(0).sum(1 - axis) > 0).nonzero().flatten()
    if len(touched) == 0:
        raise RuntimeError(f"receptive_field: no input position reaches the output of {type(probe).__name__}")
    lo, hi = int(touched.min()), int(touched.max())
    return hi - lo + 1, lo == 0 or hi == length - 1


def _out_len(fn: Callable[[torch.Tensor], torch.Tensor], in_channels: int, axis: int, length: int, other: int,
             like: torch.Tensor) -> int:
    shape = [1, in_channels, other, other]
    shape[2 + axis] = length
    return int(fn(torch.zeros(shape, device=like.device, dtype=like.dtype)).shape[2 + axis])


@torch.no_grad()
def output_stride(model: nn.Module, in_channels: int, base: int = 64) -> tuple[int, int]:
    """Output stride ``(s_f, s_t)`` of ``model``'s feature map (see :func:`feature_map`), measured
    per axis from inputs ``2 * base`` and ``4 * base`` long (``2 * base`` on the other axis; ``2 *
    base`` must be a multiple of the stride)."""
    param = next(model.parameters(), torch.zeros(()))
    was = model.training
    model.eval()
    try:
        fn = lambda x: feature_map(model, x)  # noqa: E731
        strides = []
        for axis in range(2):
            n1, n2 = (_out_len(fn, in_channels, axis, n, 2 * base, param) for n in (2 * base, 4 * base))
            strides.append(round(2 * base / max(1, n2 - n1)))
    finally:
        model.train(was)
    return strides[0], strides[1]


def receptive_field(model: nn.Module, in_channels: int, limit: int = 4096) -> Optional[tuple[int, int]]:
    """Theoretical receptive field ``(rf_f, rf_t)`` in input bins/frames of the centre unit of
    ``model``'s feature map (see the module docstring for the method), or ``None`` when it is wider
    than ``limit`` on an axis. Each axis is measured on inputs ``8 * stride`` long, doubled until
    the field no longer reaches the input's edges; the other axis is ``2 * stride`` long. Costs a
    float64 forward and backward pass per doubling: about a second for a ResNet-18 on two CPU
    cores, minutes for a ConvNeXt, whose field is over 1000 bins wide."""
    stride = output_stride(model, in_channels)
    probe = _probe_copy(model)
    rf: list[Optional[int]] = []
    for axis in range(2):
        length, found = 8 * stride[axis], None
        while length <= limit:
            span, clipped = _span(probe, in_channels, axis, length, other=2 * stride[1 - axis])
            if not clipped:
                found = span
                break
            length *= 2
        rf.append(found)
    return None if None in rf else (rf[0], rf[1])
