"""The config dataclasses of training, curves and every study kind, and their checks.

Torch-free (numpy at most), so the command line builds and checks a config before it imports
what runs it: an out-of-range option is one ``error:`` line in well under a second. The
modules that use a config re-export it (``from landscape.train import TrainConfig`` works).
Each field's trailing comment is its documentation and its ``--option``'s help
(:mod:`landscape.cli.options`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CENTRES",
    "CURVE_TYPES",
    "DIRECTIONS",
    "MAX_GRID",
    "MAX_K",
    "MAX_ORDER",
    "MAX_POINTS",
    "MAX_POINTS_PER_PASS",
    "OPTIMIZERS",
    "SCHEDULES",
    "CurveConfig",
    "EvalOptions",
    "HessianConfig",
    "MasksConfig",
    "PCAConfig",
    "PlaneConfig",
    "PruneConfig",
    "RandomPlaneConfig",
    "SliceConfig",
    "SweepConfig",
    "ThreewayConfig",
    "TrainConfig",
    "check_grid",
    "check_range",
    "lr_factor",
]

MAX_GRID = 2001  # points per axis of a plane at most (4e6 points: about a day on a CPU)
MAX_POINTS = 100_001  # points of a slice or a curve (or a curve projected into a plane) at most
MAX_POINTS_PER_PASS = 1024  # weight points evaluated together at most
MAX_K = 200  # top eigenpairs at most (each needs its own Lanczos vectors)
MAX_ORDER = 20  # higher orders lose the Bernstein weights to rounding (NaN paths)
CURVE_TYPES = ("bezier", "polychain")  # the weights of the control points along t
OPTIMIZERS = ("sgd", "grda")
SCHEDULES = ("const", "paper")
CENTRES = ("final", "mean")
DIRECTIONS = ("delta", "random", "eigen")


def check_range(name: str, value: float, lo: float, hi: float = math.inf) -> None:
    """ValueError unless ``lo <= value <= hi`` (and finite): one line naming the option."""
    if not (math.isfinite(value) and lo <= value <= hi):
        bounds = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        raise ValueError(
            f"{name} must be {'in ' if math.isfinite(hi) else ''}{bounds}, got {value}"
        )


def check_grid(grid: int, margin: float) -> None:
    """ValueError unless 2 <= grid <= MAX_GRID and 0 <= margin <= 100."""
    check_range("grid (points per axis)", grid, 2, MAX_GRID)
    check_range("margin", margin, 0, 100)


def lr_factor(schedule: str, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of training."""
    if schedule == "const":
        return 1.0
    if schedule == "paper":
        if progress <= 0.5:
            return 1.0
        if progress >= 0.9:
            return 0.01
        return 1.0 - 0.99 * (progress - 0.5) / 0.4
    raise ValueError(f"Unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in run.json and checkpoint metadata)."""

    data: str = "digits"  # digits (bundled), or a source in data_root: landscape.data.DATASETS
    data_root: str | None = None  # folder of the data set's files, or the .npz file
    image_size: str | None = None  # imagefolder: resize to HxW, e.g. 32x32; None: the 1st image's
    image_channels: int | None = None  # imagefolder: 1 grey or 3 RGB; None: the 1st image's
    split_seed: int = 0  # train/test split of digits
    normalize: str = "none"  # per-channel normalisation (landscape.data.NORMALIZATIONS)
    arch: str = "cnn"  # registry name in landscape.models
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments
    optimizer: str = "sgd"  # sgd or grda (grda with momentum > 0 is gRDAM)
    lr: float = 0.05  # base learning rate
    momentum: float = 0.0  # heavy-ball momentum (SGD) / gRDAM buffer
    c: float = 0.0  # gRDA sparsity strength
    mu: float = 0.7  # gRDA time exponent of the threshold
    epochs: int = 30  # passes over the training data
    batch_size: int = 64  # mini-batch size
    lr_schedule: str = "const"  # const, or paper: const to 50%, linear to 1% at 90%
    seed: int = 0  # model init (unless init is given) and batch order
    snapshots: int = 10  # trajectory snapshots, spread over training, first = initial weights
    init: str | None = None  # start from this checkpoint instead of a seeded initialisation
    device: str = "cpu"  # cpu or cuda

    def check(self) -> None:
        """Raise ValueError on an unknown optimizer or schedule, or a count out of range."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}"
            )
        lr_factor(self.lr_schedule, 0.0)  # validates the schedule name before any work
        if self.epochs < 1 or self.batch_size < 1 or self.snapshots < 0:
            raise ValueError("epochs and batch_size must be >= 1 and snapshots >= 0")


@dataclass
class CurveConfig:
    """How a curve between two checkpoints is fitted and evaluated (stored with the result)."""

    order: int = 2  # order k: k - 1 trainable bends; 1 is the straight line
    curve_type: str = "bezier"  # bezier (Bernstein weights) or polychain (piecewise linear)
    masked: bool = False  # keep the curve at 0 where B's prunable weights are (sparse path)
    epochs: int = 20  # passes over the training data while fitting the bends; 0: no fit
    lr: float = 0.05  # SGD learning rate of the bends
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty on the bends (the endpoints are fixed)
    batch_size: int = 128  # mini-batch size of the fit; one t ~ U(0, 1) per mini-batch
    lr_schedule: str = "paper"  # const, or paper: const to 50%, linear to 1% at 90%
    seed: int = 0  # batch order and the t drawn per mini-batch
    points: int = 61  # evaluated values of t, evenly spaced over [0, 1]
    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    train_subset: int | None = None  # fit and evaluate on N training samples, stratified
    test_subset: int | None = None  # evaluate on N test samples, stratified (None: all)
    subset_seed: int = 0  # which samples train_subset and test_subset draw
    data_root: str | None = None  # folder with the mnist / cifar10 files of the endpoints
    device: str = "cpu"  # cpu or cuda

    def check(self) -> None:
        """Raise ValueError on the first invalid field."""
        if not 1 <= self.order <= MAX_ORDER:
            raise ValueError(
                f"order must be in [1, {MAX_ORDER}] (1 is the straight line), got {self.order}"
            )
        if self.curve_type not in CURVE_TYPES:
            raise ValueError(
                f"curve_type must be one of {', '.join(CURVE_TYPES)}, got {self.curve_type!r}"
            )
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
        if not 2 <= self.points <= MAX_POINTS:
            raise ValueError(
                f"points must be in [2, {MAX_POINTS}] (t = 0 and t = 1 at least), got {self.points}"
            )
        for name in ("bn_subset", "train_subset", "test_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        lr_factor(self.lr_schedule, 0.0)  # raises on an unknown schedule name


@dataclass
class EvalOptions:
    """How weight points are evaluated: the options every evaluating study kind shares.

    Subclasses check their own fields in ``__post_init__`` (calling this one), so an
    out-of-range option fails when the config is made, before anything runs or is written.
    """

    bn_subset: int | None = None  # recalibrate BN on the first N training samples (None: all)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files
    points_per_pass: int | None = None  # speed only; None: 16 on GPUs without BN, else 1
    train_subset: int | None = None  # evaluate on N training samples, stratified (None: all)
    test_subset: int | None = None  # evaluate on N test samples, stratified (None: all)
    subset_seed: int = 0  # which samples train_subset and test_subset draw

    def __post_init__(self) -> None:
        for name in ("bn_subset", "train_subset", "test_subset"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1)
        if self.points_per_pass is not None:
            check_range("points_per_pass", self.points_per_pass, 1, MAX_POINTS_PER_PASS)


@dataclass
class PlaneConfig(EvalOptions):
    """How a plane (or a slice) is evaluated."""

    grid: int = 21  # points per axis
    margin: float = 0.2  # fraction of the points' extent added on each side of the grid
    points_on_curve: int = 61  # curve points projected into the plane (when a curve is given)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self.grid, self.margin)
        check_range("points_on_curve", self.points_on_curve, 2, MAX_POINTS)


@dataclass
class PCAConfig(EvalOptions):
    """How the PCA plane of training trajectories is built and evaluated."""

    grid: int = 21  # points per axis
    margin: float = 0.2  # fraction of the trajectories' extent added on each side of the grid
    centre: str = "final"  # "final": final weights of the first run; "mean": snapshots' mean

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self.grid, self.margin)


@dataclass
class RandomPlaneConfig(EvalOptions):
    """The random plane's grid, directions and evaluation."""

    grid: int = 21  # points per axis
    span: float = 1.0  # the grid covers [-span, span]^2
    seed: int = 0  # seed of the two directions

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self.grid, 0.0)
        if not 0 < self.span <= 1e6:
            raise ValueError(f"span must be in (0, 1e6], got {self.span}")


@dataclass
class HessianConfig:
    """What the Hessian analysis computes and on which data."""

    k: int = 10  # number of top eigenpairs
    subset: int | None = None  # training samples the Hessian averages over (None: all)
    seed: int = 0  # Lanczos start vector and the random comparison direction
    tol: float = 1e-3  # relative accuracy of the eigenvalues (ARPACK tol)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files

    def __post_init__(self) -> None:
        check_range("k", self.k, 1, MAX_K)
        if self.subset is not None:
            check_range("subset", self.subset, 1)
        check_range("tol", self.tol, 0, 1)


@dataclass
class SliceConfig(EvalOptions):
    """The slice's direction, points and evaluation."""

    direction: str = "delta"  # delta (B - A), random or eigen (top Hessian eigenvector at A)
    points: int = 41  # number of values of s
    span: float | None = (
        None  # s in [-span, 1 + span] for delta (None: 0.5), else [-span, span] (None: 1)
    )
    seed: int = 0  # seed of the random direction
    hessian: HessianConfig = field(default_factory=lambda: HessianConfig(k=1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}"
            )
        check_range("points", self.points, 2, MAX_POINTS)
        if self.span is None:
            self.span = 0.5 if self.direction == "delta" else 1.0
        if self.span < 0 or (self.span == 0 and self.direction != "delta"):
            raise ValueError(f"span must be > 0, got {self.span}")
        check_range("span", self.span, 0, 1e6)

    @property
    def s(self) -> np.ndarray:
        lo, hi = (
            (-self.span, 1.0 + self.span) if self.direction == "delta" else (-self.span, self.span)
        )
        return np.linspace(lo, hi, self.points)


@dataclass
class PruneConfig:
    """Magnitude pruning to a target sparsity and the optional masked fine-tuning after it."""

    sparsity: float = 0.9  # target fraction of zeros among the prunable weights, in [0, 1]
    scope: str = "global"  # global (one threshold) or layer (every tensor to the sparsity)
    finetune_epochs: int = 0  # epochs of masked SGD after pruning (0: none)
    lr: float = 0.01  # fine-tuning learning rate
    batch_size: int = 64  # fine-tuning batch size
    seed: int = 0  # fine-tuning batch order
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files


@dataclass
class MasksConfig:
    """When a run's zero-mask counts as settled."""

    tol: float = 0.01  # fraction of flipped prunable weights below which the mask is unchanged


@dataclass
class ThreewayConfig:
    """The curves, the plane and the magnitude pruning of a three-way study."""

    curve: CurveConfig = field(default_factory=CurveConfig)  # fit and evaluation of each curve
    plane: PlaneConfig = field(default_factory=PlaneConfig)  # the plane through the three
    scope: str = "global"  # magnitude pruning scope: global (one threshold) or layer
    finetune_epochs: int = 0  # masked SGD epochs after pruning the SGD twin (0: none)


@dataclass
class SweepConfig:
    """A grid of gRDA runs and, optionally, the magnitude-pruning baseline beside it."""

    c: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.005])  # gRDA strengths
    mu: list[float] = field(default_factory=lambda: [0.51, 0.55, 0.6, 0.7])  # time exponents
    seeds: list[int] = field(default_factory=lambda: [0])  # batch-order seeds
    # Options shared by every run; its optimizer must be grda, and c, mu, seed are replaced by
    # the grid's (seed still seeds the shared initial checkpoint when train.init is None).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="grda"))
    magnitude: bool = False  # also magnitude-prune the SGD model at every run's sparsity
    sgd: str | None = None  # SGD run folder or checkpoint for the magnitude baseline
    scope: str = "global"  # magnitude pruning scope: global or layer
    finetune_epochs: int = 0  # masked SGD epochs after magnitude pruning (train.lr, batch_size)
    workers: int = 1  # training processes (this one too) taking runs from one queue; the runs
    # are the same bytes with any number (each seeds itself)
