"""One table maps every model name to its builder: ``<family><depth>``.

    build_model("resnet56")                 # CIFAR ResNet-56, option A
    build_model("plain56")                  # its plain twin
    build_model("resnet56", shortcut="B")
    build_model("imagenet_resnet50")        # torchvision-compatible

To add a family (a new block type, say), add a row to ``FAMILIES`` (in ``names.py``); nothing else
needs to change: the CLI, the experiment validator and the tests read this table.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .blocks import BLOCKS
from .cifar import CifarNet
from .imagenet import ImageNetNet
from .names import FAMILIES, IMAGENET_LAYOUTS, SHORTCUT_OPTIONS, Family, parse_model_name, resolve_shortcut  # noqa: F401

def build_model(name: str, shortcut: str | None = None, num_classes: int | None = None,
                zero_init_residual: bool = False, **unknown: Any) -> nn.Module:
    """Build a network by name. See the module docstring for examples."""
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for build_model; valid options: "
                         "shortcut, num_classes, zero_init_residual")
    family, depth = parse_model_name(name)
    option = resolve_shortcut(family, shortcut)
    classes = family.num_classes if num_classes is None else num_classes
    if family.layout == "6n+2":
        return CifarNet(BLOCKS[family.block], depth, option, classes, zero_init_residual)
    block_name, layers = IMAGENET_LAYOUTS[depth]
    return ImageNetNet(BLOCKS[block_name], layers, option, classes, zero_init_residual,
                       cifar_stem=family.dataset == "cifar")


def list_models() -> list[str]:
    """Every listed model name, CIFAR first, in the order of ``FAMILIES``."""
    return [f.name(d) for f in FAMILIES.values() for d in f.listed_depths]


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
    return {"name": name, "depth": depth, "family": family.key,
            "shortcut": resolve_shortcut(family, options.get("shortcut")),
            "params": params, "flops": counter.get_total_flops(),
            "input": f"{family.input_size}x{family.input_size}"}


def response_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the per-layer responses of the paper's Figure 7."""
    return model.response_modules()
