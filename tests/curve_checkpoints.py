"""Tiny digits checkpoints shared by the curve tests (test_curves.py, test_studies_curve.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.curves import CurveConfig
from landscape.models import build_model
from landscape.params import split_state
from landscape.studies import run
from landscape.studies.curve import KIND, CurveInputs, CurveResult

TINY_CNN = {"channels": [4, 8], "hidden": 16}
DIGITS = {"name": "digits", "split_seed": 0}


def curve_study(a, b, cfg: CurveConfig, *, curve=None, **kw) -> CurveResult:
    """The curve study kind, as the CLI and the app run it."""
    return run(KIND, cfg, CurveInputs(a, b, curve), **kw)


def tiny_checkpoint(
    path: Path, seed: int, *, arch: str = "cnn", kwargs: dict | None = None
) -> Checkpoint:
    """A seeded, untrained digits model saved as a checkpoint."""
    kwargs = {"in_shape": [1, 8, 8], "num_classes": 10, **(TINY_CNN if kwargs is None else kwargs)}
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    meta = {"arch": {"name": arch, "kwargs": kwargs}, "data": DIGITS, "metrics": {}}
    save_checkpoint(path, model, meta)
    return load_checkpoint(path)


def model_and_params(ck: Checkpoint):
    """The checkpoint's model and its named parameters."""
    model = ck.build_model()
    return model, split_state(model, ck.state)[0]
