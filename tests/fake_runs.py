"""Finished run folders written with known numbers (no training): every file a real run
has, consistent, so RunDir.check passes and the reports read them as finished. For tests
of what is computed from results (claims, ablation statistics) where the answer must be
known in advance."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from resnet_exp.runs.rundir import LOG_COLUMNS, RunDir, RunStatus, sha256_file

DATASETS = {
    "mirror": {"name": "CIFAR-10 JPEG mirror, quality 75", "source": "image-folder-tar", "path": "fake",
               "sha256": "a" * 64, "n_train": 50000, "n_test": 10000, "lossy": True, "subset": False},
    "real": {"name": "CIFAR-10", "source": "torchvision", "path": "fake", "sha256": "b" * 64,
             "n_train": 50000, "n_test": 10000, "lossy": False, "subset": False},
}


def write_run(results: Path, experiment: str, name: str, train: float, test: float, *, seed: int = 1,
              model: str | None = None, shortcut: str | None = None, profile: str = "quick",
              dataset: str = "mirror", responses: list[float] | None = None, baseline: str | None = None,
              group: str | None = None, lr: float = 0.1, precision: str = "fp32") -> RunDir:
    model = model or name
    if shortcut is None and model.startswith("resnet"):
        shortcut = "A"
    recipe = {"iterations": 4, "eval_every": 2, "lr": lr, "milestones": [2], "precision": precision}
    identity = hashlib.sha256(f"{experiment}{name}{seed}{profile}{dataset}{lr}{precision}".encode()).hexdigest()
    run = RunDir.for_run(results, experiment, f"{name}-s{seed}-{identity[:10]}")
    run.path.mkdir(parents=True)
    rows = [{"iteration": 2, "epoch": 0.1, "lr": lr, "train_loss": 2.0, "train_error": train + 10,
             "test_loss": 2.0, "test_error": test + 10, "elapsed_s": 1.0, "images_per_s": 100.0},
            {"iteration": 4, "epoch": 0.2, "lr": lr / 10, "train_loss": 1.0, "train_error": train,
             "test_loss": 1.0, "test_error": test, "elapsed_s": 2.0, "images_per_s": 100.0}]
    run.write_log(rows, LOG_COLUMNS)
    run.model_path.write_bytes(f"weights of {identity}".encode())
    run.mean_path.write_bytes(b"mean")
    files = [run.log_path, run.model_path, run.mean_path]
    if responses is not None:
        sha = sha256_file(run.model_path)
        with open(run.responses_path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["layer", "module", "std", "model_sha256"])
            w.writerows([i, f"layer{i}.bn", s, sha] for i, s in enumerate(responses))
        files.append(run.responses_path)
    run.write_meta({
        "identity": identity, "status": RunStatus.FINISHED.value, "iteration": 4,
        "config": {"experiment": experiment, "name": name, "model": model, "shortcut": shortcut, "seed": seed,
                   "profile": profile, "group": group, "note": None, "baseline": baseline,
                   "recipe": recipe},
        "params": 1000, "dataset": DATASETS[dataset], "device": "cpu", "torch": "test",
        "files": {p.name: sha256_file(p) for p in files},
        "final": {"train_error": train, "test_error": test}, "wall_time_s": 2.0,
    })
    assert run.check().ok, run.check()
    return run
