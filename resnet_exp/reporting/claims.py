"""The paper's claims, checked on the finished runs of a results folder.

For each claim the verdict is one of ``holds``, ``does not hold``, ``within noise`` (the
difference that decides it is smaller than the spread over seeds) or ``cannot be checked``
(naming the runs that are missing), with the numbers behind it. Everything is computed
from the logs (the final line of each finished run's log.csv, and responses.csv for
Figure 7); nothing is written by hand. The index page, ``python -m resnet_exp claims``,
the end of ``./run_all.sh`` and the Figure 7 report all read this module.

Which runs count: finished runs of the plain nets and the option-A ResNets under their own
names (``plain56``, ``resnet56``: the rows of figure1/figure6/table6, not ablation rows that
change the recipe), from the profile with the most such runs. Several seeds of a net are
compared by their means; a difference smaller than the larger of the two nets' standard
deviations over seeds is "within noise". With one seed a side there is no noise estimate,
and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from ..runs.planning.ladder import REPO, Rung
from ..runs.rundir import RunStatus
from .paper import TABLE6_MEAN_STD, TABLE6_TEST_ERROR
from .results import Results, load_responses, load_results, unique_runs

HOLDS, FAILS, NOISE, UNCHECKED = "holds", "does not hold", "within noise", "cannot be checked"

PLAIN_DEPTHS = (20, 32, 44, 56, 110)
RESNET_DEPTHS = (20, 32, 44, 56, 110)
# compared when present, never listed as missing: the paper does not draw plain-110 (an ablation row here)
NOT_IN_FIGURE6 = {"plain110"}
# The only spread the paper publishes for CIFAR-10 (ResNet-110, 5 runs); C7 uses it for every
# depth, two standard deviations either side (where ~95 % of single runs would fall).
PAPER_STD = TABLE6_MEAN_STD["resnet110"][1]
C7_TOLERANCE = 2 * PAPER_STD
PAPER_ITERATIONS = 64_000
# The paper's "under 0.1 % training error" for ResNet-1202.
C5_TRAIN_ERROR = 0.1


@dataclass(frozen=True)
class Net:
    """A network's final errors over its finished seeds."""

    name: str
    train: float
    test: float
    train_std: float | None
    test_std: float | None
    seeds: int
    digits: int = 2

    def show(self, metric: str) -> str:
        mean, std = (self.train, self.train_std) if metric == "train" else (self.test, self.test_std)
        d = self.digits
        return f"{self.name} {mean:.{d}f}" + (f" +- {std:.{d}f} ({self.seeds} seeds)" if std is not None else "")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str            # what the paper claims
    verdict: str         # HOLDS, FAILS, NOISE or UNCHECKED
    evidence: str        # the numbers behind the verdict, in words
    missing: list[str] = field(default_factory=list)  # runs that would make it checkable (or complete)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- comparisons
@dataclass(frozen=True)
class Comparison:
    """Is ``a`` above ``b`` (the way the claim says), beyond the noise?"""

    text: str
    verdict: str  # HOLDS, FAILS or NOISE


def above(a: Net, b: Net, metric: str) -> Comparison:
    """The claim "a has the higher ``metric`` error than b", judged on the means."""
    x, y = (a.train, b.train) if metric == "train" else (a.test, b.test)
    stds = [s for s in ((a.train_std, b.train_std) if metric == "train" else (a.test_std, b.test_std))
            if s is not None]
    noise = max(stds) if stds else None
    diff = x - y
    sign = ">" if diff > 0 else "<" if diff < 0 else "="
    text = f"{a.show(metric)} {sign} {b.show(metric)}"
    if noise is not None and abs(diff) < noise:
        return Comparison(f"{text} (difference {diff:+.2f} within the seed spread {noise:.2f})", NOISE)
    return Comparison(text, HOLDS if diff > 0 else FAILS)


def combine(parts: list[Comparison]) -> str:
    """Every part holds: holds. Any part clearly the other way: does not hold. Else within noise."""
    verdicts = {p.verdict for p in parts}
    if FAILS in verdicts:
        return FAILS
    return NOISE if NOISE in verdicts else HOLDS


def _noise_note(nets: list[Net]) -> str:
    return " (one seed each: no estimate of the noise)" if nets and all(n.seeds < 2 for n in nets) else ""


# --------------------------------------------------------------------------- the runs
def finished_nets(res: Results) -> tuple[dict[str, Net], str | None, list[str]]:
    """Plain nets and option-A ResNets under their own names, finished, from the schedule
    (profile and precision, ``results.schedule_of``) with the most of them: (name -> Net, that
    schedule, notes on what was left aside). Seeds of two schedules are never one net's."""
    runs = res.runs
    if not len(runs):
        return {}, None, []
    keep = ((runs["status"] == RunStatus.FINISHED.value) & (runs["name"] == runs["model"])
            & runs["family"].isin(["plain", "resnet"]) & runs["shortcut"].isin([None, "A"]))
    runs = unique_runs(runs[keep])
    if not len(runs):
        return {}, None, []
    schedules = runs["schedule"].value_counts()
    schedule = str(schedules.index[0])
    notes = [f"{n} finished run(s) of the schedule {p} left aside (claims compare like with like: {schedule})"
             for p, n in schedules.items() if p != schedule]
    nets = {}
    for name, g in runs[runs["schedule"] == schedule].groupby("name", sort=False):
        n = len(g)
        nets[name] = Net(name, g["final_train_error"].mean(), g["final_test_error"].mean(),
                         g["final_train_error"].std() if n > 1 else None,
                         g["final_test_error"].std() if n > 1 else None, n)
    return nets, schedule, notes


# --------------------------------------------------------------------------- the claims
def _chain(nets: dict[str, Net], family: str, depths: tuple[int, ...], metric: str, deeper_higher: bool,
           cid: str, text: str) -> Claim:
    names = [f"{family}{d}" for d in depths]
    have = [nets[n] for n in names if n in nets]
    missing = [n for n in names if n not in nets and n not in NOT_IN_FIGURE6]
    if len(have) < 2:
        return Claim(cid, text, UNCHECKED, f"needs finished runs of at least two {family} depths; "
                     f"have {', '.join(n.name for n in have) or 'none'}", missing)
    parts = [above(deep, shallow, metric) if deeper_higher else above(shallow, deep, metric)
             for shallow, deep in zip(have, have[1:])]
    evidence = "; ".join(p.text for p in parts) + _noise_note(have)
    if missing:
        evidence += f". Not run: {', '.join(missing)}"
    return Claim(cid, text, combine(parts), evidence, missing)


def c1_plain_train(nets: dict[str, Net], res: Results) -> Claim:
    return _chain(nets, "plain", PLAIN_DEPTHS, "train", True, "C1",
                  "Plain nets: the deeper net has the higher final training error (degradation).")


def c2_plain_test(nets: dict[str, Net], res: Results) -> Claim:
    return _chain(nets, "plain", PLAIN_DEPTHS, "test", True, "C2",
                  "Plain nets: the deeper net has the higher test error.")


def c3_resnet_test(nets: dict[str, Net], res: Results) -> Claim:
    claim = _chain(nets, "resnet", RESNET_DEPTHS, "test", False, "C3",
                   "ResNets: the deeper net has the lower test error (20 > 32 > 44 > 56 > 110).")
    runs = res.runs[res.runs["name"].isin(list(nets))] if len(res.runs) else res.runs
    iterations = int(runs["iterations"].max()) if len(runs) and runs["iterations"].notna().any() else None
    if claim.verdict in (FAILS, NOISE) and iterations and iterations < PAPER_ITERATIONS:
        # why, in words: the short schedule, not the architecture (the paper's Table 6 has 56 ahead of 20)
        claim = Claim(claim.id, claim.text, claim.verdict, claim.evidence + (
            f". Why: these runs train {iterations:,} iterations, 1/{PAPER_ITERATIONS // iterations} of the paper's "
            f"{PAPER_ITERATIONS:,}; a deeper ResNet fits more slowly and needs the longer schedule to pull "
            "ahead (the paper: ResNet-56 6.97 % against ResNet-20 8.75 % after 64k iterations)"), claim.missing)
    return claim


def c4_resnet_vs_plain(nets: dict[str, Net], res: Results) -> Claim:
    text = "At each depth, the ResNet has the lower training error than the plain net of the same depth."
    depths = [d for d in PLAIN_DEPTHS if f"plain{d}" in nets and f"resnet{d}" in nets]
    missing = [f"{fam}{d}" for d in PLAIN_DEPTHS for fam in ("plain", "resnet")
               if (f"plain{d}" in nets) != (f"resnet{d}" in nets) and f"{fam}{d}" not in nets]
    if not depths:
        return Claim("C4", text, UNCHECKED, "needs a plain net and a ResNet of the same depth, both finished",
                     missing or ["plain20", "resnet20"])
    parts = [above(nets[f"plain{d}"], nets[f"resnet{d}"], "train") for d in depths]
    evidence = "; ".join(parts_text for parts_text in (p.text for p in parts))
    evidence += _noise_note([nets[f"{f}{d}"] for d in depths for f in ("plain", "resnet")])
    return Claim("C4", text, combine(parts), evidence, missing)


def c5_resnet1202(nets: dict[str, Net], res: Results) -> Claim:
    text = (f"ResNet-1202 reaches under {C5_TRAIN_ERROR} % training error, yet tests worse than ResNet-110 "
            "(overfitting).")
    missing = [n for n in ("resnet110", "resnet1202") if n not in nets]
    if missing:
        return Claim("C5", text, UNCHECKED, f"needs finished runs of {' and '.join(missing)} "
                     "(resnet1202 is opt-in: --only resnet1202)", missing)
    big, ref = nets["resnet1202"], nets["resnet110"]
    low_train = Comparison(f"resnet1202 training error {big.train:.3f} % "
                           f"{'<' if big.train < C5_TRAIN_ERROR else '>='} {C5_TRAIN_ERROR} %",
                           HOLDS if big.train < C5_TRAIN_ERROR else FAILS)
    worse_test = above(big, ref, "test")
    return Claim("C5", text, combine([low_train, worse_test]), f"{low_train.text}; {worse_test.text} (test)", [])


def c6_responses(nets: dict[str, Net], res: Results) -> Claim:
    text = ("Figure 7: ResNets' layer responses are weaker (smaller std) than those of plain nets of the same "
            "depth, and deeper ResNets' weaker still.")
    names = [f"{f}{d}" for f in ("plain", "resnet") for d in (20, 56)] + ["resnet110"]
    resp = load_responses(res, [n for n in names if n in nets])
    # per run: the mean response std over its layers; per net: mean and spread over seeds
    per_run = resp.groupby(["name", "run"])["std"].mean().reset_index() if len(resp) else resp
    strength = {name: Net(name, math.nan, g["std"].mean(), None, g["std"].std() if len(g) > 1 else None, len(g), 3)
                for name, g in (per_run.groupby("name") if len(per_run) else [])}
    parts: list[Comparison] = []
    for d in (20, 32, 44, 56, 110):
        p, r = f"plain{d}", f"resnet{d}"
        if p in strength and r in strength:
            parts.append(above(strength[p], strength[r], "test"))
    deep = [strength[f"resnet{d}"] for d in RESNET_DEPTHS if f"resnet{d}" in strength]
    parts += [above(a, b, "test") for a, b in zip(deep, deep[1:])]
    missing = [n for n in names if n not in strength]
    if not parts:
        return Claim("C6", text, UNCHECKED, "needs responses.csv of finished plain nets and ResNets of one depth, "
                     "or of two ResNet depths (python -m resnet_exp responses computes missing ones)", missing)
    evidence = "mean response std over layers: " + "; ".join(p.text for p in parts) + \
        _noise_note(list(strength.values()))
    return Claim("C6", text, combine(parts), evidence, missing)


def c7_table6(nets: dict[str, Net], res: Results, profile: str | None) -> Claim:
    text = (f"Table 6: each ResNet's test error is within the paper's spread of its number (+- {C7_TOLERANCE:.2f}, "
            f"twice the {PAPER_STD} std the paper gives for ResNet-110).")
    ds = res.dataset or {}
    why = []
    if profile != "paper":
        why.append(f"the runs use the {profile or 'no'} profile, not the paper's recipe")
    if ds.get("lossy") or ds.get("subset") or ds.get("name", "").lower().startswith("cifar-10 mini"):
        why.append(f"the dataset is {ds.get('name', 'not CIFAR-10')}, not the real CIFAR-10")
    have = [n for n in TABLE6_TEST_ERROR if n in nets]
    if not have:
        why.append("no finished ResNet of Table 6 (resnet20/32/44/56/110/1202)")
    if why:
        return Claim("C7", text, UNCHECKED, "; ".join(why), [n for n in TABLE6_TEST_ERROR if n not in nets])
    parts = []
    for n in have:
        paper, what = (TABLE6_MEAN_STD[n][0], "mean") if n in TABLE6_MEAN_STD else (TABLE6_TEST_ERROR[n], "reported")
        diff = nets[n].test - paper
        ok = abs(diff) <= C7_TOLERANCE
        parts.append(Comparison(f"{nets[n].show('test')} vs paper {paper:.2f} ({what}): {diff:+.2f}",
                                HOLDS if ok else FAILS))
    return Claim("C7", text, combine(parts), "; ".join(p.text for p in parts), [])


CLAIMS: tuple[Callable[[dict[str, Net], Results], Claim], ...] = (
    c1_plain_train, c2_plain_test, c3_resnet_test, c4_resnet_vs_plain, c5_resnet1202, c6_responses)


def c8_signals(nets: dict[str, Net], res: Results) -> Claim:
    """Sec. 4.1, decided from signals.csv by the two rules of ``reporting/signals.py``."""
    from .signals import BACKWARD_FACTOR, HOW_TO_GET, RESPONSE_FLOOR, judge_all, load_signals

    text = ("Sec. 4.1: in the plain nets trained with BN, neither forward nor backward signals vanish (every "
            f"layer's response std >= {RESPONSE_FLOOR}; no conv layer's relative update gradient/weight norm "
            f"{BACKWARD_FACTOR:.0f}x below the largest one's, at every recorded point after initialisation).")
    plain = [n for n in nets if n.startswith("plain")]
    twins = [n.replace("plain", "resnet") for n in plain if n.replace("plain", "resnet") in nets]
    signals = load_signals(res, plain + twins)
    judged = {j.run: j for j in judge_all(signals)}
    by_name: dict[str, list] = {}
    for j in judged.values():
        by_name.setdefault(j.name, []).append(j)
    checked = [n for n in plain if n in by_name]
    if not checked:
        return Claim("C8", text, UNCHECKED, "needs signals.csv of a finished plain net; "
                     + ("these runs were trained before signals were recorded. " if plain else "") + HOW_TO_GET,
                     plain or ["plain20", "plain56"])
    parts, facts = [], []
    for n in checked:
        for j in by_name[n]:
            parts.append(Comparison(j.evidence(), HOLDS if j.holds else FAILS))
            if fact := j.init_fact():
                facts.append(fact)
    twin_text = [j.evidence() for n in twins if n in by_name for j in by_name[n]]
    evidence = "; ".join(p.text for p in parts)
    if twin_text:
        evidence += ". ResNet twins, for comparison: " + "; ".join(twin_text)
    if facts:
        evidence += ". At initialisation (raw gradient norms; a fact, not part of the verdict): " + "; ".join(facts)
    return Claim("C8", text, combine(parts), evidence, [n for n in plain if n not in by_name])


def check_claims(res: Results) -> tuple[list[Claim], list[str]]:
    """Every claim's verdict on these results, and notes on which runs were used."""
    nets, schedule, notes = finished_nets(res)
    res = res.on_schedule(schedule)  # every claim reads the runs of that one schedule
    profile = str(res.runs["profile"].iloc[0]) if schedule and len(res.runs) else None
    claims = [f(nets, res) for f in CLAIMS] + [c7_table6(nets, res, profile), c8_signals(nets, res)]
    if schedule:
        notes = [f"schedule {schedule}: {len(nets)} nets finished "
                 f"({', '.join(f'{n.name} x{n.seeds}' for n in nets.values())})", *notes]
    return claims, notes


def claims_for(results_dir: str | Path) -> tuple[list[Claim], list[str]]:
    return check_claims(load_results(results_dir))


def known_to_show(rung: Rung, precision: str = "fp32") -> str:
    """Which of the paper's claims a rung of the budget ladder showed in this precision, from
    its committed reference runs, or that none is committed. The plan prints it beside the rung
    it chose (``__main__`` hands this function to the planner: planning never imports the reports)."""
    def shown_by(where: str | None) -> str | None:
        if not where or not (REPO / where).is_dir():
            return None
        claims, _ = claims_for(REPO / where)
        shown = "; ".join(f"{c.id} {c.verdict}" for c in claims if c.verdict != UNCHECKED)
        return f"{shown or 'nothing checkable'} (committed reference {where})"

    if (own := shown_by(rung.reference_for(precision))) is not None:
        return own
    none = f"no committed {precision} measurement of this rung yet"
    if precision != "fp32" and (fp32 := shown_by(rung.reference_for("fp32"))) is not None:
        return f"{none}; in fp32 it showed {fp32}"  # the nearest evidence, named as such
    return none


def figure7_statement(res: Results) -> str:
    """Claim C6 in one sentence, for the Figure 7 report."""
    nets, _, _ = finished_nets(res)
    c = c6_responses(nets, res)
    return f"The paper's claim (C6) {c.verdict} on these runs: {c.evidence}."


# --------------------------------------------------------------------------- showing them
def claims_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.id, "the paper says": c.text, "verdict": c.verdict, "our numbers": c.evidence}
                         for c in claims])


def claims_brief(claims: list[Claim], width: int = 100) -> list[str]:
    """One line a claim, verdict first (the end of ``./run_all.sh``); ``claims`` gives the numbers."""
    return [(f"  {c.id}  {c.verdict.upper():<18}{c.text}")[:width] for c in claims]


def claims_text(claims: list[Claim], notes: list[str], width: int = 100) -> str:
    """A plain-text table for the terminal."""
    import textwrap

    lines = ["The paper's claims on these runs:"]
    pad = " " * 24
    for c in claims:
        text = textwrap.wrap(c.text, width - 24)
        lines.append(f"  {c.id}  {c.verdict.upper():<18}{text[0]}")
        lines += [pad + t for t in text[1:]]
        lines += [pad + "  " + t for t in textwrap.wrap(c.evidence, width - 26)]
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)


VERDICT_COLORS = {HOLDS: "#1a7f37", FAILS: "#c00", NOISE: "#b26b00", UNCHECKED: "#666"}


def claims_html(claims: list[Claim], notes: list[str]) -> str:
    import html

    e = html.escape
    # verdict first, one sentence a claim; the numbers behind it folded below (a reader opens
    # the one they doubt; C8's evidence alone runs to dozens of lines)
    rows = "".join(
        f"<tr><td><b>{c.id}</b></td>"
        f"<td style='color:{VERDICT_COLORS[c.verdict]};font-weight:bold;white-space:nowrap'>{e(c.verdict)}</td>"
        f"<td>{e(c.text)}<details><summary>our numbers</summary><div class='evidence'>{e(c.evidence)}</div>"
        f"</details></td></tr>" for c in claims)
    foot = "".join(f"<li>{e(n)}</li>" for n in notes)
    return (f'<table class="claims" style="border-collapse:collapse"><tr><th>claim</th><th>verdict</th>'
            f'<th>the paper says (our numbers, final errors in %, folded below)</th></tr>{rows}</table>'
            + (f"<details style='color:#666'><summary>notes on the runs used</summary><ul>{foot}</ul></details>"
               if foot else ""))
