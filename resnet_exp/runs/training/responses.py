"""The paper's Figure 7: the standard deviation of each 3x3 layer's response.

A layer's response is its BN output, before the addition and before the ReLU
(``model.response_modules()`` lists those BNs in layer order). Its std is taken over every
test image, channel and position of that output, the model in eval mode. Computed once
per finished run from its final weights and saved as ``responses.csv`` in the run folder
with the sha256 of the weights it came from, so a changed ``model.pt`` is recomputed.
"""

from __future__ import annotations

import csv
import pickle
import io
from typing import Any

import torch

from ...fileio import atomic_write_text
from .callbacks import AnalysisSkipped, Callback, LoopContext
from ..rundir import RunDir, RunStatus, sha256_file

COLUMNS = ["layer", "module", "std", "model_sha256"]


@torch.no_grad()
def layer_response_stds(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> list[tuple[str, float]]:
    """(module name, std) for every response module, over all of ``x`` (one pass,
    float64 running sums, so the whole set never has to fit in memory)."""
    modules = model.response_modules()
    names = {m: n for n, m in model.named_modules()}
    sums = [torch.zeros(2, dtype=torch.float64, device=x.device) for _ in modules]
    counts = [0] * len(modules)

    def hook(i: int) -> Any:
        def record(module: torch.nn.Module, inputs: Any, out: torch.Tensor) -> None:
            o = out.detach().double()
            sums[i] += torch.stack([o.sum(), (o * o).sum()])
            counts[i] += o.numel()
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for m, (s, s2), n in zip(modules, (t.tolist() for t in sums), counts):
        mean = s / n
        out.append((names[m], max(s2 / n - mean * mean, 0.0) ** 0.5))
    return out


def save_responses(run: RunDir, model: torch.nn.Module, test_x: torch.Tensor) -> None:
    """Compute and write ``responses.csv`` for a finished run (test_x: mean-subtracted)."""
    sha = sha256_file(run.model_path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i, (name, std) in enumerate(layer_response_stds(model, test_x), start=1):
        writer.writerow([i, name, repr(std), sha])
    atomic_write_text(run.responses_path, buf.getvalue())
    meta = run.read_meta() or {}
    if "responses.csv" in (meta.get("files") or {}):  # recomputed later: keep the checksum true
        meta["files"]["responses.csv"] = sha256_file(run.responses_path)
        run.write_meta(meta)


class ResponsesCallback(Callback):
    """Figure 7's responses, once, from a finished run's final weights (model.pt)."""

    name = "responses"

    def on_end(self, ctx: LoopContext, status: RunStatus) -> list:
        if status != RunStatus.FINISHED:
            return []
        if not callable(getattr(ctx.model, "response_modules", None)):
            raise AnalysisSkipped(f"Figure 7's responses: {type(ctx.model).__name__} offers no response_modules() "
                                  "(optional; docs/plugins.md says what it returns)")
        save_responses(ctx.run, ctx.model, ctx.splits.test_x)
        return [ctx.run.responses_path]


def responses_current(run: RunDir) -> bool:
    """Is responses.csv there and computed from the run's final weights: the model.pt that is
    there now, or the one a light publication left out (its sha256 kept in meta.json)?"""
    try:
        with open(run.responses_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error):  # missing, binary or malformed: not current
        return False
    return bool(rows) and rows[0].get("model_sha256") is not None and rows[0]["model_sha256"] == run.model_sha256()


def update_responses(results: str, data: str | None = None, data_dir: str = "data", device: str = "cpu") -> int:
    """(Re)compute responses.csv for every finished run that lacks a current one, from
    its model.pt and the per-pixel mean it trained with (mean.pt). Returns how many."""
    from ...data.cifar10 import load_cifar10
    from ...data.loader import per_class_indices
    from ...models import build_model

    todo = [r for r in RunDir.all_in(results) if r.check().ok and (r.read_meta() or {}).get("status") == "finished"
            and r.model_path.exists() and r.mean_path.exists() and not responses_current(r)]
    if not todo:
        return 0
    ds = load_cifar10(data, data_dir=data_dir, verbose=False)
    dev = torch.device(device)
    for run in todo:
        cfg = run.read_meta()["config"]
        if (run.read_meta() or {}).get("dataset", {}).get("sha256") != ds.provenance["sha256"]:
            print(f"[responses] {run.key}: trained on another dataset; pass its --data")
            continue
        if cfg.get("plugins"):  # results folders run no code: a plug-in's model is not rebuilt from them
            print(f"[responses] {run.key}: skipped, its model comes from a plug-in (rerun its experiment to train it)")
            continue
        per_class = cfg["recipe"].get("test_per_class")
        idx = per_class_indices(ds.test_y, first=per_class) if per_class else torch.arange(len(ds.test_y))
        try:  # weights_only: tensors, never code; a file of the wrong shape is named, not a traceback
            mean = torch.load(run.mean_path, map_location="cpu", weights_only=True)
            if not isinstance(mean, torch.Tensor) or mean.shape != ds.test_x.shape[1:]:
                raise ValueError(f"mean.pt holds {type(mean).__name__} {getattr(mean, 'shape', '')}, "
                                 f"not a per-pixel mean of shape {tuple(ds.test_x.shape[1:])}")
            x = (ds.test_x[idx].float().div_(255) - mean).to(dev).contiguous(memory_format=torch.channels_last)
            model = build_model(cfg["model"], shortcut=cfg.get("shortcut"),
                                zero_init_residual=cfg.get("zero_init_residual", False))
            model.load_state_dict(torch.load(run.model_path, map_location="cpu", weights_only=True))
        except (RuntimeError, ValueError, TypeError, KeyError, pickle.UnpicklingError, EOFError) as e:
            print(f"[responses] {run.key}: skipped, its mean.pt or model.pt is unusable ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''})")
            continue
        save_responses(run, model.to(dev).to(memory_format=torch.channels_last), x)
        print(f"[responses] {run.key}: responses.csv written")
    return len(todo)
