"""Metrics: named reductions of a network's logits. Adding one is one line in REDUCTIONS.

A :class:`Metric` turns a chunk of logits into a few float64 sums (``sums``); the evaluator adds
them up over all chunks of a data set and ``value(sums, n)`` gives the metric. Row statistics
that several metrics need (the maximum logit, log-sum-exp, the prediction, its confidence) are
computed once per chunk by :class:`Rows`. Every metric appears for the training and the test
set: :data:`METRICS` lists the result columns (``train_loss``, ..., ``test_ece``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["ECE_BINS", "METRICS", "REDUCTIONS", "Metric", "Rows", "chunk_sums", "values", "WIDTH"]

ECE_BINS = 15  # equal-width confidence bins (b/15, (b+1)/15] of the expected calibration error


class Rows:
    """Per-row statistics of one chunk of logits (rows, classes), each computed when asked."""

    def __init__(self, logits: torch.Tensor, y: torch.Tensor):
        self.logits, self.y = logits, y

    @cached_property
    def _max(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits.max(1)

    @cached_property
    def _sumexp(self) -> torch.Tensor:
        return (self.logits - self._max[0][:, None]).exp_().sum(1)  # (rows,)

    @property
    def pred(self) -> torch.Tensor:
        return self._max[1]

    @cached_property
    def loss(self) -> torch.Tensor:
        """Cross-entropy per row: logsumexp minus the target logit (shares the max with pred)."""
        lse = self._sumexp.log().add_(self._max[0])
        return lse - self.logits.gather(1, self.y[:, None]).squeeze(1)

    @cached_property
    def correct(self) -> torch.Tensor:
        return (self.pred == self.y).to(torch.float64)

    @cached_property
    def confidence(self) -> torch.Tensor:
        """Softmax probability of the predicted class."""
        return self._sumexp.reciprocal().to(torch.float64)


@dataclass(frozen=True)
class Metric:
    """One named reduction of logits.

    Attributes:
        name: "loss" gives the result columns "train_loss" and "test_loss".
        sums: :class:`Rows` of a chunk -> (m,) float64 sums over its rows.
        value: (the (m,) sums over all n rows, n) -> the metric's value.
    """

    name: str
    sums: Callable[[Rows], torch.Tensor]
    value: Callable[[torch.Tensor, int], float]


def _total(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dtype=torch.float64)[None]


def _mean(s: torch.Tensor, n: int) -> float:
    return float(s[0]) / n


def _ece_sums(r: Rows) -> torch.Tensor:
    """Per confidence bin: rows, summed confidence, summed correctness (3 * ECE_BINS)."""
    conf = r.confidence
    edges = torch.arange(1, ECE_BINS, device=conf.device, dtype=conf.dtype) / ECE_BINS
    b = torch.bucketize(conf, edges)  # bin b: (b/15, (b+1)/15]
    parts = (None, conf, r.correct)
    return torch.cat([torch.bincount(b, weights=w, minlength=ECE_BINS).double() for w in parts])


def _ece_value(s: torch.Tensor, n: int) -> float:
    _, conf, correct = s.view(3, ECE_BINS)  # sum_b n_b/n |acc_b - conf_b|
    return float((correct - conf).abs().sum()) / n


REDUCTIONS: tuple[Metric, ...] = (
    Metric("loss", lambda r: _total(r.loss), _mean),  # mean cross-entropy
    Metric("acc", lambda r: _total(r.correct), _mean),  # top-1 accuracy
    Metric("ece", _ece_sums, _ece_value),  # expected calibration error, 15 bins
)
METRICS: tuple[str, ...] = tuple(f"{s}_{m.name}" for s in ("train", "test") for m in REDUCTIONS)


def _width(metric: Metric) -> int:
    return len(metric.sums(Rows(torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64))))


_WIDTHS = [_width(m) for m in REDUCTIONS]
WIDTH = sum(_WIDTHS)  # length of :func:`chunk_sums`' output


def chunk_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every metric's sums over the rows of one chunk, side by side: (WIDTH,) float64."""
    rows = Rows(logits, y)
    return torch.cat([m.sums(rows) for m in REDUCTIONS])


def values(sums: torch.Tensor, n: int) -> dict[str, float]:
    """{metric name: value} from the sums of :func:`chunk_sums` over ``n`` rows (NaN if 0)."""
    if n == 0:
        return {m.name: float("nan") for m in REDUCTIONS}
    parts = sums.cpu().split(_WIDTHS)
    return {m.name: m.value(p, n) for m, p in zip(REDUCTIONS, parts, strict=True)}
