"""The builder against the paper's table and against torchvision."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_exp.models import FAMILIES, build_model, list_models, model_info
from resnet_exp.models.blocks import BasicBlock, PreActBlock, ZeroPadShortcut

# paper-facts.md: weights + BN affine + FC bias, identical for plain and option-A nets.
PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
OPTION_B_EXTRA = 2_752


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(name: str, **kw) -> int:
    with torch.device("meta"):  # no memory or init cost, even for 1202 layers
        return n_params(build_model(name, **kw))


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_cifar_param_counts_match_paper(depth):
    assert meta_params(f"plain{depth}") == PAPER_PARAMS[depth]
    assert meta_params(f"resnet{depth}") == PAPER_PARAMS[depth]
    assert meta_params(f"resnet{depth}", shortcut="A") == PAPER_PARAMS[depth]
    assert meta_params(f"resnet{depth}", shortcut="B") == PAPER_PARAMS[depth] + OPTION_B_EXTRA


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_option_c_projects_every_block(depth):
    n = (depth - 2) // 6
    # one 1x1 conv + BN per block: stage widths 16/32/64, inputs 16/16->32/32->64
    per_stage = [(16, 16), (16, 32), (32, 64)]
    extra = 0
    for cin, cout in per_stage:
        extra += cin * cout + 2 * cout            # first block of the stage
        extra += (n - 1) * (cout * cout + 2 * cout)  # the others
    assert meta_params(f"resnet{depth}", shortcut="C") == PAPER_PARAMS[depth] + extra


def test_paper_flops():
    # paper-facts.md: 0.081, 0.138, 0.194, 0.251, 0.506 GFLOPs per image
    for depth, gflops in {20: 0.081, 32: 0.138, 44: 0.194, 56: 0.251, 110: 0.506}.items():
        assert model_info(f"resnet{depth}")["flops"] / 1e9 == pytest.approx(gflops, abs=0.001)


def test_layer_count_is_the_depth():
    for depth in (8, 20, 56):
        model = build_model(f"plain{depth}")
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == depth
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        assert [m.kernel_size for m in strided] == [(3, 3), (3, 3)]  # stage starts, no 1x1


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_matches_torchvision(depth):
    torch.manual_seed(depth)
    ours = build_model(f"imagenet_resnet{depth}")
    theirs = getattr(torchvision.models, f"resnet{depth}")()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    assert n_params(ours) == n_params(theirs)


def test_cifar_resnet18_is_the_tutorials_net():
    """The ImageNet-layout ResNet-18 on CIFAR: torchvision's resnet18 with a 3x3/1 stem and no
    max-pool, 10 classes: the published 11,173,962 parameters, and the same outputs."""
    assert meta_params("resnet18_cifar") == 11_173_962
    # the plain twin lacks only the three 1x1 projections (conv + BN) where the shape changes
    assert meta_params("resnet18_cifar") - meta_params("plain18_cifar") == sum(
        c * 2 * c + 2 * (2 * c) for c in (64, 128, 256))
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=10)
    theirs.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    theirs.maxpool = torch.nn.Identity()
    ours = build_model("resnet18_cifar")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    plain = build_model("plain18_cifar")
    assert plain(x).shape == (2, 10) and not any("downsample.0" in k for k in plain.state_dict())


def test_imagenet_plain_and_options():
    assert meta_params("imagenet_plain34") < meta_params("imagenet_resnet34")
    assert meta_params("imagenet_resnet34", shortcut="A") == meta_params("imagenet_plain34")
    assert meta_params("imagenet_resnet34", shortcut="C") > meta_params("imagenet_resnet34")
    # plain bottleneck nets have no shortcut at all, so no `downsample` keys
    keys = build_model("imagenet_plain50").state_dict().keys()
    assert not any("downsample" in k for k in keys)


@pytest.mark.parametrize("name,size,classes", [
    ("resnet20", 32, 10), ("plain8", 32, 10), ("preresnet20", 32, 10),
    ("imagenet_resnet18", 224, 1000), ("imagenet_plain50", 224, 1000)])
def test_output_shapes(name, size, classes):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, classes)
    assert build_model(name, num_classes=7).fc.out_features == 7


def test_option_a_keeps_input_channels_and_zero_fills():
    sc = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])  # every other pixel, channels kept
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert sum(p.numel() for p in sc.parameters()) == 0


@pytest.mark.parametrize("name,shortcut", [("resnet20", "A"), ("resnet20", "B"), ("preresnet20", "A"),
                                           ("imagenet_resnet18", "B"), ("imagenet_resnet50", "B")])
def test_zero_init_residual_blocks_are_identity(name, shortcut):
    model = build_model(name, shortcut=shortcut, zero_init_residual=True).eval()
    seen = []

    def check(block, inputs, output):
        x = inputs[0]
        if x.shape == output.shape:
            seen.append(block)
            assert torch.allclose(output, x), f"{type(block).__name__} changed its input"

    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, PreActBlock)) or
              type(m).__name__ == "Bottleneck"]
    for b in blocks:
        b.register_forward_hook(check)
    size = 32 if name.startswith(("resnet", "preresnet")) else 64
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    assert len(seen) >= 3


def test_response_modules_in_layer_order():
    model = build_model("resnet20").eval()
    mods = model.response_modules()
    assert len(mods) == 19  # every 3x3 conv: the stem and 18 in blocks
    assert all(isinstance(m, nn.BatchNorm2d) for m in mods)
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, m in enumerate(mods)]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert order == list(range(19))
    for h in hooks:
        h.remove()


def test_he_init():
    model = build_model("resnet56")
    conv = model.layer2[3].conv1
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    bn = model.layer2[3].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize("bad,match", [
    ("resnet57", r"6n\+2.*20, 32, 44, 56, 110"), ("resnet21", "valid depths"), ("vgg16", "unknown model"),
    ("imagenet_resnet42", "valid depths: 18, 34, 50, 101, 152"), ("resnet", "unknown model")])
def test_bad_names_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        build_model(bad)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="valid options: A, B, C"):
        build_model("resnet20", shortcut="D")
    with pytest.raises(ValueError, match="no shortcuts"):
        build_model("plain20", shortcut="A")
    with pytest.raises(ValueError, match="unknown option"):
        build_model("resnet20", widen=2)


def test_registry_lists_every_family():
    names = list_models()
    for family in FAMILIES.values():
        assert any(n == family.name(d) for d in family.listed_depths for n in names)
    assert {"plain20", "resnet1202", "preresnet110", "imagenet_resnet152", "imagenet_plain18"} <= set(names)
