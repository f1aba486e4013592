"""Your own block as a plug-in (docs/plugins.md): each residual branch scaled by a
learnable scalar that starts at 0, so every block starts as the identity, without weight
decay on the scalar. Used by experiments/plugin_example.yaml."""
import torch
from torch import nn

from resnet_exp.models import BasicBlock, register_block, register_family


@register_block("scaled")
class ScaledBlock(BasicBlock):
    def __init__(self, in_planes, planes, stride=1, shortcut=None):
        super().__init__(in_planes, planes, stride, shortcut)
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(self.downsample(x) + self.scale * branch)

    def no_weight_decay(self):
        return {"scale"}


register_family("scaled", block="scaled", description="ResNet, each branch times a learnable scalar at 0 (a plug-in)")
