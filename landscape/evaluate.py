"""Loss and accuracy at many weight points, with BatchNorm recalibration at each point.

The hot path of the tool. Every point gets fresh BN statistics (one pass over the training data,
or its first ``bn_subset`` samples, cumulative average over batches of ``batch_size``), then
train and test loss/accuracy. Long computations save partial results in the store so a killed
run resumes from the points already done, and can be sharded over processes
(``shard=(rank, world)``).

Where the time goes, and what is done about it (see ``bench/bench_curves.py``):

* CPU inputs are stored channels-last: the first convolution (one input channel) and max
  pooling run several times faster than in NCHW; the numbers agree to float rounding.
* Points are loaded into a private copy of the model (one copy per call, not per point), so no
  ``functional_call`` re-parametrisation and no ``load_state_dict`` per batch.
* Small models run on one CPU thread (:func:`small_model_threads`): their operations are too
  short to gain from a second thread, and on a busy machine every parallel operation can wait a
  whole scheduler slice for a descheduled thread (measured here: 4-15x slower with 2 threads).
* Evaluation passes run in chunks of ``eval_batch_size`` (default 256): chunks that stay in the
  CPU cache beat whole-data batches here, and in eval mode the chunking does not change results.
* The recalibration pass stops right after the last BatchNorm layer (what follows cannot change
  the statistics), and when both passes use the same chunks, a Linear/Conv layer that reads the
  raw input computes its output once per chunk for both passes (it is the same computation).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.data import Dataset
from landscape.params import Named
from landscape.progress import Progress
from landscape.store import Store

__all__ = [
    "METRICS",
    "EvalData",
    "channels_last",
    "evaluate_point",
    "evaluate_points",
    "macs_per_sample",
    "small_model_threads",
]

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")

_SHARE_BYTES = 256 * 2**20  # cap on first-layer outputs kept between the two passes of a point
SMALL_MACS = 2_000_000  # multiply-adds per sample below which a model counts as small
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def macs_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the Linear/Conv layers for one sample (one eval-mode forward of x[:1]).

    Args:
        model: the network, on ``x``'s device.
        x: inputs (N, ...); only the first sample is used.
    """
    total = 0

    def count(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.weight[0].numel()  # outputs x fan-in

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _LAYERS)]
    was_training = model.training
    model.eval()
    try:
        model(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


@contextmanager
def small_model_threads(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Run the block on one torch CPU thread if ``model`` is small (< SMALL_MACS per sample).

    torch's thread count is process-wide: it is restored when the block ends. Nothing changes
    for inputs on a GPU or for larger models.
    """
    if (
        x.device.type != "cpu"
        or torch.get_num_threads() == 1
        or (macs_per_sample(model, x) >= SMALL_MACS)
    ):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d (N, C, H, W) CPU tensor with channels-last strides; other tensors unchanged.

    ``Tensor.contiguous(memory_format=torch.channels_last)`` keeps NCHW strides when C == 1
    (both layouts are "contiguous" then) and the convolution would stay NCHW, so build the
    strides explicitly.
    """
    # CPU only: that is where it was measured to help; on CUDA a one-channel input with these
    # strides made cuDNN fail (misaligned address, H200, torch 2.11).
    if x.ndim != 4 or x.stride(1) == 1 or x.device.type != "cpu":
        return x
    n, c, h, w = x.shape
    out = torch.empty_strided(
        (n, c, h, w), (c * h * w, 1, w * c, c), dtype=x.dtype, device=x.device
    )
    return out.copy_(x)


@dataclass
class EvalData:
    """Training and test tensors on the evaluation device, and how BN is recalibrated.

    Attributes:
        bn_subset: recalibrate BN on the first ``bn_subset`` training samples (None: all).
        batch_size: batch size of the BN recalibration pass. The statistics are the cumulative
            average of per-batch statistics, so they depend on it; one batch (the default for
            data sets up to 2048 samples) gives the exact statistics of the data.
        eval_batch_size: chunk size of the evaluation passes; results do not depend on it
            (up to float rounding). Small chunks stay in the CPU cache.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    bn_subset: int | None = None
    batch_size: int = 2048
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.bn_subset is not None and self.bn_subset < 1:
            raise ValueError(f"bn_subset must be >= 1, got {self.bn_subset}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got {self.batch_size} and {self.eval_batch_size}"
            )

    @classmethod
    def from_dataset(
        cls,
        data: Dataset,
        *,
        device: str | torch.device = "cpu",
        bn_subset: int | None = None,
        batch_size: int = 2048,
        eval_batch_size: int | None = None,
    ) -> EvalData:
        """Move a data set to ``device`` (images stored channels-last, see module notes).

        ``eval_batch_size`` None: 256 on the CPU (cache-sized chunks), else ``batch_size``
        (a GPU wants large batches).
        """
        if eval_batch_size is None:
            eval_batch_size = 256 if torch.device(device).type == "cpu" else batch_size
        return cls(
            channels_last(data.x_train.to(device)),
            data.y_train.to(device),
            channels_last(data.x_test.to(device)),
            data.y_test.to(device),
            bn_subset,
            batch_size,
            eval_batch_size,
        )

    @property
    def bn_samples(self) -> int:
        """Number of training samples the BN statistics are computed from."""
        n = self.x_train.shape[0]
        return n if self.bn_subset is None else min(self.bn_subset, n)

    def describe(self) -> dict[str, Any]:
        """What the result depends on besides the weights (goes into result keys)."""
        return {
            "n_train": self.x_train.shape[0],
            "n_test": self.x_test.shape[0],
            "bn_samples": self.bn_samples,
            "bn_batch_size": self.batch_size,
        }


class _StopForward(Exception):
    """Raised after the last BatchNorm layer of a recalibration pass: the rest is not needed."""


class _Evaluator:
    """Evaluates weight points of one architecture on one :class:`EvalData`.

    Holds a private copy of the model on the data's device; each call copies a point into it,
    recalibrates BN and evaluates. Not thread-safe: use one evaluator per thread.
    """

    def __init__(self, model: nn.Module, data: EvalData):
        device = data.x_train.device
        self.model = copy.deepcopy(model).to(device)
        self.params = dict(self.model.named_parameters())
        for p in self.params.values():
            p.requires_grad_(False)
        self.bns = [
            m for m in self.model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
        ]
        x_train, x_test = channels_last(data.x_train), channels_last(data.x_test)
        eb = data.eval_batch_size
        self.train = list(zip(x_train.split(eb), data.y_train.split(eb), strict=True))
        self.test = list(zip(x_test.split(eb), data.y_test.split(eb), strict=True))
        x_bn = x_train[: data.bn_samples]
        if data.batch_size == eb:
            # The same chunk objects in both passes, so the input layer's output can be shared;
            # only the last chunk differs when bn_subset cuts one.
            full = data.bn_samples // eb
            self.bn_chunks = [x for x, _ in self.train[:full]]
            if data.bn_samples % eb:
                self.bn_chunks.append(x_bn[full * eb :])
        else:
            self.bn_chunks = list(x_bn.split(data.batch_size))
        self._shareable = {id(x) for x, _ in self.train}
        self._shared: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._shared_bytes = 0
        self._bn_calls_per_forward: int | None = None
        self._bn_calls = 0
        self._recalibrating = False
        for m in self.model.modules():
            if type(m) in _LAYERS:  # exact types: a subclass may act differently per mode
                m.forward = self._sharing(m, m.forward)
        for m in self.model.modules():
            if isinstance(m, _BatchNorm):
                m.register_forward_hook(self._count_bn)

    def _sharing(self, module: nn.Module, forward: Callable) -> Callable:
        """Wrap a layer's forward so that its output on a training chunk is computed once."""

        def shared_forward(x: torch.Tensor) -> torch.Tensor:
            key = (id(module), id(x))
            hit = self._shared.pop(key, None)
            if hit is not None and hit[0] is x:  # identity, not just a reused id
                return hit[1]
            out = forward(x)
            size = out.numel() * out.element_size()
            if (
                self._recalibrating
                and id(x) in self._shareable
                and self._shared_bytes + size <= _SHARE_BYTES
            ):
                self._shared[key] = (x, out)
                self._shared_bytes += size
            return out

        return shared_forward

    def _count_bn(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._recalibrating:
            return
        self._bn_calls += 1
        if self._bn_calls == self._bn_calls_per_forward:
            raise _StopForward

    def _recalibrate(self) -> None:
        """Fresh BN statistics: train mode, cumulative average (momentum None), one pass."""
        for m in self.bns:
            m.reset_running_stats()
            m.momentum = None
        self.model.train()
        self._recalibrating = True
        try:
            for x in self.bn_chunks:
                self._bn_calls = 0
                try:
                    self.model(x)
                except _StopForward:
                    continue
                # A forward that ran to the end: now we know how many BN calls one forward has.
                self._bn_calls_per_forward = self._bn_calls
        finally:
            self._recalibrating = False
            self.model.eval()

    def _loss_acc(self, chunks: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
        if not chunks:
            return float("nan"), float("nan")
        device = chunks[0][0].device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        n = 0
        for x, y in chunks:
            logits = self.model(x)  # (chunk, classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
        return float(loss_sum) / n, float(correct) / n

    @torch.inference_mode()
    def __call__(self, params: Named) -> dict[str, float]:
        for name, p in self.params.items():
            p.copy_(params[name])
        self._shared.clear()
        self._shared_bytes = 0
        if self.bns:
            self._recalibrate()
        self.model.eval()
        train_loss, train_acc = self._loss_acc(self.train)
        self._shared.clear()
        test_loss, test_acc = self._loss_acc(self.test)
        return {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }


def evaluate_point(model: nn.Module, params: Named, data: EvalData) -> dict[str, float]:
    """Train/test loss and accuracy of one weight point, BN recalibrated at that point.

    Args:
        model: the architecture (its weights and buffers are neither used nor changed).
        params: the weight point (named parameters).
        data: evaluation data.

    Returns:
        ``{metric: value}`` for the metrics in :data:`METRICS`.
    """
    evaluator = _Evaluator(model, data)
    with small_model_threads(evaluator.model, data.x_train):
        return evaluator(params)


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
    evaluate_fn: Callable[[Any], dict[str, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate ``point(i)`` for i in range(n).

    Args:
        model: the architecture (its weights and buffers are neither used nor changed).
        point: index -> weight point (named parameters, any device).
        n: number of points.
        data: evaluation data.
        progress: ``progress(done, total, stage)`` callback.
        store, kind, key: if given, partial results are saved under (kind, key) every
            ``save_every_s`` seconds and a re-run resumes from them.
        shard: (rank, world): evaluate only indices i with i % world == rank; the other
            entries stay NaN (the caller gathers shards).
        save_every_s: seconds between partial saves.
        stage: text shown with the progress.
        evaluate_fn: metrics of what ``point(i)`` returns, in place of the BN-recalibrating
            evaluator of named weight points; for callers with a faster way to evaluate their
            own points (planes of networks without BN, ``landscape.surfaces``).

    Returns:
        ``{metric: array (n,)}`` for the metrics in :data:`METRICS`, plus ``done`` (bool mask).
    """
    rank, world = shard
    out = {m: np.full(n, np.nan) for m in METRICS}
    done = np.zeros(n, dtype=bool)
    resume = store is not None and bool(key)
    if resume:
        partial = store.load_partial(kind, key)
        if partial is not None and partial.get("done", np.empty(0)).shape == (n,):
            done = partial["done"].astype(bool)
            for m in METRICS:
                out[m] = partial[m].astype(float)
    mine = list(range(rank, n, world))
    todo = [i for i in mine if not done[i]]
    count = len(mine) - len(todo)
    if progress is not None and count:
        progress(count, len(mine), stage)
    if not todo:
        return {**out, "done": done}
    evaluator = evaluate_fn or _Evaluator(model, data)
    threads_model = evaluator.model if isinstance(evaluator, _Evaluator) else model
    last_save = time.monotonic()
    with small_model_threads(threads_model, data.x_train):
        for i in todo:
            metrics = evaluator(point(i))
            for m in METRICS:
                out[m][i] = metrics[m]
            done[i] = True
            count += 1
            if progress is not None:
                progress(count, len(mine), stage)
            if resume and time.monotonic() - last_save > save_every_s:
                store.save_partial(kind, key, {**out, "done": done})
                last_save = time.monotonic()
    if resume:
        store.save_partial(kind, key, {**out, "done": done})
    return {**out, "done": done}
