"""How the zero-mask of a run's prunable weights evolves over its trajectory snapshots.

The computation is :func:`landscape.pruning.mask_stability`; this kind keys its result by the
bytes of the run's snapshot files and final checkpoint, so a changed run is measured again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from landscape.configs import MasksConfig
from landscape.pruning import MaskStability, check_tol, mask_stability, snapshot_files
from landscape.studies.base import Context, Kind, Result

__all__ = ["KIND", "MasksConfig", "MasksInputs", "MasksResult"]


@dataclass(frozen=True)
class MasksInputs:
    """A run folder (``final.safetensors``, ``trajectory/step_*.safetensors``)."""

    run: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))


@dataclass
class MasksResult(MaskStability, Result):
    """:class:`landscape.pruning.MaskStability` (its fields, one entry per snapshot) as a result."""


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _identity(cfg: MasksConfig, inputs: MasksInputs) -> dict:
    # The files' bytes identify the result: no snapshot is decoded for a key.
    check_tol(cfg.tol)
    return {
        "snapshots": {str(step): _file_hash(f) for step, f in snapshot_files(inputs.run)},
        "final": _file_hash(inputs.run / "final.safetensors"),
        "tol": cfg.tol,
    }


def _compute(cfg: MasksConfig, inputs: MasksInputs, context: Context) -> MasksResult:
    return MasksResult(**asdict(mask_stability(inputs.run, tol=cfg.tol)))


KIND = Kind("masks", 1, MasksConfig, MasksResult, _identity, _compute)
