"""Tiny generated CIFAR-10 look-alikes in the layouts the loader accepts."""

from __future__ import annotations

import io
import pickle
import signal
import tarfile
from pathlib import Path

import numpy as np
import json

import pytest
import yaml
from PIL import Image

from resnet_exp.data.cifar10 import CLASSES

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 6

# Several tests send SIGINT to the processes they start (Ctrl-C at every moment). A test run
# started as a background job from a script (`./run_tests.sh &`) begins with SIGINT ignored,
# and every process it starts would inherit the ignore (the suite's own policy keeps an
# ignored SIGINT ignored): those tests would then test the launch, not the code. Python's own
# handler instead, which a child's exec resets to the default. The one test of a background
# job sets the ignore itself.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def make_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images whose class is learnable (a per-class colour) plus noise, uint8 N,3,32,32."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        base = (np.arange(len(CLASSES))[:, None] * np.array([25, 60, 95]) % 256)[labels]
        x = base[:, :, None, None] + rng.integers(-40, 40, size=(len(labels), 3, 32, 32))
        out[split] = (np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.int64))
    return out


def write_image_folder(root: Path, arrays) -> Path:
    for split, (x, y) in arrays.items():
        for i, (img, label) in enumerate(zip(x, y)):
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:05d}.png")  # lossless
    return root


def write_image_tar(path: Path, arrays, gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for split, (x, y) in arrays.items():
            for i, (img, label) in enumerate(zip(x, y)):
                buf = io.BytesIO()
                Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="PNG")
                info = tarfile.TarInfo(f"cifar/{split}/{CLASSES[label]}/{i:05d}.png")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    return path


def write_torchvision_layout(root: Path, arrays) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    x, y = arrays["train"]
    parts = np.array_split(np.random.default_rng(1).permutation(len(y)), 5)  # shuffled, as the real one
    for i, idx in enumerate(parts, start=1):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": x[idx].reshape(len(idx), -1), b"labels": y[idx].tolist()}, f)
    x, y = arrays["test"]
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": x.reshape(len(y), -1), b"labels": y.tolist()}, f)
    return root


@pytest.fixture(scope="session")
def arrays():
    return make_arrays()


@pytest.fixture(scope="session")
def tiny_tar(tmp_path_factory, arrays) -> Path:
    return write_image_tar(tmp_path_factory.mktemp("tar") / "tiny.tar.gz", arrays)


@pytest.fixture(scope="session")
def tiny_torchvision(tmp_path_factory, arrays) -> Path:
    return write_torchvision_layout(tmp_path_factory.mktemp("tv"), arrays)


def write_experiment(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_training(root: Path, tiny_tar: Path, recipe: str, model: str) -> tuple:
    """One tiny run's spec and data on the CPU, for tests that call ``train_run`` directly:
    (root, spec, splits, provenance)."""
    import torch

    from resnet_exp.data.cifar10 import load_cifar10
    from resnet_exp.data.loader import prepare_splits
    from resnet_exp.runs.planning.experiments import load_experiment

    ds = load_cifar10(str(tiny_tar), data_dir=root / "data", verbose=False)
    f = write_experiment(root / "tiny.yaml", f"defaults: {recipe}\nrows:\n  - {{model: {model}}}\n")
    spec = load_experiment(f, "smoke")[0]
    splits = prepare_splits(ds, torch.device("cpu"), spec.recipe.train_per_class, spec.recipe.test_per_class)
    return root, spec, splits, ds.provenance


def train_tiny(tiny: tuple, folder: str, **kwargs) -> tuple:
    """Train (or resume) the ``tiny_training`` run in ``<root>/<folder>``, one thread (on the CPU a
    run's numbers depend on its thread count): (RunDir, meta)."""
    import torch

    from resnet_exp.runs.rundir import RunDir
    from resnet_exp.runs.training.train import train_run

    root, spec, splits, provenance = tiny
    torch.set_num_threads(1)
    run = RunDir(root / folder / spec.name)
    return run, train_run(spec, splits, run, torch.device("cpu"), provenance, "test-identity", progress=False,
                          **kwargs)


# --------------------------------------------------------------------------- trained reports
REPO = Path(__file__).resolve().parents[1]
FAST = {"iterations": 4, "milestones": [2], "eval_every": 2, "batch_size": 10}


@pytest.fixture(scope="session")
def built_reports(tmp_path_factory, tiny_tar):
    """Every shipped experiment row, trained for a few iterations on the tiny data, and the
    reports built from them: (root folder, index path)."""
    from resnet_exp.reporting.build import build_reports
    from resnet_exp.runs.executing.runner import run_experiments

    root = tmp_path_factory.mktemp("reports")
    exp_dir = root / "experiments"
    exp_dir.mkdir()
    docs = {}
    for f in (REPO / "experiments").glob("*.yaml"):
        docs[f.name] = yaml.safe_load(f.read_text())
        docs[f.name]["defaults"] = {**(docs[f.name].get("defaults") or {}), **FAST}
        for row in docs[f.name].get("rows") or []:
            # table6's opt-in rows (ResNet-20 to 56, five seeds each) with two seeds: 12 fewer
            # runs, a fifth of the fixture's training; ResNet-110 keeps its five (like with like)
            if row.get("opt_in") and len(row.get("seeds") or []) > 2:
                row["seeds"] = row["seeds"][:2]
        if f.stem == "remedies":  # two of its rows, one seed: the page drawn from real runs, cheaply
            docs[f.name]["defaults"]["seeds"] = [1]
        (exp_dir / f.name).write_text(yaml.safe_dump(docs[f.name]))
    (exp_dir / "plugins").mkdir()  # plugin_example.yaml's plug-in, beside it as in experiments/
    for plugin in (REPO / "experiments" / "plugins").glob("*.py"):
        (exp_dir / "plugins" / plugin.name).write_text(plugin.read_text())
    files = [str(exp_dir / f"{n}.yaml") for n in ("figure1", "figure6", "ablations", "table6", "remedies")]
    # estimate=False: the plan would time each of the 13 models first (seconds each on a slow CPU)
    run_experiments(files, profile="smoke", data=str(tiny_tar), device="cpu", progress=False, estimate=False,
                    results=str(root / "results"), data_dir=root / "data", only=[
                        "plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56",
                        "resnet110", "resnet20-B", "resnet56-B", "preresnet110", "plain110", "fixup56",
                        "plain56_deltaorth"])
    # resnet56-noaug (ablations) and resnet1202 (opt-in) stay untrained: --only records the former
    # as left out (.left-out.json), and the reports count it so
    # an unfinished run, consistent (interrupted at its first log line, no checkpoint kept)
    run = next((root / "results" / "figure6").glob("resnet56-s1-*"))
    meta = json.loads((run / "meta.json").read_text())
    meta.update(status="interrupted", iteration=2)
    meta.pop("files")
    (run / "meta.json").write_text(json.dumps(meta))
    log = (run / "log.csv").read_text().splitlines()
    (run / "log.csv").write_text("\n".join(log[:-1]) + "\n")
    (run / "checkpoint.pt").unlink(missing_ok=True)  # a finished run keeps none
    (run / "model.pt").unlink()
    index = build_reports(results=root / "results", out=root / "out", experiments_dir=exp_dir)
    return root, index




@pytest.fixture(autouse=True)
def own_timing_cache(tmp_path_factory, monkeypatch):
    """Each test its own kept step timings (runs/training/timing.py): none from an earlier
    test or from the machine's own ~/.cache, so a plan times what the test expects it to."""
    monkeypatch.setenv("RESNET_EXP_CACHE_DIR", str(tmp_path_factory.mktemp("timings")))
