"""The verdicts of scripts/gpu_check.sh's step 1, from the result folders it trained:

    python scripts/gpu_check_verdicts.py WORK OUT_JSON --models resnet20 plain56 --det-models plain56 [--cuda]

WORK holds the step's results folders (eq-{graph}-{deterministic}, eq-again, det-a, det-b,
det-resumed, smoke); OUT_JSON receives the verdicts with the numbers behind them, a row for
every model asked for. A run the check did not reach, or one its deadline stopped, is
"incomplete" rather than compared: a verdict is drawn only from finished runs. Prints one
line per check, then the JSON. Kept out of the shell script so that tests/test_gpu_check.py
checks the verdicts on the CPU, on folders it trains itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

TIMING = ("elapsed_s", "images_per_s")  # log columns that differ between any two runs


def logs(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Each run's log.csv without its timing columns, by model name (run folders are NAME-sSEED-HASH)."""
    runs = {}
    for path in sorted(folder.glob("*/*/log.csv")):
        with open(path) as f:
            runs[path.parent.name.split("-s")[0]] = [{k: v for k, v in row.items() if k not in TIMING}
                                                     for row in csv.DictReader(f)]
    return runs


def metas(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name.split("-s")[0]: json.loads(p.read_text()) for p in sorted(folder.glob("*/*/meta.json"))}


def status(meta: dict[str, Any] | None) -> str | None:
    return (meta or {}).get("status")


def verdict(statuses: list[str | None], ok: bool) -> str:
    """"fail" when a run failed or diverged, or the comparison fails; "incomplete" when a run
    was never reached or its deadline stopped it (interrupted): nothing to compare yet."""
    if any(s in ("failed", "diverged") for s in statuses):
        return "fail"
    if not all(s == "finished" for s in statuses):
        return "incomplete"
    return "pass" if ok else "fail"


def max_diff(a: list[dict[str, str]], b: list[dict[str, str]], key: str) -> float | None:
    return max((abs(float(x[key]) - float(y[key])) for x, y in zip(a, b)), default=None)


def eager_vs_graph(work: Path, models: list[str], deterministic: str, cuda: bool) -> dict[str, dict[str, Any]]:
    """Eager against graphed, one seed. Deterministic: the logs must be identical. Otherwise the
    graphed run's largest training-loss difference must stay within twice what two eager runs
    of the same seed differ by (cuDNN's autotuner and atomics: the same kernels may sum in
    another order), measured in the same call. ``cuda``: the graphed run must have replayed a
    graph (meta.json's ``step``); one whose capture failed and fell back to eager fails."""
    eager, graph = logs(work / f"eq-false-{deterministic}"), logs(work / f"eq-true-{deterministic}")
    m_eager, m_graph = metas(work / f"eq-false-{deterministic}"), metas(work / f"eq-true-{deterministic}")
    again, m_again = logs(work / "eq-again"), metas(work / "eq-again")
    rows = {}
    for name in models:
        e, g = eager.get(name, []), graph.get(name, [])
        statuses = [status(m_eager.get(name)), status(m_graph.get(name))]
        row: dict[str, Any] = {
            "statuses": statuses, "identical": bool(e) and e == g, "lines": [len(e), len(g)],
            "graph_step": m_graph.get(name, {}).get("step"), "captures": m_graph.get(name, {}).get("step_captures"),
            "max_abs_diff_train_loss": max_diff(e, g, "train_loss"),
            "max_abs_diff_test_error": max_diff(e, g, "test_error")}
        graphed = not cuda or str(row["graph_step"]).startswith("cuda graph")
        if deterministic == "true":
            row["verdict"] = verdict(statuses, graphed and row["identical"])
        else:
            bound = max_diff(e, again.get(name, []), "train_loss")
            row.update(eager_vs_eager_max_abs_diff_train_loss=bound,
                       eager_vs_eager_identical=bool(e) and e == again.get(name))
            statuses.append(status(m_again.get(name)))
            row["verdict"] = verdict(statuses, graphed and (row["identical"] or (
                bound is not None and row["max_abs_diff_train_loss"] is not None
                and row["max_abs_diff_train_loss"] <= 2 * bound)))
        rows[f"{name} deterministic={deterministic}"] = row
    return rows


def reruns(work: Path, models: list[str]) -> dict[str, dict[str, Any]]:
    """Deterministic mode: a second run of one seed and one stopped by SIGTERM and resumed."""
    a, b, r = logs(work / "det-a"), logs(work / "det-b"), logs(work / "det-resumed")
    ma, mb, mr = metas(work / "det-a"), metas(work / "det-b"), metas(work / "det-resumed")
    rows = {}
    for name in models:
        attempts = mr.get(name, {}).get("attempts", [])
        statuses = [status(m.get(name)) for m in (ma, mb, mr)]
        row = {"statuses": statuses,
               "two_runs_identical": bool(a.get(name)) and a.get(name) == b.get(name),
               "resumed_identical": bool(a.get(name)) and a.get(name) == r.get(name),
               "stopped_at": [t.get("from_iteration") for t in attempts][1:],
               "sigterm_landed_mid_run": len(attempts) >= 2,
               "resumed_step": mr.get(name, {}).get("step"), "lines": len(a.get(name, []))}
        row["verdict"] = verdict(statuses, row["two_runs_identical"] and row["resumed_identical"])
        rows[name] = row
    return rows


def deterministic_cost(work: Path) -> dict[str, dict[str, Any]]:
    """What ``deterministic`` costs per model: the graphed runs' seconds of steps, with and without."""
    fast, det = metas(work / "eq-true-false"), metas(work / "eq-true-true")
    out = {}
    for name, m in det.items():
        a, b = fast.get(name, {}).get("wall_time_s"), m.get("wall_time_s")
        both = status(fast.get(name)) == status(m) == "finished" and bool(a) and bool(b)
        out[name] = {"graph_s": a, "graph_deterministic_s": b, "ratio": round(b / a, 3) if both else None}
    return out


def verdicts(work: Path, models: list[str], det_models: list[str], cuda: bool = False) -> dict[str, Any]:
    """Every check of step 1: "pass", "fail" or "incomplete", with the numbers behind it."""
    res: dict[str, Any] = {"eager_vs_graph": {**eager_vs_graph(work, models, "true", cuda),
                                              **eager_vs_graph(work, models, "false", cuda)},
                           "deterministic": reruns(work, det_models), "deterministic_cost": deterministic_cost(work),
                           "smoke_figure1": {k: v.get("status") for k, v in metas(work / "smoke").items()}}
    checks = {f"eager vs graph, {k}": v["verdict"] for k, v in res["eager_vs_graph"].items()}
    checks.update({f"deterministic reruns and resume, {k}": v["verdict"] for k, v in res["deterministic"].items()})
    checks.update({f"Figure 1 smoke, {k}": verdict([v], True) for k, v in res["smoke_figure1"].items()}
                  or {"Figure 1 smoke": "incomplete"})
    res["checks"] = checks
    res["all_pass"] = bool(checks) and all(v == "pass" for v in checks.values())
    return res


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="The verdicts of gpu_check.sh's step 1.")
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="+", required=True, help="the models of eager against graph")
    parser.add_argument("--det-models", nargs="+", required=True, help="the models of the deterministic reruns")
    parser.add_argument("--cuda", action="store_true", help="the graphed runs must have replayed CUDA graphs")
    args = parser.parse_args(argv)
    res = verdicts(args.work, args.models, args.det_models, args.cuda)
    args.out.write_text(json.dumps(res, indent=2))
    for check, v in res["checks"].items():
        print(f"{v.upper():<10}  {check}")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
