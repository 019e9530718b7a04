"""The PCA plane of one or two training trajectories (Li et al. 2018).

The snapshots (``trajectory/step_*.safetensors`` of each run folder) minus a centre (the final
weights of the first run, or the snapshots' mean) are the rows of M; the plane is the centre
plus the top two right singular vectors of M. Each snapshot is projected into it and its
off-plane residual norm reported, so a contour is never mistaken for the true loss there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.configs import CENTRES, PCAConfig
from landscape.geometry import Plane, pca_basis
from landscape.params import flatten
from landscape.studies.base import Context, Kind, Result
from landscape.studies.common import (
    check_grid,
    check_same,
    data_identity,
    eval_data,
    evaluate_grid,
    grid_axes,
    model_params,
)

__all__ = ["KIND", "PCAConfig", "PCAInputs", "PCAResult"]


@dataclass(frozen=True)
class PCAInputs:
    """One or two run folders (``final.safetensors``, ``trajectory/step_*.safetensors``)."""

    runs: tuple[Path, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(Path(r) for r in self.runs))
        if not 1 <= len(self.runs) <= 2:
            raise ValueError(f"PCA takes one or two run folders, got {len(self.runs)}")

    def snapshot_files(self) -> list[tuple[int, Path]]:
        """(run index, file) of every snapshot, runs in order, steps in order."""
        out = []
        for i, run in enumerate(self.runs):
            files = sorted((run / "trajectory").glob("step_*.safetensors"))
            if not files:
                raise ValueError(
                    f"{run}: no trajectory/step_*.safetensors snapshots (not a run folder?)"
                )
            out += [(i, f) for f in files]
        return out

    @property
    def final(self) -> Path:
        return self.runs[0] / "final.safetensors"


@dataclass
class PCAResult(Result):
    """Metric grids on the PCA plane and the snapshots projected into it.

    Attributes:
        xy: (S, 2) snapshot coordinates; residual: (S,) off-plane residual norms.
        run_index: (S,) which run each snapshot belongs to; epoch: (S,).
        alpha, beta: the grid's axes (G,); metrics: ``{metric: (G, G)}`` [beta, alpha].
        explained_variance_ratio: [r1, r2], squared singular values over their total.
        runs: the run folders' names; snapshots: [{run, step, epoch}]; centre: "final"/"mean".
    """

    xy: np.ndarray
    residual: np.ndarray
    run_index: np.ndarray
    epoch: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    metrics: dict[str, np.ndarray]
    explained_variance_ratio: list[float]
    runs: list[str]
    snapshots: list[dict]
    centre: str
    bn_samples: int


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _identity(cfg: PCAConfig, inputs: PCAInputs) -> dict:
    # The files' bytes identify the result: no snapshot is decoded and no SVD runs for a key.
    check_grid(cfg.grid, cfg.margin)
    if cfg.centre not in CENTRES:
        raise ValueError(f"centre must be 'final' or 'mean', got {cfg.centre!r}")
    return {
        "snapshots": [_file_hash(f) for _, f in inputs.snapshot_files()],
        "centre": cfg.centre,
        "centre_file": _file_hash(inputs.final),
        "grid": cfg.grid,
        "margin": cfg.margin,
        "data": data_identity(load_checkpoint(inputs.final), cfg),
    }


def _snapshots(inputs: PCAInputs) -> list[tuple[int, Checkpoint, int, float]]:
    """(run index, checkpoint, step, epoch) of every snapshot."""
    out = []
    for i, f in inputs.snapshot_files():
        c = load_checkpoint(f)
        step = int(c.meta.get("step", int(f.stem.removeprefix("step_"))))
        out.append((i, c, step, float(c.meta.get("epoch", float("nan")))))
    return out


def _compute(cfg: PCAConfig, inputs: PCAInputs, context: Context) -> PCAResult:
    snaps = _snapshots(inputs)
    final = load_checkpoint(inputs.final)
    check_same([final] + [c for _, c, _, _ in snaps])
    model = final.build_model()
    like = model_params(model, final.state, cfg.device)
    rows = np.stack(
        [flatten(model_params(model, c.state, "cpu")).double().numpy() for _, c, _, _ in snaps]
    )  # (S, P)
    centre = flatten(like).double().cpu().numpy() if cfg.centre == "final" else rows.mean(0)
    comps, s = pca_basis(rows - centre)
    xy = (rows - centre) @ comps.T  # (S, 2)
    plane = Plane(*(torch.from_numpy(t).to(cfg.device) for t in (centre, comps[0], comps[1])), like)
    data = eval_data(final, cfg)
    alpha, beta = grid_axes(xy, cfg.margin, cfg.grid)
    metrics = evaluate_grid(model, plane, alpha, beta, data, context, cfg)
    names = [p.name for p in inputs.runs]
    return PCAResult(
        xy=xy,
        residual=np.linalg.norm(rows - centre - xy @ comps, axis=1),
        run_index=np.array([i for i, _, _, _ in snaps]),
        epoch=np.array([e for _, _, _, e in snaps]),
        alpha=alpha,
        beta=beta,
        metrics=metrics,
        explained_variance_ratio=(s[:2] ** 2 / (s**2).sum()).tolist(),
        runs=names,
        snapshots=[{"run": names[i], "step": st, "epoch": e} for i, _, st, e in snaps],
        centre=cfg.centre,
        bn_samples=data.bn_samples,
    )


KIND = Kind("pca", 1, PCAConfig, PCAResult, _identity, _compute)
