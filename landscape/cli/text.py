"""What the CLI prints about a study's result: a few lines each, from the typed results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from landscape import verdicts
from landscape.evaluate import METRICS
from landscape.studies.curve import CurveResult
from landscape.studies.hessian import HessianResult
from landscape.studies.pca import PCAResult
from landscape.studies.plane import PlaneResult
from landscape.studies.random_plane import RandomPlaneResult
from landscape.studies.slices import SliceResult
from landscape.workspace import summarize

__all__ = [
    "curve_table",
    "describe",
    "print_checkpoint",
    "print_metrics",
    "print_research",
    "study_verdicts",
    "verdicts_text",
]

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


def study_verdicts(res: object) -> list[verdicts.Verdict]:
    """The verdicts of a curve, plane, pca or hessian result ([] for the other kinds)."""
    if isinstance(res, CurveResult):
        return [verdicts.connectivity(res), verdicts.sparsity_along(res)]
    if isinstance(res, PlaneResult):
        return [verdicts.plane(res)]
    if isinstance(res, PCAResult):
        return [verdicts.trajectories(res)]
    if isinstance(res, HessianResult) and res.projection_ratio is not None:
        return [verdicts.directions(res)]
    return []


def verdicts_text(found: list[verdicts.Verdict]) -> str:
    """One paragraph per verdict: "verdict: <title>. <sentence>" ("" without verdicts)."""
    return "\n".join(f"verdict: {v.title}. {v.sentence}" for v in found)


def print_checkpoint(ckpt) -> None:
    summary = summarize(ckpt)
    print(f"hash          {ckpt.hash}")
    for key in ("arch", "data", "optimizer", "step", "epoch", "seed", "source"):
        if key in ckpt.meta:
            print(f"{key:<13} {json.dumps(ckpt.meta.get(key))}")
    print(f"parameters    {summary.n_params}")
    print(
        f"sparsity      {summary.sparsity:.4f} exactly zero, "
        f"{summary.sparsity_small:.4f} below 1e-3"
    )
    for name, frac in summary.layer_sparsity.items():
        print(f"  {name:<30} {frac:.4f}")
    print_metrics("metrics", ckpt.meta.get("metrics") or {})


def print_research(found) -> None:
    how = "recognised from its keys" if found.recognized else "as given"
    label = f" ({found.label})" if found.label else ""
    print(f"file          {found.path}")
    print(f"kind          {found.kind} (.pt/.pth)")
    print(f"architecture  {found.arch['name']}{label} {json.dumps(found.arch['kwargs'])}, {how}")
    if found.kind == "curve":
        print(f"curve         Bezier, order {found.curve.order} ({found.curve.order - 1} bends)")
    for ckpt in found.points:
        if found.kind == "curve":
            print(f"-- {ckpt.name}")
        print_checkpoint(ckpt)


def print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<16} {v:.4f}" if isinstance(v, float) else f"  {k:<16} {v}")
