"""Weight points as named tensors: flat vectors, functional evaluation, BN recalibration.

A *weight point* is a dict ``name -> tensor`` of a model's parameters. Buffers (BatchNorm
running statistics) are never interpolated: at every point they are recomputed from training
data by :func:`recalibrate_bn`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "EvalResult",
    "evaluate",
    "flatten",
    "has_batchnorm",
    "param_names",
    "recalibrate_bn",
    "sparsity",
    "split_state",
    "unflatten",
]

Named = dict[str, torch.Tensor]


def param_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters in registration order."""
    return [n for n, _ in model.named_parameters()]


def split_state(model: nn.Module, state: Named) -> tuple[Named, Named]:
    """Split a full state dict into (parameters, buffers) following ``model``'s structure."""
    pnames = set(param_names(model))
    params = {k: v for k, v in state.items() if k in pnames}
    buffers = {k: v for k, v in state.items() if k not in pnames}
    return params, buffers


def flatten(tensors: Named, names: list[str] | None = None) -> torch.Tensor:
    """Concatenate tensors (in ``names`` order, default dict order) into one flat vector."""
    names = list(tensors) if names is None else names
    return torch.cat([tensors[n].reshape(-1) for n in names])


def unflatten(vec: torch.Tensor, like: Named) -> Named:
    """Inverse of :func:`flatten`: split ``vec`` into tensors shaped like ``like``."""
    need = sum(t.numel() for t in like.values())
    if need != vec.numel():  # checked first: a short vector would fail inside view_as
        raise ValueError(f"vector has {vec.numel()} entries, the model needs {need}")
    out, i = {}, 0
    for n, t in like.items():
        out[n] = vec[i : i + t.numel()].view_as(t)
        i += t.numel()
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


@contextmanager
def _cumulative_bn(model: nn.Module) -> Iterator[None]:
    """Train mode with momentum None (cumulative average), restored afterwards."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [m.momentum for m in bns]
    was_training = model.training
    try:
        for m in bns:
            m.momentum = None
        model.train()
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.train(was_training)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    params: Named,
    x: torch.Tensor,
    *,
    batch_size: int = 2048,
    subset: int | None = None,
) -> Named:
    """Recompute BatchNorm running statistics at a weight point.

    One pass over ``x`` (or its first ``subset`` samples) in train mode with a cumulative
    average over batches (momentum None), starting from fresh statistics: an endpoint's stored
    statistics are never reused.

    Args:
        model: the architecture (its own weights are not used or changed).
        params: the weight point.
        x: training inputs (N, ...), already on the evaluation device.
        batch_size: batch size of the pass; a single batch gives the exact data statistics.
        subset: use only the first ``subset`` samples.

    Returns:
        Fresh buffers dict (running_mean, running_var, num_batches_tracked per BN layer).
    """
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    device = next(iter(params.values())).device
    buffers = {n: b.to(device) for n, b in buffers.items()}
    if not has_batchnorm(model):
        return buffers
    for name, mod in model.named_modules():
        if isinstance(mod, _BatchNorm) and mod.track_running_stats:
            prefix = f"{name}." if name else ""
            buffers[prefix + "running_mean"].zero_()
            buffers[prefix + "running_var"].fill_(1.0)
            buffers[prefix + "num_batches_tracked"].zero_()
    if subset is not None:
        x = x[:subset]
    with _cumulative_bn(model):
        for i in range(0, x.shape[0], batch_size):
            functional_call(model, (params, buffers), (x[i : i + batch_size],))
    return buffers


class EvalResult(tuple):
    """(loss, accuracy) of one weight point on one data set; fields by name too."""

    __slots__ = ()

    def __new__(cls, loss: float, acc: float):
        return super().__new__(cls, (loss, acc))

    @property
    def loss(self) -> float:
        return self[0]

    @property
    def acc(self) -> float:
        return self[1]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    params: Named,
    buffers: Named,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 2048,
) -> EvalResult:
    """Mean cross-entropy and accuracy of the weight point (params, buffers) on (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        logits = functional_call(model, (params, buffers), (x[i : i + batch_size],))  # (b, C)
        yb = y[i : i + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = x.shape[0]
    return EvalResult(float(loss_sum) / n, float(correct) / n)


def sparsity(state: Named, prunable: list[str], *, tol: float = 1e-3) -> dict:
    """Sparsity of the prunable weights.

    Returns:
        ``{"zero": fraction exactly zero, "small": fraction with |w| < tol, "count": n,
        "layers": {name: fraction exactly zero}}`` over the tensors named in ``prunable``.
    """
    zero = small = total = 0
    layers = {}
    for n in prunable:
        w = state[n]
        z = int((w == 0).sum())
        zero += z
        small += int((w.abs() < tol).sum())
        total += w.numel()
        layers[n] = z / w.numel()
    return {
        "zero": zero / total if total else 0.0,
        "small": small / total if total else 0.0,
        "count": total,
        "layers": layers,
    }
