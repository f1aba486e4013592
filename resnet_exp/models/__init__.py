"""Network builders. Start at ``registry.py``: one table maps every name to a builder.

- ``blocks.py``   block types (``BLOCKS``) and shortcut options A/B/C
- ``cifar.py``    the paper's 6n+2-layer CIFAR-10 networks
- ``imagenet.py`` the paper's ImageNet networks, torchvision-compatible
"""

from .blocks import BLOCKS, SHORTCUT_OPTIONS
from .registry import (FAMILIES, build_model, list_models, model_info, parse_model_name,
                       resolve_shortcut, response_modules)

__all__ = ["BLOCKS", "SHORTCUT_OPTIONS", "FAMILIES", "build_model", "list_models", "model_info",
           "parse_model_name", "resolve_shortcut", "response_modules"]
