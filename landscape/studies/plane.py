"""The plane through A, B and a third point (a curve's bend or a third checkpoint).

Basis (Garipov et al. 2018): u = (w_B - w_A)/|w_B - w_A|, v = the part of (w_1 - w_A)
orthogonal to u, normalised, w = w_A + alpha*u + beta*v; w_1 is the third checkpoint or the
curve's bend (the middle bend for curves of order > 2). The grid covers the three points with
``margin`` of their extent on each side; every point gets fresh BatchNorm statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from landscape.checkpoints import Checkpoint, content_hash
from landscape.configs import PlaneConfig
from landscape.curves import BezierCurve
from landscape.geometry import Plane, plane_through
from landscape.params import Named, flatten
from landscape.studies.base import Context, Kind, Result
from landscape.studies.common import (
    check_grid,
    check_same,
    data_identity,
    eval_data,
    evaluate_grid,
    grid_axes,
    label,
    model_params,
)

__all__ = ["KIND", "PlaneConfig", "PlaneInputs", "PlaneResult"]


@dataclass(frozen=True)
class PlaneInputs:
    """A and B (the end points) and the third point: a checkpoint or a curve between A and B."""

    a: Checkpoint
    b: Checkpoint
    third: Checkpoint | BezierCurve

    @property
    def is_curve(self) -> bool:
        return not isinstance(self.third, Checkpoint)


@dataclass
class PlaneResult(Result):
    """Metric grids on the plane.

    Attributes:
        alpha, beta: the grid's axes (G,).
        metrics: ``{metric: (G, G)}`` indexed [beta_index, alpha_index].
        points_xy: (3, 2) (alpha, beta) of A, the bend or third point, B.
        labels: [A's name, "bend" or the third's name, B's name].
        basis_norms: [|w_B - w_A|, |orthogonal part of w_1 - w_A|].
        bn_samples: training samples of each BN recalibration.
        curve_xy: (points_on_curve, 2) the curve projected into the plane (curves only).
    """

    alpha: np.ndarray
    beta: np.ndarray
    metrics: dict[str, np.ndarray]
    points_xy: np.ndarray
    labels: list[str]
    basis_norms: list[float]
    bn_samples: int
    curve_xy: np.ndarray | None = None


def _identity(cfg: PlaneConfig, inputs: PlaneInputs) -> dict:
    check_grid(cfg.grid, cfg.margin)
    a, b, third = inputs.a, inputs.b, inputs.third
    check_same([a, b] if inputs.is_curve else [a, b, third])
    if inputs.is_curve:
        third_id = {"curve_bends": [content_hash(dict(bd)) for bd in third.bends]}
        if third.kind != "bezier":  # the projected curve differs; Bezier keys stay as before
            third_id["curve_kind"] = third.kind
    else:
        third_id = {"third": third.hash}
    return {
        "a": a.hash,
        "b": b.hash,
        **third_id,
        "grid": cfg.grid,
        "margin": cfg.margin,
        "points_on_curve": cfg.points_on_curve if inputs.is_curve else None,
        "data": data_identity(a, cfg),
    }


def _curve_flat(curve: BezierCurve, t: float, like: Named) -> torch.Tensor:
    """The curve's point at t as a flat vector in the order (and on the device) of ``like``."""
    point = curve.point(float(t))
    return flatten({n: point[n].to(x.device) for n, x in like.items()})


def _compute(cfg: PlaneConfig, inputs: PlaneInputs, context: Context) -> PlaneResult:
    a, b, third = inputs.a, inputs.b, inputs.third
    model = a.build_model()
    pa, pb = model_params(model, a.state, cfg.device), model_params(model, b.state, cfg.device)
    if inputs.is_curve:
        bend = third.bends[len(third.bends) // 2]
        p1 = {n: bend[n].to(cfg.device) for n in pa}
        labels = [label(a), "bend", label(b)]
    else:
        p1 = model_params(model, third.state, cfg.device)
        labels = [label(a), label(third), label(b)]
    plane = plane_through(flatten(pa), flatten(p1), flatten(pb), pa)
    points = np.array([plane.coords(flatten(p)) for p in (pa, p1, pb)])  # (3, 2)
    data = eval_data(a, cfg)
    alpha, beta = grid_axes(points, cfg.margin, cfg.grid)
    metrics = evaluate_grid(model, plane, alpha, beta, data, context, cfg)
    curve_xy = None
    if inputs.is_curve:
        ts = np.linspace(0.0, 1.0, cfg.points_on_curve)
        curve_xy = np.array([plane.coords(_curve_flat(third, t, pa)) for t in ts])
    return PlaneResult(
        alpha=alpha,
        beta=beta,
        metrics=metrics,
        points_xy=points,
        labels=labels,
        basis_norms=[float((flatten(pb).double() - plane.origin).norm()), _ortho(plane, p1)],
        bn_samples=data.bn_samples,
        curve_xy=curve_xy,
    )


def _ortho(plane: Plane, p1: Named) -> float:
    d = flatten(p1).double() - plane.origin
    return float((d - (d @ plane.u) * plane.u).norm())


KIND = Kind("plane", 1, PlaneConfig, PlaneResult, _identity, _compute)
