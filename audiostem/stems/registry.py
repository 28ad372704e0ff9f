"""The stem registry, the builder and the describer."""

from __future__ import annotations

import copy
import inspect
import numbers
import typing
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..geometry import output_stride, receptive_field
from .modules import Stem
from .spec import normalize_spec

# name -> a function of keyword overrides returning a spec dict (at least {"layers": [...]}).
_REGISTRY: dict[str, Callable[..., dict]] = {}


def register_stem(fn_or_spec: Callable[..., dict] | dict | None = None, *, name: str | None = None) -> Any:
    """Register a preset stem, as a decorated function or as one spec.

    Three forms::

        @register_stem                       # name = the function's name
        def my_stem(kernel_size: int = 3, out_channels: int = 64) -> dict:
            return {"layers": [...]}

        @register_stem(name="my-stem")       # explicit name

        register_stem({"name": "fixed", "layers": [...]})   # a fixed spec (needs "name")

    A function's keyword parameters are that preset's overrides in ``build_stem``; every
    preset also takes ``coord``. A spec is validated when registered. Returns the function
    (so it works as a decorator) or the canonical spec. Raises ``ValueError`` if the name
    is already taken.
    """
    if fn_or_spec is None:
        return lambda fn: register_stem(fn, name=name)
    if isinstance(fn_or_spec, dict):
        spec = normalize_spec(fn_or_spec)
        key = name or fn_or_spec.get("name")
        if not key:
            raise ValueError("register_stem: a spec needs a 'name' (or pass name=...)")
        _add(key, lambda: copy.deepcopy(spec))
        return spec
    if not callable(fn_or_spec):
        raise TypeError(f"register_stem: expected a function or a spec dict, got {type(fn_or_spec).__name__}")
    _add(name or fn_or_spec.__name__, fn_or_spec)
    return fn_or_spec


def _add(name: str, fn: Callable[..., dict]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"register_stem: a stem named {name!r} is already registered")
    _REGISTRY[name] = fn


def list_stems() -> list[str]:
    """Names of the registered preset stems, sorted."""
    return sorted(_REGISTRY)


def _preset(name: str) -> Callable[..., dict]:
    if name not in _REGISTRY:
        raise StemArgError(f"unknown stem {name!r}; registered stems: {', '.join(list_stems())}", is_spec=True)
    return _REGISTRY[name]


def stem_overrides(name: str) -> list[str]:
    """The overrides ``build_stem(name, ...)`` accepts for a preset, sorted."""
    params = inspect.signature(_preset(name)).parameters
    return sorted({"coord", *params})


class StemArgError(ValueError):
    """A stem name, spec or override that cannot make a stem. ``key`` is the override at fault
    (``None``: the name, the spec, or the overrides together); ``is_spec`` says the stem itself
    (name or spec) is wrong rather than its overrides."""

    def __init__(self, message: str, key: Optional[str] = None, is_spec: bool = False):
        super().__init__(message)
        self.key, self.is_spec = key, is_spec


def stem_defaults(name: str) -> dict[str, Any]:
    """The default value of each of a preset's overrides (from its function's signature)."""
    params = inspect.signature(_preset(name)).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def stem_spec(name_or_spec: str | dict, in_channels: int | None = None, **overrides: Any) -> dict:
    """The canonical spec ``build_stem`` builds (plain data, no modules made): checks the name or
    spec, the override names (from the preset function's signature), their types (from its type
    hints: an ``int`` parameter takes an int, not ``true``, ``2.5`` or ``"3"``; a ``float`` one
    also an int) and their values (the preset's own checks and :func:`normalize_spec`).

    Raises :class:`StemArgError` (a ``ValueError``) naming the stem, the override and the valid
    choices; its ``key`` says which override was wrong."""
    overrides = dict(overrides)
    coord = overrides.pop("coord", None)
    if coord is not None and not isinstance(coord, bool):
        raise StemArgError(f"stem override 'coord' must be true or false, got {coord!r}", key="coord")
    if isinstance(name_or_spec, str):
        fn = _preset(name_or_spec)
        _checked(overrides, stem_overrides(name_or_spec), name_or_spec)
        _typed(fn, overrides, name_or_spec)
        try:
            spec = dict(fn(**overrides))
        except (TypeError, ValueError) as e:
            raise StemArgError(str(e)) from None
        spec.setdefault("name", name_or_spec)
    elif isinstance(name_or_spec, dict):
        _checked(overrides, ["coord"], "spec")
        spec = dict(name_or_spec)
    else:
        raise TypeError(f"build_stem: expected a preset name or a spec dict, got {type(name_or_spec).__name__}")
    if in_channels is not None:
        spec["in_channels"] = in_channels
    if coord is not None:
        spec["coord"] = coord
    try:
        return normalize_spec(spec)
    except ValueError as e:
        raise StemArgError(str(e), is_spec=isinstance(name_or_spec, dict) or not overrides) from None


def build_stem(name_or_spec: str | dict, in_channels: int | None = None, **overrides: Any) -> Stem:
    """Build a stem: ``(batch, in_channels, F, T) -> (batch, out_channels, F / s_f, T / s_t)``.

    Args:
        name_or_spec: a preset name (see ``list_stems()``) or a spec dict (format in
            ``audiostem.stems.spec``; ``stem.spec`` of any built stem works).
        in_channels: input channels; default the spec's ``in_channels``, which defaults to 1.
        **overrides: preset parameters, the study axes. Which ones a preset takes is in its
            docstring and ``stem_overrides(name)``; the common ones:

            - ``kernel_size`` (int): the preset's main kernel (3, 5, 7, 9, ...);
            - ``width`` (int): filters of the first layer (8 ... 64);
            - ``depth`` (int): number of 3x3-style layers;
            - ``out_channels`` (int): channels of the output map, default 64;
            - ``coord`` (bool): append a frequency-position channel (see ``FreqCoord``) to the
              input before the first conv; any stem takes it; stride and receptive field
              are unchanged. A spec dict takes only this override.

    Returns:
        a ``Stem`` with ``.out_channels``, ``.stride`` (f, t), ``.receptive_field`` (f, t) and
        ``.spec`` (canonical, YAML-friendly; ``build_stem(stem.spec)`` rebuilds the same
        architecture).

    Raises:
        ValueError: unknown preset, unknown override (naming the valid ones), an override of the
            wrong type (naming the type the preset declares), or an invalid spec (naming the
            field, e.g. ``stem.layers[1].kernel``); all checked by :func:`stem_spec`.
    """
    return Stem(stem_spec(name_or_spec, in_channels, **overrides))


def _checked(overrides: dict, valid: list[str], what: str) -> dict:
    for key in overrides:
        if key not in valid:
            raise StemArgError(f"stem {what!r}: unknown override {key!r}; valid overrides: {', '.join(valid)}")
    return overrides


def _typed(fn: Callable[..., dict], overrides: dict, name: str) -> None:
    """Check each override against the type hint of the preset function's parameter (if any)."""
    from pydantic import TypeAdapter, ValidationError
    try:
        hints = typing.get_type_hints(fn)
    except Exception:          # a user's preset with hints that do not resolve: not checked
        return
    for key, value in overrides.items():
        hint = hints.get(key)
        if hint is None or hint is Any:
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            got = str(value).lower() if isinstance(value, bool) else repr(value)
            raise StemArgError(f"stem {name!r}: override {key!r} must be {shown}, got {got}", key=key) from None


def check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, F, T)``; raises ``ValueError`` naming it unless it is three positive ints."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
    if not (isinstance(shape, tuple) and len(shape) == 3
            and all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"input_shape: must be (channels, bins, frames), three positive ints, got {shape!r}")
    return tuple(int(n) for n in shape)


@torch.no_grad()
def describe_stem(stem: nn.Module | str | dict, input_shape: tuple[int, int, int] = (1, 128, 256)) -> dict:
    """Size and geometry of a stem for one input of ``input_shape = (C, F, T)``.

    A name or spec is built first (with ``in_channels = C``). Returns a dict:
    ``name``, ``params`` (trainable parameter count), ``flops`` (FLOPs of one forward pass at
    batch 1, counted by ``torch.utils.flop_counter.FlopCounterMode``: a multiply-add is 2,
    norms/activations/pools are not counted), ``receptive_field`` and ``stride`` (f, t; a
    module without these attributes, such as a timm model's own stem, is measured:
    ``audiostem.geometry``), ``out_channels`` and ``out_shape`` (C', F', T') without batch.
    Raises ``ValueError`` naming ``input_shape`` unless it is three positive ints.
    """
    input_shape = check_input_shape(input_shape)
    if not isinstance(stem, nn.Module):
        stem = build_stem(stem, in_channels=input_shape[0])
    param = next(stem.parameters(), torch.zeros(()))
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    was_training = stem.training
    stem.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            out = stem(x)
    finally:
        stem.train(was_training)
    spec = getattr(stem, "spec", None)
    rf, stride = getattr(stem, "receptive_field", None), getattr(stem, "stride", None)
    if rf is None or stride is None:
        with torch.enable_grad():
            rf, stride = receptive_field(stem, input_shape[0]), output_stride(stem, input_shape[0])
    return {
        "name": spec["name"] if isinstance(spec, dict) else type(stem).__name__,
        "params": sum(p.numel() for p in stem.parameters() if p.requires_grad),
        "flops": counter.get_total_flops(),
        "receptive_field": rf,
        "stride": stride,
        "out_channels": int(out.shape[1]),
        "out_shape": tuple(out.shape[1:]),
    }
