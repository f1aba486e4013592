"""One table maps every model name to its builder: ``<family><depth>``.

    build_model("resnet56")                 # CIFAR ResNet-56, option A
    build_model("plain56")                  # its plain twin
    build_model("resnet56", shortcut="B")
    build_model("imagenet_resnet50")        # torchvision-compatible

To add a family (a new block type, say), add a row to ``FAMILIES``; nothing else
needs to change: the CLI, the experiment validator and the tests read this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from .blocks import BLOCKS, SHORTCUT_OPTIONS
from .cifar import CifarNet, blocks_per_stage
from .imagenet import IMAGENET_LAYOUTS, ImageNetNet

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


@dataclass(frozen=True)
class Family:
    prefix: str
    dataset: str                   # "cifar" (32x32, 10 classes) or "imagenet" (224x224, 1000)
    block: str | None              # key of BLOCKS; None: the depth's ImageNet layout decides
    residual: bool
    default_shortcut: str | None   # None for plain nets
    listed_depths: tuple[int, ...]  # what `python -m resnet_exp models` lists
    description: str

    @property
    def input_size(self) -> int:
        return 32 if self.dataset == "cifar" else 224

    @property
    def num_classes(self) -> int:
        return 10 if self.dataset == "cifar" else 1000

    def check_depth(self, depth: int) -> None:
        if self.dataset == "cifar":
            blocks_per_stage(depth, BLOCKS[self.block].convs_per_block)
        elif depth not in IMAGENET_LAYOUTS:
            raise ValueError(f"{self.prefix}{depth}: depth {depth} has no ImageNet layout; "
                             f"valid depths: {', '.join(map(str, IMAGENET_LAYOUTS))}")


FAMILIES: dict[str, Family] = {f.prefix: f for f in (
    Family("plain", "cifar", "basic", False, None, CIFAR_DEPTHS,
           "CIFAR plain net, 6n+2 layers (paper sec. 4.2)"),
    Family("resnet", "cifar", "basic", True, "A", CIFAR_DEPTHS,
           "CIFAR ResNet, 6n+2 layers, option A shortcuts by default"),
    Family("preresnet", "cifar", "preact", True, "A", (110, 1202),
           "CIFAR full pre-activation ResNet (Identity Mappings, ECCV 2016)"),
    Family("imagenet_plain", "imagenet", None, False, None, tuple(IMAGENET_LAYOUTS),
           "ImageNet plain net (paper Table 1)"),
    Family("imagenet_resnet", "imagenet", None, True, "B", tuple(IMAGENET_LAYOUTS),
           "ImageNet ResNet, torchvision-compatible, option B by default"),
)}

_NAME = re.compile(r"^([a-z_]+?)(\d+)$")


def parse_model_name(name: str) -> tuple[Family, int]:
    """``"resnet56"`` -> (the resnet family, 56); ValueError listing valid names."""
    m = _NAME.match(name) if isinstance(name, str) else None
    if m is None or m.group(1) not in FAMILIES:
        raise ValueError(
            f"unknown model {name!r}; valid names are <family><depth> with family one of "
            f"{', '.join(FAMILIES)} (for example resnet56, plain20, preresnet110, "
            f"imagenet_resnet50); `python -m resnet_exp models` lists them")
    family, depth = FAMILIES[m.group(1)], int(m.group(2))
    family.check_depth(depth)
    return family, depth


def resolve_shortcut(family: Family, shortcut: str | None) -> str | None:
    """The shortcut option a model will really use; errors on meaningless choices."""
    if not family.residual:
        if shortcut is not None:
            raise ValueError(f"{family.prefix} nets have no shortcuts, so shortcut={shortcut!r} "
                             "is meaningless; leave it out")
        return None
    if shortcut is None:
        return family.default_shortcut
    if shortcut not in SHORTCUT_OPTIONS:
        raise ValueError(f"unknown shortcut option {shortcut!r}; valid options: "
                         f"{', '.join(SHORTCUT_OPTIONS)} (A zero-pad, B projection where the "
                         "shape changes, C projection everywhere)")
    return shortcut


def build_model(name: str, shortcut: str | None = None, num_classes: int | None = None,
                zero_init_residual: bool = False, **unknown: Any) -> nn.Module:
    """Build a network by name. See the module docstring for examples."""
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for build_model; valid options: "
                         "shortcut, num_classes, zero_init_residual")
    family, depth = parse_model_name(name)
    option = resolve_shortcut(family, shortcut)
    classes = family.num_classes if num_classes is None else num_classes
    if family.dataset == "cifar":
        return CifarNet(BLOCKS[family.block], depth, option, classes, zero_init_residual)
    block_name, layers = IMAGENET_LAYOUTS[depth]
    return ImageNetNet(BLOCKS[block_name], layers, option, classes, zero_init_residual)


def list_models() -> list[str]:
    """Every listed model name, CIFAR first, in the order of ``FAMILIES``."""
    return [f"{f.prefix}{d}" for f in FAMILIES.values() for d in f.listed_depths]


def model_info(name: str, **options: Any) -> dict[str, Any]:
    """Depth, parameter count and forward FLOPs for one image (multiply-add = 2 FLOPs).

    The model is built on the meta device, so even ResNet-1202 costs no real compute.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    family, depth = parse_model_name(name)
    with torch.device("meta"):
        model = build_model(name, **options)
        x = torch.empty(1, 3, family.input_size, family.input_size)
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return {"name": name, "depth": depth, "family": family.prefix,
            "shortcut": resolve_shortcut(family, options.get("shortcut")),
            "params": params, "flops": counter.get_total_flops(),
            "input": f"{family.input_size}x{family.input_size}"}


def response_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the per-layer responses of the paper's Figure 7."""
    return model.response_modules()
