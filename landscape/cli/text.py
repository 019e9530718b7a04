"""What the CLI prints about a study's result: a few lines each, from the typed results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape.evaluate import METRICS
from landscape.studies.curve import CurveResult
from landscape.studies.hessian import HessianResult
from landscape.studies.pca import PCAResult
from landscape.studies.plane import PlaneResult
from landscape.studies.random_plane import RandomPlaneResult
from landscape.studies.slices import SliceResult

__all__ = ["curve_table", "describe"]

GridResult = PlaneResult | PCAResult | RandomPlaneResult | SliceResult


def _ranges(metrics: dict[str, np.ndarray]) -> list[str]:
    return [
        f"  {m:<13} min {np.nanmin(metrics[m]):.4f}  max {np.nanmax(metrics[m]):.4f}"
        for m in METRICS
    ]


def _grid_lines(kind: str, key: str, where: Path, res: GridResult) -> list[str]:
    shape = " x ".join(str(n) for n in res.metrics["train_loss"].shape)
    lines = [f"{kind} {key} ({where}): {shape} points, BN on {res.bn_samples} samples"]
    if isinstance(res, PlaneResult):
        lines.append(f"  labels        {', '.join(map(str, res.labels))}")
        lines.append(f"  basis norms   {res.basis_norms[0]:.4f}, {res.basis_norms[1]:.4f}")
    elif isinstance(res, PCAResult):
        r1, r2 = res.explained_variance_ratio
        lines.append(f"  runs          {', '.join(res.runs)} ({len(res.xy)} snapshots)")
        lines.append(f"  explained     PC1 {r1:.4f}, PC2 {r2:.4f}")
        lines.append(f"  max residual  {res.residual.max():.4f} (off-plane distance)")
    elif isinstance(res, SliceResult):
        lines.append(f"  direction     {res.direction} (norm {res.direction_norm:.4f})")
    return lines + _ranges(res.metrics)


def _hessian_lines(key: str, where: Path, res: HessianResult) -> list[str]:
    vals = ", ".join(f"{v:.4g}" for v in res.eigenvalues)
    lines = [
        f"hessian {key} ({where}): {res.n_hvp} Hessian-vector products on {res.samples} samples",
        f"  top eigenvalues        {vals}",
    ]
    if res.projection_ratio is not None:
        lines += [
            f"  |delta|                {res.delta_norm:.4f} (B sparsity {res.sparsity_b:.4f})",
            f"  |V^T d|/|d| pruning    {res.projection_ratio:.4f}",
            f"  |V^T d|/|d| random     {res.random_projection_ratio:.4f}",
            f"  |V^T d|/|d| magnitude  {res.magnitude_projection_ratio:.4f}",
        ]
    return lines


def describe(kind: str, key: str, where: Path, res: object) -> str:
    """A few lines about a plane, pca, random-plane, slice or hessian result."""
    if isinstance(res, HessianResult):
        return "\n".join(_hessian_lines(key, where, res))
    return "\n".join(_grid_lines(kind, key, where, res))


def curve_table(res: CurveResult, names: tuple[str, str]) -> str:
    """The curve and the line side by side: barrier, worst accuracy, best t, length."""
    a, b = names
    head = (
        f"{a} (t=0) -> {b} (t=1), order {res.config['order']}, {len(res.t)} points, "
        f"BN on {res.bn_samples} samples"
    )
    row = "{:<6} {:>15} {:>14} {:>13} {:>11} {:>13} {:>9}"
    lines = [
        head,
        row.format(
            "path", "train loss max", "train barrier", "test acc min", "t best acc",
            "mid test acc", "length",
        ),
    ]  # fmt: skip
    for name in ("curve", "line"):
        p = path = res.path(name)
        cells = (
            np.nanmax(p.columns["train_loss"]),
            path.barrier("train_loss").height,
            np.nanmin(p.columns["test_acc"]),
            p.t[p.argbest("test_acc", lowest=False)],
            p.columns["test_acc"][p.nearest(0.5)],
            p.length,
        )
        lines.append(row.format(name, *(f"{v:.4f}" for v in cells)))
    return "\n".join(lines)
