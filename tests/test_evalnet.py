"""The evaluator's fused BatchNorm layers against the layers they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.data import load_dataset
from landscape.evaldata import EvalData, channels_last
from landscape.evalnet import EvalBatchNorm2d, fuse_batchnorm, max_pool2
from landscape.evaluate import Evaluator
from landscape.models import build_model
from tests.reference import point_metrics


def _bn(c: int, seed: int, negative: int = 0) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm2d with random statistics; ``negative`` channels with weight < 0
    and one with weight 0."""
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c).eval()
    bn.running_mean.normal_(generator=gen)
    bn.running_var.uniform_(0.2, 3.0, generator=gen)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0, generator=gen)
        bn.weight[:negative] *= -1
        bn.weight[negative] = 0.0
        bn.bias.normal_(generator=gen)
    return bn


@pytest.mark.parametrize("layout", ["channels_last", "nchw", "odd"])
def test_max_pool2_is_max_pool2d_bit_for_bit(layout):
    torch.manual_seed(0)
    x = torch.randn(5, 7, 6 if layout != "odd" else 7, 8)
    x[0, 1, 2, 3], x[1, 2, 0, 0] = float("nan"), float("-inf")
    x = channels_last(x) if layout != "nchw" else x
    want, got = F.max_pool2d(x, 2), max_pool2(x)
    assert torch.equal(want.isnan(), got.isnan())
    assert torch.equal(want.nan_to_num(), got.nan_to_num())


@pytest.mark.parametrize("negative", [0, 3])
@pytest.mark.parametrize("relu,pool", [(True, True), (True, False), (False, False)])
def test_fused_layer_matches_the_sequence(relu, pool, negative):
    """relu(alpha pool(sign x) + beta) against BN -> ReLU -> MaxPool, negative weights included
    (their channels pool the minimum): equal to float rounding."""
    torch.manual_seed(1)
    bn = _bn(6, seed=2, negative=negative)
    seq = nn.Sequential(bn, *([nn.ReLU()] * relu), *([nn.MaxPool2d(2)] * pool)).eval()
    x = channels_last(torch.randn(9, 6, 8, 8) * 3)
    fused = EvalBatchNorm2d(bn, relu, pool)
    assert not fused.training
    torch.testing.assert_close(fused(x), seq(x), rtol=1e-6, atol=1e-6)
    assert torch.equal(fused.running_var, bn.running_var)  # eval mode: statistics unchanged


def test_fused_layer_in_training_mode_is_the_sequence():
    torch.manual_seed(3)
    bn = _bn(4, seed=4, negative=1).train()
    fused = EvalBatchNorm2d(bn, True, True)
    x = torch.randn(6, 4, 4, 4)
    want = F.max_pool2d(F.relu(bn(x)), 2)
    assert torch.equal(fused(x), want)
    assert torch.equal(fused.running_mean, bn.running_mean)


def test_fuse_batchnorm_keeps_names_and_skips_other_pools():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # not a plain 2x2 pool: stays
        nn.BatchNorm2d(4, track_running_stats=False),  # batch statistics in eval: stays
        nn.Flatten(),
    )
    names = [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
    assert fuse_batchnorm(net) == 2
    kinds = [type(m).__name__ for m in net]
    assert kinds[1:4] == ["EvalBatchNorm2d", "Identity", "Identity"]
    assert kinds[5:9] == ["EvalBatchNorm2d", "Identity", "MaxPool2d", "BatchNorm2d"]
    assert [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()] == names
    assert (net[1].relu, net[1].pool, net[5].relu, net[5].pool) == (True, True, True, False)


def test_evaluator_fuses_the_cnn_and_matches_the_reference():
    """The digits CNN's BN layers are fused in the evaluator's copy (not in the model given);
    its metrics at points of a two-vector basis match the naive reference's."""
    torch.manual_seed(0)
    data = EvalData.from_dataset(load_dataset("digits"), bn_subset=300)
    model = build_model("cnn", in_shape=(1, 8, 8), num_classes=10)
    pa = {n: p.detach().clone() for n, p in model.named_parameters()}
    pb = {n: v + 0.1 * torch.randn_like(v) for n, v in pa.items()}
    ev = Evaluator(model, data, [pa, pb])
    assert sum(isinstance(m, EvalBatchNorm2d) for m in ev.net.modules()) == 2
    assert not any(isinstance(m, EvalBatchNorm2d) for m in model.modules())
    x = [data.x_train, data.y_train, data.x_test, data.y_test]
    for c in (0.0, 0.7):
        params = {n: (1 - c) * pa[n] + c * pb[n] for n in pa}
        want = point_metrics(model, params, *x, subset=300)
        got = ev([1 - c, c])
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k
