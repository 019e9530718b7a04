"""The connectivity frontier of a sweep: a curve from the SGD minimum to every model of it.

For every row of a sweep folder (``sweep.json``: gRDA runs and their magnitude-pruned twins)
the curve kind fits and evaluates the curve and the straight line from the SGD checkpoint
(t = 0) to that model (t = 1). Each pair is the curve kind's own stored result, so an
interrupted frontier resumes pair by pair and a pair studied on its own is reused. In a process
group the rows are shared out (row i on rank i % world) and the barriers gathered. The result
holds per row the train- and test-loss barriers of curve and line and the endpoints' losses;
:func:`landscape.verdicts.frontier` says up to which sparsity each method stays connected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.curves import CurveConfig
from landscape.studies import curve
from landscape.studies.base import Context, Kind, Result, run, study_key

__all__ = ["KIND", "FrontierInputs", "FrontierResult", "row_checkpoint", "row_pairs"]

_COLUMNS = ("curve_train", "curve_test", "line_train", "line_test")  # barriers per row


@dataclass(frozen=True)
class FrontierInputs:
    """The sweep folder (its ``sweep.json`` lists the models) and the SGD checkpoint."""

    folder: Path
    sgd: Checkpoint

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @cached_property
    def pairs(self) -> list[tuple[dict[str, Any], curve.CurveInputs]]:
        """:func:`row_pairs`, read once: the key and the computation share the checkpoints."""
        return row_pairs(self)


@dataclass
class FrontierResult(Result):
    """Barriers of the curve and the line from SGD to every model of a sweep.

    Attributes:
        method: (n,) per row "grda" or "magnitude" (the sweep's row kinds).
        c, mu: (n,) the gRDA run's settings (a magnitude row's are its gRDA twin's).
        seed: (n,) its seed.
        sparsity: (n,) the model's sparsity (from the sweep table).
        curve_train, curve_test: (n,) the curve's train- and test-loss barriers (largest
            excess over the chord between the ends).
        line_train, line_test: (n,) the same for the straight line.
        end_train, end_test: (n, 2) train and test loss at SGD (t = 0) and at the model (t = 1).
        end_acc: (n, 2) test accuracy at both ends.
        curve_acc_min: (n,) the curve's lowest test accuracy.
        paths: the models' paths, relative to the sweep folder.
        curve_keys: each pair's curve result key (``landscape.studies.find`` reads it).
        sgd: {"hash", "name"} of the SGD checkpoint.
        n_test: test samples behind each accuracy.
    """

    method: list[str]
    c: np.ndarray
    mu: np.ndarray
    seed: np.ndarray
    sparsity: np.ndarray
    curve_train: np.ndarray
    curve_test: np.ndarray
    line_train: np.ndarray
    line_test: np.ndarray
    end_train: np.ndarray
    end_test: np.ndarray
    end_acc: np.ndarray
    curve_acc_min: np.ndarray
    paths: list[str]
    curve_keys: list[str]
    sgd: dict[str, Any]
    n_test: int | None = None


def _rows(folder: Path) -> list[dict[str, Any]]:
    # landscape.sweep imports the studies package: imported here, when used.
    from landscape.sweep import load_sweep

    return load_sweep(folder).rows


def row_checkpoint(folder: Path, row: dict[str, Any]) -> Checkpoint:
    """The model of a sweep row: a gRDA run's final checkpoint or a pruned checkpoint."""
    path = Path(folder) / row["path"]
    ckpt = load_checkpoint(path / "final.safetensors" if path.is_dir() else path)
    return replace(ckpt, name=f"{row['kind']} c{row['c']:g} mu{row['mu']:g} s{row['seed']}")


def row_pairs(inputs: FrontierInputs) -> list[tuple[dict[str, Any], curve.CurveInputs]]:
    """(sweep row, the curve kind's inputs from SGD to its model) for every row."""
    rows = _rows(inputs.folder)
    return [(r, curve.CurveInputs(inputs.sgd, row_checkpoint(inputs.folder, r))) for r in rows]


def _identity(cfg: CurveConfig, inputs: FrontierInputs) -> dict[str, Any]:
    # The pairs' own keys: a pair whose curve result would change makes this one stale.
    pairs = inputs.pairs
    return {
        "sgd": inputs.sgd.param_hash,
        "rows": [
            {k: r[k] for k in ("kind", "c", "mu", "seed", "sparsity", "path")} for r, _ in pairs
        ],
        "curves": [study_key(curve.KIND, cfg, ci) for _, ci in pairs],
    }


def _summary(res: curve.CurveResult) -> dict[str, Any]:
    """What the frontier keeps of one pair's curve result."""
    cp, lp = res.path("curve"), res.path("line")
    ends = lambda col: [float(res.curve[col][0]), float(res.curve[col][-1])]  # noqa: E731
    return {
        "curve_train": cp.barrier("train_loss").height,
        "curve_test": cp.barrier("test_loss").height,
        "line_train": lp.barrier("train_loss").height,
        "line_test": lp.barrier("test_loss").height,
        "end_train": ends("train_loss"),
        "end_test": ends("test_loss"),
        "end_acc": ends("test_acc"),
        "curve_acc_min": float(np.nanmin(res.curve["test_acc"])),
        "n_test": res.n_test,
    }


def _gather(mine: dict[int, dict[str, Any]], world: int) -> dict[int, dict[str, Any]]:
    """Every rank's summaries, on every rank."""
    if world == 1:
        return mine
    boxes: list[Any] = [None] * world
    dist.all_gather_object(boxes, mine)
    return {i: s for box in boxes for i, s in box.items()}


def _compute(cfg: CurveConfig, inputs: FrontierInputs, context: Context) -> FrontierResult:
    pairs = inputs.pairs
    rank, world = context.shard  # the runner's: the process group's, or (0, 1)
    mine: dict[int, dict[str, Any]] = {}
    for i, (_row, ci) in enumerate(pairs):
        if i % world != rank:
            continue
        if context.progress is not None:
            context.progress(i, len(pairs), f"curve {i + 1} of {len(pairs)}: {ci.b.name}")
        # Each pair alone on this rank (shard (0, 1)): stored by the curve kind, so resumable.
        res = run(curve.KIND, cfg, ci, store=context.store, shard=(0, 1))
        mine[i] = _summary(res)
    done = _gather(mine, world)
    if context.progress is not None:
        context.progress(len(pairs), len(pairs), "frontier")
    rows = [r for r, _ in pairs]
    col = lambda k: np.array([done[i][k] for i in range(len(pairs))], dtype=float)  # noqa: E731
    return FrontierResult(
        method=[r["kind"] for r in rows],
        c=np.array([r["c"] for r in rows], dtype=float),
        mu=np.array([r["mu"] for r in rows], dtype=float),
        seed=np.array([r["seed"] for r in rows], dtype=np.int64),
        sparsity=np.array([r["sparsity"] for r in rows], dtype=float),
        **{k: col(k) for k in _COLUMNS},
        end_train=col("end_train").reshape(-1, 2),
        end_test=col("end_test").reshape(-1, 2),
        end_acc=col("end_acc").reshape(-1, 2),
        curve_acc_min=col("curve_acc_min"),
        paths=[r["path"] for r in rows],
        curve_keys=[study_key(curve.KIND, cfg, ci) for _, ci in pairs],
        sgd={"hash": inputs.sgd.hash, "name": inputs.sgd.name},
        n_test=next((s["n_test"] for s in done.values() if s["n_test"]), None),
    )


KIND = Kind("frontier", 1, CurveConfig, FrontierResult, _identity, _compute)
