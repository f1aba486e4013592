"""The training step replayed from a CUDA graph, tested on the CPU through its stand-in
(``step.StandIn``: capture keeps the closure, replay calls it on the same static buffers):
the same logs and weights as the eager loop, bit for bit, over the warm-up, a milestone and
a resume; a capture at each new lr; a failed capture falls back to eager. And the loop's
state saved and restored through one object."""

from __future__ import annotations

import pytest
import torch

from resnet_exp import stopping
from resnet_exp.data.loader import TrainBatches
from resnet_exp.runs.planning.experiments import RunSpec, load_profiles
from resnet_exp.runs.rundir import RunDir
from resnet_exp.runs.training import step as step_module
from resnet_exp.runs.training.step import (EagerStep, GraphedStep, StandIn, make_optimizer, make_stepper,
                                           make_train_step, step_mode)
from resnet_exp.runs.training.train import LoopState, RunInterrupted, build_for, default_callbacks

from .conftest import tiny_training, train_tiny
from .test_runner import deterministic, read_log
from .test_signals import StopAt

CPU = torch.device("cpu")
# warm-up on every depth, left at the first check whose error is below 95 % (so it ends early),
# then lr 0.1 with two milestones: four learning rates, so four captures after the eager steps
RECIPE = ("{iterations: 24, milestones: [12, 18], eval_every: 6, batch_size: 16, checkpoint_every_s: 0, "
          "warmup_lr: 0.01, warmup_min_depth: 0, warmup_check_every: 4, warmup_until_train_error: 95.0}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tar):
    return tiny_training(tmp_path_factory.mktemp("step"), tiny_tar, RECIPE, "resnet8")


def train(tiny, folder: str, capture=None, callbacks=None, stop_file=None):
    return train_tiny(tiny, folder, stop_file=stop_file, callbacks=callbacks, capture=capture)


def weights(run: RunDir) -> dict[str, torch.Tensor]:
    return torch.load(run.model_path, weights_only=True)


def same_weights(a: RunDir, b: RunDir) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)  # BN running stats included


@pytest.fixture(scope="module")
def eager(tiny):
    return train(tiny, "eager")


class CountingStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.warmed = 0

    def warm(self, body) -> None:
        self.warmed += 1
        super().warm(body)


def test_the_graphed_loop_is_bit_identical_to_the_eager_loop(tiny, eager):
    capture = CountingStandIn()
    run, meta = train(tiny, "graphed", capture=capture)
    eager_run, eager_meta = eager
    assert deterministic(read_log(run.path)) == deterministic(read_log(eager_run.path))
    assert same_weights(run, eager_run)
    assert run.signals_path.read_bytes() == eager_run.signals_path.read_bytes()
    # the warm-up really ended early and a milestone passed: the four rates of the schedule
    lrs = [float(r["lr"]) for r in read_log(run.path)]
    assert 0.01 in lrs and 0.1 in lrs and 0.001 in lrs and meta["warmup_end_iteration"] is not None
    # three real steps first, then a capture at every new rate: end of warm-up, 12, 18
    assert capture.warmed == step_module.EAGER_STEPS
    assert capture.captures == 4 == meta["step_captures"]
    assert "StandIn" in meta["step"] and eager_meta["step"].startswith("eager")


def test_a_resumed_graphed_run_equals_the_uninterrupted_eager_run(tiny, eager, monkeypatch):
    """Stopped mid-interval (a checkpoint with running sums), resumed through a new capture:
    the log, signals and weights are those of the eager run that never stopped."""
    monkeypatch.setattr(stopping, "STOP_FILE_POLL_S", 0.0)
    root = tiny[0]
    stop = root / "stop-graphed"
    with pytest.raises(RunInterrupted):
        train(tiny, "graphed-resumed", capture=StandIn(), callbacks=[*default_callbacks(), StopAt(14, stop)],
              stop_file=stop)
    stop.unlink()
    capture = CountingStandIn()
    run, meta = train(tiny, "graphed-resumed", capture=capture)
    eager_run, _ = eager
    assert deterministic(read_log(run.path)) == deterministic(read_log(eager_run.path))
    assert run.signals_path.read_bytes() == eager_run.signals_path.read_bytes()
    assert same_weights(run, eager_run) and len(meta["attempts"]) == 2 and run.check().ok
    # resumed at 15 (lr 0.01 since the milestone at 12): real steps 15-17, then one capture at 18 (lr 0.001)
    assert capture.warmed == step_module.EAGER_STEPS and capture.captures == 1


class FailingCapture(StandIn):
    def capture(self, body) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_trains_on_eagerly_with_one_line(tiny, eager, capsys):
    run, meta = train(tiny, "capture-failed", capture=FailingCapture())
    assert deterministic(read_log(run.path)) == deterministic(read_log(eager[0].path))
    assert same_weights(run, eager[0])
    out = capsys.readouterr().out
    assert out.count("capture failed") == 1 and "training eagerly from here" in out


def test_the_graphed_step_reuses_its_static_outputs_and_freezes_the_lr():
    """What a real graph does, and the loop relies on: every call returns the same two
    tensors (read them before the next call), and the rate is the one captured, until a new
    rate makes a new capture."""
    torch.manual_seed(0)
    model = build_for(RunSpec(experiment="t", name="resnet8", model="resnet8", shortcut="A", seed=1,
                              recipe=load_profiles()["smoke"], profile="smoke"), CPU)  # as the loop builds it
    opt = make_optimizer(model, load_profiles()["smoke"], CPU)
    capture = StandIn()
    step = GraphedStep(make_train_step(model, opt, cache_casts=False), opt, capture, eager_steps=1)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    outs = [step(x, y, 0.1) for _ in range(3)]
    assert all(o[0] is outs[0][0] and o[1] is outs[0][1] for o in outs)
    assert capture.captures == 1 and step.x.is_contiguous(memory_format=torch.channels_last)
    opt.param_groups[0]["lr"] = 123.0  # as a graph would, the stand-in ignores a rate set behind its back...
    step(x, y, 0.1)
    assert capture.captures == 1
    step(x, y, 0.01)                   # ...and captures again for a new one
    assert capture.captures == 2 and opt.param_groups[0]["lr"] == 0.01


def test_where_graphs_cannot_be_had_the_step_is_eager_and_says_why():
    recipe = load_profiles()["paper"]
    assert recipe.cuda_graph and not recipe.deterministic  # the defaults
    assert step_mode(recipe, CPU) == "eager (CUDA graphs need a CUDA device, this run trains on cpu)"
    assert step_mode(recipe.model_copy(update={"cuda_graph": False}), torch.device("cuda")).startswith("eager")
    assert step_mode(recipe, torch.device("cuda")).startswith("cuda graph")
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, recipe, CPU)
    stepper, how = make_stepper(model, opt, recipe, CPU)
    assert isinstance(stepper, EagerStep) and how.startswith("eager")


def test_the_loop_state_saves_and_restores_through_one_object(tiny):
    """state_dict -> a fresh state's load_state_dict -> state_dict: the same checkpoint."""
    _, spec, splits, _ = tiny

    def fresh() -> LoopState:
        model = build_for(spec, CPU)
        opt = make_optimizer(model, spec.recipe, CPU)
        batches = TrainBatches(splits.train_x, splits.train_y, 16, True, seed=spec.seed)
        return LoopState(model, opt, batches, default_callbacks(), CPU, warming_up=True)

    a = fresh()
    step = make_train_step(a.model, a.optimizer)
    for i in range(5):
        x, y = a.batches.next()
        loss, wrong = step(x, y)
        a.add(loss, wrong, len(y))
        a.iteration = i + 1
    a.elapsed_s, a.callbacks[0].rows = 1.5, [{"iteration": 0, "layer": 1, "name": "w", "grad_norm": 1.0,
                                             "weight_norm": 2.0, "response_std": 3.0}]
    saved = a.state_dict()
    b = fresh()
    b.load_state_dict(saved)
    again = b.state_dict()

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    x, y = dict(flat(saved)), dict(flat(again))
    assert x.keys() == y.keys() and "callbacks.SignalRecorder.rows" in x
    for k in x:
        assert (torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k]), k
    assert torch.equal(a.batches.next()[1], b.batches.next()[1])  # the same stream from here on
