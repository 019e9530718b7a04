"""Top Hessian eigenpairs at A and, with B, how the pruning direction lies in their span.

delta = w_B - w_A over parameters (not BN statistics). With the top-k eigenvectors V at w_A
(Lanczos on Hessian-vector products, :func:`landscape.hessian.top_eigen`), the result reports
|V^T delta| / |delta| and each |<v_i, delta>| / |delta|, beside the same for a seeded random
direction of equal norm and for the magnitude-pruning direction (w_A globally magnitude-pruned
to B's sparsity, minus w_A).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from landscape.checkpoints import Checkpoint
from landscape.configs import HessianConfig
from landscape.evaldata import small_model_threads
from landscape.evaluate import EvalData, bn_statistics
from landscape.hessian import top_eigen
from landscape.models import prunable_names
from landscape.params import Named, flatten, param_names, sparsity
from landscape.pruning import magnitude_prune
from landscape.studies.base import Context, Kind, Result, config_identity
from landscape.studies.common import data_identity, dataset, model_params

__all__ = ["KIND", "MAX_EIGENVECTOR_FLOATS", "HessianConfig", "HessianInputs", "HessianResult"]

MAX_EIGENVECTOR_FLOATS = 5_000_000  # eigenvectors are stored only below k * P of this


@dataclass(frozen=True)
class HessianInputs:
    """A (the point of the Hessian, the dense minimum) and optionally B (the sparse one)."""

    a: Checkpoint
    b: Checkpoint | None = None

    def __post_init__(self) -> None:
        if self.b is not None and self.b.arch != self.a.arch:
            raise ValueError(f"{self.b.name} and {self.a.name} have different architectures")


@dataclass
class HessianResult(Result):
    """Eigenvalues (k,) descending; eigenvectors (k, P) float32 when k * P is small enough.

    With B: ``overlap`` (k,) = |<v_i, delta>| / |delta|, ``random_overlap``,
    ``magnitude_overlap``, and their norms ``projection_ratio`` (|V^T delta| / |delta|),
    ``random_projection_ratio``, ``magnitude_projection_ratio``; ``delta_norm``;
    ``sparsity_b`` (fraction of exact zeros in B's prunable weights); ``n_params``: the
    dimension P of the directions (None in results stored before it was kept).
    """

    eigenvalues: np.ndarray
    n_hvp: int
    samples: int
    bn_samples: int
    eigenvectors: np.ndarray | None = None
    overlap: np.ndarray | None = None
    random_overlap: np.ndarray | None = None
    magnitude_overlap: np.ndarray | None = None
    projection_ratio: float | None = None
    random_projection_ratio: float | None = None
    magnitude_projection_ratio: float | None = None
    delta_norm: float | None = None
    sparsity_b: float | None = None
    n_params: int | None = None


def _identity(cfg: HessianConfig, inputs: HessianInputs) -> dict:
    return {
        "a": inputs.a.hash,
        "b": inputs.b.hash if inputs.b is not None else None,
        **config_identity(cfg),
        "data": data_identity(inputs.a, cfg),
    }


def _overlaps(vecs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """|<v_i, d>| / |d| for each eigenvector row (NaN for a zero direction)."""
    norm = np.linalg.norm(d)
    return np.abs(vecs @ d) / norm if norm > 0 else np.full(len(vecs), np.nan)


def _directions(a: Checkpoint, b: Checkpoint, model: nn.Module, vecs: np.ndarray, seed: int):
    """Overlaps of the pruning, random and magnitude-pruning directions with the eigenvectors."""
    names = param_names(model)

    def flat(state: Named) -> np.ndarray:
        return flatten(state, names).double().cpu().numpy()

    wa = flat(a.state)
    delta = flat(b.state) - wa
    prunable = prunable_names(model)
    sparsity_b = sparsity(b.state, prunable)["zero"]
    pruned, _ = magnitude_prune(a.state, prunable, sparsity_b, scope="global")
    rand = np.random.default_rng(seed).standard_normal(delta.size)
    rand *= np.linalg.norm(delta) / np.linalg.norm(rand)
    overlap = _overlaps(vecs, delta)
    random_overlap = _overlaps(vecs, rand)
    magnitude_overlap = _overlaps(vecs, flat(pruned) - wa)
    return {
        "overlap": overlap,
        "random_overlap": random_overlap,
        "magnitude_overlap": magnitude_overlap,
        "projection_ratio": float(np.linalg.norm(overlap)),
        "random_projection_ratio": float(np.linalg.norm(random_overlap)),
        "magnitude_projection_ratio": float(np.linalg.norm(magnitude_overlap)),
        "delta_norm": float(np.linalg.norm(delta)),
        "sparsity_b": float(sparsity_b),
    }


def _compute(cfg: HessianConfig, inputs: HessianInputs, context: Context) -> HessianResult:
    a = inputs.a
    ds = dataset(a, cfg)
    data = EvalData.from_dataset(ds, device=cfg.device)
    model = a.build_model()
    params = model_params(model, a.state, cfg.device)
    # The one thread policy for the whole study (BN pass and Lanczos): a small model on one
    # CPU thread; the 2-thread default was 4x slower here for the digits CNN.
    with small_model_threads(model, data.x_train):
        buffers = bn_statistics(model, params, data)
        vals, vecs, n_hvp = top_eigen(
            model, params, buffers, data, cfg.k, subset=cfg.subset, tol=cfg.tol, seed=cfg.seed,
            progress=context.progress,
        )  # fmt: skip
    n = len(ds.y_train)
    more = _directions(a, inputs.b, model, vecs, cfg.seed) if inputs.b is not None else {}
    return HessianResult(
        eigenvalues=vals,
        n_hvp=n_hvp,
        samples=n if cfg.subset is None else min(cfg.subset, n),
        bn_samples=data.bn_samples,
        eigenvectors=vecs.astype(np.float32) if vecs.size < MAX_EIGENVECTOR_FLOATS else None,
        n_params=int(vecs.shape[1]),
        **more,
    )


KIND = Kind("hessian", 1, HessianConfig, HessianResult, _identity, _compute)
