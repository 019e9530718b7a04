"""Magnitude pruning (the baseline gRDA's sparse minima are compared against) and mask stability.

:func:`magnitude_prune` zeroes the smallest prunable weights of a state dict;
:func:`prune_checkpoint` does it to a checkpoint, optionally fine-tunes with the mask held
fixed, and returns a state and metadata that :func:`landscape.checkpoints.save_checkpoint`
writes. :func:`mask_stability` follows the zero-mask of a run's trajectory snapshots.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.checkpoints import Checkpoint, CheckpointError, checkpoint_dataset, load_checkpoint
from landscape.data import Dataset, batches
from landscape.evaldata import small_model_threads
from landscape.evaluate import EvalData, bn_statistics
from landscape.metrics import evaluate_model
from landscape.models import prunable_names
from landscape.params import sparsity as sparsity_stats
from landscape.params import split_state
from landscape.progress import Progress
from landscape.train import Loop

__all__ = [
    "MaskStability",
    "check_prune",
    "check_tol",
    "jaccard",
    "magnitude_prune",
    "magnitude_optimizer_meta",
    "mask_stability",
    "prune_checkpoint",
    "settled_index",
    "snapshot_files",
]

Named = dict[str, torch.Tensor]


def magnitude_prune(
    state: Named, prunable: list[str], sparsity: float, *, scope: str = "global"
) -> tuple[Named, Named]:
    """Zero the smallest-magnitude prunable weights so exactly ``sparsity`` of them are zero.

    Ties at the threshold are broken by position (a stable sort), so the count is exact.

    Args:
        state: state dict (not modified).
        prunable: names of the prunable tensors.
        sparsity: target fraction of zeros in [0, 1].
        scope: "global" (one threshold over all prunable weights) or "layer" (each tensor
            pruned to ``sparsity`` on its own).

    Returns:
        (pruned state dict, masks) where ``masks[name]`` is True for kept weights.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    groups = [[n] for n in prunable] if scope == "layer" else [list(prunable)]
    masks: Named = {}
    for names in groups:
        flat = torch.cat([state[n].reshape(-1).abs() for n in names])
        k = round(sparsity * flat.numel())
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:k]] = False
        i = 0
        for n in names:
            masks[n] = keep[i : i + state[n].numel()].view_as(state[n])
            i += state[n].numel()
    pruned = {k: (v * masks[k] if k in masks else v).clone() for k, v in state.items()}
    return pruned, masks


def check_prune(
    sparsity: float, scope: str, finetune_epochs: int, lr: float, batch_size: int
) -> None:
    """ValueError on the first invalid argument of :func:`prune_checkpoint`."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    if finetune_epochs > 0 and not (lr > 0 and batch_size >= 1):
        raise ValueError(f"fine-tuning needs lr > 0 and batch_size >= 1, got {lr}, {batch_size}")


def magnitude_optimizer_meta(
    source_hash: str,
    sparsity: float,
    scope: str,
    finetune_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """The ``optimizer`` metadata of a magnitude-pruned checkpoint (what made it, from what)."""
    hp: dict[str, Any] = {"sparsity": sparsity, "scope": scope, "finetune_epochs": finetune_epochs}
    if finetune_epochs > 0:  # lr, batch size and seed mean nothing without fine-tuning
        hp |= {"lr": lr, "batch_size": batch_size, "seed": seed}
    return {"name": "magnitude", "hparams": hp, "source_hash": source_hash}


def _metrics(
    model: nn.Module, data: Dataset, device: torch.device, sp: dict[str, Any]
) -> dict[str, float]:
    """Train and test loss and accuracy of ``model`` with its own weights and buffers, and
    the sparsity ``sp`` (:func:`landscape.params.sparsity`) of its prunable weights."""
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        got = evaluate_model(model, x.to(device), y.to(device))
        out |= {f"{split}_loss": got["loss"], f"{split}_acc": got["acc"]}
    return out | {"sparsity": sp["zero"], "sparsity_small": sp["small"]}


def _finetune(
    model: nn.Module,
    masks: Named,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: Progress | None,
) -> int:
    """Masked SGD on ``model`` in place through the training :class:`~landscape.train.Loop`.

    Returns:
        The number of steps taken.
    """
    params = dict(model.named_parameters())
    masks = {n: m.to(device) for n, m in masks.items()}

    def mask_grads() -> None:
        for n, m in masks.items():
            params[n].grad.mul_(m)

    @torch.no_grad()
    def mask_weights(*_: Any) -> None:
        # Masked gradients already keep zeros with plain SGD; re-applying the mask makes
        # "pruned stays exactly zero" hold by construction, whatever the update does.
        for n, m in masks.items():
            params[n].mul_(m)

    x, y = data.x_train.to(device), data.y_train.to(device)
    gen = torch.Generator().manual_seed(seed)
    total = epochs * -(-len(y) // batch_size)
    loop = Loop(torch.optim.SGD(model.parameters(), lr=lr), total, progress=progress)
    with small_model_threads(model, x):  # the one thread policy, as training and fitting
        for epoch in range(1, epochs + 1):
            model.train()
            loop.epoch(
                lambda xb, _yb: model(xb),
                batches(x, y, batch_size, shuffle=True, generator=gen),
                on_grad=mask_grads,
                after_step=mask_weights,
                stage=f"fine-tune epoch {epoch}/{epochs}",
            )
    return loop.step


def _exact_prune(
    ckpt: Checkpoint, prunable: list[str], sparsity: float, scope: str
) -> tuple[Named, Named]:
    """:func:`magnitude_prune`; ValueError if the source is already sparser than the target."""
    pruned, masks = magnitude_prune(ckpt.state, prunable, sparsity, scope=scope)
    if any(bool((pruned[n][masks[n]] == 0).any()) for n in prunable):
        have = sparsity_stats(ckpt.state, prunable)["zero"]
        raise ValueError(
            f"{ckpt.path}: already {have:.4f} sparse, more than the target {sparsity} "
            f"({scope} scope); magnitude pruning cannot reach it exactly"
        )
    return pruned, masks


def _final_state(model: nn.Module, data: Dataset, device: torch.device, *, recalibrate: bool):
    """``model``'s state on the CPU, BatchNorm statistics first recomputed if ``recalibrate``."""
    params, buffers = split_state(model, model.state_dict())
    if recalibrate:
        buffers = _recalibrate(model, params, data, device)
    return {k: v.detach().cpu() for k, v in {**params, **buffers}.items()}


def _recalibrate(model: nn.Module, params: Named, data: Dataset, device: torch.device) -> Named:
    """BatchNorm statistics at the pruned weights, copied into ``model`` and returned."""
    evdata = EvalData(
        *(t.to(device) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    )
    buffers = bn_statistics(model, params, evdata)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return buffers


def prune_checkpoint(
    ckpt: Checkpoint,
    sparsity: float,
    *,
    scope: str = "global",
    finetune_epochs: int = 0,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    data_root: str | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> tuple[Named, dict[str, Any]]:
    """Magnitude-prune a checkpoint to exactly ``sparsity``, optionally fine-tune with the mask.

    Without fine-tuning, BatchNorm statistics are recomputed at the pruned weights. With it
    (SGD on the checkpoint's training data, gradients masked and the mask re-applied after
    every step, so pruned weights stay exactly zero) the fine-tuning's own statistics are kept.
    ValueError on bad arguments, or a source already sparser than ``sparsity`` allows.

    Args:
        ckpt: the source checkpoint (its metadata must name the data set).
        sparsity: target fraction of zeros among the prunable weights, in [0, 1].
        scope: "global" (one threshold) or "layer" (every tensor to ``sparsity``).
        finetune_epochs: epochs of masked SGD after pruning (0: none).
        lr, batch_size, seed: fine-tuning learning rate, batch size and batch-order seed.
        data_root, device: folder of mnist / cifar10 files; "cpu" or "cuda".
        progress: ``progress(done, total, stage)`` over fine-tuning steps.

    Returns:
        (state dict on CPU, metadata: arch and data of ``ckpt``, optimizer (see
        :func:`magnitude_optimizer_meta`), step, epoch, seed, metrics, wall_time_s).
    """
    check_prune(sparsity, scope, finetune_epochs, lr, batch_size)
    start = time.perf_counter()
    dev = torch.device(device)
    model = ckpt.build_model()
    prunable = prunable_names(model)
    pruned, masks = _exact_prune(ckpt, prunable, sparsity, scope)
    data = checkpoint_dataset(ckpt, data_root=data_root)
    model.load_state_dict(pruned)
    model.to(dev)
    steps = _finetune(
        model, masks, data, epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=seed,
        device=dev, progress=progress,
    )  # fmt: skip
    state = _final_state(model, data, dev, recalibrate=finetune_epochs == 0)
    meta = {
        "arch": ckpt.arch,
        "data": ckpt.meta["data"],
        "optimizer": magnitude_optimizer_meta(
            ckpt.hash, sparsity, scope, finetune_epochs, lr, batch_size, seed
        ),
        "step": int(ckpt.meta.get("step") or 0) + steps,
        "epoch": float(ckpt.meta.get("epoch") or 0) + finetune_epochs,
        "seed": seed,
        "metrics": _metrics(model, data, dev, sparsity_stats(state, prunable)),
        "wall_time_s": time.perf_counter() - start,
    }
    return state, meta


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard similarity |a & b| / |a | b| of two boolean masks; 1.0 when both are empty."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def settled_index(flipped: list[float | None], tol: float = 0.01) -> int | None:
    """First snapshot index after which every later change flips fewer than ``tol`` weights.

    Args:
        flipped: per snapshot, fraction of weights whose zero/non-zero status differs from
            the previous snapshot (entry 0 is None: no previous snapshot).
        tol: threshold on that fraction.

    Returns:
        The smallest i < len - 1 with ``flipped[j] < tol`` for all j > i, or None when the
        last change is not below ``tol`` (or there is no change to look at).
    """
    settled = None
    for i in range(len(flipped) - 1, 0, -1):
        if flipped[i] is None or flipped[i] >= tol:
            break
        settled = i - 1
    return settled


@dataclass
class MaskStability:
    """How the zero-mask of the prunable weights evolves over a run's trajectory snapshots.

    Lists have one entry per snapshot in step order; ``jaccard_prev`` and ``flipped`` are None
    for the first snapshot (no previous one).

    Attributes:
        steps, epochs: where each snapshot was taken.
        sparsity: fraction of prunable weights exactly zero.
        jaccard_final: Jaccard similarity of the snapshot's zero-mask with the final one.
        jaccard_prev: the same with the previous snapshot's zero-mask.
        flipped: fraction of prunable weights whose zero/non-zero status changed since the
            previous snapshot.
        settled_step: step of the first snapshot after which every change flips fewer than
            ``tol`` of the weights (see :func:`settled_index`); None if the mask never settles.
        tol: that threshold.
    """

    steps: list[int]
    epochs: list[float]
    sparsity: list[float]
    jaccard_final: list[float]
    jaccard_prev: list[float | None]
    flipped: list[float | None]
    settled_step: int | None
    tol: float


_STEP_FILE = re.compile(r"step_(\d+)\.safetensors")


def _zero_mask(ckpt: Checkpoint, prunable: list[str]) -> torch.Tensor:
    return torch.cat([ckpt.state[n].reshape(-1) == 0 for n in prunable])  # (prunable weights,)


def check_tol(tol: float) -> None:
    """ValueError unless ``tol`` (a fraction of flipped weights) is in (0, 1)."""
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol}")


def snapshot_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of a run folder's ``trajectory/step_*.safetensors``, in step order.

    Raises:
        CheckpointError: no snapshots there.
    """
    run_dir = Path(run_dir)
    files = sorted(
        (int(m.group(1)), p)
        for p in (run_dir / "trajectory").glob("step_*.safetensors")
        if (m := _STEP_FILE.fullmatch(p.name))
    )
    if not files:
        raise CheckpointError(f"{run_dir}: no trajectory/step_*.safetensors snapshots")
    return files


def mask_stability(run_dir: str | Path, *, tol: float = 0.01) -> MaskStability:
    """Zero-mask statistics of every trajectory snapshot of a run folder.

    Args:
        run_dir: a run folder (``final.safetensors`` and ``trajectory/step_*.safetensors``).
        tol: fraction of flipped weights below which the mask counts as unchanged.

    Returns:
        A :class:`MaskStability`.

    Raises:
        CheckpointError: a missing or invalid checkpoint, or snapshots of another architecture.
    """
    check_tol(tol)
    run_dir = Path(run_dir)
    files = snapshot_files(run_dir)
    final = load_checkpoint(run_dir / "final.safetensors")
    prunable = prunable_names(final.build_model())
    final_mask = _zero_mask(final, prunable)
    out = MaskStability([], [], [], [], [], [], None, tol)
    prev = None
    for step, path in files:
        snap = load_checkpoint(path)
        if snap.arch != final.arch:
            raise CheckpointError(f"{path}: architecture {snap.arch} differs from the final one")
        mask = _zero_mask(snap, prunable)
        out.steps.append(step)
        out.epochs.append(float(snap.meta.get("epoch") or 0.0))
        out.sparsity.append(float(mask.float().mean()))
        out.jaccard_final.append(jaccard(mask, final_mask))
        out.jaccard_prev.append(None if prev is None else jaccard(mask, prev))
        out.flipped.append(None if prev is None else float((mask != prev).float().mean()))
        prev = mask
    idx = settled_index(out.flipped, tol)
    out.settled_step = None if idx is None else out.steps[idx]
    return out
