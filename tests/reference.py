"""Independent reference for the evaluator: the naive per-point BN recalibration and evaluation.

A plain copy of what ``landscape.params`` used to hold (``recalibrate_bn``, ``evaluate``):
``functional_call`` per batch, F.cross_entropy, no shared work. Tests check the fast evaluator
in ``landscape.evaluate`` against it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Named = dict[str, torch.Tensor]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, params: Named, x: torch.Tensor, *, batch_size: int = 2048, subset=None
) -> Named:
    """Fresh BN buffers at ``params``: train mode, momentum None, one pass over ``x[:subset]``."""
    device = next(iter(params.values())).device
    buffers = {n: b.detach().clone().to(device) for n, b in model.named_buffers()}
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return buffers
    for name, mod in bns:
        if mod.track_running_stats:
            prefix = f"{name}." if name else ""
            buffers[prefix + "running_mean"].zero_()
            buffers[prefix + "running_var"].fill_(1.0)
            buffers[prefix + "num_batches_tracked"].zero_()
    saved = [m.momentum for _, m in bns]
    was_training = model.training
    try:
        for _, m in bns:
            m.momentum = None
        model.train()
        x = x if subset is None else x[:subset]
        for i in range(0, x.shape[0], batch_size):
            functional_call(model, (params, buffers), (x[i : i + batch_size],))
    finally:
        for (_, m), mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.train(was_training)
    return buffers


@torch.no_grad()
def logits(model: nn.Module, params: Named, buffers: Named, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of the weight point (params, buffers) on x (one batch)."""
    was_training = model.training
    model.eval()
    try:
        return functional_call(model, (params, buffers), (x,))
    finally:
        model.train(was_training)


def evaluate(model, params, buffers, x, y, *, batch_size: int = 2048) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the weight point (params, buffers) on (x, y)."""
    loss = correct = 0.0
    for i in range(0, x.shape[0], batch_size):
        out = logits(model, params, buffers, x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss += float(F.cross_entropy(out.double(), yb, reduction="sum"))
        correct += float((out.argmax(1) == yb).sum())
    return loss / x.shape[0], correct / x.shape[0]


def ece(logits_: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with plain numpy: bins (b/bins, (b+1)/bins] of confidence."""
    z = logits_.double().cpu().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y.cpu().numpy()).astype(float)
    total = 0.0
    for b in range(bins):
        inside = (conf > b / bins) & (conf <= (b + 1) / bins)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def point_metrics(model, params, xtr, ytr, xte, yte, *, batch_size=2048, subset=None) -> dict:
    """{metric: value} for the evaluator's METRICS at one point, the naive way."""
    buffers = recalibrate_bn(model, params, xtr, batch_size=batch_size, subset=subset)
    out = {}
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        loss, acc = evaluate(model, params, buffers, x, y)
        out |= {f"{split}_loss": loss, f"{split}_acc": acc}
        out[f"{split}_ece"] = ece(logits(model, params, buffers, x), y)
    return out
