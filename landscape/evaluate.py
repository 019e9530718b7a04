"""THE evaluator: metrics at many weight points, BatchNorm recalibrated at each point.

A point is a linear combination of a few basis vectors, ``w = sum_j coords[j] * basis[j]``:
a plane is basis [origin, u, v] with coords [1, a, b]; a Bezier curve of order k its k + 1
control points with the Bernstein weights at t; the straight line [A, B] with [1 - t, t]; a
1-D slice [w, d] with [1, s]; a single point [w] with [1]. Points are built on the fly from the
basis (never an n_points x n_params array). Every point gets fresh BN statistics (one pass over
the training data, or its first ``bn_subset`` samples, cumulative average over batches of
``batch_size``), then every metric of :data:`REDUCTIONS` on the train and test sets. Metrics are
named reductions of logits: adding one is one line in :data:`REDUCTIONS`. Long computations
save partial results in the store (a killed run resumes) and shard over processes.

Where the time goes, and what is done about it (bench/bench_surfaces.py, bench/bench_curves.py;
digits, this 2-core CPU, one thread; profiled with torch.profiler and cProfile):

* First layer reused: a Linear/Conv layer's output is linear in its parameters, so when the
  network starts with one (checked on a few samples) its responses to each basis vector are
  computed once (within ``budget_bytes``) and combined per point, for the BN pass and the
  evaluation alike.
* BN statistics (:class:`~landscape.evaldata.BatchNormPass`): eval mode, each BN layer
  normalising with its batch's statistics, in float64 across cache-sized chunks (the train-mode
  pass spent most of a point in whole-batch layers, and was ~5e-5 relative off; now ~1e-7).
* Subnormal floats are flushed to zero (:func:`_cpu_policy`): the sparse gRDA network's
  activations produce them (1.35x per CNN point). CPU inputs are channels-last (2.6x).
* Parameters are views of one flat vector rewritten in place per point (no copies,
  ``load_state_dict`` or ``functional_call``). Small models run on one CPU thread
  (:func:`small_model_threads`): a second thread only adds scheduler waits on a busy machine.
* On the CPU, BatchNorm -> ReLU -> 2x2 max pooling runs as one exact layer that pools first
  (:mod:`landscape.evalnet`): 9.6 -> 8.3 ms per digits CNN point; then chunks of ``chunk_bytes``
  = 4 MiB of first-layer output (1024 rows) beat the former 1 MiB: 8.3 -> 6.5 ms.
* The logits of all rows of up to 64 points are kept and their metrics reduced at once (per
  point, ~15 tiny operations cost ~0.1 ms: an MLP point went 0.50 -> 0.42 ms);
  :func:`evaluate_points` hands the evaluator ~0.2 s of points per call (live progress).
* On CUDA, networks without BN evaluate 16 points per vmapped pass (~6x faster on an H200,
  where a point is a few tiny kernel launches); on the CPU vmap measured 1.5-2x slower.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from landscape.evaldata import (
    LINEAR_LAYERS,
    BatchNormPass,
    EvalData,
    channels_last,
    input_of,
    small_model_threads,
)
from landscape.evalnet import fuse_batchnorm
from landscape.metrics import METRICS, REDUCTIONS, Metric, chunk_sums, values
from landscape.params import Named, param_names, unflatten
from landscape.progress import Progress
from landscape.store import Store

__all__ = [
    "METRICS",
    "REDUCTIONS",
    "EvalData",
    "Evaluator",
    "Metric",
    "bn_statistics",
    "evaluate_point",
    "evaluate_points",
]


def _combine(parts: Sequence[torch.Tensor], coords: Sequence[float], out: torch.Tensor):
    """``out = sum_j coords[j] * parts[j]`` in place: one pass per non-zero term."""
    terms = [(p, c) for p, c in zip(parts, coords, strict=True) if c != 0.0] or [(parts[0], 0.0)]
    (p0, c0), rest = terms[0], terms[1:]
    if c0 == 1.0 and rest:
        (p1, c1), rest = rest[0], rest[1:]
        torch.add(p0, p1, alpha=c1, out=out)
    else:
        torch.mul(p0, c0, out=out)
    for p, c in rest:
        out.add_(p, alpha=c)
    return out


def _basis_matrix(basis: Sequence[Named] | torch.Tensor, like: Named) -> torch.Tensor:
    """The basis as (k, P) rows in ``like``'s order, device and dtype (that of the parameters)."""
    p0 = next(iter(like.values()))
    if isinstance(basis, torch.Tensor):
        mat = basis.reshape(1 if basis.ndim == 1 else len(basis), -1)
    else:
        mat = torch.stack([torch.cat([b[n].reshape(-1).to(p0) for n in like]) for b in basis])
    size = sum(t.numel() for t in like.values())
    if mat.shape[0] < 1 or mat.shape[1] != size:
        raise ValueError(f"basis of shape {tuple(mat.shape)}: need (k >= 1, {size}) parameters")
    return mat.to(p0)


def _first_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module] | None:
    """The first module with parameters or buffers that a forward pass calls, if it is a
    Linear/Conv layer called once that is not the whole model (its output is then linear in
    its parameters and everything before it is parameter-free)."""
    calls: list[tuple[str, nn.Module]] = []
    hooks = [
        mod.register_forward_pre_hook(lambda m, a, name=name: calls.append((name, m)))
        for name, mod in model.named_modules()
        if any(True for _ in mod.parameters(recurse=False))
        or any(True for _ in mod.buffers(recurse=False))
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    if not calls or not calls[0][0] or type(calls[0][1]) not in LINEAR_LAYERS:  # exact types
        return None
    return calls[0] if sum(m is calls[0][1] for _, m in calls) == 1 else None


class Evaluator:
    """Every metric of :data:`METRICS` at points ``sum_j coords[j] * basis[j]``, BN recalibrated.

    Holds a private copy of the model on the data's device (the given one is not changed). Not
    thread-safe: one evaluator per thread. See the module notes for what makes it fast.

    Args:
        model: the architecture (its weights are not used).
        data: evaluation data; BN statistics from ``batch_size`` batches of ``bn_samples``.
        basis: k weight points (named parameters), or a (k, P) tensor of flat points in the
            order of ``param_names(model)``.
        first_layer: "auto" (reuse the first layer's responses for bases of k >= 2 vectors when
            the network starts with a Linear/Conv layer and they fit ``budget_bytes``),
            "reuse" (error if it cannot) or "plain".
        points_per_pass: points per vmapped pass in :meth:`many`; None: 16 on CUDA for networks
            without BN, else 1. More than one needs a network without BN.
        budget_bytes: memory allowed for the k cached first-layer responses of all N samples.
        chunk_bytes: on the CPU, rows per pass such that the first layer's output takes this.
        batch_bytes: bounds the first-layer output of one vmapped pass over all samples.
    """

    def __init__(
        self,
        model: nn.Module,
        data: EvalData,
        basis: Sequence[Named] | torch.Tensor,
        *,
        first_layer: str = "auto",
        points_per_pass: int | None = None,
        budget_bytes: int = 512 * 2**20,
        chunk_bytes: int = 4 * 2**20,
        batch_bytes: int = 256 * 2**20,
    ):
        if first_layer not in ("auto", "reuse", "plain"):
            raise ValueError(f"first_layer must be auto, reuse or plain, got {first_layer!r}")
        self.data, device = data, data.x_train.device
        self.model = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self._like = {n: p.detach() for n, p in self.model.named_parameters()}
        basis = _basis_matrix(basis, self._like)  # (k, P)
        self.k = basis.shape[0]
        self.x = [channels_last(data.x_train), channels_last(data.x_test)]
        self.y = [data.y_train, data.y_test]
        self._y = torch.cat(self.y)  # (N,): train labels, then test labels
        self.layer, self.net, self._h, self._logits = None, self.model, None, None
        with torch.no_grad():
            first = _first_layer(self.model, self.x[0][:2])
            row = first[1](self._input_of(first[1], self.x[0][:1])) if first else self.x[0][:1]
            row_bytes = row[:1].numel() * row.element_size()
            self.step = max(1, chunk_bytes // row_bytes)
            if device.type != "cpu":
                self.step = data.eval_batch_size
            n = sum(len(y) for y in self.y)
            fits = self.k * n * row_bytes <= budget_bytes
            if first and fits and (first_layer == "reuse" or first_layer == "auto" and self.k > 1):
                self._setup_reuse(first[0], basis)
        if self.layer is None and first_layer == "reuse":
            raise ValueError("the network does not start with a reusable Linear/Conv layer")
        if device.type == "cpu":
            self._fuse(basis)
        self._bind(basis)
        with torch.no_grad():
            sample = self._load([1.0] * self.k)[0][:2]
            self._bn = BatchNormPass(self.net, sample)
            self._classes = self.net(sample).shape[-1]
            # Points whose logits (float32, all N rows) are reduced together: within 32 MiB.
            self.group = max(1, min(64, 2**23 // (n * self._classes)))
            # The first BN layer's statistics from the cached responses' moments (no pass).
            n_bn = self.data.bn_samples
            bn_parts = [h[:n_bn] for h in self._h] if self._h is not None else None
            if bn_parts and not self._bn.linear_input(bn_parts, self.data.batch_size):
                bn_parts = None
        self._bns, self._coords = self._bn.bns, bool(bn_parts)
        if points_per_pass is None:
            points_per_pass = 16 if device.type == "cuda" and not self._bns else 1
        if points_per_pass > 1 and self._bns:
            raise ValueError("several points per pass need a network without BatchNorm")
        self.points_per_pass = max(1, min(points_per_pass, batch_bytes // (row_bytes * n or 1)))

    def _input_of(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The input ``layer`` receives when the model runs on ``x`` (the pass stops there:
        a whole forward pass per chunk made the set-up cost ~1 ms per point of a 61-point
        curve)."""
        return input_of(self.model, layer, x)

    def _setup_reuse(self, name: str, basis: torch.Tensor) -> None:
        """Cache the first layer's responses to each basis vector, if the shortened network
        (layer replaced by its cached output) gives the full network's logits on a few samples.
        """
        layer = self.model.get_submodule(name)
        keys = {f"{name}.{k}": k for k, _ in layer.named_parameters()}
        own = [{k: unflatten(v, self._like)[f] for f, k in keys.items()} for v in basis]
        parts: list[list[torch.Tensor]] = [[] for _ in own]
        for x in self.x:
            for i in range(0, len(x), self.step):
                z = self._input_of(layer, x[i : i + self.step])
                for part, p in zip(parts, own, strict=True):
                    part.append(functional_call(layer, p, (z,)))
        h = [torch.cat(p) for p in parts]  # k x (N, ...): train rows, then test rows
        rest = copy.deepcopy(self.model)
        rest.set_submodule(name, nn.Identity())
        c = torch.linspace(1.0, -0.5, self.k).tolist()
        point = unflatten(_combine(list(basis), c, torch.empty_like(basis[0])), self._like)
        full = functional_call(self.model, point, (self.x[0][:16],))
        rest_params = {k: v for k, v in point.items() if k not in keys}
        try:
            short = functional_call(
                rest, rest_params, (_combine([t[:16] for t in h], c, torch.empty_like(h[0][:16])),)
            )
        except RuntimeError:  # e.g. shapes: the network reads its input again, differently
            return
        if full.shape == short.shape and torch.allclose(full, short, rtol=1e-3, atol=1e-4):
            self.layer, self.net, self._h = name, rest, h
            self._x = torch.empty_like(h[0])  # the combined response, rewritten at every point

    @torch.no_grad()
    def _fuse(self, basis: torch.Tensor) -> None:
        """Fuse BatchNorm runs (:mod:`landscape.evalnet`) if the network then gives the same
        logits at the basis' first point on a few samples."""
        net = copy.deepcopy(self.net)
        if not fuse_batchnorm(net):
            return
        x = (self._h[0] if self._h is not None else self.x[0])[:16]
        names = set(param_names(net))
        params = {n: v for n, v in unflatten(basis[0], self._like).items() if n in names}
        want, got = (functional_call(m, params, (x,)) for m in (self.net, net))
        if want.shape == got.shape and torch.allclose(want, got, rtol=1e-4, atol=1e-5):
            self.net = net

    def _bind(self, basis: torch.Tensor) -> None:
        """Make the network's parameters views of one flat vector that each point overwrites."""
        offsets, start = {}, 0
        for n, t in self._like.items():
            offsets[n] = (start, t.numel())
            start += t.numel()
        names = param_names(self.net)
        self._sizes = [offsets[n][1] for n in names]
        self._rows = [
            torch.cat([v[s : s + k] for s, k in (offsets[n] for n in names)] or [v[:0]])
            for v in basis
        ]  # k x (P_net,)
        self._flat = torch.empty_like(self._rows[0])
        for (n, p), view in zip(
            list(self.net.named_parameters()), self._flat.split(self._sizes), strict=True
        ):
            mod, _, leaf = n.rpartition(".")
            setattr(self.net.get_submodule(mod), leaf, nn.Parameter(view.view_as(p), False))
        self._params = dict(self.net.named_parameters())

    def _load(self, coords: Sequence[float]) -> list[torch.Tensor]:
        """Write the point's parameters; return the network's train and test inputs there."""
        c = [float(v) for v in coords]
        if len(c) != self.k:
            raise ValueError(f"{len(c)} coordinates for a basis of {self.k} vectors")
        _combine(self._rows, c, self._flat)
        if self._h is None:
            return self.x
        x = _combine(self._h, c, self._x)  # (N, ...) first-layer output at the point
        return [x[: len(self.y[0])], x[len(self.y[0]) :]]

    def _recalibrate(self, x_train: torch.Tensor, coords: Sequence[float]) -> None:
        """Fresh BN statistics from the first ``bn_samples`` rows, ``batch_size`` per batch."""
        c = [float(v) for v in coords] if self._coords else ()
        self._bn(x_train[: self.data.bn_samples], self.data.batch_size, self.step, c)

    def _result(self, sums: Sequence[torch.Tensor]) -> dict[str, float]:
        """{metric: value} from the float64 statistic sums of the train and test sets."""
        out = {}
        for split, s, y in zip(("train", "test"), sums, self.y, strict=True):
            out |= {f"{split}_{k}": v for k, v in values(s, len(y)).items()}
        return out

    @torch.no_grad()
    def __call__(self, coords: Sequence[float]) -> dict[str, float]:
        """All :data:`METRICS` at ``sum_j coords[j] * basis[j]``, BN recalibrated there."""
        return self.many(np.asarray(coords, dtype=float)[None])[0]

    def _logits_at(self, coords: Sequence[float], out: torch.Tensor) -> None:
        """The logits of all rows (train, then test) at the point, into ``out`` (N, classes)."""
        xs = self._load(coords)
        if self._bns:
            self._recalibrate(xs[0], coords)
        # With the first layer reused, train and test rows are one buffer: one pass over both.
        i = 0
        for x in [self._x] if self._h is not None else xs:
            for xb in x.split(self.step):
                out[i : i + len(xb)] = self.net(xb)
                i += len(xb)

    @torch.no_grad()
    def buffers(self, coords: Sequence[float]) -> Named:
        """Fresh BN statistics (all of the model's buffers) at the point ``coords``."""
        xs = self._load(coords)
        if self._bns:
            self._recalibrate(xs[0], coords)
        return {n: b.detach().clone() for n, b in self.net.named_buffers()}

    @torch.no_grad()
    def many(self, coords: np.ndarray) -> list[dict[str, float]]:
        """Metrics at each row of ``coords`` (n, k): the numbers of calling the evaluator on
        each row. With ``points_per_pass`` > 1, that many points per vmapped pass; else one
        point per pass and the metrics of up to :attr:`group` points reduced at once (per
        point, their ~15 tiny operations cost a digits MLP point 0.1 ms)."""
        coords = np.asarray(coords, dtype=float).reshape(len(coords), -1)
        out: list[dict[str, float]] = []
        if self.points_per_pass > 1:
            for i in range(0, len(coords), self.points_per_pass):
                out += self._pass(coords[i : i + self.points_per_pass])
            return out
        for i in range(0, len(coords), self.group):
            block = coords[i : i + self.group]
            if self._logits is None or len(self._logits) < len(block):
                self._logits = self._flat.new_empty(len(block), len(self._y), self._classes)
            logits = self._logits[: len(block)]  # (points, N, classes)
            for c, rows in zip(block, logits, strict=True):
                self._logits_at(c, rows)
            out += [self._result(s) for s in chunk_sums(logits, self._y, len(self.y[0]))]
        return out

    def _pass(self, coords: np.ndarray) -> list[dict[str, float]]:
        """One vmapped forward pass over all samples at the points ``coords`` (kp, k)."""
        c = torch.as_tensor(coords, dtype=self._flat.dtype, device=self._flat.device)
        kp = len(c)
        flat = c @ torch.stack(self._rows)  # (kp, P_net)
        pieces = flat.split(self._sizes, 1)
        params = {
            n: t.reshape(kp, *p.shape)
            for (n, p), t in zip(self._params.items(), pieces, strict=True)
        }
        xs, dim = self.x, None
        if self._h is not None:
            x = sum(c[:, j].view(kp, *[1] * h.ndim) * h for j, h in enumerate(self._h))
            xs, dim = [x[:, : len(self.y[0])], x[:, len(self.y[0]) :]], 0  # (kp, rows, ...)

        def logits_of(p: Named, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, p, (xb,))

        sums = []
        for x, y in zip(xs, self.y, strict=True):
            logits = vmap(logits_of, in_dims=(0, dim))(params, x)  # (kp, rows, classes)
            sums.append(chunk_sums(logits, y)[:, 0])  # (kp, WIDTH)
        return [self._result([s[i] for s in sums]) for i in range(kp)]


@contextmanager
def _cpu_policy(model: nn.Module, data: EvalData) -> Iterator[None]:
    """The evaluation's CPU settings, entered before the evaluator is built (its set-up took 4x
    longer on two contended threads): :func:`small_model_threads`, and subnormal floats
    flushed to zero (the sparse gRDA network's activations produce them; the digits CNN's
    points took 1.35x longer without; values below 1.2e-38 become 0). torch has no getter for
    the flush mode: it is switched off again afterwards, its default."""
    x = data.x_train
    if x.device.type != "cpu":
        yield
        return
    p = next(model.parameters(), None)
    if p is not None and p.device != x.device:
        model = copy.deepcopy(model).to(x.device)
    with small_model_threads(model, x):
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)


def evaluate_point(model: nn.Module, params: Named, data: EvalData) -> dict[str, float]:
    """All :data:`METRICS` at one weight point (named parameters), BN recalibrated there."""
    with _cpu_policy(model, data):
        return Evaluator(model, data, [params])([1.0])


def bn_statistics(model: nn.Module, params: Named, data: EvalData) -> Named:
    """Fresh BN buffers at a weight point: cumulative average over ``data.batch_size``
    batches of the first ``data.bn_samples`` training samples (all other buffers copied)."""
    with _cpu_policy(model, data):
        return Evaluator(model, data, [params], first_layer="plain").buffers([1.0])


def _resumed(store: Store | None, kind: str, key: str, n: int) -> tuple[dict, np.ndarray]:
    """({metric: (n,)}, done mask) from the store's partial log, or all NaN / False."""
    out = {m: np.full(n, np.nan) for m in METRICS}
    done = np.zeros(n, dtype=bool)
    partial = store.load_partial(kind, key) if store is not None and key else None
    if partial is not None:
        index, values = partial
        # A log of other metrics (older code) or other points starts over.
        if set(values) == set(METRICS) and ((index >= 0) & (index < n)).all():
            for m in METRICS:
                out[m][index] = values[m]
            done[index] = True
    return out, done


def _append(store: Store, kind: str, key: str, new: list[int], out: dict) -> None:
    """Append the points evaluated since the last save to the partial log (only those)."""
    if new:
        store.append_partial(kind, key, np.asarray(new), {m: out[m][new] for m in METRICS})
        new.clear()


def _in_calls(ev: Evaluator, coords: np.ndarray, todo: list[int]) -> Iterator[tuple[list, list]]:
    """(indices, their metrics) per call of ``ev.many``: ``points_per_pass`` points of a vmapped
    pass, else as many as take ~0.2 s (progress and partial saves stay live)."""
    g, size = 0, ev.points_per_pass
    while g < len(todo):
        idx, start = todo[g : g + size], time.perf_counter()
        rows = ev.many(coords[idx])
        g, took = g + len(idx), (time.perf_counter() - start) / len(idx)
        if ev.points_per_pass == 1:
            size = max(1, min(ev.group, int(0.2 / max(took, 1e-6))))
        yield idx, rows


def evaluate_points(
    model: nn.Module,
    basis: Sequence[Named] | torch.Tensor,
    coords: np.ndarray,
    data: EvalData,
    *,
    progress: Progress | None = None,
    store: Store | None = None,
    kind: str = "",
    key: str = "",
    shard: tuple[int, int] = (0, 1),
    save_every_s: float = 2.0,
    stage: str = "evaluating points",
    points_per_pass: int | None = None,
) -> dict[str, np.ndarray]:
    """All :data:`METRICS` at the points ``coords @ basis``, resumable and shardable.

    Args:
        model: the architecture (its weights and buffers are neither used nor changed).
        basis, points_per_pass: as in :class:`Evaluator`.
        coords: (n, k) coordinates of the n points.
        data, progress: evaluation data; ``progress(done, total, stage)`` callback.
        store, kind, key: new points are appended to the partial log under (kind, key)
            every ``save_every_s`` seconds; a re-run resumes from it.
        shard: (rank, world): only points i % world == rank; the others stay NaN.
        stage: text shown with the progress.

    Returns:
        ``{metric: (n,)}`` for the metrics in :data:`METRICS`, plus ``done`` (bool mask).
    """
    coords = np.asarray(coords, dtype=float).reshape(len(coords), -1)  # (n, k)
    n, (rank, world) = len(coords), shard
    resume, (out, done) = store is not None and bool(key), _resumed(store, kind, key, n)
    mine = range(rank, n, world)
    todo = [i for i in mine if not done[i]]
    count = len(mine) - len(todo)
    if progress is not None and count:
        progress(count, len(mine), stage)
    if not todo:  # everything resumed
        return {**out, "done": done}
    last_save, new = time.monotonic(), []
    with _cpu_policy(model, data):
        ev = Evaluator(model, data, basis, points_per_pass=points_per_pass)
        for idx, rows in _in_calls(ev, coords, todo):
            for i, metrics in zip(idx, rows, strict=True):
                for m in METRICS:
                    out[m][i] = metrics[m]
                done[i] = True
                new.append(i)
                count += 1
                if progress is not None:
                    progress(count, len(mine), stage)
            if resume and time.monotonic() - last_save > save_every_s:
                _append(store, kind, key, new, out)
                last_save = time.monotonic()
    if resume:
        _append(store, kind, key, new, out)
    return {**out, "done": done}
