"""Helpers the study kinds share: checks, labels, the evaluation data and the grid evaluation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import Checkpoint, checkpoint_dataset
from landscape.configs import (
    MAX_GRID,
    MAX_POINTS,
    MAX_POINTS_PER_PASS,
    EvalOptions,
    check_grid,
    check_range,
)
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
    "data_subset",
    "dataset",
    "eval_data",
    "evaluate_coords",
    "label",
    "model_params",
]


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


def label(ckpt: Checkpoint) -> str:
    """The checkpoint's name; a run's final.safetensors is named after its run folder."""
    if ckpt.name == "final" and ckpt.path is not None:
        return ckpt.path.parent.name
    return ckpt.name


def model_params(model: nn.Module, state: Named, device: str | torch.device) -> Named:
    """The parameters (no buffers) of ``state`` in ``model``'s order, on ``device``."""
    params, _ = split_state(model, state)
    return {n: params[n].to(device) for n in param_names(model)}


def _stratified(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices (ascending) of ``n`` samples, the same number per class as far as possible.

    Classes are filled in turns: each gets an equal share of what is left, a class with fewer
    samples gives its share to the others; a remainder goes to the classes with the most
    samples left (ties by class index). Within a class the samples are a seeded permutation.
    """
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(y).tolist()
    members = {c: torch.nonzero(y == c).flatten() for c in classes}
    members = {c: m[torch.randperm(len(m), generator=gen)] for c, m in members.items()}
    take = dict.fromkeys(classes, 0)
    left = n
    while left > 0:
        open_ = [c for c in classes if take[c] < len(members[c])]
        share = left // len(open_)
        if share == 0:  # fewer samples left to draw than classes: the fullest classes
            open_.sort(key=lambda c: (take[c] - len(members[c]), c))
            for c in open_[:left]:
                take[c] += 1
            break
        for c in open_:
            extra = min(share, len(members[c]) - take[c])
            take[c] += extra
            left -= extra
    picked = torch.cat([members[c][: take[c]] for c in classes])
    return picked.sort().values


def data_subset(ds: Dataset, train: int | None, test: int | None, *, seed: int = 0) -> Dataset:
    """``ds`` with at most ``train`` training and ``test`` test samples, stratified by class.

    A subset as large as its split (or None) keeps the split whole. The subset is stated in
    ``info["subset"]`` ({"train", "test", "seed"}), so it is part of :meth:`Dataset.describe`
    (and of every result key); ``n_train``/``n_test`` there are the subset's sizes.
    """
    chosen: dict[str, Any] = {}
    xs = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
    for split, n in (("train", train), ("test", test)):
        x, y = xs[split]
        if n is not None and n < len(y):
            idx = _stratified(y, n, seed)
            xs[split] = (x[idx], y[idx])
            chosen[split] = n
    if not chosen:
        return ds
    info = {**ds.info, "subset": {**chosen, "seed": seed}}
    (x_tr, y_tr), (x_te, y_te) = xs["train"], xs["test"]
    return dataclasses.replace(ds, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, info=info)


def dataset(ckpt: Checkpoint, config: Any) -> Dataset:
    """The checkpoint's data set (from ``config.data_root`` when it is not bundled), cut to
    ``config.train_subset`` / ``config.test_subset`` when the config has them."""
    ds = checkpoint_dataset(ckpt, data_root=getattr(config, "data_root", None))
    return data_subset(
        ds,
        getattr(config, "train_subset", None),
        getattr(config, "test_subset", None),
        seed=getattr(config, "subset_seed", 0),
    )


def eval_data(ckpt: Checkpoint, config: Any) -> EvalData:
    """The checkpoint's data set on ``config.device``, BN recalibrated on ``config.bn_subset``."""
    return EvalData.from_dataset(
        dataset(ckpt, config),
        device=config.device,
        bn_subset=getattr(config, "bn_subset", None),
    )


def data_identity(ckpt: Checkpoint, config: Any, ds: Dataset | None = None) -> dict[str, Any]:
    """What a result depends on besides the weights: the data set (``ds``, already loaded, or
    the checkpoint's) and the BN pass."""
    if ds is None:
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
