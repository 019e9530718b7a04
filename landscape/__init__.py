"""landscape: how dense (SGD) and sparse (gRDA) minima of a neural network are connected.

The public names below are imported on first use (PEP 562), so ``import landscape`` and the
command line's ``--help`` do not load torch; ``from landscape import X`` works as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {  # public name: the module that defines it
    "CurveConfig": "landscape.configs",
    "HessianConfig": "landscape.configs",
    "PCAConfig": "landscape.configs",
    "PlaneConfig": "landscape.configs",
    "RandomPlaneConfig": "landscape.configs",
    "SliceConfig": "landscape.configs",
    "SweepConfig": "landscape.configs",
    "TrainConfig": "landscape.configs",
    "Checkpoint": "landscape.checkpoints",
    "CheckpointError": "landscape.checkpoints",
    "load_checkpoint": "landscape.checkpoints",
    "save_checkpoint": "landscape.checkpoints",
    "BezierCurve": "landscape.curves",
    "fit_curve": "landscape.curves",
    "load_curve": "landscape.curves",
    "NORMALIZATIONS": "landscape.data",
    "DataError": "landscape.data",
    "Dataset": "landscape.data",
    "load_dataset": "landscape.data",
    "METRICS": "landscape.evaluate",
    "EvalData": "landscape.evaluate",
    "Evaluator": "landscape.evaluate",
    "bn_statistics": "landscape.evaluate",
    "evaluate_model": "landscape.metrics",
    "evaluate_point": "landscape.evaluate",
    "evaluate_points": "landscape.evaluate",
    "hvp": "landscape.hessian",
    "top_eigen": "landscape.hessian",
    "MODELS": "landscape.models",
    "RESEARCH_ARCHS": "landscape.models",
    "build_model": "landscape.models",
    "prunable_names": "landscape.models",
    "resolve_arch": "landscape.models",
    "GRDA": "landscape.optim",
    "magnitude_prune": "landscape.pruning",
    "mask_stability": "landscape.pruning",
    "prune_checkpoint": "landscape.pruning",
    "Recorder": "landscape.recorder",
    "export_research": "landscape.research",
    "load_any": "landscape.research",
    "open_research": "landscape.research",
    "recognize": "landscape.research",
    "Store": "landscape.store",
    "KINDS": "landscape.studies",
    "find": "landscape.studies",
    "run": "landscape.studies",
    "CurveInputs": "landscape.studies.curve",
    "CurveResult": "landscape.studies.curve",
    "HessianInputs": "landscape.studies.hessian",
    "HessianResult": "landscape.studies.hessian",
    "PCAInputs": "landscape.studies.pca",
    "PCAResult": "landscape.studies.pca",
    "PlaneInputs": "landscape.studies.plane",
    "PlaneResult": "landscape.studies.plane",
    "RandomPlaneInputs": "landscape.studies.random_plane",
    "RandomPlaneResult": "landscape.studies.random_plane",
    "SliceInputs": "landscape.studies.slices",
    "SliceResult": "landscape.studies.slices",
    "pareto_front": "landscape.sweep",
    "run_sweep": "landscape.sweep",
    "train": "landscape.train",
}

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
    from landscape.configs import (
        CurveConfig,
        HessianConfig,
        PCAConfig,
        PlaneConfig,
        RandomPlaneConfig,
        SliceConfig,
        SweepConfig,
        TrainConfig,
    )
    from landscape.curves import BezierCurve, fit_curve, load_curve
    from landscape.data import NORMALIZATIONS, DataError, Dataset, load_dataset
    from landscape.evaluate import (
        METRICS,
        EvalData,
        Evaluator,
        bn_statistics,
        evaluate_point,
        evaluate_points,
    )
    from landscape.hessian import hvp, top_eigen
    from landscape.metrics import evaluate_model
    from landscape.models import MODELS, RESEARCH_ARCHS, build_model, prunable_names, resolve_arch
    from landscape.optim import GRDA
    from landscape.pruning import magnitude_prune, mask_stability, prune_checkpoint
    from landscape.recorder import Recorder
    from landscape.research import export_research, load_any, open_research, recognize
    from landscape.store import Store
    from landscape.studies import KINDS, find, run
    from landscape.studies.curve import CurveInputs, CurveResult
    from landscape.studies.hessian import HessianInputs, HessianResult
    from landscape.studies.pca import PCAInputs, PCAResult
    from landscape.studies.plane import PlaneInputs, PlaneResult
    from landscape.studies.random_plane import RandomPlaneInputs, RandomPlaneResult
    from landscape.studies.slices import SliceInputs, SliceResult
    from landscape.sweep import pareto_front, run_sweep
    from landscape.train import train


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # once: later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``landscape.train`` stays the function ``train`` after the submodule of that name loads
    (the import system sets a package attribute per submodule), as the eager imports had it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
