"""Plug-in files for the tests (models/plugins.py): the README's example, a ResNet whose branches
start at zero through a learnable scalar, trained at the tiny depths the tests use."""

from __future__ import annotations

from pathlib import Path

# the README's example plug-in itself (family "scaled"): the tests train it at depth 8
SCALED = (Path(__file__).resolve().parents[1] / "experiments" / "plugins" / "scaled_residual.py").read_text()

ROWS = """
rows:
  - {model: scaled8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: scaled8, name: scaled8-s2, iterations: 20, milestones: [10], eval_every: 10, seeds: [2]}
  - {model: scaled8, name: scaled8-B, shortcut: B, iterations: 20, milestones: [10], eval_every: 10}
  - {model: scaled8, name: scaled8-lr, lr: 0.05, iterations: 20, milestones: [10], eval_every: 10}
"""


def write_plugin_experiment(folder: Path, rows: str = ROWS, plugin: str = SCALED, name: str = "mine") -> Path:
    """``folder/plugins/scaled.py`` and ``folder/<name>.yaml`` naming it: the experiment file."""
    (folder / "plugins").mkdir(parents=True, exist_ok=True)
    (folder / "plugins" / "scaled.py").write_text(plugin)
    exp = folder / f"{name}.yaml"
    exp.write_text("plugins:\n  - plugins/scaled.py\n" + rows)
    return exp


# A whole network as a plug-in (``register_family(..., builder=f)``), written as a user would:
# its own block class (not a BasicBlock), a per-channel scale on each residual branch, its own
# ``param_groups()`` (the scales without weight decay), and none of the optional methods
# (no ``response_modules()``: Figure 7 is left out of its runs, recorded, never a failure).
LSNET = """
import torch
from torch import nn
from resnet_exp.models import register_family


class ScaledBranch(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.scale = nn.Parameter(torch.full((1, planes, 1, 1), 0.1))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.scale * self.bn2(self.conv2(out)))


class LSNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(*[ScaledBranch(16) for _ in range(3 * n)])
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    def param_groups(self):
        scales = [p for n, p in self.named_parameters() if n.endswith("scale")]
        rest = [p for n, p in self.named_parameters() if not n.endswith("scale")]
        return [{"params": rest}, {"params": scales, "weight_decay_mult": 0.0}]


register_family("lsnet", builder=lambda depth, shortcut, num_classes, zero_init_residual: LSNet(depth, num_classes),
                depths=(8, 20), description="a whole network: per-channel scaled branches")
"""

# A network whose backward cannot reach its weights (its output is detached): refused before
# any data loads, naming the family.
DETACHED = """
import torch
from torch import nn
from resnet_exp.models import register_family


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).detach().requires_grad_()


register_family("detached", builder=lambda *args: Detached(), depths=(20,))
"""
