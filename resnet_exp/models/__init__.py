"""Network builders. Start at ``registry.py``: one table maps every name to a builder.

- ``names.py``    model names, families, depths, shortcut options (no torch: fast checks)
- ``blocks.py``   block types (``BLOCKS``) and shortcut options A/B/C
- ``cifar.py``    the paper's 6n+2-layer CIFAR-10 networks
- ``remedies.py`` the published remedies for degradation (Highway, Fixup, SkipInit, ReZero, ...)
- ``plugins.py``  a user's own blocks and families, from an experiment file's ``plugins:``
- ``imagenet.py`` the paper's ImageNet networks, torchvision-compatible

The builders import torch on first use (PEP 562), so ``parse_model_name`` and the
experiment validator answer without it.
"""

from typing import Any

from .names import FAMILIES, SHORTCUT_OPTIONS, parse_model_name, resolve_shortcut

# BLOCKS through the registry: importing it registers the built-in remedies' blocks
_LAZY = {"BLOCKS": ".registry", "BasicBlock": ".blocks", "build_model": ".registry", "list_models": ".registry",
         "model_info": ".registry", "response_modules": ".registry", "register_block": ".registry",
         "register_family": ".registry"}

__all__ = ["BLOCKS", "BasicBlock", "SHORTCUT_OPTIONS", "FAMILIES", "build_model", "list_models", "model_info",
           "parse_model_name", "register_block", "register_family", "resolve_shortcut", "response_modules"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
