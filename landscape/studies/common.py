"""Helpers the study kinds share: checks, labels, the evaluation data and the grid evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import Checkpoint, checkpoint_dataset
from landscape.data import Dataset
from landscape.distributed import evaluate_sharded
from landscape.evaluate import METRICS, EvalData
from landscape.geometry import Plane, axis
from landscape.params import Named, param_names, split_state
from landscape.studies.base import Context

__all__ = [
    "MAX_GRID",
    "MAX_POINTS",
    "MAX_POINTS_PER_PASS",
    "EvalOptions",
    "check_range",
    "evaluate_grid",
    "grid_axes",
    "check_grid",
    "check_same",
    "data_identity",
    "dataset",
    "eval_data",
    "evaluate_coords",
    "label",
    "model_params",
]


MAX_GRID = 2001  # points per axis of a plane at most (4e6 points: about a day on a CPU)
MAX_POINTS = 100_001  # points of a slice (or a curve projected into a plane) at most
MAX_POINTS_PER_PASS = 1024  # weight points evaluated together at most


def check_range(name: str, value: float, lo: float, hi: float = math.inf) -> None:
    """ValueError unless ``lo <= value <= hi`` (and finite): one line naming the option."""
    if not (math.isfinite(value) and lo <= value <= hi):
        bounds = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        raise ValueError(
            f"{name} must be {'in ' if math.isfinite(hi) else ''}{bounds}, got {value}"
        )


@dataclass
class EvalOptions:
    """How weight points are evaluated: the options every evaluating study kind shares.

    Subclasses check their own fields in ``__post_init__`` (calling this one), so an
    out-of-range option fails when the config is made, before anything runs or is written.
    """

    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files
    points_per_pass: int | None = None  # speed only; None: 16 on GPUs without BN, else 1

    def __post_init__(self) -> None:
        if self.bn_subset is not None:
            check_range("bn_subset", self.bn_subset, 1)
        if self.points_per_pass is not None:
            check_range("points_per_pass", self.points_per_pass, 1, MAX_POINTS_PER_PASS)


def check_same(ckpts: Sequence[Checkpoint]) -> None:
    """ValueError unless all checkpoints share one architecture and one data set."""
    first = ckpts[0]
    for c in ckpts[1:]:
        if c.arch != first.arch:
            raise ValueError(
                f"{c.name} is a {json.dumps(c.arch)} but {first.name} is a {json.dumps(first.arch)}"
            )
        data_a, data_c = first.meta.get("data") or {}, c.meta.get("data") or {}
        if data_a.get("name") != data_c.get("name"):
            raise ValueError(
                f"{c.name} was trained on {data_c.get('name')!r}, {first.name} on "
                f"{data_a.get('name')!r}"
            )


def check_grid(grid: int, margin: float) -> None:
    """ValueError unless 2 <= grid <= MAX_GRID and 0 <= margin <= 100."""
    check_range("grid (points per axis)", grid, 2, MAX_GRID)
    check_range("margin", margin, 0, 100)


def label(ckpt: Checkpoint) -> str:
    """The checkpoint's name; a run's final.safetensors is named after its run folder."""
    if ckpt.name == "final" and ckpt.path is not None:
        return ckpt.path.parent.name
    return ckpt.name


def model_params(model: nn.Module, state: Named, device: str | torch.device) -> Named:
    """The parameters (no buffers) of ``state`` in ``model``'s order, on ``device``."""
    params, _ = split_state(model, state)
    return {n: params[n].to(device) for n in param_names(model)}


def dataset(ckpt: Checkpoint, config: Any) -> Dataset:
    """The checkpoint's data set (from ``config.data_root`` when it is not bundled)."""
    return checkpoint_dataset(ckpt, data_root=getattr(config, "data_root", None))


def eval_data(ckpt: Checkpoint, config: Any) -> EvalData:
    """The checkpoint's data set on ``config.device``, BN recalibrated on ``config.bn_subset``."""
    return EvalData.from_dataset(
        dataset(ckpt, config),
        device=config.device,
        bn_subset=getattr(config, "bn_subset", None),
    )


def data_identity(ckpt: Checkpoint, config: Any) -> dict[str, Any]:
    """What a result depends on besides the weights: the data set and the BN pass."""
    ds = dataset(ckpt, config)  # loaded once per process (the data module caches it)
    bn_subset = getattr(config, "bn_subset", None)
    n = len(ds.y_train)
    bn_samples = n if bn_subset is None else min(bn_subset, n)
    return {**ds.describe(), "bn_samples": bn_samples, "bn_batch_size": EvalData.batch_size}


def evaluate_coords(
    model: nn.Module,
    basis: torch.Tensor,
    coords: np.ndarray,
    data: EvalData,
    context: Context,
    *,
    points_per_pass: int | None = None,
    stage: str = "points",
) -> dict[str, np.ndarray]:
    """All metrics at the points ``coords @ basis`` (n, k) @ (k, P): ``{metric: (n,)}``.

    Resumable (partial results under the context's key) and sharded over the context's group.
    """
    out = evaluate_sharded(
        model,
        basis,
        coords,
        data,
        store=context.store,
        kind=context.kind,
        key=context.key,
        shard=context.shard,
        progress=context.progress,
        stage=stage,
        points_per_pass=points_per_pass,
    )
    return {m: out[m] for m in METRICS}


def grid_axes(xy: np.ndarray, margin: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) axes of ``grid`` values covering the points ``xy`` (n, 2) with margins."""
    return (
        axis(xy[:, 0].min(), xy[:, 0].max(), margin, grid),
        axis(xy[:, 1].min(), xy[:, 1].max(), margin, grid),
    )


def evaluate_grid(
    model: nn.Module,
    plane: Plane,
    alpha: np.ndarray,
    beta: np.ndarray,
    data: EvalData,
    context: Context,
    options: EvalOptions,
) -> dict[str, np.ndarray]:
    """Every metric on the grid ``alpha x beta`` of ``plane``: ``{metric: (G_beta, G_alpha)}``."""
    aa, bb = np.meshgrid(alpha, beta)  # (G_beta, G_alpha): row = beta
    coords = np.stack([np.ones(aa.size), aa.ravel(), bb.ravel()], 1)  # (1, alpha, beta)
    out = evaluate_coords(
        model, plane.basis(), coords, data, context, points_per_pass=options.points_per_pass
    )
    return {m: v.reshape(len(beta), len(alpha)) for m, v in out.items()}
