"""Metrics: named reductions of a network's logits. Adding one is one line in REDUCTIONS.

A :class:`Metric` turns a chunk of logits into a few float64 sums (``sums``), separately for the
chunk's first ``k`` rows (training samples) and the rest (test samples); the evaluator adds them
up over all chunks and ``value(sums, n)`` gives the metric. Row statistics
that several metrics need (the maximum logit, log-sum-exp, the prediction, its confidence) are
computed once per chunk by :class:`Rows`. Every metric appears for the training and the test
set: :data:`METRICS` lists the result columns (``train_loss``, ..., ``test_ece``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

__all__ = [
    "ECE_BINS",
    "METRICS",
    "REDUCTIONS",
    "WIDTH",
    "Metric",
    "Rows",
    "chunk_sums",
    "evaluate_model",
    "values",
]

ECE_BINS = 15  # equal-width confidence bins (b/15, (b+1)/15] of the expected calibration error


class Rows:
    """Per-row statistics of one chunk of logits (..., rows, classes), each computed when
    asked; leading dimensions (several points' logits) are kept.

    The first ``k`` rows are one group (training samples), the rest another (test samples).
    """

    def __init__(self, logits: torch.Tensor, y: torch.Tensor, k: int):
        self.logits, self.y, self.k = logits, y, k

    def split_sum(self, v: torch.Tensor) -> torch.Tensor:
        """(..., 2, 1) float64 sums of the per-row values ``v`` (..., rows) over the groups
        (float32 values summed pairwise, ~1e-7 relative; sum(dtype=float64) took 16x longer)."""
        k = self.k
        return torch.stack([v[..., :k].sum(-1), v[..., k:].sum(-1)], -1).double()[..., None]

    @cached_property
    def _max(self) -> torch.Tensor:
        # amax, not max: max's indices cost 25x more (2.6 ms for 64 digits points' logits).
        return self.logits.amax(-1)  # (..., rows)

    @cached_property
    def _sumexp(self) -> torch.Tensor:
        return (self.logits - self._max[..., None]).exp_().sum(-1)  # (..., rows)

    @cached_property
    def _target(self) -> torch.Tensor:
        y = self.y.expand(self.logits.shape[:-1])[..., None]
        return self.logits.gather(-1, y).squeeze(-1)  # (..., rows)

    @cached_property
    def loss(self) -> torch.Tensor:
        """Cross-entropy per row: logsumexp minus the target logit (shares the max with the
        prediction)."""
        return self._sumexp.log().add_(self._max).sub_(self._target)

    @cached_property
    def correct(self) -> torch.Tensor:
        """Whether the prediction, the first class with the largest logit (as argmax), is the
        target; rows with a NaN logit count as wrong. The target logit is compared with the
        largest; only rows where several classes share the largest take argmax's first."""
        hit = self._target == self._max
        top = self.logits == self._max[..., None]
        if int(torch.count_nonzero(top)) > hit.numel():  # some row has a tie
            ties = top.sum(-1) > 1
            y = self.y.expand(hit.shape)
            hit[ties] = top[ties].to(torch.uint8).argmax(-1) == y[ties]
        return hit

    @cached_property
    def confidence(self) -> torch.Tensor:
        """Softmax probability of the predicted class."""
        return self._sumexp.reciprocal().to(torch.float64)


@dataclass(frozen=True)
class Metric:
    """One named reduction of logits.

    Attributes:
        name: "loss" gives the result columns "train_loss" and "test_loss".
        sums: :class:`Rows` of a chunk -> (2, m) float64 sums over its two groups of rows.
        value: (the (m,) sums over all n rows, n) -> the metric's value.
    """

    name: str
    sums: Callable[[Rows], torch.Tensor]
    value: Callable[[torch.Tensor, int], float]


def _mean(s: torch.Tensor, n: int) -> float:
    return float(s[0]) / n


def _ece_sums(r: Rows) -> torch.Tensor:
    """Per group and confidence bin: rows, summed confidence, summed correctness
    (..., 2, 3 * BINS)."""
    conf = r.confidence  # float32 values (in float64): 15 * conf is exact, so the bin
    lead, rows = conf.shape[:-1], conf.shape[-1]  # ceil(15 conf) - 1 is bucketize's, 70x faster
    m = conf[..., 0].numel()  # points in the leading dimensions
    b = (conf * ECE_BINS).ceil_().sub_(1).clamp_(0, ECE_BINS - 1).long().view(m, rows)
    b[:, r.k :] += ECE_BINS  # bin b: (b/15, (b+1)/15]; the second group's follow the first's
    b += torch.arange(m, device=b.device)[:, None] * (2 * ECE_BINS)  # index (point, group, bin)
    size = m * 2 * ECE_BINS
    sums = [
        torch.bincount(b.view(-1), weights=w.reshape(-1), minlength=size).to(torch.float64)
        for w in (torch.ones_like(conf), conf, r.correct.to(conf.dtype))
    ]
    out = torch.stack(sums).view(3, m, 2, ECE_BINS).permute(1, 2, 0, 3)  # (point, group, q, bin)
    return out.reshape(*lead, 2, 3 * ECE_BINS)


def _ece_value(s: torch.Tensor, n: int) -> float:
    _, conf, correct = s.view(3, ECE_BINS)  # sum_b n_b/n |acc_b - conf_b|
    return float((correct - conf).abs().sum()) / n


REDUCTIONS: tuple[Metric, ...] = (
    Metric("loss", lambda r: r.split_sum(r.loss), _mean),  # mean cross-entropy
    Metric("acc", lambda r: r.split_sum(r.correct), _mean),  # top-1 accuracy
    Metric("ece", _ece_sums, _ece_value),  # expected calibration error, 15 bins
)
METRICS: tuple[str, ...] = tuple(f"{s}_{m.name}" for s in ("train", "test") for m in REDUCTIONS)


def _width(metric: Metric) -> int:
    return metric.sums(Rows(torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64), 1)).shape[-1]


_WIDTHS = [_width(m) for m in REDUCTIONS]
WIDTH = sum(_WIDTHS)  # length of :func:`chunk_sums`' output


def chunk_sums(logits: torch.Tensor, y: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Every metric's sums over one chunk of logits (..., rows, classes), side by side:
    (..., 2, WIDTH) float64, row 0 over the first ``k`` rows (default: all), row 1 over the
    rest. Leading dimensions (several points' logits) are reduced at once."""
    # Copied to (..., classes, rows) memory order: the reductions over the classes then run
    # along contiguous rows (for 64 digits points, amax 8x faster; the copy costs 1/3 of that).
    logits = logits.transpose(-1, -2).contiguous().transpose(-1, -2)
    rows = Rows(logits, y, len(y) if k is None else k)
    return torch.cat([m.sums(rows) for m in REDUCTIONS], -1)


def values(sums: torch.Tensor, n: int) -> dict[str, float]:
    """{metric name: value} from one row of :func:`chunk_sums`' sums over ``n`` rows (NaN if 0)."""
    if n == 0:
        return {m.name: float("nan") for m in REDUCTIONS}
    parts = sums.cpu().split(_WIDTHS)
    return {m.name: m.value(p, n) for m, p in zip(REDUCTIONS, parts, strict=True)}


@torch.no_grad()
def evaluate_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048
) -> dict[str, float]:
    """Eval-mode metrics of ``model`` with its own weights and buffers: ``{"loss", "acc",
    "ece", ...}`` (the names of :data:`REDUCTIONS`), e.g. during training."""
    was_training = model.training
    model.eval()
    try:
        sums = torch.zeros(WIDTH, dtype=torch.float64, device=x.device)
        for i in range(0, len(y), batch_size):
            sums += chunk_sums(model(x[i : i + batch_size]), y[i : i + batch_size])[0]
    finally:
        model.train(was_training)
    return values(sums, len(y))
