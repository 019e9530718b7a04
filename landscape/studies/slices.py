"""Loss and accuracy along a line ``w_A + s * d`` (a 1D slice).

Directions: "delta" d = w_B - w_A (s = 1 is B; needs B); "random" a seeded filter-normalised
Gaussian direction (Li et al. 2018); "eigen" the top Hessian eigenvector at A (from the stored
Hessian study, so the Directions page computes it once). With B given, random and eigen
directions are rescaled to |w_B - w_A| so all three take steps of equal length; without it the
eigenvector gets the length of a filter-normalised direction (the norm of A's weight tensors,
biases and BN excluded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from landscape.checkpoints import Checkpoint
from landscape.configs import DIRECTIONS, SliceConfig
from landscape.geometry import filter_normalize, filter_normalized_random
from landscape.params import Named, flatten
from landscape.studies import base, hessian
from landscape.studies.base import Context, Kind, Result
from landscape.studies.common import (
    check_same,
    data_identity,
    eval_data,
    evaluate_coords,
    label,
    model_params,
)

__all__ = ["DIRECTIONS", "KIND", "SliceConfig", "SliceInputs", "SliceResult"]


@dataclass(frozen=True)
class SliceInputs:
    """The origin A and, for "delta" (and equal-length steps), B."""

    a: Checkpoint
    b: Checkpoint | None = None


@dataclass
class SliceResult(Result):
    """``metrics`` ``{metric: (points,)}`` at the values ``s``; ``labels`` [A, B or None]."""

    s: np.ndarray
    metrics: dict[str, np.ndarray]
    direction: str
    direction_norm: float
    span: float
    labels: list[str | None]
    bn_samples: int
    eigenvalue: float | None = None


def _eigen(cfg: SliceConfig, inputs: SliceInputs, store: Any) -> hessian.HessianResult:
    hcfg = hessian.HessianConfig(**{**asdict(cfg.hessian), "device": cfg.device})
    res = base.run(hessian.KIND, hcfg, hessian.HessianInputs(inputs.a, inputs.b), store=store)
    if res.eigenvectors is None:
        raise ValueError("the model is too large to keep Hessian eigenvectors for a slice")
    return res


def _identity(cfg: SliceConfig, inputs: SliceInputs) -> dict:
    if cfg.direction == "delta" and inputs.b is None:
        raise ValueError("direction 'delta' needs a second checkpoint (b / --to)")
    if inputs.b is not None:
        check_same([inputs.a, inputs.b])
    ident: dict[str, Any] = {"a": inputs.a.hash, "b": inputs.b.hash if inputs.b else None}
    ident |= {"direction": cfg.direction, "points": cfg.points, "span": cfg.span}
    if cfg.direction == "random":
        ident["seed"] = cfg.seed
    if cfg.direction == "eigen":
        ident["hessian"] = {k: v for k, v in asdict(cfg.hessian).items() if k != "device"}
    return {**ident, "data": data_identity(inputs.a, cfg)}


def _direction(
    cfg: SliceConfig, inputs: SliceInputs, params: Named, store: Any
) -> tuple[torch.Tensor, float | None]:
    """The flat float64 direction, and the eigenvalue for "eigen"."""
    device = next(iter(params.values())).device
    delta = None
    if inputs.b is not None:
        model = inputs.a.build_model()
        delta = flatten(model_params(model, inputs.b.state, device)).double()
        delta -= flatten(params).double()
    if cfg.direction == "delta":
        return delta, None
    if cfg.direction == "random":
        d = filter_normalized_random(params, torch.Generator().manual_seed(cfg.seed))
        return (d if delta is None else d * (delta.norm() / d.norm())), None
    res = _eigen(cfg, inputs, store)
    v1 = torch.from_numpy(res.eigenvectors[0]).double().to(device)
    length = delta.norm() if delta is not None else flatten(filter_normalize(params, params)).norm()
    return v1 * (float(length) / v1.norm()), float(res.eigenvalues[0])


def _compute(cfg: SliceConfig, inputs: SliceInputs, context: Context) -> SliceResult:
    model = inputs.a.build_model()
    params = model_params(model, inputs.a.state, cfg.device)
    d, eigenvalue = _direction(cfg, inputs, params, context.store)
    basis = torch.stack([flatten(params).double(), d])  # (2, P): w_A + s * d
    s = cfg.s
    data = eval_data(inputs.a, cfg)
    coords = np.stack([np.ones_like(s), s], 1)
    out = evaluate_coords(model, basis, coords, data, context, points_per_pass=cfg.points_per_pass)
    return SliceResult(
        s=s,
        metrics=out,
        direction=cfg.direction,
        direction_norm=float(d.norm()),
        span=float(cfg.span),
        labels=[label(inputs.a), label(inputs.b) if inputs.b is not None else None],
        bn_samples=data.bn_samples,
        eigenvalue=eigenvalue,
    )


KIND = Kind("slice", 1, SliceConfig, SliceResult, _identity, _compute)
