"""Evaluation data on its device, and the thread policy of evaluation and training.

:class:`EvalData` holds the training and test tensors where the points are evaluated (CPU
images stored channels-last) and how BatchNorm is recalibrated. :func:`small_model_threads`
is the one thread policy: small models run on one CPU thread (see its docstring for why).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscape.data import Dataset

__all__ = [
    "LINEAR_LAYERS",
    "BatchNormPass",
    "SMALL_MACS",
    "EvalData",
    "channels_last",
    "input_of",
    "macs_per_sample",
    "small_model_threads",
]

SMALL_MACS = 2_000_000  # multiply-adds per sample below which a model counts as small
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # outputs linear in (weight, bias)


@torch.no_grad()
def macs_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the Linear/Conv layers for one sample (eval-mode forward of x[:1])."""
    total = 0

    def count(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.weight[0].numel()  # outputs x fan-in

    handles = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, LINEAR_LAYERS)
    ]
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
    if x.device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    if macs_per_sample(model, x) >= SMALL_MACS:
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
        eval_batch_size: rows per evaluation pass on GPUs (on the CPU, cache-sized chunks are
            chosen from the first layer's output); results do not depend on it.
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
            sizes = f"{self.batch_size} and {self.eval_batch_size}"
            raise ValueError(f"batch sizes must be >= 1, got {sizes}")

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
        xs = [channels_last(x.to(device)) for x in (data.x_train, data.x_test)]
        ys = [y.to(device) for y in (data.y_train, data.y_test)]
        return cls(xs[0], ys[0], xs[1], ys[1], bn_subset, batch_size, eval_batch_size)

    @property
    def bn_samples(self) -> int:
        """Number of training samples the BN statistics are computed from."""
        n = self.x_train.shape[0]
        return n if self.bn_subset is None else min(self.bn_subset, n)

    def describe(self) -> dict[str, Any]:
        """What the result depends on besides the weights (goes into result keys)."""
        n_train, n_test = self.x_train.shape[0], self.x_test.shape[0]
        return dict(n_train=n_train, n_test=n_test, bn_samples=self.bn_samples,
                    bn_batch_size=self.batch_size)  # fmt: skip


class _Stop(Exception):
    """Raised by a forward pre-hook to end a pass once the layer of interest has its input."""


def input_of(net: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input ``layer`` receives when ``net`` runs on ``x`` (the pass stops there)."""
    seen: list[torch.Tensor] = []

    def stop(mod: nn.Module, args: tuple) -> None:
        seen.append(args[0])
        raise _Stop

    hook = layer.register_forward_pre_hook(stop)
    try:
        net(x)
    except _Stop:
        pass
    finally:
        hook.remove()
    return seen[0]


class _Moments:
    """Per-channel (dim 1) mean and variance of a stream of chunks, accumulated around a shift
    (the first chunk's mean) in float64 across chunks, so that neither the layout nor long
    float32 running sums limit their accuracy."""

    def __init__(self) -> None:
        self.n, self.shift, self.s, self.q = 0, None, 0.0, 0.0

    def add(self, z: torch.Tensor) -> None:
        dims = [d for d in range(z.ndim) if d != 1]
        if self.shift is None:
            self.shift = z.mean(dims, keepdim=True)
        d = z - self.shift
        self.n += z.numel() // z.shape[1]
        # float32 sums of a cache-sized chunk (cascade summation: ~1e-7), float64 across chunks;
        # sum(dtype=float64) measured 3x slower (a strided float64 copy of the chunk).
        self.s = self.s + d.sum(dims).double()
        self.q = self.q + (d * d).sum(dims).double()

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean, biased variance, values per channel), float64."""
        m = self.s / max(self.n, 1)
        return m + self.shift.reshape(-1).double(), (self.q / self.n - m * m).clamp_(min=0), self.n


def _linear_moments(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel means (k, C) and covariances (C, k, k) of k tensors, float64: those of
    ``sum_j c_j parts[j]`` are then ``c @ means`` and ``c^T cov c`` for any coordinates c.
    Each entry is reduced on its own (C, n) rows, so a tensor's own moments do not depend on
    the other parts: coordinates (1, 0, ..) give bit for bit those of ``[parts[0]]``."""
    c = parts[0].shape[1]
    p = torch.stack([t.movedim(1, 0).reshape(c, -1) for t in parts], 1).double()  # (C, k, n)
    means = p.mean(2, keepdim=True)
    p -= means
    k, n = p.shape[1], p.shape[2]
    cov = p.new_empty(c, k, k)
    for j in range(k):
        for i in range(j + 1):
            cov[:, i, j] = cov[:, j, i] = (p[:, i] * p[:, j]).sum(1) / n
    return means[..., 0].T.contiguous(), cov, n


class BatchNormPass:
    """Fresh BN statistics of ``net`` at its current weights: what a train-mode pass over
    batches with ``momentum=None`` computes (the cumulative average of each batch's mean and
    unbiased variance), without its cost or its rounding.

    The network runs in eval mode; each BN layer first normalises a batch with that batch's
    own statistics (mean, biased variance: what train mode does), computed in float64 by
    :class:`_Moments`. torch's CPU train-mode BN on channels-last input accumulates them in
    float32 (variances ~5e-5 relative off on a digits CNN plane point); here they agree with a float64 pass to
    ~1e-7. Layered (few BN layers, each called once, every BN tracking statistics): one partial
    pass per BN layer in cache-sized chunks of ``chunk`` rows, stopped at that layer's input;
    measured 2x faster on the digits CNN than one pass over the whole batch, whose
    activations outgrow the caches. Otherwise one whole-batch pass with a hook on each BN.
    Dropout and other train-only behaviour are off during the pass (the statistics are
    deterministic).
    """

    def __init__(self, net: nn.Module, sample: torch.Tensor, *, max_layered: int = 3):
        self.net = net
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        calls: list[nn.Module] = []
        inputs: list[torch.Tensor] = []

        def seen(m: nn.Module, args: tuple) -> None:
            calls.append(m)
            inputs.append(args[0])

        hooks = [m.register_forward_pre_hook(seen) for m in bns]
        try:
            with torch.no_grad():
                net.eval()(sample)
        finally:
            for h in hooks:
                h.remove()
        self.bns = [m for m in bns if m.track_running_stats]
        once = len(calls) == len(set(calls)) == len(bns)
        self.order = calls if once and len(bns) == len(self.bns) <= max_layered else None
        self.first_is_input = bool(self.order) and inputs[0] is sample
        self._linear: list[tuple[torch.Tensor, torch.Tensor, int]] | None = None

    def linear_input(self, parts: list[torch.Tensor], batch_size: int) -> bool:
        """Let the first BN layer's statistics come from ``parts`` (k, each of the BN rows):
        when the network's input is ``sum_j c_j parts[j]`` and the first BN layer sees it
        unchanged, each batch's mean and variance follow from per-batch moments of the parts
        (:func:`_linear_moments`, computed here once) instead of a pass over the rows.
        Returns whether they will be used (pass the coordinates to each call)."""
        if not self.first_is_input:
            return False
        batches = zip(*[p.split(batch_size) for p in parts], strict=True)
        self._linear = [_linear_moments(list(b)) for b in batches]
        return True

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, batch_size: int, chunk: int, coords: Sequence[float] = ()
    ) -> None:
        """Recalibrate on the rows of ``x`` in batches of ``batch_size`` (``coords``: those of
        ``x`` in the parts given to :meth:`linear_input`)."""
        stats: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in self.bns}
        self.net.eval()
        c = torch.tensor(coords, dtype=torch.float64, device=x.device)
        for b, xb in enumerate(x.split(batch_size)):
            if self.order is None:
                self._hooked(xb, stats)
                continue
            stats[self.order[0]].append(self._set(self.order[0], self._first(b, xb, chunk, c)))
            for m in self.order[1:]:
                mom = _Moments()
                self._run(xb.split(chunk), m, mom.add)
                stats[m].append(self._set(m, mom.mean_var()))
        for m, s in stats.items():
            m.num_batches_tracked.fill_(len(s))
            if s:
                m.running_mean.copy_(torch.stack([a for a, _ in s]).mean(0))
                m.running_var.copy_(torch.stack([v for _, v in s]).mean(0))

    def _first(self, b: int, xb: torch.Tensor, chunk: int, c: torch.Tensor) -> tuple:
        """(mean, biased variance, n) of the first BN layer's input in batch ``b``: from the
        moments of :meth:`linear_input` at the coordinates ``c``, else from the input itself
        by the same formula (coordinates (1,): a point gets the same numbers either way)."""
        if self._linear is not None:
            means, cov, n = self._linear[b]
        else:
            rows: list[torch.Tensor] = []
            self._run(xb.split(chunk), self.order[0], rows.append)
            (means, cov, n), c = _linear_moments([torch.cat(rows)]), xb.new_ones(1)
        c = c.to(cov)
        return c @ means, torch.einsum("j,cjl,l->c", c, cov, c).clamp_(min=0), n

    def _run(self, chunks, layer: nn.Module, see) -> None:
        """Forward each chunk up to ``layer``'s input, handed to ``see``."""
        for c in chunks:
            see(input_of(self.net, layer, c))

    @staticmethod
    def _set(m: nn.Module, stats: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise with the batch's (mean, biased variance, n); return (mean, unbiased var)."""
        mean, var, n = stats
        if n < 2:
            raise ValueError("Expected more than 1 value per channel when training")
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        return mean, var * (n / (n - 1))

    def _hooked(self, xb: torch.Tensor, stats: dict) -> None:
        """One whole-batch pass; each BN's pre-hook sets its input's statistics first."""

        def pre(m: nn.Module, args: tuple) -> None:
            mom = _Moments()
            for c in args[0].split(256):  # cache-sized pieces of the reduction
                mom.add(c)
            stats[m].append(self._set(m, mom.mean_var()))

        hooks = [m.register_forward_pre_hook(pre) for m in self.bns]
        try:
            self.net(xb)
        finally:
            for h in hooks:
                h.remove()
