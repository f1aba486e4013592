"""The published remedies for degradation, beside the paper's plain and residual nets.

Each is a block (registered in ``blocks.BLOCKS``) or an initialisation of the paper's CIFAR net
(``cifar.CifarNet``), named as a family in ``names.FAMILIES`` so that depth, shortcut option
and seed combine with it as with the paper's nets (``highway56``, ``fixup110``,
``plain56_deltaorth``). What makes each that remedy is its initial state, tested in
tests/test_remedies.py. Deviations from each paper are stated where they are made.

- ``HighwayBlock``: Srivastava, Greff, Schmidhuber, "Training Very Deep Networks", NeurIPS 2015.
- ``FixupBlock`` / ``FixupNet``: Zhang, Dauphin, Ma, "Fixup Initialization: Residual Learning
  Without Normalization", ICLR 2019.
- ``SkipInitBlock``: De, Smith, "Batch Normalization Biases Residual Blocks Towards the Identity
  Function in Deep Networks", NeurIPS 2020.
- ``ReZeroBlock``: Bachlechner, Majumder, Mao, Cottrell, McAuley, "ReZero is All You Need: Fast
  Convergence at Large Depth", 2020 (arXiv:2003.04887).
- ``delta_orthogonal_``: Xiao, Bahri, Sohl-Dickstein, Schoenholz, Pennington, "Dynamical Isometry
  and a Mean Field Theory of CNNs", ICML 2018.
- ``LooksLinearNet``: Balduzzi, Frean, Leary, Lewis, Ma, McWilliams, "The Shattered Gradients
  Problem: If resnets are the answer, then what is the question?", ICML 2017.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BasicBlock, conv3x3, delta_orthogonal_, he_init
from .cifar import STAGE_WIDTHS, CifarNet


# --------------------------------------------------------------------------- blocks
class HighwayBlock(BasicBlock):
    """A highway layer pair: ``T(x) * H(x) + (1 - T(x)) * shortcut(x)``, with H the paper's two
    3x3 convs (BN, ReLU) and T a sigmoid transform gate (a 1x1 conv with the block's stride, one
    gate per channel and pixel). The gate's bias starts negative (``GATE_BIAS``), so each block
    starts by mostly carrying its input (Srivastava et al. 2015, sec. 2.2: "-1, -3 etc."; we
    take -2 at every depth). Deviations: the carry path is the paper's option-A shortcut where
    the shape changes (Srivastava et al. used no stride inside highway layers), and the gate is
    a 1x1 conv (theirs was a conv of the layer's kernel size), to keep parameters close to the
    paper's nets."""

    GATE_BIAS = -2.0

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 norm: bool = True) -> None:
        if shortcut is None:
            raise ValueError("a highway block needs a shortcut to carry its input: use a residual family")
        super().__init__(in_planes, planes, stride, shortcut, norm)
        self.gate = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)
        nn.init.constant_(self.gate.bias, self.GATE_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        t = torch.sigmoid(self.gate(x))
        return t * h + (1 - t) * self.downsample(x)


class SkipInitBlock(BasicBlock):
    """De & Smith 2020: no normalisation; a learnable scalar ``alpha`` at 0 multiplies the
    residual branch, so every block starts as ``relu(shortcut(x))``, the identity on the
    non-negative inputs it receives. Deviation: the paper's convs without BN carry biases here
    (BN's shift is gone), and the ReLU after the addition of the paper's CIFAR net stays."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 norm: bool = False) -> None:
        if shortcut is None:
            raise ValueError("SkipInit scales a residual branch: use a residual family")
        super().__init__(in_planes, planes, stride, shortcut, norm=norm)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(self.downsample(x) + self.alpha * branch)


class ReZeroBlock(BasicBlock):
    """Bachlechner et al. 2020: ``x_{i+1} = x_i + alpha_i F(x_i)`` with a learnable scalar
    ``alpha`` at 0, F the paper's branch with its BN kept (their ResNet-56 on CIFAR-10: 6.38 %
    test error against 7.74 % without, as cited in issue 43). We follow the paper's formula
    literally: no ReLU after the addition (their CIFAR code was not at hand to confirm the
    placement; a ReLU there would change nothing at initialisation, where inputs are >= 0)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 norm: bool = True) -> None:
        if shortcut is None:
            raise ValueError("ReZero scales a residual branch: use a residual family")
        super().__init__(in_planes, planes, stride, shortcut, norm)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.downsample(x) + self.alpha * branch


class FixupBlock(nn.Module):
    """Zhang et al. 2019, their CIFAR block: no normalisation; a scalar bias before each conv
    and activation, a scalar multiplier (at 1) at the end of the branch; the branch's last conv
    starts at zero (``FixupNet`` initialises), so every block starts as ``relu(shortcut(x))``.
    The shortcut where the shape changes sees ``x + bias1a``, as in their code."""

    expansion = 1
    convs_per_block = 2
    pre_activation = False
    projection_bn = False

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 norm: bool = False) -> None:
        super().__init__()
        if shortcut is None or norm:
            raise ValueError("Fixup is for residual nets without normalisation: use a residual family")
        self.bias1a = nn.Parameter(torch.zeros(()))
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bias1b = nn.Parameter(torch.zeros(()))
        self.relu = nn.ReLU(inplace=True)
        self.bias2a = nn.Parameter(torch.zeros(()))
        self.conv2 = conv3x3(planes, planes)
        self.scale = nn.Parameter(torch.ones(()))
        self.bias2b = nn.Parameter(torch.zeros(()))
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        identity = x if isinstance(self.downsample, nn.Identity) else self.downsample(x + self.bias1a)
        return self.relu(out + identity)

    def response_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]  # no BN: a layer's response is its conv's output

    def last_bn(self) -> None:
        return None


class CReLU(nn.Module):
    """Concatenated ReLU, ``[relu(x), relu(-x)]`` along the channels: twice the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


class LooksLinearBlock(BasicBlock):
    """A plain layer pair on CReLU features: each conv reads the 2x channels a CReLU gives and
    is followed by BN and a CReLU (``LooksLinearNet`` mirrors its weights)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None,
                 norm: bool = True) -> None:
        if shortcut is not None:
            raise ValueError("the looks-linear net has no shortcuts: use a plain family")
        super().__init__(in_planes, planes, stride, None, norm)
        self.conv1 = conv3x3(2 * in_planes, planes, stride, bias=not norm)
        self.conv2 = conv3x3(2 * planes, planes, bias=not norm)
        self.relu = CReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


# --------------------------------------------------------------------------- networks
def _mirror_(weight: torch.Tensor, half: torch.Tensor) -> None:
    """Looks-linear: a layer on CReLU features [relu(z), relu(-z)] with weights [W, -W] computes
    W relu(z) - W relu(-z) = W z, a linear map of z."""
    n = half.shape[1]
    weight[:, :n] = half
    weight[:, n:] = -half


class LooksLinearNet(CifarNet):
    """Balduzzi et al. 2017: the paper's plain net with CReLU instead of ReLU and mirrored
    ("looks-linear") weights, so that at initialisation the whole net is linear in its input
    (up to BN's affine maps) and its gradients do not shatter with depth; each half-kernel is
    delta-orthogonal (gain 1: a linear net). Twice the input channels per conv, so about twice
    the parameters of plain nets of the same depth. Deviation: the paper's BN is kept after
    every conv."""

    def __init__(self, depth: int, shortcut: str | None = None, num_classes: int = 10,
                 zero_init_residual: bool = False) -> None:
        super().__init__(LooksLinearBlock, depth, shortcut, num_classes, zero_init_residual)
        self.relu = CReLU()
        self.fc = nn.Linear(2 * STAGE_WIDTHS[-1], num_classes)
        with torch.no_grad():
            delta_orthogonal_(self.conv1.weight)  # the image, not CReLU features
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m is not self.conv1:
                    half = torch.empty(m.out_channels, m.in_channels // 2, *m.kernel_size)
                    _mirror_(m.weight, delta_orthogonal_(half))
            fc_half = torch.empty(num_classes, STAGE_WIDTHS[-1])
            nn.init.kaiming_uniform_(fc_half, a=math.sqrt(5))  # nn.Linear's own init, mirrored
            _mirror_(self.fc.weight, fc_half)
            nn.init.zeros_(self.fc.bias)


class FixupNet(CifarNet):
    """Zhang et al. 2019's CIFAR ResNet: the paper's layout without BN; a scalar bias after the
    stem conv and before the classifier; each branch's first conv He-initialised and scaled by
    L^(-1/(2m-2)) = L^(-1/2) (L residual branches, m = 2 layers each), its last conv and the
    classifier at zero. Its reference code trains the scalar biases and multipliers at a tenth
    of the learning rate (``param_groups``). Deviations: the paper's CIFAR runs add mixup and
    train 200 epochs; here the suite's recipe applies (weight decay on every parameter, as
    their code does, at the recipe's rate)."""

    SCALAR_LR = 0.1  # their cifar train.py: biases and scales at base_lr / 10

    def __init__(self, depth: int, shortcut: str | None = "A", num_classes: int = 10,
                 zero_init_residual: bool = False) -> None:
        super().__init__(FixupBlock, depth, shortcut, num_classes, zero_init_residual=False, norm=False)
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0])  # no bias: the scalar bias1 follows
        self.bias1 = nn.Parameter(torch.zeros(()))
        self.bias2 = nn.Parameter(torch.zeros(()))
        he_init(self)
        blocks = [m for m in self.modules() if isinstance(m, FixupBlock)]
        with torch.no_grad():
            for b in blocks:
                b.conv1.weight.mul_(len(blocks) ** -0.5)
                nn.init.zeros_(b.conv2.weight)
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x) + self.bias1)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1) + self.bias2)

    def response_modules(self) -> list[nn.Module]:
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]
        return [self.conv1] + [m for b in blocks for m in b.response_modules()]

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups: scalar biases and multipliers at ``SCALAR_LR`` times the rate."""
        scalars = [p for p in self.parameters() if p.ndim == 0]
        ids = {id(p) for p in scalars}
        return [{"params": [p for p in self.parameters() if id(p) not in ids]},
                {"params": scalars, "lr_mult": self.SCALAR_LR}]


def fixup_net(depth: int, shortcut: str | None, num_classes: int, zero_init_residual: bool = False) -> nn.Module:
    return FixupNet(depth, shortcut, num_classes)


def looks_linear_net(depth: int, shortcut: str | None, num_classes: int, zero_init_residual: bool = False) -> nn.Module:
    return LooksLinearNet(depth, shortcut, num_classes)


# name -> whole-network builder, for families whose net is not CifarNet with a block
NET_BUILDERS = {"fixup": fixup_net, "looks_linear": looks_linear_net}
REMEDY_BLOCKS = {"highway": HighwayBlock, "skipinit": SkipInitBlock, "rezero": ReZeroBlock,
                 "fixup": FixupBlock, "looks_linear": LooksLinearBlock}
