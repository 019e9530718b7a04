"""Directions and bases in parameter space: planes, random filter-normalised directions, PCA.

Pure geometry on flat parameter vectors (float64): nothing here evaluates a network. A plane is
``origin + alpha * u + beta * v``; the one evaluator (:mod:`landscape.evaluate`) takes its
points as the basis ``[origin, u, v]`` with coordinates ``[1, alpha, beta]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from landscape.params import Named, flatten, unflatten

__all__ = [
    "Plane",
    "axis",
    "filter_normalize",
    "filter_normalized_random",
    "pca_basis",
    "plane_through",
    "random_direction",
]


@dataclass
class Plane:
    """The plane ``origin + alpha * u + beta * v`` in parameter space (a line when v = 0).

    Attributes:
        origin, u, v: flat float64 vectors (P,) in the order of ``like``.
        like: named parameters giving names, shapes and dtype of a point (values unused).
    """

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    like: Named

    def flat(self, alpha: float, beta: float = 0.0) -> torch.Tensor:
        """The point at (alpha, beta) as a flat float64 vector (P,)."""
        return self.origin + float(alpha) * self.u + float(beta) * self.v

    def point(self, alpha: float, beta: float = 0.0) -> Named:
        """The point at (alpha, beta) as named parameters (dtype of ``like``)."""
        dtype = next(iter(self.like.values())).dtype
        return unflatten(self.flat(alpha, beta).to(dtype), self.like)

    def basis(self) -> torch.Tensor:
        """(3, P): origin, u, v; the point (alpha, beta) has coordinates (1, alpha, beta)."""
        return torch.stack([self.origin, self.u, self.v])

    def coords(self, w: torch.Tensor) -> tuple[float, float]:
        """(alpha, beta) of the projection of flat ``w`` (exact for orthonormal u, v)."""
        d = w.double() - self.origin
        return float(d @ self.u), float(d @ self.v)


def plane_through(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, like: Named) -> Plane:
    """The plane through three flat points with origin w0 and orthonormal u, v.

    u = (w2 - w0) / |w2 - w0|; v = the part of w1 - w0 orthogonal to u, normalised.

    Raises:
        ValueError: w2 equals w0, or w1 lies on the line through w0 and w2.
    """
    w0, w1, w2 = w0.double(), w1.double(), w2.double()
    d = w2 - w0
    if float(d.norm()) == 0.0:
        raise ValueError("the two end points are the same weights; a plane needs distinct points")
    u = d / d.norm()
    e = w1 - w0
    e = e - (e @ u) * u
    if float(e.norm()) <= 1e-9 * float(d.norm()):
        raise ValueError("the third point lies on the line through A and B; no plane is defined")
    return Plane(w0, u, e / e.norm(), like)


def random_direction(like: Named, generator: torch.Generator) -> Named:
    """A Gaussian direction shaped like ``like``, drawn on CPU (same on every device)."""
    return {
        n: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device)
        for n, t in like.items()
    }


def filter_normalize(direction: Named, weights: Named) -> Named:
    """Filter normalisation (Li et al. 2018).

    Each filter of ``direction`` (an output channel of a conv, a row of a linear weight: index
    along dim 0) is rescaled to the norm of the same filter of ``weights``; 1-D parameters
    (biases, BatchNorm) get a zero direction, so the plane never moves them.

    Returns:
        The normalised direction (a new dict, dtype of ``direction``).
    """
    out = {}
    for n, d in direction.items():
        if d.ndim <= 1:
            out[n] = torch.zeros_like(d)
            continue
        d_norm = d.flatten(1).norm(dim=1)  # (filters,)
        w_norm = weights[n].to(d).flatten(1).norm(dim=1)
        scale = w_norm / d_norm.clamp_min(torch.finfo(d.dtype).tiny)
        out[n] = d * scale.view(-1, *[1] * (d.ndim - 1))
    return out


def filter_normalized_random(params: Named, generator: torch.Generator) -> torch.Tensor:
    """A flat float64 Gaussian direction, filter-normalised to ``params``."""
    return flatten(filter_normalize(random_direction(params, generator), params))


def pca_basis(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top two right singular vectors of m (S, P) with a fixed sign, and all singular values."""
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    if len(s) < 2 or s[1] <= 1e-12 * max(s[0], 1e-300):
        raise ValueError("the snapshots span fewer than two directions around the centre")
    comps = vt[:2].copy()
    # Like sklearn's svd_flip: the largest |entry| of each component is positive.
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(1)])
    return comps * signs[:, None], s


def axis(lo: float, hi: float, margin: float, n: int) -> np.ndarray:
    """``n`` evenly spaced values covering [lo, hi] plus ``margin`` of its extent on each side."""
    ext = hi - lo
    return np.linspace(lo - margin * ext, hi + margin * ext, n)
