"""Magnitude pruning of a checkpoint to an exact sparsity, optionally fine-tuned with the mask.

The computation is :func:`landscape.pruning.prune_checkpoint`. Its pruned weights are an
artefact: they are written, atomically, as a checkpoint inside the store beside the result
(``<store>/prune/<key>.safetensors``, with its checksum beside it and in the result, so a
result whose file is missing or damaged is recomputed) and the typed result gives its path,
hash and metrics.
``landscape prune ... --out FILE`` copies that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from landscape.configs import PruneConfig
from landscape.progress import Progress
from landscape.pruning import check_prune, magnitude_optimizer_meta, prune_checkpoint
from landscape.store import Store
from landscape.studies.base import Context, Kind, Result, run, study_key
from landscape.studies.common import data_identity

__all__ = ["KIND", "PruneConfig", "PruneInputs", "PruneResult", "prune", "pruned_checkpoint"]


@dataclass(frozen=True)
class PruneInputs:
    """The checkpoint to prune (its metadata names its data set)."""

    checkpoint: Checkpoint


@dataclass
class PruneResult(Result):
    """The pruned checkpoint in the store and what it scores.

    Attributes:
        path: the pruned ``.safetensors`` file (in the store, named by the result's key).
        hash: its content hash.
        source_hash: the hash of the pruned checkpoint's source.
        metrics: train/test loss and accuracy, sparsity and sparsity_small of the pruned model.
        step, epoch: the source's plus the fine-tuning's.
        wall_time_s: time spent pruning and fine-tuning.
    """

    path: str
    hash: str
    source_hash: str
    metrics: dict[str, float]
    step: int
    epoch: float
    wall_time_s: float

    ARTIFACTS = ("path",)


def _identity(cfg: PruneConfig, inputs: PruneInputs) -> dict[str, Any]:
    ckpt = inputs.checkpoint
    check_prune(cfg.sparsity, cfg.scope, cfg.finetune_epochs, cfg.lr, cfg.batch_size)
    # What made the checkpoint (lr, batch size and seed only count with fine-tuning).
    made = magnitude_optimizer_meta(
        ckpt.hash, cfg.sparsity, cfg.scope, cfg.finetune_epochs, cfg.lr, cfg.batch_size, cfg.seed
    )
    return {**made, "data": data_identity(ckpt, cfg)}


def _compute(cfg: PruneConfig, inputs: PruneInputs, context: Context) -> PruneResult:
    state, meta = prune_checkpoint(
        inputs.checkpoint,
        cfg.sparsity,
        scope=cfg.scope,
        finetune_epochs=cfg.finetune_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        data_root=cfg.data_root,
        device=cfg.device,
        progress=context.progress,
    )
    path = context.store.root / context.kind / f"{context.key}.safetensors"
    digest = save_checkpoint(path, state, meta)
    context.store.record_artifact(path)  # its checksum: the result is recomputed without it
    return PruneResult(
        path=str(path.resolve()),
        hash=digest,
        source_hash=inputs.checkpoint.hash,
        metrics=meta["metrics"],
        step=meta["step"],
        epoch=meta["epoch"],
        wall_time_s=meta["wall_time_s"],
    )


KIND = Kind("prune", 1, PruneConfig, PruneResult, _identity, _compute)


def pruned_checkpoint(result: PruneResult) -> Checkpoint:
    """The pruned checkpoint of ``result``, checked against its hash.

    Raises:
        CheckpointError: the file is missing, unreadable or not the one the result describes.
    """
    ckpt = load_checkpoint(result.path)
    if ckpt.hash != result.hash:
        raise CheckpointError(f"{result.path}: hash {ckpt.hash}, not {result.hash}")
    return ckpt


def prune(
    cfg: PruneConfig,
    inputs: PruneInputs,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """``run(KIND, ...)``, with the stored checkpoint written again if it went missing.

    The result's JSON and its checkpoint are two files: one may be deleted without the other.
    A result whose checkpoint is gone or damaged is computed again (same key, same file).
    """
    store = store or Store()
    result = run(KIND, cfg, inputs, store=store, progress=progress)
    try:
        pruned_checkpoint(result)
        return result
    except CheckpointError:
        key = study_key(KIND, cfg, inputs)
        result = _compute(cfg, inputs, Context(store, KIND.name, key, progress))
        info, arrays = result.to_arrays()
        ident = KIND.identity(cfg, inputs)
        store.save(KIND.name, key, {**info, "inputs": ident}, arrays, artifacts=result.artifacts())
        return result
