"""Building blocks shared by the CIFAR and ImageNet families.

A block is told *what* shortcut to use by the network; it never decides itself. So one
block class serves a plain net (``shortcut is None``) and a residual net (any shortcut
module), which guarantees that a plain net and its option-A ResNet have the same
layers and the same parameters, as in the paper.

To add a new block type: write a class here with the constructor
``(in_planes, planes, stride, shortcut)``, the class attributes ``expansion``,
``convs_per_block``, ``pre_activation`` and ``projection_bn``, and the methods
``response_modules()`` and ``last_bn()``; then add it to ``BLOCKS`` at the bottom of this file. The CIFAR and
ImageNet builders pick blocks from ``BLOCKS`` by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .names import BLOCK_CONVS, SHORTCUT_OPTIONS  # noqa: F401  (re-exported)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=bias)
    if bias:  # a net without BN: the bias BN's shift would have been, starting at zero
        nn.init.zeros_(conv.bias)
    return conv


def norm2d(planes: int, norm: bool = True) -> nn.Module:
    """BN after a conv, or nothing in a net without normalisation (whose convs then carry the
    bias that BN's shift would have given them)."""
    return nn.BatchNorm2d(planes) if norm else nn.Identity()


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


# --------------------------------------------------------------------------- shortcuts
class ZeroPadShortcut(nn.Module):
    """Option A: subsample by taking every ``stride``-th pixel, append zero channels.

    The input channels keep their indices; the new channels (``out - in`` of them) are
    zeros. No parameters, so a ResNet with option A has exactly its plain twin's count.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A can only grow the number of channels")
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))  # pad the channel dim at its end
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def projection(in_planes: int, out_planes: int, stride: int, with_bn: bool = True) -> nn.Sequential:
    """Options B and C: 1x1 conv (with the block's stride) + BN.

    Named like torchvision's ``downsample`` Sequential so state dicts line up.
    """
    layers: list[nn.Module] = [conv1x1(in_planes, out_planes, stride)]
    if with_bn:
        layers.append(nn.BatchNorm2d(out_planes))
    return nn.Sequential(*layers)




def make_shortcut(option: str | None, in_planes: int, out_planes: int, stride: int,
                  projection_bn: bool = True) -> nn.Module | None:
    """The shortcut for one block, or None for a plain (shortcut-free) block.

    ``nn.Identity`` where shapes match (A, B); option A zero-pads where they change,
    B projects where they change, C projects everywhere.
    """
    if option is None:
        return None
    shape_changes = stride != 1 or in_planes != out_planes
    if option == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride) if shape_changes else nn.Identity()
    if option == "B":
        return projection(in_planes, out_planes, stride, projection_bn) if shape_changes else nn.Identity()
    if option == "C":
        return projection(in_planes, out_planes, stride, projection_bn)
    raise ValueError(f"unknown shortcut option {option!r}; valid options: {', '.join(SHORTCUT_OPTIONS)}")


# --------------------------------------------------------------------------- blocks
class BasicBlock(nn.Module):
    """Two 3x3 convs, each followed by BN (the paper's CIFAR block, ResNet-18/34's block).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; with ``shortcut=None`` the
    addition is skipped and this is a layer pair of a plain net. The addition comes
    after ``bn2``, so a hook on ``bn1``/``bn2`` sees the paper's "layer response"
    (Figure 7): the BN output before ReLU and before the addition.
    """

    expansion = 1
    convs_per_block = BLOCK_CONVS["basic"]
    pre_activation = False
    projection_bn = True

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, norm: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride, bias=not norm)
        self.bn1 = norm2d(planes, norm)  # without normalisation: nn.Identity, kept as the response's module
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, bias=not norm)
        self.bn2 = norm2d(planes, norm)
        self.downsample = shortcut  # torchvision's name for the shortcut module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.relu(out)

    def response_modules(self) -> list[nn.Module]:
        return [self.bn1, self.bn2]

    def last_bn(self) -> nn.BatchNorm2d | None:
        return self.bn2 if isinstance(self.bn2, nn.BatchNorm2d) else None


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "v1.5"), 1x1 expand x4."""

    expansion = 4
    convs_per_block = BLOCK_CONVS["bottleneck"]
    pre_activation = False
    projection_bn = True

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.relu(out)

    def response_modules(self) -> list[nn.Module]:
        return [self.bn2]  # the 3x3 conv's response

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class PreActBlock(nn.Module):
    """Full pre-activation block (He et al., "Identity Mappings", ECCV 2016).

    ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)`` with nothing after the
    addition. Identity and zero-pad shortcuts take the raw input; a projection takes
    the pre-activated input, as in the authors' code. Their projections are a bare
    1x1 conv (no BN), so ``build_model`` passes ``projection_bn=False`` for this block.
    """

    expansion = 1
    convs_per_block = BLOCK_CONVS["preact"]
    pre_activation = True  # the net's stem has no BN; its head adds BN+ReLU before pooling
    projection_bn = False

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = shortcut
        self._shortcut_on_preact = isinstance(shortcut, nn.Sequential)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        if self.downsample is not None:
            out = out + self.downsample(pre if self._shortcut_on_preact else x)
        return out

    def response_modules(self) -> list[nn.Module]:
        # No BN follows a conv inside this block's output path: the response is the conv's.
        return [self.conv1, self.conv2]

    def last_bn(self) -> None:
        return None


# name -> block class. Add new block types here.
BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact": PreActBlock,
}


def make_stage(block: type[nn.Module], in_planes: int, planes: int, n: int, stride: int,
               shortcut: str | None, **block_options: Any) -> tuple[nn.Sequential, int]:
    """``n`` blocks; the first carries the stride. Returns the stage and its output width.
    ``block_options`` go to every block (``norm=False``: a net without normalisation)."""
    out_planes = planes * block.expansion
    layers = []
    for i in range(n):
        s = stride if i == 0 else 1
        sc = make_shortcut(shortcut, in_planes, out_planes, s, block.projection_bn)
        layers.append(block(in_planes, planes, s, sc, **block_options))
        in_planes = out_planes
    return nn.Sequential(*layers), in_planes


def zero_init_last_bn(model: nn.Module) -> None:
    """Make every residual branch start at zero: its block computes relu(shortcut(x))
    (or shortcut(x) for pre-activation blocks). Goyal et al. 2017; not in the paper."""
    for m in model.modules():
        if isinstance(m, tuple(BLOCKS.values())) and getattr(m, "downsample", None) is not None:
            bn = m.last_bn()
            if bn is not None:
                nn.init.zeros_(bn.weight)
            elif isinstance(getattr(m, "conv2", None), nn.Conv2d):  # pre-activation, or no BN: the last conv
                nn.init.zeros_(m.conv2.weight)


def he_init(model: nn.Module) -> None:
    """He ("MSRA") init as the paper: kaiming normal, fan_out, for convs; BN 1 and 0.

    The FC layer keeps PyTorch's default (uniform), as torchvision does.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def delta_orthogonal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Xiao et al. 2018: a kernel that is zero off its centre, whose centre tap (out x in) is a
    random (semi-)orthogonal matrix times ``gain``. A conv so initialised is, at the centre,
    an orthogonal map of the channels: it keeps the norm of every signal and every gradient."""
    out_c, in_c, kh, kw = weight.shape
    centre = torch.empty(out_c, in_c, device=weight.device, dtype=weight.dtype)
    nn.init.orthogonal_(centre, gain=gain)
    weight.zero_()
    weight[:, :, kh // 2, kw // 2] = centre
    return weight


def delta_orthogonal_init(model: nn.Module) -> None:
    """Every 3x3 conv delta-orthogonal with ReLU's gain sqrt(2) (Xiao et al. used tanh and no BN;
    here the paper's plain net keeps its BN and ReLU, so the remedy is the initialisation alone)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            delta_orthogonal_(m.weight, gain=math.sqrt(2.0))
