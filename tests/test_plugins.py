"""A researcher's own block from a row (models/plugins.py): it trains through the local runner
and the pool's spawned workers (Ray without shared storage: tests/test_ray.py), records the
code it trained, is a new run when the file changes, and every broken plug-in is refused with
a clear message before anything loads or trains. The reports read its runs without importing it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_exp.models import build_model, names, plugins
from resnet_exp.models.plugins import PluginError, load_plugins
from resnet_exp.models.registry import BLOCKS
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments
from resnet_exp.runs.planning.experiments import (SUITE_EXPERIMENTS, ExperimentError, baseline_seed_runs,
                                                  load_experiment)
from resnet_exp.runs.rundir import RunDir, RunStatus
from resnet_exp.runs.training.step import make_optimizer

from .conftest import REPO
from .plugin_files import SCALED, write_plugin_experiment

ONE_ROW = "rows:\n  - {model: scaled8, iterations: 4, milestones: [2], eval_every: 2, batch_size: 10}\n"


@pytest.fixture(autouse=True)
def registry_as_it_was():
    """What a test's plug-ins register is withdrawn after it (the tables are process-wide)."""
    tables = (names.FAMILIES, BLOCKS, names.BLOCK_CONVS, names.BLOCK_ORIGINS, plugins._LOADED, plugins._PATHS)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


@pytest.fixture()
def kw(tiny_tar, tmp_path):
    return dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data",
                estimate=False)


def runs(results: Path) -> list[RunDir]:
    return sorted(RunDir.all_in(results), key=lambda r: r.name)


def test_a_plugin_model_trains_from_a_row_and_records_the_code_it_trained(kw, tmp_path):
    exp = write_plugin_experiment(tmp_path / "mine", ONE_ROW)
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    [run] = runs(tmp_path / "r")
    meta = run.read_meta()
    sha = plugins.hashlib.sha256(SCALED.encode()).hexdigest()
    assert meta["status"] == RunStatus.FINISHED and run.check().ok
    assert meta["config"]["plugins"] == [{"name": "plugins/scaled.py", "file": "scaled.py", "sha256": sha}]
    assert meta["config"]["family"] == "scaled" and meta["config"]["depth"] == 8
    assert run.plugin_path("scaled.py").read_text() == SCALED and "plugin-scaled.py" in meta["files"]
    [spec] = load_experiment(exp, "smoke")
    assert spec.identity("d") != spec.__class__(**{**spec.__dict__, "plugins": ()}).identity("d")  # the code counts

    # the block's no_weight_decay(): its scalars in a group without decay, the rest with the recipe's
    model = build_model("scaled8")
    groups = make_optimizer(model, spec.recipe, torch.device("cpu")).param_groups
    assert sorted((len(g["params"]), g["weight_decay"]) for g in groups) == [(3, 0.0), (len(list(model.parameters())) - 3,
                                                                               spec.recipe.weight_decay)]

    # the reports, in a process that never imports the plug-in: a finished run, not damaged
    code = ("import json, sys; from resnet_exp.reporting.results import load_results; "
            "r = load_results(sys.argv[1]); import resnet_exp.models.names as n; "
            "print(json.dumps({'runs': r.runs[['name', 'family', 'depth', 'status']].astype(str).values.tolist(), "
            "'damaged': r.damaged, 'plugin_families': [k for k, f in n.FAMILIES.items() if f.origin != 'built-in']}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"runs": [["scaled8", "scaled", "8", "finished"]], "damaged": [], "plugin_families": []}

    # unchanged: already done; edited: a new run beside the old one
    before = run.log_path.read_bytes()
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    assert [r.name for r in runs(tmp_path / "r")] == [run.name]
    (tmp_path / "mine" / "plugins" / "scaled.py").write_text(SCALED + "\n# an edit\n")
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    after = runs(tmp_path / "r")
    assert len(after) == 2 and run.log_path.read_bytes() == before
    new = next(r for r in after if r.name != run.name)
    assert new.plugin_path("scaled.py").read_text().endswith("# an edit\n") and new.check().ok


def test_the_pool_s_spawned_worker_trains_a_plugin_model(kw, tmp_path):
    """A fresh interpreter: the plug-in comes with the job, not from the driver's imports."""
    exp = write_plugin_experiment(tmp_path / "mine", ONE_ROW)
    assert run_experiments([str(exp)], results=str(tmp_path / "pool"),
                           executor=ExecutorChoice(kind="pool", workers=1, threads=1), **kw) == 0
    [run] = runs(tmp_path / "pool")
    assert run.read_meta()["worker"]["executor"] == "pool" and run.check().ok
    assert run.status() == RunStatus.FINISHED


BROKEN = {
    "an import error": ("import torch\nimport not_a_module_anywhere\n", "scaled.py, line 2: ModuleNotFoundError"),
    "an error at its line": ("x = 1\n\nraise RuntimeError('boom')\n", "scaled.py, line 3: RuntimeError: boom"),
    "a syntax error": ("def f(:\n", "scaled.py, line 1: "),
    "a built-in's name": ("from resnet_exp.models import register_family\nregister_family('resnet')\n",
                          "family 'resnet' is already registered by built-in"),
    "a block clash": ("from resnet_exp.models import register_block, BasicBlock\n"
                      "register_block('basic')(type('B', (BasicBlock,), {}))\n",
                      "block 'basic' is already registered by built-in"),
    "five logits": ("from torch import nn\nfrom resnet_exp.models import register_family\n"
                    "register_family('five', builder=lambda depth, shortcut, classes, zero: "
                    "nn.Sequential(nn.Flatten(), nn.Linear(3072, 5)), depths=(20,))\n",
                    "five20 maps a batch of 2 images of 3x32x32 to (2, 5), not (2, 10)"),
    "not a module": ("from resnet_exp.models import register_family\n"
                     "register_family('three', builder=lambda *a: 3, depths=(20,))\n",
                     "three20: its builder returned int, not a torch.nn.Module"),
    "nothing registered": ("x = 1\n", "registers nothing: call register_family"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plugin_is_refused_before_any_data_loads_or_anything_trains(kw, tmp_path, case):
    text, message = BROKEN[case]
    exp = write_plugin_experiment(tmp_path / "mine", ONE_ROW, plugin=text)
    families, blocks = set(names.FAMILIES), set(BLOCKS)
    with pytest.raises(ExperimentError) as e:
        run_experiments([str(exp)], results=str(tmp_path / "r"), **{**kw, "data": str(tmp_path / "no-data.tar.gz")})
    assert message in str(e.value) and str(exp) in str(e.value)
    assert not (tmp_path / "r").exists()
    assert (set(names.FAMILIES), set(BLOCKS)) == (families, blocks)  # withdrawn: nothing half-registered


def test_a_missing_plugin_and_a_clash_between_two_plugins_are_named(tmp_path):
    exp = tmp_path / "x.yaml"
    exp.write_text("plugins:\n  - plugins/absent.py\n" + ONE_ROW)
    with pytest.raises(ExperimentError, match=r"plug-in 'plugins/absent.py': no such file .*absent.py \(paths are "
                                              r"relative to the experiment file\)"):
        load_experiment(exp, "smoke")
    (tmp_path / "a.py").write_text("from resnet_exp.models import register_family\nregister_family('twin')\n")
    (tmp_path / "b.py").write_text("from resnet_exp.models import BasicBlock, register_block, register_family\n"
                                   "register_block('other')(type('Other', (BasicBlock,), {}))\n"
                                   "register_family('twin', block='other')\n")
    with pytest.raises(PluginError, match=r"b.py, line 3: RegistryError: family 'twin' is already registered "
                                          r"by plug-in .*a.py"):
        load_plugins(["a.py", "b.py"], tmp_path)
    assert "other" not in BLOCKS and names.FAMILIES["twin"].block == "basic"  # b.py withdrawn whole


def test_a_file_outside_experiments_names_the_suite_s_runs_as_baselines(tmp_path):
    exp = write_plugin_experiment(tmp_path / "elsewhere", "rows:\n  - {model: scaled8, seeds: [1, 2], "
                                                         "baseline: figure6/resnet56}\n")
    specs = load_experiment(exp, "quick")
    extra = baseline_seed_runs(specs, "quick")
    assert {(s.experiment, s.name, s.seed) for s in extra} == {("figure6", "resnet56", 1), ("figure6", "resnet56", 2)}
    assert Path(extra[0].file) == SUITE_EXPERIMENTS / "figure6.yaml"
    bad = write_plugin_experiment(tmp_path / "elsewhere", "rows:\n  - {model: scaled8, baseline: nofile/x}\n",
                                  name="bad")
    with pytest.raises(ExperimentError, match="no experiment file nofile.yaml beside .* or in the suite's"):
        load_experiment(bad, "quick")


def test_the_suite_s_own_runs_keep_their_identities():
    """Plug-ins and remedies add no key to a built-in run's identity: the committed references'
    folders are still the runs the planner finds (here: figure6/resnet56 at 1/128)."""
    sha = "87feb744388b1c45dd6757e9e8ead76b1e457ae400d1d3327751594419677c40"  # the JPEG mirror
    specs = {s.name: s for s in load_experiment(REPO / "experiments" / "figure6.yaml", "quick128")}
    folders = {p.name for p in (REPO / "reports" / "reference" / "quick128" / "results" / "figure6").iterdir()}
    assert {specs[n].run_dir_name(sha) for n in ("plain20", "plain56", "resnet20", "resnet56")} == folders


LS_ROW = "rows:\n  - {model: lsnet8, iterations: 4, milestones: [2], eval_every: 2, batch_size: 10, baseline: figure6/resnet20}\n"


@pytest.mark.parametrize("executor", ["local", "pool"])
def test_a_whole_network_without_the_optional_methods_trains_and_finishes(kw, tmp_path, executor, capsys):
    """Issue 55: a network of the user's own (its own block class, per-channel branch scales,
    param_groups(), no response_modules()) finishes; Figure 7 is left out with its reason,
    recorded and shown, never a failure; the index and the ablations page show the run."""
    from resnet_exp.reporting.results import load_results

    from .plugin_files import LSNET

    exp = write_plugin_experiment(tmp_path / "mine", LS_ROW, plugin=LSNET)
    choice = ExecutorChoice(kind=executor, workers=1, threads=1)
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), executor=choice, **kw) == 0
    printed = capsys.readouterr().out
    assert "family 'lsnet': Figure 7's responses: no response_modules() (optional); its runs train without it" \
        in printed  # said once, before the data loads
    [run] = [r for r in runs(tmp_path / "r") if r.experiment == "mine"]
    meta = run.read_meta()
    assert meta["status"] == RunStatus.FINISHED and run.check().ok and run.signals_path.exists()
    assert "responses" in meta["analyses_skipped"] and "response_modules()" in meta["analyses_skipped"]["responses"]
    assert not run.responses_path.exists()
    res = load_results(tmp_path / "r")
    row = res.runs[res.runs["experiment"] == "mine"].iloc[0]
    assert row["status"] == "finished" and "responses" in row["analyses_skipped"]
    from resnet_exp.reporting.ablations import ablation_rows  # its row on the ablations page, against its baseline

    entry = {e["row"]: e for e in ablation_rows(res, REPO / "experiments")}["mine/lsnet8"]
    assert entry["baseline"] == "figure6/resnet20" and entry["status"] == "finished"
    # the index counts it, and lists as missing none of the figure6 runs nobody selected here
    from resnet_exp.reporting.build import write_index

    page = write_index(tmp_path / "out", tmp_path / "r", REPO / "experiments", {}).read_text()
    assert "your own experiment files: mine" in page and "Missing runs</th><td style='text-align:left'>none" in page
    assert json.loads((tmp_path / "r" / ".selected.json").read_text())["runs"] == [
        "figure6/resnet20 (seed 1)", "mine/lsnet8 (seed 1)"]


def test_a_run_failed_by_an_analysis_after_its_last_step_is_finished_without_training_again(kw, tmp_path):
    """What an older version left: a run marked failed after its last step, its checkpoint at
    the last iteration. The next invocation finishes it from there; no step is trained again."""
    from resnet_exp.runs.training import train as train_module

    from .plugin_files import LSNET

    exp = write_plugin_experiment(tmp_path / "mine", LS_ROW.replace(", baseline: figure6/resnet20", ""), plugin=LSNET)

    class Fails(train_module.Callback):
        def on_end(self, ctx, status):
            raise SystemExit("an analysis that ends the process after the last step, as before")

    original = train_module.default_callbacks
    train_module.default_callbacks = lambda: [*original(), Fails()]
    try:
        with pytest.raises(SystemExit):
            run_experiments([str(exp)], results=str(tmp_path / "r"), **kw)
    finally:
        train_module.default_callbacks = original
    [run] = runs(tmp_path / "r")
    run.update_meta(status=RunStatus.FAILED.value)  # what the worker wrote then
    assert run.has_checkpoint() and run.read_meta()["iteration"] == 4
    log = run.log_path.read_bytes()
    assert run_experiments([str(exp)], results=str(tmp_path / "r"), **kw) == 0
    meta = run.read_meta()
    assert meta["status"] == RunStatus.FINISHED and run.check().ok and run.log_path.read_bytes() == log
    assert [a["from_iteration"] for a in meta["attempts"]] == [0, 4]


def test_a_network_whose_backward_reaches_no_weight_is_refused_before_any_data_loads(kw, tmp_path):
    from .plugin_files import DETACHED

    exp = write_plugin_experiment(tmp_path / "mine", "rows:\n  - {model: detached20}\n", plugin=DETACHED)
    with pytest.raises(PluginError) as e:
        run_experiments([str(exp)], results=str(tmp_path / "r"), **{**kw, "data": str(tmp_path / "no-data.tar.gz")})
    assert "family 'detached'" in str(e.value) and "reaches none of its weights" in str(e.value)
    assert not (tmp_path / "r").exists()
