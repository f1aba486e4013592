"""Untrusted input runs no code and gives a clear error: crafted pickles in a torchvision
layout (folder and archive), batches that are not CIFAR-10's, oversized images, and
someone else's results folder with files this version cannot read."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from resnet_exp.data.cifar10 import DatasetError, load_cifar10
from resnet_exp.reporting.results import load_responses, load_results

from .conftest import REPO, write_torchvision_layout
from .fake_runs import write_run

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Exploit:
    """What a crafted batch holds: unpickling it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(folder: Path, name: str, payload: object) -> Path:
    target = folder / "cifar-10-batches-py" / name
    target.write_bytes(pickle.dumps(payload))
    return target


@pytest.mark.parametrize("name", BATCHES)
def test_a_crafted_pickle_in_any_batch_runs_no_code_and_is_named(tmp_path, arrays, name):
    marker = tmp_path / "PWNED"
    data = write_torchvision_layout(tmp_path / "data", arrays)
    target = plant(data, name, {b"data": Exploit(marker), b"labels": [0]})
    with pytest.raises(DatasetError) as e:
        load_cifar10(data, data_dir=tmp_path / "cache", verbose=False)
    assert not marker.exists()
    message = str(e.value)
    assert str(target) in message and ".system, which a CIFAR-10 batch never holds" in message
    assert "Nothing was run from it" in message


def test_a_crafted_pickle_in_a_torchvision_archive_runs_no_code(tmp_path, arrays):
    marker = tmp_path / "PWNED"
    data = write_torchvision_layout(tmp_path / "data", arrays)
    plant(data, "data_batch_3", Exploit(marker))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DatasetError, match=r"cifar-10-python.tar.gz: member data_batch_3 is not a CIFAR-10 batch"):
        load_cifar10(archive, data_dir=tmp_path / "cache", verbose=False)
    assert not marker.exists()


def test_the_run_command_reports_a_crafted_batch_in_one_line(tmp_path, arrays):
    marker = tmp_path / "PWNED"
    data = write_torchvision_layout(tmp_path / "data", arrays)
    plant(data, "data_batch_1", Exploit(marker))
    proc = subprocess.run([sys.executable, "-m", "resnet_exp", "run", str(REPO / "experiments/figure1.yaml"),
                           "--profile", "smoke", "--data", str(data), "--results", str(tmp_path / "r"),
                           "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and not marker.exists()
    assert "data_batch_1 is not a CIFAR-10 batch" in proc.stderr


@pytest.mark.parametrize("payload,problem", [
    (["not", "a", "dict"], "expected a dict"),
    ({b"images": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, "lacks the key(s) data"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "must be a uint8 array"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "of shape (2, 100)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "list of integers"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels outside 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, "2 images and 3 labels"),
    ({b"data": np.zeros((2, 3072), object), b"labels": [0, 1]}, "must be a uint8 array"),
], ids=["list", "keys", "dtype", "shape", "label-type", "label-range", "count", "object-array"])
def test_a_batch_that_is_not_cifar10_is_a_dataset_error_naming_it(tmp_path, arrays, payload, problem):
    data = write_torchvision_layout(tmp_path / "data", arrays)
    target = plant(data, "test_batch", payload)
    with pytest.raises(DatasetError) as e:
        load_cifar10(data, data_dir=tmp_path / "cache", verbose=False)
    assert str(target) in str(e.value) and problem in str(e.value)


def test_garbage_bytes_in_a_batch_are_a_dataset_error(tmp_path, arrays):
    data = write_torchvision_layout(tmp_path / "data", arrays)
    (data / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x04garbage" * 10)
    with pytest.raises(DatasetError, match="data_batch_2 is not a CIFAR-10 batch: not a readable pickle"):
        load_cifar10(data, data_dir=tmp_path / "cache", verbose=False)


def test_python2_style_batches_still_load(tmp_path, arrays):
    """The real batches are protocol-2 pickles: their numpy and bytes globals are admitted."""
    data = write_torchvision_layout(tmp_path / "data", arrays)
    for name in BATCHES:
        f = data / "cifar-10-batches-py" / name
        d = pickle.loads(f.read_bytes())
        d[b"filenames"], d[b"batch_label"] = [b"x.png"] * len(d[b"labels"]), b"batch"
        f.write_bytes(pickle.dumps(d, protocol=2))
    ds = load_cifar10(data, data_dir=tmp_path / "cache", verbose=False)
    assert ds.train_x.shape == (200, 3, 32, 32) and int(ds.train_y.max()) == 9


def test_an_oversized_image_is_refused_before_it_is_decoded(tmp_path, arrays):
    from PIL import Image

    from .conftest import write_image_folder

    root = write_image_folder(tmp_path / "imgs", arrays)
    Image.new("RGB", (6000, 6000)).save(root / "train" / "cat" / "huge.png")  # 108 MB once decoded
    with pytest.raises(DatasetError, match="huge.png is 6000x6000, expected 32x32"):
        load_cifar10(root, data_dir=tmp_path / "cache", verbose=False)


def test_an_oversized_tar_member_is_refused_before_it_is_read(tmp_path):
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("cifar/train/cat/0.png")
        info.size = 2 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(DatasetError, match="0.png is 2 MB, larger than any file of CIFAR-10"):
        load_cifar10(archive, data_dir=tmp_path / "cache", verbose=False)


def test_someone_else_s_results_folder_is_read_without_a_traceback(tmp_path):
    r = tmp_path / "r"
    write_run(r, "figure6", "plain20", 10, 12, responses=[0.5, 0.4])
    odd = write_run(r, "figure6", "resnet20", 8, 10, responses=[0.3])
    meta = json.loads(odd.meta_path.read_text())
    meta["config"]["model"] = "transformer9000"  # a model this version does not know
    odd.meta_path.write_text(json.dumps(meta))
    broken = write_run(r, "figure6", "plain56", 20, 22, responses=[0.5])
    broken.responses_path.write_bytes(b"\xff\xfe not a csv \x00")  # re-recorded, so the checksum agrees
    meta = json.loads(broken.meta_path.read_text())
    import hashlib
    meta["files"]["responses.csv"] = hashlib.sha256(broken.responses_path.read_bytes()).hexdigest()
    broken.meta_path.write_text(json.dumps(meta))
    res = load_results(r)
    assert sorted(res.runs["name"]) == ["plain20", "plain56"]
    assert any("transformer9000" in problem for _, problem in res.damaged)
    resp = load_responses(res, ["plain20", "plain56"])
    assert sorted(set(resp["name"])) == ["plain20"]  # the unreadable responses.csv is left out, not drawn


def test_an_unusable_mean_pt_is_named_when_responses_are_computed(tmp_path, tiny_tar, capsys):
    import torch

    from resnet_exp.runs.training.responses import update_responses
    from resnet_exp.runs.executing.runner import run_experiments

    exp = tmp_path / "e.yaml"
    exp.write_text("defaults: {iterations: 2, milestones: [1], eval_every: 1, batch_size: 10}\nrows:\n"
                   "  - model: resnet8\n")
    run_experiments([str(exp)], profile="smoke", data=str(tiny_tar), device="cpu", progress=False,
                    results=str(tmp_path / "r"), data_dir=tmp_path / "d", estimate=False)
    run = next((tmp_path / "r" / "e").glob("resnet8-*"))
    torch.save({"not": "a tensor"}, run / "mean.pt")
    (run / "responses.csv").unlink()
    meta = json.loads((run / "meta.json").read_text())
    meta["files"].pop("responses.csv"), meta["files"].pop("mean.pt")
    (run / "meta.json").write_text(json.dumps(meta))
    update_responses(str(tmp_path / "r"), data=str(tiny_tar), data_dir=str(tmp_path / "d"))
    out = capsys.readouterr().out
    assert "its mean.pt or model.pt is unusable" in out and "not a per-pixel mean" in out
