"""Why plain nets degrade: the layer signals of ``signals.csv``, read back and judged.

The paper (Sec. 4.1) says the degradation of deep plain nets "is unlikely to be caused by
vanishing gradients": trained with BN, their forward signals have non-zero variance and
their backward gradients "exhibit healthy norms". Claim **C8** checks that on the plain
nets' recorded signals, with two rules fixed here, before anyone looks at a result:

- **forward**: at every recorded point after initialisation, every layer's response std
  (its BN output over the probe batch) is at least ``RESPONSE_FLOOR`` = 0.01: two orders of
  magnitude below the unit std that BN gives every layer at initialisation. A vanishing
  forward signal is one that has shrunk by that much.
- **backward**: at every recorded point after initialisation, no BN-normalised layer's
  *relative update* (gradient norm / weight norm) is smaller than the largest one's by more
  than ``BACKWARD_FACTOR`` = 100 (two orders of magnitude). The BN-normalised layers are every
  conv; the classifier (the last layer, fc) is not followed by BN, so the argument below
  does not apply to it: it is reported (in the sentences and figures), not judged.

Why the relative update and not the raw gradient norm: under BN a conv's output does not
depend on the scale of its weights (BN divides it out), so the loss gradient with respect
to a weight scales as 1 / ||W||, and SGD moves the weight's direction, the only thing
that matters to the net, by about lr * ||grad|| / ||W|| per step. A layer whose weights
grew (plain-56's early layers do) has a small raw gradient and still learns; a layer
whose relative update is 100x smaller than another's has effectively stopped learning.
That is what "vanishing" means for training, and what the claim is about. The raw
gradient norms are reported beside it (their worst ratio), so a reader can judge both,
and so is the ratio at initialisation (a fact, not part of the verdict): with BN the
gradients of a deep plain net *explode* toward the input at initialisation (Yang et al.,
ICLR 2019), which the paper's sentence does not address.
"""

from __future__ import annotations

from dataclasses import dataclass
import pandas as pd

from ..runs.rundir import RunDir, RunStatus
from .results import Results, unique_runs

RESPONSE_FLOOR = 0.01
BACKWARD_FACTOR = 100.0

SIGNAL_COLUMNS = ["run", "name", "family", "depth", "seed", "iteration", "layer", "layer_name", "grad_norm",
                  "weight_norm", "response_std", "relative_update"]
HOW_TO_GET = ("Every run trained by this version records its layer signals (signals.csv); runs trained "
              "before that have none. Train them into a new results folder, for example "
              "`python -m resnet_exp run experiments/figure1.yaml experiments/figure6.yaml --only plain20 "
              "plain56 resnet20 resnet56 --results results-signals`, or read the committed reference "
              "(`python -m resnet_exp report --results reports/reference/quick64/results --out /tmp/r`).")


def load_signals(res: Results, names: list[str] | None = None) -> pd.DataFrame:
    """Every recorded point of every finished run (of these row names), one row per
    (run, iteration, layer), with the relative update gradient norm / weight norm."""
    runs = res.runs[res.runs["status"] == RunStatus.FINISHED.value] if len(res.runs) else res.runs
    if names is not None and len(runs):
        runs = runs[runs["name"].isin(names)]
    frames = []
    for r in unique_runs(runs).itertuples() if len(runs) else []:
        rows = RunDir(res.results_dir / r.run).read_signals()
        if rows:
            d = pd.DataFrame(rows).rename(columns={"name": "layer_name"})
            frames.append(d.assign(run=r.run, name=r.name, family=r.family, depth=r.depth, seed=r.seed))
    if not frames:
        return pd.DataFrame(columns=SIGNAL_COLUMNS)
    d = pd.concat(frames, ignore_index=True)
    d["relative_update"] = d["grad_norm"] / d["weight_norm"]
    return d[SIGNAL_COLUMNS]


def runs_without_signals(res: Results) -> list[str]:
    done = unique_runs(res.runs[res.runs["status"] == RunStatus.FINISHED.value]) if len(res.runs) else res.runs
    return [r.run for r in done.itertuples() if not RunDir(res.results_dir / r.run).signals_path.exists()]


# --------------------------------------------------------------------------- measures
@dataclass(frozen=True)
class Spread:
    """The largest over the smallest value of a quantity across layers at one point."""

    ratio: float
    iteration: int
    largest: str
    smallest: str

    def show(self) -> str:
        return f"{self.ratio:,.0f}x at iteration {self.iteration:,} ({_short(self.largest)} / {_short(self.smallest)})"


def _short(name: str) -> str:
    return name.removesuffix(".weight")


def spread_at(point: pd.DataFrame, column: str) -> Spread:
    big, small = point.loc[point[column].idxmax()], point.loc[point[column].idxmin()]
    ratio = float(big[column] / small[column]) if small[column] > 0 else float("inf")
    return Spread(ratio, int(point["iteration"].iloc[0]), big["layer_name"], small["layer_name"])


def worst_spread(run: pd.DataFrame, column: str, after_init: bool = True) -> Spread | None:
    pts = run[run["iteration"] > 0] if after_init else run
    spreads = [spread_at(p, column) for _, p in pts.groupby("iteration")]
    return max(spreads, key=lambda s: s.ratio) if spreads else None


def block_of(layer_name: str) -> str | None:
    """``layer2.3`` for ``layer2.3.conv1.weight``: a residual (or plain) block of the CIFAR
    nets; None for the stem and the head."""
    parts = layer_name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[0].startswith("layer") else None


def first_last_ratio(run: pd.DataFrame, column: str = "grad_norm") -> pd.DataFrame:
    """Over training: the first block's gradient norm over the last block's (a block's norm:
    of all its layers' weights together). Nets without blocks: first layer over last."""
    rows = []
    for it, p in run.groupby("iteration"):
        blocks = p.assign(block=p["layer_name"].map(block_of)).dropna(subset=["block"])
        if len(blocks):
            order = list(dict.fromkeys(blocks["block"]))
            norm = blocks.groupby("block")[column].apply(lambda v: float((v ** 2).sum() ** 0.5))
            first, last = norm[order[0]], norm[order[-1]]
        else:
            p = p.sort_values("layer")
            first, last = p[column].iloc[0], p[column].iloc[-1]
        # 0/0 where every branch starts at zero (Fixup, SkipInit, ReZero: no branch weight has a gradient yet)
        rows.append({"iteration": it, "ratio": first / last if last > 0 else float("nan") if first == 0 else float("inf")})
    return pd.DataFrame(rows, columns=["iteration", "ratio"])


@dataclass(frozen=True)
class Judgement:
    """C8 on one run's signals: both rules, with the numbers behind them."""

    run: str
    name: str
    weakest_response: tuple[float, int, str]   # (std, iteration, layer) after initialisation
    worst_relative: Spread | None
    worst_raw: Spread | None
    init_raw: Spread | None                    # a fact: the spread at initialisation
    init_first_last: float | None              # first block's gradient norm / last block's at iteration 0
    seed: int | None = None

    @property
    def label(self) -> str:
        """How the evidence names the run: several seeds of a net are told apart."""
        return self.name if self.seed is None else f"{self.name} seed {self.seed}"

    @property
    def forward_ok(self) -> bool:
        return self.weakest_response[0] >= RESPONSE_FLOOR

    @property
    def backward_ok(self) -> bool:
        return self.worst_relative is not None and self.worst_relative.ratio <= BACKWARD_FACTOR

    @property
    def holds(self) -> bool:
        return self.forward_ok and self.backward_ok

    def evidence(self) -> str:
        std, it, layer = self.weakest_response
        parts = [f"{self.label}: weakest forward signal {std:.3g} ({_short(layer)}, iteration {it:,}; floor "
                 f"{RESPONSE_FLOOR})"]
        if self.worst_relative:
            parts.append(f"conv layers' relative updates within {self.worst_relative.show()} "
                         f"(limit {BACKWARD_FACTOR:.0f}x)")
        if self.worst_raw:
            parts.append(f"their raw gradient norms within {self.worst_raw.show()}")
        return ", ".join(parts)

    def init_fact(self) -> str | None:
        if self.init_first_last is None:
            return None
        r = self.init_first_last
        way = "exploding toward the input" if r > 1 else "shrinking toward the input"
        return f"{self.label}: first block's gradient norm {r:,.3g}x the last block's ({way})"


def normalised_layers(run: pd.DataFrame) -> pd.DataFrame:
    """The layers under BN: all but the classifier (the last layer, which no BN follows)."""
    return run[run["layer"] < run["layer"].max()] if run["layer"].nunique() > 1 else run


def judge_run(run: pd.DataFrame) -> Judgement | None:
    """Both rules of C8 on one run's signals; None without a point after initialisation."""
    after = run[run["iteration"] > 0]
    if not len(after):
        return None
    convs = normalised_layers(run)
    weakest = after.loc[after["response_std"].idxmin()]
    init = run[run["iteration"] == 0]
    ratio = first_last_ratio(init) if len(init) else None
    return Judgement(str(run["run"].iloc[0]), str(run["name"].iloc[0]),
                     (float(weakest["response_std"]), int(weakest["iteration"]), str(weakest["layer_name"])),
                     worst_spread(convs, "relative_update"), worst_spread(convs, "grad_norm"),
                     spread_at(init, "grad_norm") if len(init) else None,
                     float(ratio["ratio"].iloc[0]) if ratio is not None and len(ratio) else None,
                     int(run["seed"].iloc[0]) if "seed" in run and pd.notna(run["seed"].iloc[0]) else None)


def judge_all(signals: pd.DataFrame) -> list[Judgement]:
    return [j for _, run in signals.groupby("run", sort=False) if (j := judge_run(run)) is not None]


def net_sentence(run: pd.DataFrame) -> str:
    """A sentence per net, computed: the largest ratio between any two layers' gradient
    norms at initialisation and at the end."""
    name = run["name"].iloc[0]
    first, last = run["iteration"].min(), run["iteration"].max()
    a = spread_at(run[run["iteration"] == first], "grad_norm")
    b = spread_at(run[run["iteration"] == last], "grad_norm")
    c = spread_at(run[run["iteration"] == last], "relative_update")
    when = "initialisation" if first == 0 else f"iteration {first:,} (the first recorded)"
    return (f"**{name}**: at {when} the largest layer gradient norm is {a.ratio:,.0f}x the smallest "
            f"({_short(a.largest)} / {_short(a.smallest)}); at the end (iteration {last:,}) {b.ratio:,.0f}x "
            f"({_short(b.largest)} / {_short(b.smallest)}), and {c.ratio:,.0f}x in relative update.")


def points_to_draw(run: pd.DataFrame) -> dict[str, int]:
    """Initialisation, early (the first point after 0), mid and end of training."""
    its = sorted(run["iteration"].unique())
    if not its:
        return {}
    chosen = {"initialisation" if its[0] == 0 else f"first ({its[0]})": its[0]}
    later = [i for i in its if i > its[0]]
    if later:
        chosen[f"early ({later[0]})"] = later[0]
        mid = min(later, key=lambda i: abs(i - its[-1] / 2))
        if mid not in chosen.values():
            chosen[f"mid ({mid})"] = mid
        if its[-1] not in chosen.values():
            chosen[f"end ({its[-1]})"] = its[-1]
    return chosen


def pairs(signals: pd.DataFrame) -> list[tuple[str, str]]:
    """(plain, ResNet) row names with signals at the same depth, 20 and 56 first."""
    have = set(signals["name"])
    depths = sorted({int(d) for d in signals["depth"]}, key=lambda d: (d not in (20, 56), d))
    return [(f"plain{d}", f"resnet{d}") for d in depths if f"plain{d}" in have and f"resnet{d}" in have]
