"""Model names without torch: the table of families, depths and shortcut options.

Validating an experiment row needs only this module, so a bad row is reported in well
under a second, before torch is imported. ``registry.py`` builds the networks.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

SHORTCUT_OPTIONS = ("A", "B", "C")

# block name -> convs per block (the block classes in blocks.py read their count from here;
# ``registry.register_block`` adds a row for a block registered later, a plug-in's too)
BLOCK_CONVS: dict[str, int] = {"basic": 2, "bottleneck": 3, "preact": 2,
                               "highway": 2, "skipinit": 2, "rezero": 2, "fixup": 2, "looks_linear": 2}

# depth -> (block name, blocks per stage): the rows of the paper's Table 1.
IMAGENET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def blocks_per_stage(depth: int, convs_per_block: int) -> int:
    """n for a depth, or ValueError naming the valid depths."""
    per_n = 3 * convs_per_block
    if depth < per_n + 2 or (depth - 2) % per_n:
        examples = ", ".join(str(per_n * n + 2) for n in (1, 3, 5, 7, 9, 18, 200))
        raise ValueError(
            f"depth {depth} is not {per_n}n+2 for this block type; valid depths are "
            f"{per_n}n+2 for n >= 1: {examples}, ...")
    return (depth - 2) // per_n


CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
REMEDY_DEPTHS = (20, 32, 44, 56, 110)
BUILT_IN = "built-in"


@dataclass(frozen=True)
class Family:
    prefix: str
    dataset: str                   # "cifar" (32x32, 10 classes) or "imagenet" (224x224, 1000)
    block: str | None              # key of BLOCKS; None: the depth's ImageNet layout decides
    residual: bool
    default_shortcut: str | None   # None for plain nets
    listed_depths: tuple[int, ...]  # what `python -m resnet_exp models` lists
    description: str
    # "6n+2": the paper's CIFAR nets (3 stages of 16/32/64); "four-stage": the ImageNet
    # layout of Table 1 (64/128/256/512), with the ImageNet stem or, on CIFAR, a 3x3 one
    layout: str = "6n+2"
    suffix: str = ""               # names are <prefix><depth><suffix>: resnet18_cifar
    # the 6n+2 net's options (``cifar.CifarNet``: norm, init), as (name, value) pairs
    options: tuple[tuple[str, Any], ...] = ()
    # a whole-network builder instead of CifarNet: a name in ``remedies.NET_BUILDERS`` or a
    # plug-in's callable, called as builder(depth, shortcut, num_classes, zero_init_residual)
    builder: str | Callable[..., Any] | None = None
    origin: str = BUILT_IN         # "built-in", or the plug-in that registered it (``plugin_origin``)

    @property
    def key(self) -> str:
        """The family's name in tables and reports (``resnet``, ``resnet_cifar``, ...)."""
        return self.prefix + self.suffix

    def name(self, depth: int) -> str:
        return f"{self.prefix}{depth}{self.suffix}"

    @property
    def input_size(self) -> int:
        return 32 if self.dataset == "cifar" else 224

    @property
    def num_classes(self) -> int:
        return 10 if self.dataset == "cifar" else 1000

    def check_depth(self, depth: int) -> None:
        if self.layout == "6n+2":
            blocks_per_stage(depth, BLOCK_CONVS[self.block])
        elif depth not in IMAGENET_LAYOUTS:
            raise ValueError(f"{self.name(depth)}: depth {depth} has no four-stage (ImageNet) layout; "
                             f"valid depths: {', '.join(map(str, IMAGENET_LAYOUTS))}")


FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("plain", "cifar", "basic", False, None, CIFAR_DEPTHS,
           "CIFAR plain net, 6n+2 layers (paper sec. 4.2)"),
    Family("resnet", "cifar", "basic", True, "A", CIFAR_DEPTHS,
           "CIFAR ResNet, 6n+2 layers, option A shortcuts by default"),
    Family("preresnet", "cifar", "preact", True, "A", (110, 1202),
           "CIFAR full pre-activation ResNet (Identity Mappings, ECCV 2016)"),
    # The "CIFAR ResNet-18" of most tutorials: Table 1's four stages (64/128/256/512 channels)
    # behind a 3x3 stem with no max-pool, on 32x32 images; B projections where the shape changes.
    Family("resnet", "cifar", None, True, "B", (18,),
           "ImageNet-layout ResNet on CIFAR (3x3 stem, no max-pool; the tutorials' ResNet-18)",
           layout="four-stage", suffix="_cifar"),
    Family("plain", "cifar", None, False, None, (18,),
           "plain twin of resnet18_cifar", layout="four-stage", suffix="_cifar"),
    Family("imagenet_plain", "imagenet", None, False, None, tuple(IMAGENET_LAYOUTS),
           "ImageNet plain net (paper Table 1)", layout="four-stage"),
    Family("imagenet_resnet", "imagenet", None, True, "B", tuple(IMAGENET_LAYOUTS),
           "ImageNet ResNet, torchvision-compatible, option B by default", layout="four-stage"),
    # The published remedies for degradation (models/remedies.py; docs/plugins.md, "Remedies").
    Family("highway", "cifar", "highway", True, "A", REMEDY_DEPTHS,
           "Highway gates on the shortcut, gate bias -2 (Srivastava et al. 2015)"),
    Family("fixup", "cifar", "fixup", True, "A", REMEDY_DEPTHS,
           "Fixup: residual net without normalisation (Zhang, Dauphin, Ma, ICLR 2019)", builder="fixup"),
    Family("skipinit", "cifar", "skipinit", True, "A", REMEDY_DEPTHS,
           "SkipInit: no normalisation, a scalar at 0 on each branch (De & Smith 2020)", options=(("norm", False),)),
    Family("rezero", "cifar", "rezero", True, "A", REMEDY_DEPTHS,
           "ReZero: a scalar at 0 on each branch, BN kept (Bachlechner et al. 2020)"),
    Family("plain", "cifar", "basic", False, None, REMEDY_DEPTHS,
           "plain net, delta-orthogonal initialisation (Xiao et al., ICML 2018)",
           suffix="_deltaorth", options=(("init", "delta_orthogonal"),)),
    Family("plain", "cifar", "looks_linear", False, None, REMEDY_DEPTHS,
           "plain net, CReLU and looks-linear initialisation (Balduzzi et al., ICML 2017)",
           suffix="_looklinear", builder="looks_linear"),
    Family("plain", "cifar", "basic", False, None, REMEDY_DEPTHS,
           "plain net without BatchNorm (convs with biases)", suffix="_nobn", options=(("norm", False),)),
    Family("resnet", "cifar", "basic", True, "A", REMEDY_DEPTHS,
           "CIFAR ResNet without BatchNorm (convs with biases)", suffix="_nobn", options=(("norm", False),)),
)}

# Where each block came from: "built-in", or the plug-in that registered it (by its content,
# "sha256:<hex>": the same text read from two paths is one plug-in); and each origin in words.
BLOCK_ORIGINS: dict[str, str] = {name: BUILT_IN for name in BLOCK_CONVS}
ORIGIN_LABELS: dict[str, str] = {BUILT_IN: BUILT_IN}
_origin = [BUILT_IN]


@contextmanager
def plugin_origin(origin: str, label: str) -> Iterator[None]:
    """While a plug-in is imported: what it registers is recorded as coming from ``origin``."""
    ORIGIN_LABELS.setdefault(origin, label)
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()


def current_origin() -> str:
    return _origin[-1]


def origin_label(origin: str) -> str:
    """An origin in words: "built-in", or "plug-in <path> (sha256 ...)"."""
    return ORIGIN_LABELS.get(origin, origin)


_NAME = re.compile(r"^([a-z_]+?)(\d+)(_[a-z]+)?$")


def parse_model_name(name: str) -> tuple[Family, int]:
    """``"resnet56"`` -> (the resnet family, 56); ValueError listing valid names."""
    m = _NAME.match(name) if isinstance(name, str) else None
    if m is None or (m.group(1) + (m.group(3) or "")) not in FAMILIES:
        raise ValueError(
            f"unknown model {name!r}; valid names are <family><depth> with family one of "
            f"{', '.join(f.name(0).replace('0', '<depth>') if f.suffix else f.prefix for f in FAMILIES.values())} "
            "(for example resnet56, plain20, preresnet110, resnet18_cifar, imagenet_resnet50); "
            "`python -m resnet_exp models` lists them")
    family, depth = FAMILIES[m.group(1) + (m.group(3) or "")], int(m.group(2))
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
