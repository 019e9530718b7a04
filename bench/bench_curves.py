"""Speed of the connectivity engine on the default digits runs (checkpoints/sgd, checkpoints/grda).

Run: python bench/bench_curves.py [--repeats 5] [--points 61] [--skip-study]

1. Evaluating ``--points`` points of an order-2 curve (BN recalibration + train + test) as
   ``landscape curve`` runs it (landscape.studies.curve.evaluate_path with the default
   evaluation data: BN statistics from one batch of all training samples), against the
   dnn-mode-connectivity way (its utils.update_bn / test): per point deep-copy the model,
   load_state_dict, one BN pass in train mode (momentum None) with the same BN batching, then
   train and test evaluation in batches of 128. Both on one torch thread (ours picks one for a
   model this small; giving the naive loop two contended threads would flatter the ratio).
   evaluate_path also computes weight norms and sparsity per point, which the naive loop does
   not: "metrics only" times the evaluation inside it (evaluate_points on the path's basis).
   Beside it, both with BN batches of 128 (dnn-mode-connectivity's setting). The numbers must
   agree (checked to 1e-5).
2. One epoch of curve fitting (fit_curve, epochs=1) against one epoch of plain SGD training of
   the same model on the same data, same input layout (channels-last, as fit_curve stores it)
   and batch size, both with one torch thread.
3. The whole default study, as ``landscape curve A B`` and the app run it
   (``landscape.studies.run(curve.KIND, CurveConfig(), ...)``, a fresh store): wall time, split
   into fitting and evaluation, and the fitted curve against the straight line.

Repeats are interleaved (the order alternates) and medians are compared, since the machine is
shared and timings are noisy.
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
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.curvepoints import bernstein
from landscape.curves import BezierCurve, CurveConfig, fit_curve
from landscape.data import Dataset, batches, load_dataset
from landscape.evaldata import channels_last
from landscape.evaluate import EvalData, evaluate_points
from landscape.params import split_state, unflatten
from landscape.store import Store
from landscape.studies import curve, run
from landscape.studies.base import Context

REPO = Path(__file__).resolve().parent.parent
NAIVE = ("train_loss", "train_acc", "test_loss", "test_acc")  # what the naive loop computes


@torch.no_grad()
def naive_point(
    model: nn.Module, state: dict[str, torch.Tensor], data: Dataset, bn_bs: int, bs: int = 128
) -> dict[str, float]:
    """dnn-mode-connectivity's way: copy, load, update_bn (BN batches of ``bn_bs``), then test
    on train and test in batches of ``bs`` (its value; the results do not depend on it)."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    for mod in m.modules():
        if isinstance(mod, _BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    for i in range(0, len(data.x_train), bn_bs):
        m(data.x_train[i : i + bn_bs])
    m.eval()
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        loss = correct = 0.0
        for i in range(0, len(x), bs):
            logits = m(x[i : i + bs])
            loss += F.cross_entropy(logits, y[i : i + bs], reduction="sum").item()
            correct += (logits.argmax(1) == y[i : i + bs]).sum().item()
        out[f"{split}_loss"], out[f"{split}_acc"] = loss / len(x), correct / len(x)
    return out


def with_threads(n: int | None, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``n`` torch threads (None: unchanged)."""

    def run() -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(n or before)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each case over ``repeats`` rounds, the order rotating per round.
    The median process CPU time of each goes to ``CPU[name]`` (less sensitive to other
    processes on this shared machine; with one thread it is the work done)."""
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            cases[name]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    CPU.update({n: statistics.median(t) for n, t in cpu.items()})
    return {n: statistics.median(t) for n, t in times.items()}


CPU: dict[str, float] = {}  # median CPU seconds of the last interleaved() cases


def _curve(pa: dict, pb: dict) -> BezierCurve:
    """An order-2 curve (the default) with its bend a little off the line, as after fitting."""
    gen = torch.Generator().manual_seed(0)
    bend = {n: (pa[n] + pb[n]) / 2 + 0.05 * torch.randn(pa[n].shape, generator=gen) for n in pa}
    return BezierCurve(pa, pb, bends=[bend])


def bench_evaluation(a: Checkpoint, b: Checkpoint, data: Dataset, points: int, repeats: int):
    model = a.build_model()
    pa, _ = split_state(model, a.state)
    pb, _ = split_state(model, b.state)
    ts = np.linspace(0, 1, points)
    path = _curve(pa, pb)
    states = [{**a.state, **{n: v.clone() for n, v in path.point(float(t)).items()}} for t in ts]
    default = EvalData.from_dataset(data)  # what `landscape curve` and the app use

    def naive(bn_bs: int) -> Callable[[], dict[str, np.ndarray]]:
        def loop() -> dict[str, np.ndarray]:
            rows = [naive_point(model, s, data, bn_bs) for s in states]
            return {m: np.array([r[m] for r in rows]) for m in NAIVE}

        return loop

    def ours(evdata: EvalData) -> Callable[[], dict[str, np.ndarray]]:
        """What the curve study runs for one path (no store key: nothing resumed or saved)."""

        def run_path() -> dict[str, np.ndarray]:
            with tempfile.TemporaryDirectory() as tmp:
                context = Context(Store(tmp), "curve", "", None, (0, 1))
                return curve.evaluate_path(model, path, ts, evdata, context).columns

        return run_path

    coeffs = bernstein(path.order, torch.as_tensor(ts, dtype=torch.float64)).numpy()
    basis = [unflatten(w, path.start) for w in path.controls().detach()]

    def ours_metrics() -> dict[str, np.ndarray]:
        """Only the metrics (the naive loop's work): the evaluation inside evaluate_path."""
        return evaluate_points(model, basis, coeffs, default)

    bn_all = default.batch_size  # one BN batch of all 1347 training samples
    small = EvalData.from_dataset(data, batch_size=128)
    for name, evdata, bs in (("default", default, bn_all), ("BN batch 128", small, 128)):
        want, got = with_threads(1, naive(bs))(), ours(evdata)()
        worst = max(float(np.max(np.abs(got[m] - want[m]))) for m in NAIVE)
        print(f"   max |ours - naive| ({name} BN batching), all metrics and points: {worst:.1e}")
        assert worst < 1e-5, f"ours and the naive loop differ by {worst}"
    med = interleaved(
        {
            "naive, BN in one batch (default)": with_threads(1, naive(bn_all)),
            "ours, default (evaluate_path)": ours(default),
            "ours, default, metrics only": ours_metrics,
            "naive, BN batch 128": with_threads(1, naive(128)),
            "ours, BN batch 128": ours(small),
        },
        repeats,
    )
    print(
        f"1. {points} points of an order-2 curve (BN recalibration + train + test), digits CNN,"
        f" 1 torch thread for both, median of {repeats}"
    )
    for name, sec in med.items():
        print(
            f"   {name:<34} {sec:7.3f} s  {1e3 * sec / points:7.2f} ms/point"
            f"  (CPU {CPU[name]:.3f} s)"
        )
    for setting, ours_name, naive_name in (
        ("default settings", "ours, default (evaluate_path)", "naive, BN in one batch (default)"),
        (
            "defaults, metrics only",
            "ours, default, metrics only",
            "naive, BN in one batch (default)",
        ),
        ("BN batch 128", "ours, BN batch 128", "naive, BN batch 128"),
    ):
        ratio = med[naive_name] / med[ours_name]
        print(
            f"   {setting}: ours {med[ours_name]:.3f} s vs naive {med[naive_name]:.3f} s:"
            f" {ratio:.2f}x (CPU time {CPU[naive_name] / CPU[ours_name]:.2f}x; goal >= 3x at"
            " the defaults)"
        )
    print(f"   load average {os.getloadavg()}")


def bench_fit_epoch(a: Checkpoint, b: Checkpoint, data: Dataset, repeats: int):
    cfg = CurveConfig(epochs=1)

    def sgd_epoch() -> None:
        model = a.build_model().train()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        gen = torch.Generator().manual_seed(0)
        # The input layout fit_curve uses (channels-last), so that only the fitting differs.
        x = channels_last(data.x_train)
        for xb, yb in batches(x, data.y_train, cfg.batch_size, shuffle=True, generator=gen):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    med = interleaved(
        {
            "plain SGD epoch": with_threads(1, sgd_epoch),
            "curve fit epoch": with_threads(1, lambda: fit_curve(a, b, cfg, data)),
        },
        repeats,
    )
    print(f"2. one epoch, batch size {cfg.batch_size}, 1 thread, median of {repeats}")
    for name, sec in med.items():
        print(f"   {name:<30} {sec:7.3f} s")
    ratio = med["curve fit epoch"] / med["plain SGD epoch"]
    print(f"   curve fit / plain SGD (same channels-last input): {ratio:.2f}x")
    print(f"   load average {os.getloadavg()}")


def bench_study(a: Checkpoint, b: Checkpoint):
    cfg = CurveConfig()
    marks: dict[str, float] = {}

    def progress(done: int, total: int, stage: str) -> None:
        marks.setdefault(stage, time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = run(curve.KIND, cfg, curve.CurveInputs(a, b), store=Store(tmp), progress=progress)
        total = time.perf_counter() - start
    fit = marks.get("evaluating curve", start) - start
    print(f"3. whole default study ({cfg}): {total:.1f} s")
    print(f"   fitting {fit:.1f} s, evaluating curve and line {total - fit:.1f} s")
    for name in ("curve", "line"):
        p = res.path(name)
        loss, acc = p.columns["train_loss"], p.columns["test_acc"]
        print(
            f"   {name:<5} max train loss {np.max(loss):.4f}  "
            f"train barrier {p.barrier('train_loss').height:.4f}  "
            f"mean train loss {np.mean(loss):.4f}  min test acc {np.min(acc):.4f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=61)
    p.add_argument("--skip-study", action="store_true")
    args = p.parse_args()
    a = load_checkpoint(REPO / "checkpoints" / "sgd" / "final.safetensors")
    b = load_checkpoint(REPO / "checkpoints" / "grda" / "final.safetensors")
    data = load_dataset("digits", seed=a.meta["data"]["split_seed"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, digits cnn")
    bench_evaluation(a, b, data, args.points, args.repeats)
    bench_fit_epoch(a, b, data, args.repeats)
    if not args.skip_study:
        bench_study(a, b)


if __name__ == "__main__":
    main()
