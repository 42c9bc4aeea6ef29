"""The image classifiers of ``intradist train vision``: CIFAR-style ResNets and torchvision's, with dropout.

A ResNet has no dropout, so K train-mode passes over one batch would agree and the
intra-distillation term would be zero: :func:`build_model` adds dropout where
``--dropout-placement`` says (before the classifier, or after every ReLU module as the
reproduction's notebooks do). Dropout holds no parameters, so the state dicts stay torchvision's.
The factories here (``resnet20`` … ``resnet56``, ``reproduction_resnet50``) are what
``analyze-sensitivity --model-factory intradist.trainers.vision_models:NAME`` names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from intradist.errors import UserError
from intradist.trainers.vision_data import ImageData

#: torchvision architectures (weights=None): each has ``avgpool`` then ``fc``, where the dropout goes.
TORCHVISION_ARCHES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: CIFAR-style ResNets of He et al. (2016, section 4.2): depth 6n + 2.
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
ARCHES = TORCHVISION_ARCHES + tuple(CIFAR_DEPTHS)
#: Where ``--dropout`` goes: before the classifier, or after every ReLU module (torchvision ResNets).
DROPOUT_PLACEMENTS = ("fc", "relu")


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; a parameter-free shortcut (He et al. 2016, option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra_channels = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra_channels:  # subsample, then zero-pad the new channels
            half = self.extra_channels // 2
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2) for small images (CIFAR 32x32, digits 8x8).

    A 3x3 convolution with ``width`` (16) channels, then three stages of n basic blocks with
    ``width``, 2·``width`` and 4·``width`` channels (strides 1, 2, 2; depth = 6n + 2: ResNet-20 has
    n = 3, 0.27M parameters), global average pooling, dropout (``dropout``, see the module docstring),
    and a linear classifier. Shortcuts that change shape subsample and zero-pad (option A: no
    parameters). Names follow torchvision (``conv1``, ``bn1``, ``layer1`` … ``layer3``, ``fc``), so
    analysis groups its layers the same way.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for index, out_channels in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for block in range(blocks):
                layers.append(_BasicBlock(channels, out_channels, 2 if index > 0 and block == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def resnet20(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-20; with no arguments a 10-class model (digits, CIFAR-10) for ``--model-factory``."""
    return CifarResNet(20, num_classes, dropout=dropout)


def resnet32(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-32 (10 classes without arguments)."""
    return CifarResNet(32, num_classes, dropout=dropout)


def resnet44(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-44 (10 classes without arguments)."""
    return CifarResNet(44, num_classes, dropout=dropout)


def resnet56(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-56 (10 classes without arguments)."""
    return CifarResNet(56, num_classes, dropout=dropout)


def default_arch(data: ImageData) -> str:
    """ResNet-50, the reproduction's model; ResNet-20 for digits, whose 8x8 images a 224-pixel stem would erase."""
    return "resnet20" if data.kind == "digits" else "resnet50"


def add_dropout_after_relus(model: nn.Module, p: float) -> nn.Module:
    """Replace every ``nn.ReLU`` child by ``Sequential(ReLU, Dropout(p))``, in place (no new parameters).

    The reproduction's ``set_dropout`` (IntraSmooth.ipynb cell 5 lines 3-7) does this to torchvision's
    ResNet-50, whose only ReLU children are the stem's and each bottleneck's ``relu``; a bottleneck
    calls its ``relu`` three times, so dropout follows all three of its ReLUs.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Sequential(child, nn.Dropout(p)))
    return model


def build_model(arch: str, num_classes: int, dropout: float = 0.0, placement: str = "fc",
                fc_bias: bool = True) -> nn.Module:  # fmt: skip
    """``arch`` with ``num_classes`` outputs, randomly initialised, dropout ``dropout`` at ``placement``."""
    if placement not in DROPOUT_PLACEMENTS:
        raise UserError(f"--dropout-placement {placement}: choose one of {', '.join(DROPOUT_PLACEMENTS)}")
    if arch in CIFAR_DEPTHS:
        if placement != "fc":
            raise UserError(f"--dropout-placement {placement}: the CIFAR ResNets apply ReLU as a function; "
                            f"use fc, or a torchvision --arch ({', '.join(TORCHVISION_ARCHES)})")  # fmt: skip
        model: nn.Module = CifarResNet(CIFAR_DEPTHS[arch], num_classes, dropout=dropout)
    elif arch in TORCHVISION_ARCHES:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if placement == "fc":
            model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))  # no parameters: torchvision's state dict
        else:
            add_dropout_after_relus(model, dropout)
    else:
        raise UserError(f"--arch {arch}: unknown; choose one of {', '.join(ARCHES)}")
    if not fc_bias:  # the reproduction's classifier: nn.Linear(2048, 37, bias=False) (IntraSmooth.ipynb cell 5 line 10)
        model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
    return model


def reproduction_resnet50() -> nn.Module:
    """The reproduction study's model, for ``analyze-sensitivity --model-factory``: ResNet-50, 37 classes,
    dropout 0.1 after every ReLU, a classifier without bias (weights come from the checkpoint)."""
    return build_model("resnet50", 37, 0.1, placement="relu", fc_bias=False)
