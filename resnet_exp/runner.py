"""Many runs: validate every file first, load the data once, plan, then train what is
not finished yet, each run under a lock, and print a summary.

Results: ``<results>/<experiment>/<run name>-s<seed>-<identity>/``. The identity hashes
the resolved recipe, the model options, the seed and the dataset's sha256, so a changed
row or another dataset is a new run and a finished run is never trained twice.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import DatasetError, load_cifar10
from .experiments import ExperimentError, RunSpec, load_experiment
from .fileio import RunLock, atomic_write_json, read_json
from .loader import DeviceSplits, TrainBatches, prepare_splits
from .models import build_model, model_info
from .train import make_optimizer, make_train_step, train_run


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    return torch.device(device)


def default_profile(device: torch.device) -> str:
    return "paper" if device.type == "cuda" else "quick"


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    identity: str
    state: str  # new | partial | finished | diverged | failed | locked


def plan_runs(specs: list[RunSpec], results: Path, dataset_sha: str) -> list[PlannedRun]:
    planned = []
    for spec in specs:
        identity = spec.identity(dataset_sha)
        run_dir = results / spec.experiment / spec.run_dir_name(dataset_sha)
        if not (run_dir / "meta.json").exists():
            _reuse_identical_run(results, run_dir, identity)
        meta = read_json(run_dir / "meta.json") or {}
        status = meta.get("status") if meta.get("identity") == identity else None
        if status in ("finished", "diverged"):
            state = status
        elif (run_dir / "checkpoint.pt").exists():
            state = "partial"
        else:
            state = "failed" if status == "failed" else "new"
        if state in ("new", "partial", "failed"):
            lock = RunLock(run_dir)
            if not lock.acquire():
                state = "locked"
            lock.release()
        planned.append(PlannedRun(spec, run_dir, identity, state))
    return planned


def _reuse_identical_run(results: Path, run_dir: Path, identity: str) -> None:
    """The same run finished for another experiment (figure1's plain20 is figure6's):
    copy it instead of training it again. The folder name holds the identity."""
    for other in sorted(results.glob(f"*/{run_dir.name}")):
        meta = read_json(other / "meta.json") or {}
        if meta.get("identity") == identity and meta.get("status") == "finished":
            shutil.copytree(other, run_dir, ignore=shutil.ignore_patterns(".lock", "*.tmp"), dirs_exist_ok=True)
            meta = read_json(run_dir / "meta.json")
            meta.update(copied_from=str(other.relative_to(results)),
                        config={**meta["config"], "experiment": run_dir.parent.name})
            atomic_write_json(run_dir / "meta.json", meta)
            print(f"[plan] {run_dir.parent.name}/{run_dir.name}: identical to the finished "
                  f"{other.relative_to(results)}, copied instead of trained again")
            return


@functools.lru_cache(maxsize=None)
def _flops(model: str) -> int:
    """Forward FLOPs of one image (counted once per model name)."""
    return model_info(model)["flops"]


def estimate_seconds(todo: list[PlannedRun], splits_for: Any, device: torch.device) -> dict[str, float]:
    """Rough time per run: time a few training steps of the cheapest model here, then
    scale by FLOPs (a training step ~ 3 forward passes, plus the evaluations)."""
    if not todo:
        return {}
    probe = min(todo, key=lambda p: _flops(p.spec.model))
    splits = splits_for(probe.spec)
    model = build_model(probe.spec.model).to(device).to(memory_format=torch.channels_last)
    step = make_train_step(model, make_optimizer(model, probe.spec.recipe, device))
    batches = TrainBatches(splits.train_x, splits.train_y, probe.spec.recipe["batch_size"], True, seed=0)
    timings = []
    for _ in range(4):
        t = time.perf_counter()
        step(*batches.next())
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - t)
    step_flops = 3 * _flops(probe.spec.model) * probe.spec.recipe["batch_size"]
    flops_per_s = step_flops / min(timings[1:])
    out = {}
    for p in todo:
        r, fwd = p.spec.recipe, _flops(p.spec.model)
        done = 0
        if p.state == "partial":
            meta = read_json(p.run_dir / "meta.json") or {}
            done = meta.get("iteration", 0)
        n_test = len(splits_for(p.spec).test_y)
        evals = (r["iterations"] - done) // r["eval_every"]
        out[p.run_dir.name] = ((r["iterations"] - done) * 3 * fwd * r["batch_size"] + evals * n_test * fwd) / flops_per_s
    return out


def _fmt_time(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def run_experiments(files: list[str], profile: str | None = None, only: list[str] | None = None,
                    data: str | None = None, results: str = "results", device: str = "auto",
                    include_opt_in: bool = False, dry_run: bool = False, progress: bool = True,
                    data_dir: str | os.PathLike = "data") -> int:
    """The `run` command. Returns the exit code: 0 when every run finished or diverged."""
    dev = pick_device(device)
    profile = profile or default_profile(dev)
    specs: list[RunSpec] = []
    for f in files:  # every file is validated before anything trains
        specs.extend(load_experiment(f, profile))
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise ExperimentError(f"--only {' '.join(sorted(unknown))}: no such row; rows are "
                                  f"{', '.join(dict.fromkeys(s.name for s in specs))}")
        specs = [s for s in specs if s.name in only]
    elif not include_opt_in:
        specs = [s for s in specs if not s.opt_in]

    try:
        dataset = load_cifar10(data, data_dir=data_dir)
    except DatasetError as e:
        raise DatasetError(f"{e}\nNothing was trained; results already in {results}/ are untouched.") from None
    prov = dataset.provenance
    print(f"[data] {prov['name']}: {prov['n_train']:,} train / {prov['n_test']:,} test images, "
          f"sha256 {prov['sha256'][:16]}..., from {prov['path']}")
    if prov.get("warning"):
        print(f"[data] WARNING: {prov['warning']}")

    split_cache: dict[tuple, DeviceSplits] = {}

    def splits_for(spec: RunSpec) -> DeviceSplits:
        r = spec.recipe
        key = (r["train_per_class"], r["test_per_class"], r["val_split"])
        if key not in split_cache:
            split_cache[key] = prepare_splits(dataset, dev, *key)
        return split_cache[key]

    results_dir = Path(results)
    planned = plan_runs(specs, results_dir, prov["sha256"])
    todo = [p for p in planned if p.state in ("new", "partial", "failed")]
    eta = estimate_seconds(todo, splits_for, dev) if todo else {}
    print(f"\nPlan: profile {profile}, device {dev}, results in {results_dir}/")
    for p in planned:
        r = p.spec.recipe
        extra = f"~{_fmt_time(eta[p.run_dir.name])}" if p.run_dir.name in eta else ""
        print(f"  {p.spec.experiment + '/' + p.spec.name:<32} seed {p.spec.seed:<3} {r['iterations']:>6} it  "
              f"{p.state:<9} {extra}")
    print(f"  {len(todo)} to train, {sum(p.state == 'finished' for p in planned)} finished, "
          f"{sum(p.state == 'locked' for p in planned)} running elsewhere; "
          f"estimated {_fmt_time(sum(eta.values()))} on this device\n")
    if dry_run:
        return 0

    outcomes: list[tuple[PlannedRun, dict[str, Any]]] = []
    for p in planned:
        if p.state not in ("new", "partial", "failed"):
            outcomes.append((p, read_json(p.run_dir / "meta.json") or {"status": p.state}))
            continue
        if p.state == "new" and not (p.run_dir / "meta.json").exists():
            # an identical run may have finished earlier in this invocation (figure1 -> figure6)
            _reuse_identical_run(results_dir, p.run_dir, p.identity)
            meta = read_json(p.run_dir / "meta.json")
            if meta and meta.get("status") == "finished":
                outcomes.append((p, meta))
                continue
        lock = RunLock(p.run_dir)
        if not lock.acquire():  # another invocation took it since the plan was made
            outcomes.append((p, {"status": "locked"}))
            continue
        try:
            meta = train_run(p.spec, splits_for(p.spec), p.run_dir, dev, prov, p.identity, progress)
        except KeyboardInterrupt:
            _mark(p, "interrupted")
            raise
        except Exception as e:  # one broken run must not stop the others
            traceback.print_exc()
            meta = _mark(p, "failed", error=f"{type(e).__name__}: {e}")
            print(f"[{p.spec.name}] FAILED: {type(e).__name__}: {e}; its checkpoint (if any) is kept, "
                  "the suite goes on")
        finally:
            lock.release()
        outcomes.append((p, meta))

    print("\nSummary")
    print(f"  {'run':<34} {'status':<10} {'iter':>6} {'train err %':>11} {'test err %':>10} {'wall':>9}")
    for p, meta in outcomes:
        final = meta.get("final") or {}
        fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"  {p.spec.experiment + '/' + p.spec.name + '-s' + str(p.spec.seed):<34} "
              f"{meta.get('status', '?'):<10} {meta.get('iteration', '-')!s:>6} "
              f"{fmt(final.get('train_error')):>11} {fmt(final.get('test_error')):>10} "
              f"{_fmt_time(meta.get('wall_time_s') or 0):>9}")
    failed = [p for p, m in outcomes if m.get("status") == "failed"]
    return 1 if failed else 0


def _mark(p: PlannedRun, status: str, **extra: Any) -> dict[str, Any]:
    meta = read_json(p.run_dir / "meta.json") or {"identity": p.identity, "config": p.spec.config()}
    meta.update(status=status, **extra)
    atomic_write_json(p.run_dir / "meta.json", meta)
    return meta
