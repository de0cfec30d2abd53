"""The model zoo: every Table 1 model builds, trains a step at any resolution, and is counted exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from haet.cli import main
from haet.models import ModelError, build, input_size, list_models
from haet.models.cost import count, model_cost

TABLE1 = [
    "RegNetX_200MF",
    "ShuffleNetV2",
    "EfficientNetB0_CIFAR",
    "MobileNetV2",
    "GoogLeNet",
    "DenseNet121",
    "ResNet18",
    "SENet18",
    "DPN92",
    "PreActResNet18",
    "ResNet110",
    "ShuffleNetG2",
    "ResNeXt29_2x64d",
    "MobileNet",
    "VGG19",
    "ResNet50",
    "SimpleDLA",
]


ALL_MODELS = [*TABLE1, "EfficientNetB0"]  # and Tan & Le's EfficientNet-B0, named apart from the screened one


def test_registry_holds_table1_in_order():
    assert list_models() == ALL_MODELS


# The CIFAR collection's counts at 32x32, 10 classes (protocol-facts: kuangliu/pytorch-cifar at 49b7aa9, conv and
# linear MACs as torch's FlopCounterMode counts them); ResNet110: He et al.'s CIFAR ResNet as commonly implemented.
COLLECTION_COUNTS = {
    "RegNetX_200MF": (2_321_946, 223_317_600),
    "ShuffleNetV2": (1_263_854, 45_002_112),
    "EfficientNetB0_CIFAR": (3_599_686, 30_331_392),
    "MobileNetV2": (2_296_922, 91_154_944),
    "GoogLeNet": (6_166_250, 1_521_756_160),
    "DenseNet121": (6_956_298, 888_350_720),
    "ResNet18": (11_173_962, 555_422_720),
    "SENet18": (11_260_354, 555_509_760),
    "DPN92": (34_236_634, 2_042_422_272),
    "PreActResNet18": (11_171_146, 555_422_720),
    "ResNet110": (1_727_962, 252_887_680),
    "ShuffleNetG2": (887_582, 39_614_080),
    "ResNeXt29_2x64d": (9_128_778, 1_409_492_992),
    "MobileNet": (3_217_226, 46_354_432),
    "VGG19": (20_040_522, 398_136_320),
    "ResNet50": (23_520_842, 1_297_829_888),
    "SimpleDLA": (15_142_970, 913_495_040),
}


@pytest.mark.parametrize("name", TABLE1)
def test_every_table1_model_has_the_collections_parameters_and_macs(name):
    model = build(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    params = sum(parameter.numel() for parameter in model.parameters())
    assert (params, counter.get_total_flops() // 2) == COLLECTION_COUNTS[name]
    assert (model_cost(name).params, model_cost(name).macs) == COLLECTION_COUNTS[name]  # what tables and NAS use


def test_a_stride_2_mobilenetv2_block_has_no_shortcut_and_a_stride_1_block_projects_when_channels_change():
    blocks = [module for module in build("MobileNetV2").modules() if type(module).__name__ == "InvertedResidual"]
    strides = [next(m for m in block.body if isinstance(m, nn.Conv2d) and m.groups > 1).stride[0] for block in blocks]
    assert strides.count(2) == 3 and all(b.shortcut is None for b, s in zip(blocks, strides, strict=True) if s == 2)
    assert all(block.shortcut is not None for block, stride in zip(blocks, strides, strict=True) if stride == 1)


def test_the_screened_efficientnet_keeps_the_collections_quirks_and_tan_and_le_s_does_not():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    collection, tan_le = build("EfficientNetB0_CIFAR").eval(), build("EfficientNetB0").eval()
    assert torch.equal(collection(images), collection(images))  # 2020-05-06 on: dropout off at evaluation
    assert torch.equal(tan_le(images), tan_le(images))
    assert collection.linear.in_features == 320 and tan_le.linear.in_features == 1280  # no 1280 head
    first = collection.features[3]  # expansion 1: its expansion conv is built and never run
    assert first.skip_expand and first.expand[0].weight.shape == (32, 32, 1, 1)
    assert first.se_reduce.out_channels == 8  # a quarter of its 32 input channels


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("input_px", [32, 37])
def test_every_model_trains_a_step_at_any_resolution(name, input_px):
    torch.manual_seed(0)
    model = build(name, num_classes=7, width=0.25)
    images = torch.randn(2, 3, input_px, input_px)
    logits = model(images)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    first_layer = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_layer.weight.grad is not None and first_layer.weight.grad.abs().sum() > 0


def test_cifar_resnet18_reference_counts():
    cost = model_cost("ResNet18")
    assert cost.params == 11_173_962
    assert cost.macs == 555_422_720  # conv + linear
    assert cost.thop_macs == 556_651_520  # what thop reports: it also counts BatchNorm


def test_paper_nas_resnet18_has_22_percent_fewer_macs_and_47_percent_fewer_parameters():
    baseline = model_cost("ResNet18")
    nas = model_cost("ResNet18", depth=1.0, width=0.73, input_px=input_size(1.18))
    assert input_size(1.18) == 37
    assert round(100 * (1 - nas.macs / baseline.macs)) == 22
    assert round(100 * (1 - nas.params / baseline.params)) == 47


@pytest.mark.parametrize("name", ALL_MODELS)
def test_hook_count_agrees_with_torch_flop_counter(name):
    """No convolution or matrix product escapes the hooks (torch counts 2 FLOPs per MAC)."""
    model = build(name, width=0.5)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert model_cost(name, width=0.5).macs * 2 == counter.get_total_flops()


@pytest.mark.parametrize("name", ["ResNet18", "SENet18", "PreActResNet18"])
def test_paper_scaling_of_the_searched_resnets(name):
    model = build(name, depth=1.0, width=0.67)
    stage_widths = sorted(
        {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    )
    assert stage_widths == [43, 86, 172, 343]  # round(64*0.67), round(128*0.67), ...
    blocks = lambda m: len(m.layers)  # noqa: E731
    assert blocks(build(name, depth=0.25)) == 4  # round(2*0.25) = 0, at least 1 a stage
    assert blocks(build(name, depth=1.5)) == 12  # round(2*1.5) = 3 a stage
    assert blocks(build(name, depth=2.2)) == 16  # round(4.4) = 4


def test_senet18_uses_the_authors_initialisation():
    model = build("SENet18")
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    conv = model.conv1  # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * 9))
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01


def test_cost_counts_a_built_model_too():
    assert count(build("ResNet18"), 32).macs == 555_422_720


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "ResNet19"}, r"unknown model 'ResNet19'; did you mean ResNet18"),
        ({"name": "ResNet18", "width": 0}, r"width multiplier must be a positive number"),
        ({"name": "ResNet18", "depth": -1.0}, r"depth multiplier must be a positive number"),
        ({"name": "ResNet18", "width": float("nan")}, r"width multiplier must be a positive number"),
        ({"name": "ResNet18", "width": 0.005}, r"width 0.005 leaves a layer of 64 channels with 0"),
        ({"name": "GoogLeNet", "depth": 2.0}, r"GoogLeNet has no depth multiplier"),
        ({"name": "ResNet18", "num_classes": 0}, r"num_classes must be a positive integer"),
    ],
)
def test_impossible_requests_are_refused(kwargs, message):
    with pytest.raises(ModelError, match=message):
        build(**kwargs)


def test_resolutions_below_8_pixels_are_refused():
    with pytest.raises(ModelError, match=r"gives 6x6 inputs; the smallest allowed is 8x8"):
        input_size(0.2)


def test_models_cli_prints_the_zoo_and_one_scaled_model(capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in TABLE1) and "555,422,720" in table
    assert main(["models", "ResNet18", "--width", "0.73", "--resolution", "1.18"]) == 0
    assert "21.8% fewer MACs, 46.6% fewer parameters" in capsys.readouterr().out
    assert main(["models", "SENet18", "--width", "0.001"]) == 2
