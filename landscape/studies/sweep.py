"""A sweep of gRDA's (c, mu, seed) grid from one shared initial checkpoint, with the
magnitude-pruning baseline beside it, and its sparsity / test accuracy Pareto frontier.

A sweep is a folder of training runs (:mod:`landscape.sweep` describes its layout), so unlike
the other kinds its compute writes files outside the store: every run folder (``run.json``
written last and atomically: a folder with one is a finished run and is reused, per run, when
the sweep is run again), the magnitude-pruned checkpoints, and ``sweep.json`` / ``sweep.csv``
(atomic). The folder is the sweep's record (:func:`landscape.sweep.load_sweep` reads it); the
key covers the folder and the bytes of what it holds, so a changed folder is swept again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.configs import SweepConfig
from landscape.studies.base import Context, Kind, Result, config_identity

__all__ = ["KIND", "SweepConfig", "SweepInputs", "SweepResult", "run_name"]


@dataclass(frozen=True)
class SweepInputs:
    """The sweep folder (created; an earlier, interrupted sweep there is resumed)."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))


@dataclass
class SweepResult(Result):
    """The sweep table.

    Attributes:
        path: the sweep folder.
        rows: one dict per model with the keys in :data:`landscape.sweep.COLUMNS` (grid order,
            gRDA runs first); ``path`` is relative to the sweep folder; magnitude rows carry
            c, mu and seed of the gRDA run whose sparsity they match.
        frontier: indices of ``rows`` on the sparsity / test accuracy Pareto frontier.
        trained: gRDA runs trained by this call (the rest were reused).
        reused: gRDA runs found finished and reused.
        config: the sweep's config as sweep.json stores it (SweepConfig fields, init_hash).
    """

    path: str
    rows: list[dict[str, Any]]
    frontier: list[int]
    trained: int = 0
    reused: int = 0
    config: dict[str, Any] = field(default_factory=dict)


def run_name(c: float, mu: float, seed: int) -> str:
    """The folder name of one grid point's run."""
    return f"c{c:g}_mu{mu:g}_seed{seed}"


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except (FileNotFoundError, IsADirectoryError):
        return None


def _identity(cfg: SweepConfig, inputs: SweepInputs) -> dict[str, Any]:
    folder = inputs.folder.resolve()
    names = [run_name(c, mu, s) for c in cfg.c for mu in cfg.mu for s in cfg.seeds]
    init = Path(cfg.train.init) if cfg.train.init is not None else folder / "init.safetensors"
    sgd = Path(cfg.sgd) if cfg.sgd is not None else None
    if sgd is not None and sgd.is_dir():
        sgd = sgd / "final.safetensors"
    return {
        **config_identity(cfg, skip=("workers", "train")),
        "train": config_identity(cfg.train, skip=("init",)),
        "folder": str(folder),
        "init": _file_hash(init),
        "sgd_file": _file_hash(sgd) if sgd is not None else None,
        "runs": {n: _file_hash(folder / "runs" / n / "run.json") for n in names},
        "magnitude_files": {
            n: _file_hash(folder / "magnitude" / f"{n}.safetensors")
            for n in (names if cfg.magnitude else [])
        },
    }


def _compute(cfg: SweepConfig, inputs: SweepInputs, context: Context) -> SweepResult:
    # landscape.sweep imports this module for its types, so it is imported here, when used.
    from landscape.sweep import run_sweep

    return run_sweep(cfg, inputs.folder, progress=context.progress)


KIND = Kind("sweep", 1, SweepConfig, SweepResult, _identity, _compute)
