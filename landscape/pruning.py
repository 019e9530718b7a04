"""Magnitude pruning: the baseline gRDA's sparse minima are compared against."""

from __future__ import annotations

import torch

__all__ = ["magnitude_prune"]

Named = dict[str, torch.Tensor]


def magnitude_prune(
    state: Named, prunable: list[str], sparsity: float, *, scope: str = "global"
) -> tuple[Named, Named]:
    """Zero the smallest-magnitude prunable weights so exactly ``sparsity`` of them are zero.

    Ties at the threshold are broken by position (a stable sort), so the count is exact.

    Args:
        state: state dict (not modified).
        prunable: names of the prunable tensors.
        sparsity: target fraction of zeros in [0, 1].
        scope: "global" (one threshold over all prunable weights) or "layer" (each tensor
            pruned to ``sparsity`` on its own).

    Returns:
        (pruned state dict, masks) where ``masks[name]`` is True for kept weights.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    groups = [[n] for n in prunable] if scope == "layer" else [list(prunable)]
    masks: Named = {}
    for names in groups:
        flat = torch.cat([state[n].reshape(-1).abs() for n in names])
        k = round(sparsity * flat.numel())
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:k]] = False
        i = 0
        for n in names:
            masks[n] = keep[i : i + state[n].numel()].view_as(state[n])
            i += state[n].numel()
    pruned = {k: (v * masks[k] if k in masks else v).clone() for k, v in state.items()}
    return pruned, masks
