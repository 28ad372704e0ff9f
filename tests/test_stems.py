"""Stems: shapes, receptive fields, sizes, specs and their errors."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import yaml
from torch import nn

from audiostem import build_stem, describe_stem, list_stems, register_stem
from audiostem.stems import normalize_spec, registry, stem_overrides

REQUIRED = ["resnet7", "deep3", "wide5", "tall", "temporal", "pons", "octave", "patch4"]


def test_list_stems_has_required_presets():
    assert set(REQUIRED) <= set(list_stems())


@pytest.mark.parametrize("name", list_stems())
@pytest.mark.parametrize("coord", [False, True])
def test_preset_shapes(name, coord):
    stem = build_stem(name, coord=coord).eval()
    assert stem.out_channels == 64 and stem.stride == (4, 4)
    with torch.no_grad():
        assert stem(torch.randn(1, 1, 128, 256)).shape == (1, 64, 32, 64)
        assert stem(torch.randn(2, 1, 64, 128)).shape == (2, 64, 16, 32)


def test_coord_keeps_geometry_and_adds_one_input_channel():
    plain, coord = build_stem("deep3"), build_stem("deep3", coord=True, in_channels=2)
    assert (plain.receptive_field, plain.stride) == (coord.receptive_field, coord.stride)
    assert coord.layers[0].conv.in_channels == 3
    assert coord(torch.randn(1, 2, 32, 32)).shape == (1, 64, 8, 8)


# --- receptive field: theory vs the gradient support of one output unit -----------------

def _linearized(spec: dict) -> dict:
    """The same geometry with no norm, no activation and max-pools swapped for avg-pools."""
    spec = copy.deepcopy(spec)

    def walk(layers):
        for layer in layers:
            if "branches" in layer:
                for branch in layer["branches"]:
                    walk(branch)
            else:
                layer["norm"], layer["activation"] = "none", "none"
            if "pool" in layer:
                layer["pool"]["type"] = "avg"

    walk(spec["layers"])
    return spec


def measured_receptive_field(stem: nn.Module) -> tuple[int, int]:
    """Extent of the input bins that reach the central output unit, with all weights
    positive (1 / fan-in) so that nothing cancels."""
    stem = build_stem(_linearized(stem.spec)).double()
    for m in stem.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            nn.init.zeros_(m.bias)
    # an input large enough that the central unit's field lies well inside it
    size = [s * (2 * r // s + 4) for r, s in zip(stem.receptive_field, stem.stride)]
    x = torch.ones(1, stem.spec["in_channels"], *size, dtype=torch.float64, requires_grad=True)
    y = stem(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    support = x.grad[0].abs().sum(0) > 0
    rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("name", list_stems())
def test_receptive_field_matches_gradient_support(name):
    stem = build_stem(name)
    assert stem.receptive_field == measured_receptive_field(stem)


@pytest.mark.parametrize("name,overrides", [
    ("deep3", {"kernel_size": 5, "depth": 4, "coord": True}),
    ("wide5", {"kernel_size": 7, "depth": 2}),
    ("tall", {"n_freq": 64, "fraction": 0.4}),
    ("patch4", {"kernel_size": 7}),
    ("resnet7", {"kernel_size": 4}),
])
def test_receptive_field_with_overrides(name, overrides):
    stem = build_stem(name, **overrides)
    assert stem.receptive_field == measured_receptive_field(stem)


def test_receptive_field_of_dilated_branches():
    spec = {"layers": [
        {"kernel": 3, "channels": 4, "dilation": [2, 3], "stride": 2},
        {"branches": [[{"kernel": [5, 1], "channels": 2}],
                      [{"kernel": [1, 5], "channels": 2, "dilation": [1, 2]}]],
         "pool": {"type": "max", "kernel": [2, 3], "stride": 1, "padding": 0}},
    ]}
    stem = build_stem(spec)
    # layer 0: f 1 + 2*2 = 5, t 1 + 3*2 = 7, jump 2; branches (union): f +4*2, t +2*4*2; pool: f +1*2, t +2*2
    assert stem.receptive_field == (5 + 8 + 2, 7 + 16 + 4) == measured_receptive_field(stem)


# --- params and FLOPs by hand ----------------------------------------------------------

def test_resnet7_params_and_flops_by_hand():
    d = describe_stem("resnet7", (1, 128, 256))
    conv = 7 * 7 * 1 * 64          # weights, no bias (BN follows)
    bn = 2 * 64                     # gamma, beta
    assert d["params"] == conv + bn == 3264
    out_positions = 64 * 128        # 128 x 256 at stride 2
    assert d["flops"] == 2 * conv * out_positions == 51_380_224  # 2 FLOPs per multiply-add
    assert d["receptive_field"] == (7 + 2 * 2,) * 2 and d["stride"] == (4, 4)
    assert d["out_shape"] == (64, 32, 64)


def test_deep3_params_and_flops_by_hand():
    d = describe_stem("deep3", (1, 128, 256))
    convs = [3 * 3 * 1 * 32, 3 * 3 * 32 * 32, 3 * 3 * 32 * 64]   # 288, 9216, 18432
    bns = [2 * 32, 2 * 32, 2 * 64]
    assert d["params"] == sum(convs) + sum(bns) == 28_192
    out_positions = 64 * 128        # all three convs run at stride 2; the max-pool follows
    assert d["flops"] == 2 * sum(convs) * out_positions == 457_703_424
    assert d["receptive_field"] == (3 + 2 * 2 + 2 * 2 + 2 * 2,) * 2 == (15, 15)


def test_describe_stem_on_a_plain_module():
    d = describe_stem(nn.Conv2d(1, 8, 4, 4), (1, 16, 32))
    assert d["flops"] == 2 * (4 * 4 * 1) * 8 * (4 * 8) and d["out_shape"] == (8, 4, 8)
    assert d["receptive_field"] == (4, 4) and d["stride"] == (4, 4)  # measured (audiostem.geometry)


@pytest.mark.parametrize("shape", [(128, 256), (1, 0, 256), (1, 128, 256.0), [1, 128, 256, 1]])
def test_describe_names_an_input_shape_that_is_not_channels_bins_frames(shape):
    """(128, 256) used to build a 128-channel stem and fail in torch's conv with 'expected input ... to
    have 128 channels'."""
    from audiostem import build_model, describe_model
    for describe, what in ((describe_stem, "deep3"), (describe_model, build_model())):
        with pytest.raises(ValueError, match=re.escape(f"input_shape: must be (channels, bins, frames), three "
                                                       f"positive ints, got {tuple(shape)!r}")):
            describe(what, shape)


# --- specs -----------------------------------------------------------------------------

def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, str, bool))


@pytest.mark.parametrize("name", list_stems())
def test_spec_round_trip(name):
    stem = build_stem(name, in_channels=2, coord=True)
    assert _plain(stem.spec)
    spec = yaml.safe_load(yaml.safe_dump(stem.spec))
    again = build_stem(spec)
    assert again.spec == stem.spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in stem.state_dict().items()}
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in stem.parameters())
    assert (again.receptive_field, again.stride, again.out_channels) == (stem.receptive_field, stem.stride, 64)


def test_yaml_spec_with_branches():
    spec = yaml.safe_load("""
        name: mine
        out_channels: 24
        layers:
          - {kernel: [5, 3], channels: 8, stride: 2, pool: {type: max, kernel: 3, stride: 2}}
          - branches:
              - [{kernel: [9, 1], channels: 16}]
              - [{kernel: [1, 9], channels: 8, norm: none, activation: gelu}]
    """)
    stem = build_stem(spec)
    assert stem(torch.randn(2, 1, 64, 96)).shape == (2, 24, 16, 24)
    assert stem.receptive_field == (5 + 2 * 2 + 8 * 4, 3 + 2 * 2 + 8 * 4) and stem.stride == (4, 4)


BAD_SPECS = [
    ({"layers": [{"kernel": 3, "channels": 8}, {"kernel": [-3, 3], "channels": 8}]},
     "stem.layers[1].kernel: must be positive ints, got (-3, 3)"),
    ({"layers": [{"kernel": 0, "channels": 8}]}, "stem.layers[0].kernel: must be positive ints"),
    ({"layers": [{"kernal": 3, "channels": 8}]}, "stem.layers[0].kernal: unknown key"),
    ({"layers": [{"kernel": 3, "channels": 8}], "colour": 1}, "stem.colour: unknown key"),
    ({"layers": [{"kernel": 3, "channels": 8}], "out_channels": 64},
     "stem.out_channels: the layers produce 8 channels, got 64"),
    ({"layers": [{"kernel": 3, "channels": 8}, {"kernel": 3, "channels": 8, "in_channels": 16}]},
     "stem.layers[1].in_channels: the previous layer gives 8 channels, got 16"),
    ({"layers": [{"kernel": "3", "channels": 8}]}, "stem.layers[0].kernel: must be an int or a pair"),
    ({"layers": [{"kernel": 3, "channels": 8.0}]}, "stem.layers[0].channels: must be a positive int"),
    ({"layers": [{"kernel": 3, "channels": 8, "stride": True}]}, "stem.layers[0].stride: must be an int or a pair"),
    ({"layers": [{"kernel": 3, "channels": 8, "norm": "bn"}]}, "stem.layers[0].norm: must be one of batch"),
    ({"layers": [{"kernel": 3}]}, "stem.layers[0].channels: required key missing"),
    ({"layers": [{"kernel": 3, "channels": 8, "pool": {"type": "max", "kernel": -2}}]},
     "stem.layers[0].pool.kernel: must be positive ints"),
    ({"layers": [{"branches": [[{"kernel": 3, "channels": 8}], [{"kernel": 3, "channels": 8, "stride": 2}]]}]},
     "stem.layers[0].branches: all branches must have the same total stride"),
    ({"layers": [{"branches": [[{"kernel": 3, "channels": 8}], [{"kernel": 3, "channels": 8, "dilation": -1}]]}]},
     "stem.layers[0].branches[1][0].dilation: must be positive ints"),
    ({"layers": []}, "stem.layers: must be a non-empty list"),
    ({"layers": [{"kernel": 3, "channels": 8, "padding": "valid"}]},
     "stem.layers[0].padding: must be 'same', an int or a pair of ints, got 'valid'"),
    ({"layers": [{"kernel": 3, "channels": 8, "pool": {"type": "max"}}]}, "stem.layers[0].pool.kernel: required"),
    ({"layers": [{"kernel": 3, "channels": 8, "pool": {"type": "lp", "kernel": 2}}]},
     "stem.layers[0].pool.type: must be one of max, avg, got 'lp'"),
    ({"layers": [{"kernel": 3, "channels": 8}], "coord": "yes"}, "stem.coord: must be true or false"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS)
def test_bad_spec_names_the_field(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_stem(spec)


def test_unknown_override_names_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown override 'depth'; valid overrides: coord, kernel_size, out_channels"):
        build_stem("resnet7", depth=3)
    with pytest.raises(ValueError, match="unknown stem 'resnet9'"):
        build_stem("resnet9")
    with pytest.raises(ValueError, match="unknown override 'width'"):
        build_stem({"layers": [{"kernel": 3, "channels": 8}]}, width=8)


@pytest.mark.parametrize("lookup", ["stem_overrides", "stem_defaults"])
def test_looking_up_an_unknown_preset_names_the_registered_ones(lookup):
    from audiostem import stems
    with pytest.raises(ValueError, match=r"^unknown stem 'deeper'; registered stems: deep3, "):
        getattr(stems, lookup)("deeper")                  # was KeyError: 'deeper'


@pytest.mark.parametrize("name", list_stems())
def test_common_overrides(name):
    valid = stem_overrides(name)
    for key, value in {"kernel_size": 5, "width": 8, "depth": 2, "out_channels": 48}.items():
        if key in valid:
            stem = build_stem(name, **{key: value})
            assert stem(torch.randn(1, 1, 64, 64)).shape[1] == stem.out_channels
    assert build_stem(name, out_channels=48).out_channels == 48


def test_override_values_reach_the_layers():
    stem = build_stem("deep3", kernel_size=5, width=16, depth=4)
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 4 and [c.out_channels for c in convs] == [16, 16, 16, 64]
    assert build_stem("tall", n_freq=64).layers[0].conv.kernel_size == (45, 7)
    with pytest.raises(ValueError, match="depth"):
        build_stem("deep3", depth=0)


@pytest.fixture
def scratch_registry():
    """Forget the stems a test registers, so other tests see only the presets."""
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_register_stem_forms(scratch_registry):
    @register_stem(name="test_tiny")
    def tiny(kernel_size: int = 3, out_channels: int = 64) -> dict:
        return {"layers": [{"kernel": kernel_size, "channels": out_channels, "stride": 4}]}

    register_stem({"name": "test_fixed", "layers": [{"kernel": 4, "channels": 64, "stride": 4, "padding": 0}]})
    assert {"test_tiny", "test_fixed"} <= set(list_stems())
    assert build_stem("test_tiny", kernel_size=5).layers[0].conv.kernel_size == (5, 5)
    assert build_stem("test_fixed", coord=True).spec["coord"] is True
    with pytest.raises(ValueError, match="already registered"):
        register_stem(tiny, name="test_tiny")


def test_normalize_spec_fills_defaults():
    spec = normalize_spec({"layers": [{"kernel": 3, "channels": 8, "pool": {"type": "avg", "kernel": 2}}]})
    assert spec == {"name": "custom", "in_channels": 1, "coord": False, "out_channels": 8, "layers": [{
        "kernel": [3, 3], "channels": 8, "stride": [1, 1], "dilation": [1, 1], "padding": "same",
        "norm": "batch", "activation": "relu",
        "pool": {"type": "avg", "kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}}]}


def test_channels_last_input():
    stem = build_stem("pons", coord=True).eval()
    x = torch.randn(2, 1, 64, 128)
    with torch.no_grad():
        expected = stem(x)
        got = stem.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("frames", [17, 101, 255])
def test_pons_takes_an_odd_number_of_frames(frames):
    """Its 1x32 branch pads 15 frames each side (an even kernel's 'same' padding), so on an odd
    length it gives one position fewer than the 90x7 branch; the longer map is cut to match."""
    stem = build_stem("pons", n_freq=64).eval()
    with torch.no_grad():
        odd, even = stem(torch.randn(2, 1, 64, frames)), stem(torch.randn(2, 1, 64, frames - 1))
    assert odd.shape == even.shape and odd.shape[:3] == (2, 64, 16)


def test_branches_of_unmatched_padding_are_still_refused():
    stem = build_stem({"layers": [{"branches": [[{"kernel": 3, "channels": 4}],
                                                [{"kernel": 3, "channels": 4, "padding": 0}]]}]})
    with pytest.raises(RuntimeError, match=r"stem branches give different \(F, T\) sizes \[\(6, 6\), \(8, 8\)\]"):
        stem(torch.randn(1, 1, 8, 8))
