"""One table maps every model name to its builder: ``<family><depth>``.

    build_model("resnet56")                 # CIFAR ResNet-56, option A
    build_model("plain56")                  # its plain twin
    build_model("resnet56", shortcut="B")
    build_model("fixup56")                  # a remedy (models/remedies.py)
    build_model("imagenet_resnet50")        # torchvision-compatible

The table is ``names.FAMILIES``; the blocks are ``blocks.BLOCKS``. Built-in families and a
user's own (a plug-in: ``plugins.py``) register the same way, through ``register_block``
and ``register_family``; the CLI, the experiment validator and the tests read the tables::

    @register_block("scaled")
    class ScaledBlock(BasicBlock): ...

    register_family("scaled", block="scaled", description="a branch scaled by a learnable scalar")
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .blocks import BLOCKS
from .cifar import CifarNet
from .imagenet import ImageNetNet
from .names import (BLOCK_CONVS, BLOCK_ORIGINS, BUILT_IN, FAMILIES, IMAGENET_LAYOUTS, REMEDY_DEPTHS,  # noqa: F401
                    SHORTCUT_OPTIONS, Family, current_origin, origin_label, parse_model_name, resolve_shortcut)
from .remedies import NET_BUILDERS, REMEDY_BLOCKS

NAME_PREFIX_CHARS = "abcdefghijklmnopqrstuvwxyz_"


class RegistryError(ValueError):
    """A block or family that cannot be registered (a clash, a malformed name)."""


def register_block(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Decorator: register a block class under ``name`` for families to use. The class takes
    ``(in_planes, planes, stride, shortcut)`` (``shortcut`` None in a plain net) and has
    ``expansion``, ``convs_per_block``, ``pre_activation``, ``projection_bn``,
    ``response_modules()`` and ``last_bn()``: subclassing ``BasicBlock`` gives them all."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if name in BLOCKS and BLOCKS[name] is not cls:
            raise RegistryError(f"block {name!r} is already registered by {origin_label(BLOCK_ORIGINS.get(name, BUILT_IN))}; "
                                "choose another name")
        for attr in ("expansion", "convs_per_block", "pre_activation", "projection_bn"):
            if not hasattr(cls, attr):
                raise RegistryError(f"block {name!r} ({cls.__name__}) lacks the class attribute {attr!r} "
                                    "(subclass resnet_exp.models.BasicBlock to inherit them)")
        BLOCKS[name] = cls
        BLOCK_CONVS[name] = cls.convs_per_block
        BLOCK_ORIGINS[name] = current_origin()
        return cls

    return register


def register_family(prefix: str, block: str | None = None, *, builder: Callable[..., nn.Module] | None = None,
                    residual: bool = True, default_shortcut: str | None = "A",
                    depths: tuple[int, ...] = REMEDY_DEPTHS, description: str = "", suffix: str = "",
                    options: dict[str, Any] | None = None) -> Family:
    """Register a CIFAR-10 family: models ``<prefix><depth><suffix>``, 6n+2 layers (with a
    2-conv block). Either ``block`` (a registered block name: the paper's CIFAR net built
    with it, ``options`` going to ``CifarNet``: ``norm``, ``init``) or ``builder``, a
    function ``builder(depth, shortcut, num_classes, zero_init_residual) -> nn.Module``
    (``block`` then names the block whose conv count gives the valid depths, default basic).
    Plain families: ``residual=False``."""
    key = prefix + suffix
    if not prefix or any(c not in NAME_PREFIX_CHARS for c in prefix) \
            or (suffix and (suffix[0] != "_" or any(c not in NAME_PREFIX_CHARS for c in suffix[1:]))):
        raise RegistryError(f"family {key!r}: a prefix of lowercase letters and _ (and a suffix _<letters>), "
                            "so that <prefix><depth><suffix> names it (e.g. scaled56)")
    if key in FAMILIES:
        raise RegistryError(f"family {key!r} is already registered by {origin_label(FAMILIES[key].origin)}; "
                            "choose another name")
    block = block or "basic"
    if block not in BLOCKS:
        raise RegistryError(f"family {key!r}: unknown block {block!r}; registered blocks: {', '.join(BLOCKS)}")
    family = Family(prefix, "cifar", block, residual, default_shortcut if residual else None, tuple(depths),
                    description, suffix=suffix, options=tuple((options or {}).items()), builder=builder,
                    origin=current_origin())
    for depth in family.listed_depths:
        family.check_depth(depth)
    FAMILIES[key] = family
    return family


for _name, _cls in REMEDY_BLOCKS.items():  # the built-in remedies register like a plug-in's block
    register_block(_name)(_cls)


def build_model(name: str, shortcut: str | None = None, num_classes: int | None = None,
                zero_init_residual: bool = False, **unknown: Any) -> nn.Module:
    """Build a network by name. See the module docstring for examples."""
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for build_model; valid options: "
                         "shortcut, num_classes, zero_init_residual")
    family, depth = parse_model_name(name)
    option = resolve_shortcut(family, shortcut)
    classes = family.num_classes if num_classes is None else num_classes
    if family.builder is not None:
        build = NET_BUILDERS[family.builder] if isinstance(family.builder, str) else family.builder
        return build(depth, option, classes, zero_init_residual)
    if family.layout == "6n+2":
        return CifarNet(BLOCKS[family.block], depth, option, classes, zero_init_residual, **dict(family.options))
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
