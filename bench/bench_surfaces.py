"""Plane evaluation speed, as ratios against baselines measured in the same run.

Run: python bench/bench_surfaces.py [--threads 1] [--repeats 3] [--grid 21] [--device cpu]

1. Random filter-normalised 21x21 plane around an MLP on digits (no BatchNorm): our
   random-plane study as ``landscape random-plane`` and the app run it
   (``landscape.studies.run(random_plane.KIND, ...)``, end to end: directions, evaluation of
   every metric, store write) against the ``loss-landscapes`` package's ``random_plane`` with a metric that
   computes the same four numbers (skipped with a message when the package is missing; it is
   never a project dependency: ``pip install loss-landscapes``). Correctness: our evaluator on
   loss-landscapes' own points (its directions and its grid) gives its losses to 1e-4. Also the
   effective forward FLOP rate (plain forward FLOPs x points / seconds) as a fraction of the
   float32 matmul rate of a large ``torch.mm`` measured in the same run.
2. 21x21 plane through three points of the digits CNN (BatchNorm recalibrated at every point):
   the plane study (``landscape.studies.run(plane.KIND, ...)``) against the naive loop (deep copy + load_state_dict + BN pass with batch 128
   + train and test evaluation with batch 128).
3. Several points per forward pass (``Evaluator.many``: torch.func.vmap over stacked
   points) against the per-point loop: the library picks vmap on GPUs and the loop on CPU
   from these numbers.

Timings alternate between the contenders and report medians. The machine's two cores are shared,
so the default is one thread for everything (two threads under contention measured 5-10x slower
and erratic here).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.data import load_dataset
from landscape.evaluate import EvalData, Evaluator
from landscape.geometry import Plane, plane_through
from landscape.models import build_model
from landscape.params import flatten, param_names
from landscape.store import Store
from landscape.studies import plane, random_plane, run
from landscape.studies.plane import PlaneConfig, PlaneInputs
from landscape.studies.random_plane import RandomPlaneConfig, RandomPlaneInputs

REPO = Path(__file__).resolve().parent.parent
MLP = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10}}


def plane_basis(p: Plane) -> torch.Tensor:
    """The plane as the evaluator's basis [origin, u, v] (points: coords [1, alpha, beta])."""
    return p.basis()


def loss_pair(metrics: dict[str, float]) -> list[float]:
    return [metrics["train_loss"], metrics["test_loss"]]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict:
    """Median seconds of each function, run in alternating order ``repeats`` times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_rate(device: str, n: int = 2048, repeats: int = 5) -> float:
    """float32 FLOP/s of a large torch.mm (median of repeats)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return statistics.median(rates)


def mlp_checkpoint(folder: Path) -> Checkpoint:
    torch.manual_seed(0)
    model = build_model(MLP["name"], **MLP["kwargs"])
    path = folder / "mlp.safetensors"
    save_checkpoint(path, model, {"arch": MLP, "data": {"name": "digits", "split_seed": 0}})
    return load_checkpoint(path)


def forward_flops(model: nn.Module, skip_first: bool) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sample through the Linear layers the evaluator
    runs: without the first when it is reused (its output is combined from cached responses,
    a few additions per output that are not counted as FLOPs here)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return sum(2 * m.weight.numel() for m in layers[1 if skip_first else 0 :])


def loss_landscapes_points(model: nn.Module, steps: int, seed: int):
    """loss-landscapes' random_plane directions and evaluation order, rebuilt with its code.

    Returns (origin, dir_one, dir_two, coords) with coords (steps, steps, 2) such that its
    ``data_matrix[i][j]`` is evaluated at origin + c0 * dir_one + c1 * dir_two.
    """
    from loss_landscapes.model_interface.model_parameters import orthogonal_to, rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    torch.manual_seed(seed)
    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    d1 = rand_u_like(start)
    d2 = orthogonal_to(d1)
    d1.filter_normalize_(start)
    d2.filter_normalize_(start)
    d1.mul_(((start.model_norm() / 1) / steps) / d1.model_norm())  # distance=1, as called
    d2.mul_(((start.model_norm() / 1) / steps) / d2.model_norm())
    flat = [torch.cat([p.detach().reshape(-1) for p in v.parameters]) for v in (start, d1, d2)]
    coords = np.zeros((steps, steps, 2))
    for i in range(steps):
        for j in range(steps):
            # Its loop walks dir_two up on even columns (offsets 1..steps) and down on odd
            # ones (offsets steps-1..0, inserted at the front), starting steps/2 below.
            offset = j + 1 if i % 2 == 0 else j
            coords[i, j] = (i - steps / 2, offset - steps / 2)
    return (*flat, coords)


def bench_random_plane(args: argparse.Namespace, folder: Path) -> None:
    print(f"== 1. random filter-normalised {args.grid}x{args.grid} plane, MLP on digits ==")
    ckpt = mlp_checkpoint(folder)
    model = ckpt.build_model()
    ds = load_dataset("digits")
    data = EvalData.from_dataset(ds, device=args.device)
    n_points = args.grid**2
    runs = iter(range(10**6))

    def ours() -> None:
        store = Store(folder / f"store{next(runs)}")
        cfg = RandomPlaneConfig(grid=args.grid, seed=0, device=args.device)
        run(random_plane.KIND, cfg, RandomPlaneInputs(ckpt), store=store)

    fns: dict[str, Callable[[], object]] = {"ours": ours}
    try:
        import loss_landscapes
        from loss_landscapes.metrics import Metric
    except ImportError:
        loss_landscapes = None
        print("loss-landscapes is not installed: comparison skipped (pip install loss-landscapes)")
    if loss_landscapes is not None and args.device != "cpu":
        # Its rand_u_like draws directions on the CPU: random_plane fails on a CUDA model.
        print("loss-landscapes' random_plane runs on the CPU only: comparison skipped")
        loss_landscapes = None
    if loss_landscapes is not None:
        x_tr, y_tr = ds.x_train.to(args.device), ds.y_train.to(args.device)
        x_te, y_te = ds.x_test.to(args.device), ds.y_test.to(args.device)

        class FourMetrics(Metric):
            """Train and test loss and accuracy, like ours."""

            def __call__(self, wrapper) -> list[float]:
                out = []
                for x, y in ((x_tr, y_tr), (x_te, y_te)):
                    logits = wrapper.forward(x)
                    out += [
                        F.cross_entropy(logits, y).item(),
                        (logits.argmax(1) == y).float().mean().item(),
                    ]
                return out

        ll_model = copy.deepcopy(model).to(args.device)

        def theirs() -> np.ndarray:
            torch.manual_seed(1)
            return np.array(
                loss_landscapes.random_plane(
                    ll_model,
                    FourMetrics(),
                    distance=1,
                    steps=args.grid,
                    normalization="filter",
                    deepcopy_model=True,
                )  # fmt: skip
            )

        fns["loss-landscapes"] = theirs
        # Same numbers: our evaluator at loss-landscapes' own points.
        ref = theirs()  # (steps, steps, 4): train loss, train acc, test loss, test acc
        origin, d1, d2, coords = loss_landscapes_points(ll_model.cpu(), args.grid, seed=1)
        like = {n: p.detach().to(args.device) for n, p in model.named_parameters()}
        ll_plane = Plane(*(t.double().to(args.device) for t in (origin, d1, d2)), like)
        ev = Evaluator(model, data, plane_basis(ll_plane))
        ours_at = np.array([[loss_pair(ev([1.0, *c])) for c in row] for row in coords])
        err = np.abs(ours_at - ref[..., [0, 2]]).max()
        print(f"max |loss ours - loss-landscapes| on its {n_points} points: {err:.2e}")
        assert err < 1e-4, "losses differ"
    with torch.no_grad():
        t = interleaved(fns, args.repeats, args.device)
    peak = matmul_rate(args.device)
    own = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(args.device)
    skip = Evaluator(model, data, own.expand(3, -1))  # does a plane reuse the first layer?
    n_rows = len(ds.y_train) + len(ds.y_test)
    flops = forward_flops(model, skip.layer is not None) * n_rows * n_points
    rate = flops / t["ours"]
    print(f"ours            {t['ours']:.3f} s  ({n_points / t['ours']:.0f} points/s)")
    if "loss-landscapes" in t:
        ll = t["loss-landscapes"]
        print(f"loss-landscapes {ll:.3f} s  ({n_points / ll:.0f} points/s)")
        print(f"ratio loss-landscapes / ours: {ll / t['ours']:.2f}x (target > 1.0, aim 1.2)")
    threads = torch.get_num_threads()
    print(f"matmul rate {peak / 1e9:.1f} GFLOP/s (2048^2 torch.mm, {threads} thread(s))")
    print(
        f"forward rate {rate / 1e9:.1f} GFLOP/s (FLOPs of the layers run: first layer reused:"
        f" {skip.layer is not None}) = {rate / peak:.0%} of matmul (target >= 70%)"
    )
    print(f"load average {os.getloadavg()}")


def naive_plane(
    ckpt: Checkpoint, points: list[dict], ds, device: str, bn_bs: int = EvalData.batch_size
) -> list[list[float]]:
    """The naive per-point loop: copy, load, BN pass in batches of ``bn_bs`` (default: the
    evaluator's, one batch of all training samples, as the plane study runs), evaluate in
    batches of 128 (the results do not depend on it)."""
    out = []
    base = ckpt.build_model().to(device)
    x_tr, y_tr = ds.x_train.to(device), ds.y_train.to(device)
    x_te, y_te = ds.x_test.to(device), ds.y_test.to(device)
    for params in points:
        net = copy.deepcopy(base)
        state = dict(net.state_dict())
        state.update(params)
        net.load_state_dict(state)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        for i in range(0, len(x_tr), bn_bs):
            net(x_tr[i : i + bn_bs])
        net.eval()
        row = []
        for x, y in ((x_tr, y_tr), (x_te, y_te)):
            loss = correct = 0.0
            for i in range(0, len(x), 128):
                logits = net(x[i : i + 128])
                loss += F.cross_entropy(logits, y[i : i + 128], reduction="sum").item()
                correct += (logits.argmax(1) == y[i : i + 128]).sum().item()
            row += [loss / len(x), correct / len(x)]
        out.append(row)
    return out


def bench_bn_plane(args: argparse.Namespace, folder: Path) -> None:
    print(f"== 2. {args.grid}x{args.grid} plane through three points, digits CNN with BN ==")
    a, b, c = (
        load_checkpoint(REPO / "checkpoints" / p)
        for p in ("sgd/final.safetensors", "grda/final.safetensors", "init.safetensors")
    )
    ds = load_dataset("digits")
    cfg = PlaneConfig(grid=args.grid, device=args.device)
    inputs = PlaneInputs(a, b, c)
    runs = iter(range(10**6))
    ref = run(plane.KIND, cfg, inputs, store=Store(folder / "bn-ref"))
    # The naive loop evaluates the same weight points.
    model = a.build_model()
    names = param_names(model)
    wa, wb, wc = (flatten(x.state, names) for x in (a, b, c))
    p = plane_through(wa, wc, wb, {n: a.state[n] for n in names})
    pts = [p.point(al, be) for be in ref.beta for al in ref.alpha]  # row-major [beta, alpha]

    def ours() -> None:
        run(plane.KIND, cfg, inputs, store=Store(folder / f"bn{next(runs)}"))

    with torch.no_grad():
        naive = np.array(naive_plane(a, pts[:3], ds, args.device))
        got = np.stack([ref.metrics[m].reshape(-1)[:3] for m in ("train_loss", "train_acc")], 1)
        err = float(np.abs(got[:, 0] - naive[:, 0]).max())
        print(f"max |loss ours - naive| at 3 points (same BN batching): {err:.1e}")
        assert err < 1e-5, "losses differ"
        t = interleaved(
            {"ours": ours, "naive": lambda: naive_plane(a, pts, ds, args.device)},
            args.repeats,
            args.device,
        )
    n = len(pts)
    print(f"ours  {t['ours']:.2f} s ({n / t['ours']:.1f} points/s; the plane study end to end)")
    print(f"naive {t['naive']:.2f} s ({n / t['naive']:.1f} points/s)")
    print(f"ratio naive / ours: {t['naive'] / t['ours']:.2f}x (target >= 3x)")
    print(f"load average {os.getloadavg()}")


def bench_points_per_pass(args: argparse.Namespace, folder: Path) -> None:
    print("== 3. points per forward pass (MLP on digits, 48 points) ==")
    model = mlp_checkpoint(folder).build_model()
    like = {n: p.detach().to(args.device) for n, p in model.named_parameters()}
    w = flatten(like).double()
    gen = torch.Generator().manual_seed(0)
    u, v = (0.01 * torch.randn(w.numel(), generator=gen, dtype=torch.float64) for _ in range(2))
    p = Plane(w, u.to(w.device), v.to(w.device), like)
    data = EvalData.from_dataset(load_dataset("digits"), device=args.device)
    coords = torch.randn(48, 2, generator=gen, dtype=torch.float64).to(w.device)
    basis = plane_basis(p)
    reuse = Evaluator(model, data, basis, points_per_pass=1)
    plain = Evaluator(model, data, basis, first_layer="plain", points_per_pass=1)
    coords = torch.cat([torch.ones(len(coords), 1, dtype=coords.dtype), coords.cpu()], 1)
    # The loop as evaluate_points runs it: one point per pass, metrics of the group at once.
    fns = {
        "loop, first layer reused": lambda: reuse.many(coords.numpy()),
        "loop, plain": lambda: plain.many(coords.numpy()),
    }
    for k in (4, 16):
        ev = Evaluator(model, data, basis, points_per_pass=k)
        fns[f"vmap, {k} points per pass"] = lambda ev=ev: ev.many(coords.numpy())
    with torch.no_grad():
        t = interleaved(fns, max(args.repeats, 5), args.device)
    base = t["loop, first layer reused"]
    for name, sec in t.items():
        print(f"{name:<26} {sec / len(coords) * 1e3:.3f} ms/point ({sec / base:.2f}x the loop)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grid", type=int, default=21)
    p.add_argument("--only", choices=("random", "bn", "batch"), default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "random"):
            bench_random_plane(args, Path(tmp))
        if args.only in (None, "bn"):
            bench_bn_plane(args, Path(tmp))
        if args.only in (None, "batch"):
            bench_points_per_pass(args, Path(tmp))


if __name__ == "__main__":
    main()
