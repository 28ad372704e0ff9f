"""build_model: bodies, heads, and custom stems."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audiostem import build_model, build_stem
from audiostem.models import BODIES, HEADS


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("head", HEADS)
def test_body_and_head_give_logits(body, head):
    model = build_model(stem="resnet7", body=body, num_classes=7, head=head)
    assert model(torch.randn(2, 1, 64, 128)).shape == (2, 7)


def test_forward_features_and_head():
    model = build_model(stem="deep3", body="narrow", num_classes=5, head="freq_time").eval()
    x = torch.randn(3, 1, 64, 96)
    feats = model.forward_features(x)
    assert feats.shape == (3, 128, 64 // 16, 96 // 16) and model.num_features == 128
    assert model.forward_head(feats, pre_logits=True).shape == (3, 128)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    # freq_time: max over frequency, then mean over time
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.amax(dim=2).mean(dim=2))


def test_stem_options_pass_through():
    model = build_model(stem="tall", in_channels=2, stem_overrides={"n_freq": 64, "coord": True}, num_classes=3)
    assert model.stem.spec["in_channels"] == 2 and model.stem.spec["coord"]
    assert model(torch.randn(2, 2, 64, 64)).shape == (2, 3)
    spec = build_stem("octave").spec
    assert build_model(stem=spec, num_classes=4)(torch.randn(1, 1, 128, 64)).shape == (1, 4)


def test_custom_module_stem():
    class MyStem(nn.Module):
        out_channels = 24

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 24, kernel_size=(8, 2), stride=(8, 2))

        def forward(self, x):
            return self.conv(x)

    model = build_model(stem=MyStem(), body={"widths": [16, 32], "depths": [1, 2]}, num_classes=6)
    assert model.stages[0][0].conv1.in_channels == 24
    assert model(torch.randn(2, 1, 64, 128)).shape == (2, 6)
    # the stem of a built model can be swapped for another with the same out_channels
    model.stem = build_stem("patch4", out_channels=24)
    assert model(torch.randn(2, 1, 64, 128)).shape == (2, 6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_channels"):
        build_model(stem=nn.Identity())
    with pytest.raises(ValueError, match="head"):
        build_model(head="max")
    with pytest.raises(ValueError, match="unknown body 'resnet50'"):
        build_model(body="resnet50")
    with pytest.raises(ValueError, match="unknown override 'widht'"):
        build_model(stem="deep3", stem_overrides={"widht": 8})


@pytest.mark.parametrize("body", ["narrow", "timm:test_resnet"])
@pytest.mark.parametrize("field, value", [("num_classes", 0), ("num_classes", -1), ("num_classes", 2.0),
                                          ("in_channels", 0), ("in_channels", True)])
def test_counts_that_are_not_positive_ints_are_named(body, field, value):
    """num_classes 0 built a model with no logits; -1 and 2.0 failed inside torch's Linear."""
    with pytest.raises(ValueError, match=rf"^{field}: must be a positive int, got {value!r}$"):
        build_model(body=body, **{field: value})


def test_channels_last_and_backward():
    model = build_model(stem="pons", body="narrow", num_classes=4).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 64, 128).to(memory_format=torch.channels_last)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
