"""Sweeps of gRDA's (c, mu) and the sparsity-accuracy Pareto frontier.

Every (c, mu, seed) of the grid is trained as gRDA from one shared initial checkpoint (the seed
changes only the batch order) in parallel processes. A sweep folder holds::

    init.safetensors          shared initial weights (unless an --init was given)
    runs/c<c>_mu<mu>_seed<s>/ one run folder per grid point (see landscape.train)
    magnitude/<run>.safetensors  SGD magnitude-pruned to that run's sparsity (optional)
    sweep.csv, sweep.json     the table; sweep.json also holds the config and the frontier

A run folder is trained in a hidden temporary folder and renamed into place when complete, so
a killed sweep leaves only finished runs behind and a re-run trains just the missing ones; a
finished run is recognised by its ``run.json`` (written last, atomically, by
:func:`landscape.train.train`). The tables are written atomically too. The config and result
types belong to the study kind :mod:`landscape.studies.sweep`, whose compute is
:func:`run_sweep`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from landscape.models import MODELS
from landscape.progress import Progress
from landscape.pruning import magnitude_optimizer_meta, prune_checkpoint
from landscape.store import atomic_write
from landscape.studies.sweep import SweepConfig, SweepResult, run_name
from landscape.train import TrainConfig, lr_factor, make_initial, train

__all__ = ["COLUMNS", "SweepConfig", "SweepResult", "load_sweep", "pareto_front", "run_sweep"]

COLUMNS = (
    "kind",
    "c",
    "mu",
    "seed",
    "sparsity",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "wall_time_s",
    "path",
    "pareto",
)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, maximising both coordinates.

    Point i is dominated iff some j has ``x_j >= x_i`` and ``y_j >= y_i`` with at least one
    strict; equal points do not dominate each other, so duplicates on the frontier all stay.

    Args:
        points: (x, y) pairs, e.g. (sparsity, test accuracy); finite values.

    Returns:
        Sorted indices of the frontier points.
    """
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in points):
        raise ValueError("pareto_front needs finite coordinates")
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf  # highest y among points with strictly larger x than the current group
    k = 0
    while k < len(order):
        x = points[order[k]][0]
        group = []
        while k < len(order) and points[order[k]][0] == x:
            group.append(order[k])
            k += 1
        top = points[group[0]][1]  # sorted by -y within equal x
        if top > best:  # else something with larger x is at least as accurate
            front += [i for i in group if points[i][1] == top]
        best = max(best, top)
    return sorted(front)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run config as run.json stores it, without what may differ on resume."""
    # The init is compared by hash (the sweep folder may move); the device is free to change.
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in ("init", "device")}


def _finished(run_dir: Path, cfg: TrainConfig, init_hash: str) -> dict[str, Any] | None:
    """The run record if ``run_dir`` holds a complete run of ``cfg`` from that init, else None."""
    try:
        record = json.loads((run_dir / "run.json").read_text())
        final = load_checkpoint(run_dir / "final.safetensors")
    except (OSError, json.JSONDecodeError, CheckpointError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("final_hash") != final.hash
        or record.get("init_hash") != init_hash
        or not isinstance(record.get("config"), dict)
        or _comparable(record["config"]) != _comparable(asdict(cfg))
    ):
        return None
    return record


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_run(cfg: TrainConfig, run_dir: str) -> None:
    """Train into a hidden folder beside ``run_dir``, then rename it into place (worker job)."""
    target = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        train(cfg, tmp)
        if target.exists():  # an unfinished or outdated run of the same name
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _validate(cfg: SweepConfig) -> None:
    if not cfg.c or not cfg.mu or not cfg.seeds:
        raise ValueError("a sweep needs at least one value of c, mu and seeds")
    for name, values in (("c", cfg.c), ("mu", cfg.mu), ("seeds", cfg.seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate values in {name}: {values}")
    if not all(c >= 0 and math.isfinite(c) for c in cfg.c):
        raise ValueError(f"Invalid c: {cfg.c} (need c >= 0)")
    if not all(0 < mu <= 1 for mu in cfg.mu):
        raise ValueError(f"Invalid mu: {cfg.mu} (need 0 < mu <= 1)")
    t = cfg.train
    if t.optimizer != "grda":
        raise ValueError(f"a sweep trains gRDA; got optimizer {t.optimizer!r}")
    if t.arch not in MODELS:
        raise ValueError(f"Unknown architecture {t.arch!r}; known: {', '.join(sorted(MODELS))}")
    lr_factor(t.lr_schedule, 0.0)  # validates the schedule name
    if t.epochs < 1 or t.batch_size < 1 or t.snapshots < 0:
        raise ValueError("epochs and batch_size must be >= 1 and snapshots >= 0")
    if cfg.workers < 1:
        raise ValueError(f"workers must be >= 1, got {cfg.workers}")
    if cfg.scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {cfg.scope!r}")
    if cfg.finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {cfg.finetune_epochs}")
    if cfg.magnitude and cfg.sgd is None:
        raise ValueError("the magnitude baseline needs an SGD run or checkpoint (sgd)")


def _sgd_checkpoint(cfg: SweepConfig) -> Checkpoint:
    path = Path(cfg.sgd)
    ckpt = load_checkpoint(path / "final.safetensors" if path.is_dir() else path)
    if (
        ckpt.arch["name"] != cfg.train.arch
        or (ckpt.meta.get("data") or {}).get("name") != cfg.train.data
    ):
        raise ValueError(
            f"{ckpt.path}: a {ckpt.arch['name']} on {ckpt.meta.get('data')}, but the sweep "
            f"trains a {cfg.train.arch} on {cfg.train.data}"
        )
    return ckpt


def _initial(cfg: SweepConfig, out: Path) -> Checkpoint:
    if cfg.train.init is not None:
        init = load_checkpoint(cfg.train.init)
    else:
        try:
            init = load_checkpoint(out / "init.safetensors")  # made by an earlier call
        except CheckpointError:
            init = make_initial(cfg.train, out / "init.safetensors")
    if init.arch["name"] != cfg.train.arch:
        raise ValueError(
            f"initial weights {init.path} are a {init.arch['name']}, not a {cfg.train.arch}"
        )
    return init


def _train_all(
    jobs: list[tuple[TrainConfig, Path]],
    workers: int,
    progress: Progress | None,
    *,
    done: int,
    total: int,
) -> None:
    if progress is not None:
        progress(done, total, "gRDA runs")
    if workers == 1 or len(jobs) <= 1:
        for cfg, run_dir in jobs:
            _train_run(cfg, str(run_dir))
            done += 1
            if progress is not None:
                progress(done, total, "gRDA runs")
        return
    workers = min(workers, len(jobs))
    threads = max(1, _cores() // workers)  # workers x threads <= cores: no oversubscription
    # spawn: a forked child would inherit the parent's torch thread pools and locks.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_set_threads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(_train_run, cfg, str(run_dir)) for cfg, run_dir in jobs]
        try:
            for fut in as_completed(futures):
                fut.result()
                done += 1
                if progress is not None:
                    progress(done, total, "gRDA runs")
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _row(kind: str, c: float, mu: float, seed: int, metrics: dict, wall: float, path: str) -> dict:
    return {
        "kind": kind,
        "c": c,
        "mu": mu,
        "seed": seed,
        **{k: metrics[k] for k in ("sparsity", "train_loss", "train_acc", "test_loss", "test_acc")},
        "wall_time_s": wall,
        "path": path,
        "pareto": False,
    }


def _magnitude_rows(
    cfg: SweepConfig, out: Path, grda_rows: list[dict], progress: Progress | None, *, total: int
) -> list[dict]:
    sgd = _sgd_checkpoint(cfg)
    t = cfg.train
    rows = []
    for i, g in enumerate(grda_rows):
        name = Path(g["path"]).name
        path = out / "magnitude" / f"{name}.safetensors"
        expected = magnitude_optimizer_meta(
            sgd.hash, g["sparsity"], cfg.scope, cfg.finetune_epochs, t.lr, t.batch_size, g["seed"]
        )
        try:
            meta = load_checkpoint(path).meta
        except CheckpointError:
            meta = None
        if meta is None or meta.get("optimizer") != expected:
            state, meta = prune_checkpoint(
                sgd,
                g["sparsity"],
                scope=cfg.scope,
                finetune_epochs=cfg.finetune_epochs,
                lr=t.lr,
                batch_size=t.batch_size,
                seed=g["seed"],
                data_root=t.data_root,
                device=t.device,
            )
            save_checkpoint(path, state, meta)
        rel = str(path.relative_to(out))
        rows.append(
            _row("magnitude", g["c"], g["mu"], g["seed"], meta["metrics"], meta["wall_time_s"], rel)
        )
        if progress is not None:
            progress(len(grda_rows) + i + 1, total, "magnitude pruning")
    return rows


def _write_table(out: Path, config: dict, rows: list[dict], frontier: list[int]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "sweep.csv", buf.getvalue().encode())
    body = {"config": config, "columns": list(COLUMNS), "rows": rows, "frontier": frontier}
    atomic_write(out / "sweep.json", json.dumps(body, indent=2).encode())


def run_sweep(
    cfg: SweepConfig, out: str | Path, *, progress: Progress | None = None
) -> SweepResult:
    """Train every (c, mu, seed) of the grid (resuming), then write sweep.csv and sweep.json.

    Args:
        cfg: the grid, shared training options and the magnitude baseline.
        out: sweep folder (created; an earlier, interrupted sweep there is resumed).
        progress: ``progress(done, total, stage)`` over gRDA runs and magnitude models.

    Returns:
        The :class:`SweepResult`.

    Raises:
        ValueError: a bad grid or option (checked before anything is written).
        CheckpointError: an unusable --init or --sgd checkpoint.
    """
    _validate(cfg)
    if cfg.magnitude:
        _sgd_checkpoint(cfg)  # fail before training, not after
    out = Path(out)
    init = _initial(cfg, out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in runs_dir.glob(".*.partial"):  # left by a killed sweep
        shutil.rmtree(stale, ignore_errors=True)
    grid = [(c, mu, s) for c in cfg.c for mu in cfg.mu for s in cfg.seeds]
    configs = [replace(cfg.train, c=c, mu=mu, seed=s, init=str(init.path)) for c, mu, s in grid]
    dirs = [runs_dir / run_name(c, mu, s) for c, mu, s in grid]
    jobs = [(rc, d) for rc, d in zip(configs, dirs, strict=True) if not _finished(d, rc, init.hash)]
    total = len(grid) * (2 if cfg.magnitude else 1)  # one step per run and magnitude model
    _train_all(jobs, cfg.workers, progress, done=len(grid) - len(jobs), total=total)
    rows = []
    for (c, mu, s), rc, d in zip(grid, configs, dirs, strict=True):
        record = _finished(d, rc, init.hash)
        if record is None:
            raise RuntimeError(f"{d}: training finished but the run does not validate")
        rows.append(
            _row("grda", c, mu, s, record["metrics"], record["wall_time_s"], f"runs/{d.name}")
        )
    if cfg.magnitude:
        rows += _magnitude_rows(cfg, out, rows, progress, total=total)
    frontier = pareto_front([(r["sparsity"], r["test_acc"]) for r in rows])
    for i in frontier:
        rows[i]["pareto"] = True
    # Absolute: the dashboard reads the SGD path back from another working directory.
    sgd = str(Path(cfg.sgd).resolve()) if cfg.sgd is not None else None
    config = {**asdict(cfg), "sgd": sgd, "init_hash": init.hash}
    del config["workers"]  # speed only: the table is the same with any number
    _write_table(out, config, rows, frontier)
    return SweepResult(str(out), rows, frontier, len(jobs), len(grid) - len(jobs), config)


def load_sweep(folder: str | Path) -> SweepResult:
    """Read the table a :func:`run_sweep` wrote to ``folder`` (sweep.json).

    Raises:
        ValueError: no sweep.json there, or one that is not a sweep table.
    """
    path = Path(folder) / "sweep.json"
    try:
        body = json.loads(path.read_text())
        rows, frontier, config = body["rows"], body["frontier"], body["config"]
    except FileNotFoundError as err:
        raise ValueError(f"{folder}: no sweep here (sweep.json is missing)") from err
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a sweep table: {err}") from err
    return SweepResult(str(folder), rows, frontier, config=config)
