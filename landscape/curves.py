"""Curves between two minima (Garipov et al. 2018): fit the bends, evaluate along paths.

A curve of order k between weight points w_0 (checkpoint A) and w_k (checkpoint B) with bends
w_1..w_{k-1} is a Bezier curve phi(t) = sum_i C(k,i) t^i (1-t)^(k-i) w_i, or a polygonal chain
through w_0..w_k (``curve_type="polychain"``; :mod:`landscape.curvepoints`), t in [0, 1]. The
endpoints are fixed, the bends start on the straight line and are fitted by minimising
E_{t~U(0,1)} loss(phi(t)) with t drawn per mini-batch. A masked curve (``masked=True``) keeps
every point at exactly zero where B's prunable weights are zero: is there a path of sparse
models? Any ``nn.Module`` works: points are named parameter dicts fed through
``torch.func.functional_call``; no layer is rewritten. Buffers (BatchNorm running statistics)
are never interpolated: during fitting BN uses batch statistics, and every evaluated point gets
statistics recomputed from training data (:mod:`landscape.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn
from torch.func import functional_call

from landscape.checkpoints import Checkpoint, CheckpointError
from landscape.configs import CURVE_TYPES, CurveConfig, lr_factor
from landscape.curvepoints import BezierCurve, bernstein, curve_weights
from landscape.data import Dataset, batches
from landscape.evaluate import (
    channels_last,
    small_model_threads,
)
from landscape.models import prunable_names
from landscape.params import Named, flatten, has_batchnorm, split_state
from landscape.progress import Progress
from landscape.store import atomic_write
from landscape.train import Loop

__all__ = [
    "CURVE_TYPES",
    "BezierCurve",
    "CurveConfig",
    "bernstein",
    "curve_weights",
    "curve_bytes",
    "curve_hash",
    "given_config",
    "fit_curve",
    "load_curve",
    "runs_between",
    "save_curve",
]


_CURVE_FORMAT = "landscape-curve"
_CURVE_VERSION = 2  # 2: curve_type and mask (written only when not a plain Bezier curve)
_FIT_FIELDS = ("order", "epochs", "lr", "momentum", "weight_decay", "batch_size", "lr_schedule")
_SHAPE_FIELDS = ("curve_type", "masked")  # what a fitted curve is, besides its fit settings


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


def endpoint_params(a: Checkpoint, b: Checkpoint) -> tuple[nn.Module, Named, Named]:
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
    """Fit the bends of a curve (Bezier or polychain) from ``a`` to ``b`` on the training data.

    Minimises the mean cross-entropy at phi(t), t ~ U(0, 1) drawn per mini-batch, with SGD
    (momentum, weight decay on the bends) under ``cfg.lr_schedule``. BatchNorm layers run in
    train mode (batch statistics). A masked curve (``cfg.masked``) starts at A projected onto
    B's zero mask and its bends are projected onto it at the start and after every step.

    Args:
        a, b: the endpoints (same architecture).
        cfg: curve_type, masked, order, epochs, lr, momentum, weight_decay, batch_size, lr_schedule, seed, device.
        data: the training data (``x_train``, ``y_train``).
        progress: ``progress(step, total, "fitting curve")`` callback.

    Returns:
        The fitted curve on ``cfg.device``; ``curve.history`` holds the per-epoch mean loss.
    """
    cfg.check()
    model, pa, pb = endpoint_params(a, b)
    device = torch.device(cfg.device)
    model.to(device)
    curve = BezierCurve(pa, pb, order=cfg.order, kind=cfg.curve_type).to(device)
    if cfg.masked:
        curve.mask_to_end(prunable_names(model))
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
    fit = _Fit(model, curve, Loop(opt, total, sched, progress), gen)
    with small_model_threads(model, x):
        model.train()
        for _ in range(cfg.epochs):
            curve.history.append(fit.epoch(x, y, cfg.batch_size))
    curve.inner = curve.inner.detach()
    return curve


@dataclass
class _Fit:
    """One curve fit: the training :class:`~landscape.train.Loop` with a per-batch curve point.

    The loop is the one :func:`landscape.train.train` uses; only the forward pass differs: each
    mini-batch draws t ~ U(0, 1) from the fit's random stream (after the batch order, as
    before) and computes the logits at phi(t) through ``functional_call``.
    """

    model: nn.Module
    curve: BezierCurve
    loop: Loop
    gen: torch.Generator

    def __post_init__(self) -> None:
        # Scratch buffers: BN updates running statistics in train mode; they are never used.
        self.buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
        self.skip_single = has_batchnorm(self.model)  # no batch statistics from one sample

    def forward(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor | None:
        """Logits at phi(t) for a fresh t, or None for a batch BN cannot train on."""
        t = torch.rand((), generator=self.gen)
        if self.skip_single and len(yb) == 1:
            return None
        return functional_call(self.model, (self.curve.point(t), self.buffers), (xb,))

    def epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
        """One pass over (x, y) with a fresh t per mini-batch; returns the mean loss."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        seen = [0]

        def after_step(_step: int, loss: torch.Tensor, _logits, yb: torch.Tensor) -> None:
            self.curve.project()  # a masked curve stays on B's mask after every step
            loss_sum.add_(loss.detach() * len(yb))
            seen[0] += len(yb)

        self.loop.epoch(
            self.forward,
            batches(x, y, batch_size, shuffle=True, generator=self.gen),
            after_step=after_step,
            stage="fitting curve",
        )
        return float(loss_sum) / max(seen[0], 1)


def curve_hash(curve: BezierCurve) -> str:
    """Content hash of a curve's control points, per parameter in sorted name order (name,
    shape, its k + 1 values): one hash for a research ``.pt`` and its ``.safetensors``."""
    controls = curve.controls().detach().cpu()  # (k + 1, P)
    kind = "" if curve.kind == "bezier" else f"{curve.kind}|"  # Bezier hashes as before
    h = hashlib.sha256(f"order {curve.order}|{kind}".encode())
    offsets, start = {}, 0
    for n, v in curve._like.items():
        offsets[n] = (start, v.numel(), tuple(v.shape))
        start += v.numel()
    for n in sorted(offsets):
        s, size, shape = offsets[n]
        h.update(f"{n}|{shape}|".encode())
        h.update(controls[:, s : s + size].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def given_config(cfg: CurveConfig, order: int, kind: str = "bezier") -> dict[str, Any]:
    """What a given (not fitted) curve's result records: order, type, evaluation settings."""
    skip = (*_FIT_FIELDS, *_SHAPE_FIELDS, "seed")
    out = {k: v for k, v in asdict(cfg).items() if k not in skip}
    return {"order": order, "curve_type": kind, **out}


def _shape_meta(curve: BezierCurve) -> dict[str, Any]:
    """A curve file's type and mask: empty for a plain Bezier curve (its file as before)."""
    out: dict[str, Any] = {}
    if curve.kind != "bezier":
        out["curve_type"] = curve.kind
    if curve.masked:
        out["mask"] = {"of": "end", "names": list(curve.masked)}
    return out


def curve_bytes(curve: BezierCurve, a: Checkpoint, b: Checkpoint, cfg: CurveConfig | None) -> bytes:
    """The bytes of a curve file (:func:`save_curve`); ``cfg`` None: a given curve."""
    tensors = {
        f"bend{i}.{n}": v.detach().cpu().contiguous().clone()
        for i, bend in enumerate(curve.bends, start=1)
        for n, v in bend.items()
    }
    shape = _shape_meta(curve)
    given = {"order": curve.order, **({"curve_type": curve.kind} if "curve_type" in shape else {})}
    meta = {
        "format": _CURVE_FORMAT,
        "version": _CURVE_VERSION if shape else 1,
        "order": curve.order,
        "names": curve.names,
        "endpoints": {
            e: {"hash": c.hash, "param_hash": c.param_hash, "name": c.name}
            for e, c in (("a", a), ("b", b))
        },
        "arch": a.arch,
        "config": asdict(cfg) if cfg is not None else given,
        "history": curve.history,
        **shape,
    }
    return save(tensors, metadata={_CURVE_FORMAT: json.dumps(meta)})


def save_curve(
    path: str | Path, curve: BezierCurve, a: Checkpoint, b: Checkpoint, cfg: CurveConfig | None
) -> Path:
    """Write a curve's bends to a ``.safetensors`` file, atomically.

    The tensors are ``bend{i}.{param name}`` (i = 1..k-1); the metadata holds the endpoints'
    hashes (full and :attr:`~landscape.checkpoints.Checkpoint.param_hash`) and names, the
    architecture, the config (None: a given curve, its order only) and the fit history, and
    for other than plain Bezier curves the ``curve_type`` and the ``mask`` (the names of the
    tensors kept at zero where B is; A is projected again on loading). The
    endpoints are not stored: :func:`load_curve` takes them and checks their hashes.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, curve_bytes(curve, a, b, cfg))
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


def _check_endpoints(path: Path, meta: dict[str, Any], a: Checkpoint, b: Checkpoint) -> None:
    """CheckpointError unless ``a``, ``b`` have the endpoints' full or parameter hashes."""
    ends = meta.get("endpoints") or {}
    for field in ("hash", "param_hash"):
        want = tuple(ends.get(e, {}).get(field) for e in ("a", "b"))
        if None not in want and want == (getattr(a, field), getattr(b, field)):
            return
    want = tuple(ends.get(e, {}).get("hash") for e in ("a", "b"))
    swapped = " (the endpoints are swapped: give them in the other order)"
    swapped = swapped if want == (b.hash, a.hash) else ""
    raise CheckpointError(
        f"{path}: curve was fitted between endpoints {want[0]} and {want[1]}, "
        f"not {a.hash} ({a.name}) and {b.hash} ({b.name}){swapped}"
    )


def runs_between(path: str | Path, a: Checkpoint, b: Checkpoint) -> bool:
    """Whether a curve file runs from ``a`` to ``b``: by parameter hash, so a research curve
    (one set of BN statistics) is found for its imported endpoints and for the model files it
    was fitted between; by full hash for files written before (a broken file: False)."""
    try:
        _check_endpoints(Path(path), curve_meta(path), a, b)
    except CheckpointError:
        return False
    return True


def load_curve(path: str | Path, a: Checkpoint, b: Checkpoint) -> BezierCurve:
    """Read a curve written by :func:`save_curve` and attach it to its endpoints.

    Args:
        path: the ``.safetensors`` curve file.
        a, b: the endpoints it was fitted between (checked by content hash, in order; the
            parameter hash suffices: BN statistics are recomputed at every point).

    Returns:
        The curve on the CPU, with its fit history.

    Raises:
        CheckpointError: not a curve file, endpoint hashes that do not match, or bends that do
            not fit the endpoints' parameters.
    """
    path = Path(path)
    tensors, meta = _read_curve(path)
    _check_endpoints(path, meta, a, b)
    model, pa, pb = endpoint_params(a, b)
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
    curve = BezierCurve(pa, pb, bends, kind=_meta_kind(path, meta))
    curve.history = [float(v) for v in meta.get("history", [])]
    mask = meta.get("mask")
    if mask is not None:
        names = mask.get("names") if isinstance(mask, dict) else None
        if not isinstance(names, list) or not set(names) <= set(pa):
            raise CheckpointError(f"{path}: invalid curve mask {mask!r}")
        curve.mask_to_end(names)
    return curve


def _meta_kind(path: Path, meta: dict[str, Any]) -> str:
    kind = meta.get("curve_type", "bezier")
    if kind not in CURVE_TYPES:
        raise CheckpointError(f"{path}: unknown curve type {kind!r}")
    return kind


def joins(curve: BezierCurve, pa: Named, pb: Named) -> bool:
    """Whether ``curve`` runs from the weight point ``pa`` to ``pb`` exactly."""
    if sorted(curve.names) != sorted(pa):
        return False
    ends = curve.ends.detach().cpu()
    # By name: a checkpoint read from another file may list the same tensors in another order.
    return torch.equal(ends[0], flatten(pa, curve.names)) and torch.equal(
        ends[1], flatten(pb, curve.names)
    )
