"""Loss and accuracy at many weight points, with BatchNorm recalibration at each point.

The hot path of the tool. Every point gets fresh BN statistics (one pass over the training data,
or its first ``bn_subset`` samples), then train and test loss/accuracy. Long computations save
partial results in the store so a killed run resumes from the points already done, and can be
sharded over processes (``shard=(rank, world)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape.data import Dataset
from landscape.params import Named, evaluate, recalibrate_bn
from landscape.progress import Progress
from landscape.store import Store

__all__ = ["METRICS", "EvalData", "evaluate_point", "evaluate_points"]

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


@dataclass
class EvalData:
    """Training and test tensors on the evaluation device, and how BN is recalibrated.

    Attributes:
        bn_subset: recalibrate BN on the first ``bn_subset`` training samples (None: all).
        batch_size: batch size of every pass (large batches are fastest for small models).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    bn_subset: int | None = None
    batch_size: int = 2048

    @classmethod
    def from_dataset(
        cls,
        data: Dataset,
        *,
        device: str | torch.device = "cpu",
        bn_subset: int | None = None,
        batch_size: int = 2048,
    ) -> EvalData:
        if bn_subset is not None and bn_subset < 1:
            raise ValueError(f"bn_subset must be >= 1, got {bn_subset}")
        return cls(
            data.x_train.to(device),
            data.y_train.to(device),
            data.x_test.to(device),
            data.y_test.to(device),
            bn_subset,
            batch_size,
        )

    def describe(self) -> dict:
        """What the result depends on besides the weights (goes into result keys)."""
        n = self.x_train.shape[0]
        return {
            "n_train": n,
            "n_test": self.x_test.shape[0],
            "bn_samples": n if self.bn_subset is None else min(self.bn_subset, n),
        }


def evaluate_point(model: nn.Module, params: Named, data: EvalData) -> dict[str, float]:
    """Train/test loss and accuracy of one weight point, BN recalibrated at that point."""
    buffers = recalibrate_bn(
        model, params, data.x_train, batch_size=data.batch_size, subset=data.bn_subset
    )
    tr = evaluate(model, params, buffers, data.x_train, data.y_train, batch_size=data.batch_size)
    te = evaluate(model, params, buffers, data.x_test, data.y_test, batch_size=data.batch_size)
    return {"train_loss": tr.loss, "train_acc": tr.acc, "test_loss": te.loss, "test_acc": te.acc}


def evaluate_points(
    model: nn.Module,
    point: Callable[[int], Named],
    n: int,
    data: EvalData,
    *,
    progress: Progress | None = None,
    store: Store | None = None,
    kind: str = "",
    key: str = "",
    shard: tuple[int, int] = (0, 1),
    save_every_s: float = 2.0,
    stage: str = "evaluating points",
) -> dict[str, np.ndarray]:
    """Evaluate ``point(i)`` for i in range(n).

    Args:
        model: the architecture (its weights are not used).
        point: index -> weight point (named parameters on the data's device).
        n: number of points.
        data: evaluation data.
        progress: ``progress(done, total, stage)`` callback.
        store, kind, key: if given, partial results are saved under (kind, key) every
            ``save_every_s`` seconds and a re-run resumes from them.
        shard: (rank, world): evaluate only indices i with i % world == rank; the other
            entries stay NaN (the caller gathers shards).
        stage: text shown with the progress.

    Returns:
        ``{metric: array (n,)}`` for the metrics in :data:`METRICS`, plus ``done`` (bool mask).
    """
    rank, world = shard
    out = {m: np.full(n, np.nan) for m in METRICS}
    done = np.zeros(n, dtype=bool)
    resume = store is not None and key
    if resume:
        partial = store.load_partial(kind, key)
        if partial is not None and partial.get("done", np.empty(0)).shape == (n,):
            done = partial["done"].astype(bool)
            for m in METRICS:
                out[m] = partial[m].astype(float)
    mine: Sequence[int] = [i for i in range(rank, n, world)]
    todo = [i for i in mine if not done[i]]
    last_save = time.monotonic()
    count = len(mine) - len(todo)
    was_training = model.training
    for i in todo:
        metrics = evaluate_point(model, point(i), data)
        for m in METRICS:
            out[m][i] = metrics[m]
        done[i] = True
        count += 1
        if progress is not None:
            progress(count, len(mine), stage)
        if resume and time.monotonic() - last_save > save_every_s:
            store.save_partial(kind, key, {**out, "done": done})
            last_save = time.monotonic()
    if resume and todo:
        store.save_partial(kind, key, {**out, "done": done})
    model.train(was_training)
    return {**out, "done": done}

