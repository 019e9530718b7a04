"""Evaluation data on its device, and the thread policy of evaluation and training.

:class:`EvalData` holds the training and test tensors where the points are evaluated (CPU
images stored channels-last) and how BatchNorm is recalibrated. :func:`small_model_threads`
is the one thread policy: small models run on one CPU thread (see its docstring for why).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscape.data import Dataset

__all__ = [
    "LINEAR_LAYERS",
    "SMALL_MACS",
    "EvalData",
    "channels_last",
    "macs_per_sample",
    "small_model_threads",
]

SMALL_MACS = 2_000_000  # multiply-adds per sample below which a model counts as small
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # outputs linear in (weight, bias)


@torch.no_grad()
def macs_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the Linear/Conv layers for one sample (eval-mode forward of x[:1])."""
    total = 0

    def count(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.weight[0].numel()  # outputs x fan-in

    handles = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, LINEAR_LAYERS)
    ]
    was_training = model.training
    model.eval()
    try:
        model(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


@contextmanager
def small_model_threads(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Run the block on one torch CPU thread if ``model`` is small (< SMALL_MACS per sample).

    torch's thread count is process-wide: it is restored when the block ends. Nothing changes
    for inputs on a GPU or for larger models.
    """
    if x.device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    if macs_per_sample(model, x) >= SMALL_MACS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d (N, C, H, W) CPU tensor with channels-last strides; other tensors unchanged.

    ``Tensor.contiguous(memory_format=torch.channels_last)`` keeps NCHW strides when C == 1
    (both layouts are "contiguous" then) and the convolution would stay NCHW, so build the
    strides explicitly.
    """
    # CPU only: that is where it was measured to help; on CUDA a one-channel input with these
    # strides made cuDNN fail (misaligned address, H200, torch 2.11).
    if x.ndim != 4 or x.stride(1) == 1 or x.device.type != "cpu":
        return x
    n, c, h, w = x.shape
    out = torch.empty_strided(
        (n, c, h, w), (c * h * w, 1, w * c, c), dtype=x.dtype, device=x.device
    )
    return out.copy_(x)


@dataclass
class EvalData:
    """Training and test tensors on the evaluation device, and how BN is recalibrated.

    Attributes:
        bn_subset: recalibrate BN on the first ``bn_subset`` training samples (None: all).
        batch_size: batch size of the BN recalibration pass. The statistics are the cumulative
            average of per-batch statistics, so they depend on it; one batch (the default for
            data sets up to 2048 samples) gives the exact statistics of the data.
        eval_batch_size: rows per evaluation pass on GPUs (on the CPU, cache-sized chunks are
            chosen from the first layer's output); results do not depend on it.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    bn_subset: int | None = None
    batch_size: int = 2048
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.bn_subset is not None and self.bn_subset < 1:
            raise ValueError(f"bn_subset must be >= 1, got {self.bn_subset}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            sizes = f"{self.batch_size} and {self.eval_batch_size}"
            raise ValueError(f"batch sizes must be >= 1, got {sizes}")

    @classmethod
    def from_dataset(
        cls,
        data: Dataset,
        *,
        device: str | torch.device = "cpu",
        bn_subset: int | None = None,
        batch_size: int = 2048,
        eval_batch_size: int | None = None,
    ) -> EvalData:
        """Move a data set to ``device`` (images stored channels-last, see module notes).

        ``eval_batch_size`` None: 256 on the CPU (cache-sized chunks), else ``batch_size``
        (a GPU wants large batches).
        """
        if eval_batch_size is None:
            eval_batch_size = 256 if torch.device(device).type == "cpu" else batch_size
        xs = [channels_last(x.to(device)) for x in (data.x_train, data.x_test)]
        ys = [y.to(device) for y in (data.y_train, data.y_test)]
        return cls(xs[0], ys[0], xs[1], ys[1], bn_subset, batch_size, eval_batch_size)

    @property
    def bn_samples(self) -> int:
        """Number of training samples the BN statistics are computed from."""
        n = self.x_train.shape[0]
        return n if self.bn_subset is None else min(self.bn_subset, n)

    def describe(self) -> dict[str, Any]:
        """What the result depends on besides the weights (goes into result keys)."""
        n_train, n_test = self.x_train.shape[0], self.x_test.shape[0]
        return dict(n_train=n_train, n_test=n_test, bn_samples=self.bn_samples,
                    bn_batch_size=self.batch_size)  # fmt: skip
