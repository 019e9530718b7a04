"""Sweeps of gRDA's (c, mu) and the sparsity-accuracy Pareto frontier.

Every (c, mu, seed) of the grid is trained as gRDA from one shared initial checkpoint (the seed
changes only the batch order), by ``workers`` processes that take runs from one queue for the
whole sweep (this one and ones forked from a forkserver that imported torch once); under
torchrun (or ``--launcher N``) each rank trains its share and rank 0 writes the table. A run's
files are the same bytes whichever process trains it (run.json but its wall_time_s). It holds::

    init.safetensors          shared initial weights (unless an --init was given)
    runs/c<c>_mu<mu>_seed<s>/ one run folder per grid point (see landscape.train)
    magnitude/<run>.safetensors  SGD magnitude-pruned to that run's sparsity (optional)
    sweep.csv, sweep.json     the table; sweep.json also holds the config and the frontier

A run is trained in a hidden temporary folder and renamed into place when complete, so a killed
sweep leaves only finished runs behind and a re-run trains just the missing ones; a finished run
is recognised by its ``run.json`` (written last, atomically, by :func:`landscape.train.train`).
The tables are written atomically too. The config and result types belong to the study kind
:mod:`landscape.studies.sweep`, whose compute is :func:`run_sweep`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from landscape.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from landscape.distributed import barrier, current_shard
from landscape.models import MODELS
from landscape.progress import Progress
from landscape.pruning import magnitude_optimizer_meta, prune_checkpoint
from landscape.store import atomic_write
from landscape.studies.sweep import SweepConfig, SweepResult, run_name
from landscape.train import TrainConfig, make_initial, train

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


def _train_run(cfg: TrainConfig, run_dir: str) -> None:
    """Train into a hidden folder beside ``run_dir``, then rename it into place."""
    target = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        train(cfg, tmp)
        if target.exists():  # an unfinished or outdated run of the same name
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    t.check()
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


def _exit_with_parent() -> None:
    """End this worker when the sweep process ends, even by SIGKILL (no orphans training on)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def _worker(tasks: Any, results: Any, threads: int) -> None:
    """A training process for the whole sweep: runs from ``tasks`` until a None arrives."""
    _exit_with_parent()
    torch.set_num_threads(threads)
    while (job := tasks.get()) is not None:
        i, cfg, run_dir = job
        try:
            _train_run(cfg, run_dir)
        except Exception:  # noqa: BLE001 - the parent reports it and stops the sweep
            results.put((i, traceback.format_exc()))
            break
        results.put((i, None))
    # Done: once the reports have left (the queue's feeder thread flushed them), exit without
    # the interpreter's teardown of torch, which the sweep's end waits for (~0.3 s of 9.6).
    results.close()
    results.join_thread()
    os._exit(0)


# Imported once, in the fork server (which skips one that fails), so forked workers start warm:
# the first optimizer imports torch._dynamo (0.9 s in a fresh process). Digits comes from its
# split file in home()/cache, without scikit-learn (see landscape.data).
_PRELOAD = ("landscape.sweep", "torch._dynamo")


def _context() -> Any:
    """forkserver (imports done once; workers fork from it), else spawn. Never a plain fork
    of this process: it may already hold torch's thread pools and locks."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ctx


def _get(q: Any, procs: list, failed: list) -> Any:
    """The next item of ``q``; RuntimeError if a worker died or failed to start."""
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            dead = [f"exit status {p.exitcode}" for p in procs if p.exitcode] + failed
            if dead:
                raise RuntimeError(
                    f"a sweep worker died ({dead[0]}); finished runs are kept and the rest "
                    "are trained when the sweep is run again"
                ) from None


def _train_here(queues: tuple, procs: tuple, jobs: list, threads: int, report: Callable) -> int:
    """Train from the queue here too (while the workers start, then beside them) until a None;
    pass on the workers' reports between runs. Returns the runs reported (its own and theirs)."""
    tasks, results = queues
    before, n = torch.get_num_threads(), 0
    torch.set_num_threads(threads)
    try:
        while (job := _get(tasks, *procs)) is not None:
            _train_run(job[1], job[2])
            report((job[0], None))
            n += 1
            while not results.empty():
                report(results.get())
                n += 1
    finally:
        torch.set_num_threads(before)
    return n


def _start(procs: list, failed: list) -> None:
    try:
        for p in procs:
            p.start()
    except Exception as err:  # noqa: BLE001 - the parent raises it from _get
        failed.append(f"could not start: {err}")


def _train_parallel(jobs: list[tuple[TrainConfig, Path]], workers: int, tick: Callable) -> None:
    """Train ``jobs`` in ``workers`` processes that live for the whole sweep, this one included.

    A job that fails, or a worker that dies, stops the sweep (finished runs stay).
    """
    ctx = _context()
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, (cfg, run_dir) in enumerate(jobs):
        tasks.put((i, cfg, str(run_dir)))
    for _ in range(workers):  # one None for each worker, this process's included
        tasks.put(None)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # ranks sharing this machine
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // (workers * local))  # no oversubscription of the cores
    args = (tasks, results, threads)
    procs = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(workers - 1)]

    def report(item: tuple[int, str | None]) -> None:
        if item[1] is not None:
            raise RuntimeError(f"training {jobs[item[0]][1]} failed in a worker:\n{item[1]}")
        tick()

    # Started beside this process's first run: start() waits for the fork server's imports.
    failed: list[str] = []
    starter = threading.Thread(target=_start, args=(procs, failed), daemon=True)
    finished = False
    try:
        starter.start()
        received = _train_here((tasks, results), (procs, failed), jobs, threads, report)
        for _ in range(received, len(jobs)):
            report(_get(results, procs, failed))
        finished = True
    finally:
        starter.join()
        for p in (p for p in procs if p.pid is not None):
            p.join(timeout=5.0 if finished else 0.0)  # done: each has taken its None
            if p.is_alive():
                p.terminate()  # its unfinished run stays a .partial folder, removed on resume
            p.join()


def _train_all(jobs: list, workers: int, progress: Progress | None, *, done: int, total: int):
    counter = [done]

    def tick() -> None:
        if progress is not None:
            progress(counter[0], total, "gRDA runs")
        counter[0] += 1

    tick()
    if workers == 1 or len(jobs) <= 1:
        for cfg, run_dir in jobs:
            _train_run(cfg, str(run_dir))
            tick()
    else:
        _train_parallel(jobs, min(workers, len(jobs)), tick)


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
            progress(total - len(grda_rows) + i + 1, total, "magnitude pruning")
    return rows


def _write_table(out: Path, config: dict, rows: list[dict], frontier: list[int]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "sweep.csv", buf.getvalue().encode())
    body = {"config": config, "columns": list(COLUMNS), "rows": rows, "frontier": frontier}
    atomic_write(out / "sweep.json", json.dumps(body, indent=2).encode())


def _prepare(cfg: SweepConfig, out: Path, rank: int) -> Checkpoint:
    """The shared initial checkpoint and a runs/ folder without partial runs: rank 0 makes
    them while the other ranks wait (so none removes a partial folder another trains in)."""
    if rank == 0:
        init = _initial(cfg, out)
        runs_dir = out / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        for stale in runs_dir.glob(".*.partial"):  # left by a killed sweep
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return init if rank == 0 else _initial(cfg, out)


def _grda_rows(grid: list[tuple], configs: list[TrainConfig], dirs: list[Path], init: str) -> list:
    rows = []
    for (c, mu, s), rc, d in zip(grid, configs, dirs, strict=True):
        record = _finished(d, rc, init)
        if record is None:
            raise RuntimeError(f"{d}: training finished but the run does not validate")
        rows.append(
            _row("grda", c, mu, s, record["metrics"], record["wall_time_s"], f"runs/{d.name}")
        )
    return rows


def _table(
    cfg: SweepConfig, out: Path, rows: list[dict], init: Checkpoint, progress, total: int
) -> tuple[list[dict], list[int], dict]:
    """Magnitude rows (if asked), the frontier and the config; writes sweep.csv/json."""
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
    return rows, frontier, config


def run_sweep(
    cfg: SweepConfig, out: str | Path, *, progress: Progress | None = None
) -> SweepResult:
    """Train every (c, mu, seed) of the grid (resuming), then write sweep.csv and sweep.json.

    In an initialised process group (torchrun, ``landscape sweep --launcher N``) every rank
    calls this: the runs still to train are shared out (the i-th to rank i % world, each rank
    training its share with ``cfg.workers`` processes); after a barrier rank 0 makes the
    magnitude models and writes the table, and every rank returns it.

    Args:
        cfg: the grid, shared training options and the magnitude baseline.
        out: sweep folder (created; an earlier, interrupted sweep there is resumed).
        progress: ``progress(done, total, stage)`` over gRDA runs and magnitude models (in a
            process group: over the runs reused, this rank's share and the magnitude models).

    Returns:
        The :class:`SweepResult`.

    Raises:
        ValueError: a bad grid or option (checked before anything is written).
        CheckpointError: an unusable --init or --sgd checkpoint.
    """
    _validate(cfg)
    if cfg.magnitude:
        _sgd_checkpoint(cfg)  # fail before training, not after
    rank, world = current_shard()
    out = Path(out)
    init = _prepare(cfg, out, rank)
    grid = [(c, mu, s) for c in cfg.c for mu in cfg.mu for s in cfg.seeds]
    configs = [replace(cfg.train, c=c, mu=mu, seed=s, init=str(init.path)) for c, mu, s in grid]
    dirs = [out / "runs" / run_name(c, mu, s) for c, mu, s in grid]
    jobs = [(rc, d) for rc, d in zip(configs, dirs, strict=True) if not _finished(d, rc, init.hash)]
    barrier()  # every rank has listed the runs to train before any is replaced
    mine = jobs[rank::world]
    reused = len(grid) - len(jobs)
    total = reused + len(mine) + (len(grid) if cfg.magnitude else 0)
    _train_all(mine, cfg.workers, progress, done=reused, total=total)
    barrier()  # every run is in place
    rows = _grda_rows(grid, configs, dirs, init.hash)
    if rank == 0:
        rows, frontier, config = _table(cfg, out, rows, init, progress, total)
    barrier()  # the table is written
    if rank != 0:
        table = load_sweep(out)
        rows, frontier, config = table.rows, table.frontier, table.config
    return SweepResult(str(out), rows, frontier, len(jobs), reused, config)


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
