"""Weight points as named tensors: flat vectors, names, sparsity.

A *weight point* is a dict ``name -> tensor`` of a model's parameters. Buffers (BatchNorm
running statistics) are never interpolated: at every point they are recomputed from training
data (:func:`landscape.evaluate.bn_statistics`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "flatten",
    "has_batchnorm",
    "param_names",
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
