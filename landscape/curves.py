"""Bezier curves between two minima (Garipov et al. 2018): fit the bends, evaluate along paths.

A curve of order k between weight points w_0 (checkpoint A) and w_k (checkpoint B) with bends
w_1..w_{k-1} is phi(t) = sum_i C(k,i) t^i (1-t)^(k-i) w_i, t in [0, 1]. The endpoints are
fixed, the bends start on the straight line and are fitted by minimising E_{t~U(0,1)}
loss(phi(t)) with t drawn per mini-batch. Any ``nn.Module`` works: points are named parameter
dicts fed through ``torch.func.functional_call``; no layer is rewritten. Buffers (BatchNorm
running statistics) are never interpolated: during fitting BN uses batch statistics, and every
evaluated point gets statistics recomputed from training data (:mod:`landscape.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call

from landscape.checkpoints import Checkpoint, CheckpointError, checkpoint_dataset
from landscape.data import Dataset, batches
from landscape.evaluate import (
    METRICS,
    EvalData,
    channels_last,
    evaluate_points,
    small_model_threads,
)
from landscape.models import prunable_names
from landscape.params import Named, flatten, has_batchnorm, sparsity, split_state, unflatten
from landscape.progress import Progress
from landscape.store import Store, Stored, result_key
from landscape.train import lr_factor

__all__ = [
    "PATH_METRICS",
    "BezierCurve",
    "CurveConfig",
    "PathResult",
    "bernstein",
    "curve_study",
    "evaluate_path",
    "fit_curve",
    "load_curve",
    "save_curve",
    "summarize",
]

PATH_METRICS = (*METRICS, "weight_norm", "sparsity", "sparsity_small")
SMALL = 1e-3  # |w| below this counts as "small" in sparsity_small
_CURVE_FORMAT = "landscape-curve"
_CURVE_VERSION = 1
_FIT_FIELDS = ("order", "epochs", "lr", "momentum", "weight_decay", "batch_size", "lr_schedule")


@dataclass
class CurveConfig:
    """How a curve between two checkpoints is fitted and evaluated (stored with the result)."""

    order: int = 2  # Bezier order k: k - 1 trainable bends; 1 is the straight line
    epochs: int = 20  # passes over the training data while fitting the bends; 0: no fit
    lr: float = 0.05  # SGD learning rate of the bends
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty on the bends (the endpoints are fixed)
    batch_size: int = 128  # mini-batch size of the fit; one t ~ U(0, 1) per mini-batch
    lr_schedule: str = "paper"  # const, or paper: const to 50%, linear to 1% at 90%
    seed: int = 0  # batch order and the t drawn per mini-batch
    points: int = 61  # evaluated values of t, evenly spaced over [0, 1]
    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    data_root: str | None = None  # folder with the mnist / cifar10 files of the endpoints
    device: str = "cpu"  # cpu or cuda

    def check(self) -> None:
        """Raise ValueError on the first invalid field."""
        if self.order < 1:
            raise ValueError(f"order must be >= 1 (1 is the straight line), got {self.order}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.points < 2:
            raise ValueError(f"points must be >= 2 (t = 0 and t = 1), got {self.points}")
        if self.bn_subset is not None and self.bn_subset < 1:
            raise ValueError(f"bn_subset must be >= 1, got {self.bn_subset}")
        lr_factor(self.lr_schedule, 0.0)  # raises on an unknown schedule name


def bernstein(k: int, t: torch.Tensor | float | list[float]) -> torch.Tensor:
    """Bernstein basis of degree ``k`` at the values ``t``.

    Args:
        k: degree (the curve's order), >= 0.
        t: values in [0, 1]: a number, a list or a 1-d tensor.

    Returns:
        (len(t), k + 1) tensor with entries C(k, i) t^i (1 - t)^(k - i); rows sum to 1.
    """
    if k < 0:
        raise ValueError(f"degree must be >= 0, got {k}")
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()).reshape(-1, 1)  # (n, 1)
    i = torch.arange(k + 1, device=t.device)  # (k + 1,)
    binom = torch.tensor([math.comb(k, j) for j in range(k + 1)], dtype=t.dtype, device=t.device)
    # pow(0, 0) == 1, so the endpoints get exactly (1, 0, ..., 0) and (0, ..., 0, 1).
    return binom * t**i * (1 - t) ** (k - i)  # (n, k + 1)


class BezierCurve:
    """A Bezier curve in weight space with fixed endpoints and trainable bends.

    The control points are kept as flat vectors in the order of ``names``; the named dicts
    returned by :meth:`point` and :attr:`bends` are views into them.

    Args:
        start: named parameters at t = 0 (checkpoint A).
        end: named parameters at t = 1 (checkpoint B), same names and shapes.
        bends: the k - 1 inner control points as named dicts; None: ``order - 1`` bends
            evenly spaced on the straight line (where the fit starts).
        order: the order k when ``bends`` is None (default 2); ignored otherwise.

    Attributes:
        names: parameter names, the order of the flat vectors.
        ends: (2, P) the fixed endpoints; inner: (k - 1, P) the bends (trained by fit_curve).
        history: per-epoch mean training loss of the fit (empty if not fitted).
    """

    def __init__(
        self,
        start: Named,
        end: Named,
        bends: list[Named] | None = None,
        *,
        order: int = 2,
    ):
        if list(start) != list(end) or any(start[n].shape != end[n].shape for n in start):
            raise ValueError("the endpoints must have the same parameter names and shapes")
        self.names = list(start)
        self._like = {n: start[n].detach() for n in self.names}
        a = flatten(start, self.names).detach()
        b = flatten(end, self.names).detach()
        self.ends = torch.stack([a, b])  # (2, P)
        if bends is None:
            if order < 1:
                raise ValueError(f"order must be >= 1 (1 is the straight line), got {order}")
            s = torch.arange(1, order, dtype=a.dtype, device=a.device)[:, None] / order
            inner = (1 - s) * a + s * b  # (k - 1, P)
        elif bends:
            inner = torch.stack([flatten(w, self.names).to(a) for w in bends])
        else:
            inner = a.new_zeros((0, a.numel()))  # order 1: the straight line
        self.inner = inner.detach().clone()  # (k - 1, P), the trainable part
        self.history: list[float] = []  # per-epoch mean training loss of the fit

    @property
    def order(self) -> int:
        return self.inner.shape[0] + 1

    @property
    def start(self) -> Named:
        return unflatten(self.ends[0], self._like)

    @property
    def end(self) -> Named:
        return unflatten(self.ends[1], self._like)

    @property
    def bends(self) -> list[Named]:
        """The inner control points as named dicts (detached views)."""
        return [unflatten(w, self._like) for w in self.inner.detach()]

    def to(self, device: str | torch.device) -> BezierCurve:
        """Move the control points to ``device`` (in place); returns self."""
        self.ends = self.ends.to(device)
        self.inner = self.inner.detach().to(device)
        self._like = {n: v.to(device) for n, v in self._like.items()}
        return self

    def controls(self) -> torch.Tensor:
        """(k + 1, P) control points w_0..w_k as flat vectors (differentiable in the bends)."""
        return torch.cat([self.ends[:1], self.inner, self.ends[1:]])

    def flat_points(self, t: torch.Tensor | float | list[float]) -> torch.Tensor:
        """phi at the values ``t`` as flat vectors, (len(t), P)."""
        t = torch.as_tensor(t, dtype=self.ends.dtype).reshape(-1)
        if not bool(((t >= 0) & (t <= 1)).all()):  # also catches NaN
            bad = t[~((t >= 0) & (t <= 1))][0].item()
            raise ValueError(f"t must be in [0, 1], got {bad}")
        coeffs = bernstein(self.order, t).to(self.ends)  # (n, k + 1)
        return coeffs @ self.controls()  # (n, P)

    def point(self, t: float | torch.Tensor) -> Named:
        """The weight point phi(t) as named tensors (views of one flat vector).

        Raises:
            ValueError: t outside [0, 1].
        """
        return unflatten(self.flat_points(t)[0], self._like)


def _endpoint_model(a: Checkpoint, b: Checkpoint) -> nn.Module:
    """The shared architecture of two endpoints; ValueError if they differ."""
    if a.arch != b.arch:
        raise ValueError(
            f"endpoints have different architectures: {a.name or 'A'} is {json.dumps(a.arch)}, "
            f"{b.name or 'B'} is {json.dumps(b.arch)}"
        )
    if set(a.state) != set(b.state):
        diff = sorted(set(a.state) ^ set(b.state))
        raise ValueError(f"endpoints have different tensors: {', '.join(diff[:5])}")
    for n, v in a.state.items():
        if v.shape != b.state[n].shape:
            raise ValueError(
                f"endpoints have different shapes for {n}: "
                f"{tuple(v.shape)} vs {tuple(b.state[n].shape)}"
            )
    return a.build_model()


def _endpoint_params(a: Checkpoint, b: Checkpoint) -> tuple[nn.Module, Named, Named]:
    model = _endpoint_model(a, b)
    return model, split_state(model, a.state)[0], split_state(model, b.state)[0]


def fit_curve(
    a: Checkpoint,
    b: Checkpoint,
    cfg: CurveConfig,
    data: Dataset,
    *,
    progress: Progress | None = None,
) -> BezierCurve:
    """Fit the bends of a Bezier curve from ``a`` to ``b`` on the training data.

    Minimises the mean cross-entropy at phi(t), t ~ U(0, 1) drawn per mini-batch, with SGD
    (momentum, weight decay on the bends) under ``cfg.lr_schedule``. BatchNorm layers run in
    train mode (batch statistics).

    Args:
        a, b: the endpoints (same architecture).
        cfg: order, epochs, lr, momentum, weight_decay, batch_size, lr_schedule, seed, device.
        data: the training data (``x_train``, ``y_train``).
        progress: ``progress(step, total, "fitting curve")`` callback.

    Returns:
        The fitted curve on ``cfg.device``; ``curve.history`` holds the per-epoch mean loss.
    """
    cfg.check()
    model, pa, pb = _endpoint_params(a, b)
    device = torch.device(cfg.device)
    model.to(device)
    curve = BezierCurve(pa, pb, order=cfg.order).to(device)
    if cfg.order == 1 or cfg.epochs == 0:
        return curve
    curve.inner.requires_grad_()
    opt = torch.optim.SGD(
        [curve.inner], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    total = cfg.epochs * -(-len(data.y_train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.lr_schedule, step / total)
    )
    x, y = channels_last(data.x_train.to(device)), data.y_train.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    fit = _Fit(model, curve, opt, sched, gen, progress, total)
    with small_model_threads(model, x):
        model.train()
        for _ in range(cfg.epochs):
            curve.history.append(fit.epoch(x, y, cfg.batch_size))
    curve.inner = curve.inner.detach()
    return curve


@dataclass
class _Fit:
    """State of one curve fit: model, curve, optimizer, schedule, random stream, progress."""

    model: nn.Module
    curve: BezierCurve
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    progress: Progress | None
    total: int
    step: int = 0

    def __post_init__(self) -> None:
        # Scratch buffers: BN updates running statistics in train mode; they are never used.
        self.buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
        self.skip_single = has_batchnorm(self.model)  # no batch statistics from one sample

    def epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
        """One pass over (x, y) with a fresh t per mini-batch; returns the mean loss."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        seen = 0
        for xb, yb in batches(x, y, batch_size, shuffle=True, generator=self.gen):
            t = torch.rand((), generator=self.gen)
            self.step += 1  # counted even when skipped, so the schedule's length holds
            if self.skip_single and len(yb) == 1:
                continue
            logits = functional_call(self.model, (self.curve.point(t), self.buffers), (xb,))
            loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
            if self.progress is not None:
                self.progress(self.step, self.total, "fitting curve")
        return float(loss_sum) / max(seen, 1)


def _curve_hash(curve: BezierCurve) -> str:
    """Content hash of a curve's control points (names, shapes and bytes)."""
    h = hashlib.sha256(json.dumps([curve.names, list(curve.inner.shape)]).encode())
    h.update(curve.controls().detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_curve(
    path: str | Path, curve: BezierCurve, a: Checkpoint, b: Checkpoint, cfg: CurveConfig
) -> Path:
    """Write a curve's bends to a ``.safetensors`` file, atomically.

    The tensors are ``bend{i}.{param name}`` (i = 1..k-1); the metadata holds the endpoints'
    hashes and names, the architecture, the config and the fit history. The endpoints are not
    stored: :func:`load_curve` takes them and checks their hashes.

    Returns:
        The path written.
    """
    path = Path(path)
    tensors = {
        f"bend{i}.{n}": v.detach().cpu().contiguous().clone()
        for i, bend in enumerate(curve.bends, start=1)
        for n, v in bend.items()
    }
    meta = {
        "format": _CURVE_FORMAT,
        "version": _CURVE_VERSION,
        "order": curve.order,
        "names": curve.names,
        "endpoints": {"a": {"hash": a.hash, "name": a.name}, "b": {"hash": b.hash, "name": b.name}},
        "arch": a.arch,
        "config": asdict(cfg),
        "history": curve.history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={_CURVE_FORMAT: json.dumps(meta)})
    os.replace(tmp, path)
    return path


def _read_curve(
    path: Path, *, tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such curve file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(_CURVE_FORMAT)
            names = list(f.keys()) if tensors else []
            loaded = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file: {err}") from err
    try:
        meta = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: curve metadata is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != _CURVE_FORMAT:
        raise CheckpointError(f"{path}: not a curve file (no {_CURVE_FORMAT} metadata)")
    if meta.get("version", 0) > _CURVE_VERSION:
        raise CheckpointError(f"{path}: curve format {meta['version']} is newer than this code")
    return loaded, meta


def curve_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a curve file (order, endpoints, config), without reading its tensors."""
    return _read_curve(Path(path), tensors=False)[1]


def load_curve(path: str | Path, a: Checkpoint, b: Checkpoint) -> BezierCurve:
    """Read a curve written by :func:`save_curve` and attach it to its endpoints.

    Args:
        path: the ``.safetensors`` curve file.
        a, b: the endpoints it was fitted between (checked by content hash, in order).

    Returns:
        The curve on the CPU, with its fit history.

    Raises:
        CheckpointError: not a curve file, endpoint hashes that do not match, or bends that do
            not fit the endpoints' parameters.
    """
    path = Path(path)
    tensors, meta = _read_curve(path)
    ends = meta.get("endpoints") or {}
    want = (ends.get("a", {}).get("hash"), ends.get("b", {}).get("hash"))
    if want != (a.hash, b.hash):
        swapped = (
            " (the endpoints are swapped: give them in the other order)"
            if want
            == (
                b.hash,
                a.hash,
            )
            else ""
        )
        raise CheckpointError(
            f"{path}: curve was fitted between endpoints {want[0]} and {want[1]}, "
            f"not {a.hash} ({a.name}) and {b.hash} ({b.name}){swapped}"
        )
    model, pa, pb = _endpoint_params(a, b)
    order = meta.get("order")
    if not isinstance(order, int) or order < 1:
        raise CheckpointError(f"{path}: invalid curve order {order!r}")
    bends = []
    for i in range(1, order):
        bend = {}
        for n, ref in pa.items():
            v = tensors.get(f"bend{i}.{n}")
            if v is None or v.shape != ref.shape or not v.is_floating_point():
                raise CheckpointError(f"{path}: bend {i} lacks a {tuple(ref.shape)} tensor {n}")
            if not torch.isfinite(v).all():
                raise CheckpointError(f"{path}: non-finite values in bend {i} {n}")
            bend[n] = v.float()
        bends.append(bend)
    if len(tensors) != (order - 1) * len(pa):
        raise CheckpointError(f"{path}: unexpected tensors for an order-{order} curve")
    curve = BezierCurve(pa, pb, bends)
    curve.history = [float(v) for v in meta.get("history", [])]
    return curve


@dataclass
class PathResult:
    """Metrics along a path phi(t) at the values ``t``.

    Attributes:
        t: (n,) values of t.
        train_loss, train_acc, test_loss, test_acc: (n,) with BN recalibrated at each point.
        weight_norm: (n,) L2 norm of all parameters at phi(t).
        sparsity: (n,) fraction of exactly-zero prunable weights.
        sparsity_small: (n,) fraction of prunable weights with |w| < 1e-3.
        layer_sparsity: (n, layers) fraction of exact zeros per prunable layer.
        layers: names of the prunable layers (columns of ``layer_sparsity``).
        segment: (n,) |phi(t_i) - phi(t_{i-1})| (0 for i = 0); sums to the path length.
    """

    t: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    weight_norm: np.ndarray
    sparsity: np.ndarray
    sparsity_small: np.ndarray
    layer_sparsity: np.ndarray
    layers: list[str] = field(default_factory=list)
    segment: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays as ``{prefix_metric: array}`` (``t`` and ``layers`` not included)."""
        out = {f"{prefix}_{m}": getattr(self, m) for m in PATH_METRICS}
        out[f"{prefix}_layer_sparsity"] = self.layer_sparsity
        out[f"{prefix}_segment"] = self.segment
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], prefix: str, layers: list[str]
    ) -> PathResult:
        """Inverse of :meth:`arrays` (e.g. ``curve_study(...).arrays`` with "curve"/"line")."""
        return cls(
            t=arrays["t"],
            **{m: arrays[f"{prefix}_{m}"] for m in PATH_METRICS},
            layer_sparsity=arrays[f"{prefix}_layer_sparsity"],
            layers=list(layers),
            segment=arrays[f"{prefix}_segment"],
        )


@torch.no_grad()
def evaluate_path(
    model: nn.Module,
    curve: BezierCurve,
    t: np.ndarray | list[float] | int,
    data: EvalData,
    *,
    progress: Progress | None = None,
    store: Store | None = None,
    kind: str = "",
    key: str = "",
    stage: str = "evaluating path",
) -> PathResult:
    """Loss, accuracy, weight norm and sparsity at phi(t) for each t.

    Args:
        model: the architecture (its weights are not used).
        curve: the path (a :class:`BezierCurve`; order 1 is the straight line).
        t: values in [0, 1], or a number n of evenly spaced values from 0 to 1.
        data: evaluation data (on the device to evaluate on).
        progress: ``progress(done, total, stage)`` callback.
        store, kind, key: keep partial results under (kind, key) so a killed run resumes.
        stage: text shown with the progress.

    Returns:
        A :class:`PathResult`.
    """
    ts = np.linspace(0.0, 1.0, t) if isinstance(t, int) else np.asarray(t, dtype=float)
    flat = curve.flat_points(torch.as_tensor(ts)).to(data.x_train.device)  # (n, P)
    like = curve.start
    metrics = evaluate_points(
        model,
        lambda i: unflatten(flat[i], like),
        len(ts),
        data,
        progress=progress,
        store=store,
        kind=kind,
        key=key,
        stage=stage,
    )
    prunable = prunable_names(model)
    sp = [sparsity(unflatten(flat[i], like), prunable, tol=SMALL) for i in range(len(ts))]
    segment = np.zeros(len(ts))
    segment[1:] = (flat[1:] - flat[:-1]).double().norm(dim=1).cpu().numpy()
    return PathResult(
        t=ts,
        **{m: metrics[m] for m in METRICS},
        weight_norm=flat.double().norm(dim=1).cpu().numpy(),
        sparsity=np.array([s["zero"] for s in sp]),
        sparsity_small=np.array([s["small"] for s in sp]),
        layer_sparsity=np.array([[s["layers"][n] for n in prunable] for s in sp]).reshape(
            len(ts), len(prunable)
        ),
        layers=prunable,
        segment=segment,
    )


def summarize(path: PathResult) -> dict[str, Any]:
    """One-screen numbers of a path; the t grid must start at 0 and end at 1.

    Returns:
        ``{"metrics": {m: {"start", "end", "min", "t_min", "max", "t_max"}} for m in
        PATH_METRICS, "barrier": {"train_loss" | "test_loss": {"height", "t"}},
        "length": sum of |phi(t_i+1) - phi(t_i)|, "best_test_acc": {"t", "value"} (first t of
        the highest test accuracy), "midpoint": {"t": the grid t closest to 0.5, m: value}}``.
        The barrier is max_t [loss(t) - ((1 - t) loss(0) + t loss(1))]: 0 when the path is
        never above the chord between its ends.
    """
    t = np.asarray(path.t, dtype=float)
    if len(t) < 2 or t[0] != 0.0 or t[-1] != 1.0:
        raise ValueError("summarize needs a t grid from 0 to 1")
    metrics = {}
    for m in PATH_METRICS:
        v = np.asarray(getattr(path, m), dtype=float)
        lo, hi = int(np.nanargmin(v)), int(np.nanargmax(v))
        metrics[m] = {
            "start": float(v[0]),
            "end": float(v[-1]),
            "min": float(v[lo]),
            "t_min": float(t[lo]),
            "max": float(v[hi]),
            "t_max": float(t[hi]),
        }
    barrier = {}
    for m in ("train_loss", "test_loss"):
        v = np.asarray(getattr(path, m), dtype=float)
        excess = v - ((1 - t) * v[0] + t * v[-1])
        i = int(np.nanargmax(excess))
        barrier[m] = {"height": float(excess[i]), "t": float(t[i])}
    best = int(np.nanargmax(path.test_acc))
    mid = int(np.argmin(np.abs(t - 0.5)))
    return {
        "metrics": metrics,
        "barrier": barrier,
        "length": float(np.sum(path.segment)),
        "best_test_acc": {"t": float(t[best]), "value": float(path.test_acc[best])},
        "midpoint": {"t": float(t[mid]), **{m: float(getattr(path, m)[mid]) for m in PATH_METRICS}},
    }


def _joins(curve: BezierCurve, pa: Named, pb: Named) -> bool:
    """Whether ``curve`` runs from the weight point ``pa`` to ``pb`` exactly."""
    if sorted(curve.names) != sorted(pa):
        return False
    ends = curve.ends.detach().cpu()
    # By name: a checkpoint read from another file may list the same tensors in another order.
    return torch.equal(ends[0], flatten(pa, curve.names)) and torch.equal(
        ends[1], flatten(pb, curve.names)
    )


def _endpoint_data(a: Checkpoint, b: Checkpoint, cfg: CurveConfig) -> Dataset:
    """The data set named in the endpoints' metadata (they must agree)."""
    da, db = a.meta.get("data"), b.meta.get("data")
    for ck, d in ((a, da), (b, db)):
        if not isinstance(d, dict) or "name" not in d:
            raise ValueError(f"{ck.name or 'checkpoint'}: metadata names no data set")
    if (da["name"], da.get("split_seed", 0)) != (db["name"], db.get("split_seed", 0)):
        raise ValueError(f"endpoints were trained on different data: {da} vs {db}")
    return checkpoint_dataset(a, data_root=cfg.data_root)


def _fit_inputs(a: Checkpoint, b: Checkpoint, cfg: CurveConfig, data: Dataset) -> dict:
    fit = {f: getattr(cfg, f) for f in _FIT_FIELDS}
    return {"a": a.hash, "b": b.hash, "data": data.describe(), "fit": fit, "seed": cfg.seed}


def _stored_fit(
    a: Checkpoint,
    b: Checkpoint,
    cfg: CurveConfig,
    data: Dataset,
    store: Store,
    progress: Progress | None,
) -> tuple[BezierCurve, Path]:
    """The fitted curve for (a, b, data, fit config): from the store, or fitted and saved."""
    key = result_key("curve_fit", _fit_inputs(a, b, cfg, data))
    path = store.root / "curve" / f"fit-{key}.safetensors"
    with store.lock("curve_fit", key):
        if path.exists():
            try:
                return load_curve(path, a, b), path
            except CheckpointError as err:
                warnings.warn(f"refitting: stored curve is unusable: {err}", stacklevel=3)
        curve = fit_curve(a, b, cfg, data, progress=progress)
        save_curve(path, curve, a, b, cfg)
    return curve, path


def _given_curve(curve: BezierCurve, a: Checkpoint, b: Checkpoint, cfg: CurveConfig, store: Store):
    """Copy a given curve into the store (named by its content) so results point inside it."""
    path = store.root / "curve" / f"given-{_curve_hash(curve)}.safetensors"
    if not path.exists():
        save_curve(path, curve, a, b, cfg)
    return path


def curve_study(
    a: Checkpoint,
    b: Checkpoint,
    cfg: CurveConfig,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    curve: BezierCurve | None = None,
) -> Stored:
    """Fit (or reuse) a curve from ``a`` to ``b`` and evaluate it and the straight line.

    The data set comes from the endpoints' metadata. The result is stored under kind "curve",
    keyed by the endpoint hashes, the data (incl. split seed and BN samples) and the config
    (without device); a stored result is returned at once. The fit is stored separately (keyed
    by the fit settings only), so a new ``points`` or ``bn_subset`` reuses it. A killed run
    resumes the evaluation from partial results.

    Args:
        a, b: the endpoints (t = 0 and t = 1), same architecture and data set.
        cfg: the configuration.
        store: the result store (default ``Store()``).
        progress: ``progress(done, total, stage)`` with stages "fitting curve",
            "evaluating curve", "evaluating line".
        curve: a curve fitted earlier (e.g. :func:`load_curve`) to evaluate instead of fitting;
            its content hash enters the key in place of the fit settings.

    Returns:
        :class:`Stored` with ``data``: {"summary": {"curve": summarize(...), "line": ...},
        "curve_file": path of the curve's ``.safetensors`` inside the store, "config":
        asdict(cfg), "endpoints": {"a": {"hash", "name"}, "b": {...}}, "bn_samples": N,
        "layers": prunable layer names, "fit_history": per-epoch mean train loss, "inputs"},
        and ``arrays``: "t", "curve_<m>" and "line_<m>" for m in PATH_METRICS,
        "curve_layer_sparsity" / "line_layer_sparsity" (points, layers), "curve_segment" /
        "line_segment" (see :class:`PathResult`).
    """
    cfg.check()
    store = store if store is not None else Store()
    model, pa, pb = _endpoint_params(a, b)
    if curve is not None and not _joins(curve, pa, pb):
        raise ValueError("the given curve does not run between these endpoints")
    data = _endpoint_data(a, b, cfg)
    evdata = EvalData.from_dataset(data, device=cfg.device, bn_subset=cfg.bn_subset)
    config = {k: v for k, v in asdict(cfg).items() if k != "device"}
    inputs = {
        "a": a.hash,
        "b": b.hash,
        "data": {**data.describe(), **evdata.describe()},
        "config": config,
        "curve": _curve_hash(curve) if curve is not None else None,
    }

    def compute(key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if curve is None:
            fitted, path = _stored_fit(a, b, cfg, data, store, progress)
        else:
            fitted, path = curve, _given_curve(curve, a, b, cfg, store)
        fitted.to(cfg.device)
        line = BezierCurve(pa, pb, order=1).to(cfg.device)
        t = np.linspace(0.0, 1.0, cfg.points)
        tag = _curve_hash(fitted)  # partial results belong to this exact curve
        paths = {}
        for name, c in (("curve", fitted), ("line", line)):
            paths[name] = evaluate_path(
                model,
                c,
                t,
                evdata,
                progress=progress,
                store=store,
                kind="curve",
                key=f"{key}-{name}-{tag}",
                stage=f"evaluating {name}",
            )
        arrays = {"t": t, **paths["curve"].arrays("curve"), **paths["line"].arrays("line")}
        result = {
            "summary": {name: summarize(p) for name, p in paths.items()},
            "curve_file": str(path),
            "config": asdict(cfg),
            "endpoints": {
                "a": {"hash": a.hash, "name": a.name},
                "b": {"hash": b.hash, "name": b.name},
            },
            "bn_samples": evdata.bn_samples,
            "layers": paths["curve"].layers,
            "fit_history": fitted.history,
        }
        return result, arrays

    stored = store.get_or_compute("curve", inputs, compute)
    for leftover in (store.root / "curve").glob(f"{stored.key}-*.partial.npz"):
        leftover.unlink(missing_ok=True)  # the result is safe: its partials are not needed
    return stored
