"""Figure 7: the layer responses saved with a run equal a direct computation."""

import csv

import torch

from resnet_exp.data.cifar10 import load_cifar10
from resnet_exp.data.loader import per_class_indices
from resnet_exp.models import build_model
from resnet_exp.runs.training.responses import responses_current, update_responses
from resnet_exp.runs.rundir import RunDir
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments

from .conftest import write_experiment


def direct_stds(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """The textbook way: keep every response, then torch.std over all of it. (A copy: the
    ReLU that follows a BN works in place and would overwrite a kept reference.)"""
    outputs: dict[int, list[torch.Tensor]] = {}
    modules = model.response_modules()
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: outputs.setdefault(k, []).append(o.detach().clone()))
             for k, m in enumerate(modules)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [torch.cat(outputs[k]).double().std(unbiased=False).item() for k in range(len(modules))]


def test_saved_responses_equal_a_direct_computation(tiny_tar, tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", "rows:\n  - {model: resnet8, iterations: 20, milestones: [10]}\n"
                                                 "  - {model: plain8, iterations: 20, milestones: [10]}\n")
    data_dir = tmp_path / "data"
    assert run_experiments([str(exp)], profile="smoke", data=str(tiny_tar), device="cpu", progress=False,
                           results=str(tmp_path / "r"), data_dir=data_dir, estimate=False,
                           executor=ExecutorChoice(threads=1)) == 0
    ds = load_cifar10(tiny_tar, data_dir=data_dir, verbose=False)
    for run in RunDir.all_in(tmp_path / "r"):
        cfg = run.read_meta()["config"]
        with open(run.responses_path) as f:
            saved = list(csv.DictReader(f))
        model = build_model(cfg["model"])
        model.load_state_dict(torch.load(run.model_path, weights_only=True))
        mean = torch.load(run.mean_path, weights_only=True)  # the per-pixel mean the run trained with
        idx = per_class_indices(ds.test_y, first=cfg["recipe"]["test_per_class"])
        x = (ds.test_x[idx].float() / 255 - mean).contiguous(memory_format=torch.channels_last)
        expected = direct_stds(model.to(memory_format=torch.channels_last), x)
        assert len(saved) == len(expected) == 7  # 6n+2 = 8 layers: the stem and 6 block convs
        assert [int(r["layer"]) for r in saved] == list(range(1, 8))
        torch.testing.assert_close(torch.tensor([float(r["std"]) for r in saved], dtype=torch.float64),
                                   torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-7)
        assert responses_current(run)

    # new weights: the saved responses are stale, and `responses` recomputes them
    run = next(RunDir.all_in(tmp_path / "r"))
    state = torch.load(run.model_path, weights_only=True)
    next(v for k, v in state.items() if k.endswith("weight")).mul_(2)
    torch.save(state, run.model_path)
    assert not responses_current(run)
    meta = run.read_meta()
    meta["files"].pop("model.pt")  # a deliberate change, not damage
    run.write_meta(meta)
    assert update_responses(str(tmp_path / "r"), data=str(tiny_tar), data_dir=str(data_dir)) == 1
    assert responses_current(run)
