from __future__ import annotations

import pytest
import torch

from prunegym.core.errors import UserError
from prunegym.core.models import IMAGENET_MEAN, build_model, known_models, model_info
from prunegym.core.stats import model_stats


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [("resnet20", 269_722, 40_551_040), ("resnet56", 853_018, 125_485_696)],
)
def test_cifar_resnet_counts_match_published(name: str, params: int, macs: int) -> None:
    stats = model_stats(build_model(name), input_shape=(3, 32, 32))
    assert stats.params == params
    assert stats.macs == macs


def test_resnet20_macs_by_hand() -> None:
    # stem + 3 stages of 6 convs (first conv of stages 2/3 halves the map and doubles the width) + linear
    stem = 16 * 3 * 9 * 32 * 32
    stage1 = 6 * 16 * 16 * 9 * 32 * 32
    stage2 = 32 * 16 * 9 * 16 * 16 + 5 * 32 * 32 * 9 * 16 * 16
    stage3 = 64 * 32 * 9 * 8 * 8 + 5 * 64 * 64 * 9 * 8 * 8
    assert model_stats(build_model("resnet20"), input_shape=(3, 32, 32)).macs == stem + stage1 + stage2 + stage3 + 640


def test_minivggnet_conv_operations_match_deephi_count() -> None:
    stats = model_stats(build_model("minivggnet"), input_shape=(3, 32, 32))
    convs = [layer for layer in stats.layers if layer.type == "Conv2d"]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert sum(2 * c.macs + c.bias_adds for c in convs) == 49_053_696
    fc = [layer for layer in stats.layers if layer.type == "Linear"]
    assert [(f.in_channels, f.out_channels) for f in fc] == [(4096, 512), (512, 10)]


def test_minivggnet_deephi_convention_gives_the_tutorials_weights_and_operations() -> None:
    stats = model_stats(build_model("minivggnet"), input_shape=(3, 32, 32))
    assert stats.weights("deephi") == 68_389
    assert stats.operations("deephi") == 49_053_696
    assert stats.weights("prunegym") == stats.params == 2_169_770
    assert stats.to_dict("deephi")["convention"].startswith("DeePhi")


def test_smallcnn_macs_by_hand() -> None:
    stats = model_stats(build_model("smallcnn", in_channels=1), input_shape=(1, 8, 8))
    expected = 32 * 1 * 9 * 64 + 32 * 32 * 9 * 64 + 64 * 32 * 9 * 16 + 64 * 64 * 9 * 16 + 64 * 10
    assert stats.macs == expected
    assert stats.layers[0].output_size == (32, 8, 8)


def test_mobilenetv2_depthwise_macs() -> None:
    stats = model_stats(build_model("mobilenetv2"), input_shape=(3, 32, 32))
    dw = [layer for layer in stats.layers if layer.type == "DWConv2d"]
    assert len(dw) == 17
    first = dw[0]  # 32 channels, 3×3, 32×32 output, one input channel per group
    assert first.macs == 32 * 1 * 9 * 32 * 32


@pytest.mark.parametrize("name", known_models())
def test_every_zoo_model_runs_and_carries_its_info(name: str) -> None:
    channels = 1 if name == "smallcnn" else 3
    size = 8 if name == "smallcnn" else 32
    model = build_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, channels, size, size))
    assert out.shape == (2, 7)
    info = model_info(model)
    assert info is not None and info.num_classes == 7 and info.input_shape == (channels, size, size)
    if name.startswith("resnet"):
        assert info.mean == IMAGENET_MEAN


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UserError, match="known models: minivggnet"):
        build_model("resnet57x")


def test_bring_your_own_factory() -> None:
    model = build_model("torch.nn:Identity", allow_import=True)  # code that names a factory allows it
    assert isinstance(model, torch.nn.Identity)
    with pytest.raises(UserError, match=r"cannot import module.*PYTHONPATH"):
        build_model("no_such_pkg.mod:factory", allow_import=True)


def test_stat_cli_prints_the_deephi_counts(capsys) -> None:
    import json

    from prunegym.cli.main import main

    assert main(["stat", "--model", "minivggnet", "--convention", "deephi", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["weights"], out["operations"]) == (68_389, 49_053_696)
    assert out["params"] == 2_169_770 and out["convention"].startswith("DeePhi")
