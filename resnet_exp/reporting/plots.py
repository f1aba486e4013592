"""Drawing helpers shared by the notebooks: the paper's figure style in one place.

Figure 6 style: dashed lines training error, bold lines test error, x in iterations
(1e4), y in %, one colour per depth in every panel.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .paper import DEPTH_COLORS
from .results import Results, depth_summary
from ..runs.rundir import RunStatus

sns.set_theme(style="whitegrid", context="notebook")
_FALLBACK = sns.color_palette("tab10")


def color_for(depth: int, i: int = 0) -> str:
    return DEPTH_COLORS.get(depth, _FALLBACK[i % len(_FALLBACK)])


def label_for(run: pd.Series) -> str:
    family = {"plain": "plain", "resnet": "ResNet", "preresnet": "pre-act ResNet"}.get(run["family"], run["family"])
    text = run["name"] if run["name"] != run["model"] else f"{family}-{run['depth']}"
    if run["status"] != RunStatus.FINISHED.value:
        text += f" ({run['status']}, {run['iteration']}/{run['iterations']} it)"
    return text


def draw_runs(ax: plt.Axes, res: Results, names: list[str], curves: tuple[str, ...] = ("train", "test"),
              styles: dict[str, dict] | None = None, colors: dict[str, str] | None = None,
              not_run_hint: str = "", reference: dict[str, pd.DataFrame] | None = None) -> list[str]:
    """Error against iterations for the named rows, paper style. A row with several seeds
    is drawn as their mean with a band from the lowest to the highest seed (min-max). A
    panel with nothing to draw says "not run" inside it, with ``not_run_hint`` (the command).
    ``reference`` (``reference.reference_curves``): the committed reference's mean curve of a
    row, drawn thin, grey and dashed beside yours.

    Returns the names that have no run (drawn nowhere; the caller lists them)."""
    styles = styles or {"train": dict(linestyle="--", linewidth=1.0), "test": dict(linestyle="-", linewidth=2.2)}
    missing = []
    several = res.runs["schedule"].nunique() > 1 if len(res.runs) else False
    for i, name in enumerate(names):
        runs = res.runs[res.runs["name"] == name]
        if not len(runs):
            missing.append(name)
            continue
        first = runs.iloc[0]
        color = (colors or {}).get(name) or color_for(first["depth"], i)
        # each schedule its own lines (seeds of two schedules are never one mean); the second and
        # later ones fainter, each labelled with its schedule
        for k, (schedule, sruns) in enumerate(runs.groupby("schedule", sort=False)):
            logs = res.logs[res.logs["run"].isin(sruns["run"])]
            if not len(logs):
                continue
            n = sruns["run"].nunique()
            tag = f" [{schedule}]" if several else ""
            for curve in curves:
                by_it = logs.groupby("iteration")[f"{curve}_error"]
                x = by_it.mean().index / 1e4
                label = None
                if curve == curves[-1]:
                    label = label_for(first) + tag if n == 1 else \
                        f"{label_for(first)}{tag} (mean of {n} seeds, band: min-max)"
                style = {**styles[curve], "alpha": styles[curve].get("alpha", 1.0) * (0.45 if k else 1.0)}
                ax.plot(x, by_it.mean().values, color=color, label=label, **style)
                if n > 1:
                    ax.fill_between(x, by_it.min().values, by_it.max().values, color=color, alpha=0.15, linewidth=0)
        logs = res.logs[res.logs["run"].isin(runs["run"])]
        if reference and name in reference:
            ref = reference[name]
            for curve in curves:
                ax.plot(ref["iteration"] / 1e4, ref[f"{curve}_error"], color="#888", linewidth=0.9,
                        linestyle=(0, (4, 2)) if curve == "test" else (0, (1, 2)),
                        label=f"reference {name} ({int(ref['seeds'].iloc[0])} seeds)" if curve == curves[-1] else None)
        for _, run in runs.iterrows():  # mark where an unfinished run stops
            log = logs[logs["run"] == run["run"]]
            if run["status"] != RunStatus.FINISHED.value and len(log):
                ax.plot(log["iteration"].iloc[-1] / 1e4, log["test_error"].iloc[-1], "x", color=color, ms=10, mew=2)
    ax.set_xlabel("iter. (1e4)")
    ax.set_ylabel("error (%)")
    if not ax.lines:
        import textwrap

        # wrapped by hand to the panel's width (matplotlib's wrap= wraps to the figure, so a long
        # command ran over the axis labels), and no axis labels on an empty panel
        text = f"not run: {', '.join(names)}" + (f"\n{not_run_hint}" if not_run_hint else "")
        ax.text(0.5, 0.5, "\n".join(textwrap.fill(t, 36) for t in text.split("\n")), transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="#555", clip_on=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
        return missing
    _ylim(ax, res, names)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return missing


def grid(n: int, width: float = 5.5, height: float = 4.3, cols: int = 3) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels in rows of at most ``cols``: readable at any number of panels (one row of
    six shrank every legend past reading); the unused cells of the last row hidden."""
    rows, cols = -(-n // cols), min(n, cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ylim(ax: plt.Axes, res: Results, names: list[str]) -> None:
    """0-20 % as the paper where our errors fit, else up to what the curves need after
    their first tenth (the first evaluations are near 90 % and would flatten the rest)."""
    logs = res.logs[res.logs["run"].isin(res.runs.loc[res.runs["name"].isin(names), "run"])]
    if not len(logs):
        return
    late = logs[logs["iteration"] >= logs["iteration"].max() * 0.1]
    top = max(late["test_error"].max(), late["train_error"].max()) * 1.1
    ax.set_ylim(0, 20 if top <= 20 else min(100, top))


def curve_legend_note() -> str:
    return "Dashed lines: training error (mean mini-batch error since the previous point); bold lines: test error."


def depth_figure(res: Results) -> tuple[plt.Figure, pd.DataFrame]:
    """Final training and test error against depth, plain nets and ResNets."""
    t = depth_summary(res.runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, split in zip(axes, ("train", "test")):
        for family, color, marker in (("plain", "#d62728", "o"), ("resnet", "#1f77b4", "s")):
            d = t[t["family"] == family]
            if not len(d):
                continue
            ax.errorbar(d["depth"], d[f"{split}_mean"], yerr=d[f"{split}_std"].fillna(0), color=color,
                        marker=marker, capsize=4, linewidth=2,
                        label="plain" if family == "plain" else "ResNet (option A)")
        ax.set_xscale("log")
        ax.set_xticks([20, 32, 44, 56, 110])
        ax.set_xticklabels(["20", "32", "44", "56", "110"])
        ax.minorticks_off()
        ax.set_xlabel("depth (layers)")
        ax.set_ylabel(f"final {split}ing error (%)" if split == "train" else "final test error (%)")
        ax.set_title("training error" if split == "train" else "test error")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig, t


def draw_responses(top: plt.Axes, bottom: plt.Axes, resp: pd.DataFrame) -> None:
    """Figure 7: each net's layer response std in layer order (top) and sorted (bottom);
    plain nets dashed, ResNets solid, one colour per depth as in every figure."""
    from .results import responses_by_name

    by = responses_by_name(resp)
    for i, (name, g) in enumerate(by.groupby("name", sort=False)):
        first = g.iloc[0]
        style = dict(color=color_for(int(first["depth"]), i), linestyle="--" if first["family"] == "plain" else "-",
                     linewidth=1.6, label=f"{'plain' if first['family'] == 'plain' else 'ResNet'}-{first['depth']}")
        top.plot(g["layer"], g["std"], **style)
        bottom.plot(range(1, len(g) + 1), sorted(g["std"], reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        # log scale: plain-56's early layers reach std ~15 and would squash every ResNet curve
        ax.set_yscale("log")
        ax.set_ylabel("std (log scale)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


SIGNAL_QUANTITIES = {
    "grad_norm": "weight-gradient norm",
    "relative_update": "relative update (gradient / weight norm)",
    "response_std": "forward signal (BN-output std)",
}


def draw_signal_profile(ax: plt.Axes, run: pd.DataFrame, column: str, points: dict[str, int]) -> None:
    """One net's per-layer ``column`` against depth (layer index) at a few recorded points,
    log scale; darker is later."""
    colors = sns.color_palette("viridis", len(points))
    for (label, it), color in zip(points.items(), colors):
        p = run[(run["iteration"] == it)].sort_values("layer")
        ax.plot(p["layer"], p[column], color=color, linewidth=1.5, marker=".", markersize=4, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input -> output)")
    ax.set_ylabel(SIGNAL_QUANTITIES[column])
    ax.legend(fontsize=7, title="iteration", title_fontsize=7)


def draw_first_last(ax: plt.Axes, signals: pd.DataFrame) -> None:
    """Over training, the first block's gradient norm over the last block's, one line per net
    (plain dashed, ResNets solid, colours by depth); 1 means the same size."""
    from .signals import first_last_ratio

    for i, (name, run) in enumerate(signals.groupby("name", sort=False)):
        first = run.iloc[0]
        for j, (_, seed_run) in enumerate(run.groupby("run", sort=False)):
            r = first_last_ratio(seed_run)
            ax.plot(r["iteration"], r["ratio"], color=color_for(int(first["depth"]), i), marker=".",
                    linestyle="--" if first["family"] == "plain" else "-", linewidth=1.4,
                    label=name if j == 0 else None)
    ax.axhline(1.0, color="#999", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration (symlog: the early points spread out)")
    ax.set_ylabel("first block / last block gradient norm")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def draw_sweep(ax: plt.Axes, points: pd.DataFrame, baseline: pd.DataFrame | None = None) -> None:
    """One swept key of one row: final error against the swept value, mean over seeds with
    min-max error bars, test bold and training dashed; the baseline's mean as a grey line."""
    for metric, style in (("test", dict(linestyle="-", linewidth=2.0)), ("train", dict(linestyle="--", linewidth=1.2))):
        d = points[points["metric"] == metric].sort_values("value")
        if not len(d):
            continue
        x = d["value"].astype(float)
        ax.errorbar(x, d["mean"], yerr=[d["mean"] - d["min"], d["max"] - d["mean"]], marker="o", capsize=4,
                    label=f"{metric} error (mean, bars: min-max over seeds)", **style)
        if baseline is not None and len(b := baseline[baseline["metric"] == metric]):
            ax.axhline(float(b["mean"].iloc[0]), color="#888888", alpha=0.7, **style,
                       label=f"baseline {metric} ({int(b['seeds'].iloc[0])} seeds)")
    key = points["key"].iloc[0] if len(points) else ""
    ax.set_xlabel(key)
    ax.set_ylabel("final error (%)")
    if key == "lr":
        ax.set_xscale("log")
    ax.legend(fontsize=7)


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> Path:
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
