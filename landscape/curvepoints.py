"""Points of curves in weight space: Bezier curves and polygonal chains through control points.

A curve of order k has control points w_0 (checkpoint A), w_1..w_{k-1} (the bends) and w_k
(checkpoint B); every point on it is a linear combination of the control points, so the one
evaluator takes the control points as its basis and the weights below as coordinates:

- **bezier**: phi(t) = sum_i C(k,i) t^i (1-t)^(k-i) w_i (Bernstein weights; Garipov et al.);
- **polychain**: the piecewise-linear path through w_0..w_k with equal t per segment, as the
  research code's ``PolyChain``: weight_i(t) = max(0, 1 - |k t - i|) (hat functions). For one
  bend: phi(t) = 2 (t w_1 + (0.5 - t) w_0) for t < 0.5, 2 ((t - 0.5) w_2 + (1 - t) w_1) else.

A curve may be **masked**: kept at exactly zero where the end point (B, the sparse minimum) is
zero in the prunable weights. A and the bends are then projected onto that mask (once, and
after every optimizer step of a fit), so every point of the curve is zero there too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from landscape.configs import CURVE_TYPES
from landscape.params import Named, flatten, unflatten

__all__ = ["CURVE_TYPES", "BezierCurve", "bernstein", "curve_weights", "hat_weights"]


def bernstein(k: int, t: torch.Tensor | float | list[float]) -> torch.Tensor:
    """Bernstein basis of degree ``k`` at the values ``t``.

    Args:
        k: degree (the curve's order), >= 0.
        t: values in [0, 1]: a number, a list or a 1-d tensor.

    Returns:
        (len(t), k + 1) tensor with entries C(k, i) t^i (1 - t)^(k - i); rows sum to 1.
    """
    if k < 0:
        raise ValueError(f"degree must be >= 0, got {k}")
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()).reshape(-1, 1)  # (n, 1)
    i = torch.arange(k + 1, device=t.device)  # (k + 1,)
    binom = torch.tensor([math.comb(k, j) for j in range(k + 1)], dtype=t.dtype, device=t.device)
    # pow(0, 0) == 1, so the endpoints get exactly (1, 0, ..., 0) and (0, ..., 0, 1).
    return binom * t**i * (1 - t) ** (k - i)  # (n, k + 1)


def hat_weights(k: int, t: torch.Tensor | float | list[float]) -> torch.Tensor:
    """Weights of a polygonal chain with ``k`` segments (k + 1 control points) at ``t``.

    Returns:
        (len(t), k + 1) tensor with entries max(0, 1 - |k t - i|): at most two non-zero per row
        (the ends of t's segment), rows sum to 1, exactly one-hot at t = i / k.
    """
    if k < 0:
        raise ValueError(f"segments must be >= 0, got {k}")
    t = torch.as_tensor(t)  # a float64 t keeps its precision (the knots are exact either way)
    t = (t if t.is_floating_point() else t.to(torch.get_default_dtype())).reshape(-1, 1)  # (n, 1)
    i = torch.arange(k + 1, device=t.device, dtype=t.dtype)  # (k + 1,)
    return (1 - (t * k - i).abs()).clamp_min(0)  # (n, k + 1)


def curve_weights(kind: str, k: int, t: torch.Tensor | float | list[float]) -> torch.Tensor:
    """(len(t), k + 1) weights of the control points: Bernstein (bezier) or hats (polychain)."""
    if kind == "bezier":
        return bernstein(k, t)
    if kind == "polychain":
        return hat_weights(k, t)
    raise ValueError(f"curve type must be one of {', '.join(CURVE_TYPES)}, got {kind!r}")


class BezierCurve:
    """A curve in weight space with fixed endpoints and trainable bends: a Bezier curve, or a
    polygonal chain (``kind="polychain"``) through the same kind of control points.

    The control points are kept as flat vectors in the order of ``names``; the named dicts
    returned by :meth:`point` and :attr:`bends` are views into them.

    Args:
        start: named parameters at t = 0 (checkpoint A).
        end: named parameters at t = 1 (checkpoint B), same names and shapes.
        bends: the k - 1 inner control points as named dicts; None: ``order - 1`` bends
            evenly spaced on the straight line (where the fit starts).
        order: the order k when ``bends`` is None (default 2); ignored otherwise.
        kind: "bezier" (default) or "polychain" (see :func:`curve_weights`).

    Attributes:
        names: parameter names, the order of the flat vectors.
        ends: (2, P) the fixed endpoints; inner: (k - 1, P) the bends (trained by fit_curve).
        history: per-epoch mean training loss of the fit (empty if not fitted).
        masked: names of the tensors kept at zero where B is zero (empty: not masked).
    """

    def __init__(
        self,
        start: Named,
        end: Named,
        bends: list[Named] | None = None,
        *,
        order: int = 2,
        kind: str = "bezier",
    ):
        if list(start) != list(end) or any(start[n].shape != end[n].shape for n in start):
            raise ValueError("the endpoints must have the same parameter names and shapes")
        curve_weights(kind, 1, 0.0)  # raises on an unknown kind
        self.kind = kind
        self.names = list(start)
        self._like = {n: start[n].detach() for n in self.names}
        a = flatten(start, self.names).detach()
        b = flatten(end, self.names).detach()
        self.ends = torch.stack([a, b])  # (2, P)
        if bends is None:
            if order < 1:
                raise ValueError(f"order must be >= 1 (1 is the straight line), got {order}")
            s = torch.arange(1, order, dtype=a.dtype, device=a.device)[:, None] / order
            inner = (1 - s) * a + s * b  # (k - 1, P)
        elif bends:
            inner = torch.stack([flatten(w, self.names).to(a) for w in bends])
        else:
            inner = a.new_zeros((0, a.numel()))  # order 1: the straight line
        self.inner = inner.detach().clone()  # (k - 1, P), the trainable part
        self.history: list[float] = []  # per-epoch mean training loss of the fit
        self.masked: list[str] = []
        self.keep: torch.Tensor | None = None  # (P,) bool: False where the curve stays 0

    @property
    def order(self) -> int:
        return self.inner.shape[0] + 1

    @property
    def start(self) -> Named:
        return unflatten(self.ends[0], self._like)

    @property
    def end(self) -> Named:
        return unflatten(self.ends[1], self._like)

    @property
    def bends(self) -> list[Named]:
        """The inner control points as named dicts (detached views)."""
        return [unflatten(w, self._like) for w in self.inner.detach()]

    def to(self, device: str | torch.device) -> BezierCurve:
        """Move the control points to ``device`` (in place); returns self."""
        self.ends = self.ends.to(device)
        self.inner = self.inner.detach().to(device)
        self._like = {n: v.to(device) for n, v in self._like.items()}
        self.keep = None if self.keep is None else self.keep.to(device)
        return self

    def mask_to_end(self, names: Sequence[str]) -> BezierCurve:
        """Keep the curve at exactly zero where B is zero in the tensors ``names`` (the prunable
        weights): A and the bends are projected now and by every :meth:`project`; returns self."""
        end = self.end
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ValueError(f"no such parameters to mask: {', '.join(unknown[:5])}")
        keep = {n: end[n] != 0 if n in names else torch.ones_like(end[n], dtype=torch.bool)
                for n in self.names}  # fmt: skip
        self.keep = flatten(keep, self.names)  # (P,)
        self.masked = [n for n in self.names if n in names]
        self.project()
        return self

    @torch.no_grad()
    def project(self) -> None:
        """Set A and the bends to exactly zero where the mask says (nothing when unmasked)."""
        if self.keep is None:
            return
        self.ends[0].masked_fill_(~self.keep, 0.0)
        self.inner.masked_fill_(~self.keep, 0.0)

    def controls(self) -> torch.Tensor:
        """(k + 1, P) control points w_0..w_k as flat vectors (differentiable in the bends)."""
        return torch.cat([self.ends[:1], self.inner, self.ends[1:]])

    def weights(self, t: torch.Tensor | float | list[float]) -> torch.Tensor:
        """(len(t), k + 1) weights of the control points at ``t`` (the evaluator's coords)."""
        return curve_weights(self.kind, self.order, t)

    def flat_points(self, t: torch.Tensor | float | list[float]) -> torch.Tensor:
        """phi at the values ``t`` as flat vectors, (len(t), P)."""
        t = torch.as_tensor(t, dtype=self.ends.dtype).reshape(-1)
        if not bool(((t >= 0) & (t <= 1)).all()):  # also catches NaN
            bad = t[~((t >= 0) & (t <= 1))][0].item()
            raise ValueError(f"t must be in [0, 1], got {bad}")
        coeffs = self.weights(t).to(self.ends)  # (n, k + 1)
        return coeffs @ self.controls()  # (n, P)

    def point(self, t: float | torch.Tensor) -> Named:
        """The weight point phi(t) as named tensors (views of one flat vector).

        Raises:
            ValueError: t outside [0, 1].
        """
        return unflatten(self.flat_points(t)[0], self._like)
