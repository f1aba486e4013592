"""The training step replayed from a CUDA graph, tested on the CPU through its stand-in
(``step.StandIn``: capture keeps the closure, replay calls it on the same static buffers):
the same logs and weights as the eager loop, bit for bit, over the warm-up, a milestone and
a resume; a capture at each new lr; a failed capture falls back to eager. And the loop's
state saved and restored through one object."""

from __future__ import annotations

import copy
import queue
import re
import signal
import sys

import pytest
import torch

from resnet_exp import stopping
from resnet_exp.data.loader import TrainBatches
from resnet_exp.runs.planning.experiments import RunSpec, load_profiles
from resnet_exp.runs.rundir import RunDir
from resnet_exp.runs.training import step as step_module
from resnet_exp.runs.training.step import (Captures, EagerStep, GraphedStep, GraphStateChanged, StandIn, live_captures,
                                           make_optimizer, make_stepper, make_train_step, set_lr, step_mode)
from resnet_exp.runs.training.train import LoopState, RunInterrupted, build_for, default_callbacks

from .conftest import tiny_training, train_tiny, write_experiment
from .test_runner import deterministic, read_log
from .test_signals import StopAt

CPU = torch.device("cpu")
# warm-up on every depth, left at the first check whose error is below 95 % (so it ends early),
# then lr 0.1 with two milestones: four learning rates, so four captures after the eager steps
RECIPE = ("{iterations: 24, milestones: [12, 18], eval_every: 6, batch_size: 16, checkpoint_every_s: 0, "
          "warmup_lr: 0.01, warmup_min_depth: 0, warmup_check_every: 4, warmup_until_train_error: 95.0}")


@pytest.fixture(autouse=True)
def no_capture_alive(monkeypatch):
    """Each test starts with no capture alive in this process (the count is process-wide: a
    failed test must not leak its capture into the next)."""
    monkeypatch.setattr(Captures, "live", 0)


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


def _graphed(capture, seed: int = 0):
    """A resnet8 as the loop builds it, its optimizer and a graphed step through ``capture``
    (one real step, then the capture), with one batch."""
    torch.manual_seed(seed)
    recipe = load_profiles()["smoke"]
    model = build_for(RunSpec(experiment="t", name="resnet8", model="resnet8", shortcut="A", seed=1,
                              recipe=recipe, profile="smoke"), CPU)
    opt = make_optimizer(model, recipe, CPU)
    step = GraphedStep(make_train_step(model, opt, cache_casts=False), model, opt, capture, eager_steps=1)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    return model, opt, step, x, y


def test_the_graphed_step_reuses_its_static_outputs_and_captures_again_at_each_new_lr():
    """What a real graph does, and the loop relies on: every call returns the same two
    tensors (read them before the next call), and a new rate makes a new capture."""
    capture = StandIn()
    model, opt, step, x, y = _graphed(capture)
    outs = [step(x, y, 0.1) for _ in range(3)]
    assert all(o[0] is outs[0][0] and o[1] is outs[0][1] for o in outs)
    assert capture.captures == 1 and step.x.is_contiguous(memory_format=torch.channels_last)
    step(x, y, 0.01)
    assert capture.captures == 2 and opt.param_groups[0]["lr"] == 0.01
    assert [c["lr"] for c in step.capture_log] == [0.1, 0.01] and live_captures() == 1
    with step:
        pass
    assert live_captures() == 0 and all(p.grad is None for p in model.parameters())


def test_a_replay_keeps_the_captured_lr_as_a_graph_does():
    """A rate set behind the step's back after a capture: a real graph replays the captured
    0.1 and ignores it. The strict stand-in refuses the replay, naming it; the mimicking one
    replays 0.1 like the graph (the weights an eager step at 0.1 gives, bit for bit)."""
    model, opt, step, x, y = _graphed(StandIn())
    step(x, y, 0.1), step(x, y, 0.1)
    opt.param_groups[0]["lr"] = 123.0
    with pytest.raises(GraphStateChanged, match=r"param group 0's lr is 123.0, 0.1 at capture"):
        step(x, y, 0.1)
    with step:
        pass

    model, opt, step, x, y = _graphed(StandIn(mimic=True))
    step(x, y, 0.1), step(x, y, 0.1)
    twin = copy.deepcopy(model)
    twin_opt = make_optimizer(twin, load_profiles()["smoke"], CPU)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # its own momentum buffers
    opt.param_groups[0]["lr"] = 123.0
    step(x, y, 0.1)
    set_lr(twin_opt, 0.1)
    make_train_step(twin, twin_opt)(x, y)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert opt.param_groups[0]["lr"] == 123.0  # what was set stays set; the replay used the frozen value
    with step:
        pass


@pytest.mark.parametrize("change, names", [
    (lambda model, opt: model.bn1.load_state_dict(model.bn1.state_dict(), assign=True),
     "tensors were replaced (the graph reads and writes those it was captured with): parameter bn1.weight, "
     "parameter bn1.bias, buffer bn1.running_mean, buffer bn1.running_var, buffer bn1.num_batches_tracked"),
    (lambda model, opt: opt.load_state_dict(copy.deepcopy(opt.state_dict())),  # as from a checkpoint
     "tensors were replaced (the graph reads and writes those it was captured with): optimizer state "
     "momentum_buffer of conv1.weight"),
    (lambda model, opt: model.layer1[0].conv1.register_forward_hook(lambda *a: None),
     "forward_hooks of module layer1.0.conv1 changed"),
    (lambda model, opt: torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None),
     "global module hook _global_forward_pre_hooks changed"),
    (lambda model, opt: model.fc.weight.register_hook(lambda g: g),
     "backward_hooks of parameter fc.weight changed"),
    (lambda model, opt: model.layer2.eval(), "modules in eval mode, the other at capture: layer2, layer2.0, layer2.0.bn1"),
], ids=["a buffer swapped", "a new momentum buffer", "a module hook", "a global hook", "a tensor hook", "eval mode"])
def test_a_replay_after_what_the_graph_froze_changed_fails_loudly(change, names):
    """Each way a graph would silently go on with stale state: a tensor it reads swapped (a
    ``load_state_dict`` that replaces a buffer, a new momentum buffer), a hook added after the
    capture, a module put in eval mode. The stand-in names it; a new capture accepts it."""
    capture = StandIn(mimic=True)  # even when mimicking a graph's frozen hyper-parameters
    model, opt, step, x, y = _graphed(capture)
    step(x, y, 0.1), step(x, y, 0.1)
    handle = change(model, opt)
    try:
        with pytest.raises(GraphStateChanged, match=re.escape(names)):
            step(x, y, 0.1)
        step(x, y, 0.05)  # a new rate: captured again, with the state as it now is
        assert capture.captures == 2
    finally:
        if hasattr(handle, "remove"):
            handle.remove()
        with step:
            pass
    assert live_captures() == 0


def test_a_pool_worker_training_two_runs_holds_one_capture_at_a_time(tiny_tar, tmp_path, monkeypatch):
    """The pool's worker loop (``_pool_worker``, run here in this process with the stand-in
    as the device's capture) trains two graphed runs back to back: the first run's capture is
    released before the second run captures, so no capture ever sees another alive."""
    from resnet_exp.data.cifar10 import load_cifar10
    from resnet_exp.runs.executing.executors import Slot, _pool_worker
    from resnet_exp.runs.executing.worker import WorkerContext
    from resnet_exp.runs.planning.experiments import load_experiment
    from resnet_exp.runs.planning.plan import make_plan

    made: list[StandIn] = []

    def stand_in(device):
        made.append(StandIn())
        return made[-1]

    monkeypatch.setattr(step_module, "graph_unavailable", lambda device: None)
    monkeypatch.setattr(step_module, "CudaGraphs", stand_in)
    row = "iterations: 12, milestones: [6], eval_every: 6, batch_size: 8, checkpoint_every_s: 0"
    exp = write_experiment(tmp_path / "two.yaml", f"rows:\n  - {{model: resnet8, {row}}}\n"
                                                  f"  - {{model: plain8, {row}}}\n")
    sha = load_cifar10(str(tiny_tar), data_dir=tmp_path / "data", verbose=False).provenance["sha256"]
    plan = make_plan(load_experiment(exp, "smoke"), tmp_path / "results", sha)
    todo, events = queue.Queue(), queue.Queue()
    for item in [*enumerate(plan.jobs), None]:
        todo.put(item)
    # the worker ignores Ctrl-C and hang-ups and wraps its output, as the pool's processes do:
    # none of it may outlive the test in this process (a SIGHUP ignored here is inherited by
    # every process the later tests start)
    sigint, sighup = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGHUP)
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    try:
        _pool_worker(Slot("cpu0", None, 1), WorkerContext(str(tiny_tar), str(tmp_path / "data"), sha), todo, events)
    finally:
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGHUP, sighup)
    ends = [e[2] for e in [events.get() for _ in range(events.qsize())] if e[0] == "end"]
    assert [o.status for o in ends] == ["finished", "finished"] and len(made) == 2
    logs = [o.meta["step_capture_log"] for o in ends]
    assert [len(log) for log in logs] == [2, 2]  # lr 0.1, then the milestone's 0.01, in each run
    assert [c["other_captures_alive"] for log in logs for c in log] == [0, 0, 0, 0]
    assert live_captures() == 0 and len({o.where["pid"] for o in ends}) == 1


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


def test_on_cuda_fp32_means_tf32_off_and_meta_records_the_flags(monkeypatch):
    """``set_numerics`` on a (faked) CUDA run: fp32 and bf16 turn cuDNN's and cuBLAS's TF32
    off (PyTorch's default has cuDNN's on), tf32 turns them on; meta.json records them as the
    run has them; a CPU run records none. tf32 is another identity, fp32 keeps its own."""
    from resnet_exp.runs.training import provenance
    from resnet_exp.runs.training.step import arithmetic, set_numerics

    cuda = torch.device("cuda")
    monkeypatch.setattr(provenance, "device_name", lambda device: "NVIDIA H200 (faked)")
    flags = ("allow_tf32", "benchmark", "deterministic")
    saved = [getattr(torch.backends.cudnn, f) for f in flags], torch.backends.cuda.matmul.allow_tf32
    paper = load_profiles()["paper"]
    spec = RunSpec(experiment="t", name="resnet8", model="resnet8", shortcut="A", seed=1, recipe=paper,
                   profile="paper")
    model = torch.nn.Linear(2, 2)
    try:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
        for precision, tf32 in (("fp32", False), ("tf32", True), ("bf16", False), ("fp32", False)):
            recipe = paper.model_copy(update={"precision": precision})
            set_numerics(model, recipe, cuda)
            meta = provenance.static_meta(spec, "id", 1, {}, cuda, None)
            assert meta["tf32"] == {"cudnn": tf32, "cublas": tf32}, precision
            assert meta["device"] == "NVIDIA H200 (faked)"
    finally:
        for f, v in zip(flags, saved[0]):
            setattr(torch.backends.cudnn, f, v)
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.use_deterministic_algorithms(False)
    assert provenance.static_meta(spec, "id", 1, {}, CPU, None)["tf32"] is None
    tf32_spec = RunSpec(experiment="t", name="resnet8", model="resnet8", shortcut="A", seed=1,
                        recipe=paper.model_copy(update={"precision": "tf32"}), profile="paper")
    assert tf32_spec.identity("d") != spec.identity("d")
    assert arithmetic(paper, cuda).startswith("fp32, TF32 off") and arithmetic(paper, CPU) == "fp32"
    assert arithmetic(tf32_spec.recipe, cuda).startswith("TF32") and "fp32 here" in arithmetic(tf32_spec.recipe, CPU)
