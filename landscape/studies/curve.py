"""Connectivity of two minima: a fitted curve and the straight line, evaluated along t.

The curve (Bezier or polygonal chain, masked to B's zeros or not) is fitted (or a given one
reused) between A (t = 0) and B (t = 1); both paths are evaluated at ``points`` values of t
with BatchNorm recalibrated at every point. The line is always the plain one from A to B (a
masked curve starts at A projected onto B's mask instead). Along both, the fraction of B's
zero weights still below 1e-3 is kept per layer: where the path leaves the sparse end. The fit is
stored on its own (keyed by the fit settings only), so new ``points`` or ``bn_subset`` reuse it.
Points are built one at a time from the control points (the one evaluator's basis), so memory
does not grow with the number of points.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.checkpoints import Checkpoint, CheckpointError, content_hash
from landscape.curves import (
    _FIT_FIELDS,
    BezierCurve,
    CurveConfig,
    curve_bytes,
    curve_hash,
    endpoint_params,
    fit_curve,
    given_config,
    joins,
    load_curve,
)
from landscape.data import Dataset
from landscape.evaldata import small_model_threads
from landscape.evaluate import EvalData
from landscape.models import prunable_names
from landscape.params import unflatten
from landscape.store import Store, result_key
from landscape.studies.base import Context, Kind, Result, config_identity
from landscape.studies.common import data_identity, dataset, evaluate_coords

__all__ = [
    "FIT_VERSION",
    "KIND",
    "PATH_COLUMNS",
    "Barrier",
    "CurveInputs",
    "CurveResult",
    "PathResult",
    "evaluate_path",
]

FIT_VERSION = 2  # bump when fitting changes: stored fits are then refitted
SMALL = 1e-3  # |w| below this counts as "small" in sparsity_small
PATH_COLUMNS = ("weight_norm", "sparsity", "sparsity_small", "segment")  # besides the metrics


@dataclass(frozen=True)
class Barrier:
    """The largest excess of a loss over the chord between the path's ends, and where."""

    height: float
    t: float


@dataclass
class PathResult:
    """Metrics along a path phi(t) at the values ``t``.

    Attributes:
        t: (n,) values of t, from 0 to 1.
        columns: ``{name: (n,)}``: every metric of :data:`landscape.evaluate.METRICS` (BN
            recalibrated at each point), "weight_norm" (L2 norm of all parameters), "sparsity"
            (fraction of exactly-zero prunable weights), "sparsity_small" (|w| < 1e-3) and
            "segment" (|phi(t_i) - phi(t_{i-1})|, 0 for i = 0; sums to the path length).
        layer_sparsity: (n, layers) fraction of exact zeros per prunable layer.
        layers: names of the prunable layers.
        zeros_kept: (n, layers) fraction of B's exactly-zero weights with |phi(t)| < 1e-3 per
            layer (NaN for a layer without zeros in B; None in results stored before).
    """

    t: np.ndarray
    columns: dict[str, np.ndarray]
    layer_sparsity: np.ndarray
    layers: list[str]
    zeros_kept: np.ndarray | None = None

    def barrier(self, metric: str = "train_loss") -> Barrier:
        """max_t [m(t) - ((1 - t) m(0) + t m(1))]: 0 when the path never rises above the chord."""
        v = np.asarray(self.columns[metric], dtype=float)
        excess = v - ((1 - self.t) * v[0] + self.t * v[-1])
        i = int(np.nanargmax(excess))
        return Barrier(float(excess[i]), float(self.t[i]))

    @property
    def length(self) -> float:
        return float(np.sum(self.columns["segment"]))

    def argbest(self, metric: str, *, lowest: bool) -> int:
        """Index of the first t with the lowest (or highest) value of ``metric``."""
        v = np.asarray(self.columns[metric], dtype=float)
        return int(np.nanargmin(v) if lowest else np.nanargmax(v))

    def nearest(self, t: float) -> int:
        """Index of the grid value closest to ``t``."""
        return int(np.argmin(np.abs(self.t - t)))


@dataclass(frozen=True)
class CurveInputs:
    """The endpoints, and optionally a curve between them to evaluate instead of fitting one."""

    a: Checkpoint
    b: Checkpoint
    curve: BezierCurve | None = None


@dataclass
class CurveResult(Result):
    """Both paths at the values ``t``: columns of :class:`PathResult` for "curve" and "line".

    Attributes:
        curve_file: the curve's ``.safetensors`` inside the store (an artefact: checked on
            every read of the result).
        config: the :class:`CurveConfig` as a dict; endpoints: {"a"|"b": {"hash", "name"}}.
        bn_samples: training samples of each BN recalibration.
        fit_history: per-epoch mean training loss of the fit (empty for a given curve).
        n_test: test samples behind each accuracy (None in results stored before it was kept).
        n_train: training samples behind each training metric (train_subset; None: older).
        curve_zeros_kept, line_zeros_kept: (n, layers) :attr:`PathResult.zeros_kept`.
    """

    t: np.ndarray
    curve: dict[str, np.ndarray]
    line: dict[str, np.ndarray]
    curve_layer_sparsity: np.ndarray
    line_layer_sparsity: np.ndarray
    layers: list[str]
    curve_file: str
    config: dict[str, Any]
    endpoints: dict[str, Any]
    bn_samples: int
    fit_history: list[float]
    n_test: int | None = None
    n_train: int | None = None
    curve_zeros_kept: np.ndarray | None = None
    line_zeros_kept: np.ndarray | None = None

    ARTIFACTS = ("curve_file",)

    def path(self, name: str) -> PathResult:
        """The "curve" or the "line" as a :class:`PathResult`."""
        if name not in ("curve", "line"):
            raise ValueError(f"path is 'curve' or 'line', got {name!r}")
        sparsity_ = self.curve_layer_sparsity if name == "curve" else self.line_layer_sparsity
        kept = getattr(self, f"{name}_zeros_kept")
        return PathResult(self.t, getattr(self, name), sparsity_, self.layers, kept)

    @property
    def masked(self) -> bool:
        """Whether the curve was kept on B's zero mask."""
        return bool(self.config.get("masked"))

    @property
    def curve_type(self) -> str:
        return self.config.get("curve_type", "bezier")


def _point_columns(
    curve: BezierCurve, controls: torch.Tensor, coeffs: torch.Tensor, prunable: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Norms, sparsity, B's zeros kept and segment lengths, for batches of points whose (m, P)
    weights take ~64 MiB (memory flat in points; norms accumulate in float64). Per layer, B's
    zeros kept is the fraction of B's zero weights still below SMALL (NaN: B has none)."""
    n, like = coeffs.shape[0], curve.start
    offsets = np.cumsum([0] + [t.numel() for t in like.values()])
    spans = {name: slice(int(offsets[i]), int(offsets[i + 1])) for i, name in enumerate(like)}
    zeros = {name: curve.end[name].reshape(-1) == 0 for name in prunable}  # B's zero masks
    sizes = np.array([spans[name].stop - spans[name].start for name in prunable])
    cols = {c: np.zeros(n) for c in PATH_COLUMNS}
    layers, kept = np.zeros((n, len(prunable))), np.full((n, len(prunable)), np.nan)
    step = max(1, 2**24 // max(1, controls.shape[1]))
    prev = None
    for i in range(0, n, step):
        flats = coeffs[i : i + step].to(controls) @ controls  # (m, P)
        rows = slice(i, i + len(flats))
        cols["weight_norm"][rows] = _norms(flats)
        steps = flats.diff(dim=0, prepend=flats[:1] if prev is None else prev[None])
        cols["segment"][rows] = _norms(steps)
        zero, small = np.zeros((len(flats), len(prunable))), np.zeros(len(flats))
        for j, name in enumerate(prunable):
            w = flats[:, spans[name]]
            zero[:, j] = (w == 0).sum(1).cpu().numpy()
            small += (w.abs() < SMALL).sum(1).cpu().numpy()
            if bool(zeros[name].any()):
                kept[rows, j] = (w[:, zeros[name]].abs() < SMALL).double().mean(1).cpu().numpy()
        total = max(1, int(sizes.sum()))
        cols["sparsity"][rows] = zero.sum(1) / total
        cols["sparsity_small"][rows] = small / total
        layers[rows] = zero / np.maximum(sizes, 1)
        prev = flats[-1].clone()
    return cols, layers, kept


def _norms(rows: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).cpu().numpy()


@torch.no_grad()
def evaluate_path(
    model: nn.Module,
    curve: BezierCurve,
    t: np.ndarray,
    data: EvalData,
    context: Context,
    *,
    stage: str = "evaluating path",
) -> PathResult:
    """Every metric, the weight norm and the sparsity at phi(t) for each t.

    Args:
        model: the architecture (its weights are not used).
        curve: the path (order 1 is the straight line).
        t: values in [0, 1].
        data: evaluation data (on the device to evaluate on).
        context: store, key (partial results), progress and shard of the evaluation.
        stage: text shown with the progress.
    """
    ts = np.asarray(t, dtype=float)
    if not bool(((ts >= 0) & (ts <= 1)).all()):
        raise ValueError(f"t must be in [0, 1], got {ts[~((ts >= 0) & (ts <= 1))][0]}")
    coeffs = curve.weights(torch.as_tensor(ts, dtype=torch.float64))  # (n, k + 1)
    like = curve.start
    device = data.x_train.device
    # Named control points: the evaluator matches them to the model's parameters by name
    # (a curve keeps its tensors in the checkpoint's key order, not the model's).
    controls = curve.controls().detach()  # (k + 1, P): one copy, shared by both passes
    basis = [{n: v.to(device) for n, v in unflatten(w, like).items()} for w in controls]
    metrics = evaluate_coords(model, basis, coeffs.numpy(), data, context, stage=stage)
    prunable = prunable_names(model)
    with small_model_threads(model, data.x_train):  # the one thread policy, as the evaluator
        cols, layers, kept = _point_columns(curve, controls, coeffs, prunable)
    return PathResult(ts, {**metrics, **cols}, layers, prunable, kept)


def _fit_identity(inputs: CurveInputs, cfg: CurveConfig, data: Dataset) -> dict:
    fit = {f: getattr(cfg, f) for f in _FIT_FIELDS}
    # A plain Bezier fit keeps its key from before curve types and masks existed.
    fit |= {"curve_type": cfg.curve_type} if cfg.curve_type != "bezier" else {}
    fit |= {"masked": True} if cfg.masked else {}
    a, b = inputs.a, inputs.b
    return {
        "a": a.param_hash,
        "b": b.param_hash,
        "data": data.describe(),
        "fit": fit,
        "seed": cfg.seed,
    }


def _stored_fit(
    inputs: CurveInputs, cfg: CurveConfig, data: Dataset, context: Context
) -> tuple[BezierCurve, Path]:
    """The fitted curve for (a, b, data, fit config): from the store, or fitted and saved.

    The fit is a store artefact: a file that is missing or fails its checksum is refitted
    (with a :class:`landscape.store.CorruptResultWarning`).
    """
    a, b, store = inputs.a, inputs.b, context.store
    key = result_key("curve_fit", FIT_VERSION, _fit_identity(inputs, cfg, data))
    name = f"fit-{key}.safetensors"
    with store.lock("curve_fit", key):
        if store.load_artifact("curve", name) is not None:
            try:
                return load_curve(store.root / "curve" / name, a, b), store.root / "curve" / name
            except CheckpointError as err:
                warnings.warn(f"refitting: stored curve is unusable: {err}", stacklevel=3)
        curve = fit_curve(a, b, cfg, data, progress=context.progress)
        path = store.save_artifact("curve", name, curve_bytes(curve, a, b, cfg))
    return curve, path


def _given(inputs: CurveInputs, cfg: CurveConfig, store: Store) -> tuple[BezierCurve, Path]:
    """Copy a given curve into the store (named by its content) so results point inside it."""
    curve = inputs.curve
    name = f"given-{curve_hash(curve)}.safetensors"
    if store.load_artifact("curve", name) is None:
        store.save_artifact("curve", name, curve_bytes(curve, inputs.a, inputs.b, None))
    return curve, store.root / "curve" / name


def _data(inputs: CurveInputs, cfg: CurveConfig) -> Dataset:
    """The data set named in the endpoints' metadata (they must agree), cut to the config's
    stratified train/test subsets."""
    a, b = inputs.a, inputs.b
    da, db = a.meta.get("data"), b.meta.get("data")
    for ck, d in ((a, da), (b, db)):
        if not isinstance(d, dict) or "name" not in d:
            raise ValueError(f"{ck.name or 'checkpoint'}: metadata names no data set")
    if (da["name"], da.get("split_seed", 0)) != (db["name"], db.get("split_seed", 0)):
        raise ValueError(f"endpoints were trained on different data: {da} vs {db}")
    return dataset(a, cfg)


def _settings(cfg: CurveConfig, inputs: CurveInputs) -> dict[str, Any]:
    """The config a result records: a given curve's order and evaluation settings only."""
    if inputs.curve is None:
        return asdict(cfg)
    return given_config(cfg, inputs.curve.order, inputs.curve.kind)


def _identity(cfg: CurveConfig, inputs: CurveInputs) -> dict:
    cfg.check()
    model, pa, pb = endpoint_params(inputs.a, inputs.b)
    if inputs.curve is not None and not joins(inputs.curve, pa, pb):
        raise ValueError("the given curve does not run between these endpoints")
    if inputs.curve is not None and cfg.masked:
        raise ValueError("a given curve is evaluated as it is: masked applies to a fitted one")
    data = data_identity(inputs.a, cfg, _data(inputs, cfg))
    # Parameters, not buffers: BN statistics are recomputed at every point, so a research
    # curve's endpoints and the model files they came from give one key (other buffers count).
    bn_names = {f"{m}.{b}" for m, mod in model.named_modules() if isinstance(mod, _BatchNorm)
                for b, _ in mod.named_buffers(recurse=False)}  # fmt: skip
    other = {k: v for k, v in inputs.a.state.items() if k not in bn_names and k not in pa}
    settings = _settings(cfg, inputs)
    # A given curve's type is in its hash, whatever the config says.
    keep = set(settings) - ({"curve_type"} if inputs.curve is not None else set())
    return {
        "a": inputs.a.param_hash,
        "b": inputs.b.param_hash,
        "buffers": content_hash(other) if other else None,
        "data": data,
        "config": {k: v for k, v in config_identity(cfg).items() if k in keep},
        "curve": curve_hash(inputs.curve) if inputs.curve is not None else None,
    }


def _compute(cfg: CurveConfig, inputs: CurveInputs, context: Context) -> CurveResult:
    a, b = inputs.a, inputs.b
    model, pa, pb = endpoint_params(a, b)
    data = _data(inputs, cfg)
    evdata = EvalData.from_dataset(data, device=cfg.device, bn_subset=cfg.bn_subset)
    if inputs.curve is None:
        fitted, path = _stored_fit(inputs, cfg, data, context)
    else:
        fitted, path = _given(inputs, cfg, context.store)
    fitted.to(cfg.device)
    t = np.linspace(0.0, 1.0, cfg.points)
    tag = curve_hash(fitted)  # partial results belong to this exact curve
    paths = {}
    for name, c in (("curve", fitted), ("line", BezierCurve(pa, pb, order=1).to(cfg.device))):
        part = Context(context.store, "curve", f"{context.key}-{name}-{tag}", context.progress)
        paths[name] = evaluate_path(model, c, t, evdata, part, stage=f"evaluating {name}")
    for leftover in (context.store.root / "curve").glob(f"{context.key}-*.partial"):
        leftover.unlink(missing_ok=True)
    return CurveResult(
        t=t,
        curve=paths["curve"].columns,
        line=paths["line"].columns,
        curve_layer_sparsity=paths["curve"].layer_sparsity,
        line_layer_sparsity=paths["line"].layer_sparsity,
        layers=paths["curve"].layers,
        curve_file=str(path),
        config=_settings(cfg, inputs),
        endpoints={"a": {"hash": a.hash, "name": a.name}, "b": {"hash": b.hash, "name": b.name}},
        bn_samples=evdata.bn_samples,
        fit_history=list(fitted.history),
        n_test=len(data.y_test),
        n_train=len(data.y_train),
        curve_zeros_kept=paths["curve"].zeros_kept,
        line_zeros_kept=paths["line"].zeros_kept,
    )


# 2: the curve file is a checksummed artefact of the result
# 3: canonical (sorted-name) curve hash; endpoints by parameter hash; a given curve's key and
#    result hold no fitting settings; train/test subsets
# 4: curve types (polychain), masked curves, B's zeros kept per layer along both paths
KIND = Kind("curve", 4, CurveConfig, CurveResult, _identity, _compute)
