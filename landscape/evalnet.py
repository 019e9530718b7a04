"""Faster, equivalent layers for the evaluator's private copy of a network (CPU only).

The evaluator runs its copy in eval mode only, where a BatchNorm layer is a per-channel affine
map ``alpha * x + beta`` (``alpha = weight / sqrt(running_var + eps)``, ``beta = bias -
running_mean * alpha``). Inside an ``nn.Sequential``, :func:`fuse_batchnorm` merges each run
BatchNorm2d -> ReLU -> MaxPool2d(2) into one :class:`EvalBatchNorm2d`:

* the affine map and ReLU are monotone in each channel (decreasing where alpha < 0), and so is
  float rounding, so max pooling commutes with them bit for bit:
  ``pool(relu(alpha x + beta)) == relu(|alpha| pool(sign(alpha) x) + beta)``; the affine map
  and ReLU then run on a quarter of the values;
* the 2x2 pooling of a channels-last tensor is two ``torch.maximum`` of strided views (3x
  faster than ``max_pool2d`` on the digits CNN's 16 x 8 x 8 maps);
* the affine map is one ``addcmul`` (2x faster than the eval-mode ``batch_norm`` kernel on
  channels-last input; it agrees with it to float rounding).

On the digits CNN (bench/bench_curves.py) these layers took 36% of a point. The BatchNorm
module keeps its place, parameters and buffers, so recalibration
(:class:`landscape.evaldata.BatchNormPass`) sees and sets it as before; the ReLU and pooling
it absorbed become ``nn.Identity``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalBatchNorm2d", "fuse_batchnorm"]


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``; for a channels-last tensor of even height and width, two
    ``torch.maximum`` of strided views (NaN propagates as in ``max_pool2d``)."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    if h % 2 or w % 2 or not nhwc.is_contiguous():
        return F.max_pool2d(x, 2)
    rows = nhwc.reshape(n * h // 2, 2, w // 2, 2 * c)  # rows 2i and 2i + 1 side by side
    pairs = torch.maximum(rows[:, 0], rows[:, 1]).view(n * h // 2, w // 2, 2, c)
    out = torch.maximum(pairs[:, :, 0], pairs[:, :, 1])  # columns 2j and 2j + 1
    return out.view(n, h // 2, w // 2, c).permute(0, 3, 1, 2)


class EvalBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that also applies the ReLU (``relu``) and the 2x2 max pooling (``pool``)
    that followed it; in training mode it computes exactly that sequence."""

    def __init__(self, bn: nn.BatchNorm2d, relu: bool, pool: bool):
        like = bn.running_mean
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, True,
                         device=like.device, dtype=like.dtype)  # fmt: skip
        self.load_state_dict(bn.state_dict())
        self.relu, self.pool = relu, pool
        self.train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            y = super().forward(x)
            y = F.relu(y) if self.relu else y
            return F.max_pool2d(y, 2) if self.pool else y
        alpha = torch.rsqrt(self.running_var + self.eps)
        alpha = alpha * self.weight if self.weight is not None else alpha
        beta = -self.running_mean * alpha
        beta = beta + self.bias if self.bias is not None else beta
        if self.pool:
            if bool((alpha < 0).any()):  # those channels pool their minimum
                x = x * torch.where(alpha < 0, -1.0, 1.0).to(x).view(1, -1, 1, 1)
                alpha = alpha.abs()
            x = max_pool2(x)
        y = torch.addcmul(beta.to(x).view(1, -1, 1, 1), x, alpha.to(x).view(1, -1, 1, 1))
        return y.relu_() if self.relu else y


def _is_pool2(m: nn.Module) -> bool:
    """An ``nn.MaxPool2d`` with 2x2 windows, stride 2 and nothing else set."""
    if type(m) is not nn.MaxPool2d or m.return_indices or m.ceil_mode:
        return False
    pair = (m.kernel_size, m.stride, m.padding, m.dilation)
    two = [(v, v) if isinstance(v, int) else tuple(v) for v in pair]
    return two == [(2, 2), (2, 2), (0, 0), (1, 1)]


def fuse_batchnorm(net: nn.Module) -> int:
    """Replace, in every ``nn.Sequential`` of ``net``, each BatchNorm2d that tracks running
    statistics (with the ReLU and 2x2 max pooling right after it) by an
    :class:`EvalBatchNorm2d`; returns how many."""
    count = 0
    for seq in [m for m in net.modules() if type(m) is nn.Sequential]:
        kids = list(seq)
        for i, bn in enumerate(kids):
            if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats:
                continue
            relu = i + 1 < len(kids) and type(kids[i + 1]) is nn.ReLU
            pool = relu and i + 2 < len(kids) and _is_pool2(kids[i + 2])
            seq[i] = EvalBatchNorm2d(bn, relu, pool)
            for j in range(i + 1, i + 1 + relu + pool):
                seq[j] = nn.Identity()
            count += 1
    return count
