"""Record a run folder from the user's own training loop.

:class:`Recorder` writes what ``landscape train`` writes (``final.safetensors``,
``trajectory/step_*.safetensors``, ``run.json``; see :mod:`landscape.train`) with the same
metadata and through the same helpers, so every study and page that reads a run reads this one::

    recorder = landscape.Recorder(model, optimizer, out="runs/mine", every=50, data=data,
                                  arch={"name": "file:model.py:SmallNet", "kwargs": {}})
    for epoch in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(logits := model(xb), yb)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            recorder.step(loss, logits, yb)
    recorder.close()

Threads: the loop is the user's, so the Recorder leaves torch's thread count alone. For a small
model on a CPU, one thread is usually faster (``landscape train`` applies
:func:`landscape.evaldata.small_model_threads`, and so can a user: ``with
small_model_threads(model, xb): ...`` around the loop).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.checkpoints import fit_state, save_checkpoint
from landscape.data import Dataset, source_meta
from landscape.metrics import evaluate_model
from landscape.models import prunable_names, resolve_arch
from landscape.optim import GRDA
from landscape.params import sparsity
from landscape.sources import FILE, is_external, parse_file_spec, trust_file
from landscape.store import atomic_write
from landscape.train import Run, TrainConfig, _data_meta, _dataset, _final_metrics, _Snapshots

__all__ = ["Recorder", "optimizer_meta"]


class _Every:
    """The steps at which a snapshot is taken, as a set-like of every ``n``-th step."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and step % self.n == 0


def optimizer_meta(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"name", "hparams"}`` of a user's optimizer, read off its first param group.

    :class:`landscape.optim.GRDA` is "grda" (with ``c`` and ``mu``; "grdam" with momentum),
    ``torch.optim.SGD`` "sgd", any other its class name in lower case.
    """
    group = optimizer.param_groups[0]
    hp = {k: group[k] for k in ("lr", "momentum", "weight_decay") if k in group}
    hp = {k: float(v) for k, v in hp.items() if isinstance(v, int | float)}
    if isinstance(optimizer, GRDA):
        hp |= {"c": float(group["c"]), "mu": float(group["mu"])}
        name = "grdam" if group["momentum"] > 0 else "grda"
    elif type(optimizer) is torch.optim.SGD:
        name = "sgd"
    else:
        name = type(optimizer).__name__.lower()
    return {"name": name, "hparams": {**hp, "schedule": "user"}}


def _data(data: Dataset | dict[str, Any]) -> tuple[Dataset, dict[str, Any]]:
    """The data set and its metadata, as :func:`landscape.train.train` records them."""
    if isinstance(data, Dataset):
        meta = source_meta(data.name, None, data)
        if "root" not in meta and data.name in ("npz", "imagefolder"):
            raise ValueError(
                f"a {data.name} Dataset does not say where its files are: pass data as "
                f'{{"name": "{data.name}", "root": PATH, "split_seed": 0}} instead'
            )
        norm = {"normalize": data.normalize} if data.normalize not in ("none", "file") else {}
        return data, {**meta, "split_seed": int(data.split_seed), **norm}
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"data must be a landscape Dataset or a {{name, ...}} dict, got {data!r}")
    cfg = TrainConfig(
        data=str(data["name"]),
        data_root=data.get("root"),
        image_size=data.get("size"),
        image_channels=data.get("channels"),
        split_seed=int(data.get("split_seed", 0)),
        normalize=str(data.get("normalize", "none")),
    )
    ds = _dataset(cfg)
    return ds, _data_meta(cfg, ds)


def _arch(arch: str | dict[str, Any], model: nn.Module, data: Dataset) -> dict[str, Any]:
    """``{"name", "kwargs"}`` that rebuilds ``model``; checked against its state dict.

    A registry name is sized to the data set as ``landscape train`` sizes it; a ``file:`` model
    named here is trusted, as one named on the command line is (the user's own code).
    """
    spec = {"name": arch, "kwargs": {}} if isinstance(arch, str) else dict(arch)
    name, kwargs = spec.get("name"), spec.get("kwargs") or {}
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ValueError(f"arch must be a name or {{name, kwargs}}, got {arch!r}")
    if name.startswith(FILE):  # absolute, so the run's checkpoints load from anywhere
        path, attr = parse_file_spec(name)
        trust_file(path)
        name = f"{FILE}{path}:{attr}"
    if not is_external(name):
        name, kwargs = resolve_arch(name, kwargs)
        sized = {"in_shape": list(data.input_shape), "num_classes": data.num_classes}
        kwargs = {**sized, **kwargs}
    spec = {"name": name, "kwargs": kwargs}
    fit_state(model.state_dict(), spec, source=f"Recorder arch {name}", strip=False)
    return spec


class Recorder:
    """Writes a run folder from a training loop that is not landscape's.

    Call :meth:`step` after every ``optimizer.step()`` and :meth:`close` at the end (or use
    it as a context manager). Snapshots are taken at step 0 (now), every ``every`` steps and
    at the last step; an epoch ends every ``steps_per_epoch`` steps, when a history entry
    (train loss/accuracy of its steps, test metrics, sparsity, lr) is added. ``run.json`` is
    written last: a folder with one holds a finished run.

    Args:
        model: the trained module (its ``state_dict()`` is saved).
        optimizer: its optimizer (name and hyperparameters recorded; gRDA's ``c``, ``mu``).
        out: run folder to write (its old snapshots and run.json are removed).
        every: steps between trajectory snapshots.
        data: a :class:`landscape.data.Dataset` (digits, or any source with its root in the
            metadata) or data metadata ``{"name", "root"?, "split_seed"?, "normalize"?}``.
        arch: ``{"name", "kwargs"}`` that rebuilds ``model`` (registry name,
            ``torchvision:<name>`` or ``file:<path.py>:<callable>``) or a registry name.
        steps_per_epoch: steps of one epoch (default: training samples / batch size, rounded
            up; the batch size from ``batch_size`` or the first ``labels`` passed to step).
        batch_size: the loop's batch size (default: from the first ``labels``).
        seed: recorded seed (default: ``torch.initial_seed()``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        out: str | Path,
        every: int = 100,
        data: Dataset | dict[str, Any],
        arch: str | dict[str, Any],
        steps_per_epoch: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.optimizer, self.out, self.every = model, optimizer, Path(out), every
        self.data, data_meta = _data(data)
        self.arch = _arch(arch, model, self.data)
        self.batch_size, self.steps = batch_size, 0
        self.steps_per_epoch = steps_per_epoch or self._derived_steps(batch_size)
        self.history: list[dict[str, Any]] = []
        self._sums = [0.0, 0.0, 0.0, 0.0]  # loss * n, correct, samples with logits, samples
        self._start = time.perf_counter()
        self._closed = False
        seed = torch.initial_seed() if seed is None else seed
        meta = {"arch": self.arch, "data": data_meta, "optimizer": self._opt_meta(), "seed": seed}
        (self.out / "run.json").unlink(missing_ok=True)
        self._snap = _Snapshots(self.out, model, meta, self.steps_per_epoch or 1, _Every(every))
        self._snap(0)

    def _derived_steps(self, batch_size: int | None) -> int | None:
        return math.ceil(len(self.data.y_train) / batch_size) if batch_size else None

    def _opt_meta(self) -> dict[str, Any]:
        epochs = self.steps / self.steps_per_epoch if self.steps_per_epoch else None
        return {**optimizer_meta(self.optimizer), "epochs": epochs, "batch_size": self.batch_size}

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def step(
        self,
        loss: torch.Tensor | float | None = None,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Count one optimizer step; snapshot and close an epoch when due.

        Args:
            loss: the mini-batch's mean loss (for the epoch's train loss; None: evaluated).
            logits: (batch, classes) of the mini-batch (for the train accuracy).
            labels: (batch,) its labels (the batch size; the accuracy with ``logits``).
        """
        if self._closed:
            raise ValueError("Recorder.step() after close()")
        n = len(labels) if labels is not None else 1
        self.batch_size = self.batch_size or (n if labels is not None else None)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = self._derived_steps(self.batch_size)
            if self.steps_per_epoch is None:
                raise ValueError("pass labels to step(), or batch_size or steps_per_epoch")
            self._snap.steps_per_epoch = self.steps_per_epoch
        self.steps += 1
        if loss is not None:
            self._sums[0] += float(loss.detach() if isinstance(loss, torch.Tensor) else loss) * n
            self._sums[3] += n
        if logits is not None and labels is not None:
            self._sums[1] += float((logits.detach().argmax(1) == labels).sum())
            self._sums[2] += n
        self._snap.meta["optimizer"] = self._opt_meta()
        self._snap(self.steps)
        if self.steps % self.steps_per_epoch == 0:
            self._end_epoch()

    def _end_epoch(self) -> None:
        """A history entry as :func:`landscape.train.train` writes one."""
        device = self._device()
        d = self.data
        test = evaluate_model(self.model, d.x_test.to(device), d.y_test.to(device))
        loss, correct, with_logits, seen = self._sums
        if not seen or not with_logits:
            train = evaluate_model(self.model, d.x_train.to(device), d.y_train.to(device))
        entry = {
            "epoch": len(self.history) + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss / seen if seen else train["loss"],
            "train_acc": correct / with_logits if with_logits else train["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "sparsity": sparsity(self.model.state_dict(), prunable_names(self.model))["zero"],
        }
        self.history.append(entry)
        self._sums = [0.0, 0.0, 0.0, 0.0]

    def close(self) -> Run:
        """Write the last snapshot, ``final.safetensors`` and ``run.json``; the :class:`Run`."""
        if self._closed:
            raise ValueError("Recorder.close() called twice")
        self._closed = True
        if self.steps % (self.steps_per_epoch or 1):
            self._end_epoch()  # a last, partial epoch
        if self.steps not in self._snap.at:
            self._snap.at = {self.steps}
            self._snap(self.steps)
        metrics, layer_sparsity = _final_metrics(self.model, self.data, self._device())
        meta = {**self._snap.meta, "optimizer": self._opt_meta()}
        epoch = self.steps / self.steps_per_epoch if self.steps_per_epoch else 0
        final = {**meta, "step": self.steps, "epoch": epoch, "metrics": metrics}
        final_hash = save_checkpoint(self.out / "final.safetensors", self.model, final)
        record = {
            "config": {"source": "recorder", "every": self.every, "seed": meta["seed"]},
            "arch": self.arch,
            "data": self.data.describe(),
            "optimizer": meta["optimizer"],
            "init_hash": None,
            "final_hash": final_hash,
            "metrics": metrics,
            "layer_sparsity": layer_sparsity,
            "history": self.history,
            "snapshots": self._snap.written,
            "steps": self.steps,
            "wall_time_s": time.perf_counter() - self._start,
        }
        atomic_write(self.out / "run.json", json.dumps(record, indent=2).encode())
        return Run(self.out, record)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._closed:
            self.close()  # after an error the folder keeps no run.json: not a finished run
