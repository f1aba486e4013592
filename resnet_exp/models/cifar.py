"""The paper's CIFAR-10 networks (section 4.2): 6n+2 layers on 32x32 inputs.

    stem   3x3 conv, 16 filters (+BN+ReLU), no max-pool
    stage1 2n 3x3 convs, 16 filters, 32x32 maps
    stage2 2n 3x3 convs, 32 filters, 16x16 maps (first conv has stride 2)
    stage3 2n 3x3 convs, 64 filters,  8x8 maps (first conv has stride 2)
    head   global average pool, 10-way FC

With a block of ``c`` convs the depth is ``3 * n * c + 2``: 6n+2 for the basic and
pre-activation blocks, 9n+2 for a bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv3x3, delta_orthogonal_init, he_init, make_stage, norm2d, zero_init_last_bn
from .names import blocks_per_stage

STAGE_WIDTHS = (16, 32, 64)


class CifarNet(nn.Module):
    """A plain (``shortcut=None``) or residual CIFAR-10 network of any block type.

    ``norm=False``: no BatchNorm anywhere (each BN an ``nn.Identity``, each conv with a bias);
    ``init``: "he" (the paper's), or "delta_orthogonal" (``remedies.delta_orthogonal_init``)."""

    def __init__(self, block: type[nn.Module], depth: int, shortcut: str | None,
                 num_classes: int = 10, zero_init_residual: bool = False, norm: bool = True,
                 init: str = "he") -> None:
        super().__init__()
        n = blocks_per_stage(depth, block.convs_per_block)
        self.depth = depth
        self.pre_activation = block.pre_activation
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0], bias=not norm)
        # Pre-activation nets normalise inside the first block instead of after the stem.
        self.bn1 = nn.Identity() if self.pre_activation else norm2d(STAGE_WIDTHS[0], norm)
        self.relu = nn.Identity() if self.pre_activation else nn.ReLU(inplace=True)

        in_planes = STAGE_WIDTHS[0]
        stages = []
        options = {} if norm else {"norm": False}  # the paper's blocks are called as before
        for i, width in enumerate(STAGE_WIDTHS):
            stage, in_planes = make_stage(block, in_planes, width, n, 1 if i == 0 else 2, shortcut, **options)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3 = stages

        # Pre-activation nets end with BN+ReLU, since their blocks end with a bare conv.
        self.head_bn = nn.BatchNorm2d(in_planes) if self.pre_activation else nn.Identity()
        self.head_relu = nn.ReLU(inplace=True) if self.pre_activation else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        he_init(self)
        if init == "delta_orthogonal":
            delta_orthogonal_init(self)
        elif init != "he":
            raise ValueError(f"unknown init {init!r}; valid: he, delta_orthogonal")
        if zero_init_residual:
            zero_init_last_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.head_relu(self.head_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def response_modules(self) -> list[nn.Module]:
        """One module per 3x3 conv layer, in layer order, whose output is that layer's
        response as the paper's Figure 7 measures it (BN output, before the ReLU and
        before the addition). Register forward hooks on these."""
        stem = [self.conv1] if self.pre_activation else [self.bn1]
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]
        return stem + [m for b in blocks for m in b.response_modules()]

