"""A random filter-normalised plane around one checkpoint (Li et al. 2018).

w = w_A + alpha*d1 + beta*d2 with d1, d2 independent seeded Gaussian directions, each
filter-normalised (:func:`landscape.geometry.filter_normalize`: zero on biases and BN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from landscape.checkpoints import Checkpoint
from landscape.configs import RandomPlaneConfig
from landscape.geometry import Plane, filter_normalized_random
from landscape.params import flatten
from landscape.studies.base import Context, Kind, Result, config_identity
from landscape.studies.common import (
    check_grid,
    data_identity,
    eval_data,
    evaluate_grid,
    model_params,
)

__all__ = ["KIND", "RandomPlaneConfig", "RandomPlaneInputs", "RandomPlaneResult"]


@dataclass(frozen=True)
class RandomPlaneInputs:
    """The plane's centre."""

    a: Checkpoint


@dataclass
class RandomPlaneResult(Result):
    """Metric grids ``{metric: (G, G)}`` [beta, alpha] on axes alpha = beta = (G,).

    ``direction_norms`` are [|d1|, |d2|], ``cosine`` the cosine between d1 and d2.
    """

    alpha: np.ndarray
    beta: np.ndarray
    metrics: dict[str, np.ndarray]
    seed: int
    span: float
    direction_norms: list[float]
    cosine: float
    bn_samples: int


def _identity(cfg: RandomPlaneConfig, inputs: RandomPlaneInputs) -> dict:
    check_grid(cfg.grid, 0.0)
    if cfg.span <= 0:
        raise ValueError(f"span must be > 0, got {cfg.span}")
    return {
        "ckpt": inputs.a.hash,
        **config_identity(cfg, skip=("bn_subset",)),
        "data": data_identity(inputs.a, cfg),
    }


def _compute(
    cfg: RandomPlaneConfig, inputs: RandomPlaneInputs, context: Context
) -> RandomPlaneResult:
    model = inputs.a.build_model()
    params = model_params(model, inputs.a.state, cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    d1 = filter_normalized_random(params, gen)
    d2 = filter_normalized_random(params, gen)
    plane = Plane(flatten(params).double(), d1, d2, params)
    data = eval_data(inputs.a, cfg)
    ax = np.linspace(-cfg.span, cfg.span, cfg.grid)
    metrics = evaluate_grid(model, plane, ax, ax, data, context, cfg)
    return RandomPlaneResult(
        alpha=ax,
        beta=ax.copy(),
        metrics=metrics,
        seed=cfg.seed,
        span=cfg.span,
        direction_norms=[float(d1.norm()), float(d2.norm())],
        cosine=float(d1 @ d2 / (d1.norm() * d2.norm())),
        bn_samples=data.bn_samples,
    )


KIND = Kind("random_plane", 1, RandomPlaneConfig, RandomPlaneResult, _identity, _compute)
