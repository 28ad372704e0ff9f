"""Stems in timm and torchvision bodies: replace_stem, native stems, library bodies, pretrained
weights from local files only, and whole-model geometry."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig

import audiostem
from audiostem import build_model, build_stem, describe_model, list_stems, replace_stem
from audiostem.bodies import ProjectedStem, find_stem, pretrained_file
from audiostem.models import stem_of
from audiostem.geometry import output_stride, receptive_field
from audiostem.stems.spec import geometry, normalize_spec, with_stride

CLASSES = 5
# the smallest member of each supported family in each library (test_* are timm's own test-sized models)
SMALL = {
    "timm ResNet (deep stem)": lambda: timm.create_model("test_resnet", num_classes=CLASSES),
    "timm EfficientNet": lambda: timm.create_model("test_efficientnet", num_classes=CLASSES),
    "timm MobileNetV3": lambda: timm.create_model("mobilenetv3_small_050", num_classes=CLASSES),
    "timm ConvNeXt": lambda: timm.create_model("test_convnext", num_classes=CLASSES),
    "timm RegNet": lambda: timm.create_model("regnetx_002", num_classes=CLASSES),
    "torchvision ResNet": lambda: torchvision.models.resnet.ResNet(
        torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=CLASSES),
    "torchvision EfficientNet": lambda: torchvision.models.efficientnet_b0(num_classes=CLASSES),
    "torchvision MobileNetV3": lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES),
    "torchvision ConvNeXt": lambda: torchvision.models.convnext.ConvNeXt(
        [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)], num_classes=CLASSES),
    "torchvision RegNet": lambda: torchvision.models.regnet_x_400mf(num_classes=CLASSES),
}
INPUTS = {"spectrogram": (2, 1, 64, 128), "roll + pitch channel": (2, 2, 88, 64)}


def _outside(model: nn.Module, paths: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if not any(k == p or k.startswith(p + ".") for p in paths)}


@pytest.mark.parametrize("family", list(SMALL))
def test_every_preset_in_every_family(family):
    torch.manual_seed(0)
    base = SMALL[family]().eval()
    paths = find_stem(base)
    body = _outside(base, paths)
    for stem in list_stems():
        for shape in INPUTS.values():
            model = copy.deepcopy(base)
            args = {"n_freq": shape[2]} if stem in ("tall", "pons") else {}
            replace_stem(model, stem, in_channels=shape[1], verbose=False, **args)
            kept = _outside(model, paths)
            assert kept.keys() == body.keys(), f"{family} {stem}: the body's layers changed"
            assert all(torch.equal(kept[k], body[k]) for k in body), f"{family} {stem}: body weights changed"
            model.train()
            out = model(torch.randn(shape))
            assert out.shape == (shape[0], CLASSES), f"{family} {stem} {shape}"
            out.sum().backward()
            assert stem_of(model).spec["name"] == stem
            assert all(p.grad is not None for p in stem_of(model).parameters())


def test_the_stem_gives_what_the_body_expects():
    """Channels and stride are adapted: EfficientNet's stem has stride 2 and 32 channels, so
    deep3 loses its max-pool and ends in 32 channels; the feature map is the native one's."""
    native = timm.create_model("efficientnet_b0", num_classes=3, in_chans=1)
    model = replace_stem(copy.deepcopy(native), "deep3", verbose=False)
    stem = stem_of(model)
    assert stem.stride == (2, 2) and stem.out_channels == 32 and not isinstance(stem, ProjectedStem)
    assert all(isinstance(model.get_submodule(p), nn.Identity) for p in ("bn1",))
    x = torch.zeros(1, 1, 64, 96)
    assert model.eval().forward_features(x).shape == native.eval().forward_features(x).shape
    assert model.audiostem_stem["replaced"] == ["conv_stem", "bn1"]
    assert model.audiostem_stem["old"]["stride"] == [2, 2] and model.audiostem_stem["old"]["channels"] == 32


def test_replace_stem_says_what_it_replaced(capsys):
    replace_stem(torchvision.models.resnet18(num_classes=2), "octave", in_channels=1)
    line = capsys.readouterr().err
    assert "replaced the stem of ResNet (conv1, bn1, relu, maxpool" in line and "by octave" in line
    replace_stem(torchvision.models.resnet18(num_classes=2), "native", in_channels=1, coord=True)
    assert "kept the stem of ResNet" in capsys.readouterr().err


def test_a_stem_of_other_channels_gets_a_projection():
    spec = {"name": "mine", "layers": [{"kernel": [5, 3], "channels": 24, "stride": 2,
                                        "pool": {"kernel": 3, "stride": 2}}]}
    model = replace_stem(torchvision.models.resnet18(num_classes=2), spec, in_channels=1, verbose=False)
    stem = stem_of(model)
    assert isinstance(stem, ProjectedStem) and stem.out_channels == 64 and stem.stem.out_channels == 24
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 2)
    # an explicit out_channels is honoured, then projected
    model = replace_stem(timm.create_model("test_convnext", num_classes=2), "patch4", in_channels=1,
                         out_channels=8, verbose=False)
    assert stem_of(model).stem.out_channels == 8 and stem_of(model).out_channels == 24


def test_module_stems():
    class Mine(nn.Module):
        out_channels, stride = 16, (4, 4)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 4, 4)

        def forward(self, x):
            return self.conv(x)

    model = replace_stem(torchvision.models.resnet18(num_classes=2), Mine(), verbose=False)
    assert isinstance(model.conv1, ProjectedStem) and model(torch.randn(1, 1, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"stride \(4, 4\) cannot replace .* stride \(2, 2\)"):
        replace_stem(torchvision.models.mobilenet_v3_small(), Mine(), verbose=False)


def test_unsupported_models_are_named():
    with pytest.raises(ValueError, match=r"VGG .*conv1 \+ bn1 \+ act1 \+ maxpool.*conv_stem \+ bn1.*stem"):
        replace_stem(torchvision.models.vgg11(), "deep3")
    with pytest.raises(ValueError, match="cannot find the stem of a Linear"):
        replace_stem(nn.Linear(3, 3), "deep3")
    with pytest.raises(ValueError, match="stride"):            # a stem cannot gain stride
        replace_stem(torchvision.models.resnet18(), {"layers": [{"kernel": 3, "channels": 64, "stride": 2}]})


def test_a_channels_last_stem_is_named_not_mismeasured():
    """torchvision's Swin embeds patches into a (batch, F, T, channels) map: its dim 1 grows with the
    input, which used to be read as 16 channels at stride 128."""
    with pytest.raises(ValueError, match=r"SwinTransformer \(features\.0\) does not give a \(batch, channels, F, "
                                         r"T\) map: its dim 1 is 16 for a 64 x 64 input and 32 for 128 x 128"):
        replace_stem(torchvision.models.swin_t(), "deep3", in_channels=1)


@pytest.mark.parametrize("stem", ["native", "deep3"])
@pytest.mark.parametrize("in_channels", [0, -1, "1", True])
def test_bad_in_channels_name_the_argument(stem, in_channels):
    with pytest.raises(ValueError, match=rf"replace_stem: in_channels must be a positive int, got {in_channels!r}"):
        replace_stem(torchvision.models.resnet18(), stem, in_channels=in_channels)


def test_the_native_stem_takes_coord_as_true_or_false_only():
    with pytest.raises(ValueError, match="stem 'native': override 'coord' must be true or false, got 1"):
        replace_stem(torchvision.models.resnet18(), "native", in_channels=1, coord=1)


def test_native_stem_sums_the_rgb_kernel_like_timm():
    rgb = torchvision.models.resnet18()
    model = replace_stem(copy.deepcopy(rgb), "native", in_channels=1, verbose=False)
    torch.testing.assert_close(model.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert isinstance(model.bn1, nn.BatchNorm2d) and model(torch.randn(1, 1, 64, 64)).shape == (1, 1000)
    # with the pitch-position channel: 2 input channels, the RGB kernel repeated and scaled by 3 / 2
    model = replace_stem(copy.deepcopy(rgb), "native", in_channels=1, coord=True, verbose=False)
    torch.testing.assert_close(model.conv1.stem.weight, rgb.conv1.weight[:, [0, 1]] * 1.5)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="native stem takes only coord"):
        replace_stem(copy.deepcopy(rgb), "native", width=8)


@pytest.mark.parametrize("body", ["timm:test_resnet", "torchvision:mobilenet_v3_small"])
@pytest.mark.parametrize("stem,args", [("native", {}), ("native", {"coord": True}), ("wide5", {"coord": True})])
def test_build_model_with_library_bodies(body, stem, args):
    model = build_model(stem, body, num_classes=4, in_channels=1, stem_overrides=args)
    model(torch.randn(2, 1, 40, 48)).sum().backward()
    assert model.audiostem_stem["new"]["stem"] == stem


def test_build_model_library_errors():
    with pytest.raises(ValueError, match="body: timm has no model 'resnet1800'"):
        build_model(body="timm:resnet1800")
    with pytest.raises(ValueError, match="body: torchvision has no classification model 'resnet7'"):
        build_model(body="torchvision:resnet7")
    with pytest.raises(ValueError, match="body: 'keras:resnet18'"):
        build_model(body="keras:resnet18")
    with pytest.raises(ValueError, match="head: a library body"):
        build_model(body="timm:test_resnet", head="freq_time")
    with pytest.raises(ValueError, match="stem: 'native' keeps a timm: or torchvision: body's own stem"):
        build_model(stem="native", body="narrow")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model(body="narrow", pretrained=True)
    with pytest.raises(ValueError, match="resnet18 takes no dropout"):
        build_model(body="torchvision:resnet18", dropout=0.2)


# --- pretrained weights: local files only ------------------------------------------------------------
@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_pretrained_weights_missing_names_where_it_looked(empty_caches):
    with pytest.raises(FileNotFoundError, match=r"no local weights for timm:resnet18 \(looked in .*hf .*timm/resnet18"
                                                r".*torch/hub/checkpoints/resnet18_a1_0-d63eafa0.pth"):
        build_model(body="timm:resnet18", pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"torch/hub/checkpoints/resnet18-f37072fd.pth"):
        build_model(body="torchvision:resnet18", pretrained=True)


@pytest.mark.parametrize("body", ["torchvision:resnet18", "timm:resnet18"])
def test_pretrained_weights_load_from_the_local_cache(empty_caches, body):
    """A checkpoint in the torch hub cache is loaded; the first conv summed to one channel, the
    classifier sized for the cache's classes."""
    library, _, name = body.partition(":")
    torch.manual_seed(1)
    source = (timm.create_model(name) if library == "timm" else torchvision.models.get_model(name))
    url = (timm.models.get_pretrained_cfg(name).url if library == "timm"
           else torchvision.models.get_model_weights(name).DEFAULT.url)
    path = empty_caches / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    assert pretrained_file(body) == path
    model = build_model("native", body, num_classes=3, in_channels=1, pretrained=True)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.out_features == 3


def test_no_network_by_default(monkeypatch):
    """Building a library body never reaches for weights unless asked."""
    import urllib.request

    def refuse(*a, **k):
        raise AssertionError("network access")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    build_model("deep3", "timm:test_resnet", num_classes=2)
    build_model("native", "torchvision:mobilenet_v3_small", num_classes=2)


# --- geometry --------------------------------------------------------------------------------------
def test_measured_geometry_matches_the_spec_arithmetic():
    """The gradient method (for bodies) agrees with the spec arithmetic (for stems) on every preset."""
    for name in list_stems():
        stem = build_stem(name)
        assert receptive_field(stem, 1) == stem.receptive_field, name
        assert output_stride(stem, 1) == stem.stride, name


def test_describe_model_whole_model():
    model = build_model("deep3", "timm:test_resnet", num_classes=4)
    d = describe_model(model, (1, 64, 128))
    assert d["stride"] == (32, 32) and d["out_shape"][1:] == (2, 4)
    assert d["stem"]["name"] == "deep3" and d["stem"]["stride"] == (4, 4)
    assert d["flops"] > d["stem"]["flops"] > 0 and d["params"] > d["stem"]["params"]
    assert d["receptive_field"][0] > d["stem"]["receptive_field"][0]
    # a native stem (layers without a spec) is measured too
    native = describe_model(build_model("native", "torchvision:resnet18", num_classes=4), (1, 64, 64),
                            receptive_field=False)
    assert native["stem"]["stride"] == (4, 4) and native["stem"]["receptive_field"] == (11, 11)
    assert native["receptive_field"] is None and native["stride"] == (32, 32)


def test_with_stride():
    for name in list_stems():
        spec = with_stride(build_stem(name).spec, (2, 2))
        assert geometry(normalize_spec(spec)["layers"])[1] == [2, 2], name
    deep = with_stride(build_stem("deep3").spec, (2, 2))
    assert all("pool" not in layer for layer in deep["layers"])        # the max-pool goes
    assert with_stride(build_stem("temporal").spec, (2, 1))["layers"][0]["pool"]["stride"] == [2, 1]
    with pytest.raises(ValueError, match=r"stride \(4, 4\) cannot be reduced to \(3, 3\)"):
        with_stride(build_stem("deep3").spec, (3, 3))


def test_public_api():
    assert audiostem.replace_stem is replace_stem and audiostem.describe_model is describe_model


# --- recipes and the training CLI ------------------------------------------------------------------
def _recipe(tmp_path, cache):
    import yaml
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "out_dir": str(tmp_path / "run"),
        "data": {"cache": str(cache), "crop_frames": 32, "eval_hop": 16, "batch_size": 8, "normalize": "global"},
        "model": {"stem": "deep3", "stem_args": {"coord": True}, "body": "narrow"},
        "train": {"max_epochs": 1},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}}))
    return path


@pytest.mark.parametrize("overrides", [["model.body=timm:test_resnet", "model.stem=octave"],
                                       ["model.body=torchvision:resnet18", "model.stem=native"]])
def test_train_cli_with_a_library_body(tmp_path, overrides):
    """python -m audiostem.train RECIPE model.body=... model.stem=... on a roll cache (88 pitches,
    with the recipe's pitch-position channel), then the checkpoint classifies again."""
    import json

    from audiostem.inference import load_classifier
    from audiostem.train import main
    from fixtures import synthetic_cache
    cache = synthetic_cache(tmp_path / "cache", per_class=6, kind="pianoroll", frames=(32, 48))
    assert main([str(_recipe(tmp_path, cache.path)), *overrides, f"out_dir={tmp_path / 'run'}"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] is not None and metrics["output_stride"] == [32, 32]
    assert metrics["stem"]["name"] == {"octave": "octave", "native": "NativeStem"}[overrides[1].split("=")[1]]
    assert metrics["stem"]["stride"] == [4, 4] and len(metrics["receptive_field"]) == 2
    model, payload = load_classifier(tmp_path / "run")
    assert model(torch.zeros(1, 1, 88, 32)).shape == (1, len(payload.classes))


@pytest.mark.parametrize("overrides,error", [
    (["model.body=timm:resnet1800"], r"model\.body: timm has no model 'resnet1800'"),
    (["model.body=narrow", "model.stem=native"], r"model\.stem: 'native' keeps a timm: or torchvision: body"),
    (["model.body=narrow", "model.pretrained=true"], r"model\.pretrained: the body 'narrow' has no pretrained"),
    (["model.body=timm:test_resnet", "model.stem=native", "model.stem_args.width=8"],
     r"model\.stem_args: stem 'native': unknown override 'width'"),
    (["model.body=timm:test_resnet", "model.head=freq_time"], r"model\.head: a library body"),
])
def test_recipe_errors_for_library_bodies(tmp_path, overrides, error):
    from audiostem.recipe import RecipeError, load_recipe
    with pytest.raises(RecipeError, match=error):
        load_recipe(_recipe(tmp_path, tmp_path / "cache"), overrides)


def test_recipe_pretrained_without_local_weights(tmp_path, empty_caches):
    from audiostem.recipe import RecipeError, load_recipe
    with pytest.raises(RecipeError, match=r"model\.pretrained: no local weights for torchvision:resnet18 "
                                          r"\(looked in .*resnet18-f37072fd\.pth\); audiostem never downloads"):
        load_recipe(_recipe(tmp_path, tmp_path / "cache"), ["model.body=torchvision:resnet18", "model.pretrained=true"])
    r = load_recipe(_recipe(tmp_path, tmp_path / "cache"), ["model.body=timm:test_resnet", "model.stem=native"])
    assert r.model.body == "timm:test_resnet" and r.model.pretrained is False
