"""The verdicts of scripts/gpu_check.sh's step 1, from the result folders it trained:

    python scripts/gpu_check_verdicts.py WORK OUT_JSON --models resnet20 plain56 --det-models plain56 \
        [--bf16-models resnet20-bf16] [--captures 4] [--cuda]

WORK holds the step's results folders (eq-{graph}-{deterministic}, eq-again, det-a, det-b,
det-resumed, smoke, pool) and the probe's probe.json; OUT_JSON receives the verdicts with the
numbers behind them, a row for every model asked for. A run the check did not reach, or one its
deadline stopped, is "incomplete" rather than compared: a verdict is drawn only from finished
runs. A check that only a GPU can make (how often a step was captured) is "skipped" on the CPU.
Prints one line per check, then the JSON. Kept out of the shell script so that
tests/test_gpu_check.py checks the verdicts on the CPU, on folders it writes itself.
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


def weights(folder: Path) -> dict[str, dict[str, Any]]:
    """Each finished run's final weights and buffers (model.pt), by model name; torch is
    imported here only (the other checks read text)."""
    import torch

    return {p.parent.name.split("-s")[0]: torch.load(p, map_location="cpu", weights_only=True)
            for p in sorted(folder.glob("*/*/model.pt"))}


def same_weights(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Bit for bit, every parameter and buffer (BN's running statistics and counters too)."""
    import torch

    return a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
    """Eager against graphed, one seed. Deterministic: the logs and the final weights and
    buffers must be identical (bf16 rows too: the same casts, graphed or not). Otherwise the
    graphed run's largest training-loss difference must stay within twice what two eager runs
    of the same seed differ by (cuDNN's autotuner and atomics: the same kernels may sum in
    another order), measured in the same call. ``cuda``: the graphed run must have replayed a
    graph (meta.json's ``step``); one whose capture failed and fell back to eager fails."""
    eager, graph = logs(work / f"eq-false-{deterministic}"), logs(work / f"eq-true-{deterministic}")
    m_eager, m_graph = metas(work / f"eq-false-{deterministic}"), metas(work / f"eq-true-{deterministic}")
    again, m_again = logs(work / "eq-again"), metas(work / "eq-again")
    if deterministic == "true":
        w_eager, w_graph = weights(work / "eq-false-true"), weights(work / "eq-true-true")
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
            row["weights_identical"] = same_weights(w_eager.get(name), w_graph.get(name))
            row["verdict"] = verdict(statuses, graphed and row["identical"] and row["weights_identical"])
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


def captures(work: Path, folders: tuple[str, ...], expected: int | None, cuda: bool) -> dict[str, dict[str, Any]]:
    """Every graphed run's captures: how many (one per learning rate: the warm-up's, the end of
    the warm-up, each milestone), the GPU memory reserved after each, and how many other
    captures were alive in the process then (none: one graph per process). Only a GPU
    captures: on the CPU the graphed runs step eagerly and the check is "skipped"."""
    rows = {}
    for folder in folders:
        for name, m in metas(work / folder).items():
            log = m.get("step_capture_log") or []
            row = {"step": m.get("step"), "captures": m.get("step_captures"), "lrs": [c.get("lr") for c in log],
                   "memory_reserved": [c.get("memory_reserved") for c in log],
                   "other_captures_alive": [c.get("other_captures_alive") for c in log]}
            ok = row["captures"] == (expected if expected is not None else row["captures"]) \
                and not any(row["other_captures_alive"])
            row["verdict"] = verdict([status(m)], ok) if cuda else "skipped"
            rows[f"{folder} {name}"] = row
    return rows


def pool(work: Path, models: list[str], cuda: bool) -> dict[str, Any]:
    """One pool worker trains the models back to back, graphed and deterministic: the same
    worker process for all, and each run's log and weights identical to the one trained alone
    (eq-true-true), so nothing of the first run's graph reached the second."""
    m_pool, m_alone = metas(work / "pool"), metas(work / "eq-true-true")
    l_pool, l_alone = logs(work / "pool"), logs(work / "eq-true-true")
    w_pool, w_alone = weights(work / "pool"), weights(work / "eq-true-true")
    statuses = [status(m_pool.get(n)) for n in models] + [status(m_alone.get(n)) for n in models]
    pids = {(m_pool.get(n) or {}).get("worker", {}).get("pid") for n in models}
    row = {"statuses": statuses, "one_worker": len(pids) == 1 and None not in pids,
           "slots": sorted({str((m_pool.get(n) or {}).get("worker", {}).get("slot")) for n in models}),
           "identical_to_alone": {n: bool(l_pool.get(n)) and l_pool.get(n) == l_alone.get(n)
                                  and same_weights(w_pool.get(n), w_alone.get(n)) for n in models}}
    graphed = not cuda or all(str((m_pool.get(n) or {}).get("step")).startswith("cuda graph") for n in models)
    row["verdict"] = verdict(statuses, graphed and row["one_worker"] and all(row["identical_to_alone"].values()))
    return row


def probe(work: Path, cuda: bool) -> dict[str, Any]:
    """scripts/gpu_check_probe.py: a replay after the lr was changed without a new capture keeps
    the captured lr (a real graph on CUDA; the stand-in mimicking one on the CPU)."""
    path = work / "probe.json"
    if not path.exists():
        return {"verdict": "incomplete"}
    res = json.loads(path.read_text())
    ok = res.get("kept_captured_lr") is True and (not cuda or res.get("capture") == "CudaGraphs")
    return {**res, "verdict": "pass" if ok else "fail"}


def verdicts(work: Path, models: list[str], det_models: list[str], cuda: bool = False,
             bf16_models: list[str] = (), expected_captures: int | None = None) -> dict[str, Any]:
    """Every check of step 1: "pass", "fail", "incomplete" or "skipped" (a GPU's check, on a
    CPU), with the numbers behind it."""
    res: dict[str, Any] = {"eager_vs_graph": {**eager_vs_graph(work, [*models, *bf16_models], "true", cuda),
                                              **eager_vs_graph(work, models, "false", cuda)},
                           "deterministic": reruns(work, det_models), "deterministic_cost": deterministic_cost(work),
                           "smoke_figure1": {k: v.get("status") for k, v in metas(work / "smoke").items()},
                           "captures": captures(work, ("eq-true-true", "eq-true-false", "pool"), expected_captures, cuda),
                           "pool_worker_two_runs": pool(work, models, cuda), "frozen_lr_probe": probe(work, cuda)}
    checks = {f"eager vs graph, {k}": v["verdict"] for k, v in res["eager_vs_graph"].items()}
    checks.update({f"deterministic reruns and resume, {k}": v["verdict"] for k, v in res["deterministic"].items()})
    checks.update({f"Figure 1 smoke, {k}": verdict([v], True) for k, v in res["smoke_figure1"].items()}
                  or {"Figure 1 smoke": "incomplete"})
    checks.update({f"captures, {k}": v["verdict"] for k, v in res["captures"].items()}
                  or {"captures": "incomplete"})
    checks["a pool worker trains two graphed runs in a row"] = res["pool_worker_two_runs"]["verdict"]
    checks["a replay after a changed lr keeps the captured lr"] = res["frozen_lr_probe"]["verdict"]
    res["checks"] = checks
    res["all_pass"] = bool(checks) and all(v in ("pass", "skipped") for v in checks.values())
    return res


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="The verdicts of gpu_check.sh's step 1.")
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="+", required=True, help="the models of eager against graph")
    parser.add_argument("--det-models", nargs="+", required=True, help="the models of the deterministic reruns")
    parser.add_argument("--bf16-models", nargs="*", default=[], help="bf16 rows of eager against graph (deterministic)")
    parser.add_argument("--captures", type=int, default=None, help="the captures each graphed run must make")
    parser.add_argument("--cuda", action="store_true", help="the graphed runs must have replayed CUDA graphs")
    args = parser.parse_args(argv)
    res = verdicts(args.work, args.models, args.det_models, args.cuda, args.bf16_models, args.captures)
    args.out.write_text(json.dumps(res, indent=2))
    for check, v in res["checks"].items():
        print(f"{v.upper():<10}  {check}")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
