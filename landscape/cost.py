"""Estimated cost of a study from measured per-pass times (one cost model for the app and CLI).

Work is counted in forward passes over the training set (:class:`Cost`); a few timed
evaluations on this machine (:class:`Rates`) turn it into seconds (:func:`estimate`). The
counting functions (``curve_cost``, ``grid_cost``, ...) are pure; :func:`measure_rates` and
:func:`measure_hvp` time the real evaluator and Hessian-vector product. No streamlit here: the
app caches the measurements itself.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from landscape.checkpoints import Checkpoint
    from landscape.evaluate import EvalData

__all__ = [
    "CALIBRATION_FILE",
    "CONFIRM_S",
    "Calibration",
    "calibration",
    "range_text",
    "record_timing",
    "HVP_PASSES",
    "TRAIN_EPOCH_PASSES",
    "Cost",
    "confirm_limit",
    "Rates",
    "curve_cost",
    "estimate",
    "estimate_text",
    "grid_cost",
    "hessian_cost",
    "measure_hvp",
    "measure_rates",
    "seconds_text",
    "study_cost",
    "sweep_cost",
]

TRAIN_EPOCH_PASSES = 3.0  # one training epoch (forward + backward) ~ 3 forward passes
HVP_PASSES = 4.0  # one Hessian-vector product (double backward) ~ 4 forward passes of its data
CONFIRM_S = 1800.0  # studies estimated longer than this need --yes (env LANDSCAPE_CONFIRM_S)
_REPEATS = 3  # timings per rate; the fastest counts (others' load only slows it)
_POINTS = 3  # weight points per timed evaluation (the evaluator's set-up is paid once a call)
CALIBRATION_FILE = "calibration.json"  # in the store's root: estimated and actual s of jobs
_KEEP = 20  # timings kept per machine, device and study kind (the newest)
_NOISE = 1.25  # the narrowest range shown: x/1.25 to x*1.25 (load on a shared machine)
_UNCALIBRATED = (0.5, 2.0)  # the range before any job of a kind ran here: the probe alone


@dataclass(frozen=True)
class Cost:
    """What a computation costs, in the units its time is measured in.

    Attributes:
        passes: training-set forward passes outside point evaluation (a curve fit, training).
        points: weight points evaluated (BN recalibration, train and test pass each).
        bn_subset: BN recalibration samples of each point (None: the whole training set).
        hvps: Hessian-vector products.
        hvp_samples: training samples each product averages over (0: the whole training set).
    """

    passes: float = 0.0
    points: int = 0
    bn_subset: int | None = None
    hvps: float = 0.0
    hvp_samples: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.passes + other.passes,
            self.points + other.points,
            self.bn_subset,
            self.hvps + other.hvps,
            self.hvp_samples or other.hvp_samples,
        )


@dataclass(frozen=True)
class Rates:
    """Measured seconds per pass and per point on this machine (one checkpoint, one device)."""

    per_pass: float  # one forward pass over the training set
    per_point: float  # one point of evaluate_points (BN recalibration, train and test pass)
    n_train: int
    n_test: int

    def point_passes(self, bn_subset: int | None) -> float:
        """Forward passes (in training-set units) of one evaluated point: BN, train, test."""
        bn = 1.0 if bn_subset is None else min(bn_subset, self.n_train) / self.n_train
        return bn + 1.0 + self.n_test / self.n_train


def curve_cost(cfg) -> Cost:
    """A curve study (``CurveConfig``): the fit, then the curve and the line at ``points`` t."""
    fit = TRAIN_EPOCH_PASSES * cfg.epochs if cfg.order > 1 else 0.0
    return Cost(passes=fit, points=2 * cfg.points, bn_subset=cfg.bn_subset)


def grid_cost(cfg, *, points: int | None = None) -> Cost:
    """A grid study (``PlaneConfig``/``PCAConfig``): ``grid**2`` points, or ``points`` (slices)."""
    n = cfg.grid**2 if points is None else points
    return Cost(points=n, bn_subset=cfg.bn_subset)


def hessian_cost(cfg, n_train: int) -> Cost:
    """A Hessian study (``HessianConfig``) on a training set of ``n_train`` samples."""
    samples = n_train if cfg.subset is None else min(cfg.subset, n_train)
    hvps = max(2 * cfg.k + 1, 20) + 2  # ARPACK's Krylov size: one Lanczos run, typically
    return Cost(passes=1.0, hvps=hvps, hvp_samples=samples)  # BN recalibration, products


def study_cost(kind: str, cfg, n_train: int) -> Cost:
    """The cost of a study kind (``landscape.studies``) with its config ``cfg``.

    Raises:
        ValueError: a kind without a cost model.
    """
    if kind == "curve":
        return curve_cost(cfg)
    if kind == "hessian":
        return hessian_cost(cfg, n_train)
    if kind in ("plane", "pca", "random_plane", "slice"):
        return grid_cost(cfg, points=cfg.points if kind == "slice" else None)
    if kind == "prune":  # fine-tuning epochs, then one evaluation of train and test
        return Cost(passes=TRAIN_EPOCH_PASSES * cfg.finetune_epochs + 2.0)
    if kind == "masks":
        return Cost()  # reads the snapshots: no forward pass
    if kind == "sweep":
        runs = len(cfg.c) * len(cfg.mu) * len(cfg.seeds)
        return sweep_cost(runs, cfg.train.epochs, magnitude=cfg.magnitude)
    if kind == "frontier":  # one pair: frontier_cost(cfg, rows) for a whole sweep
        return frontier_cost(cfg, 1)
    if kind == "threeway":
        return threeway_cost(cfg)
    raise ValueError(f"no cost model for study kind {kind!r}")


def frontier_cost(cfg, rows: int) -> Cost:
    """A connectivity frontier (``CurveConfig``): one curve study per sweep row."""
    one = curve_cost(cfg)
    return Cost(one.passes * rows, one.points * rows, cfg.bn_subset)


def threeway_cost(cfg) -> Cost:
    """A three-way study (``ThreewayConfig``): the twin, three curves and the plane."""
    twin = Cost(passes=TRAIN_EPOCH_PASSES * cfg.finetune_epochs + 2.0)
    curves = frontier_cost(cfg.curve, 3)
    return twin + curves + grid_cost(cfg.plane)


def sweep_cost(runs: int, epochs: int, *, magnitude: bool = False) -> Cost:
    """A sweep of ``runs`` training runs of ``epochs`` epochs (and their magnitude twins)."""
    return Cost(passes=TRAIN_EPOCH_PASSES * runs * epochs, points=runs if magnitude else 0)


def estimate(cost: Cost, rates: Rates, *, hvp_seconds: float | None = None) -> tuple[float, float]:
    """What a cost amounts to: (forward passes over the training set, seconds).

    Args:
        cost: the work.
        rates: measured on the checkpoint and device the work runs on.
        hvp_seconds: measured seconds of one product at ``cost.hvp_samples``; None: counted
            as :data:`HVP_PASSES` passes over those samples.
    """
    scale = rates.point_passes(cost.bn_subset) / rates.point_passes(None)
    seconds = cost.passes * rates.per_pass + cost.points * rates.per_point * scale
    if cost.hvps:
        if hvp_seconds is None:
            share = (cost.hvp_samples or rates.n_train) / rates.n_train
            hvp_seconds = HVP_PASSES * share * rates.per_pass
        seconds += cost.hvps * hvp_seconds
    return seconds / rates.per_pass, seconds


def seconds_text(seconds: float) -> str:
    """``~0.4 s`` below ten seconds, ``~12 s`` below two minutes, ``~3 min`` below two hours,
    else ``~27 h``."""
    if seconds < 10:
        return f"~{seconds:.1f} s"
    if seconds >= 7200:
        return f"~{seconds / 3600:.0f} h"
    return f"~{seconds:.0f} s" if seconds < 120 else f"~{seconds / 60:.0f} min"


def estimate_text(cost: Cost, rates: Rates, *, hvp_seconds: float | None = None) -> str:
    """One line for the terminal: ``estimated ~12 s (540 passes at 22.1 ms)``."""
    passes, seconds = estimate(cost, rates, hvp_seconds=hvp_seconds)
    per = 1000 * rates.per_pass
    return f"estimated {seconds_text(seconds)} ({passes:,.0f} passes at {per:.1f} ms)"


def confirm_limit() -> float:
    """Seconds of estimated work above which the CLI asks for ``--yes``.

    ``$LANDSCAPE_CONFIRM_S`` if set (``inf`` never asks, ``0`` always does), else
    :data:`CONFIRM_S`.

    Raises:
        ValueError: the variable is not a number >= 0.
    """
    raw = os.environ.get("LANDSCAPE_CONFIRM_S", "").strip()
    if not raw:
        return CONFIRM_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"LANDSCAPE_CONFIRM_S must be a number of seconds >= 0, got {raw!r}")
    return value


def _fastest(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _setup(ckpt: Checkpoint, device: str, data_root: str | None):
    from landscape.checkpoints import checkpoint_dataset
    from landscape.evaluate import EvalData
    from landscape.params import split_state

    data = checkpoint_dataset(ckpt, data_root=data_root)
    data = EvalData.from_dataset(data, device=device)
    model = ckpt.build_model().to(device)
    params = {n: p.to(device) for n, p in split_state(model, ckpt.state)[0].items()}
    return model, params, data


def _head(data: EvalData, samples: int) -> EvalData:
    n_test = max(1, round(samples * len(data.y_test) / len(data.y_train)))
    return replace(
        data,
        x_train=data.x_train[:samples],
        y_train=data.y_train[:samples],
        x_test=data.x_test[:n_test],
        y_test=data.y_test[:n_test],
    )


def measure_rates(
    ckpt: Checkpoint,
    *,
    device: str = "cpu",
    data_root: str | None = None,
    samples: int | None = None,
    repeats: int = _REPEATS,
    points: int = _POINTS,
) -> Rates:
    """Time ``evaluate_points`` on a checkpoint: seconds per training-set pass and per point.

    Args:
        ckpt: the checkpoint (its architecture and data set).
        device: where the work will run.
        data_root: folder of the data set's files (default: as its metadata records).
        samples: time on the first ``samples`` training samples (and as large a share of the
            test set) and scale up: quick on large data sets; None: the whole data.
        repeats: timed repeats after a warm-up; the fastest counts.
        points: weight points per timed evaluation.
    """
    import numpy as np

    from landscape.evaluate import evaluate_points

    model, params, data = _setup(ckpt, device, data_root)
    n_train, n_test = len(data.y_train), len(data.y_test)
    timed = data if samples is None or samples >= n_train else _head(data, samples)
    # The same point again as a studies evaluate theirs: a basis of two vectors (so the
    # evaluator's first-layer reuse is on, as on every curve, line, plane and slice).
    coords = np.full((points, 2), 0.5)
    basis = [params, params]
    seconds = _fastest(lambda: evaluate_points(model, basis, coords, timed), repeats)
    small = Rates(0.0, seconds / points, len(timed.y_train), len(timed.y_test))
    per_pass = small.per_point / small.point_passes(None) * n_train / small.n_train
    full = Rates(per_pass, 0.0, n_train, n_test)
    return replace(full, per_point=per_pass * full.point_passes(None))


def measure_hvp(
    ckpt: Checkpoint, samples: int, *, device: str = "cpu", data_root: str | None = None
) -> float:
    """Seconds of one Hessian-vector product over the first ``samples`` training samples.

    Timed at the study's own sample count: the cost per sample grows with the batch here.
    """
    from landscape.evaluate import bn_statistics
    from landscape.hessian import hvp
    from landscape.params import flatten

    model, params, data = _setup(ckpt, device, data_root)
    buffers = bn_statistics(model, params, data)
    x, y, vec = data.x_train[:samples], data.y_train[:samples], flatten(params)
    return _fastest(lambda: hvp(model, params, buffers, x, y, vec), repeats=_REPEATS)


@dataclass(frozen=True)
class Calibration:
    """How far this machine's earlier jobs of one kind ran from their estimates.

    Attributes:
        ratio: actual / estimated seconds, the median of the earlier jobs (1: none yet).
        low: the smallest ratio to expect (the range shown starts at ``low * estimate``).
        high: the largest.
        jobs: how many earlier jobs it is made of.
    """

    ratio: float = 1.0
    low: float = _UNCALIBRATED[0]
    high: float = _UNCALIBRATED[1]
    jobs: int = 0
    overhead: float = 0.0  # seconds every job of the kind pays (set-up), when jobs differ in size

    def apply(self, seconds: float) -> tuple[float, float, float]:
        """An estimate made from the probe's rates as (calibrated, low, high) seconds."""
        mid = seconds * self.ratio + self.overhead
        return mid, mid * self.low / self.ratio, mid * self.high / self.ratio


def _machine_key(kind: str, device: str) -> str:
    # Timings of another machine sharing the store (a network home) say nothing about this one.
    return f"{platform.node() or 'unknown'}|{device}|{kind}"


def _read_calibration(root: str | Path) -> dict[str, list[list[float]]]:
    try:
        data = json.loads((Path(root) / CALIBRATION_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_timing(
    root: str | Path, kind: str, estimated_s: float, actual_s: float, *, device: str = "cpu"
) -> None:
    """Keep a finished job's (estimated, actual) seconds for :func:`calibration`.

    Args:
        root: the store's root folder.
        kind: the study kind.
        estimated_s: the uncalibrated estimate (:func:`estimate`) made before it ran.
        actual_s: its wall time.
        device: where it ran.
    """
    from landscape.store import atomic_write

    if not (estimated_s > 0 and actual_s > 0):
        return
    data = _read_calibration(root)
    key = _machine_key(kind, device)
    entries = [e for e in data.get(key, []) if isinstance(e, list) and len(e) == 2]
    data[key] = [*entries, [float(estimated_s), float(actual_s)]][-_KEEP:]
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(root) / CALIBRATION_FILE, json.dumps(data, indent=1).encode())


def calibration(root: str | Path, kind: str, *, device: str = "cpu") -> Calibration:
    """The ratio actual / estimated of this machine's earlier jobs of ``kind`` in the store.

    The range spans the ratios seen (at least x/1.25 to x*1.25 around their median, at most
    x/3 to x*3); with no earlier job, the probe's estimate alone, from half to twice it.
    """
    entries = _read_calibration(root).get(_machine_key(kind, device), [])
    pairs = [(e, a) for e, a in entries if e > 0 and a > 0]
    if not pairs:
        return Calibration()
    slope, overhead = _fit(pairs)
    ratios = [(a - overhead) / e for e, a in pairs]  # what is left once set-up is paid
    mid = slope
    low = min(max(min(ratios), mid / 3), mid / _NOISE)
    high = max(min(max(ratios), mid * 3), mid * _NOISE)
    return Calibration(mid, low, high, len(pairs), overhead)


def _fit(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """actual = slope * estimate + overhead by least squares when the jobs differ in size
    (3x or more between the smallest and the largest), else the median ratio alone."""
    est = [e for e, _ in pairs]
    ratio = statistics.median(a / e for e, a in pairs)
    if len(pairs) < 2 or max(est) < 3 * min(est):
        return ratio, 0.0
    slope, overhead = statistics.linear_regression(est, [a for _, a in pairs])
    if slope <= 0 or overhead < 0:  # noise beats the fit: keep the plain ratio
        return ratio, 0.0
    return slope, overhead


def range_text(low: float, high: float) -> str:
    """``~8-12 s``, ``~2-4 min`` or ``~1-2 h``: a range in the unit of its upper end."""
    if high < 10:
        return f"~{low:.1f}-{high:.1f} s"
    if high < 120:
        return f"~{low:.0f}-{high:.0f} s"
    if high < 7200:
        return f"~{low / 60:.0f}-{high / 60:.0f} min"
    return f"~{low / 3600:.0f}-{high / 3600:.0f} h"
