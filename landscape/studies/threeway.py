"""Three-way study: SGD, gRDA and the magnitude-pruned SGD at gRDA's sparsity, side by side.

The magnitude-pruned twin of the SGD checkpoint is made by the prune kind at the gRDA
checkpoint's sparsity; the three curves (SGD-gRDA, SGD-magnitude, gRDA-magnitude) by the curve
kind; the plane through the three minima by the plane kind (A = SGD, B = gRDA, third = the
twin). Each is that kind's own stored result, so the parts are reused and found on their own;
this kind's result is the table of the three pairs and the keys of the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from landscape.checkpoints import Checkpoint
from landscape.configs import ThreewayConfig
from landscape.models import prunable_names
from landscape.params import sparsity
from landscape.studies import curve, plane, prune
from landscape.studies.base import Context, Kind, Result, config_identity, run, study_key
from landscape.studies.common import data_identity
from landscape.studies.plane import PlaneInputs

__all__ = ["KIND", "PAIRS", "ThreewayConfig", "ThreewayInputs", "ThreewayResult", "twin_sparsity"]

PAIRS = (("SGD", "gRDA"), ("SGD", "magnitude"), ("gRDA", "magnitude"))  # (t = 0, t = 1)


@dataclass(frozen=True)
class ThreewayInputs:
    """The dense (SGD) and the sparse (gRDA) checkpoint."""

    sgd: Checkpoint
    grda: Checkpoint


@dataclass
class ThreewayResult(Result):
    """One row per pair of :data:`PAIRS`.

    Attributes:
        pairs: "SGD-gRDA", "SGD-magnitude", "gRDA-magnitude".
        curve_barrier, line_barrier: (3,) train-loss barriers (largest excess over the chord).
        acc_dip: (3,) the curve's largest test-accuracy dip below the worse endpoint (>= 0).
        end_acc: (3, 2) test accuracy at t = 0 and t = 1.
        end_loss: (3, 2) train loss at t = 0 and t = 1.
        sparsity: the gRDA checkpoint's sparsity, the twin's target.
        twin_sparsity: the magnitude-pruned twin's sparsity.
        curve_keys: the three curve results' keys; plane_key, prune_key: the plane's and the
            twin's (``landscape.studies.find`` or the store read them).
        pruned_path, pruned_hash: the twin's checkpoint in the store.
        n_test: test samples behind each accuracy.
    """

    pairs: list[str]
    curve_barrier: np.ndarray
    line_barrier: np.ndarray
    acc_dip: np.ndarray
    end_acc: np.ndarray
    end_loss: np.ndarray
    sparsity: float
    twin_sparsity: float
    curve_keys: list[str]
    plane_key: str
    prune_key: str
    pruned_path: str
    pruned_hash: str
    n_test: int | None = None


def twin_sparsity(ckpt: Checkpoint) -> float:
    """Fraction of exact zeros among the prunable weights of ``ckpt``."""
    return float(sparsity(ckpt.state, prunable_names(ckpt.skeleton()))["zero"])


def _prune_config(cfg: ThreewayConfig, target: float) -> prune.PruneConfig:
    c = cfg.curve
    return prune.PruneConfig(
        sparsity=target,
        scope=cfg.scope,
        finetune_epochs=cfg.finetune_epochs,
        device=c.device,
        data_root=c.data_root,
    )


def _identity(cfg: ThreewayConfig, inputs: ThreewayInputs) -> dict[str, Any]:
    cfg.curve.check()
    target = twin_sparsity(inputs.grda)
    prune_cfg = _prune_config(cfg, target)
    return {
        "sgd": inputs.sgd.hash,
        "grda": inputs.grda.hash,
        "prune": study_key(prune.KIND, prune_cfg, prune.PruneInputs(inputs.sgd)),
        "curve": config_identity(cfg.curve),
        "plane": config_identity(cfg.plane),
        "data": data_identity(inputs.sgd, cfg.plane),
    }


def _row(res: curve.CurveResult) -> dict[str, Any]:
    acc = np.asarray(res.curve["test_acc"], dtype=float)
    loss = np.asarray(res.curve["train_loss"], dtype=float)
    return {
        "curve": res.path("curve").barrier("train_loss").height,
        "line": res.path("line").barrier("train_loss").height,
        "dip": max(float(min(acc[0], acc[-1]) - np.nanmin(acc)), 0.0),
        "acc": [float(acc[0]), float(acc[-1])],
        "loss": [float(loss[0]), float(loss[-1])],
        "n_test": res.n_test,
    }


def _compute(cfg: ThreewayConfig, inputs: ThreewayInputs, context: Context) -> ThreewayResult:
    store, progress = context.store, context.progress
    target = twin_sparsity(inputs.grda)
    prune_cfg = _prune_config(cfg, target)
    prune_in = prune.PruneInputs(inputs.sgd)
    twin = prune.prune(prune_cfg, prune_in, store=store, progress=progress)
    points = {
        "SGD": replace(inputs.sgd, name="SGD"),
        "gRDA": replace(inputs.grda, name="gRDA"),
        "magnitude": replace(prune.pruned_checkpoint(twin), name="magnitude"),
    }
    rows, keys = [], []
    for a, b in PAIRS:
        ci = curve.CurveInputs(points[a], points[b])
        rows.append(_row(run(curve.KIND, cfg.curve, ci, store=store, progress=progress)))
        keys.append(study_key(curve.KIND, cfg.curve, ci))
    pi = PlaneInputs(points["SGD"], points["gRDA"], third=points["magnitude"])
    run(plane.KIND, cfg.plane, pi, store=store, progress=progress)
    return ThreewayResult(
        pairs=[f"{a}-{b}" for a, b in PAIRS],
        curve_barrier=np.array([r["curve"] for r in rows]),
        line_barrier=np.array([r["line"] for r in rows]),
        acc_dip=np.array([r["dip"] for r in rows]),
        end_acc=np.array([r["acc"] for r in rows]),
        end_loss=np.array([r["loss"] for r in rows]),
        sparsity=target,
        twin_sparsity=float(twin.metrics["sparsity"]),
        curve_keys=keys,
        plane_key=study_key(plane.KIND, cfg.plane, pi),
        prune_key=study_key(prune.KIND, prune_cfg, prune_in),
        pruned_path=twin.path,
        pruned_hash=twin.hash,
        n_test=rows[0]["n_test"],
    )


KIND = Kind("threeway", 1, ThreewayConfig, ThreewayResult, _identity, _compute)
