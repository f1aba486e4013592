"""Results you can trust: one test per case of the integrity issue, then a property test.

Each case damages a run folder, a dataset or an experiment row the way a disk problem, a
sync tool, a hand edit or a crafted file would, and checks that the suite notices: the
planner never skips a damaged run as finished, the reports never draw it, and bad input
is refused with the file, row and key named.
"""

import io
import os
import pickle
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_exp.data.cifar10 import DatasetError, load_cifar10
from resnet_exp.runs.planning.experiments import ExperimentError, load_experiment, select_runs
from resnet_exp.runs.planning.plan import Action, make_plan
from resnet_exp.reporting.results import load_results
from resnet_exp.runs.rundir import RunDir, RunStatus
from resnet_exp.runs.executing.runner import ExecutorChoice, ResultsNotWritable, run_experiments

from .conftest import write_experiment, write_image_folder

ROWS = "rows:\n  - {model: resnet8, iterations: 40, milestones: [30], eval_every: 10, batch_size: 16}\n"


@pytest.fixture()
def kw(tiny_tar, tmp_path):
    return dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data",
                estimate=False, executor=ExecutorChoice(threads=1))


def one_run(results: Path) -> RunDir:
    return next(RunDir.all_in(results))


def plan_action(exp: Path, results: Path, kw: dict) -> Action:
    specs = load_experiment(exp, "smoke")
    sha = load_cifar10(kw["data"], data_dir=kw["data_dir"], verbose=False).provenance["sha256"]
    return make_plan(specs, results, sha).runs[0].action


@pytest.fixture()
def finished(kw, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", ROWS)
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    return exp, tmp_path / "r", one_run(tmp_path / "r")


# --------------------------------------------------------------------------- run folders
def test_a_finished_run_with_a_cut_log_is_damaged_not_finished(finished, kw, capsys):
    exp, results, run = finished
    lines = run.log_path.read_text().splitlines()
    run.log_path.write_text("\n".join(lines[:3]) + "\n")  # header + 2 lines
    assert plan_action(exp, results, kw) == Action.DAMAGED
    capsys.readouterr()
    assert run_experiments([str(exp)], results=str(results), **kw) == 1  # not skipped as finished
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "--retrain-damaged" in out and "2 of the 4 lines" in out
    res = load_results(results)
    assert not len(res.runs) and res.damaged and "log.csv" in res.damaged[0][1]
    # the fix: moved aside (kept), trained again
    assert run_experiments([str(exp)], results=str(results), retrain_damaged=True, **kw) == 0
    assert len(one_run(results).read_log()) == 4 and one_run(results).check().ok
    kept = list((results / ".damaged").rglob("log.csv"))
    assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == 3


def test_a_partial_run_with_a_cut_log_never_resumes_into_a_gap(kw, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", ROWS)
    results = tmp_path / "r"
    assert run_experiments([str(exp)], results=str(results), **kw) == 0
    run = one_run(results)
    # make it a run checkpointed at 30 whose log lost lines 20 and 30
    meta = run.read_meta()
    meta.update(status="interrupted", iteration=30, files={})
    run.write_meta(meta)
    torch.save({"iteration": 30}, run.checkpoint_path)
    lines = run.log_path.read_text().splitlines()
    run.log_path.write_text("\n".join(lines[:2]) + "\n")
    assert plan_action(exp, results, kw) == Action.DAMAGED
    assert "lacks lines the checkpoint" in str(run.check())


def test_a_finished_run_whose_meta_is_not_json_is_listed_as_damaged(finished):
    _, results, run = finished
    run.meta_path.write_text("{ not json")
    res = load_results(results)
    assert not len(res.runs)
    assert res.damaged == [(str(run.path), "meta.json is missing or not JSON")]


def test_an_unreadable_checkpoint_is_moved_aside_and_the_run_restarts(kw, tmp_path, capsys):
    exp = write_experiment(tmp_path / "e.yaml", ROWS)
    results = tmp_path / "r"
    run_experiments([str(exp)], results=str(results), **kw)
    run = one_run(results)
    clean_log = run.read_log()
    # a run that was checkpointed and then lost half of its checkpoint
    meta = run.read_meta()
    meta.update(status="interrupted", iteration=20)
    meta.pop("files")
    run.write_meta(meta)
    run.log_path.write_text("\n".join(run.log_path.read_text().splitlines()[:3]) + "\n")
    run.model_path.unlink()
    torch.save({"iteration": 20, "model": {}}, run.checkpoint_path)
    run.checkpoint_path.write_bytes(run.checkpoint_path.read_bytes()[:100])  # truncated
    capsys.readouterr()
    assert run_experiments([str(exp)], results=str(results), **kw) == 0
    out = capsys.readouterr().out
    assert "the checkpoint cannot be used" in out and "training again from the start" in out
    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["checkpoint_problems"][0]["moved_to"] == "checkpoint.pt.unusable-1"
    assert (run.path / "checkpoint.pt.unusable-1").exists()
    assert [r["test_error"] for r in run.read_log()] == [r["test_error"] for r in clean_log]  # from the start


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_crafted_checkpoint_runs_no_code(kw, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", ROWS)
    results = tmp_path / "r"
    run_experiments([str(exp)], results=str(results), **kw)
    run = one_run(results)
    meta = run.read_meta()
    meta.update(status="interrupted", iteration=20)
    meta.pop("files")  # no recorded checksum: the file is unpickled, with weights_only
    run.write_meta(meta)
    _Evil.marker = tmp_path / "pwned"
    with open(run.checkpoint_path, "wb") as f:
        pickle.dump({"iteration": 20, "model": _Evil()}, f)
    assert run_experiments([str(exp)], results=str(results), **kw) == 0
    assert not _Evil.marker.exists()
    assert run.read_meta()["checkpoint_problems"] and run.status() == RunStatus.FINISHED


def test_a_resume_at_the_last_iteration_records_numbers(kw, tmp_path, capsys, monkeypatch):
    """Killed after the final checkpoint, before meta.json said finished: the rerun has
    nothing left to train, and must still record the final errors as numbers."""
    import resnet_exp.runs.training.responses as responses

    exp = write_experiment(tmp_path / "e.yaml", ROWS)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a second Ctrl-C would, right after the last checkpoint

    monkeypatch.setattr(responses, "save_responses", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiments([str(exp)], results=str(tmp_path / "r"), **kw)
    monkeypatch.undo()
    run = one_run(tmp_path / "r")
    assert run.status() == RunStatus.INTERRUPTED and run.read_meta()["iteration"] == 40
    capsys.readouterr()
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    out = capsys.readouterr().out
    assert "resuming at iteration 40 (4 log lines kept)" in out
    final = run.read_meta()["final"]
    assert all(isinstance(final[k], float) for k in ("train_error", "test_error", "train_loss", "test_loss"))
    line = next(x for x in out.splitlines() if x.strip().startswith("e/resnet8-s1"))
    assert line.split()[1:3] == ["finished", "40"] and "-" not in line.split()[3:5]
    assert run.check().ok


def test_orphan_tmp_files_are_removed_when_safe(finished, kw, tmp_path):
    exp, results, run = finished
    orphan = run.path / ".log.csv.abc123.tmp"
    orphan.write_text("half")
    cache_orphan = Path(kw["data_dir"]) / "cache" / ".cifar10-x.pt.def.tmp"
    cache_orphan.write_bytes(b"half")
    meta = run.read_meta()
    meta["status"] = "failed"
    run.write_meta(meta)  # so that the run is trained again (under its lock)
    for cache in (Path(kw["data_dir"]) / "cache").glob("cifar10-*.pt"):
        cache.unlink()  # a decode happens, under the cache lock
    assert run_experiments([str(exp)], results=str(results), **kw) == 0
    assert not orphan.exists() and not cache_orphan.exists()


def test_a_huge_loss_is_divergence_not_a_finished_run(kw, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", ROWS.replace("batch_size: 16}", "batch_size: 16, lr: 1000}"))
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    run = one_run(tmp_path / "r")
    assert run.status() == RunStatus.DIVERGED, run.read_log()


def test_a_results_folder_that_cannot_be_written_is_a_clear_error(kw, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", ROWS)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")  # root ignores chmod; this it cannot
    with pytest.raises(ResultsNotWritable, match=f"{blocker}.*cannot be written.*nothing was trained"):
        run_experiments([str(exp)], results=str(blocker / "results"), **kw)


# --------------------------------------------------------------------------- data
def test_a_flipped_byte_in_a_tar_gz_is_an_error(tiny_tar, tmp_path):
    data = bytearray(tiny_tar.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flipped.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_cifar10(bad, data_dir=tmp_path / "d", verbose=False)


def test_a_jpeg_with_zeroed_bytes_is_an_error_naming_it(arrays, tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "tree", arrays)
    victim = sorted((root / "train" / "cat").iterdir())[0]
    jpg = victim.with_suffix(".jpg")
    Image.open(victim).save(jpg, quality=75)
    victim.unlink()
    data = bytearray(jpg.read_bytes())
    data[200:456] = bytes(256)
    jpg.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"train/cat/{jpg.name} is corrupt"):
        load_cifar10(root, data_dir=tmp_path / "d", verbose=False)


def test_changed_bytes_with_the_same_size_and_mtime_change_the_sha(arrays, tmp_path):
    root = write_image_folder(tmp_path / "tree", arrays)
    first = load_cifar10(root, data_dir=tmp_path / "d", verbose=False)
    f = sorted((root / "test" / "dog").iterdir())[0]
    st_ = f.stat()
    from PIL import Image

    img = Image.open(f).convert("RGB")
    img.putpixel((0, 0), tuple(255 - v for v in img.getpixel((0, 0))))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    f.write_bytes(buf.getvalue())
    os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    second = load_cifar10(root, data_dir=tmp_path / "d", verbose=False)
    assert second.provenance["sha256"] != first.provenance["sha256"]
    assert not torch.equal(second.test_x, first.test_x)


def test_a_cache_with_altered_tensors_is_rebuilt(tiny_tar, tmp_path, capsys):
    first = load_cifar10(tiny_tar, data_dir=tmp_path / "d", verbose=False)
    cache = next((tmp_path / "d" / "cache").glob("cifar10-*.pt"))
    d = torch.load(cache, weights_only=True)
    d["train_x"][0, 0, 0, 0] ^= 0xFF
    torch.save(d, cache)
    capsys.readouterr()
    again = load_cifar10(tiny_tar, data_dir=tmp_path / "d", verbose=False)
    assert capsys.readouterr().out.count("ignoring unusable cache") == 1  # said once, not once per read
    assert torch.equal(again.train_x, first.train_x)


# --------------------------------------------------------------------------- rows
@pytest.mark.parametrize("text,match", [
    ("- {model: resnet20, baseline: nosuchexp/nosuchrun}", r"row 1 \(resnet20\): key 'baseline'.*no experiment file"),
    ("- {model: resnet20, baseline: bad/nosuchrun}", r"key 'baseline'.*bad has no row named 'nosuchrun'"),
    ("- {model: resnet20, model: resnet32}", r"duplicate key 'model'"),
    ("- {model: resnet20, seed: 99999999999999999999}", r"key 'seed' must be <= 4294967295"),
    ("- {model: resnet20, val_split: 7}", r"key 'val_split' must be a multiple of 10"),
])
def test_bad_rows_are_refused_before_training(tmp_path, text, match):
    write_experiment(tmp_path / "bad.yaml", "rows:\n  - {model: resnet20}\n")
    f = write_experiment(tmp_path / "row.yaml", "rows:\n  " + text + "\n")
    with pytest.raises(ExperimentError, match=match):
        load_experiment(f, "smoke")


def test_two_experiment_files_with_one_name_are_refused(tmp_path):
    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        files.append(str(write_experiment(tmp_path / folder / "figure1.yaml", "rows:\n  - {model: resnet20}\n")))
    with pytest.raises(ExperimentError, match="two experiment files named 'figure1'"):
        select_runs(files, "smoke")


@pytest.mark.parametrize("row,match", [
    ("batch_size: 100000", r"row 1 \(resnet8\): key 'batch_size' 100000 exceeds the 200 training images"),
    ("val_split: 60000", r"row 1 \(resnet8\): key 'val_split' 60000 leaves no training images"),
])
def test_rows_too_big_for_the_data_are_refused_once_it_loads(kw, tmp_path, row, match):
    exp = write_experiment(tmp_path / "e.yaml", "rows:\n  - {model: resnet8, train_per_class: null, " + row + "}\n")
    with pytest.raises(ExperimentError, match=match):
        run_experiments([str(exp)], results=str(tmp_path / "r"), **kw)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- property
FILES = ["meta.json", "log.csv", "model.pt", "mean.pt", "responses.csv", "checkpoint.pt"]


@pytest.fixture(scope="module")
def pristine(tiny_tar, tmp_path_factory):
    """A finished run and a partial one (interrupted at iteration 20 with a checkpoint)."""
    root = tmp_path_factory.mktemp("pristine")
    kw = dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=root / "data",
              estimate=False, executor=ExecutorChoice(threads=1))
    exp = write_experiment(root / "e.yaml", ROWS)
    run_experiments([str(exp)], results=str(root / "finished"), **kw)
    part = write_experiment(root / "p.yaml", ROWS.replace("iterations: 40", "iterations: 400"))
    results = root / "partial"
    from resnet_exp.runs.planning.experiments import load_experiment as _load
    from resnet_exp.runs.training.train import train_run
    from resnet_exp.data.loader import prepare_splits

    spec = _load(part, "smoke")[0]
    ds = load_cifar10(str(tiny_tar), data_dir=root / "data", verbose=False)
    sha = ds.provenance["sha256"]
    run = RunDir.for_run(results, spec.experiment, spec.run_dir_name(sha))
    splits = prepare_splits(ds, torch.device("cpu"), spec.recipe.train_per_class, spec.recipe.test_per_class)
    stop = root / "stop"

    def stop_after_two_lines() -> None:  # the driver's stop file, created mid-run
        while len(run.read_log()) < 2:
            time.sleep(0.005)
        stop.touch()

    import resnet_exp.runs.training.train as train_mod
    from resnet_exp import stopping

    poll, stopping.STOP_FILE_POLL_S = stopping.STOP_FILE_POLL_S, 0.0  # look at every iteration
    threading.Thread(target=stop_after_two_lines, daemon=True).start()
    try:
        with pytest.raises(train_mod.RunInterrupted):
            train_run(spec, splits, run, torch.device("cpu"), ds.provenance, spec.identity(sha), progress=False,
                      stop_file=stop)
    finally:
        stopping.STOP_FILE_POLL_S = poll
    assert run.status() == RunStatus.INTERRUPTED and run.has_checkpoint() and run.check().ok
    return {"finished": (exp, root / "finished"), "partial": (part, results), "sha": sha}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["finished", "partial"]), name=st.sampled_from(FILES),
       op=st.sampled_from(["truncate", "flip", "delete"]), where=st.floats(0, 1, exclude_max=True),
       bit=st.integers(0, 7))
def test_damage_is_never_presented_as_a_good_finished_run(pristine, tmp_path_factory, kind, name, op, where, bit):
    """Any truncation or deletion of any file, and any changed byte in a file that holds
    results (log.csv, model.pt, mean.pt, responses.csv), of a finished or a partial run:
    the planner never skips it as finished and the reports never draw it as finished.
    (A finished run's checkpoint is deleted when it finishes; a changed byte in meta.json
    that keeps it valid JSON may alter nothing the results depend on, so meta.json gets
    truncations and deletions only.)"""
    exp, src = pristine[kind]
    results = tmp_path_factory.mktemp("damaged") / "r"
    shutil.copytree(src, results)
    run = next(RunDir.all_in(results))
    target = run.path / name
    if not target.exists() or (name == "meta.json" and op == "flip"):
        return
    data = target.read_bytes()
    if op == "delete":
        target.unlink()
    elif op == "truncate":
        if not data[int(len(data) * where):].strip():
            return  # only whitespace cut (meta.json's last newline): the same file, not damage; Hypothesis found where=1-2**-52
        target.write_bytes(data[:int(len(data) * where)])
    else:
        b = bytearray(data)
        b[int(len(b) * where)] ^= 1 << bit
        target.write_bytes(bytes(b))
    specs = load_experiment(exp, "smoke")
    action = make_plan(specs, results, pristine["sha"]).runs[0].action
    res = load_results(results)
    drawn_finished = len(res.runs) and (res.runs["status"] == "finished").any()
    if action == Action.DAMAGED:  # and the reports say so, with the folder
        assert [path for path, _ in res.damaged] == [str(run.path)], (name, op)
    if kind == "finished":
        assert action != Action.FINISHED and not drawn_finished, (name, op, action)
    else:
        assert action not in (Action.FINISHED, Action.REUSE) and not drawn_finished, (name, op, action)
