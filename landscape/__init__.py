"""landscape: how dense (SGD) and sparse (gRDA) minima of a neural network are connected."""

__version__ = "0.1.0"  # defined first: the store hashes it into every result key

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from landscape.curves import BezierCurve, CurveConfig, curve_study, fit_curve, load_curve
from landscape.data import NORMALIZATIONS, DataError, Dataset, load_dataset
from landscape.evaluate import EvalData, evaluate_point, evaluate_points
from landscape.hessian import HessianConfig, hessian_study, hvp, top_eigen
from landscape.models import MODELS, RESEARCH_ARCHS, build_model, prunable_names, resolve_arch
from landscape.optim import GRDA
from landscape.pruning import magnitude_prune, mask_stability, prune_checkpoint
from landscape.research import export_research, load_any, open_research, recognize
from landscape.store import Store
from landscape.surfaces import (
    PCAConfig,
    PlaneConfig,
    pca_study,
    plane_study,
    random_plane_study,
    slice_study,
)
from landscape.sweep import SweepConfig, pareto_front, run_sweep
from landscape.train import TrainConfig, train

__all__ = [
    "GRDA",
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
    "HessianConfig",
    "PCAConfig",
    "PlaneConfig",
    "Store",
    "SweepConfig",
    "TrainConfig",
    "build_model",
    "curve_study",
    "evaluate_point",
    "evaluate_points",
    "export_research",
    "fit_curve",
    "hessian_study",
    "hvp",
    "load_any",
    "load_checkpoint",
    "load_curve",
    "load_dataset",
    "magnitude_prune",
    "mask_stability",
    "open_research",
    "pareto_front",
    "pca_study",
    "plane_study",
    "prunable_names",
    "prune_checkpoint",
    "random_plane_study",
    "recognize",
    "resolve_arch",
    "run_sweep",
    "save_checkpoint",
    "slice_study",
    "top_eigen",
    "train",
]
