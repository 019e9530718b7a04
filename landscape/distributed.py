"""Grid evaluation sharded over processes with torch.distributed (gloo on CPU, nccl on GPU).

Each rank evaluates the points ``i`` with ``i % world == rank`` (``evaluate_points`` with
``shard=(rank, world)``), keeping its own partial file so a killed run resumes per rank; the
ranks' arrays (NaN where not evaluated) are summed with one ``all_reduce`` so every rank holds
the full result, and rank 0 alone writes it to the store. Ranks come from torchrun's environment
(``torchrun --nproc_per_node N -m landscape plane ...``) or from :func:`launch`, which starts N
local copies of the same command line with that environment. Sweeps share their training runs
the same way (:func:`landscape.sweep.run_sweep`, with :func:`barrier` between the stages).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from landscape.evaluate import METRICS, EvalData, evaluate_points
from landscape.params import Named
from landscape.progress import Progress
from landscape.store import Store

__all__ = [
    "LAUNCHED",
    "Group",
    "barrier",
    "broadcast",
    "current_shard",
    "evaluate_sharded",
    "launch",
    "process_group",
    "relaunch_argv",
]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCHED = "LANDSCAPE_LAUNCHED"  # set to 1 in the ranks :func:`launch` starts
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_STOP_S = 5.0  # seconds a rank gets to stop after SIGTERM before SIGKILL


@dataclass(frozen=True)
class Group:
    """This process's place in the process group.

    Attributes:
        rank: index of this process (0 writes results and prints).
        world: number of processes.
        device: the device this rank evaluates on (``cuda:<local rank>`` under nccl).
    """

    rank: int
    world: int
    device: str

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank, self.world)


def current_shard() -> tuple[int, int]:
    """(rank, world) of the initialised process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank of the initialised process group; nothing without one."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def process_group(device: str = "cpu", *, timeout_s: float | None = None) -> Iterator[Group]:
    """Join the process group that torchrun's environment describes, for the ``with`` block.

    Without ``WORLD_SIZE`` > 1 in the environment (a plain run) nothing is initialised and the
    group is rank 0 of 1. On CUDA each rank uses ``cuda:<LOCAL_RANK>`` and nccl; on CPU gloo.

    Args:
        device: "cpu" or "cuda" as given on the command line.
        timeout_s: how long a collective waits for the other ranks (None: torch's default,
            30 minutes for gloo; a sweep's barrier waits for whole trainings).

    Returns:
        A context manager yielding the :class:`Group`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        rank, world = current_shard()
        yield Group(rank, world, device)
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if "OMP_NUM_THREADS" not in os.environ:
        # N ranks on one machine share its cores; more threads than cores thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    wait = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group(backend, init_method="env://", **wait)
    try:
        yield Group(rank, world, device)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child get SIGKILL when its parent dies (Linux), or None.

    ``prctl(PR_SET_PDEATHSIG)`` covers the parent killed with SIGKILL, when no ``finally`` of
    the parent runs. libc is looked up here, before the fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would kill us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM each rank's process group, SIGKILL after :data:`_STOP_S`, and reap them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + _STOP_S
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    for p in procs:
        p.wait()


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def launch(nproc: int, argv: list[str], *, poll_s: float = 0.2) -> int:
    """Run ``python -m landscape argv`` as ``nproc`` local ranks of one process group.

    Sets the same environment variables as torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and :data:`LAUNCHED`. If one rank fails the others are stopped,
    so nobody waits for it in a collective. The ranks never outlive the launcher: each runs in
    its own process group, which is stopped when the launcher returns, raises or gets
    SIGTERM/SIGHUP/SIGINT, and each gets SIGKILL from the kernel if the launcher is killed.

    Args:
        nproc: number of processes (>= 1).
        argv: the command line after ``landscape``.
        poll_s: how often the children are checked.

    Returns:
        0 if every rank succeeded, else the first non-zero exit status.
    """
    if nproc < 1:
        raise ValueError(f"--launcher needs at least 1 process, got {nproc}")
    port, preexec = str(_free_port()), _die_with_parent()
    procs: list[subprocess.Popen] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, _raise_exit)
    status = 0
    try:
        for rank in range(nproc):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), LAUNCHED: "1"}
            env["LOCAL_WORLD_SIZE"] = str(nproc)  # as torchrun: ranks sharing this machine
            env |= {"WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            cmd = [sys.executable, "-m", "landscape", *argv]
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=preexec))
        while any(p.poll() is None for p in procs) and status == 0:
            status = next((p.returncode for p in procs if p.returncode), 0)
            time.sleep(poll_s)
        status = status or next((p.returncode for p in procs if p.returncode), 0)
    finally:
        _stop(procs)
        for sig, old in handlers.items():
            signal.signal(sig, old)
    return status


def _all_reduce_points(out: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    """Combine the ranks' shards: values summed where done, NaN where no rank evaluated."""
    done = out["done"]
    keys = list(METRICS)
    stack = np.stack([np.where(done, out[m], 0.0) for m in keys] + [done.astype(float)])
    # nccl reduces CUDA tensors only; gloo CPU tensors.
    t = torch.from_numpy(stack).to(device if device.startswith("cuda") else "cpu")
    dist.all_reduce(t)
    total = t.cpu().numpy()
    count = total[-1]
    if (count > 1).any():
        raise RuntimeError("two ranks evaluated the same point; shards must not overlap")
    merged = {m: np.where(count == 1, total[i], np.nan) for i, m in enumerate(keys)}
    return {**merged, "done": count == 1}


def evaluate_sharded(
    model: torch.nn.Module,
    basis: Sequence[Named] | torch.Tensor,
    coords: np.ndarray,
    data: EvalData,
    *,
    store: Store | None = None,
    kind: str = "",
    key: str = "",
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
    stage: str = "evaluating points",
    points_per_pass: int | None = None,
) -> dict[str, np.ndarray]:
    """:func:`evaluate_points` on this rank's share, then the full arrays on every rank.

    Args:
        model, basis, coords, data, store, kind, progress, stage, points_per_pass: as in
            :func:`landscape.evaluate.evaluate_points` (the points are ``coords @ basis``).
        key: result key; with world > 1 each rank keeps its partial file under
            ``<key>-rank<r>of<w>`` (a re-run with the same world resumes per rank).
        shard: (rank, world); None: :func:`current_shard`.

    Returns:
        ``{metric: (n,)}`` and ``done`` (all True unless a rank skipped points).
    """
    rank, world = shard if shard is not None else current_shard()
    part_key = key if world == 1 or not key else f"{key}-rank{rank}of{world}"
    out = evaluate_points(
        model,
        basis,
        coords,
        data,
        progress=progress,
        store=store,
        kind=kind,
        key=part_key,
        shard=(rank, world),
        stage=stage,
        points_per_pass=points_per_pass,
    )
    if world == 1:
        return out
    merged = _all_reduce_points(out, str(data.x_train.device))
    if store is not None and key:
        store.clear_partial(kind, part_key)
    return merged


def broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def relaunch_argv(args: argparse.Namespace, parse: Callable[[list[str]], Any]) -> list[str]:
    """This process's command line after the program name, checked to parse to ``args``.

    :func:`launch` starts copies of the command line; from Python (``main([...])``) sys.argv is
    someone else's, so that is refused rather than launching the wrong command.
    """
    argv = sys.argv[1:]
    try:
        same = parse(argv) == args
    except SystemExit:
        same = False
    if not same:
        raise ValueError("--launcher works from the command line only; in Python use torchrun")
    return argv
