"""Layer signals (signals.csv): recorded without changing the training, resumed exactly,
checksummed, and claim C8 decided from them."""

from __future__ import annotations

import torch
import pytest
from torch import nn

from resnet_exp.models import build_model
from resnet_exp.reporting.signals import BACKWARD_FACTOR, RESPONSE_FLOOR, judge_run
from resnet_exp import stopping
from resnet_exp.runs.training.callbacks import Callback
from resnet_exp.runs.training.train import default_callbacks
from resnet_exp.runs.rundir import RunDir
from resnet_exp.runs.rundir import probe_size_for, signal_points
from resnet_exp.runs.training.signals import LayerProbe, probe_indices
from resnet_exp.runs.training.train import RunInterrupted

from .conftest import tiny_training, train_tiny
from .test_runner import deterministic, read_log

RECIPE = "{iterations: 24, milestones: [12, 18], eval_every: 6, batch_size: 16, checkpoint_every_s: 0}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tar):
    return tiny_training(tmp_path_factory.mktemp("signals"), tiny_tar, RECIPE, "plain8")


def train(tiny, folder: str, callbacks=None, stop_file=None):
    return train_tiny(tiny, folder, stop_file=stop_file, callbacks=callbacks)


class StopAt(Callback):
    """Test-only: asks the run to stop once it reaches ``iteration`` (the driver's stop file)."""

    def __init__(self, iteration: int, stop_file) -> None:
        self.iteration, self.stop_file = iteration, stop_file

    def on_iteration(self, ctx, iteration: int) -> None:
        if iteration == self.iteration:
            self.stop_file.touch()


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    return train(tiny, "whole")


def test_points_and_probe_are_fixed():
    assert signal_points(2000, 125)[:7] == [0, 10, 50, 100, 125, 200, 250]
    assert signal_points(24, 6) == [0, 6, 10, 12, 18, 24]
    assert torch.equal(probe_indices(50_000), probe_indices(50_000))  # the same images for every run
    assert len(probe_indices(100)) == 100
    assert probe_size_for(128) == 256 and probe_size_for(16) == 32 and probe_size_for(512) == 256


def test_recording_does_not_change_the_training(tiny, uninterrupted):
    run, meta = uninterrupted
    bare, bare_meta = train(tiny, "bare", callbacks=[])
    assert deterministic(read_log(run.path)) == deterministic(read_log(bare.path))
    a = torch.load(run.model_path, weights_only=True)
    b = torch.load(bare.model_path, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BN running stats included
    assert not bare.signals_path.exists()


def test_signals_csv_holds_every_layer_at_every_point(uninterrupted):
    run, meta = uninterrupted
    rows = run.read_signals()
    names = [n for n, p in build_model("plain8").named_parameters() if p.dim() > 1]  # convs and fc
    assert sorted({r["iteration"] for r in rows}) == signal_points(24, 6)
    first = [r["name"] for r in rows if r["iteration"] == 0]
    assert first == names and first[0] == "conv1.weight" and first[-1] == "fc.weight"
    assert all(r["grad_norm"] > 0 and r["weight_norm"] > 0 and r["response_std"] > 0 for r in rows)
    assert meta["files"]["signals.csv"] and run.check().ok
    assert meta["signals"]["probe_images"] == 32 and meta["signals"]["from_iteration"] == 0  # 2 batches of 16


@pytest.mark.parametrize("stop_at", [8, 11])  # mid-interval; just before a point that is also a checkpoint
def test_a_resumed_run_records_the_same_signals(tiny, uninterrupted, stop_at, monkeypatch):
    monkeypatch.setattr(stopping, "STOP_FILE_POLL_S", 0.0)
    root = tiny[0]
    stop = root / f"stop-{stop_at}"
    with pytest.raises(RunInterrupted):
        train(tiny, f"resumed-{stop_at}", callbacks=[*default_callbacks(), StopAt(stop_at, stop)], stop_file=stop)
    run = RunDir(root / f"resumed-{stop_at}" / tiny[1].name)
    assert run.has_checkpoint() and run.check().ok
    assert max(r["iteration"] for r in run.read_signals()) < stop_at + 1
    stop.unlink()
    run, meta = train(tiny, f"resumed-{stop_at}")
    whole = uninterrupted[0]
    assert run.signals_path.read_bytes() == whole.signals_path.read_bytes()
    assert deterministic(read_log(run.path)) == deterministic(read_log(whole.path))
    assert len(meta["attempts"]) == 2 and run.check().ok


def test_a_changed_signals_csv_is_damage(tiny, uninterrupted, monkeypatch):
    monkeypatch.setattr(stopping, "STOP_FILE_POLL_S", 0.0)
    root = tiny[0]
    stop = root / "stop-damage"
    with pytest.raises(RunInterrupted):
        train(tiny, "damaged", callbacks=[*default_callbacks(), StopAt(14, stop)], stop_file=stop)
    run = RunDir(root / "damaged" / tiny[1].name)
    assert run.check().ok
    text = run.signals_path.read_text().replace(",1,conv1.weight,", ",1,conv1.weight,9", 1)
    run.signals_path.write_text(text)
    assert "signals.csv before iteration" in str(run.check())
    finished = uninterrupted[0]
    original = finished.signals_path.read_bytes()
    try:
        finished.signals_path.write_bytes(original.replace(b"\n0,1,", b"\n0,1,1", 1))
        assert "signals.csv is not the file the run wrote" in str(finished.check())
    finally:
        finished.signals_path.write_bytes(original)


# --------------------------------------------------------------------------- C8 on tiny nets
class NoBNPlain(nn.Module):
    """Test-only: a plain conv net without BN and with a tiny initialisation (0.1x He), in
    which the forward signal must vanish."""

    def __init__(self, depth: int = 8, width: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else width, width, 3, padding=1, bias=False)
                                    for i in range(depth - 1)])
        self.fc = nn.Linear(width, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight.data.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


def signals_of(model: nn.Module, splits, steps: int = 30, points=(0, 10, 20, 30)):
    """Train ``model`` with the paper's SGD on the tiny data, measuring at ``points``."""
    import pandas as pd

    torch.manual_seed(0)
    probe = LayerProbe(model)
    idx = probe_indices(len(splits.train_y))
    x, y = splits.train_x[idx], splits.train_y[idx]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    rows = []
    for it in range(steps + 1):
        if it in points:
            m = probe.measure(model, x, y)
            rows += [{"iteration": it, "layer": i + 1, "layer_name": n, "grad_norm": m["grad_norm"][i],
                      "weight_norm": m["weight_norm"][i], "response_std": m["response_std"][i]}
                     for i, n in enumerate(probe.names)]
        if it == steps:
            break
        b = torch.randint(len(splits.train_y), (32,), generator=g)
        loss = nn.functional.cross_entropy(model(splits.train_x[b]), splits.train_y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = pd.DataFrame(rows).assign(run="r", name="net")
    d["relative_update"] = d["grad_norm"] / d["weight_norm"]
    return d


def test_c8_holds_on_a_healthy_plain_net_with_bn(tiny):
    torch.manual_seed(1)
    j = judge_run(signals_of(build_model("plain8"), tiny[2]))
    assert j.forward_ok and j.backward_ok and j.holds, j.evidence()
    assert j.weakest_response[0] >= RESPONSE_FLOOR and j.worst_relative.ratio <= BACKWARD_FACTOR
    assert j.init_first_last is not None and "first block" in j.init_fact()


def test_c8_does_not_hold_without_bn_and_with_a_tiny_init(tiny):
    torch.manual_seed(1)
    j = judge_run(signals_of(NoBNPlain(), tiny[2]))
    assert not j.holds and not j.forward_ok, j.evidence()
    assert j.weakest_response[0] < RESPONSE_FLOOR


def test_the_probe_leaves_the_model_untouched(tiny):
    model = build_model("plain8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LayerProbe(model).measure(model, tiny[2].train_x[:64], tiny[2].train_y[:64])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
