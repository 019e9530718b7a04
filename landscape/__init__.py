"""landscape: how dense (SGD) and sparse (gRDA) minima of a neural network are connected."""

__version__ = "0.1.0"

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from landscape.curves import BezierCurve, CurveConfig, fit_curve, load_curve
from landscape.data import NORMALIZATIONS, DataError, Dataset, load_dataset
from landscape.evaluate import (
    METRICS,
    EvalData,
    Evaluator,
    bn_statistics,
    evaluate_model,
    evaluate_point,
    evaluate_points,
)
from landscape.hessian import hvp, top_eigen
from landscape.models import MODELS, RESEARCH_ARCHS, build_model, prunable_names, resolve_arch
from landscape.optim import GRDA
from landscape.pruning import magnitude_prune, mask_stability, prune_checkpoint
from landscape.recorder import Recorder
from landscape.research import export_research, load_any, open_research, recognize
from landscape.store import Store
from landscape.studies import KINDS, find, run
from landscape.studies.curve import CurveInputs, CurveResult
from landscape.studies.hessian import HessianConfig, HessianInputs, HessianResult
from landscape.studies.pca import PCAConfig, PCAInputs, PCAResult
from landscape.studies.plane import PlaneConfig, PlaneInputs, PlaneResult
from landscape.studies.random_plane import RandomPlaneConfig, RandomPlaneInputs, RandomPlaneResult
from landscape.studies.slices import SliceConfig, SliceInputs, SliceResult
from landscape.sweep import SweepConfig, pareto_front, run_sweep
from landscape.train import TrainConfig, train

__all__ = [
    "KINDS",
    "CurveInputs",
    "CurveResult",
    "HessianInputs",
    "HessianResult",
    "PCAInputs",
    "PCAResult",
    "PlaneInputs",
    "PlaneResult",
    "RandomPlaneConfig",
    "RandomPlaneInputs",
    "RandomPlaneResult",
    "SliceConfig",
    "SliceInputs",
    "SliceResult",
    "find",
    "run",
    "GRDA",
    "METRICS",
    "MODELS",
    "NORMALIZATIONS",
    "RESEARCH_ARCHS",
    "BezierCurve",
    "Checkpoint",
    "CheckpointError",
    "CurveConfig",
    "DataError",
    "Dataset",
    "EvalData",
    "Evaluator",
    "HessianConfig",
    "PCAConfig",
    "PlaneConfig",
    "Recorder",
    "Store",
    "SweepConfig",
    "TrainConfig",
    "bn_statistics",
    "build_model",
    "evaluate_model",
    "evaluate_point",
    "evaluate_points",
    "export_research",
    "fit_curve",
    "hvp",
    "load_any",
    "load_checkpoint",
    "load_curve",
    "load_dataset",
    "magnitude_prune",
    "mask_stability",
    "open_research",
    "pareto_front",
    "prunable_names",
    "prune_checkpoint",
    "recognize",
    "resolve_arch",
    "run_sweep",
    "save_checkpoint",
    "top_eigen",
    "train",
]
