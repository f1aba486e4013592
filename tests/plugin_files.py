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
