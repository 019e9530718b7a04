"""Metrics: named reductions of a network's logits. Adding one is one line in REDUCTIONS.

A :class:`Metric` turns a chunk of logits into a few float64 sums (``sums``), separately for the
chunk's first ``k`` rows (training samples) and the rest (test samples); the evaluator adds them
up over all chunks and ``value(sums, n)`` gives the metric. Row statistics
that several metrics need (the maximum logit, log-sum-exp, the prediction, its confidence) are
computed once per chunk by :class:`Rows`. Every metric appears for the training and the test
set: :data:`METRICS` lists the result columns (``train_loss``, ..., ``test_ece``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["ECE_BINS", "METRICS", "REDUCTIONS", "Metric", "Rows", "chunk_sums", "values", "WIDTH"]

ECE_BINS = 15  # equal-width confidence bins (b/15, (b+1)/15] of the expected calibration error


class Rows:
    """Per-row statistics of one chunk of logits (..., rows, classes), each computed when
    asked; leading dimensions (several points' logits) are kept.

    The first ``k`` rows are one group (training samples), the rest another (test samples).
    """

    def __init__(self, logits: torch.Tensor, y: torch.Tensor, k: int):
        self.logits, self.y, self.k = logits, y, k

    def split_sum(self, v: torch.Tensor) -> torch.Tensor:
        """(..., 2, 1) float64 sums of the per-row values ``v`` (..., rows) over the groups."""
        k = self.k
        f64 = torch.float64
        return torch.stack([v[..., :k].sum(-1, dtype=f64), v[..., k:].sum(-1, dtype=f64)], -1)[
            ..., None
        ]

    @cached_property
    def _max(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits.max(-1)

    @cached_property
    def _sumexp(self) -> torch.Tensor:
        return (self.logits - self._max[0][..., None]).exp_().sum(-1)  # (..., rows)

    @property
    def pred(self) -> torch.Tensor:
        return self._max[1]

    @cached_property
    def loss(self) -> torch.Tensor:
        """Cross-entropy per row: logsumexp minus the target logit (shares the max with pred)."""
        lse = self._sumexp.log().add_(self._max[0])
        y = self.y.expand(self.logits.shape[:-1])[..., None]
        return lse - self.logits.gather(-1, y).squeeze(-1)

    @cached_property
    def correct(self) -> torch.Tensor:
        return self.pred == self.y

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


@functools.cache
def _edges(device: torch.device) -> torch.Tensor:
    return torch.arange(1, ECE_BINS, device=device, dtype=torch.float64) / ECE_BINS


def _ece_sums(r: Rows) -> torch.Tensor:
    """Per group and confidence bin: rows, summed confidence, summed correctness
    (..., 2, 3 * BINS)."""
    conf = r.confidence
    lead, rows = conf.shape[:-1], conf.shape[-1]
    m = conf[..., 0].numel()  # points in the leading dimensions
    b = torch.bucketize(conf, _edges(conf.device)).view(m, rows)  # bin b: (b/15, (b+1)/15]
    b[:, r.k :] += ECE_BINS  # the second group's bins follow the first's
    # One bincount for the three sums of every point: its index is (point, quantity, group, bin).
    b += torch.arange(m, device=b.device)[:, None] * (6 * ECE_BINS)
    idx = torch.cat([b, b + 2 * ECE_BINS, b + 4 * ECE_BINS], 1)
    w = torch.cat([torch.ones_like(conf), conf, r.correct.to(conf.dtype)], -1).view(m, -1)
    sums = torch.bincount(idx.view(-1), weights=w.view(-1), minlength=m * 6 * ECE_BINS)
    return sums.view(m, 3, 2, ECE_BINS).transpose(1, 2).reshape(*lead, 2, 3 * ECE_BINS)


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
    rows = Rows(logits, y, len(y) if k is None else k)
    return torch.cat([m.sums(rows) for m in REDUCTIONS], -1)


def values(sums: torch.Tensor, n: int) -> dict[str, float]:
    """{metric name: value} from one row of :func:`chunk_sums`' sums over ``n`` rows (NaN if 0)."""
    if n == 0:
        return {m.name: float("nan") for m in REDUCTIONS}
    parts = sums.cpu().split(_WIDTHS)
    return {m.name: m.value(p, n) for m, p in zip(REDUCTIONS, parts, strict=True)}
