"""Research-code architectures (VGG, PreResNet, WideResNet of dnn-mode-connectivity and gRDA).

Checked against hand-written key/shape tables (so their checkpoints load with strict=True) and
against plain functional re-implementations (F.conv2d, F.batch_norm in eval mode, F.relu) that
read the weights from the state dict.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.models import (
    VGG,
    PreResNet,
    WideResNet,
    build_model,
)

VGG16_WIDTHS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def _bn_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
    return model.eval()


def _bn(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"], False
    )


# --- key and shape tables -------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_keys_and_shapes(batch_norm, num_classes):
    expected: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for b, widths in enumerate(VGG16_WIDTHS):
        i = 0
        for c_out in widths:
            expected[f"layer_blocks.{b}.{i}.weight"] = (c_out, c_in, 3, 3)
            expected[f"layer_blocks.{b}.{i}.bias"] = (c_out,)
            i += 1
            if batch_norm:  # BN in the same inner list, right after its conv
                expected |= _bn_keys(f"layer_blocks.{b}.{i}", c_out)
                i += 1
            c_in = c_out
    expected |= {
        "classifier.1.weight": (512, 512),
        "classifier.1.bias": (512,),
        "classifier.4.weight": (512, 512),
        "classifier.4.bias": (512,),
        "classifier.6.weight": (num_classes, 512),
        "classifier.6.bias": (num_classes,),
    }
    assert len(expected) == (97 if batch_norm else 32)
    model = VGG(num_classes=num_classes, depth=16, batch_norm=batch_norm)
    assert _shapes(model) == expected


@pytest.mark.parametrize("num_classes", [10, 100])
def test_preresnet8_keys_and_shapes(num_classes):
    expected = {
        "conv1.weight": (16, 3, 3, 3),
        **_bn_keys("layer1.0.bn1", 16),
        "layer1.0.conv1.weight": (16, 16, 3, 3),
        **_bn_keys("layer1.0.bn2", 16),
        "layer1.0.conv2.weight": (16, 16, 3, 3),
        **_bn_keys("layer2.0.bn1", 16),
        "layer2.0.conv1.weight": (32, 16, 3, 3),
        **_bn_keys("layer2.0.bn2", 32),
        "layer2.0.conv2.weight": (32, 32, 3, 3),
        "layer2.0.downsample.0.weight": (32, 16, 1, 1),
        **_bn_keys("layer3.0.bn1", 32),
        "layer3.0.conv1.weight": (64, 32, 3, 3),
        **_bn_keys("layer3.0.bn2", 64),
        "layer3.0.conv2.weight": (64, 64, 3, 3),
        "layer3.0.downsample.0.weight": (64, 32, 1, 1),
        **_bn_keys("bn", 64),
        "fc.weight": (num_classes, 64),
        "fc.bias": (num_classes,),
    }
    assert _shapes(PreResNet(num_classes=num_classes, depth=8)) == expected


def test_preresnet_bottleneck_keys_and_shapes():
    model = PreResNet(num_classes=10, depth=47)  # bottleneck, n = 5
    shapes = _shapes(model)
    first = {  # stride 1 but 16 -> 64 channels: projected
        **_bn_keys("layer1.0.bn1", 16),
        "layer1.0.conv1.weight": (16, 16, 1, 1),
        **_bn_keys("layer1.0.bn2", 16),
        "layer1.0.conv2.weight": (16, 16, 3, 3),
        **_bn_keys("layer1.0.bn3", 16),
        "layer1.0.conv3.weight": (64, 16, 1, 1),
        "layer1.0.downsample.0.weight": (64, 16, 1, 1),
    }
    second = {  # 64 -> 64: identity shortcut
        **_bn_keys("layer1.1.bn1", 64),
        "layer1.1.conv1.weight": (16, 64, 1, 1),
        **_bn_keys("layer1.1.bn2", 16),
        "layer1.1.conv2.weight": (16, 16, 3, 3),
        **_bn_keys("layer1.1.bn3", 16),
        "layer1.1.conv3.weight": (64, 16, 1, 1),
    }
    stage2 = {
        **_bn_keys("layer2.0.bn1", 64),
        "layer2.0.conv1.weight": (32, 64, 1, 1),
        **_bn_keys("layer2.0.bn2", 32),
        "layer2.0.conv2.weight": (32, 32, 3, 3),
        **_bn_keys("layer2.0.bn3", 32),
        "layer2.0.conv3.weight": (128, 32, 1, 1),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    }
    for prefix, table in (("layer1.0.", first), ("layer1.1.", second), ("layer2.0.", stage2)):
        assert {k: v for k, v in shapes.items() if k.startswith(prefix)} == table
    assert model.layer2[0].conv2.stride == (2, 2)
    assert shapes["bn.weight"] == (256,)
    assert shapes["fc.weight"] == (10, 256)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [5, 5, 5]


def _wrn10x2_table(num_classes: int) -> dict[str, tuple[int, ...]]:
    return {
        "conv1.weight": (16, 3, 3, 3),
        "conv1.bias": (16,),
        **_bn_keys("layer1.0.bn1", 16),
        "layer1.0.conv1.weight": (32, 16, 3, 3),
        "layer1.0.conv1.bias": (32,),
        **_bn_keys("layer1.0.bn2", 32),
        "layer1.0.conv2.weight": (32, 32, 3, 3),
        "layer1.0.conv2.bias": (32,),
        "layer1.0.shortcut.0.weight": (32, 16, 1, 1),
        "layer1.0.shortcut.0.bias": (32,),
        **_bn_keys("layer2.0.bn1", 32),
        "layer2.0.conv1.weight": (64, 32, 3, 3),
        "layer2.0.conv1.bias": (64,),
        **_bn_keys("layer2.0.bn2", 64),
        "layer2.0.conv2.weight": (64, 64, 3, 3),
        "layer2.0.conv2.bias": (64,),
        "layer2.0.shortcut.0.weight": (64, 32, 1, 1),
        "layer2.0.shortcut.0.bias": (64,),
        **_bn_keys("layer3.0.bn1", 64),
        "layer3.0.conv1.weight": (128, 64, 3, 3),
        "layer3.0.conv1.bias": (128,),
        **_bn_keys("layer3.0.bn2", 128),
        "layer3.0.conv2.weight": (128, 128, 3, 3),
        "layer3.0.conv2.bias": (128,),
        "layer3.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer3.0.shortcut.0.bias": (128,),
        **_bn_keys("bn1", 128),
        "linear.weight": (num_classes, 128),
        "linear.bias": (num_classes,),
    }


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_wideresnet10x2_keys_and_shapes(batch_norm, num_classes):
    expected = _wrn10x2_table(num_classes)
    if not batch_norm:  # the gRDA "nobn" variant has every BN removed, nothing else
        expected = {k: v for k, v in expected.items() if ".bn" not in k and not k.startswith("bn")}
        assert len(expected) == 22
    model = WideResNet(num_classes=num_classes, depth=10, widen_factor=2, batch_norm=batch_norm)
    assert _shapes(model) == expected


# --- forward against functional references --------------------------------------------------


def _vgg_ref(sd: dict, x: torch.Tensor, widths_per_block, batch_norm: bool) -> torch.Tensor:
    for b, widths in enumerate(widths_per_block):
        # The research code zips the block's modules with len(widths) ReLUs: with BN the inner
        # list is conv, bn, conv, bn, ... and only its first len(widths) entries run.
        for i in range(len(widths)):
            p = f"layer_blocks.{b}.{i}."
            if batch_norm and i % 2 == 1:
                x = _bn(x, sd, p)
            else:
                x = F.conv2d(x, sd[p + "weight"], sd[p + "bias"], padding=1)
            x = F.relu(x)
        x = F.max_pool2d(x, 2, 2)
    x = x.flatten(1)
    x = F.relu(F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    x = F.relu(F.linear(x, sd["classifier.4.weight"], sd["classifier.4.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_matches_functional(batch_norm):
    torch.manual_seed(0)
    model = _randomise_bn(VGG(depth=16, batch_norm=batch_norm))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    ref = _vgg_ref(model.state_dict(), x, VGG16_WIDTHS, batch_norm)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_vgg16bn_skips_the_truncated_layers():
    """Issue #2 of dnn-mode-connectivity: block 0's second conv and BN never run."""
    torch.manual_seed(0)
    model = _randomise_bn(VGG(depth=16, batch_norm=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.layer_blocks[0][2].weight.mul_(-3.0)  # unused conv
        model.layer_blocks[0][3].running_mean.add_(5.0)  # unused BN
        assert torch.equal(model(x), before)
        model.layer_blocks[0][1].running_mean.add_(5.0)  # the BN that does run
        assert not torch.allclose(model(x), before)
    # Block 2 ([256, 256, 256]) runs conv 0, bn 1 and conv 2: conv 2 maps 256 -> 256.
    assert model.layer_blocks[2][2].in_channels == 256


def test_vgg_init_like_research_code():
    torch.manual_seed(0)
    model = VGG(depth=16)
    conv = model.layer_blocks[4][2]  # 512 x 512 x 3 x 3
    assert torch.count_nonzero(conv.bias) == 0
    # N(0, 2 / (3 * 3 * 512)): std 0.02083
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.01)


def _preact_basic_ref(sd: dict, x: torch.Tensor, stride: int) -> torch.Tensor:
    out = F.conv2d(F.relu(_bn(x, sd, "bn1.")), sd["conv1.weight"], stride=stride, padding=1)
    out = F.conv2d(F.relu(_bn(out, sd, "bn2.")), sd["conv2.weight"], padding=1)
    res = (
        F.conv2d(x, sd["downsample.0.weight"], stride=stride) if "downsample.0.weight" in sd else x
    )
    return out + res


def _preact_bottleneck_ref(sd: dict, x: torch.Tensor, stride: int) -> torch.Tensor:
    out = F.conv2d(F.relu(_bn(x, sd, "bn1.")), sd["conv1.weight"])
    out = F.conv2d(F.relu(_bn(out, sd, "bn2.")), sd["conv2.weight"], stride=stride, padding=1)
    out = F.conv2d(F.relu(_bn(out, sd, "bn3.")), sd["conv3.weight"])
    res = (
        F.conv2d(x, sd["downsample.0.weight"], stride=stride) if "downsample.0.weight" in sd else x
    )
    return out + res


@pytest.mark.parametrize(
    ("depth", "stage", "index", "stride", "c_in", "projected"),
    [
        (8, 1, 0, 1, 16, False),  # basic, identity
        (8, 2, 0, 2, 16, True),  # basic, strided projection
        (47, 1, 0, 1, 16, True),  # bottleneck, 16 -> 64 projection at stride 1
        (47, 1, 1, 1, 64, False),  # bottleneck, identity
        (47, 3, 0, 2, 128, True),  # bottleneck, strided projection
    ],
)
def test_preresnet_block_matches_functional(depth, stage, index, stride, c_in, projected):
    torch.manual_seed(0)
    model = _randomise_bn(PreResNet(depth=depth))
    block = getattr(model, f"layer{stage}")[index]
    sd = block.state_dict()
    assert ("downsample.0.weight" in sd) == projected
    x = torch.randn(2, c_in, 8, 8)
    with torch.no_grad():
        out = block(x)
    ref = (_preact_basic_ref if depth < 44 else _preact_bottleneck_ref)(sd, x, stride)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_preresnet8_matches_functional():
    torch.manual_seed(0)
    model = _randomise_bn(PreResNet(num_classes=5, depth=8))
    sd = model.state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)

    def sub(prefix: str) -> dict:
        return {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}

    ref = F.conv2d(x, sd["conv1.weight"], padding=1)
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        ref = _preact_basic_ref(sub(f"layer{stage}.0."), ref, stride)
    ref = F.avg_pool2d(F.relu(_bn(ref, sd, "bn.")), 8).flatten(1)
    ref = F.linear(ref, sd["fc.weight"], sd["fc.bias"])
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def _wide_ref(sd: dict, x: torch.Tensor, stride: int) -> torch.Tensor:
    bn = "bn1.weight" in sd
    out = _bn(x, sd, "bn1.") if bn else x
    out = F.conv2d(F.relu(out), sd["conv1.weight"], sd["conv1.bias"], padding=1)
    out = _bn(out, sd, "bn2.") if bn else out
    out = F.conv2d(F.relu(out), sd["conv2.weight"], sd["conv2.bias"], stride=stride, padding=1)
    if "shortcut.0.weight" in sd:
        return out + F.conv2d(x, sd["shortcut.0.weight"], sd["shortcut.0.bias"], stride=stride)
    return out + x


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize(
    ("widen", "stage", "index", "stride", "c_in", "projected"),
    [
        (1, 1, 0, 1, 16, False),  # 16 -> 16: empty shortcut
        (2, 1, 0, 1, 16, True),  # 16 -> 32 at stride 1: 1x1 conv shortcut
        (1, 2, 0, 2, 16, True),  # strided 1x1 conv shortcut
        (1, 2, 1, 1, 32, False),
    ],
)
def test_wide_block_matches_functional(batch_norm, widen, stage, index, stride, c_in, projected):
    torch.manual_seed(0)
    model = WideResNet(depth=16, widen_factor=widen, batch_norm=batch_norm)
    block = getattr(model, f"layer{stage}")[index]
    _randomise_bn(block)
    sd = block.state_dict()
    assert ("shortcut.0.weight" in sd) == projected
    assert ("bn1.weight" in sd) == batch_norm
    x = torch.randn(2, c_in, 8, 8)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, _wide_ref(sd, x, stride), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_wideresnet10_matches_functional(batch_norm):
    torch.manual_seed(0)
    model = _randomise_bn(
        WideResNet(num_classes=7, depth=10, widen_factor=2, batch_norm=batch_norm)
    )
    sd = model.state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    ref = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], padding=1)
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        p = f"layer{stage}.0."
        ref = _wide_ref(
            {k.removeprefix(p): v for k, v in sd.items() if k.startswith(p)}, ref, stride
        )
    ref = F.relu(_bn(ref, sd, "bn1.") if batch_norm else ref)
    ref = F.linear(F.avg_pool2d(ref, 8).flatten(1), sd["linear.weight"], sd["linear.bias"])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_wideresnet_final_bn_momentum_is_research_value():
    assert WideResNet(depth=10, widen_factor=1).bn1.momentum == 0.9
    assert WideResNet(depth=10, widen_factor=1).layer1[0].bn1.momentum == 0.1


def test_functional_call_under_vmap():
    """Out-of-place residual additions: two parameter sets through vmap equal two calls."""
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, batch_norm=False).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v + 0.01 * torch.randn_like(v)]) for k, v in params.items()}
    x = torch.randn(2, 3, 32, 32)

    def f(p):
        return torch.func.functional_call(model, p, (x,))

    out = torch.func.vmap(f)(stacked)  # (2 parameter sets, batch, classes)
    for i in range(2):
        torch.testing.assert_close(out[i], f({k: v[i] for k, v in stacked.items()}))


# --- loading, errors, names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vgg", {"batch_norm": True}),
        ("preresnet", {"depth": 8}),
        ("wideresnet", {"depth": 10, "widen_factor": 1}),
        ("wideresnet", {"depth": 10, "widen_factor": 1, "batch_norm": False}),
    ],
)
def test_saved_state_dict_loads_strict(tmp_path, name, kwargs):
    torch.manual_seed(0)
    src = _randomise_bn(build_model(name, **kwargs))
    torch.save(src.state_dict(), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    torch.manual_seed(1)
    dst = build_model(name, **kwargs)
    result = dst.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    dst.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_vgg_without_bn_does_not_load_into_vgg_bn():
    with pytest.raises(RuntimeError, match="Missing key"):
        VGG(batch_norm=True).load_state_dict(VGG(batch_norm=False).state_dict(), strict=True)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("vgg", {"depth": 11}, r"VGG depth must be one of \[16, 19\]; got 11"),
        ("vgg", {"in_shape": (3, 28, 28)}, r"VGG needs 32x32 inputs .*\(3, 28, 28\)"),
        ("preresnet", {"depth": 50}, r"depth >= 44 must be 9n\+2 .*got 50"),
        ("preresnet", {"depth": 21}, r"depth < 44 must be 6n\+2 .*got 21"),
        ("preresnet", {"depth": 2}, r"6n\+2 with n >= 1"),
        ("preresnet", {"depth": 8, "in_shape": (1, 16, 16)}, r"PreResNet needs 32x32"),
        ("wideresnet", {"depth": 27}, r"depth must be 6n\+4 with n >= 1; got 27"),
        ("wideresnet", {"depth": 4}, r"6n\+4"),
        ("wideresnet", {"depth": 10, "widen_factor": 0}, r"widen_factor .* >= 1; got 0"),
        ("wideresnet", {"depth": 10, "widen_factor": 2.5}, r"widen_factor must be an integer"),
        ("wideresnet", {"depth": 10, "in_shape": (3, 64, 64)}, r"WideResNet needs 32x32"),
    ],
)
def test_bad_arguments_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, **kwargs)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_wideresnet28x10_parameter_count(batch_norm):
    # WRN-28-10: n = 4 blocks per stage, widths 16 -> 160 -> 320 -> 640, 3x3 convs WITH bias.
    stem = 3 * 16 * 9 + 16  # 448

    def block(c_in, c_out, projected):
        bn = 2 * c_in + 2 * c_out if batch_norm else 0
        convs = (c_in * c_out * 9 + c_out) + (c_out * c_out * 9 + c_out)
        return bn + convs + (c_in * c_out + c_out if projected else 0)

    stage1 = block(16, 160, True) + 3 * block(160, 160, False)  # 256832 + 3 * 461760
    stage2 = block(160, 320, True) + 3 * block(320, 320, False)  # 1435520 + 3 * 1845120
    stage3 = block(320, 640, True) + 3 * block(640, 640, False)  # 5738240 + 3 * 7376640
    head = (2 * 640 if batch_norm else 0) + 640 * 10 + 10
    by_hand = stem + stage1 + stage2 + stage3 + head
    # With BN: 36,489,290 = the published 36,479,194 of WRN-28-10 (bias-free convs)
    # + 10,096 conv biases of the research code; the nobn variant drops 17,952 BN parameters.
    assert by_hand == (36_489_290 if batch_norm else 36_471_338)
    assert 36_479_194 + 10_096 == 36_489_290
    with torch.device("meta"):
        model = WideResNet(num_classes=10, depth=28, widen_factor=10, batch_norm=batch_norm)
    assert sum(p.numel() for p in model.parameters()) == by_hand
