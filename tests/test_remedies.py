"""The published remedies for degradation (models/remedies.py): each builds at every depth the
paper trains, is listed by `models`, and starts in the state that makes it that remedy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnet_exp.models import build_model, list_models, model_info
from resnet_exp.models.remedies import (CReLU, FixupBlock, HighwayBlock, LooksLinearBlock, ReZeroBlock,
                                        SkipInitBlock)
from resnet_exp.runs.planning.experiments import load_profiles
from resnet_exp.runs.training.step import make_optimizer

REMEDIES = ["highway", "fixup", "skipinit", "rezero", "plain{}_deltaorth", "plain{}_looklinear", "plain{}_nobn",
            "resnet{}_nobn"]
DEPTHS = (20, 32, 44, 56, 110)


def name(remedy: str, depth: int) -> str:
    return remedy.format(depth) if "{}" in remedy else f"{remedy}{depth}"


def blocks(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("remedy", REMEDIES)
def test_every_remedy_builds_at_every_depth_and_is_listed(remedy):
    for depth in DEPTHS:
        assert name(remedy, depth) in list_models()
        info = model_info(name(remedy, depth))  # on the meta device: every depth, no compute
        assert info["depth"] == depth and info["params"] > 0
    torch.manual_seed(0)
    out = build_model(name(remedy, 20))(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_parameter_counts_say_what_each_remedy_adds():
    params = {n: model_info(n)["params"] for n in ("resnet56", "plain56", "rezero56", "skipinit56",
                                                  "resnet56_nobn", "plain56_nobn", "plain56_deltaorth",
                                                  "fixup56", "highway56", "plain56_looklinear")}
    assert params["resnet56"] == params["plain56"] == params["plain56_deltaorth"] == 853_018  # paper-facts.md
    assert params["rezero56"] == params["resnet56"] + 27            # one scalar per block, 3n = 27 blocks
    # no BN: the 55 BNs' 2 x 2,032 affine parameters gone (the stem's 16 channels and 18 x 16/32/64 in
    # the blocks), a bias per channel of the 55 convs instead
    channels = 16 + 18 * (16 + 32 + 64)
    assert params["resnet56_nobn"] == params["plain56_nobn"] == 853_018 - 2 * channels + channels == 850_986
    assert params["skipinit56"] == params["resnet56_nobn"] + 27
    # Fixup: no BN, no conv biases; four scalar biases and a multiplier per block, two around the net
    assert params["fixup56"] == 853_018 - 2 * channels + 5 * 27 + 2
    # Highway: a 1x1 gate conv with bias per block (16/32/64 outputs)
    gates = 9 * (16 * 16 + 16) + (16 * 32 + 32) + 8 * (32 * 32 + 32) + (32 * 64 + 64) + 8 * (64 * 64 + 64)
    assert params["highway56"] == params["resnet56"] + gates
    # looks-linear: each conv after the stem, and the classifier, reads the twice-as-many CReLU channels
    ll = build_model("plain56_looklinear")
    convs = [m for m in ll.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 3 and ll.fc.in_features == 2 * 64
    assert all(b.in_channels == 2 * a.out_channels for a, b in zip(convs, convs[1:]))


def _block_is_identity_at_start(model: nn.Module, kind: type, relu: bool) -> None:
    """Each block's output equals its shortcut's (after the ReLU where the block keeps one)."""
    model.eval()
    for block in blocks(model, kind):
        x = torch.rand(2, block.conv1.in_channels, 8, 8)  # non-negative, as a block's input is after a ReLU
        shortcut = block.downsample(x)
        want = torch.relu(shortcut) if relu else shortcut
        assert torch.allclose(block(x), want, atol=1e-6)


def test_fixup_starts_with_zero_branches_a_zero_classifier_and_scaled_first_convs():
    torch.manual_seed(0)
    model = build_model("fixup110")
    fixup = blocks(model, FixupBlock)
    assert len(fixup) == 54 and not blocks(model, nn.BatchNorm2d)
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in fixup)
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    _block_is_identity_at_start(model, FixupBlock, relu=True)
    # first convs: He (fan_out) times L^(-1/2), L = 54 branches
    w = torch.cat([b.conv1.weight.flatten() for b in fixup if b.conv1.out_channels == 64])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)) * 54 ** -0.5, rel=0.05)
    # the reference code's optimiser: scalar biases and multipliers at a tenth of the rate
    opt = make_optimizer(model, load_profiles()["paper"], torch.device("cpu"))
    scalars = [g for g in opt.param_groups if g["lr_mult"] == 0.1]
    assert len(scalars) == 1 and len(scalars[0]["params"]) == 5 * 54 + 2 and scalars[0]["lr"] == pytest.approx(0.01)
    assert all(p.ndim == 0 for p in scalars[0]["params"])


def test_skipinit_and_rezero_start_each_block_as_the_identity():
    torch.manual_seed(0)
    skip = build_model("skipinit56")
    assert not blocks(skip, nn.BatchNorm2d) and all(b.alpha.item() == 0 for b in blocks(skip, SkipInitBlock))
    _block_is_identity_at_start(skip, SkipInitBlock, relu=True)
    rezero = build_model("rezero56")
    assert blocks(rezero, nn.BatchNorm2d) and all(b.alpha.item() == 0 for b in blocks(rezero, ReZeroBlock))
    _block_is_identity_at_start(rezero, ReZeroBlock, relu=False)
    assert len(blocks(rezero, ReZeroBlock)) == 27


def test_highway_gates_start_biased_towards_carrying_the_input():
    torch.manual_seed(0)
    model = build_model("highway56").eval()
    gates = blocks(model, HighwayBlock)
    assert len(gates) == 27 and all(torch.all(b.gate.bias == HighwayBlock.GATE_BIAS) for b in gates)
    x = torch.randn(8, 3, 32, 32)
    transform = []
    hooks = [b.gate.register_forward_hook(lambda m, i, o: transform.append(torch.sigmoid(o).mean())) for b in gates]
    model(x)
    for h in hooks:
        h.remove()
    assert max(transform) < 0.35  # sigmoid(-2) = 0.12: mostly carry


def test_delta_orthogonal_kernels_are_zero_off_centre_and_orthogonal_at_it():
    torch.manual_seed(0)
    model = build_model("plain56_deltaorth")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55
    for conv in convs:
        w = conv.weight.detach()
        centre = w[:, :, 1, 1]
        off = w.clone()
        off[:, :, 1, 1] = 0
        assert torch.count_nonzero(off) == 0
        small = centre @ centre.T if centre.shape[0] <= centre.shape[1] else centre.T @ centre
        assert torch.allclose(small, 2 * torch.eye(small.shape[0]), atol=1e-5)  # orthogonal, ReLU's gain sqrt(2)


def test_looks_linear_is_a_linear_net_at_initialisation():
    """CReLU with mirrored weights: in eval mode (BN an affine map) the whole net is affine in its input."""
    torch.manual_seed(0)
    model = build_model("plain20_looklinear").eval()
    assert len(blocks(model, LooksLinearBlock)) == 9 and len(blocks(model, CReLU)) >= 1
    x, y = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        f0, fx, fy, fxy = model(torch.zeros_like(x)), model(x), model(y), model(x + y)
    assert torch.allclose(fxy - f0, (fx - f0) + (fy - f0), atol=1e-4)
    plain = build_model("plain20").eval()
    with torch.no_grad():
        g0, gx, gy, gxy = plain(torch.zeros_like(x)), plain(x), plain(y), plain(x + y)
    assert not torch.allclose(gxy - g0, (gx - g0) + (gy - g0), atol=1e-4)  # ReLU nets are not


def test_no_bn_nets_have_no_batchnorm_and_biased_convs():
    for n in ("plain56_nobn", "resnet56_nobn"):
        model = build_model(n)
        assert not blocks(model, nn.BatchNorm2d)
        assert all(m.bias is not None and torch.count_nonzero(m.bias) == 0
                   for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))


def test_remedies_combine_with_shortcut_options_and_zero_init():
    assert model_info("rezero56", shortcut="B")["params"] == model_info("rezero56")["params"] + 2752  # paper-facts
    torch.manual_seed(0)
    model = build_model("resnet56_nobn", zero_init_residual=True)
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in model.layer1)  # no BN: the last conv at zero
