"""Training runs: final checkpoint, trajectory snapshots and a run record.

A run folder holds ``final.safetensors``, ``trajectory/step_*.safetensors`` (the first is the
initial weights, the last the final ones) and ``run.json`` (config, per-epoch history, final
metrics, hashes, wall time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.configs import OPTIMIZERS, SCHEDULES, TrainConfig, lr_factor
from landscape.data import Dataset, batches, load_dataset, source_meta
from landscape.evaldata import small_model_threads
from landscape.metrics import evaluate_model
from landscape.models import build_model, prunable_names
from landscape.optim import GRDA
from landscape.params import sparsity
from landscape.progress import Progress
from landscape.store import atomic_write

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Loop",
    "TrainConfig",
    "Run",
    "lr_factor",
    "make_initial",
    "train",
]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Forward = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | None"]
AfterStep = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class Loop:
    """The one training loop: forward, cross-entropy, backward, update, schedule, progress.

    :func:`train`, the masked fine-tune of :func:`landscape.pruning.prune_checkpoint` and the
    curve fit of :func:`landscape.curves.fit_curve` all step through :meth:`epoch`; what differs
    between them is passed in: the forward pass (a model, or logits at a Bezier point drawn per
    mini-batch), a hook on the gradients (masks) and one after each update (statistics,
    snapshots, masks re-applied).

    Args:
        optimizer: updates the trained tensors.
        total: steps of the whole training (the progress total).
        scheduler: stepped after every update (None: none).
        progress: ``progress(step, total, stage)`` after every update.

    Attributes:
        step: mini-batches seen so far, skipped ones included (so a schedule's length holds).
    """

    optimizer: torch.optim.Optimizer
    total: int
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    progress: Progress | None = None
    step: int = 0

    def epoch(
        self,
        forward: Forward,
        batches: Batches,
        *,
        on_grad: Callable[[], None] | None = None,
        after_step: AfterStep | None = None,
        stage: str = "training",
    ) -> None:
        """One pass over ``batches``.

        Args:
            forward: ``forward(xb, yb)`` -> logits (batch, classes), or None to skip the batch.
            batches: (inputs, labels) mini-batches.
            on_grad: called between ``backward`` and the optimizer step (e.g. masks gradients).
            after_step: ``after_step(step, loss, logits, yb)`` after the update and schedule.
            stage: the progress label.
        """
        for xb, yb in batches:
            self.step += 1
            logits = forward(xb, yb)  # (batch, classes)
            if logits is None:
                continue
            loss = F.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if on_grad is not None:
                on_grad()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if after_step is not None:
                after_step(self.step, loss, logits, yb)
            if self.progress is not None:
                self.progress(self.step, self.total, stage)


def _arch_meta(cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    kwargs = {
        "in_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        **cfg.arch_kwargs,
    }
    return {"name": cfg.arch, "kwargs": kwargs}


def _data_meta(cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    # "normalize" only when set, so runs without it keep their metadata as before; npz and
    # imagefolder also keep their (absolute) root and options, as the name alone says nothing.
    norm = {"normalize": cfg.normalize} if cfg.normalize != "none" else {}
    source = source_meta(cfg.data, cfg.data_root, data)
    return {"name": source.pop("name"), "split_seed": cfg.split_seed, **norm, **source}


def _dataset(cfg: TrainConfig) -> Dataset:
    return load_dataset(
        cfg.data,
        root=cfg.data_root,
        seed=cfg.split_seed,
        normalize=cfg.normalize,
        size=cfg.image_size,
        channels=cfg.image_channels,
    )


def make_initial(cfg: TrainConfig, out: str | Path) -> Checkpoint:
    """Write the seeded initial weights of ``cfg``'s architecture to ``out`` (shared init)."""
    data = _dataset(cfg)
    arch = _arch_meta(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(arch["name"], **arch["kwargs"])
    meta = {"arch": arch, "data": _data_meta(cfg, data), "optimizer": None, "step": 0, "epoch": 0}
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


def _model(cfg: TrainConfig, arch: dict[str, Any]) -> tuple[nn.Module, str | None]:
    """The seeded model (or the --init weights) and the init checkpoint's hash."""
    torch.manual_seed(cfg.seed)
    model = build_model(arch["name"], **arch["kwargs"])
    if cfg.init is None:
        return model, None
    init = load_checkpoint(cfg.init)
    if init.arch != arch:
        raise ValueError(f"--init {cfg.init} is a {init.arch}, but this run builds {arch}")
    model.load_state_dict(init.state)
    return model, init.hash


@dataclass
class _Snapshots:
    """Writes trajectory snapshots at the chosen steps and lists them for run.json."""

    out: Path
    model: nn.Module
    meta: dict[str, Any]
    steps_per_epoch: int
    at: set[int]
    written: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.out / "trajectory").mkdir(parents=True, exist_ok=True)
        for stale in (self.out / "trajectory").glob("step_*.safetensors"):
            stale.unlink()  # snapshots of an earlier run in the same folder would mix trajectories

    def __call__(self, step: int) -> None:
        if step not in self.at:
            return
        name = f"trajectory/step_{step:06d}.safetensors"
        epoch = step / self.steps_per_epoch
        meta = {**self.meta, "step": step, "epoch": epoch, "metrics": {}}
        h = save_checkpoint(self.out / name, self.model, meta)
        self.written.append({"file": name, "step": step, "epoch": epoch, "hash": h})


def _final_metrics(model: nn.Module, data: Dataset, device) -> tuple[dict, dict]:
    """(final metrics, per-layer sparsity) of the trained model (data copied to ``device``
    unless there already)."""
    tr = evaluate_model(model, data.x_train.to(device), data.y_train.to(device))
    te = evaluate_model(model, data.x_test.to(device), data.y_test.to(device))
    sp = sparsity(model.state_dict(), prunable_names(model))
    metrics = {
        "train_loss": tr["loss"],
        "train_acc": tr["acc"],
        "test_loss": te["loss"],
        "test_acc": te["acc"],
        "sparsity": sp["zero"],
        "sparsity_small": sp["small"],
    }
    return metrics, sp["layers"]


def _epochs(
    cfg: TrainConfig, model: nn.Module, data: Dataset, snap: _Snapshots, progress
) -> tuple[list[dict[str, Any]], int]:
    """Train ``cfg.epochs`` epochs through the :class:`Loop`; (per-epoch history, steps)."""
    opt = _optimizer(cfg, model)
    total = cfg.epochs * snap.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.lr_schedule, step / total)
    )
    loop = Loop(opt, total, sched, progress)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    gen = torch.Generator().manual_seed(cfg.seed)
    prunable = prunable_names(model)
    history: list[dict[str, Any]] = []
    sums = [0.0, 0.0, 0.0]  # this epoch's loss * batch size, correct, seen

    def after_step(step: int, loss: torch.Tensor, logits: torch.Tensor, yb: torch.Tensor) -> None:
        sums[0] += loss.item() * len(yb)
        sums[1] += float((logits.argmax(1) == yb).sum())
        sums[2] += len(yb)
        snap(step)

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        sums[:] = [0.0, 0.0, 0.0]
        loop.epoch(
            lambda xb, _yb: model(xb),
            batches(x_train, y_train, cfg.batch_size, shuffle=True, generator=gen),
            after_step=after_step,
            stage=f"epoch {epoch}/{cfg.epochs}",
        )
        test = evaluate_model(model, x_test, y_test)
        history.append(
            {
                "epoch": epoch,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": sums[0] / sums[2],
                "train_acc": sums[1] / sums[2],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "sparsity": sparsity(model.state_dict(), prunable)["zero"],
            }
        )
    return history, loop.step


def train(cfg: TrainConfig, out: str | Path, *, progress: Progress | None = None) -> Run:
    """Train one run and write its folder.

    ``run.json`` is written last and atomically: a folder with one holds a finished run.

    Args:
        cfg: the run's configuration.
        out: run folder to create (final.safetensors, trajectory/, run.json).
        progress: optional ``progress(done, total, stage)`` callback (steps).

    Returns:
        The :class:`Run` with its record (the content of run.json).
    """
    cfg.check()
    start = time.perf_counter()
    device = torch.device(cfg.device)
    data = _dataset(cfg)
    arch = _arch_meta(cfg, data)
    model, init_hash = _model(cfg, arch)
    model.to(device)
    steps_per_epoch = -(-len(data.y_train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    at = {int(s) for s in np.linspace(0, total, cfg.snapshots)} if cfg.snapshots else set()
    out = Path(out)
    (out / "run.json").unlink(missing_ok=True)  # the folder holds no finished run until the end
    meta_base = {"arch": arch, "data": _data_meta(cfg, data), "optimizer": _optimizer_meta(cfg)}
    meta_base["seed"] = cfg.seed
    snap = _Snapshots(out, model, meta_base, steps_per_epoch, at)
    snap(0)
    # Small models train on one thread: as fast here, and the result then does not depend on
    # the machine's thread count (reductions split over threads round differently).
    on_device = {f: getattr(data, f).to(device) for f in ("x_train", "y_train", "x_test", "y_test")}
    data = replace(data, **on_device)  # one copy of the data on the device
    with small_model_threads(model, data.x_train):
        history, step = _epochs(cfg, model, data, snap, progress)
        metrics, layer_sparsity = _final_metrics(model, data, device)
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
            "layer_sparsity": layer_sparsity,
            "history": history,
            "snapshots": snap.written,
            "steps": step,
            "wall_time_s": time.perf_counter() - start,
        }
        atomic_write(out / "run.json", json.dumps(record, indent=2).encode())
    return Run(out, record)
