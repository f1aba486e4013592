"""A user's own model checked once, before any data loads: everything the suite will later
call on it, on its smallest depth and a batch of random images on the CPU.

What the suite needs from a model (docs/plugins.md has the same table):

    required  forward: a batch of 3x32x32 images -> 10 logits each
              backward and an SGD step: the loss reaches its weights
              the optimiser's parameter groups (``param_groups()`` / ``no_weight_decay()``,
              when the model offers them, name each parameter exactly once)
    optional  the layer signals (signals.py): they work from any module's conv, fc and BN layers
              Figure 7's responses: ``response_modules()``

A required part that fails is a ``PluginError`` naming the family, the part and the error:
the invocation stops before the data loads and nothing trains. An optional part that fails
is named in one line: the runs train, and that analysis is left out of each (recorded in
meta.json's ``analyses_skipped``; ``callbacks.call_hook``).

``models.plugins`` already builds each family on the meta device when the plug-in loads
(shape only, no compute); this is the check with numbers, which needs the training step
and so lives here, above the models.
"""

from __future__ import annotations

from typing import Callable

import torch

from ...models import build_model
from ...models.names import BUILT_IN, FAMILIES, Family, origin_label
from ...models.plugins import PluginError
from ..planning.experiments import Recipe
from .responses import layer_response_stds
from .signals import LayerProbe
from .step import make_optimizer, make_train_step

BATCH = 4  # images: enough for BN's batch statistics, a few milliseconds at depth 20


def plugin_families() -> list[Family]:
    """Every family a plug-in registered in this process."""
    return [f for f in FAMILIES.values() if f.origin != BUILT_IN]


def check_model(name: str, recipe: Recipe) -> list[str]:
    """Put model ``name`` through every part the suite calls (see the module docstring).
    Raises PluginError for a required part; returns one line per optional part it lacks."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.arange(BATCH) % 10

    def required(part: str, call: Callable[[], object]) -> object:
        try:
            return call()
        except Exception as e:
            raise PluginError(f"{name}: {part} fails: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                              " (docs/plugins.md: what the suite needs from a model)") from None

    model = required("building it", lambda: build_model(name))
    optimizer = required("the optimiser's parameter groups", lambda: make_optimizer(model, recipe, torch.device("cpu")))
    loss, _ = required("a forward and backward pass with an SGD step",
                       lambda: make_train_step(model, optimizer)(x, y))  # type: ignore[misc]
    if not torch.isfinite(loss):
        raise PluginError(f"{name}: the loss of its first step on random images is {loss.item()}")
    if not any(p.grad is not None for p in model.parameters()):
        raise PluginError(f"{name}: the backward pass reaches none of its weights: nothing would train")

    missing = []
    try:
        probe = LayerProbe(model)
        if not probe.names:
            raise ValueError("no conv or fc layer found")
        probe.measure(model, x, y)
    except Exception as e:
        missing.append(f"layer signals: {type(e).__name__}: {e}")
    if not callable(getattr(model, "response_modules", None)):
        missing.append("Figure 7's responses: no response_modules() (optional)")
    else:
        try:
            layer_response_stds(model, x)
        except Exception as e:
            missing.append(f"Figure 7's responses: {type(e).__name__}: {e}")
    return missing


def check_plugin_families(recipe: Recipe, origins: set[str] | None = None) -> list[str]:
    """Check every family a plug-in registered (those of ``origins`` alone, when given: the
    plug-ins of the selected runs), at its smallest depth. Raises PluginError
    (naming the family) for the first that cannot train; returns the lines to print for the
    analyses each will leave out."""
    lines = []
    for family in plugin_families():
        if origins is not None and family.origin not in origins:
            continue
        name = family.name(min(family.listed_depths))
        try:
            missing = check_model(name, recipe)
        except PluginError as e:
            raise PluginError(f"family {family.key!r} ({origin_label(family.origin)}): {e}") from None
        lines += [f"family {family.key!r}: {m}; its runs train without it" for m in missing]
    return lines
