"""The model zoo: CIFAR ResNets, miniVGGNet (DeePhi tutorial), VGG-16-BN, MobileNetV2, a small CNN.

Every zoo model is built by :func:`build_model` and carries a :class:`ModelInfo` on ``model.prunegym_info``
with its input normalization, so that data pipelines, evaluation and the deploy bundle all use the same one.
Bring-your-own models are named ``package.module:factory`` or ``path/to/file.py:factory`` (with keyword
arguments, :mod:`prunegym.core.user_models`) and get the dataset's normalization.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.errors import UserError
from prunegym.core.user_models import is_factory_spec, make_user_model

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects as input. ``mean``/``std`` are in [0, 1] pixel units; None means the dataset's own."""

    name: str
    in_channels: int
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None  # the H = W it was designed for, when it has one

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return None if self.image_size is None else (self.in_channels, self.image_size, self.image_size)


# --------------------------------------------------------------------------------------------- ResNet (CIFAR)


class PadShortcut(nn.Module):
    """He et al. 2016 option A: subsample by 2 and zero-pad the channels (parameter-free)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class PadShortcutConv(nn.Conv2d):
    """The 1×1, stride-2 convolution equal to ``PadShortcut(pad)`` on ``in_channels`` inputs (frozen).

    It stands in for a padded shortcut so that Torch-Pruning can prune the residual stream
    (:mod:`prunegym.core.pruning.shortcuts`); ``stat`` counts it like the shortcut it replaces (no MACs, no
    parameters).

    Args:
        in_channels: channels of the block's input.
        pad: zero channels added on each side (``out_channels = in_channels + 2 * pad``).
    """

    def __init__(self, in_channels: int, pad: int) -> None:
        super().__init__(in_channels, in_channels + 2 * pad, kernel_size=1, stride=2, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            idx = torch.arange(in_channels)
            self.weight[idx + pad, idx, 0, 0] = 1.0
        self.weight.requires_grad_(False)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut((planes - in_planes) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for CIFAR (depth 6n+2) with the akamaster/He et al. module names, so published weights load."""

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise UserError(f"resnet depth {depth} is not 6n+2; use 20, 32, 44, 56 or 110")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = (16, 32, 64)
        in_planes = 16
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------------------------- VGG family


def _conv_bn_relu(cin: int, cout: int, *, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MiniVGGNet(nn.Module):
    """miniVGGNet of the DeePhi/Vitis-AI CIFAR-10 tutorial (conv 32,32,pool,64,64,pool; fc 4096→512→classes).

    Its four convs total 49,053,696 "operations" in DeePhi's count (2·MACs + bias adds), i.e. 24,477,696 MACs.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 32, bias=True),
            *_conv_bn_relu(32, 32, bias=True),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            *_conv_bn_relu(32, 64, bias=True),
            *_conv_bn_relu(64, 64, bias=True),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
        )
        flat = 64 * (image_size // 4) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    """VGG-16 with BatchNorm, CIFAR variant (one 512→classes classifier after global pooling)."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += _conv_bn_relu(cin, int(v))
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --------------------------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32×32 inputs (stem stride 1 and the second stage at stride 1, as in common CIFAR ports)."""

    # (expand, out_channels, repeats, stride)
    CFG = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        cin = int(32 * width)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, cin, 3, padding=1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(inplace=True),
        ]
        for t, c, n, s in self.CFG:
            cout = int(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = 1280
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(self.dropout(out))


# --------------------------------------------------------------------------------------------- small CNN


class SmallCNN(nn.Module):
    """A small CNN for the embedded default (digits, 8×8) and quick tests; works for any input size ≥ 4."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[..., nn.Module]
    description: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int = 32


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def make(*, num_classes: int, in_channels: int) -> nn.Module:
        return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels)

    return make


ZOO: dict[str, ZooEntry] = {
    **{
        f"resnet{d}": ZooEntry(_resnet(d), f"CIFAR ResNet-{d}, padded (option A) shortcut", IMAGENET_MEAN, IMAGENET_STD)
        for d in (20, 32, 44, 56, 110)
    },
    "minivggnet": ZooEntry(MiniVGGNet, "miniVGGNet of the DeePhi CIFAR-10 tutorial"),
    "vgg16_bn": ZooEntry(VGG16BN, "VGG-16 with BatchNorm, CIFAR variant"),
    "mobilenetv2": ZooEntry(MobileNetV2, "MobileNetV2, CIFAR variant"),
    "smallcnn": ZooEntry(SmallCNN, "small 4-conv CNN (embedded default, 8×8 digits)", image_size=8),
}


def known_models() -> list[str]:
    return sorted(ZOO)


MAX_CLASSES = 100_000  # a saved model asking for more is refused before anything is allocated
MAX_IN_CHANNELS = 64


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    allow_import: bool = False,
    source: str = "--model",
) -> nn.Module:
    """Build a zoo model by name, or a bring-your-own factory (:mod:`prunegym.core.user_models`).

    The returned model has ``prunegym_info`` (:class:`ModelInfo`) set.

    Args:
        name: a zoo name, ``package.module:factory`` or ``path/to/file.py:factory``, with optional
            ``?key=value&...`` keyword arguments for the factory.
        num_classes: classes of a zoo model (1 … :data:`MAX_CLASSES`).
        in_channels: input channels of a zoo model (1 … :data:`MAX_IN_CHANNELS`).
        allow_import: import a factory that was not allowed with
            :func:`~prunegym.core.user_models.allow_factory` (the caller chose it, not a data file).
        source: where ``name`` came from (a checkpoint, a run folder), for error messages.

    Raises:
        UserError: an unknown name, counts out of range, or a factory that may not or cannot be imported.
    """
    if is_factory_spec(name):
        model = make_user_model(name, allow_import=allow_import, source=source)
        mean = std = size = None
    else:
        entry = ZOO.get(name.lower())
        if entry is None:
            where = "" if source == "--model" else f" (named by {source})"
            raise UserError(
                f"unknown model '{name}'{where}; known models: {', '.join(known_models())}, or package.module:factory"
            )
        for what, value, top in (
            ("num_classes", num_classes, MAX_CLASSES),
            ("in_channels", in_channels, MAX_IN_CHANNELS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise UserError(f"{source} asks for {what}={value!r} for {name}; prunegym accepts 1 … {top:,}")
        model = entry.factory(num_classes=num_classes, in_channels=in_channels)
        mean, std, size = entry.mean, entry.std, entry.image_size
        if mean is not None and len(mean) != in_channels:  # e.g. ImageNet statistics for a 1-channel variant
            mean = std = None
    model.prunegym_info = ModelInfo(  # type: ignore[assignment]
        name=name, in_channels=in_channels, num_classes=num_classes, mean=mean, std=std, image_size=size
    )
    return model


def model_info(model: nn.Module) -> ModelInfo | None:
    info = getattr(model, "prunegym_info", None)
    return info if isinstance(info, ModelInfo) else None
