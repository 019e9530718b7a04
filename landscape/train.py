"""Training runs: final checkpoint, trajectory snapshots and a run record.

A run folder holds ``final.safetensors``, ``trajectory/step_*.safetensors`` (the first is the
initial weights, the last the final ones) and ``run.json`` (config, per-epoch history, final
metrics, hashes, wall time).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.data import Dataset, batches, load_dataset
from landscape.evaluate import small_model_threads
from landscape.models import build_model, prunable_names
from landscape.optim import GRDA
from landscape.params import evaluate, sparsity
from landscape.progress import Progress

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "Run",
    "lr_factor",
    "make_initial",
    "train",
]

OPTIMIZERS = ("sgd", "grda")
SCHEDULES = ("const", "paper")


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in run.json and checkpoint metadata)."""

    data: str = "digits"  # digits (bundled), mnist, cifar10, cifar100 (folder in data_root)
    data_root: str | None = None  # folder with the mnist / cifar10 files
    split_seed: int = 0  # train/test split of digits
    normalize: str = "none"  # per-channel normalisation (landscape.data.NORMALIZATIONS)
    arch: str = "cnn"  # registry name in landscape.models
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments
    optimizer: str = "sgd"  # sgd or grda (grda with momentum > 0 is gRDAM)
    lr: float = 0.05  # base learning rate
    momentum: float = 0.0  # heavy-ball momentum (SGD) / gRDAM buffer
    c: float = 0.0  # gRDA sparsity strength
    mu: float = 0.7  # gRDA time exponent of the threshold
    epochs: int = 30  # passes over the training data
    batch_size: int = 64  # mini-batch size
    lr_schedule: str = "const"  # const, or paper: const to 50%, linear to 1% at 90%
    seed: int = 0  # model init (unless init is given) and batch order
    snapshots: int = 10  # trajectory snapshots, spread over training, first = initial weights
    init: str | None = None  # start from this checkpoint instead of a seeded initialisation
    device: str = "cpu"  # cpu or cuda


def lr_factor(schedule: str, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of training."""
    if schedule == "const":
        return 1.0
    if schedule == "paper":
        if progress <= 0.5:
            return 1.0
        if progress >= 0.9:
            return 0.01
        return 1.0 - 0.99 * (progress - 0.5) / 0.4
    raise ValueError(f"Unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def _arch_meta(cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    kwargs = {
        "in_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        **cfg.arch_kwargs,
    }
    return {"name": cfg.arch, "kwargs": kwargs}


def _data_meta(cfg: TrainConfig) -> dict[str, Any]:
    # "normalize" only when set, so runs without it keep their metadata as before.
    norm = {"normalize": cfg.normalize} if cfg.normalize != "none" else {}
    return {"name": cfg.data, "split_seed": cfg.split_seed, **norm}


def _dataset(cfg: TrainConfig) -> Dataset:
    return load_dataset(cfg.data, root=cfg.data_root, seed=cfg.split_seed, normalize=cfg.normalize)


def make_initial(cfg: TrainConfig, out: str | Path) -> Checkpoint:
    """Write the seeded initial weights of ``cfg``'s architecture to ``out`` (shared init)."""
    data = _dataset(cfg)
    arch = _arch_meta(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(arch["name"], **arch["kwargs"])
    meta = {"arch": arch, "data": _data_meta(cfg), "optimizer": None, "step": 0, "epoch": 0}
    save_checkpoint(out, model, {**meta, "seed": cfg.seed, "metrics": {}})
    return load_checkpoint(out)


@dataclass
class Run:
    """What :func:`train` returns: the run folder and its record."""

    path: Path
    record: dict[str, Any]


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "grda":
        return GRDA(model.parameters(), lr=cfg.lr, c=cfg.c, mu=cfg.mu, momentum=cfg.momentum)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def _optimizer_meta(cfg: TrainConfig) -> dict[str, Any]:
    hp: dict[str, Any] = {"lr": cfg.lr, "momentum": cfg.momentum, "schedule": cfg.lr_schedule}
    if cfg.optimizer == "grda":
        hp |= {"c": cfg.c, "mu": cfg.mu}
    name = "grdam" if cfg.optimizer == "grda" and cfg.momentum > 0 else cfg.optimizer
    return {"name": name, "hparams": hp, "epochs": cfg.epochs, "batch_size": cfg.batch_size}


def train(cfg: TrainConfig, out: str | Path, *, progress: Progress | None = None) -> Run:
    """Train one run and write its folder.

    Args:
        cfg: the run's configuration.
        out: run folder to create (final.safetensors, trajectory/, run.json).
        progress: optional ``progress(done, total, stage)`` callback (steps).

    Returns:
        The :class:`Run` with its record (the content of run.json).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    lr_factor(cfg.lr_schedule, 0.0)  # validates the schedule name before any work
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.snapshots < 0:
        raise ValueError("epochs and batch_size must be >= 1 and snapshots >= 0")
    start = time.perf_counter()
    device = torch.device(cfg.device)
    data = _dataset(cfg)
    arch = _arch_meta(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(arch["name"], **arch["kwargs"])
    init_hash = None
    if cfg.init is not None:
        init = load_checkpoint(cfg.init)
        if init.arch != arch:
            raise ValueError(f"--init {cfg.init} is a {init.arch}, but this run builds {arch}")
        model.load_state_dict(init.state)
        init_hash = init.hash
    model.to(device)
    opt = _optimizer(cfg, model)
    steps_per_epoch = -(-len(data.y_train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.lr_schedule, step / total)
    )
    snap_steps = (
        sorted({int(s) for s in np.linspace(0, total, cfg.snapshots)}) if cfg.snapshots else []
    )
    out = Path(out)
    (out / "trajectory").mkdir(parents=True, exist_ok=True)
    for stale in (out / "trajectory").glob("step_*.safetensors"):
        stale.unlink()  # snapshots of an earlier run in the same folder would mix trajectories
    prunable = prunable_names(model)
    meta_base = {
        "arch": arch,
        "data": _data_meta(cfg),
        "optimizer": _optimizer_meta(cfg),
        "seed": cfg.seed,
    }
    snapshots: list[dict[str, Any]] = []

    def snapshot(step: int) -> None:
        name = f"trajectory/step_{step:06d}.safetensors"
        epoch = step / steps_per_epoch
        h = save_checkpoint(
            out / name, model, {**meta_base, "step": step, "epoch": epoch, "metrics": {}}
        )
        snapshots.append({"file": name, "step": step, "epoch": epoch, "hash": h})

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    step = 0
    if 0 in snap_steps:
        snapshot(0)
    # Small models train on one thread: as fast here, and the result then does not depend on
    # the machine's thread count (reductions split over threads round differently).
    with small_model_threads(model, x_train):
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            loss_sum = correct = seen = 0.0
            for xb, yb in batches(x_train, y_train, cfg.batch_size, shuffle=True, generator=gen):
                logits = model(xb)  # (batch, classes)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                loss_sum += loss.item() * len(yb)
                correct += float((logits.argmax(1) == yb).sum())
                seen += len(yb)
                if step in snap_steps:
                    snapshot(step)
                if progress is not None:
                    progress(step, total, f"epoch {epoch}/{cfg.epochs}")
            params = dict(model.named_parameters())
            buffers = dict(model.named_buffers())
            test = evaluate(model, params, buffers, x_test, y_test)
            history.append(
                {
                    "epoch": epoch,
                    "lr": opt.param_groups[0]["lr"],
                    "train_loss": loss_sum / seen,
                    "train_acc": correct / seen,
                    "test_loss": test.loss,
                    "test_acc": test.acc,
                    "sparsity": sparsity(model.state_dict(), prunable)["zero"],
                }
            )
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        tr = evaluate(model, params, buffers, x_train, y_train)
        te = evaluate(model, params, buffers, x_test, y_test)
        sp = sparsity(model.state_dict(), prunable)
        metrics = {
            "train_loss": tr.loss,
            "train_acc": tr.acc,
            "test_loss": te.loss,
            "test_acc": te.acc,
            "sparsity": sp["zero"],
            "sparsity_small": sp["small"],
        }
        final_hash = save_checkpoint(
            out / "final.safetensors",
            model,
            {**meta_base, "step": step, "epoch": cfg.epochs, "metrics": metrics},
        )
        record = {
            "config": asdict(cfg),
            "arch": arch,
            "data": data.describe(),
            "optimizer": _optimizer_meta(cfg),
            "init_hash": init_hash,
            "final_hash": final_hash,
            "metrics": metrics,
            "layer_sparsity": sp["layers"],
            "history": history,
            "snapshots": snapshots,
            "steps": step,
            "wall_time_s": time.perf_counter() - start,
        }
        (out / "run.json").write_text(json.dumps(record, indent=2))
    return Run(out, record)
