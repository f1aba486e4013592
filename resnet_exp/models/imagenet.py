"""The paper's ImageNet networks (section 4.1, Table 1), torchvision-compatible.

Module names follow torchvision's ``models/resnet.py`` (conv1, bn1, layer1..4,
downsample, fc), so with the default shortcut B a ``torchvision.models.resnetXX()``
state dict loads with ``strict=True`` and gives the same outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import he_init, make_stage, zero_init_last_bn
from .names import IMAGENET_LAYOUTS  # noqa: F401  (re-exported)

STAGE_PLANES = (64, 128, 256, 512)

class ImageNetNet(nn.Module):
    """7x7/2 conv stem, 3x3/2 max-pool, four stages, global average pool, FC.

    ``cifar_stem``: a 3x3/1 conv stem and no max-pool instead, for 32x32 images (the
    "CIFAR ResNet-18" of most tutorials: 11,173,962 parameters with 10 classes)."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], shortcut: str | None,
                 num_classes: int = 1000, zero_init_residual: bool = False, cifar_stem: bool = False) -> None:
        super().__init__()
        self.conv1 = (nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False) if cifar_stem else
                      nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip(STAGE_PLANES, layers)):
            stage, in_planes = make_stage(block, in_planes, planes, n, 1 if i == 0 else 2, shortcut)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        he_init(self)
        if zero_init_residual:
            zero_init_last_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def response_modules(self) -> list[nn.Module]:
        """The BN after each 3x3 conv (and the stem), in layer order."""
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]
        return [self.bn1] + [m for b in blocks for m in b.response_modules()]
