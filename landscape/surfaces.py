"""2D planes and 1D slices of the loss landscape.

A plane is ``w(alpha, beta) = origin + alpha * u + beta * v`` over the flattened parameters:
through three points (two minima and a curve bend or a third checkpoint; Garipov et al. 2018),
through the PCA of training trajectories, or along two random filter-normalised directions
(Li et al. 2018). A slice is the line ``w(s) = origin + s * d``. Every point gets fresh BatchNorm
statistics, as in :func:`landscape.evaluate.evaluate_point`, and results are stored by the hash
of their inputs (resumable, shardable over processes: see :mod:`landscape.distributed`).

Speed (bench/bench_surfaces.py): points go through ``evaluate_points`` (resume, shards) with
:class:`PlaneEvaluator`, which uses what a plane adds to a list of points: the first layer's
response is combined from three cached ones, and the parameters are one flat vector rewritten
in place. On CPU points are evaluated one at a time (several points per vmapped pass measured
1.5-2x slower here); on GPUs, where a point is a few tiny kernel launches, 16 points share a
vmapped pass (~6x faster on an H200) for networks without BatchNorm.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.checkpoints import Checkpoint, checkpoint_dataset, content_hash, load_checkpoint
from landscape.distributed import current_shard, evaluate_sharded, stored
from landscape.evaluate import METRICS, EvalData, channels_last
from landscape.params import (
    Named,
    flatten,
    has_batchnorm,
    param_names,
    recalibrate_bn,
    split_state,
    unflatten,
)
from landscape.progress import Progress
from landscape.store import Store, Stored

if TYPE_CHECKING:
    from landscape.curves import BezierCurve
    from landscape.hessian import HessianConfig

__all__ = [
    "DIRECTIONS",
    "PCAConfig",
    "Plane",
    "PlaneConfig",
    "PlaneEvaluator",
    "filter_normalize",
    "pca_study",
    "plane_study",
    "plane_through",
    "random_direction",
    "random_plane_study",
    "slice_study",
    "summarize",
]

DIRECTIONS = ("delta", "random", "eigen")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # layers whose output is linear in (W, b)


@dataclass
class PlaneConfig:
    """How a plane (or a slice) is evaluated."""

    grid: int = 21  # points per axis
    margin: float = 0.2  # fraction of the points' extent added on each side of the grid
    points_on_curve: int = 61  # curve points projected into the plane (when a curve is given)
    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files
    points_per_pass: int | None = None  # speed only; None: 16 on GPUs without BN, else 1


@dataclass
class PCAConfig:
    """How the PCA plane of training trajectories is built and evaluated."""

    grid: int = 21  # points per axis
    margin: float = 0.2  # fraction of the trajectories' extent added on each side of the grid
    centre: str = "final"  # "final": final weights of the first run; "mean": snapshots' mean
    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files
    points_per_pass: int | None = None  # speed only; None: 16 on GPUs without BN, else 1


@dataclass
class Plane:
    """The plane ``origin + alpha * u + beta * v`` in parameter space (a line when v = 0).

    Attributes:
        origin, u, v: flat float64 vectors (P,) in the order of ``like``.
        like: named parameters giving names, shapes and dtype of a point (values unused).
    """

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    like: Named

    def flat(self, alpha: float, beta: float = 0.0) -> torch.Tensor:
        """The point at (alpha, beta) as a flat float64 vector (P,)."""
        return self.origin + float(alpha) * self.u + float(beta) * self.v

    def point(self, alpha: float, beta: float = 0.0) -> Named:
        """The point at (alpha, beta) as named parameters (dtype of ``like``)."""
        dtype = next(iter(self.like.values())).dtype
        return unflatten(self.flat(alpha, beta).to(dtype), self.like)

    def coords(self, w: torch.Tensor) -> tuple[float, float]:
        """(alpha, beta) of the projection of flat ``w`` (exact for orthonormal u, v)."""
        d = w.double() - self.origin
        return float(d @ self.u), float(d @ self.v)


def plane_through(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, like: Named) -> Plane:
    """The plane through three flat points with origin w0 and orthonormal u, v.

    u = (w2 - w0) / |w2 - w0|; v = the part of w1 - w0 orthogonal to u, normalised.

    Raises:
        ValueError: w2 equals w0, or w1 lies on the line through w0 and w2.
    """
    w0, w1, w2 = w0.double(), w1.double(), w2.double()
    d = w2 - w0
    if float(d.norm()) == 0.0:
        raise ValueError("the two end points are the same weights; a plane needs distinct points")
    u = d / d.norm()
    e = w1 - w0
    e = e - (e @ u) * u
    if float(e.norm()) <= 1e-9 * float(d.norm()):
        raise ValueError("the third point lies on the line through A and B; no plane is defined")
    return Plane(w0, u, e / e.norm(), like)


def random_direction(like: Named, generator: torch.Generator) -> Named:
    """A Gaussian direction shaped like ``like``, drawn on CPU (same on every device)."""
    return {
        n: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device)
        for n, t in like.items()
    }


def filter_normalize(direction: Named, weights: Named) -> Named:
    """Filter normalisation (Li et al. 2018).

    Each filter of ``direction`` (an output channel of a conv, a row of a linear weight: index
    along dim 0) is rescaled to the norm of the same filter of ``weights``; 1-D parameters
    (biases, BatchNorm) get a zero direction, so the plane never moves them.

    Returns:
        The normalised direction (a new dict, dtype of ``direction``).
    """
    out = {}
    for n, d in direction.items():
        if d.ndim <= 1:
            out[n] = torch.zeros_like(d)
            continue
        d_norm = d.flatten(1).norm(dim=1)  # (filters,)
        w_norm = weights[n].to(d).flatten(1).norm(dim=1)
        scale = w_norm / d_norm.clamp_min(torch.finfo(d.dtype).tiny)
        out[n] = d * scale.view(-1, *[1] * (d.ndim - 1))
    return out


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the first layer's input is captured."""


class PlaneEvaluator:
    """Train/test loss and accuracy at points of a plane, BN recalibrated at every point.

    The numbers of :func:`landscape.evaluate.evaluate_point` at ``plane.point(a, b)``, faster
    (bench/bench_surfaces.py): the first Linear/Conv layer is linear in its weight and bias, so
    its response ``H(a, b) = H0 + a*Hu + b*Hv`` is computed once per plane and combined per
    point, for the BN pass and the evaluation alike (on CPU this beats recomputing both the
    digits MLP's 64-input layer and the CNN's one-channel convolution); the parameters are views
    of one flat vector rewritten in place; train and test share one pass, in chunks that stay
    in the CPU cache; the loss is logsumexp minus the target logit.

    Args:
        model: the architecture (its weights are not used; it is not modified).
        plane: the plane, on the data's device.
        data: evaluation data (BN statistics from ``batch_size`` batches, as evaluate.py).
        first_layer: "auto" (reuse when the network starts with a Linear/Conv layer and the
            three cached responses fit in ``budget_bytes``), "reuse" (error if it cannot) or
            "plain".
        budget_bytes: memory allowed for the cached first-layer responses.
        chunk_bytes: rows per evaluation pass are chosen so that the first layer's output of a
            chunk takes about this much.
        points_per_pass: points per vmapped forward pass in :meth:`many`; None: 16 on GPUs
            for networks without BatchNorm (measured ~6x faster than one at a time on an H200,
            where a point is a handful of tiny kernel launches), else 1 (on CPU vmap measured
            1.5-2x slower than the loop; BN statistics need a pass of their own per point).
        batch_bytes: bounds the first-layer output of a vmapped pass over all points.
    """

    def __init__(
        self,
        model: nn.Module,
        plane: Plane,
        data: EvalData,
        *,
        first_layer: str = "auto",
        budget_bytes: int = 512 * 2**20,
        chunk_bytes: int = 2**20,
        points_per_pass: int | None = None,
        batch_bytes: int = 256 * 2**20,
    ):
        if first_layer not in ("auto", "reuse", "plain"):
            raise ValueError(f"first_layer must be auto, reuse or plain, got {first_layer!r}")
        self.plane, self.data = plane, data
        self.model = copy.deepcopy(model).eval()
        self.x = channels_last(torch.cat([data.x_train, data.x_test]))  # (N, ...): train first
        self.y = torch.cat([data.y_train, data.y_test])
        self.n_train = data.x_train.shape[0]
        self.buffers = {n: b.to(self.x.device) for n, b in self.model.named_buffers()}
        self.layer: str | None = None  # name of the reused first layer
        first = self._first_layer_input()
        if first is not None and not isinstance(self.model.get_submodule(first[0]), _LAYERS):
            first = None  # only Linear/Conv outputs are linear in the layer's parameters
        # Bytes per sample of the first layer's output (or of the input, without such a layer).
        row = self._response(first, self.plane.origin, rows=1) if first else self.x[:1]
        row_bytes = row.numel() * row.element_size()
        self.step = max(1, chunk_bytes // row_bytes)  # rows per forward pass
        if first is not None and first_layer != "plain":
            self._setup_reuse(first, budget_bytes // (3 * row_bytes))
        if self.layer is None and first_layer == "reuse":
            raise ValueError("the network does not start with a reusable Linear/Conv layer")
        self._bind_parameters(self._rest if self.layer is not None else self.model)
        if points_per_pass is None:
            points_per_pass = 16 if self.x.device.type == "cuda" and not self._bn else 1
        if points_per_pass > 1 and self._bn:
            raise ValueError("several points per pass need a network without BatchNorm")
        fit = max(1, batch_bytes // (row_bytes * self.x.shape[0]))
        self.points_per_pass = max(1, min(points_per_pass, fit))

    def _bind_parameters(self, net: nn.Module) -> None:
        """Make ``net``'s parameters views of one flat vector that each point overwrites.

        A point then costs two vector operations (origin + a*u + b*v, written in place) and
        plain module calls: no per-point parameter copies or ``functional_call``.
        """
        self.net = net.to(self.x.device)
        names = param_names(net)
        sizes = [p.numel() for p in net.parameters()]
        offset, start = {}, 0
        for n, t in self.plane.like.items():
            offset[n] = start
            start += t.numel()

        def restrict(vec: torch.Tensor) -> torch.Tensor:
            parts = [vec[offset[n] : offset[n] + k] for n, k in zip(names, sizes, strict=True)]
            return torch.cat(parts).float()

        self._o, self._u, self._v = (
            restrict(t) for t in (self.plane.origin, self.plane.u, self.plane.v)
        )
        self._flat = torch.empty_like(self._o)
        start = 0
        for n, p in list(net.named_parameters()):
            mod, _, leaf = n.rpartition(".")
            view = self._flat[start : start + p.numel()].view_as(p)
            setattr(net.get_submodule(mod), leaf, nn.Parameter(view, requires_grad=False))
            start += p.numel()
        self._params = dict(net.named_parameters())
        self._net_buffers = dict(net.named_buffers())
        self._bn = has_batchnorm(net)

    def _first_layer_input(self) -> tuple[str, torch.Tensor] | None:
        """Name and input of the first module with parameters that the forward pass calls."""
        found: list[tuple[str, torch.Tensor]] = []

        def capture(name: str):
            def hook(_mod: nn.Module, args: tuple) -> None:
                found.append((name, args[0]))
                raise _Stop

            return hook

        hooks = [
            mod.register_forward_pre_hook(capture(name))
            for name, mod in self.model.named_modules()
            if any(True for _ in mod.parameters(recurse=False))
        ]
        try:
            functional_call(self.model, (self.plane.point(0.0), self.buffers), (self.x,))
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()
        return found[0] if found else None

    def _layer_keys(self, name: str) -> dict[str, str]:
        """Full parameter names of layer ``name`` -> the layer's own names."""
        layer = self.model.get_submodule(name)
        return {f"{name}.{k}" if name else k: k for k, _ in layer.named_parameters()}

    @torch.no_grad()
    def _response(
        self, first: tuple[str, torch.Tensor], vec: torch.Tensor, rows: int | None = None
    ) -> torch.Tensor:
        """The first layer's output on its captured input with parameters from flat ``vec``."""
        name, z = first
        p = unflatten(vec.to(z.dtype), self.plane.like)
        local = {k: p[full] for full, k in self._layer_keys(name).items()}
        return functional_call(self.model.get_submodule(name), local, (z[:rows],))

    @torch.no_grad()
    def _setup_reuse(self, first: tuple[str, torch.Tensor], max_rows: int) -> None:
        """Cache the first layer's responses to origin, u and v if they fit (``max_rows``)."""
        name, z = first
        if not name or z.shape[0] > max_rows:  # not name: the whole model is one layer
            return
        h0, hu, hv = (
            self._response(first, t) for t in (self.plane.origin, self.plane.u, self.plane.v)
        )
        rest = copy.deepcopy(self.model)
        rest.set_submodule(name, nn.Identity())
        keys = set(self._layer_keys(name))
        # Modules before the first layer are parameterless (Flatten, ...) and now run on H:
        # check on a few samples that the shortened network gives the full network's logits.
        a, b = 0.7, -0.4
        params = self.plane.point(a, b)
        full = functional_call(self.model, (params, self.buffers), (self.x[:16],))
        rest_params = {k: v for k, v in params.items() if k not in keys}
        try:
            short = functional_call(
                rest, (rest_params, self.buffers), ((h0 + a * hu + b * hv)[:16],)
            )
        except RuntimeError:  # e.g. shapes: the network reads its input again, differently
            return
        if torch.allclose(full, short, rtol=1e-3, atol=1e-4):
            self.layer, self._rest, self._h = name, rest, (h0, hu, hv)
            self._x = torch.empty_like(h0)  # H(a, b), rewritten at every point

    @torch.no_grad()
    def __call__(self, coords: Sequence[float]) -> dict[str, float]:
        """Metrics at ``coords`` = (alpha, beta) (or (s,) on a line).

        Returns:
            {"train_loss", "train_acc", "test_loss", "test_acc"}.
        """
        a, b = (float(coords[0]), float(coords[1]) if len(coords) > 1 else 0.0)
        torch.add(self._o, self._u, alpha=a, out=self._flat).add_(self._v, alpha=b)
        x = self.x
        if self.layer is not None:
            h0, hu, hv = self._h
            x = torch.add(h0, hu, alpha=a, out=self._x).add_(hv, alpha=b)  # (N, layer output)
        if self._bn:
            data = self.data
            fresh = recalibrate_bn(
                self.net, self._params, x[: self.n_train], batch_size=data.batch_size,
                subset=data.bn_subset,
            )  # fmt: skip
            for n, buf in fresh.items():
                self._net_buffers[n].copy_(buf)
        sums = torch.zeros(4, dtype=torch.float64, device=x.device)  # loss, correct: train, test
        step = self.step
        for i in range(0, x.shape[0], step):
            logits = self.net(x[i : i + step])  # (rows, classes)
            y = self.y[i : i + step]
            # Cross-entropy as logsumexp minus the target logit, sharing the max with the
            # prediction: F.cross_entropy + argmax take ~2x longer on 10 classes here.
            top, pred = logits.max(1)
            lse = (logits - top[:, None]).exp_().sum(1).log_().add_(top)
            loss = lse - logits.gather(1, y[:, None]).squeeze(1)
            rows = torch.stack([loss, (pred == y).to(loss.dtype)])  # (2, rows)
            k = max(0, min(self.n_train - i, len(y)))  # rows of this chunk from the train set
            sums[:2] += rows[:, :k].sum(1, dtype=torch.float64)
            sums[2:] += rows[:, k:].sum(1, dtype=torch.float64)
        n_test = x.shape[0] - self.n_train
        s = sums.tolist()
        return {
            "train_loss": s[0] / self.n_train,
            "train_acc": s[1] / self.n_train,
            "test_loss": s[2] / n_test,
            "test_acc": s[3] / n_test,
        }

    @torch.no_grad()
    def many(self, coords: np.ndarray) -> list[dict[str, float]]:
        """Metrics at each row of ``coords`` (k, 2), several points per vmapped pass.

        Same numbers as calling the evaluator on each row (networks without BatchNorm).
        """
        if self._bn:
            raise ValueError("several points per pass need a network without BatchNorm")
        out: list[dict[str, float]] = []
        step = self.points_per_pass
        for i in range(0, len(coords), step):
            out += self._pass(torch.as_tensor(coords[i : i + step], dtype=torch.float64))
        return out

    def _pass(self, coords: torch.Tensor) -> list[dict[str, float]]:
        """One vmapped forward pass over the points ``coords`` (k, 1 or 2)."""
        k, device = coords.shape[0], self._o.device
        ab = torch.zeros(k, 2, dtype=torch.float64)
        ab[:, : coords.shape[1]] = coords
        a, b = ab.T.to(device=device, dtype=self._o.dtype)[:, :, None]  # (k, 1) each
        flat = self._o + a * self._u + b * self._v  # (k, P) stacked points
        names, shapes = list(self._params), [p.shape for p in self._params.values()]
        pieces = flat.split([p.numel() for p in self._params.values()], dim=1)
        params = {n: t.reshape(k, *sh) for n, t, sh in zip(names, pieces, shapes, strict=True)}
        x, x_dim = self.x, None
        if self.layer is not None:
            h0, hu, hv = self._h
            extra = (1,) * (h0.ndim - 1)
            x = h0 + a.view(k, 1, *extra) * hu + b.view(k, 1, *extra) * hv  # (k, N, ...)
            x_dim = 0

        def logits_of(p: Named, xs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, (p, self._net_buffers), (xs,))

        logits = torch.func.vmap(logits_of, in_dims=(0, x_dim))(params, x)  # (k, N, classes)
        top, pred = logits.max(2)
        lse = (logits - top[..., None]).exp_().sum(2).log_().add_(top)
        loss = lse - logits.gather(2, self.y.expand(k, -1)[..., None]).squeeze(2)  # (k, N)
        correct = (pred == self.y).to(loss.dtype)
        n = self.n_train
        parts = (loss[:, :n], correct[:, :n], loss[:, n:], correct[:, n:])
        sums = torch.stack([t.sum(1, dtype=torch.float64) for t in parts], 1).tolist()  # (k, 4)
        n_test = self.y.shape[0] - n
        return [
            {
                "train_loss": s[0] / n,
                "train_acc": s[1] / n,
                "test_loss": s[2] / n_test,
                "test_acc": s[3] / n_test,
            }
            for s in sums
        ]


class _Ahead:
    """``evaluate_fn`` for evaluate_points: this rank's next points, several per pass.

    evaluate_points asks for one index at a time; the first request evaluates it and the
    rank's following ``k - 1`` indices together, later requests are answered from the cache.
    """

    def __init__(self, evaluator: PlaneEvaluator, coords: np.ndarray, stride: int):
        self.evaluator, self.coords, self.stride = evaluator, coords, stride
        self.cache: dict[int, dict[str, float]] = {}

    def __call__(self, i: int) -> dict[str, float]:
        if i not in self.cache:
            k, n = self.evaluator.points_per_pass, len(self.coords)
            idx = list(range(i, min(n, i + k * self.stride), self.stride))
            self.cache.update(zip(idx, self.evaluator.many(self.coords[idx]), strict=True))
        return self.cache.pop(i)


def _eval_data(ckpt: Checkpoint, *, device: str, bn_subset: int | None, data_root: str | None):
    """The checkpoint's data set on ``device``: (Dataset, EvalData)."""
    ds = checkpoint_dataset(ckpt, data_root=data_root)
    return ds, EvalData.from_dataset(ds, device=device, bn_subset=bn_subset)


def _check_same(ckpts: Sequence[Checkpoint]) -> None:
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


def _label(ckpt: Checkpoint) -> str:
    """The checkpoint's name; a run's final.safetensors is named after its run folder."""
    if ckpt.name == "final" and ckpt.path is not None:
        return ckpt.path.parent.name
    return ckpt.name


def _params(model: nn.Module, state: Named, device: str) -> Named:
    params, _ = split_state(model, state)
    return {n: params[n].to(device) for n in param_names(model)}


def _axis(lo: float, hi: float, margin: float, n: int) -> np.ndarray:
    ext = hi - lo
    return np.linspace(lo - margin * ext, hi + margin * ext, n)


def _check_grid(grid: int, margin: float) -> None:
    if grid < 2:
        raise ValueError(f"grid must be >= 2 points per axis, got {grid}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")


def _grid_metrics(
    model: nn.Module,
    plane: Plane,
    coords: np.ndarray,
    data: EvalData,
    *,
    store: Store,
    kind: str,
    key: str,
    shard: tuple[int, int] | None,
    progress: Progress | None,
    points_per_pass: int | None,
) -> dict[str, np.ndarray]:
    """Metrics at each row of ``coords`` (n, 2) or (n, 1): ``{metric: (n,)}``."""
    evaluator = PlaneEvaluator(model, plane, data, points_per_pass=points_per_pass)
    if evaluator.points_per_pass > 1:
        point, evaluate = (lambda i: i), _Ahead(evaluator, coords, (shard or current_shard())[1])
    else:
        point, evaluate = (lambda i: coords[i]), evaluator
    out = evaluate_sharded(
        model,
        point,
        len(coords),
        data,
        store=store,
        kind=kind,
        key=key,
        shard=shard,
        progress=progress,
        stage="points",
        evaluate_fn=evaluate,
    )
    return {m: out[m] for m in METRICS}


def _plane_grid(
    model: nn.Module,
    plane: Plane,
    alpha: np.ndarray,
    beta: np.ndarray,
    data: EvalData,
    **kw: Any,
) -> dict[str, np.ndarray]:
    """Metric grids (len(beta), len(alpha)) indexed [beta_index, alpha_index]."""
    aa, bb = np.meshgrid(alpha, beta)  # (G_beta, G_alpha): row = beta
    coords = np.stack([aa.ravel(), bb.ravel()], 1)
    out = _grid_metrics(model, plane, coords, data, **kw)
    return {m: v.reshape(len(beta), len(alpha)) for m, v in out.items()}


def _data_inputs(ds: Any, data: EvalData) -> dict[str, Any]:
    return {**ds.describe(), **data.describe()}


def plane_study(
    a: Checkpoint,
    b: Checkpoint,
    third: Checkpoint | BezierCurve,
    cfg: PlaneConfig | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> Stored:
    """Loss and accuracy on the plane through A, a third point (or a curve's bend) and B.

    Basis: u = (w_B - w_A)/|w_B - w_A|, v = the part of (w_1 - w_A) orthogonal to u, normalised,
    w = w_A + alpha*u + beta*v; w_1 is the third checkpoint or the curve's bend (the middle bend
    for curves of order > 2). The grid covers the three points with ``cfg.margin`` of their
    extent on each side.

    Args:
        a, b: the end points (w_0 and w_2).
        third: a third checkpoint, or a Bezier curve between a and b (``.bends``, ``.point(t)``).
        cfg: grid and evaluation options.
        store: result store (default ``Store()``).
        progress: ``progress(done, total, stage)``.
        shard: (rank, world) of a process group (default: the initialised one, or one process).

    Returns:
        Stored (kind "plane"). arrays: "alpha" (G,), "beta" (G,); "train_loss", "train_acc",
        "test_loss", "test_acc" (G, G) indexed [beta_index, alpha_index]; "points_xy" (3, 2):
        (alpha, beta) of A, the bend / third point, B; "curve_xy" (points_on_curve, 2) if a curve
        was given. data: "basis_norms" [|w_B - w_A|, |orthogonal part of w_1 - w_A|],
        "labels" [A name, "bend" or the third's name, B name], "bn_samples", "inputs".
    """
    cfg = cfg or PlaneConfig()
    _check_grid(cfg.grid, cfg.margin)
    store = store or Store()
    is_curve = not isinstance(third, Checkpoint)
    _check_same([a, b] if is_curve else [a, b, third])
    model = a.build_model()
    device = cfg.device
    pa, pb = _params(model, a.state, device), _params(model, b.state, device)
    if is_curve:
        bend = third.bends[len(third.bends) // 2]
        p1 = {n: bend[n].to(device) for n in pa}
        third_id = {"curve_bends": [content_hash(dict(bd)) for bd in third.bends]}
        labels = [_label(a), "bend", _label(b)]
    else:
        p1 = _params(model, third.state, device)
        third_id = {"third": third.hash}
        labels = [_label(a), _label(third), _label(b)]
    plane = plane_through(flatten(pa), flatten(p1), flatten(pb), pa)
    points = np.array([plane.coords(flatten(p)) for p in (pa, p1, pb)])  # (3, 2)
    ds, data = _eval_data(a, device=device, bn_subset=cfg.bn_subset, data_root=cfg.data_root)
    inputs = {
        "a": a.hash,
        "b": b.hash,
        **third_id,
        "grid": cfg.grid,
        "margin": cfg.margin,
        "points_on_curve": cfg.points_on_curve if is_curve else None,
        "data": _data_inputs(ds, data),
    }

    def compute(key: str) -> tuple[dict, dict]:
        alpha = _axis(points[:, 0].min(), points[:, 0].max(), cfg.margin, cfg.grid)
        beta = _axis(points[:, 1].min(), points[:, 1].max(), cfg.margin, cfg.grid)
        grids = _plane_grid(
            model, plane, alpha, beta, data, store=store, kind="plane", key=key, shard=shard,
            progress=progress, points_per_pass=cfg.points_per_pass,
        )  # fmt: skip
        arrays = {"alpha": alpha, "beta": beta, **grids, "points_xy": points}
        if is_curve:
            ts = np.linspace(0.0, 1.0, cfg.points_on_curve)
            arrays["curve_xy"] = np.array([plane.coords(_curve_flat(third, t, pa)) for t in ts])
        norms = [float((flatten(pb).double() - plane.origin).norm()), _ortho_norm(plane, p1)]
        info = {"basis_norms": norms, "labels": labels, "bn_samples": data.describe()["bn_samples"]}
        return info, arrays

    return stored(store, "plane", inputs, compute, shard=shard)


def _curve_flat(curve: BezierCurve, t: float, like: Named) -> torch.Tensor:
    """The curve's point at t as a flat vector in the order (and on the device) of ``like``."""
    point = curve.point(float(t))
    return flatten({n: point[n].to(x.device) for n, x in like.items()})


def _ortho_norm(plane: Plane, p1: Named) -> float:
    d = flatten(p1).double() - plane.origin
    return float((d - (d @ plane.u) * plane.u).norm())


def _snapshots(run: Path) -> list[tuple[Checkpoint, int, float]]:
    """(checkpoint, step, epoch) of a run folder's trajectory, in step order."""
    files = sorted((run / "trajectory").glob("step_*.safetensors"))
    if not files:
        raise ValueError(f"{run}: no trajectory/step_*.safetensors snapshots (not a run folder?)")
    out = []
    for f in files:
        c = load_checkpoint(f)
        step = int(c.meta.get("step", int(f.stem.removeprefix("step_"))))
        out.append((c, step, float(c.meta.get("epoch", float("nan")))))
    return out


def _pca_basis(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top two right singular vectors of m (S, P) with a fixed sign, and all singular values."""
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    if len(s) < 2 or s[1] <= 1e-12 * max(s[0], 1e-300):
        raise ValueError("the snapshots span fewer than two directions around the centre")
    comps = vt[:2].copy()
    # Like sklearn's svd_flip: the largest |entry| of each component is positive.
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(1)])
    return comps * signs[:, None], s


def pca_study(
    runs: Sequence[str | Path],
    cfg: PCAConfig | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> Stored:
    """Loss and accuracy on the PCA plane of one or more training trajectories (Li et al. 2018).

    The snapshots (``trajectory/step_*.safetensors`` of each run folder) minus a centre (the
    final weights of the first run, or the snapshots' mean) are the rows of M; the plane is the
    centre plus the top two right singular vectors of M. Each snapshot is projected into it and
    its off-plane residual norm reported, so a contour is never mistaken for the true loss there.

    Args:
        runs: one or two run folders (same architecture and data set).
        cfg: grid, centre and evaluation options.
        store, progress, shard: as in :func:`plane_study`.

    Returns:
        Stored (kind "pca"). arrays: "xy" (S, 2) snapshot coordinates, "residual" (S,) off-plane
        residual norms, "run_index" (S,), "epoch" (S,), "alpha" (G,), "beta" (G,) and the
        metric grids (G, G) indexed [beta_index, alpha_index]. data: "explained_variance_ratio"
        [r1, r2] (squared singular values over their total), "runs" [folder names],
        "snapshots" [{run, step, epoch}], "centre", "bn_samples", "inputs".
    """
    cfg = cfg or PCAConfig()
    _check_grid(cfg.grid, cfg.margin)
    if cfg.centre not in ("final", "mean"):
        raise ValueError(f"centre must be 'final' or 'mean', got {cfg.centre!r}")
    if not 1 <= len(runs) <= 2:
        raise ValueError(f"PCA takes one or two run folders, got {len(runs)}")
    store = store or Store()
    paths = [Path(r) for r in runs]
    snaps = [(i, s) for i, p in enumerate(paths) for s in _snapshots(p)]
    final = load_checkpoint(paths[0] / "final.safetensors")
    _check_same([final] + [c for _, (c, _, _) in snaps])
    model = final.build_model()
    device = cfg.device
    like = _params(model, final.state, device)
    rows = np.stack(
        [flatten(_params(model, c.state, "cpu")).double().numpy() for _, (c, _, _) in snaps]
    )
    centre = flatten(like).double().cpu().numpy() if cfg.centre == "final" else rows.mean(0)
    comps, s = _pca_basis(rows - centre)
    xy = (rows - centre) @ comps.T  # (S, 2)
    residual = np.linalg.norm(rows - centre - xy @ comps, axis=1)
    plane = Plane(*(torch.from_numpy(t).to(device) for t in (centre, comps[0], comps[1])), like)
    ds, data = _eval_data(final, device=device, bn_subset=cfg.bn_subset, data_root=cfg.data_root)
    inputs = {
        "snapshots": [c.hash for _, (c, _, _) in snaps],
        "centre": cfg.centre,
        "centre_hash": final.hash,
        "grid": cfg.grid,
        "margin": cfg.margin,
        "data": _data_inputs(ds, data),
    }

    def compute(key: str) -> tuple[dict, dict]:
        alpha = _axis(xy[:, 0].min(), xy[:, 0].max(), cfg.margin, cfg.grid)
        beta = _axis(xy[:, 1].min(), xy[:, 1].max(), cfg.margin, cfg.grid)
        grids = _plane_grid(
            model, plane, alpha, beta, data, store=store, kind="pca", key=key, shard=shard,
            progress=progress, points_per_pass=cfg.points_per_pass,
        )  # fmt: skip
        arrays = {
            "xy": xy,
            "residual": residual,
            "run_index": np.array([i for i, _ in snaps]),
            "epoch": np.array([e for _, (_, _, e) in snaps]),
            "alpha": alpha,
            "beta": beta,
            **grids,
        }
        info = {
            "explained_variance_ratio": (s[:2] ** 2 / (s**2).sum()).tolist(),
            "runs": [p.name for p in paths],
            "snapshots": [
                {"run": paths[i].name, "step": st, "epoch": e} for i, (_, st, e) in snaps
            ],
            "centre": cfg.centre,
            "bn_samples": data.describe()["bn_samples"],
        }
        return info, arrays

    return stored(store, "pca", inputs, compute, shard=shard)


def _filter_normalized_random(params: Named, generator: torch.Generator) -> torch.Tensor:
    """A flat float64 Gaussian direction, filter-normalised to ``params``."""
    return flatten(filter_normalize(random_direction(params, generator), params))


def random_plane_study(
    ckpt: Checkpoint,
    cfg: PlaneConfig | None = None,
    *,
    seed: int = 0,
    span: float = 1.0,
    store: Store | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> Stored:
    """Loss and accuracy on a random filter-normalised plane around a checkpoint (Li et al. 2018).

    w = w + alpha*d1 + beta*d2 with d1, d2 independent Gaussian directions (seeded), each
    filter-normalised (:func:`filter_normalize`): zero on biases and BN parameters.

    Args:
        ckpt: the centre of the plane.
        cfg: grid and evaluation options (``margin`` unused).
        seed: seed of the two directions.
        span: the grid covers [-span, span]^2.
        store, progress, shard: as in :func:`plane_study`.

    Returns:
        Stored (kind "random_plane"). arrays: "alpha" (G,), "beta" (G,) and the metric grids
        (G, G) indexed [beta_index, alpha_index]. data: "seed", "span", "direction_norms"
        [|d1|, |d2|], "cosine" (cosine between d1 and d2), "bn_samples", "inputs".
    """
    cfg = cfg or PlaneConfig()
    _check_grid(cfg.grid, 0.0)
    if span <= 0:
        raise ValueError(f"span must be > 0, got {span}")
    store = store or Store()
    model = ckpt.build_model()
    params = _params(model, ckpt.state, cfg.device)
    gen = torch.Generator().manual_seed(seed)
    d1 = _filter_normalized_random(params, gen)
    d2 = _filter_normalized_random(params, gen)
    plane = Plane(flatten(params).double(), d1, d2, params)
    ds, data = _eval_data(ckpt, device=cfg.device, bn_subset=cfg.bn_subset, data_root=cfg.data_root)
    inputs = {
        "ckpt": ckpt.hash,
        "seed": seed,
        "span": span,
        "grid": cfg.grid,
        "data": _data_inputs(ds, data),
    }

    def compute(key: str) -> tuple[dict, dict]:
        axis = np.linspace(-span, span, cfg.grid)
        grids = _plane_grid(
            model, plane, axis, axis, data, store=store, kind="random_plane", key=key,
            shard=shard, progress=progress, points_per_pass=cfg.points_per_pass,
        )  # fmt: skip
        info = {
            "seed": seed,
            "span": span,
            "direction_norms": [float(d1.norm()), float(d2.norm())],
            "cosine": float(d1 @ d2 / (d1.norm() * d2.norm())),
            "bn_samples": data.describe()["bn_samples"],
        }
        return info, {"alpha": axis, "beta": axis.copy(), **grids}

    return stored(store, "random_plane", inputs, compute, shard=shard)


def _slice_direction(
    a: Checkpoint,
    direction: str,
    b: Checkpoint | None,
    params: Named,
    *,
    seed: int,
    hessian: HessianConfig | None,
    store: Store,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The flat float64 direction of a slice and what identifies it (for the result key)."""
    device = next(iter(params.values())).device
    delta = None
    if b is not None:
        delta = flatten(_params(a.build_model(), b.state, device)).double()
        delta -= flatten(params).double()
    if direction == "delta":
        if delta is None:
            raise ValueError("direction 'delta' needs a second checkpoint (b / --to)")
        return delta, {}
    if direction == "random":
        d = _filter_normalized_random(params, torch.Generator().manual_seed(seed))
        return (d if delta is None else d * (delta.norm() / d.norm())), {"seed": seed}
    from landscape.hessian import HessianConfig, hessian_study

    hcfg = hessian or HessianConfig(k=1, device=str(device))
    # With b, the eigenpairs come from the same stored study as the pruning-direction analysis
    # (the Directions page), so they are computed once.
    res = hessian_study(a, b, hcfg, store=store)
    if "eigenvectors" not in res.arrays:
        raise ValueError("the model is too large to keep Hessian eigenvectors for a slice")
    v1 = torch.from_numpy(res.arrays["eigenvectors"][0]).double().to(device)
    # Without b: as long as a filter-normalised direction, i.e. as A's weight tensors.
    length = delta.norm() if delta is not None else flatten(filter_normalize(params, params)).norm()
    ident = {"hessian": {k: v for k, v in asdict(hcfg).items() if k != "device"}}
    ident["eigenvalue"] = float(res.arrays["eigenvalues"][0])
    return v1 * (float(length) / v1.norm()), ident


def slice_study(
    a: Checkpoint,
    direction: str,
    *,
    b: Checkpoint | None = None,
    points: int = 41,
    span: float | None = None,
    seed: int = 0,
    cfg: PlaneConfig | None = None,
    hessian: HessianConfig | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> Stored:
    """Loss and accuracy along a line ``w_A + s * d`` (1D slice).

    Directions: "delta" d = w_B - w_A (s = 1 is B; needs ``b``); "random" a seeded
    filter-normalised Gaussian direction (Li et al. 2018); "eigen" the top Hessian eigenvector
    at A (:func:`landscape.hessian.hessian_study`). With ``b`` given, random and eigen
    directions are rescaled to |w_B - w_A| so all three take steps of equal length; without it
    the eigenvector gets the length of a filter-normalised direction (the norm of A's weight
    tensors, biases and BN excluded).

    Args:
        a: the origin.
        direction: "delta", "random" or "eigen".
        b: the second checkpoint (required for "delta").
        points: number of values of s.
        span: s covers [-span, 1 + span] for delta (default 0.5), [-span, span] otherwise
            (default 1).
        seed: seed of the random direction.
        cfg: evaluation options (device, bn_subset, data_root; grid and margin unused).
        hessian: options of the eigenvector computation (default ``HessianConfig(k=1)``).
        store, progress, shard: as in :func:`plane_study`.

    Returns:
        Stored (kind "slice"). arrays: "s" (points,), "train_loss", "train_acc", "test_loss",
        "test_acc" (points,). data: "direction", "direction_norm", "span", "labels" [A name,
        B name or None], "bn_samples", "eigenvalue" (eigen only), "inputs".
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    cfg = cfg or PlaneConfig()
    store = store or Store()
    span = (0.5 if direction == "delta" else 1.0) if span is None else span
    if span < 0 or (span == 0 and direction != "delta"):
        raise ValueError(f"span must be > 0, got {span}")
    if b is not None:
        _check_same([a, b])
    model = a.build_model()
    params = _params(model, a.state, cfg.device)
    d, ident = _slice_direction(a, direction, b, params, seed=seed, hessian=hessian, store=store)
    line = Plane(flatten(params).double(), d, torch.zeros_like(d), params)
    ds, data = _eval_data(a, device=cfg.device, bn_subset=cfg.bn_subset, data_root=cfg.data_root)
    lo, hi = (-span, 1.0 + span) if direction == "delta" else (-span, span)
    inputs = {
        "a": a.hash,
        "b": b.hash if b is not None else None,
        "direction": direction,
        **{k: v for k, v in ident.items() if k != "eigenvalue"},
        "points": points,
        "span": span,
        "data": _data_inputs(ds, data),
    }

    def compute(key: str) -> tuple[dict, dict]:
        s = np.linspace(lo, hi, points)
        out = _grid_metrics(
            model, line, s[:, None], data, store=store, kind="slice", key=key, shard=shard,
            progress=progress, points_per_pass=cfg.points_per_pass,
        )  # fmt: skip
        info = {
            "direction": direction,
            "direction_norm": float(d.norm()),
            "span": span,
            "labels": [_label(a), _label(b) if b is not None else None],
            "bn_samples": data.describe()["bn_samples"],
            **({"eigenvalue": ident["eigenvalue"]} if "eigenvalue" in ident else {}),
        }
        return info, {"s": s, **out}

    return stored(store, "slice", inputs, compute, shard=shard)


def summarize(result: Stored, store: Store | None = None) -> str:
    """A few lines describing a plane, pca, random_plane or slice result (for the CLI)."""
    d, arr = result.data, result.arrays
    where = f" ({store.root / result.kind / result.key}.json)" if store is not None else ""
    shape = " x ".join(str(n) for n in arr["train_loss"].shape)
    lines = [f"{result.kind} {result.key}{where}: {shape} points, BN on {d['bn_samples']} samples"]
    if result.kind == "plane":
        lines.append(f"  labels        {', '.join(map(str, d['labels']))}")
        lines.append(f"  basis norms   {d['basis_norms'][0]:.4f}, {d['basis_norms'][1]:.4f}")
    elif result.kind == "pca":
        r1, r2 = d["explained_variance_ratio"]
        lines.append(f"  runs          {', '.join(d['runs'])} ({len(arr['xy'])} snapshots)")
        lines.append(f"  explained     PC1 {r1:.4f}, PC2 {r2:.4f}")
        lines.append(f"  max residual  {arr['residual'].max():.4f} (off-plane distance)")
    elif result.kind == "slice":
        lines.append(f"  direction     {d['direction']} (norm {d['direction_norm']:.4f})")
    for m in METRICS:
        v = arr[m]
        lines.append(f"  {m:<13} min {np.nanmin(v):.4f}  max {np.nanmax(v):.4f}")
    return "\n".join(lines)
